// The SQLite store (issue 8): bindings survive close and reopen, and a
// SIGKILL loses at most the last batch window; expiry holds across a
// restart; connection ids of the old process are forgotten; bans persist;
// a database that cannot be opened is a clear error.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import Database from 'better-sqlite3';
import { SqliteLocationStore } from '../../src/storage/index.js';
import type { Binding } from '../../src/registrar/index.js';
import { binding as contractBinding, storeContract } from '../registrar/store-contract.js';

const T0 = Date.now();

/** A binding of `aor` (the contract's helper, expiring ten minutes from now). */
function binding(aor: string, key: string, over: Partial<Binding> = {}): Binding {
  return contractBinding(key, { aor, expiresAt: T0 + 600_000, registeredAt: T0, updatedAt: T0, ...over });
}

// The same contract as the memory and Redis stores, on a fresh file each time.
let n = 0;
const contractDir = t.testdir();
await storeContract(t, () => SqliteLocationStore.open({ path: join(contractDir, `contract-${++n}.db`), flushIntervalMs: 20, retiredGruuTtlMs: 60_000 }), { retiredGruuTtlMs: 60_000 });

const put = (s: SqliteLocationStore, now: number, ...bs: Binding[]) => s.update(bs[0].aor, now, () => ({ changes: { put: bs }, result: null }));

t.test('bindings, their expiry and GRUUs survive close and reopen; expired ones are dropped at open', async (t) => {
  const path = join(t.testdir(), 'sub', 'portier.db');
  const a = await SqliteLocationStore.open({ path, flushIntervalMs: 50 }, T0);
  await put(a, T0, binding('sip:alice@example.test', 'u:1'), binding('sip:alice@example.test', 'u:2', { expiresAt: T0 + 1000 }));
  await put(
    a,
    T0,
    binding('sip:bob@example.test', 'i:<urn:uuid:b>|1', {
      instance: '<urn:uuid:b>',
      regId: 1,
      gruu: { pub: 'urn:uuid:b', temp: ['tok1', 'tok2'] },
      source: { protocol: 'tcp', address: '192.0.2.9', port: 40000, family: 4, connectionId: 7, local: { protocol: 'tcp', address: '127.0.0.1', port: 5060 } },
    }),
  );
  await a.remove('sip:alice@example.test', 'u:1', T0);
  await a.close();

  const b = await SqliteLocationStore.open({ path, flushIntervalMs: 50 }, T0 + 2000);
  t.teardown(() => b.close());
  t.same(
    (await b.get('sip:alice@example.test', T0 + 2000)).map((x) => x.key),
    [],
    'the removed binding stayed removed, the expired one is gone',
  );
  t.equal(b.stats.droppedAtLoad, 1, 'the expired row was deleted at open');
  const [bob] = await b.get('sip:bob@example.test', T0 + 2000);
  t.equal(bob.instance, '<urn:uuid:b>');
  t.equal(bob.source.connectionId, 0, "the old process's connection id is forgotten");
  t.equal(bob.source.address, '192.0.2.9', 'the flow address stays');
  const viaTemp = await b.findByGruu({ kind: 'temp', token: 'tok2' }, T0 + 2000);
  t.equal(typeof viaTemp === 'object' && viaTemp !== null ? viaTemp.key : null, bob.key, 'a temp-gruu still reaches its binding');
  t.same(await b.count(T0 + 2000), { aors: 1, bindings: 1, byDomain: { 'example.test': 1 } });
});

t.test('writes are batched: nothing reaches the file before the window, everything after', async (t) => {
  const path = join(t.testdir(), 'portier.db');
  const s = await SqliteLocationStore.open({ path, flushIntervalMs: 10_000 }, T0);
  t.teardown(() => s.close());
  const reader = new Database(path, { readonly: true });
  t.teardown(() => reader.close());
  const rows = () => (reader.prepare('SELECT count(*) n FROM bindings').get() as { n: number }).n;
  for (let i = 0; i < 100; i++) await put(s, T0, binding(`sip:u${i}@example.test`, 'u:1'));
  t.equal(s.queued, 100);
  t.equal(rows(), 0, 'queued, not written');
  await s.flushed();
  t.equal(rows(), 100, 'one flush writes the batch');
  t.equal(s.stats.flushes, 1);
  // Several changes of one binding within a window are one write.
  for (let i = 0; i < 10; i++) await put(s, T0, binding('sip:u0@example.test', 'u:1', { cseq: 2 + i }));
  t.equal(s.queued, 1);
  await s.flushed();
  const data = JSON.parse((reader.prepare("SELECT data FROM bindings WHERE aor = 'sip:u0@example.test'").get() as { data: string }).data) as Binding;
  t.equal(data.cseq, 11, 'the last state is what is stored');
  await s.sweep(T0 + 700_000);
  await s.flushed();
  t.equal(rows(), 0, 'swept bindings are deleted from the file');
});

