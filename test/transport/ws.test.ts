// SIP over WebSocket (RFC 7118) through the transport layer, over real
// sockets on 127.0.0.1: `ws` clients, and raw TCP for the HTTP side of the
// upgrade. Timeouts and ping intervals are shortened by injection.
import t, { type Test } from 'tap';
import net from 'node:net';
import WebSocket from 'ws';
import {
  DEFAULT_TRANSPORT_LIMITS,
  DEFAULT_WS_SETTINGS,
  TransportLayer,
  type Destination,
  type Endpoint,
  type ListenSpec,
  type Source,
  type TlsSettings,
  type TransportLimits,
  type WsSettings,
} from '../../src/transport/index.js';
import { makeTestCerts, opensslMissing, type TestCerts } from '../helpers/certs.js';
import { until } from '../helpers/wait.js';

const TEST_TIMEOUT = { timeout: 10000 };
const WS_LOCAL: ListenSpec = { protocol: 'ws', host: '127.0.0.1', port: 0 };
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Harness {
  layer: TransportLayer;
  port: number;
  messages: { data: Buffer; source: Source }[];
  closed: { id: number; remote: Endpoint }[];
  sendErrors: { dest: Destination; err: NodeJS.ErrnoException }[];
}

interface Options {
  limits?: Partial<TransportLimits>;
  ws?: Partial<WsSettings>;
  tls?: TlsSettings;
  specs?: ListenSpec[];
  /** Echo every message back down its connection. */
  echo?: boolean;
}

async function startLayer(t: Test, o: Options = {}): Promise<Harness> {
  const h: Harness = { layer: null as unknown as TransportLayer, port: 0, messages: [], closed: [], sendErrors: [] };
  h.layer = new TransportLayer(
    o.specs ?? [WS_LOCAL],
    { ...DEFAULT_TRANSPORT_LIMITS, ...o.limits },
    {
      onMessage(data, source) {
        h.messages.push({ data, source });
        if (o.echo) h.layer.send(Buffer.from(data), source);
      },
      onConnectionClosed(id, remote) {
        h.closed.push({ id, remote });
      },
      onSendError(dest, err) {
        h.sendErrors.push({ dest, err });
      },
    },
    undefined,
    o.tls,
    { ...DEFAULT_WS_SETTINGS, ...o.ws },
  );
  await h.layer.start();
  h.port = h.layer.listening()[0]?.port ?? 0;
  t.teardown(() => h.layer.stop());
  return h;
}

interface Client {
  ws: WebSocket;
  received: { data: Buffer; binary: boolean }[];
  closed: () => boolean;
  closeCode: () => number;
}

function client(t: Test, url: string, protocols: string[] = ['sip'], opts: WebSocket.ClientOptions = {}): Client {
  const ws = new WebSocket(url, protocols, opts);
  const received: Client['received'] = [];
  let closed = false;
  let code = 0;
  ws.on('message', (data, binary) => received.push({ data: data as Buffer, binary }));
  ws.on('close', (c) => {
    closed = true;
    code = c;
  });
  ws.on('error', () => {});
  t.teardown(() => ws.terminate());
  return { ws, received, closed: () => closed, closeCode: () => code };
}

/** A client whose upgrade succeeded. */
async function open(t: Test, url: string, opts: WebSocket.ClientOptions = {}): Promise<Client> {
  const c = client(t, url, ['sip'], opts);
  await new Promise<void>((resolve, reject) => {
    c.ws.once('open', () => resolve());
    c.ws.once('error', reject);
    c.ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  return c;
}

/** The HTTP status a refused upgrade got. */
function refusal(c: Client): Promise<number> {
  return new Promise((resolve, reject) => {
    c.ws.once('open', () => reject(new Error('upgrade accepted')));
    c.ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
    });
  });
}

function sip(tag = 'a'): string {
  // RFC 7118 §5.2: no Content-Length is needed, one message per WebSocket message.
  return `OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK${tag}\r\nCall-ID: ${tag}\r\nCSeq: 1 OPTIONS\r\n\r\n`;
}

/** A raw TCP connection, for what a WebSocket client would never send. */
async function raw(t: Test, port: number): Promise<{ sock: net.Socket; data: () => string; closed: () => boolean }> {
  const sock = net.connect({ host: '127.0.0.1', port });
  let data = '';
  let closed = false;
  sock.on('data', (d: Buffer) => (data += d.toString('latin1')));
  sock.on('close', () => (closed = true));
  sock.on('error', () => {});
  t.teardown(() => sock.destroy());
  await new Promise<void>((r) => sock.once('connect', () => r()));
  return { sock, data: () => data, closed: () => closed };
}

