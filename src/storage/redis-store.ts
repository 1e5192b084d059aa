// The location store on Redis, shared by several Portier nodes (issue 8).
//
// Data layout (P = the configured prefix, e.g. `portier:`):
//
//   P b:AOR        hash: binding key → JSON of the Binding, plus the field
//                  `~v`: the AOR's version (see Writes). Every binding of
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
//   P c:AOR        string, PEXPIRE 100 ms: a write of the AOR lost to a
//                  conflict lately (see Writes: fairness).
//   P changes      pub/sub channel: `NODEID VERSION AOR` after every write.
//
// The index sets (exp, aors, d:*, domains) carry no TTL: they are shared by
// every AOR, so no single write knows how long they must live. Their dead
// members cost nothing in answers (every count is "> now") and sweep() trims
// them. Scores and the UNTIL values are on the callers' timeline (`now`
// arguments); Redis TTLs are relative (PEXPIRE, never PEXPIREAT): ms from
// `now`, so the Portier hosts' and the Redis host's clocks need not agree.
//
// Writes: optimistic compare-and-set, one round trip. Every write gives the
// AOR a new version, unique across nodes and time (this node's random tag
// and a counter; an AOR with no hash has the version ''), so an unchanged
// version means unchanged bindings. An update takes the bindings and their
// version from the in-process cache (or one HGETALL, which returns `~v`
// with them), runs the caller's fn on the Node side, and sends one script
// (EVALSHA) that checks the version and, when it is unchanged, applies the
// whole write atomically: hash fields, `~v`, PEXPIRE, token keys, index
// sets, PUBLISH. When another node wrote the AOR meanwhile the script
// writes nothing and answers the current hash instead, and fn runs again
// on that (bounded), with no read of its own. An update that changes
// nothing is confirmed by one HGETALL (same version: done) unless its
// bindings were read from Redis for it. Updates of one AOR within a node
// run one after the other, so only other nodes cause conflicts. Every
// command goes down one connection, pipelined: no WATCH, so no connection
// held per transaction.
//
// Fairness: the node that wins a conflict has its answer first, so it
// would send its next write of the AOR first too, and a busy node could
// starve another for ever. So a write that loses leaves the `c:AOR` mark,
// the next write that succeeds takes it and is told, and that node holds
// its next operation on the AOR until it hears another node's write of it,
// 20 ms at most (or four times a write's usual answer time, if longer).
//
// A write carries a deadline on the Redis host's clock (the offset to it is
// learnt from every write's answer, which carries Redis TIME): the script
// writes nothing once it has passed, and the deadline falls before this
// node's command timeout. A write that timed out here (a hung or partitioned
// Redis), and was refused to the caller, cannot be applied later when the
// server wakes up and reads it from its socket.
//
// Reads: HGETALL (one round trip), or none from the in-process LRU cache,
// kept coherent by the `changes` channel: a node drops its entry for an AOR
// when another node announces a write to it (unless the entry already has
// the version announced), refuses to fill the cache with a read or write
// that was in flight when such an announcement arrived, and drops the whole
// cache when its subscription comes back after a break (it may have missed
// announcements meanwhile). A stale cache entry costs a conflict, never a
// lost update: the version check decides.
//
// Faults: the connections fail fast (no offline queue, no resend of
// unanswered commands, a command timeout for a server that accepts but does
// not answer) and reconnect by themselves with a capped backoff. While Redis
// cannot be reached, `up` is false, reads answer from the cache (stale is
// better than nothing) and writes reject with code 'STORAGE_UNAVAILABLE'.
// One warning when an outage starts, one when it ends.
//
// Nodes of this version and of the earlier WATCH/MULTI one must not share a
// prefix: the earlier one does not bump `~v`.

import { hideUrlPassword } from '../config/hosts.js';
import { randomBytes, randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Redis, ReplyError, type RedisOptions } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { domainOfAor, instanceKey } from '../registrar/aor.js';
import { setParam } from '../registrar/plan.js';
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
  /** Read-decide-write attempts of one update before it rejects with code 'STORAGE_CONFLICT'. Default 20. */
  maxUpdateAttempts?: number;
}

