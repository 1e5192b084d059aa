// Two Portier nodes sharing one Redis (issue 8), end to end over real UDP
// sockets: a phone registered through one node is called through the
// other; REGISTERs of one AOR sent through both nodes at once all land;
// Redis stopped mid-test (calls to a cached binding still go through,
// REGISTER gets 503 with Retry-After, portier_storage_up says 0) and
// started again (REGISTER works, the binding from before the outage is
// still there). Every node is started in this process with startServer();
// the Redis is a test-owned redis-server (redis-server.ts). Every wait is
// bounded; everything is on 127.0.0.0/8.
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { SipMessage } from '../../src/sip/index.js';
import { metric } from '../helpers/tools.js';
import { UA } from '../helpers/ua.js';
import { until } from '../helpers/wait.js';
import { redisServerMissing, startRedisServer, type RedisServer } from './redis-server.js';

const missing = redisServerMissing();

let prefixes = 0;
const freshPrefix = () => `pt2n${process.pid}-${++prefixes}:`;

const DOMAIN = 'example.test';

interface Node {
  server: RunningServer;
  port: number;
  /** http://127.0.0.1:PORT/metrics, when metrics are on. */
  metricsUrl: string | null;
}

/** A Portier node on the shared Redis `url` and `prefix`; stopped by the caller (see cleanup()). */
async function startNode(t: Test, url: string, prefix: string, o: { metrics?: boolean } = {}): Promise<Node> {
  const dir = t.testdir();
  const config = parseConfig(
    [
      `domains: [${DOMAIN}]`,
      'listen: [udp:127.0.0.1:0]',
      `storage: {type: redis, url: ${JSON.stringify(url)}, prefix: ${JSON.stringify(prefix)}}`,
      'auth: off',
      'security: {exempt: [127.0.0.0/8]}',
      'registrar: {max-bindings: 10}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
      ...(o.metrics ? ['metrics: {listen: "127.0.0.1:0"}'] : []),
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  const server = await startServer(config, createLogger('fatal'));
  const port = server.listening()[0].port;
  const m = server.metricsAddress();
  return { server, port, metricsUrl: m === null ? null : `http://${m.address}:${m.port}/metrics` };
}

/**
 * One teardown that runs in a fixed order: UAs first, then the nodes, then
 * (when given) the Redis of the subtest, so that no node closes its store
 * against a Redis already gone.
 */
function cleanup(t: Test): { uas: UA[]; nodes: Node[]; redis: RedisServer[] } {
  const c = { uas: [] as UA[], nodes: [] as Node[], redis: [] as RedisServer[] };
  t.teardown(async () => {
    for (const ua of c.uas) ua.close();
    await Promise.all(c.nodes.map((n) => n.server.stop()));
    await Promise.all(c.redis.map((r) => r.close()));
  });
  return c;
}

async function ua(c: { uas: UA[] }, node: Node, user: string, localHost = '127.0.0.1'): Promise<UA> {
  const u = await UA.create({ transport: 'udp', user, domain: DOMAIN, proxyPort: node.port, localHost, t1: 100, t2: 400 });
  c.uas.push(u);
  return u;
}

/** The Contact URIs of a REGISTER's 200 (every binding of the AOR, RFC 3261 §10.3 step 8). */
const contactsOf = (res: SipMessage): string[] => (res.contacts() ?? []).map((c) => c.uriText).sort();

async function scrape(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return res.text();
}

/** A call from `caller` to `target` that the callee answers: 200, ACK reaches the callee, BYE 200. */
async function callAndHangUp(t: Test, caller: UA, callee: UA, what: string): Promise<void> {
  const before = callee.incoming.length;
  const call = caller.call(callee.aor);
  const final = await call.final();
  t.equal(final.status, 200, `${what}: answered`);
  if (final.status !== 200) return;
  t.equal(callee.incoming.length, before + 1, `${what}: the callee got the INVITE`);
  const inc = callee.incoming[callee.incoming.length - 1];
  await until(() => inc.dialog !== null && inc.dialog.requests.some((r) => r.method === 'ACK'), `${what}: ACK at the callee`, 3000);
  t.pass(`${what}: the ACK reached the callee`);
  t.equal((await call.bye()).status, 200, `${what}: BYE 200`);
  t.ok(inc.dialog!.terminated, `${what}: the callee got the BYE`);
}

/** Nodes A and B on one Redis, with a fresh prefix, cleaned up with the test. */
async function twoNodes(t: Test, url: string) {
  const c = cleanup(t);
  const prefix = freshPrefix();
  const a = await startNode(t, url, prefix);
  c.nodes.push(a);
  const b = await startNode(t, url, prefix);
  c.nodes.push(b);
  return { c, a, b };
}

if (missing) {
  t.plan(0, missing);
} else {
  const redis = await startRedisServer();
  t.teardown(() => redis.close());

  await t.test('a phone registered on one node is called through the other', async (t) => {
    const { c, a, b } = await twoNodes(t, redis.url);

    // Phone on B, door station on A.
    const phone = await ua(c, b, 'alice', '127.0.0.5');
    t.equal((await phone.register({ expires: 600 })).status, 200, 'alice registers through B');
    const door = await ua(c, a, 'door', '127.0.0.6');
    await callAndHangUp(t, door, phone, 'door on A → phone on B');

    // Phone on A, caller on B.
    const phone2 = await ua(c, a, 'bob', '127.0.0.7');
    t.equal((await phone2.register({ expires: 600 })).status, 200, 'bob registers through A');
    const door2 = await ua(c, b, 'door2', '127.0.0.8');
    await callAndHangUp(t, door2, phone2, 'door on B → phone on A');

    for (const u of [phone, door, phone2, door2]) t.same(u.errors, [], `${u.user}: no UA errors`);
  });

  await t.test('REGISTERs of one AOR through both nodes at once: every binding lands', async (t) => {
    const { c, a, b } = await twoNodes(t, redis.url);

    const N = 10;
    const devices: UA[] = [];
    for (let i = 0; i < N; i++) devices.push(await ua(c, i % 2 === 0 ? a : b, 'staff', `127.0.1.${i + 1}`));
    t.equal(new Set(devices.map((d) => d.instance)).size, N, 'each device has its own +sip.instance');

    const results = await Promise.all(devices.map((d) => d.register({ expires: 600 })));
    t.same(
      results.map((r) => r.status),
      Array(N).fill(200),
      'every REGISTER (half through A, half through B, all at once) got 200',
    );
    const expected = devices.map((d) => d.contactUri).sort();
    // The write applied last saw every other one: its 200 lists them all.
    t.equal(Math.max(...results.map((r) => contactsOf(r).length)), N, `one of the concurrent 200s lists all ${N} bindings`);
    // Refreshes of every device at once, both nodes again, a few rounds: none lost, none evicted.
    for (let round = 1; round <= 3; round++) {
      const again = await Promise.all(devices.map((d) => d.register({ expires: 600 })));
      t.same(
        again.map((r) => r.status),
        Array(N).fill(200),
        `round ${round}: every concurrent refresh got 200`,
      );
      t.same(
        again.map((r) => contactsOf(r).length),
        Array(N).fill(N),
        `round ${round}: every 200 lists ${N} bindings`,
      );
    }
    // A refresh through each node answers with every binding of the AOR.
    const viaA = await devices[0].register({ expires: 600 });
    t.equal(viaA.status, 200);
    t.same(contactsOf(viaA), expected, `a REGISTER through A lists all ${N} bindings`);
    const viaB = await devices[1].register({ expires: 600 });
    t.equal(viaB.status, 200);
    t.same(contactsOf(viaB), expected, `a REGISTER through B lists all ${N} bindings`);

    // A call through A forks to every device; the first to answer wins, the others are cancelled.
    for (const d of devices) d.onInvite = () => ({ action: 'ring' });
    const caller = await ua(c, a, 'door', '127.0.0.9');
    const call = caller.call(`sip:staff@${DOMAIN}`);
    await until(() => devices.every((d) => d.incoming.length === 1), `all ${N} devices ringing`, 4000).catch(() => undefined);
    t.same(
      devices.map((d) => d.incoming.length),
      Array(N).fill(1),
      `each of the ${N} devices got exactly one INVITE`,
    );
    const winner = devices[N - 1];
    if (winner.incoming.length === 1) winner.incoming[0].answer();
    const final = await call.final();
    t.equal(final.status, 200, 'the call is answered by one device');
    const losers = devices.slice(0, N - 1).filter((d) => d.incoming.length === 1);
    await until(() => losers.every((d) => d.incoming[0].cancelled), 'the other devices cancelled', 4000).catch(() => undefined);
    t.same(
      losers.map((d) => d.incoming[0].cancelled),
      Array(losers.length).fill(true),
      'every other device got a CANCEL',
    );
    if (final.status === 200) t.equal((await call.bye()).status, 200, 'BYE 200');
    for (const u of [...devices, caller]) t.same(u.errors, [], `${u.user}@${u.localHost}: no UA errors`);
  });

  await t.test('Redis stopped and started again under a node', async (t) => {
    const c = cleanup(t);
    // A Redis of its own, so that stopping it disturbs nothing else.
    const own = await startRedisServer();
    c.redis.push(own);
    const prefix = freshPrefix();
    const a = await startNode(t, own.url, prefix, { metrics: true });
    c.nodes.push(a);
    const metricsUrl = a.metricsUrl!;
    t.equal(metric(await scrape(metricsUrl), 'portier_storage_up'), 1, 'portier_storage_up 1 at start');

    const phone = await ua(c, a, 'alice', '127.0.0.5');
    t.equal((await phone.register({ expires: 600 })).status, 200, 'alice registers through A');
    const door = await ua(c, a, 'door', '127.0.0.6');
    await callAndHangUp(t, door, phone, 'before the outage (warms A\'s cache)');

    await own.stop({ save: true });
    await until(async () => metric(await scrape(metricsUrl), 'portier_storage_up') === 0, 'portier_storage_up 0', 5000).catch(() => undefined);
    t.equal(metric(await scrape(metricsUrl), 'portier_storage_up'), 0, 'portier_storage_up 0 while Redis is down');

    await callAndHangUp(t, door, phone, 'during the outage (binding from the cache)');

    const refused = await phone.register({ expires: 600 });
    t.equal(refused.status, 503, 'REGISTER while Redis is down: 503');
    t.ok(/^\d+$/.test(refused.get('retry-after') ?? ''), `with Retry-After (${refused.get('retry-after')})`);
    const newcomer = await ua(c, a, 'carol', '127.0.0.7');
    t.equal((await newcomer.register({ expires: 600 })).status, 503, 'a new AOR cannot register either: 503');

    await own.start();
    await until(async () => metric(await scrape(metricsUrl), 'portier_storage_up') === 1, 'portier_storage_up 1 again', 8000).catch(() => undefined);
    t.equal(metric(await scrape(metricsUrl), 'portier_storage_up'), 1, 'portier_storage_up 1 once Redis is back');

    // A second device of alice's registers: the answer lists the phone's binding from before the outage.
    const tablet = await ua(c, a, 'alice', '127.0.0.8');
    const again = await tablet.register({ expires: 600 });
    t.equal(again.status, 200, 'REGISTER succeeds again');
    t.same(contactsOf(again), [phone.contactUri, tablet.contactUri].sort(), 'the binding from before the outage is still there');
    t.equal((await newcomer.register({ expires: 600 })).status, 200, 'the new AOR registers now');

    // The phone's binding, read from Redis by a node that never cached it.
    const b = await startNode(t, own.url, prefix);
    c.nodes.push(b);
    tablet.onInvite = () => ({ action: 'reject', code: 486 });
    const doorB = await ua(c, b, 'door2', '127.0.0.9');
    await callAndHangUp(t, doorB, phone, 'after the outage, through a fresh node B');
    await callAndHangUp(t, door, phone, 'after the outage, through A');

    for (const u of [phone, door, newcomer, tablet, doorB]) t.same(u.errors, [], `${u.user}@${u.localHost}: no UA errors`);
  });
}