t.test('SIGKILL loses at most the last batch window', async (t) => {
  const dir = t.testdir();
  const path = join(dir, 'portier.db');
  const script = join(dir, 'writer.ts');
  const storeUrl = new URL('../../src/storage/index.js', import.meta.url).href;
  writeFileSync(
    script,
    `import { SqliteLocationStore } from ${JSON.stringify(storeUrl)};
const s = await SqliteLocationStore.open({ path: ${JSON.stringify(path)}, flushIntervalMs: 50 });
const b = (i) => ({ aor: 'sip:u' + i + '@example.test', key: 'u:1', contact: 'sip:x@192.0.2.1', contactParams: {}, expiresAt: Date.now() + 600000, q: 1, callId: 'c', cseq: 1, instance: null, regId: null, path: [], pushParams: {}, source: { protocol: 'udp', address: '192.0.2.1', port: 5060, family: 4, connectionId: 0, local: { protocol: 'udp', address: '127.0.0.1', port: 5060 } }, userAgent: null, registeredAt: 0, updatedAt: 0, gruu: null });
for (let i = 0; i < 500; i++) await s.update(b(i).aor, Date.now(), () => ({ changes: { put: [b(i)] }, result: null }));
setTimeout(async () => {
  for (let i = 500; i < 600; i++) await s.update(b(i).aor, Date.now(), () => ({ changes: { put: [b(i)] }, result: null }));
  process.stdout.write('ready\\n');
}, 200);
setInterval(() => {}, 1000);
`,
  );
  const child = spawn(process.execPath, [...process.execArgv, script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('writer not ready')), 20_000);
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const s = await SqliteLocationStore.open({ path, flushIntervalMs: 50 });
  t.teardown(() => s.close());
  const { bindings } = await s.count(Date.now());
  t.ok(bindings >= 500, `every binding older than one window survived (${bindings} of 600)`);
  t.ok(bindings <= 600);
});

t.test('bans are kept until they end', async (t) => {
  const path = join(t.testdir(), 'portier.db');
  const a = await SqliteLocationStore.open({ path, flushIntervalMs: 50 }, T0);
  a.saveBan({ address: '192.0.2.66', until: T0 + 300_000, level: 1 });
  a.saveBan({ address: '192.0.2.67', until: T0 + 1_000, level: 2 });
  a.saveBan({ address: '192.0.2.66', until: T0 + 600_000, level: 2 });
  await a.close();
  a.saveBan({ address: '192.0.2.68', until: T0 + 1, level: 1 }); // after close: ignored, no throw
  const b = await SqliteLocationStore.open({ path, flushIntervalMs: 50 }, T0);
  t.teardown(() => b.close());
  t.same(b.loadBans(T0 + 2_000), [{ address: '192.0.2.66', until: T0 + 600_000, level: 2 }]);
});

t.test('a database that cannot be opened is an error naming the file', async (t) => {
  const dir = t.testdir();
  mkdirSync(join(dir, 'is-a-dir'));
  await t.rejects(SqliteLocationStore.open({ path: join(dir, 'is-a-dir'), flushIntervalMs: 50 }), /storage\.path: cannot open the SQLite database .*is-a-dir/);
  const junk = join(dir, 'junk.db');
  writeFileSync(junk, 'this is not a database, just text that is long enough to be looked at'.repeat(100));
  await t.rejects(SqliteLocationStore.open({ path: junk, flushIntervalMs: 50 }), /cannot open the SQLite database .*junk\.db/);
  const other = join(dir, 'other.db');
  const db = new Database(other);
  db.exec("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL); INSERT INTO meta VALUES ('schema', '99')");
  db.close();
  await t.rejects(SqliteLocationStore.open({ path: other, flushIntervalMs: 50 }), /schema version 99/);
});
