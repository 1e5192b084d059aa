// generic-param lists of header values: `*( SEMI generic-param )` where
// SEMI = SWS ";" SWS and EQUAL = SWS "=" SWS (RFC 3261 §25.1), used by Via,
// From/To, Contact, Route and friends.

import { COMMA, DQUOTE, EQUAL, LBRACKET, lowerKnown, PARAM_NAMES, PARAM_VALUE, quotedStringEnd, scan, SEMI, skipWs, TOKEN } from './chars.js';

/** Lower-case parameter names; values as written (quoted strings keep their quotes), null when valueless. */
export type Params = Map<string, string | null>;

/**
 * Parses parameters starting at s[i] (SWS then ';' or the end of the
 * element) into `into`; with `into` null, only checks them (whoever keeps
 * the text reads them later, with paramsMap or findParam). Stops before a
 * ',' (next list element) or at `end`. Returns the index reached, or -1 on
 * a syntax error (empty parameter, missing value after '=', junk).
 */
export function parseParams(s: string, i: number, end: number, into: Params | null): number {
  for (;;) {
    i = skipWs(s, i, end);
    if (i >= end) return end;
    const c = s.charCodeAt(i);
    if (c === COMMA) return i;
    if (c !== SEMI) return -1;
    i = skipWs(s, i + 1, end);
    const ns = i;
    const ne = scan(s, i, end, TOKEN);
    if (ne === i) return -1;
    i = skipWs(s, ne, end);
    if (i < end && s.charCodeAt(i) === EQUAL) {
      i = skipWs(s, i + 1, end);
      if (i >= end) return -1;
      const vc = s.charCodeAt(i);
      let ve: number;
      if (vc === DQUOTE) {
        ve = quotedStringEnd(s, i, end);
        if (ve < 0) return -1;
      } else {
        ve = scan(s, i, end, PARAM_VALUE);
        if (ve === i) return -1;
        if (vc === LBRACKET && s.charCodeAt(ve - 1) !== 0x5d) return -1;
      }
      if (into !== null) into.set(lowerKnown(s, ns, ne, PARAM_NAMES), s.slice(i, ve));
      i = ve;
    } else if (into !== null) {
      into.set(lowerKnown(s, ns, ne, PARAM_NAMES), null);
    }
  }
}

/** The parameters s[i, end) (checked by parseParams before) as a Map. */
export function paramsMap(s: string, i: number, end: number): Params {
  const m: Params = new Map();
  parseParams(s, i, end, m);
  return m;
}

/**
 * What parseParams would put in its Map for the lower-case `name` (the last
 * value given), read in place from a list parseParams checked before:
 * undefined when absent, null when valueless. No Map, and no string but
 * the value.
 */
export function findParam(s: string, i: number, end: number, name: string): string | null | undefined {
  let vs = -2; // -2: not seen; -1: valueless
  let ve = -1;
  for (;;) {
    i = skipWs(s, i, end);
    if (i >= end || s.charCodeAt(i) !== SEMI) break;
    i = skipWs(s, i + 1, end);
    const ns = i;
    const ne = scan(s, i, end, TOKEN);
    if (ne === ns) break;
    const match = ne - ns === name.length && isLowerOf(s, ns, name);
    i = skipWs(s, ne, end);
    if (i < end && s.charCodeAt(i) === EQUAL) {
      i = skipWs(s, i + 1, end);
      const e = s.charCodeAt(i) === DQUOTE ? quotedStringEnd(s, i, end) : scan(s, i, end, PARAM_VALUE);
      if (e < 0) break;
      if (match) {
        vs = i;
        ve = e;
      }
      i = e;
    } else if (match) vs = -1;
  }
  return vs === -2 ? undefined : vs === -1 ? null : s.slice(vs, ve);
}

/**
 * The parameters of a list parseParams checked, as offsets into `s`: five
 * numbers each in `spans` (the ';', name start, name end, value start or -1
 * when valueless, value end). Returns how many parameters. No strings.
 */
export function paramSpans(s: string, i: number, end: number, spans: number[]): number {
  let n = 0;
  for (;;) {
    i = skipWs(s, i, end);
    if (i >= end || s.charCodeAt(i) !== SEMI) return n;
    const semi = i;
    i = skipWs(s, i + 1, end);
    const ns = i;
    const ne = scan(s, i, end, TOKEN);
    if (ne === ns) return n;
    i = skipWs(s, ne, end);
    let vs = -1;
    let ve = ne;
    if (i < end && s.charCodeAt(i) === EQUAL) {
      vs = skipWs(s, i + 1, end);
      ve = s.charCodeAt(vs) === DQUOTE ? quotedStringEnd(s, vs, end) : scan(s, vs, end, PARAM_VALUE);
      if (ve < 0) return n;
      i = ve;
    }
    const k = n * 5;
    spans[k] = semi;
    spans[k + 1] = ns;
    spans[k + 2] = ne;
    spans[k + 3] = vs;
    spans[k + 4] = ve;
    n++;
  }
}

/** True when the names s[a, aEnd) and s[b, bEnd) (tokens) are equal but for ASCII case. */
export function sameName(s: string, a: number, aEnd: number, b: number, bEnd: number): boolean {
  if (aEnd - a !== bEnd - b) return false;
  for (let k = 0; k < aEnd - a; k++) {
    let c = s.charCodeAt(a + k);
    let d = s.charCodeAt(b + k);
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (d >= 0x41 && d <= 0x5a) d |= 0x20;
    if (c !== d) return false;
  }
  return true;
}

/** True when s[at, at + lower.length), ASCII letters lower-cased, is `lower`. */
export function isLowerOf(s: string, at: number, lower: string): boolean {
  for (let k = 0; k < lower.length; k++) {
    let c = s.charCodeAt(at + k);
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (c !== lower.charCodeAt(k)) return false;
  }
  return true;
}

/** True when s[start, end) has no ASCII upper-case letter. */
export function isLowerCase(s: string, start: number, end: number): boolean {
  for (let k = start; k < end; k++) {
    const c = s.charCodeAt(k);
    if (c >= 0x41 && c <= 0x5a) return false;
  }
  return true;
}
