// Character classes of the RFC 3261 §25 grammar as lookup tables, so the
// parsers test a char code with one array read instead of a regex.
//
// All strings handled by src/sip are latin1 decodings of the wire bytes: one
// char per octet, so offsets in a string are offsets in the Buffer and
// UTF-8 octets survive a round trip untouched.

function table(chars: string, ranges: Array<[number, number]> = []): Uint8Array {
  const t = new Uint8Array(256);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  for (const [lo, hi] of ranges) for (let c = lo; c <= hi; c++) t[c] = 1;
  return t;
}

const ALNUM: Array<[number, number]> = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x61, 0x7a],
];

/** token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~") */
export const TOKEN = table("-.!%*_+`'~", ALNUM);

/** unreserved = alphanum / mark; mark = - _ . ! ~ * ' ( ) */
const UNRESERVED_CHARS = "-_.!~*'()";

/** Characters of a SIP URI user part, besides escapes. */
export const URI_USER = table(UNRESERVED_CHARS + '&=+$,;?/', ALNUM);
/** Characters of a SIP URI password, besides escapes. */
export const URI_PASSWORD = table(UNRESERVED_CHARS + '&=+$,', ALNUM);
/** paramchar: param-unreserved / unreserved, besides escapes. */
export const URI_PARAM = table(UNRESERVED_CHARS + '[]/:&+$', ALNUM);
/** hname / hvalue characters, besides escapes; '=' and '&' separate. */
export const URI_HEADER = table(UNRESERVED_CHARS + '[]/?:+$=&', ALNUM);
/** Host names and IPv4 (IPv6 references are checked apart). Underscore is tolerated: it is common in real host names. */
export const HOST = table('-._', ALNUM);
/** Inside an IPv6 reference. */
export const IPV6 = table(':.', [
  [0x30, 0x39],
  [0x41, 0x46],
  [0x61, 0x66],
]);
/** Characters of an absoluteURI of another scheme (RFC 2396 uric plus a few seen in the wild). */
export const URIC = table(UNRESERVED_CHARS + ';/?:@&=+$,%[]#', ALNUM);
/** scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
export const SCHEME = table('+-.', ALNUM);
/**
 * Unquoted generic-param values: token, host (IPv6 references included) and,
 * for robustness (RFC 5118 §4.5), ':' so that an unbracketed IPv6 `received`
 * is read whole.
 */
export const PARAM_VALUE = table("-.!%*_+`'~[]:", ALNUM);
/** word, of Call-ID. */
export const WORD = table('-.!%*_+`\'~()<>:\\"/[]?{}', ALNUM);

export const HEX = table('', [
  [0x30, 0x39],
  [0x41, 0x46],
  [0x61, 0x66],
]);

export const SP = 0x20;
export const HT = 0x09;
export const CR = 0x0d;
export const LF = 0x0a;
export const DQUOTE = 0x22;
export const BACKSLASH = 0x5c;
export const SEMI = 0x3b;
export const COMMA = 0x2c;
export const EQUAL = 0x3d;
export const COLON = 0x3a;
export const LAQUOT = 0x3c;
export const RAQUOT = 0x3e;
export const SLASH = 0x2f;
export const PERCENT = 0x25;
export const AT = 0x40;
export const QUESTION = 0x3f;
export const LBRACKET = 0x5b;
export const RBRACKET = 0x5d;

/** Index of the first char at or after `i` that is not SP or HT. */
export function skipWs(s: string, i: number, end: number): number {
  while (i < end) {
    const c = s.charCodeAt(i);
    if (c !== SP && c !== HT) break;
    i++;
  }
  return i;
}

/** Index just past the last char before `end` that is not SP or HT. */
export function trimEnd(s: string, start: number, end: number): number {
  while (end > start) {
    const c = s.charCodeAt(end - 1);
    if (c !== SP && c !== HT) break;
    end--;
  }
  return end;
}

/** Index just past a run of chars in `set` starting at `i`. */
export function scan(s: string, i: number, end: number, set: Uint8Array): number {
  while (i < end) {
    const c = s.charCodeAt(i);
    if (c > 255 || set[c] === 0) break;
    i++;
  }
  return i;
}

/**
 * True when s[start, end) consists of chars of `set` and well-formed %HH
 * escapes only, and is not empty.
 */
export function isEscaped(s: string, start: number, end: number, set: Uint8Array): boolean {
  if (start >= end) return false;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === PERCENT) {
      if (i + 2 >= end) return false;
      const h1 = s.charCodeAt(i + 1);
      const h2 = s.charCodeAt(i + 2);
      if (h1 > 255 || h2 > 255 || HEX[h1] === 0 || HEX[h2] === 0) return false;
      i += 2;
    } else if (c > 255 || set[c] === 0) return false;
  }
  return true;
}

