import t, { type Test } from 'tap';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import {
  DEFAULT_TRANSPORT_LIMITS,
  TransportLayer,
  type Destination,
  type ListenSpec,
  type Source,
  type TransportLimits,
} from '../../src/transport/index.js';
import { until } from '../helpers/wait.js';

const TEST_TIMEOUT = { timeout: 5000 };


async function ipv6Available(): Promise<boolean> {
  const s = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  return new Promise((resolve) => {
    s.once('error', () => {
      s.close();
      resolve(false);
    });
    s.bind(0, '::1', () => s.close(() => resolve(true)));
  });
}

interface Harness {
  layer: TransportLayer;
  messages: { data: string; source: Source }[];
  sendErrors: { dest: Destination; err: Error }[];
}

async function startLayer(t: Test, specs: ListenSpec[], limits: Partial<TransportLimits> = {}): Promise<Harness> {
  const h: Harness = { layer: null as unknown as TransportLayer, messages: [], sendErrors: [] };
  h.layer = new TransportLayer(specs, { ...DEFAULT_TRANSPORT_LIMITS, ...limits }, {
    onMessage(data, source) {
      h.messages.push({ data: data.toString('latin1'), source });
    },
    onSendError(dest, err) {
      h.sendErrors.push({ dest, err });
    },
  });
  await h.layer.start();
  t.teardown(() => h.layer.stop());
  return h;
}

async function client(t: Test, family: 4 | 6): Promise<{ sock: dgram.Socket; got: Buffer[]; port: number }> {
  const sock = dgram.createSocket(family === 6 ? { type: 'udp6', ipv6Only: true } : { type: 'udp4' });
  const got: Buffer[] = [];
  sock.on('message', (m) => got.push(m));
  await new Promise<void>((resolve) => sock.bind(0, family === 6 ? '::1' : '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => sock.close(() => resolve())));
  return { sock, got, port: sock.address().port };
}

function sendTo(sock: dgram.Socket, data: Buffer | string, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => sock.send(data, port, address, (err) => (err ? reject(err) : resolve())));
}

const SIP = 'OPTIONS sip:door@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n';
const COOKIE = 0x2112a442;

function stunRequest(txid: Buffer, fingerprint: boolean): Buffer {
  const req = Buffer.alloc(20 + (fingerprint ? 8 : 0));
  req.writeUInt16BE(0x0001, 0);
  req.writeUInt16BE(fingerprint ? 8 : 0, 2);
  req.writeUInt32BE(COOKIE, 4);
  txid.copy(req, 8);
  if (fingerprint) {
    req.writeUInt16BE(0x8028, 20);
    req.writeUInt16BE(4, 22);
    req.writeUInt32BE((zlib.crc32(req.subarray(0, 20)) ^ 0x5354554e) >>> 0, 24);
  }
  return req;
}

interface Decoded {
  type: number;
  txid: Buffer;
  family: number;
  port: number;
  address: string;
  fingerprintOk: boolean | null;
}

// Decodes a Binding response by hand (RFC 5389 §6, §15.2, §15.5).
function decodeStun(res: Buffer): Decoded {
  const type = res.readUInt16BE(0);
  const len = res.readUInt16BE(2);
  if (20 + len !== res.length) throw new Error('bad length');
  if (res.readUInt32BE(4) !== COOKIE) throw new Error('bad cookie');
  const txid = res.subarray(8, 20);
  let family = 0;
  let port = 0;
  let address = '';
  let fingerprintOk: boolean | null = null;
  let p = 20;
  while (p < res.length) {
    const at = res.readUInt16BE(p);
    const al = res.readUInt16BE(p + 2);
    const v = res.subarray(p + 4, p + 4 + al);
    if (at === 0x0020) {
      family = v[1];
      port = v.readUInt16BE(2) ^ 0x2112;
      const key = res.subarray(4, 20); // cookie || transaction id
      const raw = Buffer.from(v.subarray(4));
      for (let i = 0; i < raw.length; i++) raw[i] ^= key[i];
      if (family === 1) address = [...raw].join('.');
      else {
        const groups: string[] = [];
        for (let i = 0; i < 16; i += 2) groups.push(raw.readUInt16BE(i).toString(16));
        address = groups.join(':');
      }
    } else if (at === 0x8028) {
      fingerprintOk = v.readUInt32BE(0) === ((zlib.crc32(res.subarray(0, p)) ^ 0x5354554e) >>> 0);
    }
    p += 4 + ((al + 3) & ~3);
  }
  return { type, txid: Buffer.from(txid), family, port, address, fingerprintOk };
}

t.test('a destination given by name is still resolved (literals skip dns.lookup)', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, [{ protocol: 'udp', host: '127.0.0.1', port: 0 }]);
  const c = await client(t, 4);
  h.layer.send(Buffer.from('by literal'), { protocol: 'udp', address: '127.0.0.1', port: c.port });
  h.layer.send(Buffer.from('by name'), { protocol: 'udp', address: 'localhost', port: c.port });
  await until(() => c.got.length === 2, 'both datagrams');
  t.same(c.got.map((b) => b.toString()).sort(), ['by literal', 'by name']);
  h.layer.send(Buffer.from('nowhere'), { protocol: 'udp', address: 'no-such-host.invalid', port: c.port });
  await until(() => h.layer.stats.dropped['send-error'] === 1, 'a name that does not resolve is a counted send error');
  t.equal(c.got.length, 2);
});

