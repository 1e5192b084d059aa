/**
 * Per-source protection (issues 5 and 13): a token-bucket rate limit per
 * source address, bans after repeated authentication failures, an exempt
 * list, and scanner recognition by User-Agent. In-process state only; the
 * caller decides what a refusal looks like on the wire.
 *
 * Design choices:
 * - Failure budget is a FIXED window anchored at the first failure: the first
 *   failure opens a window of `window` seconds, and the `max`-th failure
 *   inside it starts a ban; a failure after the window has run out opens a new
 *   window with a count of one. Two numbers per source, no per-failure
 *   storage (a sliding log would need `max` timestamps per source, and `max`
 *   may be configured in the thousands). The price: a burst straddling two
 *   windows can fit up to 2·(max−1) failures in `window` seconds without a
 *   ban; the sustained guessing rate stays at max−1 per window.
 * - A successful authentication does not reset the failure count: an attacker
 *   holding one valid account (or replaying one device's credentials) must not
 *   be able to launder guesses at other accounts by interleaving good logins.
 *   So there is no "authSucceeded" here on purpose.
 * - Ban n of an address lasts min(ban·2^(n−1), maxBan). The level is remembered
 *   until maxBan seconds after the ban ends; a ban started later than that is
 *   level 1 again.
 * - Memory is bounded twice: per-source buckets and failure windows in one
 *   LRU (`maxSources`), bans in another (`maxBans`), so a flood of spoofed
 *   addresses that churns the first cannot lift bans held in the second. A
 *   source entry also carries a copy of its ban end so that `admit` needs a
 *   single lookup; a ban only disappears when both copies are gone.
 * - IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 host for exemption and
 *   for bans (bans are keyed by `a.b.c.d`); buckets and failure windows are
 *   keyed by the address text as the transport reports it (no per-request
 *   normalisation). Portier's listeners are single-family (ipv6Only), so the
 *   two spellings of one host do not normally both occur.
 * - Time comes from the injected clock only; no timers.
 */
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import { AddressSet } from './cidr.js';

export interface GuardSettings {
  /** Requests per second per source address, token bucket of `burst`; perSource 0 = off. */
  rate: { perSource: number; burst: number };
  /** `max` failures within `window` seconds start a ban of `ban` seconds, doubling per repeat up to `maxBan`; max 0 = off. */
  authFailures: { max: number; window: number; ban: number; maxBan: number };
  /** CIDRs never limited or banned. */
  exempt: readonly string[];
  /** Read by the caller together with isScanner(); the guard itself does not see User-Agents. */
  dropScanners: boolean;
  /** Most source addresses tracked (lru-cache bound). Default 100_000. */
  maxSources?: number;
  /** Most bans (active, or ended with their level still remembered) kept. Default 100_000. */
  maxBans?: number;
}

export type Admission = 'ok' | 'limited' | 'banned';

export interface Ban {
  /** The source address; an IPv4-mapped IPv6 address is given as plain IPv4. */
  address: string;
  /** Epoch ms. */
  until: number;
  /** 1 = first ban. */
  level: number;
}

export interface GuardStats {
  /** Requests refused by the rate limit. */
  limited: number;
  /** Requests refused because their source is banned. */
  bannedDrops: number;
  bansStarted: number;
  /** Bans still running when pushed out of the full ban store (the source cache may still hold them). */
  bansEvicted: number;
}

export const DEFAULT_MAX_SOURCES = 100_000;
export const DEFAULT_MAX_BANS = 100_000;

/** Per-source state. A class so that every entry has the same shape. */
class Source {
  tokens: number;
  last: number;
  /** Changed only by SourceGuard.reconfigure. */
  exempt: boolean;
  /** Epoch ms the ban ends; 0 = not banned. */
  bannedUntil = 0;

  constructor(tokens: number, now: number, exempt: boolean) {
    this.tokens = tokens;
    this.last = now;
    this.exempt = exempt;
  }
}