t.test('text and binary messages, each handed up whole with a ws Source; replies down the same connection', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  t.same(h.layer.listening().map((e) => e.protocol), ['ws']);
  const c = await open(t, `ws://127.0.0.1:${h.port}/`);
  t.equal(c.ws.protocol, 'sip', 'the sip subprotocol was chosen');
  c.ws.send(sip('text'));
  c.ws.send(Buffer.from(sip('binary'), 'latin1'), { binary: true });
  await until(() => h.messages.length === 2, 'two messages');
  t.equal(h.messages[0].data.toString('latin1'), sip('text'), 'text message intact');
  t.equal(h.messages[1].data.toString('latin1'), sip('binary'), 'binary message intact');
  const s = h.messages[0].source;
  t.equal(s.protocol, 'ws');
  t.equal(s.address, '127.0.0.1');
  t.equal(s.local.protocol, 'ws');
  t.equal(s.local.port, h.port);
  t.ok(s.connectionId > 0);
  t.equal(h.messages[1].source, s, 'the same Source object for every message of a connection');
  t.equal(h.layer.connectionCount('ws'), 1, 'counted under ws');

  // A reply: UTF-8 goes as a text message, anything else as binary.
  h.layer.send(Buffer.from('SIP/2.0 200 OK\r\n\r\n'), s);
  h.layer.send(Buffer.from([0x53, 0x49, 0x50, 0xff]), { protocol: 'ws', address: s.address, port: s.port, connectionId: s.connectionId });
  await until(() => c.received.length === 2, 'two replies');
  t.same(
    c.received.map((r) => [r.data.toString('latin1'), r.binary]),
    [
      ['SIP/2.0 200 OK\r\n\r\n', false],
      ['SIP\xff', true],
    ],
  );
  t.equal(h.layer.stats.messagesIn.ws, 2);
  t.equal(h.layer.stats.messagesOut.ws, 2);
});

t.test('an upgrade without the sip subprotocol is refused with 400', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  t.equal(await refusal(client(t, `ws://127.0.0.1:${h.port}/`, [])), 400, 'no subprotocol at all');
  t.equal(await refusal(client(t, `ws://127.0.0.1:${h.port}/`, ['chat', 'SIP'])), 400, 'others only (names are case-sensitive)');
  const c = await open(t, `ws://127.0.0.1:${h.port}/`, {});
  t.equal(c.ws.protocol, 'sip');
  t.equal(h.layer.stats.dropped['ws-handshake'], 2);
  await until(() => h.layer.connectionCount() === 1, 'refused connections left the table');
  t.equal(h.messages.length, 0);
});

t.test('a configured path: other paths get 404, a query string is fine; plain HTTP gets 426', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { ws: { path: '/sip' } });
  t.equal(await refusal(client(t, `ws://127.0.0.1:${h.port}/`)), 404, 'root refused');
  t.equal(await refusal(client(t, `ws://127.0.0.1:${h.port}/sipx`)), 404, 'another path refused');
  const c = await open(t, `ws://127.0.0.1:${h.port}/sip?token=x`);
  c.ws.send(sip());
  await until(() => h.messages.length === 1, 'message on the right path');

  const r = await raw(t, h.port);
  r.sock.write('GET /sip HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  await until(() => r.closed(), 'plain request answered and closed');
  t.match(r.data(), /^HTTP\/1\.1 426 /, '426 Upgrade Required');
  const m = await raw(t, h.port);
  m.sock.write('GET /sip HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: sip\r\n\r\n');
  await until(() => m.closed(), 'malformed upgrade closed');
  t.match(m.data(), /^HTTP\/1\.1 400 /, 'no Sec-WebSocket-Key: 400 from ws');
  t.equal(h.layer.stats.dropped['ws-handshake'], 4);
});

t.test('a message over max payload closes the connection (1009); one under it but over maxMessageSize is handed up', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { limits: { maxMessageSize: 2000 }, ws: { maxPayload: 4000 } });
  const c = await open(t, `ws://127.0.0.1:${h.port}/`);
  const big = sip() + 'x'.repeat(2500);
  c.ws.send(big);
  await until(() => h.messages.length === 1, 'message over maxMessageSize, under max payload');
  t.equal(h.messages[0].data.length, big.length, 'handed up whole (the parser answers 413)');
  c.ws.send(sip() + 'x'.repeat(4100));
  await until(() => c.closed(), 'closed over max payload');
  t.equal(c.closeCode(), 1009, 'close code: message too big');
  t.equal(h.layer.stats.dropped.oversize, 1);
  t.equal(h.messages.length, 1);

  // Without max payload, maxMessageSize is the bound.
  const g = await startLayer(t, { limits: { maxMessageSize: 2000 } });
  const d = await open(t, `ws://127.0.0.1:${g.port}/`);
  d.ws.send(sip() + 'x'.repeat(2100));
  await until(() => d.closed(), 'closed over maxMessageSize');
  t.equal(d.closeCode(), 1009);
  t.equal(g.messages.length, 0);
});

