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

/** Most parameters one credentials value may carry; a digest response has about ten. */
const MAX_PARAMS = 32;

/**
 * Parses one credentials value. Returns null when it does not follow the
 * grammar, names a parameter twice, or has more than MAX_PARAMS of them:
 * a request carrying such credentials is refused, never guessed at.
 */
export function parseCredentials(value: string): Credentials | null {
  const end = value.length;
  let i = skipWs(value, 0, end);
  const schemeEnd = scan(value, i, end, TOKEN);
  if (schemeEnd === i) return null;
  const scheme = value.slice(i, schemeEnd).toLowerCase();
  i = skipWs(value, schemeEnd, end);
  const params = new Map<string, string>();
  if (i === schemeEnd && i < end) return null; // the scheme must be followed by LWS
  while (i < end) {
    const nameEnd = scan(value, i, end, TOKEN);
    if (nameEnd === i) return null;
    const name = value.slice(i, nameEnd).toLowerCase();
    i = skipWs(value, nameEnd, end);
    if (value.charCodeAt(i) !== EQUAL) return null;
    i = skipWs(value, i + 1, end);
    let v: string;
    if (value.charCodeAt(i) === DQUOTE) {
      const close = quotedStringEnd(value, i, end);
      if (close < 0) return null;
      v = unquote(value.slice(i, close));
      i = close;
    } else {
      const tokenEnd = scan(value, i, end, TOKEN);
      if (tokenEnd === i) return null;
      v = value.slice(i, tokenEnd);
      i = tokenEnd;
    }
    if (params.has(name) || params.size >= MAX_PARAMS) return null;
    params.set(name, v);
    i = skipWs(value, i, end);
    if (i === end) break;
    if (value.charCodeAt(i) !== COMMA) return null;
    i = skipWs(value, i + 1, end);
    if (i === end) return null;
  }
  return { scheme, params };
}