interface BanRecord {
  readonly address: string;
  readonly until: number;
  readonly level: number;
  /** Epoch ms after which the level is forgotten. */
  readonly forgetAt: number;
}

const MAPPED_V4 = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/** The key bans are stored under: IPv4-mapped IPv6 as IPv4, IPv6 lower case. */
function banKey(address: string): string {
  const m = MAPPED_V4.exec(address);
  return m !== null ? m[1] : address.toLowerCase();
}

/** Source-cache spellings of one host other than `key` itself. */
function otherSpelling(key: string): string | null {
  return isIP(key) === 4 ? `::ffff:${key}` : null;
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new RangeError(`SourceGuard: ${what}`);
}

function checkLimits(settings: Pick<GuardSettings, 'rate' | 'authFailures'>): void {
  const { rate, authFailures: f } = settings;
  check(Number.isFinite(rate.perSource) && rate.perSource >= 0, `rate.perSource must be 0 or more (got ${rate.perSource})`);
  check(rate.perSource === 0 || (Number.isFinite(rate.burst) && rate.burst >= 1), `rate.burst must be at least 1 (got ${rate.burst})`);
  check(Number.isInteger(f.max) && f.max >= 0, `authFailures.max must be a whole number, 0 or more (got ${f.max})`);
  if (f.max > 0) {
    check(Number.isFinite(f.window) && f.window > 0, `authFailures.window must be positive (got ${f.window})`);
    check(Number.isFinite(f.ban) && f.ban > 0, `authFailures.ban must be positive (got ${f.ban})`);
    check(Number.isFinite(f.maxBan) && f.maxBan >= f.ban, `authFailures.maxBan must not be below ban (got ${f.maxBan} < ${f.ban})`);
  }
}

export class SourceGuard {
  readonly stats: GuardStats = { limited: 0, bannedDrops: 0, bansStarted: 0, bansEvicted: 0 };

  private readonly clock: () => number;
  private exemptSet: AddressSet;
  // Set by apply(), from the constructor and from reconfigure().
  private rateOn = false;
  private burst = 0;
  private tokensPerMs = 0;
  private failuresOn = false;
  private maxFailures = 0;
  private windowMs = 0;
  private banMs = 0;
  private maxBanMs = 0;
  private readonly sources: LRUCache<string, Source>;
  /**
   * Failure windows, apart from the per-packet source cache: only failed
   * authentications (answers to a nonce the source really received) add
   * entries, so a flood of forged sources churning `sources` cannot evict a
   * guesser's count and reset it.
   */
  private readonly windows: LRUCache<string, { start: number; failures: number }>;
  private readonly banStore: LRUCache<string, BanRecord>;

  constructor(settings: GuardSettings, clock: () => number = Date.now) {
    const maxSources = settings.maxSources ?? DEFAULT_MAX_SOURCES;
    const maxBans = settings.maxBans ?? DEFAULT_MAX_BANS;
    checkLimits(settings);
    check(Number.isInteger(maxSources) && maxSources >= 1, `maxSources must be a positive whole number (got ${maxSources})`);
    check(Number.isInteger(maxBans) && maxBans >= 1, `maxBans must be a positive whole number (got ${maxBans})`);

    this.clock = clock;
    this.exemptSet = new AddressSet(settings.exempt);
    this.apply(settings);
    this.sources = new LRUCache<string, Source>({ max: maxSources });
    this.windows = new LRUCache<string, { start: number; failures: number }>({ max: maxSources });
    this.banStore = new LRUCache<string, BanRecord>({
      max: maxBans,
      dispose: (record, _key, reason) => {
        if (reason === 'evict' && record.until > this.clock()) this.stats.bansEvicted++;
      },
    });
  }

  /** The rate and failure settings, in the units the checks use. */
  private apply(settings: Pick<GuardSettings, 'rate' | 'authFailures'>): void {
    const { rate, authFailures: f } = settings;
    this.rateOn = rate.perSource > 0;
    this.burst = rate.burst;
    this.tokensPerMs = rate.perSource / 1000;
    this.failuresOn = f.max > 0;
    this.maxFailures = f.max;
    this.windowMs = f.window * 1000;
    this.banMs = f.ban * 1000;
    this.maxBanMs = f.maxBan * 1000;
  }

