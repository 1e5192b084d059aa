// The location store on Redis, shared by several Portier nodes (issue 8).
//
// Data layout (P = the configured prefix, e.g. `portier:`):
//
//   P b:AOR        hash: binding key → JSON of the Binding. Every binding of
//                  the AOR, including ones expired but not swept yet (reads
//                  filter by expiresAt > now). PEXPIRE = latest expiresAt of
//                  its bindings + the GRUU retirement window, so data that no
//                  node sweeps (every node down) still leaves by itself.
//   P t:TOKEN      string: a temp-gruu token. `{"a":AOR,"k":KEY}` while a
//                  binding carries it (PEXPIRE = that binding's expiresAt +
//                  retirement window), `{"r":UNTIL}` once retired (PEXPIRE =
//                  retirement window): 'expired' while UNTIL > now.
//   P r:AOR        hash: pub-gruu instance key → UNTIL, for bindings ended
//                  (swept/removed), so their pub-gruu answers 'expired';
//                  PEXPIRE = retirement window from the last retirement.
//   P exp          sorted set: AOR scored by its earliest binding expiresAt
//                  (what sweep() scans: ZRANGEBYSCORE -inf now).
//   P aors         sorted set: AOR scored by its latest binding expiresAt
//                  (count: ZCOUNT (now +inf = AORs with a live binding).
//   P d:DOMAIN     sorted set: `AOR KEY` scored by that binding's expiresAt
//                  (count: ZCOUNT (now +inf = live bindings of the domain).
//   P domains      set of the DOMAINs that have a d: set.
//   P changes      pub/sub channel: `NODEID AOR` after every write.
//
// The index sets (exp, aors, d:*, domains) carry no TTL: they are shared by
// every AOR, so no single write knows how long they must live. Their dead
// members cost nothing in answers (every count is "> now") and sweep() trims
// them. Scores and the UNTIL values are on the callers' timeline (`now`
// arguments); Redis TTLs are relative (PEXPIRE, never PEXPIREAT): ms from
// `now`, so the Portier hosts' and the Redis host's clocks need not agree.
//
// Writes: WATCH P b:AOR + HGETALL (one round trip), the caller's fn on the
// Node side, then MULTI ... EXEC (one round trip) touching the hash, its
// index entries and the PUBLISH; EXEC answers nil when another node wrote
// the hash in between, and the whole read-decide-write is tried again
// (bounded). Each transaction has a connection of its own (a small pool:
// WATCH state is per connection) and updates of one AOR within a node run
// one after the other, so only other nodes cause retries.
//
// Reads: HGETALL (one round trip), or none from the in-process LRU cache,
// kept coherent by the `changes` channel: a node drops its entry for an AOR
// when another node announces a write to it, refuses to fill the cache with
// a read that was in flight when such an announcement arrived, and drops the
// whole cache when its subscription comes back after a break (it may have
// missed announcements meanwhile).
//
// Faults: the connections fail fast (no offline queue, no resend of
// unanswered commands, a command timeout for a server that accepts but does
// not answer) and reconnect by themselves with a capped backoff. While Redis
// cannot be reached, `up` is false, reads answer from the cache (stale is
// better than nothing) and writes reject with code 'STORAGE_UNAVAILABLE'.
// One warning when an outage starts, one when it ends.

import { randomUUID } from 'node:crypto';
import { Redis, ReplyError, type RedisOptions } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { domainOfAor, instanceKey } from '../registrar/aor.js';
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

