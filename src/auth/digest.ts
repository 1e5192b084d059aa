// SIP digest authentication (RFC 3261 §22, RFC 8760 for SHA-256, RFC 7616
// for the meaning of qop, nc and stale).
//
// Nonces are stateless: the time they were made, random bits and an HMAC of
// both and of the address the challenge went to, under a per-process secret,
// so a challenge costs no memory and a flood of REGISTERs cannot fill a
// table. Binding the nonce to the address means a wrong answer can only come
// from a host that received the challenge: forged UDP sources cannot spend
// somebody else's failure budget (and get them banned). Replays are caught by remembering, per
// nonce that has authenticated someone, the highest nonce-count seen: only
// valid credentials add an entry, and the entries are bounded and expire with
// the nonce.

import { createHash, randomBytes, randomFillSync, timingSafeEqual } from 'node:crypto';
import { HmacSha256, INPUT_AT, oneShotHash } from '../hmac.js';
import { detach, type Credentials } from '../sip/index.js';
import { DigestCredentials } from '../sip/credentials.js';

export type DigestAlgorithm = 'SHA-256' | 'MD5';

export interface DigestOptions {
  realm: string;
  /** Offered in this order, one challenge header each. */
  algorithms: readonly DigestAlgorithm[];
  /** How long a nonce may be used, in milliseconds. */
  nonceLifetimeMs: number;
  /** Most nonces whose nonce-count is tracked. Default 100 000. */
  maxTrackedNonces?: number;
  /** Milliseconds since the epoch. Default Date.now. */
  clock?: () => number;
  /** HMAC key for nonces; random per process by default. */
  secret?: Buffer;
}

/** HA1 of the account behind a username for an algorithm; undefined for an unknown user. */
export type Ha1Lookup = (username: string, algorithm: DigestAlgorithm) => string | undefined;

/** The HA1 digests of the account the credentials name (as Account.ha1 holds them). */
export interface Ha1Digests {
  readonly md5: string;
  readonly sha256: string;
}

/**
 * What checking one credentials value found:
 * - ok: the response is right for a fresh, unreplayed nonce.
 * - wrong: the response is wrong (bad password or unknown user: told apart only in `unknownUser`).
 * - stale: right response for a nonce that expired; the client retries with a new one.
 * - unverifiable: a nonce this process did not make (a forgery, or one from before a restart) or
 *   one whose count was reused (a replay); nothing about the password was learnt either way.
 * - other-realm: credentials for someone else's realm.
 * - malformed: a parameter is missing or unusable (an algorithm or qop not offered).
 */
export type DigestCheck =
  | { kind: 'ok'; username: string; algorithm: DigestAlgorithm }
  | { kind: 'wrong'; username: string; unknownUser: boolean }
  | { kind: 'stale' }
  | { kind: 'unverifiable'; why: 'bad-nonce' | 'replay' }
  | { kind: 'other-realm' }
  | { kind: 'malformed'; why: string };

const NONCE_BYTES = 32; // 8 time, 8 random, 16 HMAC
/** Characters of a nonce: 32 octets in base64url, unpadded. */
const NONCE_CHARS = 43;

/** nc-value = 8LHEX (RFC 7616 §3.4; upper-case hex tolerated, as before). */
function isNc(s: string): boolean {
  if (s.length !== 8) return false;
  for (let i = 0; i < 8; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66))) return false;
  }
  return true;
}

/** The parser decodes messages as latin1 (one char per octet): hashing as latin1 gives back the octets the client hashed. */
function hash(algorithm: DigestAlgorithm, text: string): string {
  const name = algorithm === 'MD5' ? 'md5' : 'sha256';
  // One-shot hashing reads a string as UTF-8: the same octets when every char is ASCII.
  // One-shot hashing (Node >= 20.12) costs a third of a Hash object.
  if (oneShotHash !== undefined && Buffer.byteLength(text, 'utf8') === text.length) return oneShotHash(name, text, 'hex');
  return createHash(name).update(text, 'latin1').digest('hex');
}

