// name-addr / addr-spec values with header parameters (RFC 3261 §20.10,
// §25.1): From, To, Contact, Route, Record-Route, Path, Reply-To...

import {
  COLON,
  COMMA,
  SCHEME,
  scan,
  DQUOTE,
  LAQUOT,
  quotedStringEnd,
  SEMI,
  skipWs,
  SP,
  HT,
  TOKEN,
  trimEnd,
  unquote,
} from './chars.js';
import { findParam, paramsMap, parseParams, type Params } from './params.js';
import { parseUri, Uri } from './uri.js';

export class NameAddr {
  private parsedUri: Uri | undefined;
  private cParams: Params | undefined;
  private cTag: string | null | undefined;

  constructor(
    /** As written: a quoted-string with its quotes, or tokens; null when absent. */
    readonly displayName: string | null,
    /** The URI's text (inside the <> when there are). */
    readonly uriText: string,
    /**
     * Header parameters (after the URI): tag, expires, q, +sip.instance,
     * reg-id...; null: read from `src[paramsStart, rawEnd)`, checked by
     * parseParams, when first asked for.
     */
    params: Params | null,
    private readonly src: string,
    private readonly rawStart: number,
    private readonly rawEnd: number,
    /** True when the URI was enclosed in <>. */
    readonly angle: boolean,
    private readonly paramsStart: number = rawEnd,
  ) {
    this.parsedUri = undefined;
    this.cParams = params ?? undefined;
    this.cTag = undefined;
  }

  /** Header parameters (after the URI): tag, expires, q, +sip.instance, reg-id... Made on first use: From and To are mostly asked for their tag only. */
  get params(): Params {
    let p = this.cParams;
    if (p === undefined) {
      p = paramsMap(this.src, this.paramsStart, this.rawEnd);
      this.cParams = p;
    }
    return p;
  }

  /** The value's text as written, from the display name to the last parameter. */
  get raw(): string {
    return this.src.slice(this.rawStart, this.rawEnd);
  }

  /**
   * The URI, parsed on first use (a proxy reads most From and To URIs never).
   * A URI that is not well formed comes back as an opaque Uri with an empty
   * scheme; see uriIsValid.
   */
  get uri(): Uri {
    let u = this.parsedUri;
    if (u === undefined) {
      u = parseUri(this.uriText) ?? new Uri('', null, null, '', null, new Map(), null, this.uriText);
      this.parsedUri = u;
    }
    return u;
  }

  get uriIsValid(): boolean {
    return this.uri.scheme !== '';
  }

  get tag(): string | null {
    const p = this.cParams;
    if (p !== undefined) return p.get('tag') ?? null;
    let t = this.cTag;
    if (t === undefined) {
      t = findParam(this.src, this.paramsStart, this.rawEnd, 'tag') ?? null;
      this.cTag = t;
    }
    return t;
  }

  param(name: string): string | null | undefined {
    const p = this.cParams;
    return p !== undefined ? p.get(name) : findParam(this.src, this.paramsStart, this.rawEnd, name);
  }

  /** The display name without quotes and quoted-pair escapes. */
  get displayText(): string | null {
    return this.displayName === null ? null : unquote(this.displayName);
  }

  toString(): string {
    return this.raw;
  }
}

/** Where the last element parseNameAddrAt read ends: at ',' or the end (parsing is synchronous: no object per element). */
let elementEnd = 0;

/**
 * Parses one name-addr or addr-spec with its parameters at s[i]; stops at a
 * ',' that ends the element when `inList` (its end in elementEnd), else
 * requires the end of the string. Null on a syntax error.
 */
function parseNameAddrAt(s: string, i: number, end: number, inList: boolean): NameAddr | null {
  i = skipWs(s, i, end);
  const start = i;
  let display: string | null = null;
  let uriStart = -1;
  let uriEnd = -1;
  let angle = false;
  const c = s.charCodeAt(i);
  if (c === DQUOTE) {
    const qe = quotedStringEnd(s, i, end);
    if (qe < 0) return null;
    display = s.slice(i, qe);
    i = skipWs(s, qe, end);
    if (s.charCodeAt(i) !== LAQUOT) return null;
  } else if (c !== LAQUOT) {
    // Either display-name tokens followed by '<', or an addr-spec.
    let j = i;
    for (; j < end; j++) {
      const d = s.charCodeAt(j);
      if (d === LAQUOT) break;
      if (d !== SP && d !== HT && (d > 255 || TOKEN[d] === 0)) break;
    }
    if (j < end && s.charCodeAt(j) === LAQUOT) {
      const de = trimEnd(s, i, j);
      display = de > i ? s.slice(i, de) : null;
      i = j;
    } else {
      // addr-spec: the URI ends at the first ';' (header parameters), ',' or
      // white space. A URI with ';', ',' or '?' of its own must be in <>
      // (RFC 3261 §20.10), so '?' here is an error.
      let k = i;
      for (; k < end; k++) {
        const d = s.charCodeAt(k);
        if (d === SEMI || d === SP || d === HT || (d === COMMA && inList)) break;
      }
      uriStart = i;
      uriEnd = k;
      for (let q = uriStart; q < uriEnd; q++) if (s.charCodeAt(q) === 0x3f) return null;
      i = k;
    }
  }
  if (uriStart < 0) {
    // s[i] is '<'
    const gt = s.indexOf('>', i + 1);
    if (gt < 0 || gt >= end) return null;
    uriStart = i + 1;
    uriEnd = gt;
    angle = true;
    i = gt + 1;
  }
  if (!looksLikeUri(s, uriStart, uriEnd)) return null;
  const pe = parseParams(s, i, end, null);
  if (pe < 0) return null;
  if (!inList && pe !== end) return null;
  const rawEnd = trimEnd(s, start, pe);
  elementEnd = pe;
  return new NameAddr(display, s.slice(uriStart, uriEnd), null, s, start, rawEnd, angle, i);
}

/** scheme ":" and no white space or angle brackets: the cheap part of URI syntax, checked for every From and To. */
function looksLikeUri(s: string, start: number, end: number): boolean {
  const se = scan(s, start, end, SCHEME);
  if (se === start || se >= end || s.charCodeAt(se) !== COLON) return false;
  const c0 = s.charCodeAt(start) | 0x20;
  if (c0 < 0x61 || c0 > 0x7a) return false;
  for (let i = se + 1; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === SP || c === HT || c === LAQUOT || c === 0x3e || c === DQUOTE || c < 0x20) return false;
  }
  return se + 1 < end;
}

/** Parses a single-valued name-addr/addr-spec header value s[start, end) (From, To). */
export function parseNameAddr(s: string, start = 0, end = s.length): NameAddr | null {
  return parseNameAddrAt(s, start, end, false);
}

/**
 * Parses a comma-separated list of name-addr/addr-spec values (Contact,
 * Route, Record-Route, Path). Null on a syntax error or an empty element.
 */
export function parseNameAddrList(s: string, into: NameAddr[], start = 0, end = s.length): boolean {
  return nameAddrsAt(s, into, into.length, start, end) >= 0;
}

/**
 * parseNameAddrList storing the values at into[n], into[n + 1]... (over
 * what is there): how many `into` holds after them, or -1 on an error.
 */
export function nameAddrsAt(s: string, into: Array<NameAddr | undefined>, n: number, start: number, end: number): number {
  let i = start;
  for (;;) {
    const a = parseNameAddrAt(s, i, end, true);
    if (a === null) return -1;
    into[n++] = a;
    i = skipWs(s, elementEnd, end);
    if (i >= end) return n;
    if (s.charCodeAt(i) !== COMMA) return -1;
    i++;
  }
}
