import t, { type Test } from 'tap';
import net from 'node:net';
import {
  DEFAULT_TRANSPORT_LIMITS,
  TransportLayer,
  type Destination,
  type Endpoint,
  type ListenSpec,
  type Source,
  type TransportLimits,
} from '../../src/transport/index.js';
import { until } from '../helpers/wait.js';

const TEST_TIMEOUT = { timeout: 8000 };
const LOCAL: ListenSpec = { protocol: 'tcp', host: '127.0.0.1', port: 0 };


const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Harness {
  layer: TransportLayer;
  port: number;
  messages: { data: string; source: Source }[];
  closed: { id: number; remote: Endpoint }[];
  sendErrors: { dest: Destination; err: NodeJS.ErrnoException }[];
}

async function startLayer(t: Test, limits: Partial<TransportLimits> = {}, specs: ListenSpec[] = [LOCAL]): Promise<Harness> {
  const h: Harness = { layer: null as unknown as TransportLayer, port: 0, messages: [], closed: [], sendErrors: [] };
  h.layer = new TransportLayer(specs, { ...DEFAULT_TRANSPORT_LIMITS, ...limits }, {
    onMessage(data, source) {
      h.messages.push({ data: data.toString('latin1'), source });
    },
    onConnectionClosed(id, remote) {
      h.closed.push({ id, remote });
    },
    onSendError(dest, err) {
      h.sendErrors.push({ dest, err });
    },
  });
  await h.layer.start();
  h.port = h.layer.listening()[0].port;
  t.teardown(() => h.layer.stop());
  return h;
}

interface Client {
  sock: net.Socket;
  data: () => string;
  closed: () => boolean;
}

async function connect(t: Test, port: number, host = '127.0.0.1'): Promise<Client> {
  const sock = net.connect({ port, host });
  let received = '';
  let closed = false;
  sock.on('data', (d) => (received += d.toString('latin1')));
  sock.on('error', () => {});
  sock.on('close', () => (closed = true));
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  t.teardown(() => {
    sock.destroy();
  });
  return { sock, data: () => received, closed: () => closed };
}

function sip(body = '', method = 'REGISTER'): string {
  return (
    `${method} sip:example.com SIP/2.0\r\n` +
    'Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\n' +
    'Call-ID: 1@x\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n` +
    body
  );
}

const OK = 'SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n';

t.test('messages over one connection, reply down the same connection', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  const c = await connect(t, h.port);
  c.sock.write(sip('a') + '\r\n' + sip('bb', 'OPTIONS'));
  const third = sip('hello world');
  c.sock.write(third.slice(0, 20));
  await delay(20);
  c.sock.write(third.slice(20));
  await until(() => h.messages.length === 3, 'three messages');
  t.same(
    h.messages.map((m) => m.data),
    [sip('a'), sip('bb', 'OPTIONS'), third],
  );
  const src = h.messages[0].source;
  t.same(src, {
    protocol: 'tcp',
    address: '127.0.0.1',
    port: c.sock.localPort,
    family: 4,
    local: { protocol: 'tcp', address: '127.0.0.1', port: h.port },
    connectionId: src.connectionId,
  });
  t.ok(src.connectionId > 0, 'connection id');
  t.equal(h.messages[2].source, src, 'the same Source object for every message of a connection');
  t.equal(h.layer.connectionCount('tcp'), 1);
  t.equal(h.layer.connectionCount('udp'), 0);

  h.layer.send(Buffer.from(OK), src);
  await until(() => c.data() === OK, 'reply');
  t.equal(h.layer.stats.messagesIn.tcp, 3);
  t.equal(h.layer.stats.messagesOut.tcp, 1);
});

t.test('reuse by endpoint, stale connection id falls back to it', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  const c = await connect(t, h.port);
  c.sock.write(sip());
  await until(() => h.messages.length === 1, 'message');
  const remote = { protocol: 'tcp' as const, address: '127.0.0.1', port: c.sock.localPort as number };
  h.layer.send(Buffer.from(OK), remote);
  h.layer.send(Buffer.from(OK), { ...remote, connectionId: 999999 });
  await until(() => c.data() === OK + OK, 'both replies on the existing connection');
  t.equal(h.layer.connectionCount(), 1, 'no new connection');
  t.equal(h.layer.stats.connectionsOutbound, 0);
});

