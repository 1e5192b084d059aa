// MemoryLocationStore against the LocationStore contract: expiry without a
// sweep, atomic updates, GRUU indexes and the memory of retired GRUUs.
import t from 'tap';
import { MemoryLocationStore, type Binding } from '../../src/registrar/index.js';
import { udpSource } from './helpers.js';

const T0 = 1_700_000_000_000;
const AOR = 'sip:alice@intercom.test';

function binding(key: string, over: Partial<Binding> = {}): Binding {
  return {
    aor: AOR,
    key,
    contact: 'sip:alice@192.0.2.1',
    contactParams: {},
    expiresAt: T0 + 60_000,
    q: 1,
    callId: 'c',
    cseq: 1,
    instance: null,
    regId: null,
    path: [],
    pushParams: {},
    source: udpSource(),
    userAgent: null,
    registeredAt: T0,
    updatedAt: T0,
    gruu: null,
    ...over,
  };
}

const put = (store: MemoryLocationStore, now: number, ...bs: Binding[]) =>
  store.update(bs[0].aor, now, () => ({ changes: { put: bs }, result: null }));

t.test('get returns live bindings only, before and after the sweep', async (t) => {
  const store = new MemoryLocationStore();
  await put(store, T0, binding('a', { expiresAt: T0 + 10_000 }), binding('b', { expiresAt: T0 + 20_000 }));
  t.equal((await store.get(AOR, T0)).length, 2);
  t.same(
    (await store.get(AOR, T0 + 10_000)).map((b) => b.key),
    ['b'],
    'a binding is dead at expiresAt',
  );
  t.same(await store.get('sip:nobody@intercom.test', T0), []);
  t.same(
    (await store.sweep(T0 + 10_000)).map((b) => b.key),
    ['a'],
  );
  t.same(await store.sweep(T0 + 10_000), []);
  t.same(
    (await store.sweep(T0 + 30_000)).map((b) => b.key),
    ['b'],
  );
  t.same(await store.count(T0), { aors: 0, bindings: 0, byDomain: {} }, 'the AOR entry is gone with its last binding');
});

t.test('update: fn sees the live bindings; decisions apply atomically, one update after the other', async (t) => {
  const store = new MemoryLocationStore();
  await put(store, T0, binding('old', { expiresAt: T0 + 1000 }), binding('keep'));
  const seen: string[][] = [];
  // Two concurrent updates that each add a binding named after what they saw.
  const add = () =>
    store.update(AOR, T0 + 1000, (current) => {
      seen.push(current.map((b) => b.key).sort());
      return { changes: { put: [binding('n' + current.length)] }, result: current.length };
    });
  const [r1, r2] = await Promise.all([add(), add()]);
  t.same(seen, [['keep'], ['keep', 'n1']], 'the second saw the first one’s write');
  t.equal(r1.result, 1);
  t.equal(r2.result, 2);
  t.same(
    r1.expired.map((b) => b.key),
    ['old'],
    'the expired binding met on the way is reported',
  );
  t.same(
    r2.bindings.map((b) => b.key).sort(),
    ['keep', 'n1', 'n2'],
  );

  const none = await store.update(AOR, T0 + 1000, () => ({ changes: null, result: 'nothing' }));
  t.equal(none.result, 'nothing');
  t.equal(none.bindings.length, 3);

  const rm = await store.update(AOR, T0 + 1000, () => ({ changes: { remove: ['n1', 'missing'], put: [binding('keep', { cseq: 2 })] }, result: null }));
  t.same(
    rm.removed.map((b) => b.key),
    ['n1'],
  );
  t.equal(rm.bindings.find((b) => b.key === 'keep')?.cseq, 2, 'put replaces by key');

  await t.rejects(store.update(AOR, T0, () => ({ changes: { put: [binding('x', { aor: 'sip:bob@intercom.test' })] }, result: null })), /put under/);
});

t.test('remove', async (t) => {
  const store = new MemoryLocationStore();
  await put(store, T0, binding('a'));
  t.equal((await store.remove(AOR, 'a', T0))?.key, 'a');
  t.equal(await store.remove(AOR, 'a', T0), null);
  t.equal(await store.remove('sip:nobody@intercom.test', 'a', T0), null);
  t.same(await store.get(AOR, T0), []);
});

t.test('stored bindings are frozen copies', async (t) => {
  const store = new MemoryLocationStore();
  const b = binding('a', { path: ['<sip:edge;lr>'] });
  await put(store, T0, b);
  const [got] = await store.get(AOR, T0);
  t.ok(Object.isFrozen(got) && Object.isFrozen(got.path));
  (b.path as string[]).push('changed later');
  t.same((await store.get(AOR, T0))[0].path, ['<sip:edge;lr>'], 'the caller’s object is not the store’s');
});

