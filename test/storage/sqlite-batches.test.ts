// The SQLite store's batches: changes queued per AOR (one per binding key,
// the last one winning), written as flat rows; a batch retried after a
// failure merged with the next one, the newer row winning.
import { join } from 'node:path';
import t from 'tap';
import Database from 'better-sqlite3';
import { SqliteLocationStore } from '../../src/storage/index.js';
import { mergeRows, DELETE } from '../../src/storage/sqlite-writer.js';
import type { Binding } from '../../src/registrar/index.js';
import { binding as contractBinding } from '../registrar/store-contract.js';

const T0 = Date.now();

function binding(aor: string, key: string, over: Partial<Binding> = {}): Binding {
  return contractBinding(key, { aor, expiresAt: T0 + 600_000, registeredAt: T0, updatedAt: T0, ...over });
}

t.test('mergeRows: each (aor, key) once, in first-seen order, the newer row winning', async (t) => {
  const older = ['sip:a@x', 'k1', 1, '{"v":1}', 'sip:a@x', 'k2', 1, '{"v":2}', 'sip:b@x', 'k1', 1, '{"v":3}'];
  const newer = ['sip:a@x', 'k2', DELETE, '', 'sip:c@x', 'k1', 2, '{"v":4}', 'sip:a@x', 'k1', 5, '{"v":5}'];
  t.same(mergeRows(older, newer), ['sip:a@x', 'k1', 5, '{"v":5}', 'sip:a@x', 'k2', DELETE, '', 'sip:b@x', 'k1', 1, '{"v":3}', 'sip:c@x', 'k1', 2, '{"v":4}']);
  t.same(mergeRows([], newer), newer);
  // "a\nb" + "c" and "a" + "b\nc" must not be taken for one row: AORs and keys hold no LF.
  t.same(mergeRows(['sip:a@x', 'k', 1, 'x'], ['sip:a@x', 'k ', 1, 'y']).length, 8);
});

t.test('changes within one window: the last one per binding is what is written', async (t) => {
  const path = join(t.testdir(), 'portier.db');
  const s = await SqliteLocationStore.open({ path, flushIntervalMs: 60_000 }, T0);
  t.teardown(() => s.close());
  const reader = new Database(path, { readonly: true });
  t.teardown(() => reader.close());
  const rows = () => reader.prepare('SELECT aor, key, expires_at AS e FROM bindings ORDER BY aor, key').all() as Array<{ aor: string; key: string; e: number }>;
  const aor = 'sip:alice@example.test';
  // Two bindings of one AOR, and another AOR.
  await s.update(aor, T0, () => ({ changes: { put: [binding(aor, 'u:1'), binding(aor, 'u:2')] }, result: null }));
  await s.update('sip:bob@example.test', T0, () => ({ changes: { put: [binding('sip:bob@example.test', 'u:1')] }, result: null }));
  t.equal(s.queued, 3);
  // Written, then removed, within the window: never reaches the file.
  await s.remove(aor, 'u:2', T0);
  t.equal(s.queued, 3, 'the removal takes the write’s place');
  // Refreshed twice: the last state wins.
  await s.update(aor, T0, () => ({ changes: { put: [binding(aor, 'u:1', { expiresAt: T0 + 700_000 })] }, result: null }));
  await s.update(aor, T0, () => ({ changes: { put: [binding(aor, 'u:1', { expiresAt: T0 + 800_000 })] }, result: null }));
  t.equal(s.queued, 3);
  await s.flushed();
  t.equal(s.queued, 0);
  t.same(rows(), [
    { aor, key: 'u:1', e: T0 + 800_000 },
    { aor: 'sip:bob@example.test', key: 'u:1', e: T0 + 600_000 },
  ]);
  // Removed, then bound again, within one window: the row is there.
  await s.remove('sip:bob@example.test', 'u:1', T0);
  await s.update('sip:bob@example.test', T0, () => ({ changes: { put: [binding('sip:bob@example.test', 'u:1', { cseq: 7 })] }, result: null }));
  await s.update(aor, T0, () => ({ changes: { remove: ['u:1'] }, result: null }));
  await s.flushed();
  t.same(rows(), [{ aor: 'sip:bob@example.test', key: 'u:1', e: T0 + 600_000 }]);
  const data = JSON.parse((reader.prepare('SELECT data FROM bindings').get() as { data: string }).data) as Binding;
  t.equal(data.cseq, 7);
  t.equal(s.stats.flushes, 2);
  t.equal(s.stats.rowsWritten, 5, 'a row per binding changed: three, then two');
});

t.test('an update that throws rejects, and queues nothing', async (t) => {
  const s = await SqliteLocationStore.open({ path: join(t.testdir(), 'p.db'), flushIntervalMs: 60_000 }, T0);
  t.teardown(() => s.close());
  await t.rejects(
    s.update('sip:a@example.test', T0, () => {
      throw new Error('no');
    }),
    /no/,
  );
  await t.rejects(s.update('sip:a@example.test', T0, () => ({ changes: { put: [binding('sip:b@example.test', 'u:1')] }, result: null })), /put under/);
  t.equal(s.queued, 0);
});
