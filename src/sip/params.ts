// generic-param lists of header values: `*( SEMI generic-param )` where
// SEMI = SWS ";" SWS and EQUAL = SWS "=" SWS (RFC 3261 §25.1), used by Via,
// From/To, Contact, Route and friends.

import { COMMA, DQUOTE, EQUAL, LBRACKET, lowerKnown, PARAM_NAMES, PARAM_VALUE, quotedStringEnd, scan, SEMI, skipWs, TOKEN } from './chars.js';

/** Lower-case parameter names; values as written (quoted strings keep their quotes), null when valueless. */
export type Params = Map<string, string | null>;

/**
 * Parses parameters starting at s[i] (SWS then ';' or the end of the
 * element) into `into`. Stops before a ',' (next list element) or at `end`.
 * Returns the index reached, or -1 on a syntax error (empty parameter,
 * missing value after '=', junk).
 */
export function parseParams(s: string, i: number, end: number, into: Params): number {
  for (;;) {
    i = skipWs(s, i, end);
    if (i >= end) return end;
    const c = s.charCodeAt(i);
    if (c === COMMA) return i;
    if (c !== SEMI) return -1;
    i = skipWs(s, i + 1, end);
    const ne = scan(s, i, end, TOKEN);
    if (ne === i) return -1;
    const name = lowerKnown(s, i, ne, PARAM_NAMES);
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
      into.set(name, s.slice(i, ve));
      i = ve;
    } else {
      into.set(name, null);
    }
  }
}