t.test('count: live bindings per domain', async (t) => {
  const store = new MemoryLocationStore();
  await put(store, T0, binding('a'), binding('b'), binding('gone', { expiresAt: T0 }));
  await put(store, T0, binding('c', { aor: 'sip:door@school.test' }));
  await put(store, T0, binding('d', { aor: 'sip:v6@[2001:db8::1]' }));
  t.same(await store.count(T0), { aors: 3, bindings: 4, byDomain: { 'intercom.test': 2, 'school.test': 1, '2001:db8::1': 1 } });
});

t.test('findByGruu: temp tokens and pub instances, live, ended, forgotten', async (t) => {
  const store = new MemoryLocationStore({ retiredGruuTtlMs: 60_000 });
  const inst = '<urn:uuid:AAAA>';
  const gruu = { pub: 'urn:uuid:AAAA', temp: ['t1', 't2'] };
  await put(store, T0, binding('i:a|1', { instance: inst, regId: 1, gruu, updatedAt: T0 }), binding('i:a|2', { instance: inst, regId: 2, gruu: { pub: gruu.pub, temp: ['t3'] }, updatedAt: T0 + 5 }));

  const temp = async (token: string, now = T0) => {
    const r = await store.findByGruu({ kind: 'temp', token }, now);
    return typeof r === 'object' && r !== null ? r.key : r;
  };
  const pub = async (instance: string, now = T0, aor = AOR) => {
    const r = await store.findByGruu({ kind: 'pub', aor, instance }, now);
    return typeof r === 'object' && r !== null ? r.key : r;
  };
  t.equal(await temp('t1'), 'i:a|1');
  t.equal(await temp('t3'), 'i:a|2');
  t.equal(await temp('never'), null);
  t.equal(await pub('urn:uuid:aaaa'), 'i:a|2', 'the most recently refreshed flow; uuid case-insensitive');
  t.equal(await pub('<urn:uuid:AAAA>'), 'i:a|2', 'brackets or not');
  t.equal(await pub('urn:uuid:bbbb'), null);
  t.equal(await pub('urn:uuid:aaaa', T0, 'sip:bob@intercom.test'), null, 'the instance under another AOR');

  // A refresh that drops t1: t1 has ended, t2 still works.
  await put(store, T0, binding('i:a|1', { instance: inst, regId: 1, gruu: { pub: gruu.pub, temp: ['t2', 't4'] } }));
  t.equal(await temp('t1'), 'expired');
  t.equal(await temp('t2'), 'i:a|1');
  t.equal(await temp('t4'), 'i:a|1');

  // Expired but not swept: ended already.
  const later = T0 + 60_000;
  t.equal(await temp('t2', later), 'expired');
  t.equal(await pub('urn:uuid:aaaa', later), 'expired');
  await store.sweep(later);
  t.equal(await temp('t2', later), 'expired', 'remembered after the sweep');
  t.equal(await pub('urn:uuid:aaaa', later), 'expired');
  // Past the retention, a sweep forgets them: 404 rather than 480.
  const forgotten = later + 60_000;
  await store.sweep(forgotten);
  t.equal(await temp('t2', forgotten), null);
  t.equal(await pub('urn:uuid:aaaa', forgotten), null);
});

t.test('retired GRUUs are bounded', async (t) => {
  const store = new MemoryLocationStore({ maxRetiredGruus: 2 });
  await put(store, T0, binding('a', { gruu: { pub: 'urn:uuid:1', temp: ['x', 'y', 'z'] } }));
  await store.remove(AOR, 'a', T0);
  // x, y, z and the pub-gruu retired; only the last two are remembered.
  t.equal(await store.findByGruu({ kind: 'temp', token: 'x' }, T0), null);
  t.equal(await store.findByGruu({ kind: 'temp', token: 'y' }, T0), null);
  t.equal(await store.findByGruu({ kind: 'temp', token: 'z' }, T0), 'expired');
  t.equal(await store.findByGruu({ kind: 'pub', aor: AOR, instance: 'urn:uuid:1' }, T0), 'expired');
});

t.test('close empties the store', async (t) => {
  const store = new MemoryLocationStore();
  await put(store, T0, binding('a', { gruu: { pub: 'urn:uuid:1', temp: ['x'] } }));
  await store.close();
  t.same(await store.get(AOR, T0), []);
  t.equal(await store.findByGruu({ kind: 'temp', token: 'x' }, T0), null);
});
