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

import * as crypto from 'node:crypto';
import { createHash, createHmac, randomBytes, randomFillSync, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { detach, type Credentials } from '../sip/index.js';

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
const NC = /^[0-9a-fA-F]{8}$/;

// One-shot hashing (Node >= 20.12) costs a third of a Hash object.
const oneShot: ((algorithm: string, data: string | Buffer, encoding: 'hex' | 'latin1') => string) | undefined = (
  crypto as { hash?: (algorithm: string, data: string | Buffer, encoding: 'hex' | 'latin1') => string }
).hash;

/** The parser decodes messages as latin1 (one char per octet): hashing as latin1 gives back the octets the client hashed. */
function hash(algorithm: DigestAlgorithm, text: string): string {
  const name = algorithm === 'MD5' ? 'md5' : 'sha256';
  // One-shot hashing reads a string as UTF-8: the same octets when every char is ASCII.
  if (oneShot !== undefined && Buffer.byteLength(text, 'utf8') === text.length) return oneShot(name, text, 'hex');
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
 * HMAC-SHA256 (RFC 2104) of a nonce's first 16 octets, the realm and the
 * address, keyed once: the padded keys are kept, so a nonce costs two
 * one-shot hashes instead of a new Hmac object (the same octets as
 * createHmac gives, so nonces stay valid across versions and cluster nodes).
 */
class NonceMac {
  /** ipad key, then the message: nonce head, realm, LF, address. */
  private readonly inner: Buffer;
  /** opad key, then the inner digest. */
  private readonly outer = Buffer.alloc(96);
  /** Where the address starts in `inner`. */
  private readonly addressAt: number;

  constructor(
    private readonly secret: Buffer,
    private readonly realm: string,
  ) {
    const key = Buffer.alloc(64);
    (secret.length > 64 ? createHash('sha256').update(secret).digest() : secret).copy(key);
    this.addressAt = 64 + 16 + Buffer.byteLength(realm, 'utf8') + 1;
    this.inner = Buffer.alloc(this.addressAt + 192);
    for (let i = 0; i < 64; i++) {
      this.inner[i] = key[i] ^ 0x36;
      this.outer[i] = key[i] ^ 0x5c;
    }
    this.inner.write(realm + '\n', 80, 'utf8');
  }

  /** Writes the first 16 octets of the MAC of raw[0, 16) and `address` into `out` at `at`. */
  sign(raw: Buffer, address: string, out: Buffer, at: number): void {
    const room = this.inner.length - this.addressAt;
    if (oneShot === undefined || address.length > room / 3) {
      createHmac('sha256', this.secret).update(raw.subarray(0, 16)).update(this.realm).update('\n').update(address).digest().copy(out, at, 0, 16);
      return;
    }
    raw.copy(this.inner, 64, 0, 16);
    const end = this.addressAt + this.inner.write(address, this.addressAt, 'utf8');
    // 'latin1' output: one char per octet, without the Buffer a 'buffer' output costs.
    this.outer.write(oneShot('sha256', this.inner.subarray(0, end), 'latin1'), 64, 'latin1');
    out.write(oneShot('sha256', this.outer, 'latin1'), at, 16, 'latin1');
  }
}

export class DigestAuthenticator {
  private readonly secret: Buffer;
  private readonly clock: () => number;
  /** nonce → highest nonce-count used with it; Infinity for a used nonce without qop. */
  private readonly counts: LRUCache<string, number>;
  /** An HA1 for unknown users, so that they cost the same hashing as known ones. */
  private readonly dummy = { MD5: randomBytes(16).toString('hex'), 'SHA-256': randomBytes(32).toString('hex') };
  private readonly mac: NonceMac;
  /** The MAC a nonce should carry, computed by nonceAge (checks are synchronous: one buffer serves). */
  private readonly expectedMac = Buffer.alloc(16);
  /** Challenge values around the nonce, per algorithm: before it, after it, and after it with stale=true. */
  private readonly challengeParts: Array<readonly [string, string, string]>;
  // H(method ":" uri) of the last check: devices register with one method
  // and one uri (their domain), so it is mostly the same hash again.
  private ha2Algorithm: DigestAlgorithm | null = null;
  private ha2Input = '';
  private ha2Value = '';

  constructor(private readonly options: DigestOptions) {
    this.secret = options.secret ?? randomBytes(32);
    this.clock = options.clock ?? Date.now;
    this.counts = new LRUCache({ max: options.maxTrackedNonces ?? 100_000, ttl: options.nonceLifetimeMs, ttlAutopurge: false });
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

  makeNonce(now = this.clock(), address = ''): string {
    const raw = Buffer.allocUnsafe(NONCE_BYTES);
    raw.writeBigUInt64BE(BigInt(Math.floor(now)), 0);
    fillRandom8(raw, 8);
    this.mac.sign(raw, address, raw, 16);
    return raw.toString('base64url');
  }

  /** Milliseconds since the nonce was made for `address`, or -1 when this process did not make it for that address. */
  nonceAge(nonce: string, address = ''): number {
    if (nonce.length !== 43) return -1;
    const raw = Buffer.from(nonce, 'base64url');
    if (raw.length !== NONCE_BYTES) return -1;
    this.mac.sign(raw, address, this.expectedMac, 0);
    if (!timingSafeEqual(this.expectedMac, raw.subarray(16))) return -1;
    const age = this.clock() - Number(raw.readBigUInt64BE(0));
    return age < 0 ? -1 : age;
  }

  private ha2(algorithm: DigestAlgorithm, input: string): string {
    if (algorithm !== this.ha2Algorithm || input !== this.ha2Input) {
      this.ha2Value = hash(algorithm, input);
      this.ha2Algorithm = algorithm;
      this.ha2Input = detach(input); // not a view of the message text: it stays
    }
    return this.ha2Value;
  }

  /**
   * Checks credentials given with a request of `method`, received from
   * `address`. `ha1For`: a lookup by username, or the digests of the account
   * the caller found for the credentials' username (null: none).
   */
  check(method: string, creds: Credentials, ha1For: Ha1Lookup | Ha1Digests | null, address = ''): DigestCheck {
    if (creds.scheme !== 'digest') return { kind: 'malformed', why: 'not Digest' };
    const p = creds.params;
    const realm = p.get('realm');
    if (realm !== this.options.realm) return realm === undefined ? { kind: 'malformed', why: 'no realm' } : { kind: 'other-realm' };
    const username = p.get('username');
    const nonce = p.get('nonce');
    const uri = p.get('uri');
    const response = p.get('response');
    if (username === undefined || username === '' || nonce === undefined || uri === undefined || response === undefined) {
      return { kind: 'malformed', why: 'missing username, nonce, uri or response' };
    }
    const algParam = p.get('algorithm') ?? 'MD5';
    const algorithm = offered(this.options.algorithms, algParam);
    if (algorithm === undefined) return { kind: 'malformed', why: `algorithm ${algParam} not offered` };
    const qop = p.get('qop');
    const cnonce = p.get('cnonce');
    const ncText = p.get('nc');
    let nc = 0;
    if (qop !== undefined) {
      if (qop.toLowerCase() !== 'auth') return { kind: 'malformed', why: `qop ${qop} not offered` };
      if (cnonce === undefined || ncText === undefined || !NC.test(ncText)) return { kind: 'malformed', why: 'qop=auth needs cnonce and nc' };
      nc = parseInt(ncText, 16);
      if (nc === 0) return { kind: 'malformed', why: 'nc must start at 1' };
    }

    const age = this.nonceAge(nonce, address);
    if (age < 0) return { kind: 'unverifiable', why: 'bad-nonce' };

    const known =
      ha1For === null ? undefined : typeof ha1For === 'function' ? ha1For(username, algorithm) : algorithm === 'MD5' ? ha1For.md5 : ha1For.sha256;
    const ha1 = known ?? this.dummy[algorithm];
    const ha2 = this.ha2(algorithm, method + ':' + uri);
    const expected =
      qop === undefined
        ? hash(algorithm, ha1 + ':' + nonce + ':' + ha2)
        : hash(algorithm, ha1 + ':' + nonce + ':' + ncText + ':' + cnonce + ':' + qop.toLowerCase() + ':' + ha2);
    const given = Buffer.from(response.toLowerCase(), 'latin1');
    const right = given.length === expected.length && timingSafeEqual(given, Buffer.from(expected, 'latin1'));
    if (!right || known === undefined) return { kind: 'wrong', username, unknownUser: known === undefined };

    if (age > this.options.nonceLifetimeMs) return { kind: 'stale' };
    // Without qop (RFC 2069 clients) a nonce is good for one request only.
    const used = this.counts.get(nonce);
    const next = qop === undefined ? Infinity : nc;
    if (used !== undefined && next <= used) return { kind: 'unverifiable', why: 'replay' };
    this.counts.set(nonce, next, { ttl: Math.max(1, this.options.nonceLifetimeMs - age) });
    return { kind: 'ok', username, algorithm };
  }
}

/** The offered algorithm `name` stands for (any case), if any. */
function offered(algorithms: readonly DigestAlgorithm[], name: string): DigestAlgorithm | undefined {
  const want = name.toLowerCase();
  for (const a of algorithms) if (a.toLowerCase() === want) return a;
  return undefined;
}