// Random bits for nonces are drawn 4 KiB at a time: one call into OpenSSL
// per 512 challenges instead of one each (it was the dearest step of a
// challenge).
const POOL = Buffer.allocUnsafeSlow(4096);
let poolOffset = POOL.length;

function fillRandom8(into: Buffer, at: number): void {
  if (poolOffset + 8 > POOL.length) {
    randomFillSync(POOL);
    poolOffset = 0;
  }
  POOL.copy(into, at, poolOffset, poolOffset + 8);
  poolOffset += 8;
}

/**
 * HMAC-SHA256 of a nonce's first 16 octets, the realm and the address
 * (src/hmac.ts: the same octets as createHmac gives, so nonces stay valid
 * across versions and cluster nodes). The realm, and the address until it
 * changes, stay in the MAC's scratch from one nonce to the next.
 */
class NonceMac {
  private readonly hmac: HmacSha256;
  /** Where the address starts in the scratch: after the nonce head, the realm and LF. */
  private readonly addressAt: number;
  /** End of the address the scratch holds now. */
  private end: number;
  /** The address the scratch holds now. */
  private address = '';

  constructor(
    secret: Buffer,
    private readonly realm: string,
  ) {
    const head = 16 + Buffer.byteLength(realm + '\n', 'utf8');
    this.hmac = new HmacSha256(secret, head + 192);
    this.addressAt = INPUT_AT + head;
    this.hmac.scratch.write(realm + '\n', INPUT_AT + 16, 'utf8');
    this.end = this.addressAt;
  }

  /** Writes the first 16 octets of the MAC of raw[0, 16) and `address` into `out` at `at`. */
  sign(raw: Buffer, address: string, out: Buffer, at: number): void {
    const room = this.hmac.scratch.length - this.addressAt;
    if (oneShotHash === undefined || address.length * 3 > room) {
      out.write(this.hmac.slow([raw.subarray(0, 16), this.realm, '\n', address], 'latin1'), at, 16, 'latin1');
      return;
    }
    // By hand: Buffer.copy of part of a buffer makes a view of it first.
    const s = this.hmac.scratch;
    for (let i = 0; i < 16; i++) s[INPUT_AT + i] = raw[i];
    if (address !== this.address) {
      this.end = this.addressAt + s.write(address, this.addressAt, 'utf8');
      this.address = address; // an address string (from the socket), not a view of a message
    }
    out.write(this.hmac.digestScratch(this.end, 'latin1'), at, 16, 'latin1');
  }
}

/**
 * The nonce-count table, least recently written first: a Map from key to a
 * slot, and the slots in a doubly linked list over arrays (what lru-cache
 * does, without its option objects and TTL bookkeeping: no TTL is needed,
 * see DigestAuthenticator.counts). Writing an entry makes it the most
 * recent; past `max` entries the least recent one's slot is reused. Not a
 * Map used as a queue: V8 walks over the holes that deletions leave at the
 * front of a Map, so evicting its first key gets slower with every eviction.
 */
class NonceCounts {
  private readonly slots = new Map<string, number>();
  private readonly keys: string[] = [];
  private readonly values: number[] = [];
  private readonly prev: number[] = [];
  private readonly next: number[] = [];
  /** Least and most recently written slots; -1 while empty. */
  private oldest = -1;
  private newest = -1;
  /**
   * The latest issue time (ms) among the nonces whose entries were evicted:
   * a nonce issued then or before that is not in the table may have been
   * used already, and its count is lost.
   */
  evictedUpTo = -1;

  constructor(private readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError('maxTrackedNonces must be a positive integer');
  }

  get size(): number {
    return this.slots.size;
  }

  get(key: string): number | undefined {
    const i = this.slots.get(key);
    return i === undefined ? undefined : this.values[i];
  }