export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` (or rediss:// for TLS). */
  url: string;
  /** Put before every key and the channel name, e.g. `portier:`. Nodes sharing bindings use the same prefix. */
  prefix: string;
  /** In-process cache bound: AORs kept (with their bindings). 0 disables the cache. Default 20000. */
  cacheSize?: number;
  /** For tests: the time outages are measured with (log lines). Expiry always follows the callers' `now`. Default Date.now. */
  clock?: () => number;
  logger?: { warn(obj: object, msg: string): void };
  /** How long an ended GRUU still answers 'expired' rather than null (as MemoryLocationStoreOptions). Default 7 days. */
  retiredGruuTtlMs?: number;
  /** A command unanswered this long fails (and Redis counts as unreachable). Default 500. */
  commandTimeoutMs?: number;
  /** Longest pause between reconnection attempts (the backoff doubles from 50 ms up to this). Default 2000. */
  maxReconnectDelayMs?: number;
  /** open() gives up after this long. Default 5000. */
  connectTimeoutMs?: number;
  /** Connections for transactions (WATCH holds a connection until EXEC): concurrent updates of different AORs. Default 8. */
  txConnections?: number;
  /** Read-decide-write attempts of one update before it rejects with code 'STORAGE_CONFLICT'. Default 20. */
  maxUpdateAttempts?: number;
}

/** Counters, for metrics and tests. */
export interface RedisStoreStats {
  /** Network round trips to Redis (a pipeline or a MULTI/EXEC counts one). */
  roundTrips: number;
  /** Reads (get, findByGruu) answered from the cache while it was coherent. */
  cacheHits: number;
  /** Reads answered from the cache while Redis could not be reached. */
  staleHits: number;
  cacheMisses: number;
  /** Transactions that EXEC aborted because another node wrote the AOR meanwhile (each is retried). */
  conflicts: number;
  /** Calls of update functions (more than updates when conflicts made them run again). */
  fnRuns: number;
  /** Announcements of other nodes' writes received. */
  changesHeard: number;
  /** Outages seen (up → down). */
  outages: number;
}

/** A store error: Redis cannot be reached (the registrar answers 503), or an update kept conflicting. */
export class StorageError extends Error {
  constructor(
    message: string,
    readonly code: 'STORAGE_UNAVAILABLE' | 'STORAGE_CONFLICT',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StorageError';
  }
}

const DAY_MS = 86_400_000;
const SWEEP_BATCH = 256;

// Trims a domain's binding index of the dead, and forgets the domain when
// nothing is left (atomic, so it cannot forget a domain a concurrent write
// just added to).
const TRIM_DOMAIN = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return 0`;

interface TxConn {
  readonly redis: Redis;
  /** Bumped when the connection closes: a WATCH from an earlier epoch is gone. */
  epoch: number;
}

/** A read or write in flight whose answer may fill the cache, unless an announcement made it stale. */
interface Ticket {
  stale: boolean;
  readonly gen: number;
}

interface Load extends Ticket {
  readonly promise: Promise<readonly Binding[]>;
}

/** What a transaction writes, decided from the stored bindings. */
interface Plan {
  /** The AOR's bindings after the write, by key. */
  final: Map<string, Binding>;
  /** Bindings leaving the AOR (expired or removed): their GRUUs are retired. */
  dropped: Binding[];
  /** Bindings written (new or replacing one with the same key), with their JSON. */
  puts: { b: Binding; json: string }[];
  /** Bindings replaced by a put, by key (their tokens the new version lacks are retired). */
  replaced: Map<string, Binding>;
  /** Hash fields that did not parse: deleted. */
  junk: string[];
}

interface Decision<R> {
  result: R;
  /** null: nothing to write. */
  plan: Plan | null;
}

interface Stored {
  bindings: Map<string, Binding>;
  junk: string[];
}

export class RedisLocationStore implements LocationStore {
  /** Told when another node changed an AOR (its cache entry has been dropped already). */
  onChange?: (aor: string) => void;
  /** Told when Redis is reachable again after an outage: the cache was dropped, changes made meanwhile were not announced. */
  onResync?: () => void;

  readonly stats: RedisStoreStats = {
    roundTrips: 0,
    cacheHits: 0,
    staleHits: 0,
    cacheMisses: 0,
    conflicts: 0,
    fnRuns: 0,
    changesHeard: 0,
    outages: 0,
  };

  /** Tells the announcements of this instance from those of other nodes. */
  readonly nodeId = randomUUID();

  /** The key prefix (RedisStoreOptions.prefix). */
  readonly prefix: string;
  private readonly channel: string;
  private readonly retiredTtlMs: number;
  private readonly maxAttempts: number;
  private readonly clock: () => number;
  private readonly logger: { warn(obj: object, msg: string): void };
  private readonly url: string;
  private readonly connectTimeoutMs: number;
  private readonly commandTimeoutMs: number;

  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly tx: TxConn[];
  private readonly freeTx: TxConn[];
  private readonly txWaiters: ((c: TxConn) => void)[] = [];

  private readonly cache: LRUCache<string, readonly Binding[]> | null;
  /** temp-gruu token → AOR: where to look in the cache (checked against the cached bindings, so never wrong, only missing). */
  private readonly tokenHints: LRUCache<string, string> | null;
  /** Bumped when the whole cache is dropped: reads started before do not fill it. */
  private gen = 0;
  private readonly loads = new Map<string, Load>();
  private readonly writes = new Map<string, Ticket>();
  /** Per AOR, the tail of this node's operations on it (run one after the other). */
  private readonly queues = new Map<string, Promise<unknown>>();