t.test('a datagram is delivered with its Source, and a reply reaches the client', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, [{ protocol: 'udp', host: '127.0.0.1', port: 0 }]);
  const [local] = h.layer.listening();
  t.equal(local.protocol, 'udp');
  t.equal(local.address, '127.0.0.1');
  t.ok(local.port > 0, 'port resolved');
  const c = await client(t, 4);
  await sendTo(c.sock, SIP, local.port, '127.0.0.1');
  await until(() => h.messages.length === 1, 'message');
  t.equal(h.messages[0].data, SIP);
  t.same(h.messages[0].source, {
    protocol: 'udp',
    address: '127.0.0.1',
    port: c.port,
    family: 4,
    local: { protocol: 'udp', address: '127.0.0.1', port: local.port },
    connectionId: 0,
  });
  h.layer.send(Buffer.from('SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'), h.messages[0].source);
  await until(() => c.got.length === 1, 'reply');
  t.equal(c.got[0].toString(), 'SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n');
  t.equal(h.layer.stats.messagesIn.udp, 1);
  t.equal(h.layer.stats.messagesOut.udp, 1);
  t.equal(h.layer.connectionCount(), 0);
});

t.test('datagrams from one address and port share one frozen Source; another port has its own', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, [{ protocol: 'udp', host: '127.0.0.1', port: 0 }]);
  const port = h.layer.listening()[0].port;
  const a = await client(t, 4);
  const b = await client(t, 4);
  await sendTo(a.sock, SIP, port, '127.0.0.1');
  await sendTo(a.sock, SIP, port, '127.0.0.1');
  await sendTo(b.sock, SIP, port, '127.0.0.1');
  await until(() => h.messages.length === 3, 'three datagrams');
  const fromA = h.messages.filter((m) => m.source.port === a.port);
  const fromB = h.messages.filter((m) => m.source.port === b.port);
  t.equal(fromA.length, 2);
  t.equal(fromB.length, 1);
  t.equal(fromA[0].source, fromA[1].source, 'the same object for the same address and port');
  t.not(fromA[0].source, fromB[0].source);
  t.ok(Object.isFrozen(fromA[0].source), 'shared, so frozen');
  t.throws(() => {
    (fromA[0].source as { port: number }).port = 1;
  }, TypeError);
  t.equal(fromA[1].source.port, a.port);

  // The same port from another address: its own Source, then a's again.
  const other = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => other.bind(a.port, '127.0.0.2', resolve));
  t.teardown(() => new Promise<void>((resolve) => other.close(() => resolve())));
  await sendTo(other, SIP, port, '127.0.0.1');
  await until(() => h.messages.length === 4, 'the datagram from 127.0.0.2');
  await sendTo(a.sock, SIP, port, '127.0.0.1');
  await until(() => h.messages.length === 5, 'a again');
  t.equal(h.messages[3].source.address, '127.0.0.2');
  t.equal(h.messages[3].source.port, a.port);
  t.equal(h.messages[4].source.address, '127.0.0.1');
  t.equal(h.messages[4].source.port, a.port);
});

t.test('CRLF keep-alives are skipped, oversize datagrams dropped', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], { maxMessageSize: 200 });
  const port = h.layer.listening()[0].port;
  const c = await client(t, 4);
  await sendTo(c.sock, '\r\n\r\n', port, '127.0.0.1');
  await sendTo(c.sock, '\r\n', port, '127.0.0.1');
  await sendTo(c.sock, 'X'.repeat(201), port, '127.0.0.1');
  await sendTo(c.sock, SIP, port, '127.0.0.1');
  await until(() => h.messages.length === 1, 'message');
  t.equal(h.messages[0].data, SIP, 'only the SIP message is handed up');
  t.equal(h.layer.stats.keepalivesIn.udp, 2);
  t.equal(h.layer.stats.dropped.oversize, 1);
  t.equal(c.got.length, 0, 'no answer to a CRLF keep-alive');
});

