// Registrations that survive a restart, in one SQLite file (better-sqlite3).
//
// The bindings live in a MemoryLocationStore, which answers every read and
// decides every update exactly as without persistence; each change is also
// queued and handed, once per batch window (50 ms by default), to a writer
// thread (./sqlite-writer.ts) that writes it in one transaction. So REGISTER
// costs what it costs in memory, and a crash (SIGKILL) loses at most the
// last window. WAL mode with synchronous=NORMAL: a committed batch survives
// the process dying; only a power cut may lose the last batches.
//
// The same file keeps the active bans (security.auth-failures), so that a
// restart does not lift them.

import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { Rows, WriterMessage, WriterReply } from './sqlite-writer.js';
import { MemoryLocationStore } from '../registrar/memory-store.js';
import type {
  Binding,
  BindingCounts,
  ChangeSet,
  GruuRef,
  GruuResolution,
  LocationStore,
  UpdateDecision,
  UpdateOutcome,
} from '../registrar/location-store.js';

export interface SqliteStoreOptions {
  path: string;
  /** Most milliseconds a change waits before it is written. */
  flushIntervalMs: number;
  /** How long ended GRUUs still answer 'expired' (memory only: forgotten at restart). Default 7 days. */
  retiredGruuTtlMs?: number;
}

/** A ban as src/auth/guard keeps it (structurally). */
export interface StoredBan {
  address: string;
  until: number;
  level: number;
}

export interface SqliteStoreStats {
  /** Bindings read back at open, and expired ones dropped then. */
  loaded: number;
  droppedAtLoad: number;
  flushes: number;
  rowsWritten: number;
  flushErrors: number;
}

const SCHEMA_VERSION = '1';

/** expiresAt of a row that deletes (the writer's DELETE; typed to it so that the two cannot drift apart). */
const DELETE: typeof import('./sqlite-writer.js').DELETE = -1;

/** A change queued to delete a binding's row. */
class Gone {
  constructor(
    readonly aor: string,
    readonly key: string,
  ) {}
}

/** What is queued for one (aor, key): the binding to write, or Gone. */
type Change = Binding | Gone;

export class SqliteLocationStore implements LocationStore {
  readonly stats: SqliteStoreStats = { loaded: 0, droppedAtLoad: 0, flushes: 0, rowsWritten: 0, flushErrors: 0 };
  /** Last flush error, for logs; null once a flush succeeds. */
  lastError: Error | null = null;
  private readonly mem: MemoryLocationStore;
  /**
   * AOR → the changes queued for its bindings, one per key: the binding to
   * write, or Gone. By AOR, not by an `aor key` string: the AOR string a
   * binding carries is the same object from one refresh to the next, so
   * its hash is worked out once, and queueing builds no key.
   */
  private pending = new Map<string, Change[]>();
  /** Changes in `pending`. */
  private pendingCount = 0;
  /** Where mem.updateNow() says what it applied (updates are synchronous: one serves). */
  private readonly applied: { changes: ChangeSet | null } = { changes: null };
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly writer: Worker;
  /** Batches posted to the writer, and answered by it. */
  private sent = 0;
  private answered = 0;
  private waiters: Array<() => void> = [];
  private dead = false;
  private writerClosed: Promise<void>;
  /** Resolves when the writer has opened the database; rejects if it cannot start. */
  private readonly writerReady: Promise<void>;

  private constructor(
    private readonly db: Database.Database,
    options: SqliteStoreOptions,
  ) {
    this.mem = new MemoryLocationStore({ retiredGruuTtlMs: options.retiredGruuTtlMs });
    this.writer = new Worker(new URL('./sqlite-writer.js', import.meta.url), { workerData: { path: options.path } });
    this.writer.unref();
    this.writerReady = new Promise<void>((resolve, reject) => {
      this.writer.once('message', (m: WriterReply) => (m.type === 'ready' ? resolve() : reject(new Error('the SQLite writer did not start'))));
      this.writer.once('error', reject);
    });
    this.writerClosed = new Promise<void>((resolve) => {
      this.writer.on('message', (m: WriterReply) => {
        // A ban was no batch: it is not waited for.
        if (m.type === 'written' || (m.type === 'failed' && m.ban !== true)) this.answer();
        if (m.type === 'written') {
          this.stats.flushes++;
          this.stats.rowsWritten += m.rows;
          this.lastError = null;
        } else if (m.type === 'failed') {
          this.stats.flushErrors++;
          this.lastError = new Error(m.message);
        } else if (m.type === 'closed') resolve();
      });
      this.writer.on('error', (err) => {
        this.stats.flushErrors++;
        this.lastError = err;
        this.writerGone();
        resolve();
      });
      this.writer.on('exit', () => {
        this.writerGone();
        resolve();
      });
    });
  }

