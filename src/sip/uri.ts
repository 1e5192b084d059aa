// SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), and any other
// absoluteURI kept as an opaque string with its scheme.
//
// A Uri keeps the text it was parsed from (`raw`): forwarding never rebuilds a
// URI the proxy did not change, so escapes and case survive byte-exact.

import {
  COLON,
  scanEscaped,
  EQUAL,
  knownWords,
  lowerKnown,
  PARAM_NAMES,
  HOST,
  IPV6,
  isEscaped,
  LBRACKET,
  parseDigits,
  QUESTION,
  RBRACKET,
  SCHEME,
  scan,
  SEMI,
  URI_HEADER,
  URI_PARAM,
  URI_PASSWORD,
  URI_USER,
  URIC,
} from './chars.js';

export type UriParams = Map<string, string | null>;

export class Uri {
  constructor(
    /** Lower-case scheme: sip, sips, tel, or another. */
    readonly scheme: string,
    /** User part as written (escapes kept); for tel, the number. Null when absent. */
    readonly user: string | null,
    readonly password: string | null,
    /** Host as written, IPv6 references with their brackets; '' for tel and other schemes. */
    readonly host: string,
    readonly port: number | null,
    /** uri-parameters: lower-case names, values as written (null when valueless). */
    readonly params: UriParams,
    /** The headers part after '?', as written, or null. */
    readonly headers: string | null,
    readonly raw: string,
  ) {}

  get isSip(): boolean {
    return this.scheme === 'sip' || this.scheme === 'sips';
  }

  /** The host without IPv6 brackets, lower-cased: what DNS or a socket wants. */
  get hostname(): string {
    const h = this.host;
    return (h.charCodeAt(0) === LBRACKET ? h.slice(1, -1) : h).toLowerCase();
  }

  param(name: string): string | null | undefined {
    return this.params.get(name);
  }

  hasParam(name: string): boolean {
    return this.params.has(name);
  }

  toString(): string {
    return this.raw;
  }
}

const EMPTY_PARAMS: UriParams = new Map();
const SCHEMES = knownWords(['sip', 'sips', 'tel']);

/** Parses the URI s[b, e) (default: all of s); null when it is not a well-formed URI. */
export function parseUri(s: string, b = 0, e = s.length): Uri | null {
  if (s.startsWith('sip:', b)) return parseSipUri(s, 'sip', b, b + 4, e);
  const colon = s.indexOf(':', b);
  if (colon <= b || colon >= e) return null;
  if (scan(s, b, colon, SCHEME) !== colon) return null;
  const c0 = s.charCodeAt(b) | 0x20;
  if (c0 < 0x61 || c0 > 0x7a) return null;
  const scheme = lowerKnown(s, b, colon, SCHEMES);
  if (scheme === 'sip' || scheme === 'sips') return parseSipUri(s, scheme, b, colon + 1, e);
  if (scheme === 'tel') return parseTelUri(s, b, colon + 1, e);
  // Another scheme: accepted as an opaque absoluteURI (RFC 4475 §3.1.2.6);
  // whoever routes on it decides whether it is supported (416).
  if (colon + 1 >= e || scan(s, colon + 1, e, URIC) !== e) return null;
  return new Uri(scheme, null, null, '', null, EMPTY_PARAMS, null, rawOf(s, b, e));
}

function rawOf(s: string, b: number, e: number): string {
  return b === 0 && e === s.length ? s : s.slice(b, e);
}