  /**
   * SIGHUP: new rate, failure and exempt settings (maxSources and maxBans
   * stay). Buckets, failure counts and bans are kept: a reload must not
   * lift a ban nor reset a guesser's count. Throws, changing nothing, on
   * settings the constructor would refuse.
   */
  reconfigure(settings: Omit<GuardSettings, 'maxSources' | 'maxBans'>): void {
    checkLimits(settings);
    const exempt = new AddressSet(settings.exempt);
    this.apply(settings);
    this.exemptSet = exempt;
    // Each tracked source caches whether it is exempt (one lookup per request).
    for (const [address, s] of this.sources.entries()) s.exempt = exempt.has(address);
  }

  /**
   * Every received request, before any work. One cache lookup and no
   * allocation for a known source (beyond what the clock itself returns);
   * with the rate limit off and no ban on record, not even that.
   */
  admit(address: string): Admission {
    if (!this.rateOn && this.banStore.size === 0) return 'ok';
    let s = this.sources.get(address);
    if (s === undefined) s = this.track(address, this.clock());
    if (s.exempt) return 'ok';
    if (!this.rateOn && s.bannedUntil === 0) return 'ok';
    // The clock is read only from here on: Date.now() allocates its result (a heap number).
    const now = this.clock();
    if (s.bannedUntil !== 0) {
      if (now < s.bannedUntil) {
        this.stats.bannedDrops++;
        return 'banned';
      }
      s.bannedUntil = 0;
    }
    if (!this.rateOn) return 'ok';
    const elapsed = now - s.last;
    if (elapsed > 0) {
      const tokens = s.tokens + elapsed * this.tokensPerMs;
      s.tokens = tokens < this.burst ? tokens : this.burst;
      s.last = now;
    }
    if (s.tokens >= 1) {
      s.tokens -= 1;
      return 'ok';
    }
    this.stats.limited++;
    return 'limited';
  }

  /**
   * A failed authentication (wrong password, unknown user, forged nonce...)
   * from address. Returns the Ban when this failure started one, else null.
   * Exempt sources are never banned; failures during a ban are not counted
   * and do not extend it. A later success does not reset the count (see the
   * module comment).
   */
  authFailed(address: string): Ban | null {
    if (!this.failuresOn) return null;
    const now = this.clock();
    const s = this.sources.get(address) ?? this.track(address, now);
    if (s.exempt || now < s.bannedUntil) return null;
    let w = this.windows.get(address);
    if (w === undefined || now - w.start >= this.windowMs) {
      w = { start: now, failures: 0 };
      this.windows.set(address, w);
    }
    w.failures++;
    if (w.failures < this.maxFailures) return null;
    this.windows.delete(address);

    const key = banKey(address);
    const prior = this.record(key, now);
    if (prior !== undefined && now < prior.until) {
      // Banned under its other spelling (mapped vs plain IPv4).
      s.bannedUntil = prior.until;
      return null;
    }
    const level = prior === undefined ? 1 : prior.level + 1;
    const duration = Math.min(this.banMs * 2 ** (level - 1), this.maxBanMs);
    const ban = this.startBan(key, now + duration, level);
    s.bannedUntil = ban.until;
    this.stats.bansStarted++;
    return ban;
  }

  isBanned(address: string): boolean {
    // In the order that costs least when nobody is banned (every request
    // that authenticates asks): the source's own entry, then the ban records
    // only if there are any (banKey runs a regex), the clock only when needed.
    const s = this.sources.peek(address);
    if (s !== undefined && s.bannedUntil !== 0 && this.clock() < s.bannedUntil) return !this.isExempt(address);
    if (this.banStore.size === 0 || this.isExempt(address)) return false;
    const now = this.clock();
    const r = this.record(banKey(address), now);
    return r !== undefined && now < r.until;
  }

