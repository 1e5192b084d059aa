// RedisLocationStore against a real redis-server owned by the test (see
// redis-server.ts): the LocationStore contract, the Redis data layout and
// its expiry, two nodes updating one AOR, cache coherence through pub/sub,
// GRUUs across nodes, and outages (Redis stopped and started again; Redis
// frozen, answering nothing). Every wait is bounded.
import t, { type Test } from 'tap';
import { performance } from 'node:perf_hooks';
import type { Binding } from '../../src/registrar/index.js';
import { RedisLocationStore, type RedisStoreOptions } from '../../src/storage/redis-store.js';
import { until } from '../helpers/wait.js';
import { AOR, T0, binding, put, storeContract } from '../registrar/store-contract.js';
import { freeTcpPort, redisServerMissing, startRedisServer, type RedisServer } from './redis-server.js';

const missing = redisServerMissing();

interface Logged {
  obj: object;
  msg: string;
}

function capture(): { warn(obj: object, msg: string): void; lines: Logged[] } {
  const lines: Logged[] = [];
  return { lines, warn: (obj, msg) => lines.push({ obj, msg }) };
}

let prefixes = 0;
const freshPrefix = () => `pt${process.pid}-${++prefixes}:`;

/** A STORAGE_UNAVAILABLE rejection, and how long the call took to settle. */
async function settles(t: Test, p: Promise<unknown>, what: string, code = 'STORAGE_UNAVAILABLE'): Promise<number> {
  const start = performance.now();
  try {
    await p;
    t.fail(`${what}: resolved, expected ${code}`);
  } catch (err) {
    t.equal((err as { code?: string }).code, code, `${what}: rejects with ${code}`, { err });
  }
  return performance.now() - start;
}

function stats(xs: number[]): { median: number; p95: number; max: number; min: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { min: s[0], median: at(0.5), p95: at(0.95), max: s[s.length - 1] };
}

const fmt = (x: number) => x.toFixed(2);