  private state: 'up' | 'down' = 'up';
  /** A command timed out: the server accepts but does not answer. Cleared when a probe PING is answered. */
  private stalled = false;
  private subscribed = false;
  private closing = false;
  private downSince = 0;
  private lastError: unknown = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private probing = false;

  private constructor(opts: RedisStoreOptions) {
    this.prefix = opts.prefix;
    this.channel = opts.prefix + 'changes';
    this.retiredTtlMs = opts.retiredGruuTtlMs ?? 7 * DAY_MS;
    this.maxAttempts = Math.max(1, opts.maxUpdateAttempts ?? 20);
    this.clock = opts.clock ?? Date.now;
    this.logger = opts.logger ?? { warn: (obj, msg) => console.warn(`${msg} ${JSON.stringify(obj)}`) };
    this.url = redactUrl(opts.url);
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 500;
    const maxDelay = opts.maxReconnectDelayMs ?? 2000;
    const cacheSize = opts.cacheSize ?? 20_000;
    this.cache = cacheSize > 0 ? new LRUCache({ max: cacheSize }) : null;
    this.tokenHints = cacheSize > 0 ? new LRUCache({ max: cacheSize * 2 }) : null;

    const base: RedisOptions = {
      lazyConnect: true,
      // Fail fast: a call while Redis is away rejects at once rather than
      // waiting in a queue; a command unanswered at a close is rejected, not
      // sent again to the next connection (a transaction's WATCH would not
      // follow it there).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: false, // subscribed again by start()'s 'ready' listener, which knows when it has taken effect
      commandTimeout: this.commandTimeoutMs,
      connectTimeout: Math.min(this.connectTimeoutMs, 2000),
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 16), maxDelay),
      enableReadyCheck: true,
    };
    const make = (name: string): Redis => {
      const r = new Redis(opts.url, { ...base, connectionName: 'portier-' + name });
      r.on('error', (err: unknown) => {
        this.lastError = err;
      });
      r.on('close', () => this.markDown(`${name} connection closed`));
      return r;
    };
    this.cmd = make('cmd');
    this.sub = make('sub');
    this.sub.on('close', () => {
      this.subscribed = false;
    });
    this.sub.on('message', (channel: string, message: string) => this.heard(channel, message));
    const n = Math.max(1, opts.txConnections ?? 8);
    this.tx = [];
    for (let i = 0; i < n; i++) {
      const conn: TxConn = { redis: make('tx' + i), epoch: 0 };
      conn.redis.on('close', () => conn.epoch++);
      this.tx.push(conn);
    }
    this.freeTx = [...this.tx];
  }

  /** Connects and subscribes; rejects with a clear Error when Redis cannot be reached. */
  static async open(opts: RedisStoreOptions): Promise<RedisLocationStore> {
    const store = new RedisLocationStore(opts);
    await store.start();
    return store;
  }

  /** False while Redis cannot be reached (portier_storage_up). */
  get up(): boolean {
    return this.state === 'up';
  }

  // ---- LocationStore ----

  async get(aor: string, now: number): Promise<Binding[]> {
    return live(await this.load(aor), now);
  }

  update<R>(aor: string, now: number, fn: (current: readonly Binding[]) => UpdateDecision<R>): Promise<UpdateOutcome<R>> {
    return this.serial(aor, async () => {
      let removed: Binding[] = [];
      let expired: Binding[] = [];
      const r = await this.transact(aor, now, false, (stored) => {
        expired = [];
        const current: Binding[] = [];
        for (const b of stored.bindings.values()) (b.expiresAt > now ? current : expired).push(b);
        this.stats.fnRuns++;
        const decision = fn(current);
        const changes = decision.changes;
        const plan = newPlan(stored);
        for (const b of expired) drop(plan, b);
        removed = changes === null ? [] : removeKeys(plan, changes);
        if (changes !== null) putAll(plan, aor, changes);
        const write = expired.length > 0 || removed.length > 0 || plan.puts.length > 0 || plan.junk.length > 0;
        return { result: decision.result, plan: write ? plan : null };
      });
      return { result: r.result, bindings: live(r.final, now), removed, expired };
    });
  }

  remove(aor: string, key: string, now: number): Promise<Binding | null> {
    return this.serial(aor, async () => {
      const r = await this.transact(aor, now, false, (stored) => {
        const b = stored.bindings.get(key);
        if (b === undefined) return { result: null, plan: null };
        const plan = newPlan(stored);
        drop(plan, b);
        return { result: b, plan };
      });
      return r.result;
    });
  }

  async sweep(now: number): Promise<Binding[]> {
    this.assertReadable();
    const out: Binding[] = [];
    for (let round = 0; round < 1000; round++) {
      const aors = await this.call(() => this.cmd.zrangebyscore(this.prefix + 'exp', '-inf', now, 'LIMIT', 0, SWEEP_BATCH));
      if (aors.length === 0) break;
      const purged = await mapLimit(aors, this.tx.length, (aor) => this.purge(aor, now));
      for (const bs of purged) out.push(...bs);
      if (aors.length < SWEEP_BATCH) break;
    }
    const domains = await this.call(() => this.cmd.smembers(this.prefix + 'domains'));
    if (domains.length > 0) {
      const pl = this.cmd.pipeline();
      for (const d of domains) pl.eval(TRIM_DOMAIN, 2, this.prefix + 'd:' + d, this.prefix + 'domains', now, d);
      await this.batch(() => pl.exec());
    }
    return out;
  }

  async count(now: number): Promise<BindingCounts> {
    this.assertReadable();
    const domains = await this.call(() => this.cmd.smembers(this.prefix + 'domains'));
    const pl = this.cmd.pipeline();
    const live = '(' + now;
    pl.zcount(this.prefix + 'aors', live, '+inf');
    for (const d of domains) pl.zcount(this.prefix + 'd:' + d, live, '+inf');
    const res = (await this.batch(() => pl.exec()))!;
    const counts: BindingCounts = { aors: Number(res[0]), bindings: 0, byDomain: {} };
    domains.forEach((d, i) => {
      const n = Number(res[i + 1]);
      if (n === 0) return;
      counts.bindings += n;
      counts.byDomain[d] = n;
    });
    return counts;
  }

  async findByGruu(ref: GruuRef, now: number): Promise<GruuResolution> {
    return ref.kind === 'temp' ? this.findTemp(ref.token, now) : this.findPub(ref.aor, ref.instance, now);
  }

  /** Quits every connection (command, subscriber, transactions). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.probeTimer !== null) clearInterval(this.probeTimer);
    this.probeTimer = null;
    const all = [this.cmd, this.sub, ...this.tx.map((c) => c.redis)];
    await Promise.all(
      all.map(async (r) => {
        if (r.status === 'ready') {
          try {
            await r.quit();
            return;
          } catch {
            // fall through: drop it
          }
        }
        r.disconnect();
      }),
    );
    this.cache?.clear();
    this.tokenHints?.clear();
  }

  // ---- connection state ----

  private async start(): Promise<void> {
    const all = [this.cmd, this.sub, ...this.tx.map((c) => c.redis)];
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.connectTimeoutMs} ms`)), this.connectTimeoutMs);
      });
      await Promise.race([Promise.all(all.map((r) => r.connect())), timeout]);
      await Promise.race([this.sub.subscribe(this.channel), timeout]);
    } catch (err) {
      this.closing = true;
      for (const r of all) r.disconnect();
      const why = describe(this.lastError ?? err);
      throw new Error(`Redis store: cannot reach Redis at ${this.url}: ${why}`, { cause: this.lastError ?? err });
    } finally {
      clearTimeout(timer);
    }
    this.subscribed = true;
    // From now on every (re)connection of the subscriber subscribes again.
    this.sub.on('ready', () => {
      this.sub.subscribe(this.channel).then(
        () => {
          this.subscribed = true;
        },
        (err: unknown) => {
          this.lastError = err;
        },
      );
    });
  }

  private markDown(why: string, err?: unknown): void {
    if (this.closing || this.state === 'down') return;
    this.state = 'down';
    this.downSince = this.clock();
    this.stats.outages++;
    const cause = err ?? this.lastError;
    this.logger.warn(
      { url: this.url, why, err: cause === null ? undefined : describe(cause) },
      'Redis store unreachable: answering from the cache, refusing writes',
    );
    this.probeTimer = setInterval(() => void this.probe(), Math.min(200, this.commandTimeoutMs));
    this.probeTimer.unref();
  }

  /** While down: once every connection is back (and subscribed), a PING decides. */
  private async probe(): Promise<void> {
    if (this.closing || this.probing || this.state === 'up') return;
    if (!this.subscribed || this.cmd.status !== 'ready' || this.tx.some((c) => c.redis.status !== 'ready')) return;
    this.probing = true;
    try {
      await this.cmd.ping();
    } catch {
      return;
    } finally {
      this.probing = false;
    }
    if (this.closing || this.up || !this.subscribed) return;
    this.state = 'up';
    this.stalled = false;
    if (this.probeTimer !== null) clearInterval(this.probeTimer);
    this.probeTimer = null;
    // Announcements may have been missed while the subscription was down.
    this.dropCache();
    this.logger.warn({ url: this.url, downMs: this.clock() - this.downSince }, 'Redis store reachable again: cache dropped');
    try {
      this.onResync?.();
    } catch {
      // a listener's problem
    }
  }

  /** Commands can be sent on the command connection with hope of an answer. */
  private canRead(): boolean {
    return this.cmd.status === 'ready' && !this.stalled;
  }

  private assertReadable(): void {
    if (!this.canRead()) throw this.unavailable();
  }

  /** The cache reflects Redis (every announcement since it was filled has been heard). */
  private coherent(): boolean {
    return this.cache !== null && this.state === 'up' && this.subscribed;
  }

  private unavailable(cause?: unknown): StorageError {
    const c = cause ?? this.lastError;
    return new StorageError(`Redis store unavailable (${this.url})${c ? ': ' + describe(c) : ''}`, 'STORAGE_UNAVAILABLE', { cause: c ?? undefined });
  }

  /** Runs a Redis call: counts the round trip, turns connection failures into STORAGE_UNAVAILABLE. */
  private async call<T>(f: () => Promise<T>): Promise<T> {
    this.stats.roundTrips++;
    try {
      return await f();
    } catch (err) {
      throw this.failure(err);
    }
  }

  /**
   * Runs a pipeline or MULTI/EXEC (one round trip); null when EXEC was
   * aborted (a WATCHed key changed). A command's error counts as the call's
   * (ioredis reports a timeout or a closed connection per command).
   */
  private async batch(f: () => Promise<[Error | null, unknown][] | null>): Promise<unknown[] | null> {
    const res = await this.call(f);
    if (res === null) return null;
    return res.map(([err, v]) => {
      if (err !== null) throw this.failure(err);
      return v;
    });
  }

  private failure(err: unknown): Error {
    if (err instanceof ReplyError) return err as Error; // Redis answered: not an outage
    if (err instanceof Error && err.message === 'Command timed out') {
      this.stalled = true;
      this.markDown('command timed out', err);
    }
    return err instanceof StorageError ? err : this.unavailable(err);
  }

  // ---- cache coherence ----

  private heard(channel: string, message: string): void {
    if (channel !== this.channel) return;
    const sp = message.indexOf(' ');
    if (sp === -1 || message.slice(0, sp) === this.nodeId) return; // our own writes update the cache themselves
    const aor = message.slice(sp + 1);
    this.stats.changesHeard++;
    this.invalidate(aor);
    try {
      this.onChange?.(aor);
    } catch {
      // a listener's problem
    }
  }

  /** The AOR changed: forget it, and let nothing in flight put an older view back. */
  private invalidate(aor: string): void {
    this.cache?.delete(aor);
    const l = this.loads.get(aor);
    if (l !== undefined) {
      l.stale = true;
      this.loads.delete(aor);
    }
    const w = this.writes.get(aor);
    if (w !== undefined) w.stale = true;
  }

  private dropCache(): void {
    this.gen++;
    this.cache?.clear();
    this.tokenHints?.clear();
    for (const l of this.loads.values()) l.stale = true;
    this.loads.clear();
    for (const w of this.writes.values()) w.stale = true;
  }

  private remember(aor: string, bindings: readonly Binding[], t: Ticket): void {
    if (this.cache === null || t.stale || t.gen !== this.gen || this.closing) return;
    this.cache.set(aor, bindings);
    for (const b of bindings) for (const tok of b.gruu?.temp ?? []) this.tokenHints!.set(tok, aor);
  }

  // ---- reads ----

  /** Every stored binding of the AOR (dead ones too), from the cache or one HGETALL. */
  private async load(aor: string): Promise<readonly Binding[]> {
    if (this.coherent()) {
      const hit = this.cache!.get(aor);
      if (hit !== undefined) {
        this.stats.cacheHits++;
        return hit;
      }
    }
    if (!this.canRead()) return this.stale(aor);
    this.stats.cacheMisses++;
    let l = this.loads.get(aor);
    if (l === undefined) {
      // A read that starts while the cache is not coherent must not fill it.
      const ticket: Ticket = { stale: !this.coherent(), gen: this.gen };
      const promise = this.call(() => this.cmd.hgetall(this.prefix + 'b:' + aor)).then(
        (h) => {
          const bs = [...this.parse(aor, h).bindings.values()];
          if (this.loads.get(aor) === load) this.loads.delete(aor);
          this.remember(aor, bs, ticket);
          return bs;
        },
        (err: unknown) => {
          if (this.loads.get(aor) === load) this.loads.delete(aor);
          throw err;
        },
      );
      const load: Load = Object.assign(ticket, { promise });
      l = load;
      this.loads.set(aor, load);
    }
    try {
      return await l.promise;
    } catch (err) {
      if (err instanceof StorageError) return this.stale(aor, err);
      throw err;
    }
  }

  /** Redis cannot answer: the cached bindings, however old, or STORAGE_UNAVAILABLE. */
  private stale(aor: string, err?: unknown): readonly Binding[] {
    const hit = this.cache?.get(aor);
    if (hit === undefined) throw err ?? this.unavailable();
    this.stats.staleHits++;
    return hit;
  }

  private async findTemp(token: string, now: number): Promise<GruuResolution> {
    // A cached binding that carries the token answers it (the cache is coherent, so it still does).
    const fromCache = (): GruuResolution | undefined => {
      const aor = this.tokenHints?.get(token);
      if (aor === undefined) return undefined;
      const b = this.cache!.get(aor)?.find((x) => x.gruu?.temp.includes(token) === true);
      if (b === undefined) return undefined;
      return b.expiresAt > now ? b : 'expired';
    };
    if (this.coherent()) {
      const r = fromCache();
      if (r !== undefined) {
        this.stats.cacheHits++;
        return r;
      }
    }
    let raw: string | null;
    try {
      if (!this.canRead()) throw this.unavailable();
      this.stats.cacheMisses++;
      raw = await this.call(() => this.cmd.get(this.prefix + 't:' + token));
    } catch (err) {
      const r = err instanceof StorageError ? fromCache() : undefined;
      if (r === undefined) throw err;
      this.stats.staleHits++;
      return r;
    }
    if (raw === null) return null;
    const at = parseJson(raw) as { a?: unknown; k?: unknown; r?: unknown } | undefined;
    if (at === undefined) return null;
    if (typeof at.r === 'number') return at.r > now ? 'expired' : null;
    if (typeof at.a !== 'string' || typeof at.k !== 'string') return null;
    const b = (await this.load(at.a)).find((x) => x.key === at.k);
    // Indexed but gone or no longer carrying it: it was valid, it has ended.
    if (b === undefined || b.gruu?.temp.includes(token) !== true) return 'expired';
    return b.expiresAt > now ? b : 'expired';
  }

  private async findPub(aor: string, instance: string, now: number): Promise<GruuResolution> {
    const want = instanceKey(instance);
    let best: Binding | null = null;
    let ended = false;
    for (const b of await this.load(aor)) {
      if (b.gruu === null || instanceKey(b.gruu.pub) !== want) continue;
      if (b.expiresAt <= now) ended = true;
      else if (best === null || b.updatedAt > best.updatedAt) best = b;
    }
    if (best !== null) return best;
    if (ended) return 'expired';
    this.assertReadable();
    const until = await this.call(() => this.cmd.hget(this.prefix + 'r:' + aor, want));
    return until !== null && Number(until) > now ? 'expired' : null;
  }

  private parse(aor: string, h: Record<string, string>): Stored {
    const bindings = new Map<string, Binding>();
    const junk: string[] = [];
    for (const [field, json] of Object.entries(h)) {
      const b = parseJson(json) as Binding | undefined;
      if (b === undefined || typeof b !== 'object' || b === null || b.key !== field || b.aor !== aor || typeof b.expiresAt !== 'number') {
        junk.push(field);
        continue;
      }
      bindings.set(field, deepFreeze(b));
    }
    if (junk.length > 0) this.logger.warn({ aor, fields: junk }, 'Redis store: unreadable bindings ignored (deleted at the next write)');
    return { bindings, junk };
  }

  // ---- writes ----

  /** Runs `task` after this node's earlier operations on the AOR. */
  private serial<T>(aor: string, task: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(aor);
    const run = prev === undefined ? task() : prev.then(task);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.queues.set(aor, tail);
    void tail.then(() => {
      if (this.queues.get(aor) === tail) this.queues.delete(aor);
    });
    return run;
  }

  /** Drops the AOR's expired bindings (a sweep's part for one AOR). */
  private purge(aor: string, now: number): Promise<Binding[]> {
    return this.serial(aor, async () => {
      const r = await this.transact(aor, now, true, (stored) => {
        const plan = newPlan(stored);
        const expired: Binding[] = [];
        for (const b of stored.bindings.values()) {
          if (b.expiresAt > now) continue;
          drop(plan, b);
          expired.push(b);
        }
        // An empty hash still listed in `exp` (it expired in Redis): clean the index.
        const write = expired.length > 0 || plan.junk.length > 0 || stored.bindings.size === 0;
        return { result: expired, plan: write ? plan : null };
      });
      return r.result;
    });
  }

  /**
   * WATCH + HGETALL, decide, MULTI/EXEC; again while another node's write
   * gets in between. `decide` may run several times; only its last decision
   * is applied.
   */
  private async transact<R>(aor: string, now: number, sweeping: boolean, decide: (stored: Stored) => Decision<R>): Promise<{ result: R; final: readonly Binding[] }> {
    if (this.closing) throw new StorageError('Redis store closed', 'STORAGE_UNAVAILABLE');
    const key = this.prefix + 'b:' + aor;
    const ticket: Ticket = { stale: false, gen: this.gen };
    this.writes.set(aor, ticket);
    const conn = await this.acquire();
    try {
      for (let attempt = 1; ; attempt++) {
        if (conn.redis.status !== 'ready' || this.stalled) throw this.unavailable();
        const epoch = conn.epoch;
        const read = (await this.batch(() => conn.redis.pipeline().watch(key).hgetall(key).exec()))!;
        const stored = this.parse(aor, read[1] as Record<string, string>);
        let d: Decision<R>;
        try {
          d = decide(stored);
        } catch (err) {
          this.unwatch(conn);
          throw err;
        }
        if (d.plan === null) {
          this.unwatch(conn);
          const final = [...stored.bindings.values()];
          if (!sweeping) this.remember(aor, final, ticket);
          return { result: d.result, final };
        }
        // A reconnection between WATCH and EXEC would leave the EXEC unwatched.
        if (conn.epoch !== epoch || conn.redis.status !== 'ready') throw this.unavailable();
        const m = conn.redis.multi();
        this.writeOps(m, aor, now, d.plan);
        const res = await this.batch(() => m.exec());
        if (res === null) {
          this.stats.conflicts++;
          if (attempt >= this.maxAttempts) {
            throw new StorageError(`Redis store: ${aor} still changed by other nodes after ${attempt} attempts`, 'STORAGE_CONFLICT');
          }
          // Jitter, so that two nodes in step do not keep colliding.
          await new Promise((r) => setTimeout(r, Math.random() * Math.min(attempt, 5)));
          continue;
        }
        const final = [...d.plan.final.values()];
        // Nothing in flight on this node may put the older view back.
        const l = this.loads.get(aor);
        if (l !== undefined) {
          l.stale = true;
          this.loads.delete(aor);
        }
        this.cache?.delete(aor);
        this.remember(aor, final, ticket);
        return { result: d.result, final };
      }
    } finally {
      if (this.writes.get(aor) === ticket) this.writes.delete(aor);
      this.release(conn);
    }
  }

  private unwatch(conn: TxConn): void {
    // Sent before anything the connection sends next; its answer does not matter.
    conn.redis.unwatch().catch(() => undefined);
  }

  /** The commands of a transaction (inside MULTI). */
  private writeOps(m: ReturnType<Redis['multi']>, aor: string, now: number, plan: Plan): void {
    const p = this.prefix;
    const hk = p + 'b:' + aor;
    const domain = domainOfAor(aor);
    const dk = p + 'd:' + domain;
    const retention = this.retiredTtlMs;
    const ttl = (at: number) => Math.max(1, Math.ceil(at - now + retention));

    const putKeys = new Set(plan.puts.map((x) => x.b.key));
    const gone = [...new Set([...plan.dropped.map((b) => b.key), ...plan.junk])].filter((k) => !putKeys.has(k));
    if (gone.length > 0) {
      m.hdel(hk, ...gone);
      m.zrem(dk, ...gone.map((k) => aor + ' ' + k));
    }

    // GRUUs: tokens carried by a put are (re)indexed; tokens of dropped
    // bindings, and those a replacing put no longer carries, are retired.
    const carried = new Map<string, Binding>();
    for (const { b } of plan.puts) for (const t of b.gruu?.temp ?? []) carried.set(t, b);
    const retire = new Set<string>();
    for (const b of plan.dropped) for (const t of b.gruu?.temp ?? []) retire.add(t);
    for (const old of plan.replaced.values()) for (const t of old.gruu?.temp ?? []) retire.add(t);
    const until = now + retention;
    for (const t of retire) if (!carried.has(t)) m.set(p + 't:' + t, JSON.stringify({ r: until }), 'PX', Math.max(1, retention));
    for (const [t, b] of carried) m.set(p + 't:' + t, JSON.stringify({ a: aor, k: b.key }), 'PX', ttl(b.expiresAt));
    const pubs = plan.dropped.filter((b) => b.gruu !== null);
    if (pubs.length > 0) {
      const rk = p + 'r:' + aor;
      m.hset(rk, ...pubs.flatMap((b) => [instanceKey(b.gruu!.pub), String(until)]));
      m.pexpire(rk, Math.max(1, retention));
    }

    if (plan.puts.length > 0) {
      m.hset(hk, ...plan.puts.flatMap((x) => [x.b.key, x.json]));
      m.zadd(dk, ...plan.puts.flatMap((x) => [x.b.expiresAt, aor + ' ' + x.b.key]));
      m.sadd(p + 'domains', domain);
    }
    if (plan.final.size === 0) {
      m.del(hk);
      m.zrem(p + 'exp', aor);
      m.zrem(p + 'aors', aor);
    } else {
      let min = Infinity;
      let max = -Infinity;
      for (const b of plan.final.values()) {
        if (b.expiresAt < min) min = b.expiresAt;
        if (b.expiresAt > max) max = b.expiresAt;
      }
      m.pexpire(hk, ttl(max));
      m.zadd(p + 'exp', min, aor);
      m.zadd(p + 'aors', max, aor);
    }
    m.publish(this.channel, this.nodeId + ' ' + aor);
  }

  private acquire(): Promise<TxConn> {
    const c = this.freeTx.pop();
    if (c !== undefined) return Promise.resolve(c);
    return new Promise((resolve) => this.txWaiters.push(resolve));
  }

  private release(c: TxConn): void {
    const w = this.txWaiters.shift();
    if (w !== undefined) w(c);
    else this.freeTx.push(c);
  }
}

