// The link between workers (src/transport/relay.ts), two relays in this
// process on real loopback TCP: a message and its Source, a send asked of
// the worker holding a connection, connections opening and closing, queue
// probes; a connection without the cookie is closed and nothing of it is
// delivered; a frame for a worker that is not up is dropped and counted;
// route() hands a worker's messages to the next one up; a TransportLayer
// sends down a sibling's connection over the relay, or fails at once when
// that worker is down.
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import { WorkerRelay, type RelayHandlers } from '../../src/transport/relay.js';
import { DEFAULT_TRANSPORT_LIMITS, TransportLayer, type Destination, type Endpoint, type Source } from '../../src/transport/index.js';
import { until } from '../helpers/wait.js';

interface Seen {
  delivered: Array<{ data: string; source: Source }>;
  sent: Array<{ data: string; dest: Destination }>;
  probes: Array<{ listener: number; data: Buffer }>;
  opened: Array<{ id: number; remote: Endpoint }>;
  closed: Array<{ id: number; remote: Endpoint }>;
}

function recorder(): { seen: Seen; handlers: RelayHandlers } {
  const seen: Seen = { delivered: [], sent: [], probes: [], opened: [], closed: [] };
  return {
    seen,
    handlers: {
      deliver: (data, source) => seen.delivered.push({ data: data.toString('latin1'), source }),
      send: (data, dest) => seen.sent.push({ data: data.toString('latin1'), dest }),
      probe: (listener, data) => seen.probes.push({ listener, data }),
      opened: (id, remote) => seen.opened.push({ id, remote }),
      closed: (id, remote) => seen.closed.push({ id, remote }),
    },
  };
}

const cookie = randomBytes(16);

async function pair(t: Test) {
  const r0 = recorder();
  const r1 = recorder();
  const a = new WorkerRelay({ index: 0, count: 2, cookie }, r0.handlers);
  const b = new WorkerRelay({ index: 1, count: 2, cookie }, r1.handlers);
  const ports = [await a.start(), await b.start()];
  a.setPeers(ports);
  b.setPeers(ports);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  return { a, b, seenA: r0.seen, seenB: r1.seen, ports };
}

t.test('messages, sends, connections and probes go across', async (t) => {
  const { a, b, seenA, seenB } = await pair(t);
  const source: Source = Object.freeze<Source>({ protocol: 'tcp', address: '127.0.0.9', port: 40000, family: 4, local: { protocol: 'tcp', address: '127.0.0.1', port: 5060 }, connectionId: 6 });
  const v6: Source = Object.freeze<Source>({ protocol: 'udp', address: '::1', port: 5062, family: 6, local: { protocol: 'udp', address: '::', port: 5060 }, connectionId: 0 });
  a.forward(1, Buffer.from('INVITE one'), source);
  a.forward(1, Buffer.from('INVITE two'), v6);
  b.sendVia(0, Buffer.from('SIP/2.0 200 OK'), { protocol: 'ws', address: '127.0.0.3', port: 3333, connectionId: 8 });
  b.broadcastOpened(11, { protocol: 'tls', address: '127.0.0.4', port: 4444 });
  b.broadcastClosed(11, { protocol: 'tls', address: '127.0.0.4', port: 4444 });
  b.probe(0, 2, Buffer.alloc(20, 7));
  await until(() => seenB.delivered.length === 2 && seenA.sent.length === 1 && seenA.closed.length === 1 && seenA.probes.length === 1, 'frames across', 3000);
  t.same(seenB.delivered[0], { data: 'INVITE one', source }, 'a message and its Source');
  t.same(seenB.delivered[1], { data: 'INVITE two', source: v6 }, 'an IPv6 one');
  t.ok(Object.isFrozen(seenB.delivered[0].source), 'the Source is frozen, like the listeners’');
  t.same(seenA.sent, [{ data: 'SIP/2.0 200 OK', dest: { protocol: 'ws', address: '127.0.0.3', port: 3333, connectionId: 8 } }], 'a send for the connection holder');
  t.same(seenA.opened, [{ id: 11, remote: { protocol: 'tls', address: '127.0.0.4', port: 4444 } }], 'a connection opened');
  t.same(seenA.closed, [{ id: 11, remote: { protocol: 'tls', address: '127.0.0.4', port: 4444 } }], 'and closed');
  t.same(seenA.probes, [{ listener: 2, data: Buffer.alloc(20, 7) }], 'a probe, with its listener');
  t.same(a.stats, { forwarded: 2, received: 0, sendsRelayed: 0, dropped: 0 });
  t.same(b.stats, { forwarded: 0, received: 2, sendsRelayed: 1, dropped: 0 });

  // A large message (a stream message may be up to 1 MiB) in many TCP chunks.
  const big = Buffer.alloc(300_000, 0x61);
  a.forward(1, big, source);
  await until(() => seenB.delivered.length === 3, 'the large one', 3000);
  t.equal(seenB.delivered[2].data.length, big.length, 'arrives whole');
});