  set(key: string, value: number): void {
    let i = this.slots.get(key);
    if (i !== undefined) {
      this.values[i] = value;
      if (i !== this.newest) {
        this.unlink(i);
        this.append(i);
      }
      return;
    }
    if (this.keys.length < this.max) {
      i = this.keys.length;
      this.keys.push(key);
      this.values.push(value);
      this.prev.push(-1);
      this.next.push(-1);
    } else {
      i = this.oldest;
      const gone = this.keys[i];
      const issued = issueTimeOfKey(gone);
      if (issued > this.evictedUpTo) this.evictedUpTo = issued;
      this.slots.delete(gone);
      this.unlink(i);
      this.keys[i] = key;
      this.values[i] = value;
    }
    this.append(i);
    this.slots.set(key, i);
  }

  private unlink(i: number): void {
    const p = this.prev[i];
    const n = this.next[i];
    if (p === -1) this.oldest = n;
    else this.next[p] = n;
    if (n === -1) this.newest = p;
    else this.prev[n] = p;
  }

  private append(i: number): void {
    this.prev[i] = this.newest;
    this.next[i] = -1;
    if (this.newest === -1) this.oldest = i;
    else this.next[this.newest] = i;
    this.newest = i;
  }
}

/** The issue time a count-table key carries: its first 8 octets, big-endian ms (as makeNonce writes them). */
function issueTimeOfKey(key: string): number {
  const hi = ((key.charCodeAt(0) << 24) | (key.charCodeAt(1) << 16) | (key.charCodeAt(2) << 8) | key.charCodeAt(3)) >>> 0;
  const lo = ((key.charCodeAt(4) << 24) | (key.charCodeAt(5) << 16) | (key.charCodeAt(6) << 8) | key.charCodeAt(7)) >>> 0;
  return hi * 0x1_0000_0000 + lo;
}

export class DigestAuthenticator {
  private readonly secret: Buffer;
  private readonly clock: () => number;
  /**
   * Nonce (its first 16 octets, time and random, as a latin1 string of its
   * own: not a view of the request text) → highest nonce-count used with it;
   * Infinity for a used nonce without qop. No TTL: a nonce past its lifetime
   * is answered stale before its count is looked at, so an entry matters
   * only while it is younger; the table is bounded by maxTrackedNonces.
   */
  private readonly counts: NonceCounts;
  /** An HA1 for unknown users, so that they cost the same hashing as known ones. */
  private readonly dummy = { MD5: randomBytes(16).toString('hex'), 'SHA-256': randomBytes(32).toString('hex') };
  private readonly mac: NonceMac;
  /** The MAC a nonce should carry, computed by nonceAge (checks are synchronous: one buffer serves). */
  private readonly expectedMac = Buffer.alloc(16);
  /** A nonce decoded by nonceAge (its octets stay there for check()), a few octets spare so that nothing is cut off. */
  private readonly nonceRaw = Buffer.alloc(NONCE_BYTES + 8);
  private readonly nonceMacView = this.nonceRaw.subarray(16, NONCE_BYTES);
  /** A nonce being made. */
  private readonly newNonce = Buffer.alloc(NONCE_BYTES);
  /** Challenge values around the nonce, per algorithm: before it, after it, and after it with stale=true. */
  private readonly challengeParts: Array<readonly [string, string, string]>;
  // H(method ":" uri) of the last check: devices register with one method
  // and one uri (their domain), so it is mostly the same hash again.
  private ha2Algorithm: DigestAlgorithm | null = null;
  private ha2Method = '';
  private ha2Uri = '';
  private ha2Value = '';

  constructor(private readonly options: DigestOptions) {
    this.secret = options.secret ?? randomBytes(32);
    this.clock = options.clock ?? Date.now;
    this.counts = new NonceCounts(options.maxTrackedNonces ?? 100_000);
    this.mac = new NonceMac(this.secret, options.realm);
    const before = 'Digest realm="' + options.realm + '", nonce="';
    this.challengeParts = options.algorithms.map((alg) => {
      const after = '", algorithm=' + alg + ', qop="auth"';
      return [before, after, after + ', stale=true'] as const;
    });
  }