function parseSipUri(s: string, scheme: string, b: number, start: number, end: number): Uri | null {
  // No '@' may follow the userinfo (host, params and headers exclude it),
  // so the last one ends it; the user part itself may hold ';' and '?'.
  const at = s.lastIndexOf('@', end - 1);
  let user: string | null = null;
  let password: string | null = null;
  let i = start;
  if (at >= start) {
    let userEnd = at;
    let pc = start;
    while (pc < at && s.charCodeAt(pc) !== COLON) pc++;
    if (pc < at) {
      userEnd = pc;
      if (pc + 1 < at && !isEscaped(s, pc + 1, at, URI_PASSWORD)) return null;
      password = s.slice(pc + 1, at);
    }
    if (!isEscaped(s, start, userEnd, URI_USER)) return null;
    user = s.slice(start, userEnd);
    i = at + 1;
  }
  // host
  let hostEnd: number;
  if (s.charCodeAt(i) === LBRACKET) {
    const rb = s.indexOf(']', i);
    if (rb === -1 || rb >= end || rb === i + 1 || scan(s, i + 1, rb, IPV6) !== rb) return null;
    hostEnd = rb + 1;
  } else {
    hostEnd = scan(s, i, end, HOST);
    if (hostEnd === i) return null;
  }
  const host = s.slice(i, hostEnd);
  i = hostEnd;
  let port: number | null = null;
  if (i < end && s.charCodeAt(i) === COLON) {
    let pe = i + 1;
    while (pe < end) {
      const c = s.charCodeAt(pe);
      if (c < 0x30 || c > 0x39) break;
      pe++;
    }
    port = parseDigits(s, i + 1, pe, 65535);
    if (port < 0) return null;
    i = pe;
  }
  let params = EMPTY_PARAMS;
  if (i < end && s.charCodeAt(i) === SEMI) {
    params = new Map();
    i = parseUriParams(s, i, end, params);
    if (i < 0) return null;
  }
  let headers: string | null = null;
  if (i < end) {
    if (s.charCodeAt(i) !== QUESTION) return null;
    if (!isEscaped(s, i + 1, end, URI_HEADER)) return null;
    headers = s.slice(i + 1, end);
  }
  return new Uri(scheme, user, password, host, port, params, headers, rawOf(s, b, end));
}

/** Reads `;name[=value]` pairs from s[i] (a ';') up to '?' or `end`; returns the index reached or -1. */
function parseUriParams(s: string, i: number, end: number, into: UriParams): number {
  while (i < end && s.charCodeAt(i) === SEMI) {
    const ns = i + 1;
    const ne = scanEscaped(s, ns, end, URI_PARAM);
    if (ne <= ns) return -1;
    const name = lowerKnown(s, ns, ne, PARAM_NAMES);
    if (ne < end && s.charCodeAt(ne) === EQUAL) {
      const ve = scanEscaped(s, ne + 1, end, URI_PARAM);
      if (ve < 0) return -1;
      into.set(name, s.slice(ne + 1, ve));
      i = ve;
    } else {
      into.set(name, null);
      i = ne;
    }
    if (i < end) {
      const c = s.charCodeAt(i);
      if (c !== SEMI && c !== QUESTION) return -1;
    }
  }
  return i;
}

const TEL_NUMBER = new Uint8Array(256);
for (const c of '0123456789abcdefABCDEF*#+-.()pPwW') TEL_NUMBER[c.charCodeAt(0)] = 1;

function parseTelUri(s: string, b: number, start: number, end: number): Uri | null {
  const ne = scan(s, start, end, TEL_NUMBER);
  if (ne === start) return null;
  let params = EMPTY_PARAMS;
  let i = ne;
  if (i < end) {
    if (s.charCodeAt(i) !== SEMI) return null;
    params = new Map();
    i = parseUriParams(s, i, end, params);
    if (i !== end) return null;
  }
  return new Uri('tel', s.slice(start, ne), null, '', null, params, null, rawOf(s, b, end));
}

/** The host of a URI or Via in brackets when it is an IPv6 address. */
export function hostForUri(address: string): string {
  return address.indexOf(':') !== -1 && address.charCodeAt(0) !== LBRACKET ? '[' + address + ']' : address;
}

/** Removes the brackets of an IPv6 reference. */
export function stripBrackets(host: string): string {
  return host.charCodeAt(0) === LBRACKET && host.charCodeAt(host.length - 1) === RBRACKET ? host.slice(1, -1) : host;
}