t.test('CRLF keep-alive over WebSocket gets a CRLF pong', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  const c = await open(t, `ws://127.0.0.1:${h.port}/`);
  c.ws.send('\r\n\r\n');
  await until(() => c.received.length === 1, 'pong');
  t.equal(c.received[0].data.toString('latin1'), '\r\n');
  c.ws.send('\r\n');
  c.ws.send(sip());
  await until(() => h.messages.length === 1, 'message after the keep-alives');
  t.equal(c.received.length, 1, 'a lone CRLF is not answered');
  t.equal(h.layer.stats.keepalivesIn.ws, 1);
  t.notOk(c.closed());
});

t.test('ping/pong liveness: a client that stops answering pings is closed, one that answers stays', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { ws: { pingIntervalMs: 50 } });
  const good = await open(t, `ws://127.0.0.1:${h.port}/`);
  const mute = await open(t, `ws://127.0.0.1:${h.port}/`, { autoPong: false });
  let pings = 0;
  good.ws.on('ping', () => pings++);
  good.ws.send(sip('g'));
  mute.ws.send(sip('m'));
  await until(() => mute.closed(), 'the client without pongs closed', 3000);
  await until(() => pings >= 3, 'several pings to the good client', 3000);
  t.notOk(good.closed(), 'the client answering pings stays');
  t.equal(h.layer.connectionCount('ws'), 1);
  t.equal(h.layer.stats.dropped.timeout, 1);
  await until(() => h.closed.length === 1, 'close reported');
});

t.test('per-source and total connection bounds, counted before the upgrade', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { limits: { maxConnectionsPerSource: 2 } });
  const a = await open(t, `ws://127.0.0.1:${h.port}/`);
  // A TCP connection that never upgrades holds a slot too.
  await raw(t, h.port);
  await until(() => h.layer.connectionCount() === 2, 'two in the table');
  const c = client(t, `ws://127.0.0.1:${h.port}/`);
  await until(() => c.closed(), 'third refused');
  t.equal(h.layer.stats.dropped['connection-limit'], 1);
  t.notOk(a.closed(), 'the first stays');
  // Another loopback address is another source.
  const other = await open(t, `ws://127.0.0.1:${h.port}/`, { localAddress: '127.0.0.2' });
  other.ws.send(sip());
  await until(() => h.messages.length === 1, 'message from another source');
  t.equal(h.messages[0].source.address, '127.0.0.2');

  const g = await startLayer(t, { limits: { maxConnections: 1 } });
  await open(t, `ws://127.0.0.1:${g.port}/`);
  const e = client(t, `ws://127.0.0.1:${g.port}/`);
  await until(() => e.closed(), 'over maxConnections refused');
  t.equal(g.layer.stats.dropped['connection-limit'], 1);
});

t.test('first-message timeout: silent after the upgrade, or a stalled upgrade; a client that spoke stays', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { limits: { firstMessageTimeoutMs: 150 } });
  const silent = await open(t, `ws://127.0.0.1:${h.port}/`);
  const good = await open(t, `ws://127.0.0.1:${h.port}/`);
  good.ws.send(sip());
  const stalled = await raw(t, h.port);
  stalled.sock.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr');
  await until(() => silent.closed() && stalled.closed(), 'silent and stalled closed');
  await delay(200);
  t.notOk(good.closed(), 'the client that delivered a message stays');
  t.equal(h.layer.stats.dropped.timeout, 2);
  t.equal(h.layer.connectionCount(), 1);
});

t.test('idle timeout counts what the client sends, not its pongs', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { limits: { idleTimeoutMs: 200 }, ws: { pingIntervalMs: 30 } });
  const c = await open(t, `ws://127.0.0.1:${h.port}/`);
  c.ws.send(sip());
  for (let i = 0; i < 4; i++) {
    await delay(100);
    c.ws.send('\r\n\r\n');
  }
  t.notOk(c.closed(), 'keep-alives count as activity');
  await until(() => c.closed(), 'closed when idle although it answers pings', 3000);
  t.ok(h.layer.stats.dropped.timeout >= 1);
});