if (missing) {
  t.plan(0, missing);
} else {
  const server = await startRedisServer();
  t.teardown(() => server.close());

  const open = async (t: Test, o: Partial<RedisStoreOptions> = {}, srv: RedisServer = server): Promise<RedisLocationStore> => {
    const s = await RedisLocationStore.open({ url: srv.url, prefix: freshPrefix(), logger: capture(), ...o });
    t.teardown(() => s.close());
    return s;
  };
  const cmd = (...args: (string | number)[]) => server.command(...args);

  await t.test('LocationStore contract (cache on)', (t) =>
    storeContract(t, () => RedisLocationStore.open({ url: server.url, prefix: freshPrefix(), retiredGruuTtlMs: 60_000, logger: capture() }), { retiredGruuTtlMs: 60_000 }),
  );

  await t.test('LocationStore contract (no cache: every read from Redis)', (t) =>
    storeContract(t, () => RedisLocationStore.open({ url: server.url, prefix: freshPrefix(), retiredGruuTtlMs: 60_000, cacheSize: 0, logger: capture() }), {
      retiredGruuTtlMs: 60_000,
    }),
  );

  await t.test('bans: shared by the stores on one Redis, each expiring with its ban', async (t) => {
    const prefix = freshPrefix();
    const a = await open(t, { prefix });
    const b = await open(t, { prefix });
    const now = Date.now();
    await a.saveBan({ address: '192.0.2.66', until: now + 60_000, level: 2 }, now);
    await a.saveBan({ address: '2001:db8::66', until: now + 300, level: 1 }, now);
    t.same(
      (await b.loadBans(now)).sort((x, y) => x.address.localeCompare(y.address)),
      [
        { address: '192.0.2.66', until: now + 60_000, level: 2 },
        { address: '2001:db8::66', until: now + 300, level: 1 },
      ],
      'another node sees both',
    );
    const ttl = Number(await cmd('PTTL', prefix + 'ban:192.0.2.66'));
    t.ok(ttl > 59_000 && ttl <= 60_000, `the key expires with the ban (${ttl} ms)`);
    t.same((await b.loadBans(now + 1000)).map((x) => x.address), ['192.0.2.66'], 'an ended ban is not loaded');
  });

  await t.test('open rejects with a clear error when Redis cannot be reached', async (t) => {
    const port = await freeTcpPort();
    const start = performance.now();
    await t.rejects(RedisLocationStore.open({ url: `redis://127.0.0.1:${port}`, prefix: 'x:', logger: capture() }), {
      message: new RegExp(`cannot reach Redis at redis://127\\.0\\.0\\.1:${port}.*ECONNREFUSED`),
    });
    t.ok(performance.now() - start < 3000, 'promptly');
    await t.rejects(RedisLocationStore.open({ url: `redis://:secret@127.0.0.1:${port}`, prefix: 'x:', logger: capture() }), { message: /\*\*\*@127/ }, 'the password is not in the message');
  });

  await t.test('data layout: hash per AOR with its version, token index, retirement memory, index sets; TTLs', async (t) => {
    const retention = 120_000;
    const store = await open(t, { retiredGruuTtlMs: retention });
    const P = store.prefix;
    const now = Date.now();
    const b = binding('i:d|1', { expiresAt: now + 60_000, instance: '<urn:uuid:D>', regId: 1, gruu: { pub: 'urn:uuid:D', temp: ['tok1'] } });
    await put(store, now, b, binding('u:x', { expiresAt: now + 30_000 }));

    const h = (await cmd('HGETALL', P + 'b:' + AOR)) as string[];
    t.same(h.filter((_, i) => i % 2 === 0).sort(), ['i:d|1', 'u:x', '~v'], 'one hash field per binding key, and the version');
    t.same(JSON.parse(h[h.indexOf('i:d|1') + 1]), b, 'the value is the Binding as JSON');
    const v1 = h[h.indexOf('~v') + 1];
    t.match(v1, /^[\w-]{12}\.[0-9a-z]+$/, 'the version: node tag and counter');
    const pttl = (await cmd('PTTL', P + 'b:' + AOR)) as number;
    t.ok(Math.abs(pttl - (60_000 + retention)) < 2000, `hash PTTL = latest expiry + retention (${pttl})`);
    t.same(JSON.parse((await cmd('GET', P + 't:tok1')) as string), { a: AOR, k: 'i:d|1' }, 'temp token → AOR and key');
    const tpttl = (await cmd('PTTL', P + 't:tok1')) as number;
    t.ok(Math.abs(tpttl - (60_000 + retention)) < 2000, `token PTTL = its binding's expiry + retention (${tpttl})`);
    t.equal(Number(await cmd('ZSCORE', P + 'exp', AOR)), now + 30_000, 'exp: earliest expiry');
    t.equal(Number(await cmd('ZSCORE', P + 'aors', AOR)), now + 60_000, 'aors: latest expiry');
    t.equal(Number(await cmd('ZSCORE', P + 'd:intercom.test', AOR + ' i:d|1')), now + 60_000, 'd:DOMAIN: `AOR KEY` by expiry');
    t.same(await cmd('SMEMBERS', P + 'domains'), ['intercom.test']);

    await store.remove(AOR, 'i:d|1', now);
    t.same(((await cmd('HKEYS', P + 'b:' + AOR)) as string[]).sort(), ['u:x', '~v']);
    t.not(await cmd('HGET', P + 'b:' + AOR, '~v'), v1, 'every write gives a new version');
    const pttl2 = (await cmd('PTTL', P + 'b:' + AOR)) as number;
    t.ok(Math.abs(pttl2 - (30_000 + retention)) < 2000, `hash PTTL follows the bindings left (${pttl2})`);
    const retired = JSON.parse((await cmd('GET', P + 't:tok1')) as string) as { r: number };
    t.equal(retired.r, now + retention, 'the token is retired until now + retention');
    const rpttl = (await cmd('PTTL', P + 't:tok1')) as number;
    t.ok(Math.abs(rpttl - retention) < 2000, `retired token PTTL = retention (${rpttl})`);
    t.equal(Number(await cmd('HGET', P + 'r:' + AOR, 'urn:uuid:d')), now + retention, 'pub-gruu retirement by instance key');
    t.equal(await cmd('ZSCORE', P + 'd:intercom.test', AOR + ' i:d|1'), null);

    await store.remove(AOR, 'u:x', now);
    t.equal(await cmd('EXISTS', P + 'b:' + AOR), 0, 'the hash goes with its last binding');
    t.equal(await cmd('ZSCORE', P + 'exp', AOR), null);
    t.equal(await cmd('ZSCORE', P + 'aors', AOR), null);
    await store.sweep(now);
    t.same(await cmd('SMEMBERS', P + 'domains'), [], 'sweep forgets an empty domain');
  });

  await t.test('expiry: honoured on read without a sweep, and the keys leave Redis by themselves', async (t) => {
    const store = await open(t, { retiredGruuTtlMs: 200 });
    const P = store.prefix;
    const now = Date.now();
    await put(store, now, binding('i:e|1', { expiresAt: now + 300, gruu: { pub: 'urn:uuid:E', temp: ['tokE'] } }));
    t.equal((await store.get(AOR, now)).length, 1);
    t.same(await store.get(AOR, now + 300), [], 'dead at expiresAt (callers’ clock)');
    t.equal(await store.findByGruu({ kind: 'temp', token: 'tokE' }, now + 300), 'expired');
    t.equal(await cmd('EXISTS', P + 'b:' + AOR, P + 't:tokE'), 2, 'still in Redis: nobody swept');
    await until(async () => (await cmd('EXISTS', P + 'b:' + AOR, P + 't:tokE')) === 0, 'Redis to expire the keys', 3000);
    const gone = Date.now() - now;
    t.ok(gone >= 450, `gone after expiry + retention (${gone} ms)`);
    // A store that never saw it: nothing there.
    const other = await open(t, { prefix: P, retiredGruuTtlMs: 200 });
    t.same(await other.get(AOR, now), [], 'gone for every node');
    t.equal(await other.findByGruu({ kind: 'temp', token: 'tokE' }, now), null);
  });

  await t.test('round trips: update 1 (2 uncached), get 1 or 0 from the cache', async (t) => {
    const store = await open(t);
    const rt = () => store.stats.roundTrips;
    let r0 = rt();
    await put(store, T0, binding('a'));
    t.equal(rt() - r0, 2, 'update of an uncached AOR: HGETALL, then the write script');
    r0 = rt();
    await put(store, T0, binding('b'));
    t.equal(rt() - r0, 1, 'update of a cached AOR: the write script alone');
    await store.remove(AOR, 'b', T0);
    r0 = rt();
    t.equal((await store.get(AOR, T0)).length, 1);
    t.equal(rt() - r0, 0, 'get after this node’s own write: from the cache');
    r0 = rt();
    t.same(await store.get('sip:other@intercom.test', T0), []);
    t.equal(rt() - r0, 1, 'get of an uncached AOR: one HGETALL');
    r0 = rt();
    t.same(await store.get('sip:other@intercom.test', T0), []);
    t.equal(rt() - r0, 0, 'an empty AOR is cached too');
    r0 = rt();
    await store.update(AOR, T0, () => ({ changes: null, result: null }));
    t.equal(rt() - r0, 1, 'an update that changes nothing: one read, that confirms the cached version');
    r0 = rt();
    await store.count(T0);
    t.equal(rt() - r0, 2, 'count: SMEMBERS, then one pipeline of ZCOUNTs');
    const nocache = await open(t, { cacheSize: 0, prefix: store.prefix });
    r0 = nocache.stats.roundTrips;
    await nocache.get(AOR, T0);
    await nocache.get(AOR, T0);
    t.equal(nocache.stats.roundTrips - r0, 2, 'without the cache, every get is one round trip');
    r0 = nocache.stats.roundTrips;
    await put(nocache, T0, binding('c'));
    t.equal(nocache.stats.roundTrips - r0, 2, 'and every update two');

    // Wall time per operation on loopback, for the report.
    const n = 500;
    let start = performance.now();
    for (let i = 0; i < n; i++) await put(store, T0, binding('k' + (i % 20)));
    const perUpdate = (performance.now() - start) / n;
    start = performance.now();
    for (let i = 0; i < n; i++) await nocache.get(AOR, T0);
    const perGet = (performance.now() - start) / n;
    start = performance.now();
    await Promise.all(Array.from({ length: n }, (_, i) => put(store, T0, binding('p', { aor: `sip:u${i}@intercom.test` }))));
    const parallel = n / ((performance.now() - start) / 1000);
    t.comment(`sequential update ${fmt(perUpdate)} ms, uncached get ${fmt(perGet)} ms; ${Math.round(parallel)} updates/s over ${n} AORs in parallel`);
  });

  await t.test('two nodes updating one AOR concurrently never lose a binding', async (t) => {
    const a = await open(t);
    const P = a.prefix;
    const b = await open(t, { prefix: P });
    const n = 200;
    const far = T0 + 3_600_000;
    const add = (s: RedisLocationStore, key: string) => s.update(AOR, T0, () => ({ changes: { put: [binding(key, { expiresAt: far })] }, result: null }));
    // Read-modify-write of one binding too: a counter in cseq, bumped by both nodes.
    const bump = (s: RedisLocationStore) =>
      s.update(AOR, T0, (cur) => {
        const c = cur.find((x) => x.key === 'counter');
        return { changes: { put: [binding('counter', { expiresAt: far, cseq: (c?.cseq ?? 0) + 1 })] }, result: null };
      });
    const ops: Promise<unknown>[] = [];
    const trips0 = a.stats.roundTrips + b.stats.roundTrips;
    for (let i = 0; i < n; i++) ops.push(add(a, 'A' + i), add(b, 'B' + i), bump(a), bump(b));
    await Promise.all(ops);
    const fresh = await open(t, { prefix: P });
    const got = await fresh.get(AOR, T0);
    t.equal(got.length, 2 * n + 1, 'every binding of both nodes is there');
    t.equal(got.find((x) => x.key === 'counter')?.cseq, 2 * n, 'no increment lost');
    const conflicts = a.stats.conflicts + b.stats.conflicts;
    const trips = a.stats.roundTrips + b.stats.roundTrips - trips0;
    t.ok(
      conflicts > 0,
      `the nodes did collide (${conflicts} conflicts; fn ran ${a.stats.fnRuns + b.stats.fnRuns} times and ${trips} requests went to Redis for ${4 * n} updates)`,
    );
    t.equal(a.stats.lateWrites + b.stats.lateWrites, 0, 'no write ran late');
    t.ok(a.stats.yields + b.stats.yields > 0, `the winners let the losers through (${a.stats.yields + b.stats.yields} pauses)`);
    t.same((await a.get(AOR, T0)).length, 2 * n + 1, 'node A agrees');
    t.same((await b.get(AOR, T0)).length, 2 * n + 1, 'node B agrees');
    t.same(await a.count(T0), { aors: 1, bindings: 2 * n + 1, byDomain: { 'intercom.test': 2 * n + 1 } });
  });

  await t.test('a stale cache costs a conflict, never a lost binding (a write this node was not told of)', async (t) => {
    const store = await open(t);
    const P = store.prefix;
    await put(store, T0, binding('a'));
    // Another writer changes the AOR behind the node's back: no announcement, so the node's cache is stale.
    const foreign = binding('x', { callId: 'foreign' });
    await cmd('HSET', P + 'b:' + AOR, 'x', JSON.stringify(foreign), '~v', 'foreign.1');
    t.same(
      (await store.get(AOR, T0)).map((b) => b.key),
      ['a'],
      'the cache does not know',
    );
    const c0 = store.stats.conflicts;
    const r0 = store.stats.roundTrips;
    let seen: string[] = [];
    const out = await store.update(AOR, T0, (cur) => {
      seen = cur.map((b) => b.key).sort();
      return { changes: { put: [binding('b')] }, result: null };
    });
    t.equal(store.stats.conflicts - c0, 1, 'the write found another version');
    t.equal(store.stats.roundTrips - r0, 2, 'and was decided again on the hash it answered: no read of its own');
    t.same(seen, ['a', 'x'], 'fn ran again on the current bindings');
    t.same(out.bindings.map((b) => b.key).sort(), ['a', 'b', 'x']);
    t.same(((await cmd('HKEYS', P + 'b:' + AOR)) as string[]).sort(), ['a', 'b', 'x', '~v'], 'nothing lost in Redis');
    t.not(await cmd('HGET', P + 'b:' + AOR, '~v'), 'foreign.1');
    // A no-op decision on a stale cache is confirmed against Redis, too.
    await cmd('HSET', P + 'b:' + AOR, 'y', JSON.stringify(binding('y')), '~v', 'foreign.2');
    const r = await store.update(AOR, T0, (cur) => ({ changes: null, result: cur.map((b) => b.key).sort() }));
    t.same(r.result, ['a', 'b', 'x', 'y'], 'an update that changes nothing sees what is stored');
  });

  await t.test('a Redis clock that moved: one write refused as late (nothing written), then the offset is learnt again', async (t) => {
    const store = await open(t);
    await put(store, T0, binding('a'));
    // As if the Redis host's clock had jumped 10 s ahead since the offset was learnt.
    const internals = store as unknown as { redisOffset: number };
    internals.redisOffset -= 10_000;
    await put(store, T0, binding('b'));
    t.equal(store.stats.lateWrites, 1, 'the first try arrived past its deadline');
    t.same((await store.get(AOR, T0)).map((b) => b.key).sort(), ['a', 'b'], 'the second went through');
    await put(store, T0, binding('c'));
    t.equal(store.stats.lateWrites, 1, 'and the next writes are on time');
    const fresh = await open(t, { prefix: store.prefix });
    t.same((await fresh.get(AOR, T0)).map((b) => b.key).sort(), ['a', 'b', 'c']);
  });

  await t.test('bounded retries: an update that keeps conflicting rejects with STORAGE_CONFLICT; acknowledged ones are kept', async (t) => {
    const a = await open(t, { maxUpdateAttempts: 1 });
    const P = a.prefix;
    const b = await open(t, { prefix: P, maxUpdateAttempts: 1 });
    const acked: string[] = [];
    let rejected = 0;
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 100; i++) {
      for (const [s, name] of [
        [a, 'A'],
        [b, 'B'],
      ] as const) {
        const key = name + i;
        ops.push(
          put(s, T0, binding(key)).then(
            () => void acked.push(key),
            (err: { code?: string }) => {
              if (err.code === 'STORAGE_CONFLICT') rejected++;
              else throw err;
            },
          ),
        );
      }
    }
    await Promise.all(ops);
    t.ok(rejected > 0, `some updates gave up (${rejected} of 200)`);
    const keys = new Set((await (await open(t, { prefix: P })).get(AOR, T0)).map((x) => x.key));
    t.same(
      acked.filter((k) => !keys.has(k)),
      [],
      'every acknowledged binding is stored',
    );
    t.equal(keys.size, acked.length, 'and nothing else');
  });

  await t.test('sweep on two nodes: each expired binding is reported once', async (t) => {
    const a = await open(t);
    const P = a.prefix;
    const b = await open(t, { prefix: P });
    for (let i = 0; i < 50; i++) await put(a, T0, binding('k', { aor: `sip:s${i}@intercom.test`, expiresAt: T0 + 1000 }), binding('live', { aor: `sip:s${i}@intercom.test` }));
    const [ra, rb] = await Promise.all([a.sweep(T0 + 1000), b.sweep(T0 + 1000)]);
    t.equal(ra.length + rb.length, 50, `${ra.length} + ${rb.length}`);
    t.same(await b.count(T0 + 1000), { aors: 50, bindings: 50, byDomain: { 'intercom.test': 50 } });
    t.same(await a.sweep(T0 + 1000), []);
  });

  await t.test('pub/sub: a node learns of another node’s write within milliseconds', async (t) => {
    const a = await open(t);
    const P = a.prefix;
    const b = await open(t, { prefix: P });
    const heard: { aor: string; at: number }[] = [];
    b.onChange = (aor) => heard.push({ aor, at: performance.now() });
    let selfHeard = 0;
    a.onChange = () => selfHeard++;
    t.same(await b.get(AOR, T0), []);
    const hitsBefore = b.stats.cacheHits;
    t.same(await b.get(AOR, T0), []);
    t.equal(b.stats.cacheHits, hitsBefore + 1, 'B answers from its cache while nothing changes');
    const visible: number[] = [];
    const notified: number[] = [];
    for (let i = 0; i < 50; i++) {
      const key = 'k' + i;
      heard.length = 0;
      await put(a, T0, binding(key));
      const done = performance.now();
      // B answers from its cache until the announcement drops the entry
      // (which usually arrives before A's EXEC reply).
      for (;;) {
        if ((await b.get(AOR, T0)).some((x) => x.key === key)) break;
        if (performance.now() - done > 2000) throw new Error('B never saw the binding');
        await new Promise((r) => setImmediate(r));
      }
      visible.push(performance.now() - done);
      await until(() => heard.length > 0, 'onChange', 2000);
      notified.push(heard[0].at - done);
      t.equal(heard[0].aor, AOR);
    }
    const v = stats(visible);
    const nt = stats(notified);
    t.comment(`B sees A's new binding ${fmt(v.median)} ms (median), ${fmt(v.p95)} ms (p95), ${fmt(v.max)} ms (max) after A's update resolved`);
    t.comment(`B's onChange ${fmt(nt.median)} ms (median), from ${fmt(nt.min)} to ${fmt(nt.max)} ms after A's update resolved (negative: before)`);
    t.ok(v.max < 250, `always within 250 ms (max ${fmt(v.max)} ms)`);
    t.equal(selfHeard, 0, 'a node is not told of its own writes');

    await a.remove(AOR, 'k0', T0);
    const start = performance.now();
    await until(async () => !(await b.get(AOR, T0)).some((x) => x.key === 'k0'), 'B to see the removal', 2000);
    t.comment(`removal seen by B after ${fmt(performance.now() - start)} ms`);
  });

  await t.test('GRUUs across nodes: temp tokens and pub-gruus', async (t) => {
    const a = await open(t);
    const P = a.prefix;
    const b = await open(t, { prefix: P });
    const g = (temp: string[]) => ({ instance: '<urn:uuid:G>', regId: 1, gruu: { pub: 'urn:uuid:G', temp } });
    await put(a, T0, binding('i:g|1', g(['g1'])));
    const key = (r: unknown) => (typeof r === 'object' && r !== null ? (r as Binding).key : r);
    t.equal(key(await b.findByGruu({ kind: 'temp', token: 'g1' }, T0)), 'i:g|1', 'B resolves A’s temp-gruu');
    t.equal(key(await b.findByGruu({ kind: 'pub', aor: AOR, instance: 'urn:uuid:g' }, T0)), 'i:g|1', 'and its pub-gruu');
    const r0 = b.stats.roundTrips;
    t.equal(key(await b.findByGruu({ kind: 'temp', token: 'g1' }, T0)), 'i:g|1');
    t.equal(b.stats.roundTrips, r0, 'the second time from the cache');
    let heard = 0;
    b.onChange = () => heard++;
    await put(a, T0, binding('i:g|1', { ...g(['g2']), callId: 'new' }));
    await until(() => heard > 0, 'B to hear of the refresh', 2000);
    t.equal(await b.findByGruu({ kind: 'temp', token: 'g1' }, T0), 'expired', 'the dropped token has ended for B too');
    t.equal(key(await b.findByGruu({ kind: 'temp', token: 'g2' }, T0)), 'i:g|1');
    await a.remove(AOR, 'i:g|1', T0);
    await until(() => heard > 1, 'B to hear of the removal', 2000);
    t.equal(await b.findByGruu({ kind: 'temp', token: 'g2' }, T0), 'expired');
    t.equal(await b.findByGruu({ kind: 'pub', aor: AOR, instance: 'urn:uuid:G' }, T0), 'expired');
    t.equal(await b.findByGruu({ kind: 'pub', aor: AOR, instance: 'urn:uuid:other' }, T0), null);
  });

  await t.test('close quits every connection', async (t) => {
    const clients = async () => ((await cmd('CLIENT', 'LIST')) as string).split('\n').filter((l) => /name=portier-/.test(l)).length;
    const before = await clients();
    const store = await RedisLocationStore.open({ url: server.url, prefix: freshPrefix(), logger: capture() });
    t.equal((await clients()) - before, 2, 'command and subscriber connections');
    const log = capture();
    await store.close();
    await until(async () => (await clients()) === before, 'the connections to go', 2000);
    t.same(log.lines, [], 'closing is not an outage');
    await t.rejects(store.update(AOR, T0, () => ({ changes: null, result: null })), { code: 'STORAGE_UNAVAILABLE' });
  });

  await t.test('a change missed while the subscription was down is not served from the cache', async (t) => {
    const logA = capture();
    const logB = capture();
    const a = await open(t, { logger: logA, maxReconnectDelayMs: 200 });
    const P = a.prefix;
    const b = await open(t, { prefix: P, logger: logB, maxReconnectDelayMs: 200 });
    await put(a, T0, binding('one'));
    t.equal((await b.get(AOR, T0)).length, 1, 'B has the AOR cached');
    await cmd('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await until(() => !b.up, 'B to notice', 2000);
    await put(a, T0, binding('two')); // B's subscription is down: B cannot hear of it
    t.equal((await b.get(AOR, T0)).length, 2, 'meanwhile B reads Redis, not its cache');
    await until(() => b.up && a.up, 'both nodes up again', 5000);
    t.equal((await b.get(AOR, T0)).length, 2, 'and after the resubscription');
    t.equal(logB.lines.length, 2, 'B logged the outage once and the recovery once');
    t.match(logB.lines[1].msg, /reachable again/);
  });

  await t.test('Redis stopped and started again: cached reads, fast refusals, recovery, nothing lost', async (t) => {
    const srv = await startRedisServer();
    t.teardown(() => srv.close());
    const log = capture();
    const store = await open(t, { logger: log, maxReconnectDelayMs: 200 }, srv);
    const P = store.prefix;
    let resynced = 0;
    store.onResync = () => resynced++;
    const now = Date.now();
    const far = now + 3_600_000;
    const bob = 'sip:bob@intercom.test';
    await put(store, now, binding('i:o|1', { expiresAt: far, instance: '<urn:uuid:O>', regId: 1, gruu: { pub: 'urn:uuid:O', temp: ['tokO'] } }));
    await put(store, now, binding('u:bob', { aor: bob, expiresAt: far }));
    await store.get(AOR, now); // cached (by the write already)

    // Updates in flight when Redis goes: each settles, acknowledged or refused.
    const flight = (i: number) => `sip:flight${i}@intercom.test`;
    const started = performance.now();
    const inflight = Array.from({ length: 100 }, (_, i) =>
      put(store, now, binding('f' + i, { aor: flight(i), expiresAt: far })).then(
        () => 'f' + i,
        (err: { code?: string }) => err.code,
      ),
    );
    await srv.stop({ save: true });
    const outcomes = await Promise.all(inflight);
    t.ok(performance.now() - started < 2000, `updates in flight settled in ${fmt(performance.now() - started)} ms`);
    const acked = outcomes.filter((o) => o?.startsWith('f'));
    t.same(
      outcomes.filter((o) => !o?.startsWith('f') && o !== 'STORAGE_UNAVAILABLE'),
      [],
      `${acked.length} acknowledged, the others refused with STORAGE_UNAVAILABLE`,
    );
    await until(() => !store.up, 'the store to notice', 2000);
    t.equal(log.lines.length, 1, 'one warning');
    t.match(log.lines[0].msg, /unreachable/);

    t.same(
      (await store.get(AOR, now)).map((b) => b.key),
      ['i:o|1'],
      'get answers from the cache',
    );
    t.equal(((await store.findByGruu({ kind: 'temp', token: 'tokO' }, now)) as Binding).key, 'i:o|1', 'a temp-gruu from the cache');
    t.equal(((await store.findByGruu({ kind: 'pub', aor: AOR, instance: 'urn:uuid:O' }, now)) as Binding).key, 'i:o|1', 'a pub-gruu from the cache');
    const times = [
      await settles(t, store.get('sip:uncached@intercom.test', now), 'get of an uncached AOR'),
      await settles(t, put(store, now, binding('new')), 'update'),
      await settles(t, store.remove(AOR, 'i:o|1', now), 'remove'),
      await settles(t, store.count(now), 'count'),
      await settles(t, store.sweep(now), 'sweep'),
      await settles(t, store.findByGruu({ kind: 'temp', token: 'unknown' }, now), 'findByGruu of an uncached token'),
    ];
    t.ok(Math.max(...times) < 1000, `every call settles within 1 s (slowest ${fmt(Math.max(...times))} ms)`);
    for (let i = 0; i < 20; i++) await store.update(AOR, now, () => ({ changes: null, result: null })).catch(() => undefined);
    t.equal(log.lines.length, 1, 'still one warning after many refused calls');
    t.equal(store.stats.outages, 1);

    await srv.start();
    await until(() => store.up, 'the store to recover', 5000);
    t.equal(log.lines.length, 2);
    t.match(log.lines[1].msg, /reachable again/);
    t.equal(resynced, 1, 'onResync told');
    const misses = store.stats.cacheMisses;
    t.same(
      (await store.get(AOR, now)).map((b) => b.key),
      ['i:o|1'],
      'the binding written before the outage',
    );
    t.equal(store.stats.cacheMisses, misses + 1, 'read from Redis: the cache was dropped');
    t.equal((await store.get(bob, now)).length, 1);
    const lost: string[] = [];
    for (const k of acked) if ((await store.get(flight(Number(k!.slice(1))), now)).length !== 1) lost.push(k!);
    t.same(lost, [], 'every update acknowledged before the stop is there');
    await put(store, now, binding('after', { expiresAt: far }));
    const other = await open(t, { prefix: P }, srv);
    t.same((await other.get(AOR, now)).map((b) => b.key).sort(), ['after', 'i:o|1'], 'writes work again, seen by another node');
    t.equal(((await other.findByGruu({ kind: 'temp', token: 'tokO' }, now)) as Binding).key, 'i:o|1');
  });

  await t.test('a hung Redis (frozen: connections open, no answers): calls settle within 1 s, cache answers, recovery', async (t) => {
    const srv = await startRedisServer();
    t.teardown(() => srv.close());
    const log = capture();
    const store = await open(t, { logger: log }, srv); // default command timeout: 500 ms
    t.teardown(() => srv.thaw()); // runs before the store's close
    await put(store, T0, binding('a'));

    srv.freeze();
    t.equal((await store.get(AOR, T0)).length, 1, 'a cached AOR answers at once');
    const first = await settles(t, put(store, T0, binding('b')), 'update');
    t.ok(first < 1000, `the first refused update settles in ${fmt(first)} ms`);
    t.notOk(store.up, 'down after a command timed out');
    t.equal(log.lines.length, 1);
    const next = await settles(t, put(store, T0, binding('c')), 'update once known down');
    t.ok(next < 50, `then refused at once (${fmt(next)} ms)`);
    const miss = await settles(t, store.get('sip:uncached@intercom.test', T0), 'get of an uncached AOR');
    t.ok(miss < 50, `at once too (${fmt(miss)} ms)`);
    t.equal((await store.get(AOR, T0)).length, 1, 'the cache still answers');

    srv.thaw();
    await until(() => store.up, 'the store to recover', 5000);
    t.equal(log.lines.length, 2, 'one warning for the outage, one for the recovery');
    await put(store, T0, binding('d'));
    const keys = (await store.get(AOR, T0)).map((b) => b.key).sort();
    // 'b' went to the frozen server (the AOR was cached: no read first) and
    // was read there on thaw, past its deadline: the script wrote nothing.
    t.same(keys, ['a', 'd'], 'refused updates left nothing behind');
  });
}
