import t from 'tap';
import { prng } from './helpers.js';
import { TransactionTable } from '../../src/transaction/table.js';

t.test('get, has, set (add and replace), delete, size, snapshot, clear', async (t) => {
  const table = new TransactionTable<number>(16);
  t.equal(table.size, 0);
  t.equal(table.get('z9hG4bKa INVITE'), undefined);
  table.set('z9hG4bKa INVITE', 1);
  table.set('z9hG4bKa CANCEL', 2);
  table.set('z9hG4bKb INVITE', 3);
  t.equal(table.size, 3);
  t.equal(table.get('z9hG4bKa INVITE'), 1);
  t.equal(table.get('z9hG4bKa CANCEL'), 2, 'same branch, another method: another key');
  t.ok(table.has('z9hG4bKb INVITE'));
  t.notOk(table.has('z9hG4bKb INVIT'), 'a prefix is not the key');
  table.set('z9hG4bKa INVITE', 4);
  t.equal(table.size, 3, 'replacing adds nothing');
  t.equal(table.get('z9hG4bKa INVITE'), 4);
  t.same(table.snapshot().sort(), [2, 3, 4]);
  t.ok(table.delete('z9hG4bKa CANCEL'));
  t.notOk(table.delete('z9hG4bKa CANCEL'), 'once');
  t.equal(table.size, 2);
  t.equal(table.get('z9hG4bKa CANCEL'), undefined);
  t.notOk(table.deleteIf('z9hG4bKb INVITE', 4), 'deleteIf(): not when the entry holds another value');
  t.equal(table.get('z9hG4bKb INVITE'), 3, 'which stays');
  t.notOk(table.deleteIf('z9hG4bKnone INVITE', 3), 'nor for a missing key');
  t.ok(table.deleteIf('z9hG4bKb INVITE', 3), 'but when it holds this one');
  t.equal(table.size, 1);
  t.equal(table.get('z9hG4bKb INVITE'), undefined);
  table.set('z9hG4bKb INVITE', 3);
  table.set('\u4e2d\u6587 \u{1f600} INVITE', 5);
  t.equal(table.get('\u4e2d\u6587 \u{1f600} INVITE'), 5, 'any UTF-16 key');
  table.clear();
  t.equal(table.size, 0);
  t.equal(table.get('z9hG4bKb INVITE'), undefined);
  t.same(table.snapshot(), []);
});

t.test('agrees with a Map over random inserts, replacements and deletes, through growth and wrapped probe runs', async (t) => {
  const next = prng(7);
  // A small table and a small key space: long probe runs, runs that wrap past the end, many backward shifts.
  const table = new TransactionTable<number>(16);
  const map = new Map<string, number>();
  let mismatches = 0;
  let checks = 0;
  for (let op = 0; op < 60_000; op++) {
    // Phases: the key space grows, then shrinks, so the table doubles and then empties through deletes.
    const space = op < 20_000 ? 64 : op < 40_000 ? 3000 : 200;
    const key = `z9hG4bK${Math.floor(next() * space).toString(36)} ${next() < 0.5 ? 'INVITE' : 'BYE'}`;
    const r = next();
    if (r < 0.45) {
      table.set(key, op);
      map.set(key, op);
    } else if (r < 0.7) {
      if (table.delete(key) !== map.delete(key)) mismatches++;
    } else if (r < 0.9) {
      // deleteIf() with the value held, or with another one.
      const v = next() < 0.5 ? map.get(key) ?? -1 : -2;
      const expected = map.get(key) === v;
      if (expected) map.delete(key);
      if (table.deleteIf(key, v) !== expected) mismatches++;
    } else {
      if (table.get(key) !== map.get(key)) mismatches++;
      checks++;
    }
    if (table.size !== map.size) mismatches++;
    if (op % 5000 === 4999) {
      for (const [k, v] of map) {
        checks++;
        if (table.get(k) !== v) mismatches++;
      }
      const values = table.snapshot().sort((a, b) => a - b);
      const expected = [...map.values()].sort((a, b) => a - b);
      if (values.length !== expected.length || values.some((v, i) => v !== expected[i])) mismatches++;
    }
  }
  t.equal(mismatches, 0, `no difference with a Map over 60,000 operations (${checks} lookups checked)`);
  for (const k of [...map.keys()]) table.delete(k);
  t.equal(table.size, 0, 'empty after deleting every key');
  t.same(table.snapshot(), []);
});