/** Counters, for metrics and tests. */
export interface RedisStoreStats {
  /** Requests to Redis (a command, a pipeline or a script counts one; pipelined with others, they share a network round trip). */
  roundTrips: number;
  /** Reads (get, findByGruu) answered from the cache while it was coherent. */
  cacheHits: number;
  /** Reads answered from the cache while Redis could not be reached. */
  staleHits: number;
  cacheMisses: number;
  /** Writes that found the AOR changed by another node since it was read (each is retried). */
  conflicts: number;
  /** Writes that reached Redis after their deadline (nothing written; retried once). */
  lateWrites: number;
  /** Times this node paused its next write of an AOR to let another node's retry through. */
  yields: number;
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
/** AORs purged at once by a sweep. */
const SWEEP_CONCURRENCY = 16;
/** The hash field that holds the AOR's version (binding keys start with `i:` or `u:`). */
const VERSION_FIELD = '~v';
/** How long a write that lost to a conflict asks the others to let it through (the `c:AOR` mark). */
const CONTENTION_MARK_MS = 100;
/** Longest pause (unless writes take longer) of a node that has let another node's retry through. */
const YIELD_MIN_MS = 20;

// Trims a domain's binding index of the dead, and forgets the domain when
// nothing is left (atomic, so it cannot forget a domain a concurrent write
// just added to).
const TRIM_DOMAIN = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return 0`;

// One write of one AOR, applied only if the AOR's version is still the one
// the decision was made on, and only before the deadline.
//
// KEYS: 1 b:AOR, 2 d:DOMAIN, 3 exp, 4 aors, 5 domains, 6 r:AOR, 7 c:AOR,
//   8.. t:TOKEN
// ARGV: 1 expected version, 2 deadline (ms, Redis clock), 3 new version,
//   4 AOR, 5 domain, 6 channel, 7 message, 8 hash PEXPIRE (0: the AOR is
//   left empty, delete it), 9 earliest expiresAt, 10 latest expiresAt,
//   11 retirement window (ms), 12 retired until;
//   then: n, n binding keys removed; n, n × (key, JSON, expiresAt) put;
//   n, n pub-gruu instance keys retired; per token key: value, PEXPIRE.
// Answers 2 × the Redis time (ms) when written, + 1 when another node's
// write lost to a conflict since (the `c:AOR` mark: this node should let it
// through); minus 2 × the Redis time when too late; the AOR's current hash
// (HGETALL) when its version has changed, leaving the mark.
//
// Nothing is written before every check has passed, and nothing after can
// fail on data this store wrote: a script stopped half-way is not undone.
const WRITE = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[2]) then return -2 * now end
local hk = KEYS[1]
if (redis.call('HGET', hk, '${VERSION_FIELD}') or '') ~= ARGV[1] then
  redis.call('SET', KEYS[7], '1', 'PX', ${CONTENTION_MARK_MS})
  return redis.call('HGETALL', hk)
end
local function chunked(cmd, key, list, n)
  local i = 1
  while i <= n do
    local j = math.min(n, i + 999)
    redis.call(cmd, key, unpack(list, i, j))
    i = j + 1
  end
end
local aor, dk = ARGV[4], KEYS[2]
local i = 13
local n = tonumber(ARGV[i])
i = i + 1
if n > 0 then
  local fields, members = {}, {}
  for j = 1, n do
    fields[j] = ARGV[i]
    members[j] = aor .. ' ' .. ARGV[i]
    i = i + 1
  end
  chunked('HDEL', hk, fields, n)
  chunked('ZREM', dk, members, n)
end
local puts = tonumber(ARGV[i])
i = i + 1
local fields, scores = {}, {}
for j = 1, puts do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  scores[#scores + 1] = ARGV[i + 2]
  scores[#scores + 1] = aor .. ' ' .. ARGV[i]
  i = i + 3
end
n = tonumber(ARGV[i])
i = i + 1
if n > 0 then
  local retired = {}
  for j = 1, n do
    retired[#retired + 1] = ARGV[i]
    retired[#retired + 1] = ARGV[12]
    i = i + 1
  end
  chunked('HSET', KEYS[6], retired, #retired)
  redis.call('PEXPIRE', KEYS[6], ARGV[11])
end
for k = 8, #KEYS do
  redis.call('SET', KEYS[k], ARGV[i], 'PX', ARGV[i + 1])
  i = i + 2
end
if puts > 0 then
  chunked('ZADD', dk, scores, #scores)
  redis.call('SADD', KEYS[5], ARGV[5])
end
if ARGV[8] == '0' then
  redis.call('DEL', hk)
  redis.call('ZREM', KEYS[3], aor)
  redis.call('ZREM', KEYS[4], aor)
else
  fields[#fields + 1] = '${VERSION_FIELD}'
  fields[#fields + 1] = ARGV[3]
  chunked('HSET', hk, fields, #fields)
  redis.call('PEXPIRE', hk, ARGV[8])
  redis.call('ZADD', KEYS[3], ARGV[9], aor)
  redis.call('ZADD', KEYS[4], ARGV[10], aor)
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 2 * now + redis.call('DEL', KEYS[7])`;

/** The write script as a command of the connection (ioredis defineCommand: EVALSHA, EVAL when not loaded). */
interface WithWrite {
  portierWrite(numKeys: number, ...args: (string | number)[]): Promise<number | string[]>;
}

/**
 * A read or write in flight whose answer may fill the cache, unless an
 * announcement made it stale: any announcement but one of the version it
 * is based on (`heard` collects them) makes it so.
 */
interface Ticket {
  stale: boolean;
  readonly gen: number;
  /** Versions announced by other nodes for the AOR while it was in flight. */
  heard: string[] | null;
}

interface Load extends Ticket {
  readonly promise: Promise<Snapshot>;
}

/** An AOR as stored: its bindings (dead ones too) and their version. */
interface Snapshot {
  readonly bindings: readonly Binding[];
  /** '' for an AOR with no hash; null in the cache once a write's outcome is unknown (read again before writing). */
  readonly version: string | null;
  /** Hash fields that did not parse: deleted at the next write. */
  readonly junk: readonly string[];
}

/** What a write changes, decided from a snapshot. */
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
  junk: readonly string[];
}

