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

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Credentials } from '../sip/index.js';

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

/** The parser decodes messages as latin1 (one char per octet): hashing as latin1 gives back the octets the client hashed. */
function hash(algorithm: DigestAlgorithm, text: string): string {
  return createHash(algorithm === 'MD5' ? 'md5' : 'sha256').update(text, 'latin1').digest('hex');
}

export class DigestAuthenticator {
  private readonly secret: Buffer;
  private readonly clock: () => number;
  /** nonce → highest nonce-count used with it; Infinity for a used nonce without qop. */
  private readonly counts: LRUCache<string, number>;
  /** An HA1 for unknown users, so that they cost the same hashing as known ones. */
  private readonly dummy = { MD5: randomBytes(16).toString('hex'), 'SHA-256': randomBytes(32).toString('hex') };
  private readonly realmQuoted: string;

  constructor(private readonly options: DigestOptions) {
    this.secret = options.secret ?? randomBytes(32);
    this.clock = options.clock ?? Date.now;
    this.counts = new LRUCache({ max: options.maxTrackedNonces ?? 100_000, ttl: options.nonceLifetimeMs, ttlAutopurge: false });
    this.realmQuoted = '"' + options.realm + '"';
  }

  get realm(): string {
    return this.options.realm;
  }

  /** WWW-Authenticate or Proxy-Authenticate values, one per algorithm, sharing one fresh nonce for `address`. */
  challenge(stale: boolean, address = ''): string[] {
    const nonce = this.makeNonce(this.clock(), address);
    return this.options.algorithms.map(
      (alg) => `Digest realm=${this.realmQuoted}, nonce="${nonce}", algorithm=${alg}, qop="auth"${stale ? ', stale=true' : ''}`,
    );
  }

  makeNonce(now = this.clock(), address = ''): string {
    const raw = Buffer.allocUnsafe(NONCE_BYTES);
    raw.writeBigUInt64BE(BigInt(Math.floor(now)), 0);
    randomBytes(8).copy(raw, 8);
    this.sign(raw, address).copy(raw, 16, 0, 16);
    return raw.toString('base64url');
  }

  /** Milliseconds since the nonce was made for `address`, or -1 when this process did not make it for that address. */
  nonceAge(nonce: string, address = ''): number {
    if (nonce.length !== 43) return -1;
    const raw = Buffer.from(nonce, 'base64url');
    if (raw.length !== NONCE_BYTES) return -1;
    if (!timingSafeEqual(this.sign(raw, address).subarray(0, 16), raw.subarray(16))) return -1;
    const age = this.clock() - Number(raw.readBigUInt64BE(0));
    return age < 0 ? -1 : age;
  }

  private sign(raw: Buffer, address: string): Buffer {
    return createHmac('sha256', this.secret).update(raw.subarray(0, 16)).update(this.options.realm).update('\n').update(address).digest();
  }

  /** Checks credentials given with a request of `method`, received from `address`. */
  check(method: string, creds: Credentials, ha1For: Ha1Lookup, address = ''): DigestCheck {
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
    const algorithm = this.options.algorithms.find((a) => a.toLowerCase() === algParam.toLowerCase());
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

    const known = ha1For(username, algorithm);
    const ha1 = known ?? this.dummy[algorithm];
    const ha2 = hash(algorithm, method + ':' + uri);
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