  isExempt(address: string): boolean {
    return this.exemptSet.has(address);
  }

  /** Bans running now (O(bans); for metrics, not per request). */
  activeBans(): number {
    const now = this.clock();
    let n = 0;
    for (const r of this.banStore.values()) if (now < r.until) n++;
    return n;
  }

  /** Bans running now, for persistence across restarts. */
  bans(): Ban[] {
    const now = this.clock();
    const out: Ban[] = [];
    for (const r of this.banStore.values()) {
      if (now < r.until) out.push({ address: r.address, until: r.until, level: r.level });
    }
    return out;
  }

  /**
   * Bans saved by bans(), e.g. before a restart. Skips expired and malformed
   * entries and exempt addresses (the exempt list may have grown meanwhile);
   * shortens any that would outlast maxBan from now (it may have shrunk).
   * Nothing is restored while failure bans are off (max 0). Returns how many
   * were restored.
   */
  restoreBans(bans: readonly Ban[]): number {
    if (!this.failuresOn) return 0;
    const now = this.clock();
    let restored = 0;
    for (const b of bans) {
      if (b === null || typeof b !== 'object' || typeof b.address !== 'string') continue;
      if (!Number.isFinite(b.until) || b.until <= now || !Number.isInteger(b.level) || b.level < 1) continue;
      const key = banKey(b.address);
      if (isIP(key) === 0 || this.exemptSet.has(key)) continue;
      const existing = this.record(key, now);
      const until = Math.min(b.until, now + this.maxBanMs);
      if (existing !== undefined && existing.until >= until) continue;
      this.startBan(key, until, Math.max(b.level, existing?.level ?? 0));
      restored++;
    }
    return restored;
  }

  /** A new source entry (a cache miss: new, or evicted earlier). */
  private track(address: string, now: number): Source {
    const s = new Source(this.burst, now, this.exemptSet.has(address));
    if (!s.exempt && this.banStore.size > 0) {
      const r = this.record(banKey(address), now);
      if (r !== undefined && now < r.until) s.bannedUntil = r.until;
    }
    this.sources.set(address, s);
    return s;
  }

  /** The ban record of `key` while its level is remembered. */
  private record(key: string, now: number): BanRecord | undefined {
    const r = this.banStore.get(key);
    if (r === undefined) return undefined;
    if (now >= r.forgetAt) {
      this.banStore.delete(key);
      return undefined;
    }
    return r;
  }

  private startBan(key: string, until: number, level: number): Ban {
    this.banStore.set(key, { address: key, until, level, forgetAt: until + this.maxBanMs });
    for (const spelling of [key, otherSpelling(key)]) {
      if (spelling === null) continue;
      const s = this.sources.peek(spelling);
      if (s !== undefined && !s.exempt) s.bannedUntil = until;
    }
    return { address: key, until, level };
  }
}

/**
 * Lower-case User-Agent substrings of SIP attack and scanning tools. Only
 * tools; never a real client, and not test tools people point at their own
 * servers (sipsak, SIPp).
 */
export const SCANNER_USER_AGENTS: readonly string[] = Object.freeze([
  'friendly-scanner', // SIPVicious svmap/svwar default
  'friendly-request', // later SIPVicious variants
  'sipvicious',
  'sipcli', // SIPCLI brute forcer
  'sip-scan',
  'sundayddr', // Sunday DDR scanner
  'iwar', // iWar war dialer
  'vaxsipuseragent', // VaxSIP SDK default, as sent by brute-force scripts
  'sivus', // SiVuS vulnerability scanner
  'siparmyknife', // SIP Army Knife fuzzer
]);

const SCANNER_PATTERN = new RegExp(SCANNER_USER_AGENTS.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'i');

/** Whether a User-Agent names a scanning tool (case-insensitive substring). */
export function isScanner(userAgent: string | null | undefined): boolean {
  return typeof userAgent === 'string' && userAgent !== '' && SCANNER_PATTERN.test(userAgent);
}