t.test('a connection without the cookie is closed, nothing of it delivered', async (t) => {
  const { ports, seenB } = await pair(t);
  const frame = (op: number, payload: Buffer) => {
    const f = Buffer.alloc(5 + payload.length);
    f.writeUInt32BE(1 + payload.length, 0);
    f[4] = op;
    payload.copy(f, 5);
    return f;
  };
  const msg = Buffer.concat([Buffer.from([1, 0, 0, 0, 0, 0, 0x13, 0xc4, 9]), Buffer.from('127.0.0.9'), Buffer.from([0, 0x13, 0xc4, 9]), Buffer.from('127.0.0.1'), Buffer.from('INVITE x')]);
  for (const hello of [frame(0, Buffer.concat([randomBytes(16), Buffer.from([0])])), frame(1, msg.subarray(1))]) {
    const s = net.connect({ host: '127.0.0.1', port: ports[1] });
    s.on('error', () => {});
    s.write(hello);
    s.write(frame(1, msg.subarray(1)));
    await new Promise<void>((resolve) => s.once('close', () => resolve()));
    t.pass('closed by the relay');
  }
  // An absurd length closes it too, cookie or not.
  const s = net.connect({ host: '127.0.0.1', port: ports[1] });
  s.on('error', () => {});
  s.write(frame(0, Buffer.concat([cookie, Buffer.from([0])])));
  s.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]));
  await new Promise<void>((resolve) => s.once('close', () => resolve()));
  t.pass('an oversized frame closes the link');
  t.same(seenB.delivered, [], 'nothing delivered');
});

t.test('a worker that is not up: its frames are dropped, its messages go to the next one up', async (t) => {
  const { a, ports } = await pair(t);
  t.equal(a.route(1), 1, 'worker 1 up: its own');
  t.ok(a.complete, 'all up');
  a.setPeers([ports[0], null]);
  t.notOk(a.complete, 'one down');
  t.equal(a.route(1), 0, 'worker 1 down: taken by worker 0');
  t.notOk(a.isUp(1), 'isUp says so');
  t.ok(a.isUp(0), 'and that this one is up');
  const source: Source = { protocol: 'udp', address: '127.0.0.9', port: 1, family: 4, local: { protocol: 'udp', address: '127.0.0.1', port: 5060 }, connectionId: 0 };
  a.forward(1, Buffer.from('x'), source);
  t.equal(a.stats.dropped, 1, 'a frame to it is dropped and counted');
  const three = new WorkerRelay({ index: 0, count: 3, cookie }, recorder().handlers);
  three.setPeers([1, null, 3]);
  t.equal(three.route(1), 2, 'of three: the next one up after it');
  await three.close();
});

t.test("a TransportLayer with workers: a send down a sibling's connection goes over the relay while that worker is up, fails at once (ENOTCONN) while it is not", async (t) => {
  const errors: Array<{ dest: Destination; code: unknown }> = [];
  const layer = new TransportLayer(
    [{ protocol: 'udp', host: '127.0.0.1', port: 0 }],
    DEFAULT_TRANSPORT_LIMITS,
    { onMessage() {}, onSendError: (dest, err) => errors.push({ dest, code: (err as NodeJS.ErrnoException).code }) },
    undefined,
    undefined,
    undefined,
    { seat: { index: 0, count: 2, cookie }, owner: () => 0 },
  );
  await layer.start();
  t.teardown(() => layer.stop());
  const r1 = recorder();
  const sibling = new WorkerRelay({ index: 1, count: 2, cookie }, r1.handlers);
  const siblingPort = await sibling.start();
  t.teardown(() => sibling.close());
  const ports = [layer.relayPort, siblingPort];
  sibling.setPeers(ports);
  // Connection 7 is odd: worker 1 holds it.
  const dest: Destination = { protocol: 'tcp', address: '127.0.0.5', port: 5555, connectionId: 7 };

  layer.setRelayPeers(ports);
  layer.send(Buffer.from('SIP/2.0 180 Ringing'), dest);
  await until(() => r1.seen.sent.length === 1, 'the send relayed to worker 1');
  t.equal(r1.seen.sent[0].data, 'SIP/2.0 180 Ringing');
  t.equal(r1.seen.sent[0].dest.connectionId, 7, 'down its connection');
  t.same(errors, [], 'no error');

  layer.setRelayPeers([layer.relayPort, null]);
  layer.send(Buffer.from('SIP/2.0 200 OK'), dest);
  t.equal(errors.length, 1, 'worker 1 down: the send fails at once');
  t.equal(errors[0].code, 'ENOTCONN');
  t.equal(errors[0].dest.connectionId, 7);
  t.equal(layer.stats.dropped['send-error'], 1, 'counted as a send error');
  t.equal(r1.seen.sent.length, 1, 'nothing more reached worker 1');
});