interface Decision<R> {
  result: R;
  /** null: nothing to write. */
  plan: Plan | null;
}

const EMPTY: readonly Binding[] = Object.freeze([]);
const NO_JUNK: readonly string[] = Object.freeze([]);

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
    lateWrites: 0,
    yields: 0,
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
  /** How long after it is sent a write may still be applied (Redis clock): well within the command timeout. */
  private readonly writeBudgetMs: number;

  private readonly cmd: Redis;
  private readonly sub: Redis;
  private readonly writer: WithWrite;

  /** Versions this instance gives: a random tag (72 bits) and a counter. */
  private readonly versionTag = randomBytes(9).toString('base64url') + '.';
  private versionCount = 0;
  /** Redis clock minus performance.now(), as last seen (never more than the true offset: the answer took time to come). */
  private redisOffset = 0;

  private readonly cache: LRUCache<string, Snapshot> | null;
  /** temp-gruu token → AOR: where to look in the cache (checked against the cached bindings, so never wrong, only missing). */
  private readonly tokenHints: LRUCache<string, string> | null;
  /** Bumped when the whole cache is dropped: reads started before do not fill it. */
  private gen = 0;
  private readonly loads = new Map<string, Load>();
  private readonly writes = new Map<string, Ticket>();
  /** Per AOR with an operation running on this node: the ones waiting behind it, in order. */
  private readonly queues = new Map<string, (() => void)[]>();
  /** AORs whose next operation here waits a little: another node's write lost to this node's last one. */
  private readonly yielding = new Set<string>();
  /** Yielding AORs: what lets their next operation go (when another node's write is heard). */
  private readonly resumes = new Map<string, () => void>();
  /** Moving average of a write's time to answer (ms). */
  private writeLatency = 1;

  private state: 'up' | 'down' = 'up';
  /** A command timed out: the server accepts but does not answer. Cleared when a probe is answered. */
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
    this.url = hideUrlPassword(opts.url);
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 500;
    this.writeBudgetMs = Math.max(1, Math.floor(this.commandTimeoutMs * 0.8));
    const maxDelay = opts.maxReconnectDelayMs ?? 2000;
    const cacheSize = opts.cacheSize ?? 20_000;
    this.cache = cacheSize > 0 ? new LRUCache({ max: cacheSize }) : null;
    this.tokenHints = cacheSize > 0 ? new LRUCache({ max: cacheSize * 2 }) : null;

    const base: RedisOptions = {
      lazyConnect: true,
      // Fail fast: a call while Redis is away rejects at once rather than
      // waiting in a queue; a command unanswered at a close is rejected, not
      // sent again to the next connection.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: false, // subscribed again by start()'s 'ready' listener, which knows when it has taken effect
      commandTimeout: this.commandTimeoutMs,
      connectTimeout: Math.min(this.connectTimeoutMs, 2000),
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 16), maxDelay),
      enableReadyCheck: true,
    };
    const make = (name: string, extra: RedisOptions = {}): Redis => {
      const r = new Redis(opts.url, { ...base, ...extra, connectionName: 'portier-' + name });
      r.on('error', (err: unknown) => {
        this.lastError = err;
      });
      r.on('close', () => this.markDown(`${name} connection closed`));
      return r;
    };
    // Commands issued in one turn of the event loop leave in one write.
    this.cmd = make('cmd', { enableAutoPipelining: true });
    this.cmd.defineCommand('portierWrite', { lua: WRITE });
    this.writer = this.cmd as unknown as WithWrite;
    this.sub = make('sub');
    this.sub.on('close', () => {
      this.subscribed = false;
    });
    this.sub.on('message', (channel: string, message: string) => this.heard(channel, message));
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
      const r = await this.transact(aor, now, false, (snap) => {
        expired = [];
        const current: Binding[] = [];
        for (const b of snap.bindings) (b.expiresAt > now ? current : expired).push(b);
        this.stats.fnRuns++;
        const decision = fn(current);
        const changes = decision.changes;
        const plan = newPlan(snap);
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
      const r = await this.transact(aor, now, false, (snap) => {
        const b = byKey(snap.bindings, key);
        if (b === undefined) return { result: null, plan: null };
        const plan = newPlan(snap);
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
      const purged = await mapLimit(aors, SWEEP_CONCURRENCY, (aor) => this.purge(aor, now));
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

  // ---- bans (security.auth-failures), shared by every node on this Redis ----

  /** Bans running at `now`: `PREFIX ban:ADDRESS` = "until level", each expiring with its ban. */
  async loadBans(now: number): Promise<Array<{ address: string; until: number; level: number }>> {
    const out: Array<{ address: string; until: number; level: number }> = [];
    const match = this.prefix + 'ban:*';
    let cursor = '0';
    do {
      const [next, keys] = await this.call(() => this.cmd.scan(cursor, 'MATCH', match, 'COUNT', 1000));
      cursor = next;
      if (keys.length === 0) continue;
      const values = await this.call(() => this.cmd.mget(...keys));
      keys.forEach((k, i) => {
        const v = values[i];
        if (v === null) return;
        const [until, level] = v.split(' ').map(Number);
        if (until > now && Number.isInteger(level)) out.push({ address: k.slice(this.prefix.length + 4), until, level });
      });
    } while (cursor !== '0');
    return out;
  }

  /** Records a ban as it starts; Redis forgets it when it ends. */
  async saveBan(ban: { address: string; until: number; level: number }, now: number): Promise<void> {
    const ttl = Math.max(1, Math.ceil(ban.until - now));
    await this.call(() => this.cmd.set(this.prefix + 'ban:' + ban.address, `${ban.until} ${ban.level}`, 'PX', ttl));
  }

  /** 32 random bytes shared by every node on this Redis (the first node makes them): nonces and Record-Route tokens of one node are valid on all. */
  async secret(): Promise<Buffer> {
    const key = this.prefix + 'secret';
    await this.call(() => this.cmd.set(key, randomBytes(32).toString('hex'), 'NX'));
    const v = await this.call(() => this.cmd.get(key));
    if (v === null) throw new StorageError('the shared secret vanished from Redis', 'STORAGE_UNAVAILABLE');
    return Buffer.from(v, 'hex');
  }

  /** Quits both connections (commands, subscriber). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.probeTimer !== null) clearInterval(this.probeTimer);
    this.probeTimer = null;
    await Promise.all(
      [this.cmd, this.sub].map(async (r) => {
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
    const all = [this.cmd, this.sub];
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.connectTimeoutMs} ms`)), this.connectTimeoutMs);
      });
      await Promise.race([Promise.all(all.map((r) => r.connect())), timeout]);
      await Promise.race([Promise.all([this.sub.subscribe(this.channel), this.learnTime()]), timeout]);
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

  /** Asks Redis for its clock (TIME), for the deadlines of writes. */
  private async learnTime(): Promise<void> {
    const [s, us] = await this.cmd.time();
    this.sawRedisTime(Number(s) * 1000 + Math.floor(Number(us) / 1000));
  }

  private sawRedisTime(ms: number): void {
    this.redisOffset = ms - performance.now();
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

  /** While down: once both connections are back (and subscribed), a TIME decides (and sets the clock offset). */
  private async probe(): Promise<void> {
    if (this.closing || this.probing || this.state === 'up') return;
    if (!this.subscribed || this.cmd.status !== 'ready') return;
    this.probing = true;
    try {
      await this.learnTime();
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

  /** Commands can be sent with hope of an answer. */
  private canRead(): boolean {
    return this.cmd.status === 'ready' && !this.stalled && !this.closing;
  }

  private assertReadable(): void {
    if (!this.canRead()) throw this.unavailable();
  }

  /** The cache reflects Redis (every announcement since it was filled has been heard). */
  private coherent(): boolean {
    return this.cache !== null && this.state === 'up' && this.subscribed;
  }

  private unavailable(cause?: unknown): StorageError {
    if (this.closing) return new StorageError('Redis store closed', 'STORAGE_UNAVAILABLE');
    const c = cause ?? this.lastError;
    return new StorageError(`Redis store unavailable (${this.url})${c ? ': ' + describe(c) : ''}`, 'STORAGE_UNAVAILABLE', { cause: c ?? undefined });
  }

  /** Runs a Redis call: counts it, turns connection failures into STORAGE_UNAVAILABLE. */
  private async call<T>(f: () => Promise<T>): Promise<T> {
    this.stats.roundTrips++;
    try {
      return await f();
    } catch (err) {
      throw this.failure(err);
    }
  }

  /**
   * Runs a pipeline (one round trip). A command's error counts as the
   * call's (ioredis reports a timeout or a closed connection per command).
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
    const sp2 = message.indexOf(' ', sp + 1);
    if (sp2 === -1) return;
    const version = message.slice(sp + 1, sp2);
    const aor = message.slice(sp2 + 1);
    this.stats.changesHeard++;
    this.invalidate(aor, version);
    try {
      this.onChange?.(aor);
    } catch {
      // a listener's problem
    }
  }

  /** Another node wrote the AOR (its new version given): forget what is older, and let nothing in flight put an older view back. */
  private invalidate(aor: string, version: string): void {
    if (this.cache?.peek(aor)?.version !== version) this.cache?.delete(aor);
    const l = this.loads.get(aor);
    if (l !== undefined) (l.heard ??= []).push(version);
    const w = this.writes.get(aor);
    if (w !== undefined) (w.heard ??= []).push(version);
    this.resumes.get(aor)?.();
  }

  private dropCache(): void {
    this.gen++;
    this.cache?.clear();
    this.tokenHints?.clear();
    for (const l of this.loads.values()) l.stale = true;
    this.loads.clear();
    for (const w of this.writes.values()) w.stale = true;
  }

  /** Caches `snap` unless something announced meanwhile may be newer (see Ticket); whether it did. */
  private remember(aor: string, snap: Snapshot, t: Ticket): boolean {
    if (this.cache === null || t.stale || t.gen !== this.gen || this.closing) return false;
    if (t.heard !== null && t.heard.some((v) => v !== snap.version)) return false;
    this.cache.set(aor, snap);
    for (const b of snap.bindings) if (b.gruu !== null) for (const tok of b.gruu.temp) this.tokenHints!.set(tok, aor);
    return true;
  }

  // ---- reads ----

  /** Every stored binding of the AOR (dead ones too), from the cache or one HGETALL. */
  private async load(aor: string): Promise<readonly Binding[]> {
    if (this.coherent()) {
      const hit = this.cache!.get(aor);
      if (hit !== undefined && hit.version !== null) {
        this.stats.cacheHits++;
        return hit.bindings;
      }
    }
    if (!this.canRead()) return this.stale(aor);
    this.stats.cacheMisses++;
    let l = this.loads.get(aor);
    if (l === undefined) {
      // A read that starts while the cache is not coherent must not fill it.
      const ticket: Ticket = { stale: !this.coherent(), gen: this.gen, heard: null };
      const promise = this.fetch(aor).then(
        (snap) => {
          if (this.loads.get(aor) === load) this.loads.delete(aor);
          this.remember(aor, snap, ticket);
          return snap;
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
      return (await l.promise).bindings;
    } catch (err) {
      if (err instanceof StorageError) return this.stale(aor, err);
      throw err;
    }
  }

  /** The AOR as stored now: one HGETALL. */
  private async fetch(aor: string): Promise<Snapshot> {
    const h = await this.call(() => this.cmd.hgetall(this.prefix + 'b:' + aor));
    return this.parse(aor, h);
  }

  /** Redis cannot answer: the cached bindings, however old, or STORAGE_UNAVAILABLE. */
  private stale(aor: string, err?: unknown): readonly Binding[] {
    const hit = this.cache?.get(aor);
    if (hit === undefined) throw err ?? this.unavailable();
    this.stats.staleHits++;
    return hit.bindings;
  }

  private async findTemp(token: string, now: number): Promise<GruuResolution> {
    // A cached binding that carries the token answers it (the cache is coherent, so it still does).
    const fromCache = (): GruuResolution | undefined => {
      const aor = this.tokenHints?.get(token);
      if (aor === undefined) return undefined;
      const b = this.cache!.get(aor)?.bindings.find((x) => x.gruu?.temp.includes(token) === true);
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
    const b = byKey(await this.load(at.a), at.k);
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

  /** A hash as HGETALL answers it (an object, or the flat array a script gets). */
  private parse(aor: string, h: Record<string, string> | readonly string[]): Snapshot {
    const bindings: Binding[] = [];
    let junk: string[] | null = null;
    let version = '';
    const one = (field: string, json: string): void => {
      if (field === VERSION_FIELD) {
        version = json;
        return;
      }
      const b = parseJson(json) as Binding | undefined;
      if (b === undefined || typeof b !== 'object' || b === null || b.key !== field || b.aor !== aor || typeof b.expiresAt !== 'number') {
        (junk ??= []).push(field);
        return;
      }
      bindings.push(deepFreeze(b));
    };
    if (Array.isArray(h)) {
      for (let i = 0; i + 1 < h.length; i += 2) one(h[i], h[i + 1]);
    } else {
      for (const field in h) one(field, (h as Record<string, string>)[field]);
    }
    if (junk !== null) this.logger.warn({ aor, fields: junk }, 'Redis store: unreadable bindings ignored (deleted at the next write)');
    return { bindings: bindings.length === 0 ? EMPTY : bindings, version, junk: junk ?? NO_JUNK };
  }

  // ---- writes ----

  /** Runs `task` after this node's earlier operations on the AOR. */
  private serial<T>(aor: string, task: () => Promise<T>): Promise<T> {
    const waiting = this.queues.get(aor);
    if (waiting === undefined) {
      this.queues.set(aor, []);
      return this.runSerial(aor, task);
    }
    return new Promise<T>((resolve, reject) => {
      waiting.push(() => void this.runSerial(aor, task).then(resolve, reject));
    });
  }

  private async runSerial<T>(aor: string, task: () => Promise<T>): Promise<T> {
    try {
      return await task();
    } finally {
      const waiting = this.queues.get(aor)!;
      const next = waiting.shift();
      if (next === undefined) this.queues.delete(aor);
      else if (this.yielding.delete(aor)) {
        // Until another node's write of the AOR is heard, or a little while.
        this.stats.yields++;
        let timer: NodeJS.Timeout | undefined;
        const go = () => {
          clearTimeout(timer);
          if (this.resumes.get(aor) === go) this.resumes.delete(aor);
          next();
        };
        timer = setTimeout(go, Math.max(YIELD_MIN_MS, 4 * this.writeLatency));
        this.resumes.set(aor, go);
      } else next();
      this.yielding.delete(aor);
    }
  }

  /** Drops the AOR's expired bindings (a sweep's part for one AOR). */
  private purge(aor: string, now: number): Promise<Binding[]> {
    return this.serial(aor, async () => {
      const r = await this.transact(aor, now, true, (snap) => {
        const plan = newPlan(snap);
        const expired: Binding[] = [];
        for (const b of snap.bindings) {
          if (b.expiresAt > now) continue;
          drop(plan, b);
          expired.push(b);
        }
        // An empty hash still listed in `exp` (it expired in Redis): clean the index.
        const write = expired.length > 0 || plan.junk.length > 0 || snap.bindings.length === 0;
        return { result: expired, plan: write ? plan : null };
      });
      return r.result;
    });
  }

  /**
   * Read (cache or HGETALL), decide, write if the version is unchanged;
   * decide again on what the write found instead. `decide` may run several
   * times; only its last decision is applied.
   */
  private async transact<R>(aor: string, now: number, sweeping: boolean, decide: (snap: Snapshot) => Decision<R>): Promise<{ result: R; final: readonly Binding[] }> {
    this.assertReadable();
    const ticket: Ticket = { stale: false, gen: this.gen, heard: null };
    this.writes.set(aor, ticket);
    let sent = false;
    try {
      let snap: Snapshot | undefined;
      // Read from the cache: a no-op decision is confirmed against Redis.
      let unconfirmed = false;
      if (this.coherent()) {
        const hit = this.cache!.get(aor);
        if (hit !== undefined && hit.version !== null) {
          snap = hit;
          unconfirmed = true;
        }
      }
      snap ??= await this.fetch(aor);
      let late = 0;
      for (let attempt = 1; ; ) {
        const d = decide(snap);
        if (d.plan === null) {
          if (unconfirmed) {
            unconfirmed = false;
            const fresh = await this.fetch(aor);
            if (fresh.version !== snap.version) {
              snap = fresh;
              continue;
            }
          }
          if (!sweeping) this.remember(aor, snap, ticket);
          return { result: d.result, final: snap.bindings };
        }
        unconfirmed = false;
        this.assertReadable();
        const version = this.versionTag + (++this.versionCount).toString(36);
        sent = true;
        const t0 = performance.now();
        const reply = await this.write(aor, now, snap.version!, version, d.plan);
        this.writeLatency += (performance.now() - t0 - this.writeLatency) / 8;
        if (typeof reply === 'number' && reply >= 0) {
          this.sawRedisTime(Math.floor(reply / 2));
          // Another node lost to this one meanwhile: let its retry through before the next write here.
          if (reply % 2 === 1) this.yielding.add(aor);
          const final: Binding[] = [...d.plan.final.values()];
          // Nothing in flight on this node may put the older view back.
          const l = this.loads.get(aor);
          if (l !== undefined) {
            l.stale = true;
            this.loads.delete(aor);
          }
          // Announcements of the version written over came before: harmless.
          const base = snap.version;
          if (ticket.heard !== null) ticket.heard = ticket.heard.filter((v) => v !== base);
          if (ticket.heard !== null && ticket.heard.length === 0) ticket.heard = null;
          const written: Snapshot = { bindings: final.length === 0 ? EMPTY : final, version: final.length === 0 ? '' : version, junk: NO_JUNK };
          if (!this.remember(aor, written, ticket)) this.cache?.delete(aor);
          return { result: d.result, final };
        }
        if (typeof reply === 'number') {
          // Too late: nothing written. The clock offset may have moved: once more, with the new one.
          this.sawRedisTime(-reply / 2);
          this.stats.lateWrites++;
          if (++late > 1) throw this.unavailable(new Error(`Redis ran a write more than ${this.writeBudgetMs} ms after it was sent`));
          continue;
        }
        this.stats.conflicts++;
        if (attempt >= this.maxAttempts) {
          throw new StorageError(`Redis store: ${aor} still changed by other nodes after ${attempt} attempts`, 'STORAGE_CONFLICT');
        }
        attempt++;
        // The answer is the AOR as it is now: decide again at once (the
        // node that won waits for this retry: see the c:AOR mark).
        snap = this.parse(aor, reply);
      }
    } catch (err) {
      // A write whose outcome is unknown (no answer, or an error answer): the cached version cannot be trusted.
      if (sent && !(err instanceof StorageError && err.code === 'STORAGE_CONFLICT')) this.unsure(aor);
      throw err;
    } finally {
      if (this.writes.get(aor) === ticket) this.writes.delete(aor);
    }
  }

  /** The cached entry may be wrong: read again before relying on it (its bindings still serve stale reads during an outage). */
  private unsure(aor: string): void {
    const hit = this.cache?.peek(aor);
    if (hit !== undefined) this.cache!.set(aor, { bindings: hit.bindings, version: null, junk: hit.junk });
    const l = this.loads.get(aor);
    if (l !== undefined) {
      l.stale = true;
      this.loads.delete(aor);
    }
  }

  /** Sends one write script (see WRITE): a number (2 × the Redis time, + 1 when contended; negative: too late) or the current hash on a conflict. */
  private write(aor: string, now: number, expected: string, version: string, plan: Plan): Promise<number | string[]> {
    const p = this.prefix;
    const domain = domainOfAor(aor);
    const retention = this.retiredTtlMs;
    const ttl = (at: number) => Math.max(1, Math.ceil(at - now + retention));
    const until = now + retention;

    let min = Infinity;
    let max = -Infinity;
    for (const b of plan.final.values()) {
      if (b.expiresAt < min) min = b.expiresAt;
      if (b.expiresAt > max) max = b.expiresAt;
    }
    const empty = plan.final.size === 0;
    const keys: string[] = [p + 'b:' + aor, p + 'd:' + domain, p + 'exp', p + 'aors', p + 'domains', p + 'r:' + aor, p + 'c:' + aor];
    const args: (string | number)[] = [
      expected,
      Math.floor(performance.now() + this.redisOffset + this.writeBudgetMs),
      version,
      aor,
      domain,
      this.channel,
      this.nodeId + ' ' + version + ' ' + aor,
      empty ? 0 : ttl(max),
      empty ? 0 : min,
      empty ? 0 : max,
      Math.max(1, retention),
      until,
    ];

    // Fields leaving the hash (not written again by a put).
    let gone: string[] = [];
    for (const b of plan.dropped) if (!plan.final.has(b.key)) gone.push(b.key);
    for (const k of plan.junk) if (!plan.final.has(k)) gone.push(k);
    if (gone.length > 1) gone = [...new Set(gone)];
    args.push(gone.length, ...gone);

    args.push(plan.puts.length);
    for (const { b, json } of plan.puts) args.push(b.key, json, b.expiresAt);

    let pubs = 0;
    const pubAt = args.length;
    args.push(0);
    for (const b of plan.dropped) {
      if (b.gruu === null) continue;
      args.push(instanceKey(b.gruu.pub));
      pubs++;
    }
    args[pubAt] = pubs;

    // GRUUs: tokens carried by a put are (re)indexed; tokens of dropped
    // bindings, and those a replacing put no longer carries, are retired.
    let carried: Map<string, Binding> | null = null;
    for (const { b } of plan.puts) if (b.gruu !== null) for (const t of b.gruu.temp) (carried ??= new Map()).set(t, b);
    let retire: Set<string> | null = null;
    for (const b of plan.dropped) if (b.gruu !== null) for (const t of b.gruu.temp) (retire ??= new Set()).add(t);
    for (const old of plan.replaced.values()) if (old.gruu !== null) for (const t of old.gruu.temp) (retire ??= new Set()).add(t);
    if (retire !== null) {
      const gravestone = JSON.stringify({ r: until });
      for (const t of retire) {
        if (carried?.has(t) === true) continue;
        keys.push(p + 't:' + t);
        args.push(gravestone, Math.max(1, retention));
      }
    }
    if (carried !== null) {
      for (const [t, b] of carried) {
        keys.push(p + 't:' + t);
        args.push(JSON.stringify({ a: aor, k: b.key }), ttl(b.expiresAt));
      }
    }
    return this.call(() => this.writer.portierWrite(keys.length, ...keys, ...args));
  }
}

// ---- plans ----

function newPlan(snap: Snapshot): Plan {
  const final = new Map<string, Binding>();
  for (const b of snap.bindings) final.set(b.key, b);
  return { final, dropped: [], puts: [], replaced: new Map(), junk: snap.junk };
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
    if (b.key === VERSION_FIELD) throw new Error(`binding key ${VERSION_FIELD} is reserved`);
    const json = JSON.stringify(b);
    // The store's copy, as every node will read it back (what JSON.parse(json) gives, for less).
    const copy = frozenJsonCopy(b);
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

function byKey(bs: readonly Binding[], key: string): Binding | undefined {
  for (const b of bs) if (b.key === key) return b;
  return undefined;
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * A frozen deep copy of plain data, equal to JSON.parse(JSON.stringify(v))
 * (undefined, function and symbol members left out of objects and null in
 * arrays, non-finite numbers null, -0 as 0), at a third of the cost.
 */
function frozenJsonCopy<T>(v: T): T {
  if (typeof v !== 'object' || v === null) return (typeof v === 'number' ? (Number.isFinite(v) ? v + 0 : null) : v) as T;
  if (Array.isArray(v)) {
    const out: unknown[] = new Array<unknown>(v.length);
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i];
      out[i] = x === undefined || typeof x === 'function' || typeof x === 'symbol' ? null : frozenJsonCopy(x);
    }
    return Object.freeze(out) as T;
  }
  const out: Record<string, unknown> = {};
  for (const k in v) {
    if (!Object.prototype.hasOwnProperty.call(v, k)) continue;
    const x: unknown = v[k];
    if (x === undefined || typeof x === 'function' || typeof x === 'symbol') continue;
    setParam(out, k, frozenJsonCopy(x));
  }
  return Object.freeze(out) as T;
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

