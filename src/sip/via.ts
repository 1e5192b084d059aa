// Via header values (RFC 3261 §20.42, §25.1; RFC 3581 rport).
//
//   via-parm = sent-protocol LWS sent-by *( SEMI via-params )
//   sent-protocol = protocol-name SLASH protocol-version SLASH transport
//   sent-by = host [ COLON port ]
// with SLASH, COLON, SEMI and EQUAL allowing white space around them.

import {
  COLON,
  HT,
  SP,
  knownWords,
  lowerKnown,
  COMMA,
  HOST,
  IPV6,
  LBRACKET,
  PARAM_NAMES,
  parseDigits,
  RBRACKET,
  scan,
  skipWs,
  SLASH,
  TOKEN,
  trimEnd,
} from './chars.js';
import { findParam, isLowerCase, isLowerOf, paramSpans, paramsMap, parseParams, sameName, type Params } from './params.js';

export class Via {
  private cParams: Params | undefined;
  private cBranch: string | null | undefined;

  constructor(
    /** `SIP/2.0` as normalised from protocol-name and version. */
    readonly protocol: string,
    /** Upper-case: UDP, TCP, TLS, SCTP, WS, WSS or an extension. */
    readonly transport: string,
    /** sent-by host as written, IPv6 references with brackets. */
    readonly host: string,
    readonly port: number | null,
    /** The parameters; null: read from `src[paramsStart, rawEnd)`, checked by parseParams, when first asked for. */
    params: Params | null,
    private readonly src: string,
    private readonly rawStart: number,
    private readonly rawEnd: number,
    private readonly paramsStart: number = rawEnd,
  ) {
    this.cParams = params ?? undefined;
    this.cBranch = undefined;
  }

  /** This value's text as written (sliced on demand: most Vias are never printed). */
  get raw(): string {
    return this.src.slice(this.rawStart, this.rawEnd);
  }

  /** Lower-case names, values as written (null when valueless). Made on first use: most Vias are asked for their branch only. */
  get params(): Params {
    let p = this.cParams;
    if (p === undefined) {
      p = paramsMap(this.src, this.paramsStart, this.rawEnd);
      this.cParams = p;
    }
    return p;
  }

  /** params.get(name) for a lower-case name, without making the Map. */
  param(name: string): string | null | undefined {
    const p = this.cParams;
    return p !== undefined ? p.get(name) : findParam(this.src, this.paramsStart, this.rawEnd, name);
  }

  get branch(): string | null {
    const p = this.cParams;
    if (p !== undefined) return p.get('branch') ?? null;
    let b = this.cBranch;
    if (b === undefined) {
      b = findParam(this.src, this.paramsStart, this.rawEnd, 'branch') ?? null;
      this.cBranch = b;
    }
    return b;
  }

  get received(): string | null {
    return this.param('received') ?? null;
  }

  /** RFC 3581: undefined when absent, null when present without a value, else the port. */
  get rport(): number | null | undefined {
    const v = this.param('rport');
    if (v === undefined) return undefined;
    if (v === null) return null;
    const n = parseDigits(v, 0, v.length, 65535);
    return n < 0 ? null : n;
  }

  get maddr(): string | null {
    return this.param('maddr') ?? null;
  }

  /** The RFC 3261 magic cookie: the branch identifies the transaction (§17.2.3). */
  get hasRfc3261Branch(): boolean {
    const b = this.branch;
    return b !== null && b.length > 7 && b.startsWith('z9hG4bK');
  }