t.test("a connection id naming someone else's connection is not used: the destination's own is", TEST_TIMEOUT, async (t) => {
  // A binding stored by another process or node carries an id that may name
  // a different connection here.
  const h = await startLayer(t);
  const alice = await connect(t, h.port);
  const bob = await connect(t, h.port);
  alice.sock.write(sip());
  bob.sock.write(sip());
  await until(() => h.messages.length === 2, 'both');
  const aliceId = h.messages.find((m) => m.source.port === alice.sock.localPort)!.source.connectionId;
  h.layer.send(Buffer.from(OK), { protocol: 'tcp', address: '127.0.0.1', port: bob.sock.localPort as number, connectionId: aliceId });
  await until(() => bob.data() === OK, "bob's reply on bob's connection");
  t.equal(alice.data(), '', 'nothing for bob went down alice');
});

t.test('outbound connect for a new endpoint, data queued until connected', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  let got = '';
  const peers: net.Socket[] = [];
  const server = net.createServer((s) => {
    peers.push(s);
    s.on('data', (d) => (got += d.toString('latin1')));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as net.AddressInfo).port;
  const dest = { protocol: 'tcp' as const, address: '127.0.0.1', port };
  const one = sip('1', 'NOTIFY');
  const two = sip('2', 'NOTIFY');
  h.layer.send(Buffer.from(one), dest);
  h.layer.send(Buffer.from(two), dest);
  t.equal(h.layer.connectionCount('tcp'), 1, 'one connection for both');
  await until(() => got === one + two, 'both messages in order');
  t.equal(peers.length, 1);
  t.equal(h.layer.stats.connectionsOutbound, 1);

  // The peer answers over the same connection; the Source names it.
  peers[0].write(OK);
  await until(() => h.messages.length === 1, 'response from the peer');
  const src = h.messages[0].source;
  t.equal(src.port, port);
  t.equal(src.address, '127.0.0.1');
  t.equal(src.local.port, peers[0].remotePort, 'local end of the outbound connection');
  h.layer.send(Buffer.from(sip('3', 'NOTIFY')), src);
  await until(() => got.endsWith(sip('3', 'NOTIFY')), 'sent down the connection id');
  t.equal(peers.length, 1, 'still one connection');
  // Peers closing is reported.
  peers[0].destroy();
  await until(() => h.closed.length === 1, 'closed');
  t.equal(h.closed[0].id, src.connectionId);
  t.same(h.closed[0].remote, { protocol: 'tcp', address: '127.0.0.1', port });
  t.equal(h.layer.connectionCount(), 0);
});

t.test('a failed connect is counted and reported', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const dest = { protocol: 'tcp' as const, address: '127.0.0.1', port };
  h.layer.send(Buffer.from(sip()), dest);
  await until(() => h.sendErrors.length === 1, 'send error');
  t.equal(h.sendErrors[0].dest, dest);
  t.equal(h.sendErrors[0].err.code, 'ECONNREFUSED');
  t.equal(h.layer.stats.dropped['send-error'], 1);
  t.equal(h.layer.connectionCount(), 0);
});

t.test('ping gets a pong', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  const c = await connect(t, h.port);
  c.sock.write('\r\n\r\n');
  await until(() => c.data() === '\r\n', 'pong');
  c.sock.write('\r\n');
  await delay(20);
  c.sock.write('\r\n');
  await until(() => c.data() === '\r\n\r\n', 'second pong, ping split across writes');
  t.equal(h.layer.stats.keepalivesIn.tcp, 2);
  t.equal(h.messages.length, 0);
});

t.test('per-source and total connection bounds', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { maxConnectionsPerSource: 2 });
  const a = await connect(t, h.port);
  const b = await connect(t, h.port);
  await until(() => h.layer.connectionCount() === 2, 'two accepted');
  const c = await connect(t, h.port);
  await until(() => c.closed(), 'third closed');
  t.notOk(a.closed() || b.closed(), 'the first two stay');
  t.equal(h.layer.stats.dropped['connection-limit'], 1);
  t.equal(h.layer.connectionCount(), 2);
  // A freed slot can be used again.
  a.sock.destroy();
  await until(() => h.layer.connectionCount() === 1, 'one left');
  const d = await connect(t, h.port);
  d.sock.write(sip());
  await until(() => h.messages.length === 1, 'message on the new connection');
  t.notOk(d.closed());

  const g = await startLayer(t, { maxConnections: 1 });
  await connect(t, g.port);
  await until(() => g.layer.connectionCount() === 1, 'one accepted');
  const e = await connect(t, g.port);
  await until(() => e.closed(), 'over maxConnections closed');
  t.equal(g.layer.stats.dropped['connection-limit'], 1);
});