t.test('STUN Binding request gets XOR-MAPPED-ADDRESS (IPv4)', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, [{ protocol: 'udp', host: '127.0.0.1', port: 0 }]);
  const port = h.layer.listening()[0].port;
  const c = await client(t, 4);
  const txid = randomBytes(12);
  await sendTo(c.sock, stunRequest(txid, false), port, '127.0.0.1');
  await until(() => c.got.length === 1, 'STUN response');
  const d = decodeStun(c.got[0]);
  t.equal(d.type, 0x0101, 'Binding success response');
  t.same(d.txid, txid, 'transaction id echoed');
  t.equal(d.family, 1);
  t.equal(d.address, '127.0.0.1');
  t.equal(d.port, c.port);
  t.equal(d.fingerprintOk, null, 'no FINGERPRINT when the request had none');

  const txid2 = randomBytes(12);
  await sendTo(c.sock, stunRequest(txid2, true), port, '127.0.0.1');
  await until(() => c.got.length === 2, 'second STUN response');
  const d2 = decodeStun(c.got[1]);
  t.same(d2.txid, txid2);
  t.equal(d2.fingerprintOk, true, 'FINGERPRINT present and correct');

  // Not a Binding request (an Allocate request): not answered, counted.
  const bad = stunRequest(randomBytes(12), false);
  bad.writeUInt16BE(0x0003, 0);
  await sendTo(c.sock, bad, port, '127.0.0.1');
  // Binding indication: a keep-alive, not answered.
  const ind = stunRequest(randomBytes(12), false);
  ind.writeUInt16BE(0x0011, 0);
  await sendTo(c.sock, ind, port, '127.0.0.1');
  await sendTo(c.sock, SIP, port, '127.0.0.1');
  await until(() => h.messages.length === 1, 'message after STUN');
  t.equal(c.got.length, 2, 'nothing more answered');
  t.equal(h.layer.stats.stunAnswered, 2);
  t.equal(h.layer.stats.dropped.stun, 1);
  t.equal(h.layer.stats.keepalivesIn.udp, 1);
});

const HAVE_IPV6 = await ipv6Available();

t.test('IPv6 on ::1: delivery, reply, STUN', { ...TEST_TIMEOUT, skip: HAVE_IPV6 ? false : '::1 not configured' }, async (t) => {
  const h = await startLayer(t, [
    { protocol: 'udp', host: '127.0.0.1', port: 0 },
    { protocol: 'udp', host: '[::1]', port: 0 },
  ]);
  const eps = h.layer.listening();
  t.equal(eps.length, 2);
  const v6 = eps.find((e) => e.address === '::1');
  t.ok(v6, 'bound on ::1');
  const c = await client(t, 6);
  await sendTo(c.sock, SIP, v6!.port, '::1');
  await until(() => h.messages.length === 1, 'message');
  const src = h.messages[0].source;
  t.equal(src.family, 6);
  t.equal(src.address, '::1');
  t.equal(src.port, c.port);
  t.same(src.local, { protocol: 'udp', address: '::1', port: v6!.port });
  h.layer.send(Buffer.from('SIP/2.0 200 OK\r\n\r\n'), { protocol: 'udp', address: '::1', port: c.port });
  await until(() => c.got.length === 1, 'reply');
  t.equal(c.got[0].toString(), 'SIP/2.0 200 OK\r\n\r\n');

  const txid = randomBytes(12);
  await sendTo(c.sock, stunRequest(txid, false), v6!.port, '::1');
  await until(() => c.got.length === 2, 'STUN response');
  const d = decodeStun(c.got[1]);
  t.equal(d.family, 2);
  t.equal(d.address, '0:0:0:0:0:0:0:1');
  t.equal(d.port, c.port);
  t.same(d.txid, txid);
});