  /**
   * The value stampedVia (response.js) writes for this Via received from
   * `sourceAddress`:`sourcePort`, or null when nothing needs to change.
   * What it copies unchanged is sliced from the source in runs, not
   * rebuilt parameter by parameter.
   */
  stamped(sourceAddress: string, sourcePort: number): string | null {
    const wantsRport = this.param('rport') !== undefined;
    if (!wantsRport && sameHost(this.host, sourceAddress)) return null;
    const s = this.src;
    const n = this.cParams === undefined ? paramSpans(s, this.paramsStart, this.rawEnd, SPANS) : -1;
    // A Map given or made already, or a name given twice (one Map entry: its first place, its last value): written from the Map.
    if (n < 0 || hasDuplicate(s, n)) return this.stampedFromMap(sourceAddress, sourcePort);
    // What is written as stampedFromMap would write it is copied: s[runStart, runEnd), pending.
    let out = '';
    let runStart = -1;
    let runEnd = -1;
    if (this.hasCanonicalHead()) {
      runStart = this.rawStart;
      runEnd = this.paramsStart;
    } else out = 'SIP/2.0/' + this.transport + ' ' + this.host + (this.port !== null ? ':' + this.port : '');
    for (let j = 0; j < n * 5; j += 5) {
      const semi = SPANS[j];
      const ns = SPANS[j + 1];
      const ne = SPANS[j + 2];
      const vs = SPANS[j + 3];
      const ve = SPANS[j + 4];
      if (ne - ns === 8 && isLowerOf(s, ns, 'received')) continue;
      // `;name` or `;name=value`, the name in lower case, no white space: as the Map would give it back.
      const plain = ns === semi + 1 && (vs === -1 || vs === ne + 1) && isLowerCase(s, ns, ne);
      const rport = ne - ns === 5 && isLowerOf(s, ns, 'rport');
      if (plain && (!rport || vs === -1)) {
        if (runEnd !== semi) {
          if (runStart >= 0) out += s.slice(runStart, runEnd);
          runStart = semi;
        }
        runEnd = ve;
        if (rport) {
          out += s.slice(runStart, runEnd) + '=' + sourcePort;
          runStart = runEnd = -1;
        }
        continue;
      }
      if (runStart >= 0) out += s.slice(runStart, runEnd);
      runStart = runEnd = -1;
      if (rport) out += ';rport=' + sourcePort;
      else {
        const name = lowerKnown(s, ns, ne, PARAM_NAMES);
        out += vs === -1 ? ';' + name : ';' + name + '=' + s.slice(vs, ve);
      }
    }
    if (runStart >= 0) out += s.slice(runStart, runEnd);
    return out + ';received=' + sourceAddress;
  }

  /** True when s[rawStart, paramsStart) is `SIP/2.0/` transport SP host [":" port] as stamped() would write it. */
  private hasCanonicalHead(): boolean {
    const s = this.src;
    const t = this.transport;
    const h = this.host;
    const at = this.rawStart + 8 + t.length + 1;
    const hostEnd = at + h.length;
    if (!s.startsWith('SIP/2.0/', this.rawStart) || !s.startsWith(t, this.rawStart + 8) || s.charCodeAt(at - 1) !== SP || !s.startsWith(h, at)) return false;
    const port = this.port;
    if (port === null) return this.paramsStart === hostEnd;
    return s.charCodeAt(hostEnd) === COLON && this.paramsStart - hostEnd - 1 === digits(port) && parseDigits(s, hostEnd + 1, this.paramsStart, 65535) === port;
  }

  private stampedFromMap(sourceAddress: string, sourcePort: number): string {
    let out = 'SIP/2.0/' + this.transport + ' ' + this.host + (this.port !== null ? ':' + this.port : '');
    for (const [k, v] of this.params) {
      if (k === 'received') continue;
      if (k === 'rport') out += ';rport=' + sourcePort;
      else out += v === null ? ';' + k : ';' + k + '=' + v;
    }
    return out + ';received=' + sourceAddress;
  }

  toString(): string {
    return this.raw;
  }
}

// Offsets of the parameters being stamped (stamping is synchronous: one array serves all).
const SPANS: number[] = [];

function hasDuplicate(s: string, n: number): boolean {
  for (let j = 5; j < n * 5; j += 5) {
    for (let i = 0; i < j; i += 5) if (sameName(s, SPANS[i + 1], SPANS[i + 2], SPANS[j + 1], SPANS[j + 2])) return true;
  }
  return false;
}

/** Decimal digits of a port number. */
function digits(n: number): number {
  return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : 5;
}

/** stripBrackets(host).toLowerCase() === address.toLowerCase(), without the copies when both are ASCII. */
function sameHost(host: string, address: string): boolean {
  let hs = 0;
  let he = host.length;
  if (host.charCodeAt(0) === LBRACKET && host.charCodeAt(he - 1) === RBRACKET) {
    hs = 1;
    he--;
  }
  if (!isAscii(host, hs, he) || !isAscii(address, 0, address.length)) return host.slice(hs, he).toLowerCase() === address.toLowerCase();
  if (he - hs !== address.length) return false;
  for (let k = 0; k < address.length; k++) {
    let c = host.charCodeAt(hs + k);
    let d = address.charCodeAt(k);
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (d >= 0x41 && d <= 0x5a) d |= 0x20;
    if (c !== d) return false;
  }
  return true;
}

function isAscii(s: string, start: number, end: number): boolean {
  for (let k = start; k < end; k++) if (s.charCodeAt(k) > 0x7f) return false;
  return true;
}