  /**
   * Opens (creating it and its directory if needed) the database and loads
   * the bindings still live at `now`. Throws an Error naming the file when
   * it cannot be opened: Portier then does not start.
   */
  static async open(options: SqliteStoreOptions, now = Date.now()): Promise<SqliteLocationStore> {
    let db: Database.Database;
    try {
      mkdirSync(dirname(options.path), { recursive: true });
      db = new Database(options.path);
      // It holds the server's secret (see secret()): owner only.
      chmodSync(options.path, 0o600);
      db.pragma('busy_timeout = 5000');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.exec(`
        CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS bindings (aor TEXT NOT NULL, key TEXT NOT NULL, expires_at INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (aor, key)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS bans (address TEXT PRIMARY KEY, until INTEGER NOT NULL, level INTEGER NOT NULL);
      `);
      const v = db.prepare('SELECT v FROM meta WHERE k = ?').get('schema') as { v: string } | undefined;
      if (v === undefined) db.prepare('INSERT INTO meta (k, v) VALUES (?, ?)').run('schema', SCHEMA_VERSION);
      else if (v.v !== SCHEMA_VERSION) throw new Error(`schema version ${v.v}, this Portier knows ${SCHEMA_VERSION}`);
    } catch (err) {
      throw new Error(`storage.path: cannot open the SQLite database ${options.path}: ${(err as Error).message}`, { cause: err });
    }
    const store = new SqliteLocationStore(db, options);
    try {
      await store.writerReady;
    } catch (err) {
      db.close();
      throw new Error(`storage.path: cannot start the SQLite writer for ${options.path}: ${(err as Error).message}`, { cause: err });
    }
    await store.load(now);
    store.timer = setInterval(() => store.flush(), options.flushIntervalMs);
    store.timer.unref();
    return store;
  }

  private async load(now: number): Promise<void> {
    this.stats.droppedAtLoad = this.db.prepare('DELETE FROM bindings WHERE expires_at <= ?').run(now).changes;
    const byAor = new Map<string, Binding[]>();
    for (const row of this.db.prepare('SELECT data FROM bindings').iterate() as Iterable<{ data: string }>) {
      let b: Binding;
      try {
        b = JSON.parse(row.data) as Binding;
      } catch {
        continue;
      }
      // A connection id names a connection of the process that wrote it;
      // ids start again at 1, so an old one could name someone else's.
      // The flow's address stays: a request may reconnect to it (0 = none).
      if (b.source.connectionId !== 0) b = { ...b, source: { ...b.source, connectionId: 0 } };
      const list = byAor.get(b.aor);
      if (list) list.push(b);
      else byAor.set(b.aor, [b]);
    }
    for (const [aor, put] of byAor) {
      await this.mem.update(aor, now, () => ({ changes: { put }, result: null }));
      this.stats.loaded += put.length;
    }
  }

  /** Hands the queued changes to the writer now (the timer does it every flush interval). */
  flush(): void {
    if (this.pendingCount === 0 || this.closed || this.dead) return;
    // One batch at a time: while the writer is busy (a slow disk) changes
    // keep merging here, bounded by the number of bindings, instead of
    // piling up as messages.
    if (this.answered < this.sent) return;
    const rows: Rows = [];
    for (const changes of this.pending.values()) {
      for (let i = 0; i < changes.length; i++) {
        const c = changes[i];
        if (c instanceof Gone) rows.push(c.aor, c.key, DELETE, '');
        else rows.push(c.aor, c.key, c.expiresAt, JSON.stringify(c));
      }
    }
    this.pending = new Map();
    this.pendingCount = 0;
    this.sent++;
    this.writer.postMessage({ type: 'batch', rows } satisfies WriterMessage);
  }

