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
  parseDigits,
  scan,
  skipWs,
  SLASH,
  TOKEN,
  trimEnd,
} from './chars.js';
import { parseParams, type Params } from './params.js';

export class Via {
  constructor(
    /** `SIP/2.0` as normalised from protocol-name and version. */
    readonly protocol: string,
    /** Upper-case: UDP, TCP, TLS, SCTP, WS, WSS or an extension. */
    readonly transport: string,
    /** sent-by host as written, IPv6 references with brackets. */
    readonly host: string,
    readonly port: number | null,
    readonly params: Params,
    private readonly src: string,
    private readonly rawStart: number,
    private readonly rawEnd: number,
  ) {}

  /** This value's text as written (sliced on demand: most Vias are never printed). */
  get raw(): string {
    return this.src.slice(this.rawStart, this.rawEnd);
  }

  get branch(): string | null {
    return this.params.get('branch') ?? null;
  }

  get received(): string | null {
    return this.params.get('received') ?? null;
  }

  /** RFC 3581: undefined when absent, null when present without a value, else the port. */
  get rport(): number | null | undefined {
    const v = this.params.get('rport');
    if (v === undefined) return undefined;
    if (v === null) return null;
    const n = parseDigits(v, 0, v.length, 65535);
    return n < 0 ? null : n;
  }

  get maddr(): string | null {
    return this.params.get('maddr') ?? null;
  }

  /** The RFC 3261 magic cookie: the branch identifies the transaction (§17.2.3). */
  get hasRfc3261Branch(): boolean {
    const b = this.branch;
    return b !== null && b.length > 7 && b.startsWith('z9hG4bK');
  }

  toString(): string {
    return this.raw;
  }
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
      if (pe === i) return false;
      const nameStart = i;
      i = skipWs(s, pe, end);
      if (s.charCodeAt(i) !== SLASH) return false;
      i = skipWs(s, i + 1, end);
      const ve = scan(s, i, end, TOKEN);
      if (ve === i) return false;
      const versionStart = i;
      i = skipWs(s, ve, end);
      if (s.charCodeAt(i) !== SLASH) return false;
      i = skipWs(s, i + 1, end);
      const te = scan(s, i, end, TOKEN);
      if (te === i) return false;
      transport = upperTransport(s, i, te);
      i = skipWs(s, te, end);
      if (i === te) return false; // LWS required before sent-by
      protocol =
        pe - nameStart === 3 && lowerKnown(s, nameStart, pe, SIP_WORD) === 'sip' && ve - versionStart === 3 && s.startsWith('2.0', versionStart)
          ? 'SIP/2.0'
          : s.slice(nameStart, pe).toUpperCase() + '/' + s.slice(versionStart, ve);
    }
    let he: number;
    if (s.charCodeAt(i) === LBRACKET) {
      const rb = s.indexOf(']', i);
      if (rb < 0 || rb >= end || rb === i + 1 || scan(s, i + 1, rb, IPV6) !== rb) return false;
      he = rb + 1;
    } else {
      he = scan(s, i, end, HOST);
      if (he === i) return false;
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
      if (port < 0) return false;
      i = pe2;
    }
    const params: Params = new Map();
    const after = parseParams(s, i, end, params);
    if (after < 0) return false;
    into.push(new Via(protocol, transport, host, port, params, s, vStart, trimEnd(s, vStart, after)));
    i = after;
    if (i >= end) return true;
    // parseParams stopped at a ','
    if (s.charCodeAt(i) !== COMMA) return false;
    i++;
  }
}