  get realm(): string {
    return this.options.realm;
  }

  /** WWW-Authenticate or Proxy-Authenticate values, one per algorithm, sharing one fresh nonce for `address`. */
  challenge(stale: boolean, address = ''): string[] {
    const nonce = this.makeNonce(this.clock(), address);
    const parts = this.challengeParts;
    const out: string[] = [];
    for (let i = 0; i < parts.length; i++) out.push(parts[i][0] + nonce + parts[i][stale ? 2 : 1]);
    return out;
  }

  /** challenge() as header lines named `name` (WWW-Authenticate or Proxy-Authenticate), for a response. */
  challengeHeaders(name: string, stale: boolean, address = ''): Array<[string, string]> {
    const nonce = this.makeNonce(this.clock(), address);
    const parts = this.challengeParts;
    const out: Array<[string, string]> = [];
    for (let i = 0; i < parts.length; i++) out.push([name, parts[i][0] + nonce + parts[i][stale ? 2 : 1]]);
    return out;
  }

  makeNonce(now = this.clock(), address = ''): string {
    const raw = this.newNonce;
    // The time as a 64-bit big-endian integer, in two halves (no BigInt).
    const t = Math.floor(now);
    raw.writeUInt32BE(Math.floor(t / 0x1_0000_0000) >>> 0, 0);
    raw.writeUInt32BE(t >>> 0, 4);
    fillRandom8(raw, 8);
    this.mac.sign(raw, address, raw, 16);
    return raw.toString('base64url');
  }

  /** Milliseconds since the nonce was made for `address`, or -1 when this process did not make it for that address. */
  nonceAge(nonce: string, address = ''): number {
    if (nonce.length !== NONCE_CHARS) return -1;
    const raw = this.nonceRaw;
    if (raw.write(nonce, 0, 'base64url') !== NONCE_BYTES) return -1;
    this.mac.sign(raw, address, this.expectedMac, 0);
    if (!timingSafeEqual(this.expectedMac, this.nonceMacView)) return -1;
    const age = this.clock() - (raw.readUInt32BE(0) * 0x1_0000_0000 + raw.readUInt32BE(4));
    return age < 0 ? -1 : age;
  }

  private ha2(algorithm: DigestAlgorithm, method: string, uri: string): string {
    if (algorithm !== this.ha2Algorithm || method !== this.ha2Method || uri !== this.ha2Uri) {
      this.ha2Value = hash(algorithm, method + ':' + uri);
      this.ha2Algorithm = algorithm;
      // Not views of the message text: they stay.
      this.ha2Method = detach(method);
      this.ha2Uri = detach(uri);
    }
    return this.ha2Value;
  }

  /**
   * Checks credentials given with a request of `method`, received from
   * `address`. `ha1For`: a lookup by username, or the digests of the account
   * the caller found for the credentials' username (null: none).
   */
  check(method: string, creds: Credentials | DigestCredentials, ha1For: Ha1Lookup | Ha1Digests | null, address = ''): DigestCheck {
    return this.verify(method, creds instanceof DigestCredentials ? creds : DigestCredentials.of(creds), ha1For, address);
  }