  /** Flushes, and resolves once the writer has written (or failed) every batch handed to it. */
  async flushed(): Promise<void> {
    for (;;) {
      this.flush();
      if (this.answered < this.sent) await new Promise<void>((resolve) => this.waiters.push(resolve));
      if (this.pendingCount === 0 || this.closed || this.dead) return;
    }
  }

  /** The writer thread died: nothing more will be written; nobody waits for it. */
  private writerGone(): void {
    if (!this.closed) this.lastError ??= new Error('the SQLite writer thread stopped');
    this.dead = true;
    this.answered = this.sent;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private answer(): void {
    this.answered++;
    if (this.answered < this.sent) return;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Changes waiting for the next flush. */
  get queued(): number {
    return this.pendingCount;
  }

  private queue(b: Binding, write: boolean): void {
    const change = write ? b : new Gone(b.aor, b.key);
    const changes = this.pending.get(b.aor);
    if (changes === undefined) {
      this.pending.set(b.aor, [change]);
      this.pendingCount++;
      return;
    }
    for (let i = 0; i < changes.length; i++) {
      if (changes[i].key === b.key) {
        changes[i] = change;
        return;
      }
    }
    changes.push(change);
    this.pendingCount++;
  }

  // ---- LocationStore ----

  get(aor: string, now: number): Promise<Binding[]> {
    return this.mem.get(aor, now);
  }

  getNow(aor: string, now: number): Binding[] {
    return this.mem.getNow(aor, now);
  }

  update<R>(aor: string, now: number, fn: (current: readonly Binding[]) => UpdateDecision<R>): Promise<UpdateOutcome<R>> {
    try {
      return Promise.resolve(this.updateNow(aor, now, fn));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** The memory store's update, its changes queued for the file. */
  updateNow<R>(aor: string, now: number, fn: (current: readonly Binding[]) => UpdateDecision<R>): UpdateOutcome<R> {
    const applied = this.applied;
    const outcome = this.mem.updateNow(aor, now, fn, applied);
    const changes = applied.changes;
    applied.changes = null;
    const expired = outcome.expired;
    for (let i = 0; i < expired.length; i++) this.queue(expired[i], false);
    const removed = outcome.removed;
    for (let i = 0; i < removed.length; i++) this.queue(removed[i], false);
    const put = changes?.put;
    if (put) for (let i = 0; i < put.length; i++) this.queue(put[i], true);
    return outcome;
  }

  async remove(aor: string, key: string, now: number): Promise<Binding | null> {
    const b = await this.mem.remove(aor, key, now);
    if (b !== null) this.queue(b, false);
    return b;
  }

  async sweep(now: number): Promise<Binding[]> {
    const gone = await this.mem.sweep(now);
    for (const b of gone) this.queue(b, false);
    return gone;
  }

  count(now: number): Promise<BindingCounts> {
    return this.mem.count(now);
  }

  findByGruu(ref: GruuRef, now: number): Promise<GruuResolution> {
    return this.mem.findByGruu(ref, now);
  }

  /** Writes what is queued, waits for the writer to finish, and closes the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await this.flushed();
    this.closed = true;
    this.writer.postMessage({ type: 'close' } satisfies WriterMessage);
    await this.writerClosed;
    this.db.close();
  }

  // ---- the server's secret ----

  /**
   * 32 random bytes made once and kept in the database: nonces and
   * Record-Route tokens signed with it stay valid across a restart, so
   * calls set up before it can still be hung up through Portier.
   */
  secret(): Buffer {
    const row = this.db.prepare('SELECT v FROM meta WHERE k = ?').get('secret') as { v: string } | undefined;
    if (row !== undefined) return Buffer.from(row.v, 'hex');
    const fresh = randomBytes(32);
    this.db.prepare('INSERT OR IGNORE INTO meta (k, v) VALUES (?, ?)').run('secret', fresh.toString('hex'));
    return this.secret();
  }

  // ---- bans ----

  /** Bans still running at `now`. */
  loadBans(now: number): StoredBan[] {
    this.db.prepare('DELETE FROM bans WHERE until <= ?').run(now);
    return this.db.prepare('SELECT address, until, level FROM bans').all() as StoredBan[];
  }

  /** Records a ban as it starts (rare: written at once, not batched). */
  saveBan(ban: StoredBan): void {
    if (this.closed) return;
    this.writer.postMessage({ type: 'ban', ban: { address: ban.address, until: ban.until, level: ban.level } } satisfies WriterMessage);
  }
}
