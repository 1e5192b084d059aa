// The LocationStore contract, for any store: expiry without a sweep, atomic
// updates, removal, counts, GRUU indexes and the memory of retired GRUUs.
// A store's test file calls storeContract() with a factory; each subtest
// makes a store of its own (for a shared store such as Redis, give each one
// a fresh key prefix) and closes it at its end.
import type { Test } from 'tap';
import type { Binding, LocationStore } from '../../src/registrar/index.js';
import { udpSource } from './helpers.js';

export const T0 = 1_700_000_000_000;
export const AOR = 'sip:alice@intercom.test';

export function binding(key: string, over: Partial<Binding> = {}): Binding {
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

/** Puts bindings (all of one AOR) in one update. */
export const put = (store: LocationStore, now: number, ...bs: Binding[]) => store.update(bs[0].aor, now, () => ({ changes: { put: bs }, result: null }));

export interface StoreContractOptions {
  /**
   * How long the stores made remember a retired GRUU (their retiredGruuTtlMs).
   * Given, the contract also checks that a GRUU is forgotten (null) once that
   * long has passed since its binding ended; without it that part is skipped.
   */
  retiredGruuTtlMs?: number;
  /** Whether the store hands out frozen bindings. Default true. */
  frozen?: boolean;
}

/**
 * Runs the contract as subtests of `t`. `makeStore` is called once per
 * subtest; the store is closed when the subtest ends. Resolves when every
 * subtest has run.
 */
export async function storeContract(t: Test, makeStore: () => Promise<LocationStore> | LocationStore, opts: StoreContractOptions = {}): Promise<void> {
  const make = async (t: Test): Promise<LocationStore> => {
    const store = await makeStore();
    t.teardown(() => store.close());
    return store;
  };

  await t.test('get returns live bindings only, before and after the sweep', async (t) => {
    const store = await make(t);
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

  await t.test('update: fn sees the live bindings; decisions apply atomically, one update after the other', async (t) => {
    const store = await make(t);
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
    t.same((await store.get(AOR, T0 + 1000)).map((b) => b.key).sort(), ['keep', 'n2'], 'get agrees');

    await t.rejects(store.update(AOR, T0, () => ({ changes: { put: [binding('x', { aor: 'sip:bob@intercom.test' })] }, result: null })), /put under/);
    t.same((await store.get(AOR, T0 + 1000)).map((b) => b.key).sort(), ['keep', 'n2'], 'a rejected update changed nothing');
    await t.rejects(
      store.update(AOR, T0 + 1000, () => {
        throw new Error('fn failed');
      }),
      /fn failed/,
      'an error thrown by fn rejects the update',
    );
    t.equal((await store.get(AOR, T0 + 1000)).length, 2);
  });

  await t.test('remove', async (t) => {
    const store = await make(t);
    await put(store, T0, binding('a'));
    t.equal((await store.remove(AOR, 'a', T0))?.key, 'a');
    t.equal(await store.remove(AOR, 'a', T0), null);
    t.equal(await store.remove('sip:nobody@intercom.test', 'a', T0), null);
    t.same(await store.get(AOR, T0), []);
  });

  await t.test('a parameter named __proto__ is stored and read back as an own parameter', async (t) => {
    const store = await make(t);
    const params: Record<string, string | null> = {};
    Object.defineProperty(params, '__proto__', { value: null, enumerable: true, writable: true, configurable: true });
    params.foo = '1';
    await put(store, T0, binding('a', { contactParams: params }));
    const [got] = await store.get(AOR, T0);
    t.same(Object.keys(got.contactParams), ['__proto__', 'foo']);
    t.equal(Object.getPrototypeOf(got.contactParams), Object.prototype, 'its prototype untouched');
    t.equal(got.contactParams['__proto__'], null);
  });

  await t.test('stored bindings are copies', async (t) => {
    const store = await make(t);
    const b = binding('a', { path: ['<sip:edge;lr>'] });
    await put(store, T0, b);
    const [got] = await store.get(AOR, T0);
    if (opts.frozen !== false) t.ok(Object.isFrozen(got) && Object.isFrozen(got.path), 'frozen');
    (b.path as string[]).push('changed later');
    t.same((await store.get(AOR, T0))[0].path, ['<sip:edge;lr>'], 'the caller’s object is not the store’s');
    t.same(got, { ...b, path: ['<sip:edge;lr>'] }, 'every field kept');
  });

  await t.test('count: live bindings per domain', async (t) => {
    const store = await make(t);
    await put(store, T0, binding('a'), binding('b'), binding('gone', { expiresAt: T0 }));
    await put(store, T0, binding('c', { aor: 'sip:door@school.test' }));
    await put(store, T0, binding('d', { aor: 'sip:v6@[2001:db8::1]' }));
    t.same(await store.count(T0), { aors: 3, bindings: 4, byDomain: { 'intercom.test': 2, 'school.test': 1, '2001:db8::1': 1 } });
    t.same(await store.count(T0 + 60_000), { aors: 0, bindings: 0, byDomain: {} }, 'nothing live once all have expired, swept or not');
  });

  await t.test('findByGruu: temp tokens and pub instances, live, ended, forgotten', async (t) => {
    const store = await make(t);
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
    if (opts.retiredGruuTtlMs === undefined) return;
    // Past the retention, a sweep forgets them: 404 rather than 480.
    const forgotten = later + opts.retiredGruuTtlMs;
    await store.sweep(forgotten);
    t.equal(await temp('t2', forgotten), null);
    t.equal(await pub('urn:uuid:aaaa', forgotten), null);
  });

  await t.test('remove retires the binding’s GRUUs', async (t) => {
    const store = await make(t);
    await put(store, T0, binding('i:b|1', { instance: '<urn:uuid:B>', regId: 1, gruu: { pub: 'urn:uuid:B', temp: ['tb'] } }));
    t.equal(((await store.findByGruu({ kind: 'temp', token: 'tb' }, T0)) as Binding).key, 'i:b|1');
    await store.remove(AOR, 'i:b|1', T0);
    t.equal(await store.findByGruu({ kind: 'temp', token: 'tb' }, T0), 'expired');
    t.equal(await store.findByGruu({ kind: 'pub', aor: AOR, instance: 'urn:uuid:b' }, T0), 'expired');
    // A new registration of the instance makes its pub-gruu live again.
    await put(store, T0 + 1, binding('i:b|1', { instance: '<urn:uuid:B>', regId: 1, gruu: { pub: 'urn:uuid:B', temp: ['tc'] } }));
    t.equal(((await store.findByGruu({ kind: 'pub', aor: AOR, instance: 'urn:uuid:B' }, T0 + 1)) as Binding).key, 'i:b|1');
    t.equal(await store.findByGruu({ kind: 'temp', token: 'tb' }, T0 + 1), 'expired');
  });
}