t.test('send picks the socket by family and local address', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, [
    { protocol: 'udp', host: '127.0.0.1', port: 0 },
    { protocol: 'udp', host: '127.0.0.1', port: 0 },
  ]);
  const [a, b] = h.layer.listening();
  const c = await client(t, 4);
  const from: number[] = [];
  c.sock.removeAllListeners('message');
  c.sock.on('message', (_m, rinfo) => from.push(rinfo.port));
  h.layer.send(Buffer.from('x'), { protocol: 'udp', address: '127.0.0.1', port: c.port, local: b });
  h.layer.send(Buffer.from('y'), { protocol: 'udp', address: '127.0.0.1', port: c.port, local: a });
  await until(() => from.length === 2, 'two datagrams');
  t.same(from.sort(), [a.port, b.port].sort(), 'each left from the socket asked for');

  h.layer.send(Buffer.from('z'), { protocol: 'udp', address: '::1', port: 5060 });
  t.equal(h.sendErrors.length, 1, 'no IPv6 socket: reported');
  t.equal(h.layer.stats.dropped['send-error'], 1);
});

t.test('start rejects naming the spec on EADDRINUSE, and binds nothing', TEST_TIMEOUT, async (t) => {
  const h = await startLayer(t, [{ protocol: 'udp', host: '127.0.0.1', port: 0 }]);
  const port = h.layer.listening()[0].port;
  const other = new TransportLayer(
    [
      { protocol: 'udp', host: '127.0.0.1', port: 0 },
      { protocol: 'udp', host: '127.0.0.1', port },
    ],
    DEFAULT_TRANSPORT_LIMITS,
    { onMessage() {} },
  );
  await t.rejects(other.start(), {
    message: `cannot listen on udp 127.0.0.1:${port}: address already in use (EADDRINUSE)`,
    code: 'EADDRINUSE',
  });
  t.same(other.listening(), []);
  await other.stop();

  const tls = new TransportLayer([{ protocol: 'tls', host: '127.0.0.1', port: 0 }], DEFAULT_TRANSPORT_LIMITS, {
    onMessage() {},
  });
  await t.rejects(tls.start(), { message: /tls 127\.0\.0\.1:0: no TLS certificate and key given/ });
  const wss = new TransportLayer([{ protocol: 'wss', host: '127.0.0.1', port: 0 }], DEFAULT_TRANSPORT_LIMITS, {
    onMessage() {},
  });
  await t.rejects(wss.start(), { message: /wss 127\.0\.0\.1:0: no TLS certificate and key given/ });
  const named = new TransportLayer([{ protocol: 'udp', host: 'localhost', port: 0 }], DEFAULT_TRANSPORT_LIMITS, {
    onMessage() {},
  });
  await t.rejects(named.start(), { message: /host must be an IP address/ });
});

t.test('queue probes: a listener measures how long a datagram waits in its own queue; probes never reach the sink', async (t) => {
  const h = await startLayer(t, [
    { protocol: 'udp', host: '127.0.0.1', port: 0 },
    { protocol: 'udp', host: '0.0.0.0', port: 0 },
  ]);
  h.layer.probeUdp();
  await new Promise((r) => setTimeout(r, 100));
  const idle = h.layer.takeUdpQueueDelay();
  t.ok(idle < 50, `probes back from both listeners at once (0.0.0.0 probes itself on 127.0.0.1): ${idle.toFixed(1)} ms`);
  t.equal(h.messages.length, 0, 'a probe is swallowed by the listener, never handed up as a message');

  // A probe sent, then the loop blocked for 150 ms: the probe waited about that long in the queue.
  const block = (ms: number) => {
    const end = Date.now() + ms;
    while (Date.now() < end);
  };
  h.layer.probeUdp();
  block(150);
  await new Promise((r) => setTimeout(r, 20));
  const waited = h.layer.takeUdpQueueDelay();
  t.ok(waited >= 140, `once read, the wait it had is reported (${waited.toFixed(0)} ms)`);
  t.equal(h.layer.takeUdpQueueDelay(), 0, 'once: the next window starts afresh');

  h.layer.probeUdp();
  block(150);
  const age = h.layer.takeUdpQueueDelay();
  t.ok(age >= 140, `while it is still queued, its age counts (${age.toFixed(0)} ms)`);
  await new Promise((r) => setTimeout(r, 20));
  t.equal(h.layer.takeUdpQueueDelay(), 0, 'and its wait, once read, is not reported again: one pause counts in one window');

  // 20 octets that look like a probe but are not this listener's: handed up like any datagram.
  const port = h.layer.listening()[0].port;
  const s = dgram.createSocket('udp4');
  t.teardown(() => s.close());
  const fake = Buffer.alloc(20);
  s.send(fake, port, '127.0.0.1');
  await until(() => h.messages.length === 1, 'the stranger handed up');
  t.equal(h.messages[0].data.length, 20);
});
