// Authorization and Proxy-Authorization values (RFC 3261 §25.1 `credentials`,
// RFC 7616 §3.4): `Digest username="alice", realm="x", nc=00000001, ...`.
// Only the grammar lives here; what the parameters mean is src/auth's.

import { COMMA, DQUOTE, EQUAL, TOKEN, quotedStringEnd, scan, skipWs, unquote } from './chars.js';

export interface Credentials {
  /** The auth scheme, lower-cased: `digest`. */
  scheme: string;
  /** Parameters by lower-cased name, quoted strings unquoted. */
  params: Map<string, string>;
}

/**
 * The same credentials read into the parameters a digest response has
 * (RFC 7616 §3.4), for the request path: one object of a fixed shape
 * instead of a Map. Values as parseCredentials gives them (quoted strings
 * unquoted); undefined when absent. Other parameters (opaque, userhash...)
 * are checked for the grammar and for repeats, not kept.
 */
export class DigestCredentials {
  /** The auth scheme, lower-cased: `digest`. */
  scheme = '';
  username: string | undefined = undefined;
  realm: string | undefined = undefined;
  nonce: string | undefined = undefined;
  uri: string | undefined = undefined;
  response: string | undefined = undefined;
  algorithm: string | undefined = undefined;
  qop: string | undefined = undefined;
  cnonce: string | undefined = undefined;
  nc: string | undefined = undefined;
  /** Parameters seen, the kept ones included. */
  count = 0;
  /** Names of the other parameters, for the repeat check; null while there are none. */
  private others: string[] | null = null;

  /** Reads a Credentials value's parameters (a test or a caller that has one already). */
  static of(c: Credentials): DigestCredentials {
    const d = new DigestCredentials();
    d.scheme = c.scheme;
    for (const [name, value] of c.params) d.add(name, value);
    return d;
  }

  /** Records one parameter; false when the name was seen before. */
  add(name: string, value: string): boolean {
    this.count++;
    switch (name) {
      case 'username':
        if (this.username !== undefined) return false;
        this.username = value;
        return true;
      case 'realm':
        if (this.realm !== undefined) return false;
        this.realm = value;
        return true;
      case 'nonce':
        if (this.nonce !== undefined) return false;
        this.nonce = value;
        return true;
      case 'uri':
        if (this.uri !== undefined) return false;
        this.uri = value;
        return true;
      case 'response':
        if (this.response !== undefined) return false;
        this.response = value;
        return true;
      case 'algorithm':
        if (this.algorithm !== undefined) return false;
        this.algorithm = value;
        return true;
      case 'qop':
        if (this.qop !== undefined) return false;
        this.qop = value;
        return true;
      case 'cnonce':
        if (this.cnonce !== undefined) return false;
        this.cnonce = value;
        return true;
      case 'nc':
        if (this.nc !== undefined) return false;
        this.nc = value;
        return true;
      default: {
        const others = this.others;
        if (others === null) this.others = [name];
        else if (others.includes(name)) return false;
        else others.push(name);
        return true;
      }
    }
  }
}

/** Most parameters one credentials value may carry; a digest response has about ten. */
const MAX_PARAMS = 32;

/**
 * The parameter names of a digest response, by length: a name read in any
 * case comes back as the constant, without a string of its own (a request
 * carries about ten of them).
 */
const KNOWN_NAMES: string[][] = [];
for (const n of ['username', 'realm', 'nonce', 'uri', 'response', 'algorithm', 'qop', 'cnonce', 'nc', 'opaque', 'userhash']) {
  (KNOWN_NAMES[n.length] ??= []).push(n);
}

/** Whether the token `s[start, end)` is `word` (lower-case letters) in any case. */
function tokenIs(s: string, start: number, end: number, word: string): boolean {
  if (end - start !== word.length) return false;
  // Tokens hold no char that `| 0x20` turns into a lower-case letter but that letter's capital.
  for (let j = 0; j < word.length; j++) if ((s.charCodeAt(start + j) | 0x20) !== word.charCodeAt(j)) return false;
  return true;
}

/** `s[start, end)` lower-cased: a known parameter name is the shared constant. */
function paramName(s: string, start: number, end: number): string {
  const candidates = KNOWN_NAMES[end - start];
  if (candidates !== undefined) for (let k = 0; k < candidates.length; k++) if (tokenIs(s, start, end, candidates[k])) return candidates[k];
  return s.slice(start, end).toLowerCase();
}

/**
 * Reads `text[start, end)` as credentials, each parameter into `out`;
 * returns the scheme lower-cased, or null when the value does not follow
 * the grammar, names a parameter twice or has more than MAX_PARAMS.
 */
function readCredentials(text: string, start: number, end: number, out: { add(name: string, value: string): boolean; readonly count: number }): string | null {
  let i = skipWs(text, start, end);
  const schemeEnd = scan(text, i, end, TOKEN);
  if (schemeEnd === i) return null;
  const scheme = tokenIs(text, i, schemeEnd, 'digest') ? 'digest' : text.slice(i, schemeEnd).toLowerCase();
  i = skipWs(text, schemeEnd, end);
  if (i === schemeEnd && i < end) return null; // the scheme must be followed by LWS
  while (i < end) {
    const nameEnd = scan(text, i, end, TOKEN);
    if (nameEnd === i) return null;
    const name = paramName(text, i, nameEnd);
    i = skipWs(text, nameEnd, end);
    if (text.charCodeAt(i) !== EQUAL) return null;
    i = skipWs(text, i + 1, end);
    let v: string;
    if (text.charCodeAt(i) === DQUOTE) {
      const close = quotedStringEnd(text, i, end);
      if (close < 0) return null;
      // Without a quoted-pair the value is what lies between the quotes: one slice.
      const slash = text.indexOf('\\', i);
      v = slash >= 0 && slash < close ? unquote(text.slice(i, close)) : text.slice(i + 1, close - 1);
      i = close;
    } else {
      const tokenEnd = scan(text, i, end, TOKEN);
      if (tokenEnd === i) return null;
      v = text.slice(i, tokenEnd);
      i = tokenEnd;
    }
    if (out.count >= MAX_PARAMS || !out.add(name, v)) return null;
    i = skipWs(text, i, end);
    if (i === end) break;
    if (text.charCodeAt(i) !== COMMA) return null;
    i = skipWs(text, i + 1, end);
    if (i === end) return null;
  }
  return scheme;
}

/** A Map that refuses a name it holds, for readCredentials. */
class ParamMap {
  readonly map = new Map<string, string>();
  get count(): number {
    return this.map.size;
  }
  add(name: string, value: string): boolean {
    if (this.map.has(name)) return false;
    this.map.set(name, value);
    return true;
  }
}

/**
 * Parses one credentials value. Returns null when it does not follow the
 * grammar, names a parameter twice, or has more than MAX_PARAMS of them:
 * a request carrying such credentials is refused, never guessed at.
 */
export function parseCredentials(value: string): Credentials | null {
  const params = new ParamMap();
  const scheme = readCredentials(value, 0, value.length, params);
  return scheme === null ? null : { scheme, params: params.map };
}

/**
 * parseCredentials for `text[start, end)` (a header field's value in place,
 * see HeaderField.text), read into a DigestCredentials; null exactly where
 * parseCredentials gives null.
 */
export function parseDigestCredentials(text: string, start = 0, end = text.length): DigestCredentials | null {
  const d = new DigestCredentials();
  const scheme = readCredentials(text, start, end, d);
  if (scheme === null) return null;
  d.scheme = scheme;
  return d;
}