  private verify(method: string, p: DigestCredentials, ha1For: Ha1Lookup | Ha1Digests | null, address: string): DigestCheck {
    if (p.scheme !== 'digest') return { kind: 'malformed', why: 'not Digest' };
    const realm = p.realm;
    if (realm !== this.options.realm) return realm === undefined ? { kind: 'malformed', why: 'no realm' } : { kind: 'other-realm' };
    const username = p.username;
    const nonce = p.nonce;
    const uri = p.uri;
    const response = p.response;
    if (username === undefined || username === '' || nonce === undefined || uri === undefined || response === undefined) {
      return { kind: 'malformed', why: 'missing username, nonce, uri or response' };
    }
    const algParam = p.algorithm ?? 'MD5';
    const algorithm = offered(this.options.algorithms, algParam);
    if (algorithm === undefined) return { kind: 'malformed', why: `algorithm ${algParam} not offered` };
    const qop = p.qop;
    const cnonce = p.cnonce;
    const ncText = p.nc;
    let nc = 0;
    if (qop !== undefined) {
      if (!isAuth(qop)) return { kind: 'malformed', why: `qop ${qop} not offered` };
      if (cnonce === undefined || ncText === undefined || !isNc(ncText)) return { kind: 'malformed', why: 'qop=auth needs cnonce and nc' };
      nc = parseInt(ncText, 16);
      if (nc === 0) return { kind: 'malformed', why: 'nc must start at 1' };
    }

    const age = this.nonceAge(nonce, address);
    if (age < 0) return { kind: 'unverifiable', why: 'bad-nonce' };
    // The nonce's key in the count table: its first 16 octets (time and random, which the MAC
    // just proved are ours for this address), as they are in nonceRaw now.
    const key = this.nonceRaw.toString('latin1', 0, 16);

    const known =
      ha1For === null ? undefined : typeof ha1For === 'function' ? ha1For(username, algorithm) : algorithm === 'MD5' ? ha1For.md5 : ha1For.sha256;
    const ha1 = known ?? this.dummy[algorithm];
    const ha2 = this.ha2(algorithm, method, uri);
    const expected =
      qop === undefined
        ? hash(algorithm, ha1 + ':' + nonce + ':' + ha2)
        : hash(algorithm, ha1 + ':' + nonce + ':' + ncText + ':' + cnonce + ':auth:' + ha2);
    const right = this.sameResponse(response, expected);
    if (!right || known === undefined) return { kind: 'wrong', username, unknownUser: known === undefined };

    if (age > this.options.nonceLifetimeMs) return { kind: 'stale' };
    // Without qop (RFC 2069 clients) a nonce is good for one request only.
    const used = this.counts.get(key);
    // Evicted from the full table, its count is lost: a captured Authorization could be replayed
    // from then on. Stale instead: the client retries at once with a fresh nonce, asking no one.
    if (used === undefined && issueTimeOfKey(key) <= this.counts.evictedUpTo) return { kind: 'stale' };
    const next = qop === undefined ? Infinity : nc;
    if (used !== undefined && next <= used) return { kind: 'unverifiable', why: 'replay' };
    this.counts.set(key, next);
    return { kind: 'ok', username, algorithm };
  }

  /**
   * Whether `given` (hex, any case) is `expected` (lower-case hex), in time
   * independent of where they differ: every char is compared, the
   * differences OR-ed together, no early exit (what timingSafeEqual does,
   * without writing both into Buffers first). Only the given response's
   * own letters decide the lower-casing branch, never the expected one's.
   */
  private sameResponse(given: string, expected: string): boolean {
    const n = expected.length;
    if (given.length !== n) return false;
    let diff = 0;
    for (let i = 0; i < n; i++) {
      let c = given.charCodeAt(i);
      // Lower-case A-Z (what toLowerCase did for the octets hex can match).
      if (c >= 0x41 && c <= 0x5a) c |= 0x20;
      diff |= c ^ expected.charCodeAt(i);
    }
    return diff === 0;
  }
}

/** qop=auth, any case. */
function isAuth(qop: string): boolean {
  return qop.length === 4 && (qop.charCodeAt(0) | 0x20) === 0x61 && (qop.charCodeAt(1) | 0x20) === 0x75 && (qop.charCodeAt(2) | 0x20) === 0x74 && (qop.charCodeAt(3) | 0x20) === 0x68;
}

/** The offered algorithm `name` stands for (any case), if any. */
function offered(algorithms: readonly DigestAlgorithm[], name: string): DigestAlgorithm | undefined {
  for (let i = 0; i < algorithms.length; i++) if (algorithms[i] === name) return algorithms[i];
  const want = name.toLowerCase();
  for (let i = 0; i < algorithms.length; i++) if (algorithms[i].toLowerCase() === want) return algorithms[i];
  return undefined;
}