t.test('first-message timeout closes a half-sent head; a complete message keeps the connection', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { firstMessageTimeoutMs: 150 });
  const slow = await connect(t, h.port);
  const good = await connect(t, h.port);
  slow.sock.write('REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 1');
  good.sock.write(sip());
  const started = Date.now();
  await until(() => slow.closed(), 'slow connection closed');
  t.ok(Date.now() - started >= 100, 'not before the timeout');
  await delay(200);
  t.notOk(good.closed(), 'connection that delivered a message stays');
  t.equal(h.layer.stats.dropped.timeout, 1);
  t.equal(h.closed.length, 1);
});

t.test('idle timeout', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { idleTimeoutMs: 200 });
  const c = await connect(t, h.port);
  const localPort = c.sock.localPort;
  c.sock.write(sip());
  await until(() => h.messages.length === 1, 'message');
  const id = h.messages[0].source.connectionId;
  // Pings keep it alive.
  for (let i = 0; i < 4; i++) {
    await delay(100);
    c.sock.write('\r\n\r\n');
  }
  t.notOk(c.closed(), 'pings count as activity');
  await until(() => c.closed(), 'closed when idle', 2000);
  t.equal(h.layer.stats.dropped.timeout, 1);
  await until(() => h.closed.length === 1, 'close reported');
  t.equal(h.closed[0].id, id);
  t.equal(h.closed[0].remote.port, localPort);
});

t.test('framing errors close the connection', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, { maxMessageSize: 300 });
  const a = await connect(t, h.port);
  a.sock.write(sip() + 'OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n' + sip());
  await until(() => a.closed(), 'missing Content-Length closes');
  t.equal(h.messages.length, 1, 'the message before the error is delivered');
  t.equal(h.layer.stats.dropped.framing, 1);
  const b = await connect(t, h.port);
  b.sock.write(sip('x'.repeat(400)));
  await until(() => b.closed(), 'oversize closes');
  t.equal(h.layer.stats.dropped.oversize, 1);
  t.equal(h.layer.connectionCount(), 0);
});

const HAVE_IPV6 = await new Promise<boolean>((resolve) => {
  const probe = net.createServer();
  probe.once('error', () => resolve(false));
  probe.listen(0, '::1', () => probe.close(() => resolve(true)));
});

t.test('IPv6 on ::1', { ...TEST_TIMEOUT, skip: HAVE_IPV6 ? false : '::1 not configured' }, async (t) => {
  const h = await startLayer(t, {}, [
    { protocol: 'tcp', host: '::1', port: 0 },
    { protocol: 'tcp', host: '127.0.0.1', port: 0 },
  ]);
  const c = await connect(t, h.port, '::1');
  c.sock.write(sip());
  await until(() => h.messages.length === 1, 'message');
  const src = h.messages[0].source;
  t.equal(src.family, 6);
  t.equal(src.address, '::1');
  t.same(src.local, { protocol: 'tcp', address: '::1', port: h.port });
  h.layer.send(Buffer.from(OK), { protocol: 'tcp', address: '::1', port: c.sock.localPort as number });
  await until(() => c.data() === OK, 'reply');
});

t.test('EADDRINUSE names the spec', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  const other = new TransportLayer([{ protocol: 'tcp', host: '127.0.0.1', port: h.port }], DEFAULT_TRANSPORT_LIMITS, {
    onMessage() {},
  });
  await t.rejects(other.start(), { message: `cannot listen on tcp 127.0.0.1:${h.port}: address already in use (EADDRINUSE)` });
});

t.test('stop() closes listeners and connections', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t);
  let peer: net.Socket | null = null;
  let peerClosed = false;
  const server = net.createServer((s) => {
    peer = s;
    s.resume(); // read, so that the FIN is seen
    s.on('close', () => (peerClosed = true));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const c = await connect(t, h.port);
  c.sock.write(sip());
  h.layer.send(Buffer.from(sip()), { protocol: 'tcp', address: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
  await until(() => h.messages.length === 1 && peer !== null, 'both connections up');
  t.equal(h.layer.connectionCount(), 2);
  await h.layer.stop();
  t.equal(h.layer.connectionCount(), 0);
  await until(() => c.closed(), 'inbound client sees the close');
  await until(() => peerClosed, 'outbound peer sees the close');
  t.equal(h.closed.length, 2);
  // The port is free again.
  const again = new TransportLayer([{ protocol: 'tcp', host: '127.0.0.1', port: h.port }], DEFAULT_TRANSPORT_LIMITS, {
    onMessage() {},
  });
  await again.start();
  await again.stop();
  // Sending after stop is an error, not a throw.
  h.layer.send(Buffer.from(OK), { protocol: 'tcp', address: '127.0.0.1', port: 1 });
  t.equal(h.sendErrors.length, 1);
  await h.layer.stop();
});