// ---- plans ----

function newPlan(stored: Stored): Plan {
  return { final: new Map(stored.bindings), dropped: [], puts: [], replaced: new Map(), junk: stored.junk };
}

function drop(plan: Plan, b: Binding): void {
  plan.final.delete(b.key);
  plan.dropped.push(b);
}

/** Applies `remove` to the live bindings left in the plan; returns those removed. */
function removeKeys(plan: Plan, changes: ChangeSet): Binding[] {
  const removed: Binding[] = [];
  for (const key of changes.remove ?? []) {
    const b = plan.final.get(key);
    if (b === undefined) continue;
    drop(plan, b);
    removed.push(b);
  }
  return removed;
}

function putAll(plan: Plan, aor: string, changes: ChangeSet): void {
  for (const b of changes.put ?? []) {
    if (b.aor !== aor) throw new Error(`binding for ${b.aor} put under ${aor}`);
    const json = JSON.stringify(b);
    // The store's copy, as every node will read it back.
    const copy = deepFreeze(JSON.parse(json) as Binding);
    const old = plan.final.get(b.key);
    if (old !== undefined) plan.replaced.set(b.key, old);
    plan.final.set(b.key, copy);
    const i = plan.puts.findIndex((x) => x.b.key === b.key);
    if (i !== -1) plan.puts.splice(i, 1);
    plan.puts.push({ b: copy, json });
  }
}

// ---- helpers ----

function live(bs: readonly Binding[], now: number): Binding[] {
  const out: Binding[] = [];
  for (const b of bs) if (b.expiresAt > now) out.push(b);
  return out;
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return undefined;
  }
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}

async function mapLimit<T, U>(items: readonly T[], limit: number, f: (x: T) => Promise<U>): Promise<U[]> {
  const out: U[] = new Array<U>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}