const SIP_WORD = knownWords(['sip']);
const TRANSPORTS = knownWords(['udp', 'tcp', 'tls', 'sctp', 'ws', 'wss']);
const UPPER: Record<string, string> = { udp: 'UDP', tcp: 'TCP', tls: 'TLS', sctp: 'SCTP', ws: 'WS', wss: 'WSS' };

/** UDP, TCP or TLS in upper case followed by SP or HT at s[t], else null. */
function commonTransport(s: string, t: number): string | null {
  const a = s.charCodeAt(t);
  const b = s.charCodeAt(t + 1);
  const c = s.charCodeAt(t + 2);
  const d = s.charCodeAt(t + 3);
  if (d !== SP && d !== HT) return null;
  if (a === 0x55 && b === 0x44 && c === 0x50) return 'UDP';
  if (a === 0x54) {
    if (b === 0x43 && c === 0x50) return 'TCP';
    if (b === 0x4c && c === 0x53) return 'TLS';
  }
  return null;
}

function upperTransport(s: string, start: number, end: number): string {
  const lower = lowerKnown(s, start, end, TRANSPORTS);
  const known = UPPER[lower]; // typeof: `__proto__` and `constructor` are tokens too
  return typeof known === 'string' ? known : lower.toUpperCase();
}

/** Parses one Via header field value s[start, end) (possibly several comma-separated via-parms) into `into`. */
export function parseVias(s: string, into: Via[], start = 0, end = s.length): boolean {
  return viasAt(s, into, into.length, start, end) >= 0;
}

/**
 * parseVias storing the values at into[n], into[n + 1]... (over what is
 * there): how many `into` holds after them, or -1 when one is malformed.
 */
export function viasAt(s: string, into: Array<Via | undefined>, n: number, start: number, end: number): number {
  let i = start;
  for (;;) {
    i = skipWs(s, i, end);
    const vStart = i;
    let protocol: string;
    let transport: string;
    const fast = s.startsWith('SIP/2.0/', i) ? commonTransport(s, i + 8) : null;
    if (fast !== null) {
      // The shape nearly every UA sends: "SIP/2.0/UDP host".
      protocol = 'SIP/2.0';
      transport = fast;
      i = skipWs(s, i + 11, end);
    } else {
      const pe = scan(s, i, end, TOKEN);
      if (pe === i) return -1;
      const nameStart = i;
      i = skipWs(s, pe, end);
      if (s.charCodeAt(i) !== SLASH) return -1;
      i = skipWs(s, i + 1, end);
      const ve = scan(s, i, end, TOKEN);
      if (ve === i) return -1;
      const versionStart = i;
      i = skipWs(s, ve, end);
      if (s.charCodeAt(i) !== SLASH) return -1;
      i = skipWs(s, i + 1, end);
      const te = scan(s, i, end, TOKEN);
      if (te === i) return -1;
      transport = upperTransport(s, i, te);
      i = skipWs(s, te, end);
      if (i === te) return -1; // LWS required before sent-by
      protocol =
        pe - nameStart === 3 && lowerKnown(s, nameStart, pe, SIP_WORD) === 'sip' && ve - versionStart === 3 && s.startsWith('2.0', versionStart)
          ? 'SIP/2.0'
          : s.slice(nameStart, pe).toUpperCase() + '/' + s.slice(versionStart, ve);
    }
    let he: number;
    if (s.charCodeAt(i) === LBRACKET) {
      const rb = s.indexOf(']', i);
      if (rb < 0 || rb >= end || rb === i + 1 || scan(s, i + 1, rb, IPV6) !== rb) return -1;
      he = rb + 1;
    } else {
      he = scan(s, i, end, HOST);
      if (he === i) return -1;
    }
    const host = s.slice(i, he);
    i = skipWs(s, he, end);
    let port: number | null = null;
    if (s.charCodeAt(i) === COLON) {
      i = skipWs(s, i + 1, end);
      let pe2 = i;
      while (pe2 < end) {
        const c = s.charCodeAt(pe2);
        if (c < 0x30 || c > 0x39) break;
        pe2++;
      }
      port = parseDigits(s, i, pe2, 65535);
      if (port < 0) return -1;
      i = pe2;
    }
    const after = parseParams(s, i, end, null);
    if (after < 0) return -1;
    into[n++] = new Via(protocol, transport, host, port, null, s, vStart, trimEnd(s, vStart, after), i);
    i = after;
    if (i >= end) return n;
    // parseParams stopped at a ','
    if (s.charCodeAt(i) !== COMMA) return -1;
    i++;
  }
}