t.test('sending: connection id, endpoint fallback, and no dialling out', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  const c = await open(t, `ws://127.0.0.1:${h.port}/`);
  c.ws.send(sip());
  await until(() => h.messages.length === 1, 'message');
  const s = h.messages[0].source;
  // A stale id falls back to the open connection of the endpoint.
  h.layer.send(Buffer.from('one'), { protocol: 'ws', address: s.address, port: s.port, connectionId: 999999 });
  await until(() => c.received.length === 1, 'delivered by endpoint');
  // An id of this connection with another protocol is not used, and nothing is dialled.
  h.layer.send(Buffer.from('two'), { protocol: 'wss', address: s.address, port: s.port, connectionId: s.connectionId });
  h.layer.send(Buffer.from('three'), { protocol: 'ws', address: '127.0.0.1', port: 1, connectionId: s.connectionId });
  t.equal(h.sendErrors.length, 2, 'reported at once, synchronously');
  t.same(
    h.sendErrors.map((e) => [e.dest.protocol, e.err.code]),
    [
      ['wss', 'ENOTCONN'],
      ['ws', 'ENOTCONN'],
    ],
  );
  t.equal(h.layer.stats.dropped['send-error'], 2);
  t.equal(h.layer.stats.connectionsOutbound, 0, 'never dials out');
  await delay(50);
  t.equal(c.received.length, 1);
  // Once the connection is gone its destination is unreachable.
  c.ws.close();
  await until(() => h.closed.length === 1, 'close reported');
  t.equal(h.closed[0].id, s.connectionId);
  h.layer.send(Buffer.from('four'), s);
  t.equal(h.sendErrors.length, 3);
});

t.test('stop() closes listeners and connections', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  const c = await open(t, `ws://127.0.0.1:${h.port}/`);
  await raw(t, h.port);
  await until(() => h.layer.connectionCount() === 2, 'two in the table');
  await h.layer.stop();
  await until(() => c.closed(), 'client closed');
  t.equal(h.layer.connectionCount(), 0);
  t.equal(h.closed.length, 2, 'both reported closed');
});

const noOpenssl = opensslMissing();
t.test('wss with a test certificate', { ...TEST_TIMEOUT, skip: noOpenssl ?? false }, async (t) => {
  const certs: TestCerts = makeTestCerts();
  t.teardown(() => certs.remove());
  const tls: TlsSettings = { cert: certs.serverCert, key: certs.serverKey, ca: certs.caCert, verifyClients: false, minVersion: 'TLSv1.2' };
  const h = await startLayer(t, { tls, echo: true, specs: [{ protocol: 'wss', host: '127.0.0.1', port: 0 }] });
  t.same(h.layer.listening().map((e) => e.protocol), ['wss']);
  const c = await open(t, `wss://localhost:${h.port}/`, { ca: certs.caCert });
  c.ws.send(sip());
  await until(() => c.received.length === 1, 'echo over wss');
  t.equal(c.received[0].data.toString('latin1'), sip());
  t.equal(h.messages[0].source.protocol, 'wss');
  t.equal(h.messages[0].source.local.protocol, 'wss');
  t.equal(h.layer.connectionCount('wss'), 1);
  t.equal(h.layer.stats.messagesIn.wss, 1);
  // A client that does not trust the certificate never gets a connection.
  const bad = client(t, `wss://localhost:${h.port}/`);
  await until(() => bad.closed(), 'untrusted certificate: client gave up');
  t.equal(h.messages.length, 1);

  // Client certificates required: without one the handshake fails.
  const req = await startLayer(t, { tls: { ...tls, verifyClients: 'required' }, specs: [{ protocol: 'wss', host: '127.0.0.1', port: 0 }] });
  const anon = client(t, `wss://localhost:${req.port}/`, ['sip'], { ca: certs.caCert });
  await until(() => anon.closed(), 'no client certificate: refused');
  await until(() => req.layer.stats.dropped['tls-handshake'] === 1, 'handshake failure counted');
  const door = await open(t, `wss://localhost:${req.port}/`, { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey });
  door.ws.send(sip());
  await until(() => req.messages.length === 1, 'with a client certificate');
  t.equal(req.messages[0].source.protocol, 'wss', 'a door station with its certificate gets in');
  t.equal(req.layer.stats.dropped['tls-handshake'], 1, 'one handshake failure');
});
