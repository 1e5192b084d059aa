// MemoryLocationStore against the LocationStore contract (store-contract.ts:
// expiry without a sweep, atomic updates, GRUU indexes and the memory of
// retired GRUUs), plus what only the memory store does: a bound on the
// retired GRUUs it remembers, and close() emptying it.
import t from 'tap';
import { MemoryLocationStore } from '../../src/registrar/index.js';
import { AOR, T0, binding, put, storeContract } from './store-contract.js';

await storeContract(t, () => new MemoryLocationStore({ retiredGruuTtlMs: 60_000 }), { retiredGruuTtlMs: 60_000 });

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