/**
 * Index just past a run of chars in `set` and well-formed %HH escapes
 * starting at `i`; -1 when a '%' is not followed by two hex digits.
 */
export function scanEscaped(s: string, i: number, end: number, set: Uint8Array): number {
  while (i < end) {
    const c = s.charCodeAt(i);
    if (c === PERCENT) {
      if (i + 2 >= end) return -1;
      const h1 = s.charCodeAt(i + 1);
      const h2 = s.charCodeAt(i + 2);
      if (h1 > 255 || h2 > 255 || HEX[h1] === 0 || HEX[h2] === 0) return -1;
      i += 3;
    } else if (c > 255 || set[c] === 0) break;
    else i++;
  }
  return i;
}

/** True when s[start, end) is a non-empty token. */
export function isToken(s: string, start: number, end: number): boolean {
  return start < end && scan(s, start, end, TOKEN) === end;
}

/**
 * Index just past the closing quote of the quoted-string opening at `i`
 * (s[i] is the DQUOTE), or -1 if it is not terminated. quoted-pair escapes any
 * octet but CR and LF.
 */
export function quotedStringEnd(s: string, i: number, end: number): number {
  for (let j = i + 1; j < end; j++) {
    const c = s.charCodeAt(j);
    if (c === DQUOTE) return j + 1;
    if (c === BACKSLASH) {
      j++;
      if (j >= end) return -1;
      const n = s.charCodeAt(j);
      if (n === CR || n === LF) return -1;
    } else if (c === CR || c === LF) return -1;
  }
  return -1;
}

/** Removes surrounding quotes and quoted-pair backslashes; other strings come back unchanged. */
export function unquote(s: string): string {
  if (s.length < 2 || s.charCodeAt(0) !== DQUOTE || s.charCodeAt(s.length - 1) !== DQUOTE) return s;
  const inner = s.slice(1, -1);
  if (inner.indexOf('\\') === -1) return inner;
  let out = '';
  for (let i = 0; i < inner.length; i++) {
    const c = inner[i];
    if (c === '\\' && i + 1 < inner.length) {
      out += inner[i + 1];
      i++;
    } else out += c;
  }
  return out;
}

/** Quotes a string for use as a quoted-string. */
export function quote(s: string): string {
  return '"' + s.replace(/["\\]/g, '\\$&') + '"';
}

/** Parses 1*DIGIT in s[start, end) as a number no greater than `max`; -1 if not digits or too large. */
export function parseDigits(s: string, start: number, end: number, max: number): number {
  if (start >= end) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i) - 0x30;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
    if (n > max) return -1;
  }
  return n;
}

/** 2^32 - 1: the largest CSeq number and delta-seconds value (RFC 3261 §8.1.1.5, §25.1). */
export const MAX_UINT32 = 0xffffffff;

/**
 * A lower-case copy of s[start, end), returning an interned constant without
 * slicing when it is one of `known` (lower-case, letters, digits, '-', '.'
 * and '+' only) in any case: the hot path of parameter and scheme names.
 */
export function lowerKnown(s: string, start: number, end: number, known: KnownWords): string {
  const len = end - start;
  const list = known[len];
  if (list !== undefined) {
    outer: for (let k = 0; k < list.length; k++) {
      const cand = list[k];
      for (let i = 0; i < len; i++) {
        const c = s.charCodeAt(start + i);
        const w = cand.charCodeAt(i);
        if (c !== w && (c | 0x20) !== w) continue outer;
        if (c !== w && (w < 0x61 || w > 0x7a)) continue outer;
      }
      return cand;
    }
  }
  return s.slice(start, end).toLowerCase();
}

/** Words grouped by length, for lowerKnown. */
export type KnownWords = Array<string[] | undefined>;

export function knownWords(words: readonly string[]): KnownWords {
  const out: KnownWords = [];
  for (const w of words) (out[w.length] ??= []).push(w);
  return out;
}

/** Parameter names common in Via, URIs, Contact, From/To. */
export const PARAM_NAMES = knownWords([
  'branch',
  'rport',
  'received',
  'maddr',
  'ttl',
  'tag',
  'expires',
  'q',
  'lr',
  'transport',
  'user',
  'method',
  'gr',
  'ob',
  'reg-id',
  '+sip.instance',
  'pn-provider',
  'pn-prid',
  'pn-param',
  'alias',
  'keep',
  'line',
  'uniq',
]);
