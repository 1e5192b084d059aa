// bench/wire: the load generator's own reader of SIP datagrams (issue 10).
//
// bench/load must not parse what it receives with src/sip: a bug there
// (in Portier's parser or in what its serializer writes) would then be
// read back by the same code and could hide itself. This is a separate,
// small reader written from RFC 3261 for the messages the generator reads,
// nothing from src/ imported:
//
//   start line   Request-Line (Method SP Request-URI SP SIP/2.0, §7.1) or
//                Status-Line (SIP/2.0 SP 3DIGIT SP Reason-Phrase, §7.2);
//                CRLFs before it are skipped (§7.5)
//   headers      name ":" value, the name lower-cased and compact forms
//                expanded (§7.3.3 and the IANA registry), folded lines
//                joined with one SP (§7.3.1), CRLF line ends only
//   required     Via, From, To, Call-ID, CSeq (§8.1.1), each of From, To,
//                Call-ID, CSeq (and Content-Length) once; a request's CSeq
//                method is its method (§8.1.1.5); From/To are name-addr or
//                addr-spec with well-formed parameters, tag extracted;
//                every Via element is SIP/2.0/transport sent-by params
//   body         Content-Length, when present, at most the octets after
//                the blank line (§18.3: a shorter UDP datagram is dropped;
//                octets past it are ignored); absent is allowed on UDP
//
// Anything else malformed: readWire returns null (bench/load counts it in
// stats.unparseable). It does not throw: it only indexes strings.
//
// Allocation-light: one latin1 string per datagram, the name of a header
// found in a small table of usual spellings costs no string (an interned
// constant), header values are slices; Via, Contact and Record-Route are
// split (top-level commas, outside quotes and <>) only when asked.

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const SEMI = 0x3b;
const COLON = 0x3a;
const SLASH = 0x2f;
const EQUAL = 0x3d;
const LAQUOT = 0x3c;
const RAQUOT = 0x3e;

/** token (§25.1): alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" */
const TOKEN = new Uint8Array(128);
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;
for (const ch of "-.!%*_+`'~") TOKEN[ch.charCodeAt(0)] = 1;
/** gen-value that is not a quoted-string: token / host (IPv6 reference with ":" "[" "]"). */
const GENVALUE = TOKEN.slice();
for (const ch of ':[]') GENVALUE[ch.charCodeAt(0)] = 1;

const isToken = (c: number): boolean => c < 128 && TOKEN[c] === 1;
const isWs = (c: number): boolean => c === SP || c === HT;

/** The full names of the compact forms: RFC 3261 §7.3.3 (c e f i k l m s t v) and the IANA registry. */
const COMPACT: Record<string, string> = {
  a: 'accept-contact',
  b: 'referred-by',
  c: 'content-type',
  d: 'request-disposition',
  e: 'content-encoding',
  f: 'from',
  i: 'call-id',
  j: 'reject-contact',
  k: 'supported',
  l: 'content-length',
  m: 'contact',
  n: 'identity-info',
  o: 'event',
  r: 'refer-to',
  s: 'subject',
  t: 'to',
  u: 'allow-events',
  v: 'via',
  x: 'session-expires',
  y: 'identity',
};

// Spellings looked up without a slice: by length, [spelling, canonical name].
const SPELLED: Array<Array<[string, string]>> = [];
function spell(written: string, canonical: string): void {
  (SPELLED[written.length] ??= []).push([written, canonical]);
}
// RFC 3261's spellings first, then Title-Case and lower case.
spell('Call-ID', 'call-id');
spell('CSeq', 'cseq');
spell('WWW-Authenticate', 'www-authenticate');
// The canonical names are literals (internalized strings: comparing them is comparing pointers).
for (const canonical of [
  'via', 'from', 'to', 'call-id', 'cseq', 'contact', 'content-length', 'content-type', 'record-route', 'route',
  'max-forwards', 'user-agent', 'server', 'allow', 'supported', 'require', 'expires', 'min-expires', 'date',
  'www-authenticate', 'proxy-authenticate', 'authorization', 'proxy-authorization', 'authentication-info',
  'path', 'service-route', 'reason', 'warning', 'event', 'allow-events', 'subscription-state',
]) {
  spell(canonical.replace(/(^|-)([a-z])/g, (_, d: string, ch: string) => d + ch.toUpperCase()), canonical);
  spell(canonical, canonical);
}
spell('Record-route', 'record-route');
for (const [k, v] of Object.entries(COMPACT)) {
  spell(k, v);
  spell(k.toUpperCase(), v);
}
/** Other names, as written -> canonical (bounded: the names seen are few). */
const SEEN = new Map<string, string>();

/** The canonical name of s[i, end), or null when it is not a token. */
function headerName(s: string, i: number, end: number): string | null {
  const n = end - i;
  const spelled = SPELLED[n];
  if (spelled !== undefined) {
    const c0 = s.charCodeAt(i);
    for (let k = 0; k < spelled.length; k++) {
      const w = spelled[k][0];
      if (w.charCodeAt(0) === c0 && s.startsWith(w, i)) return spelled[k][1];
    }
  }
  const written = s.slice(i, end);
  const known = SEEN.get(written);
  if (known !== undefined) return known;
  if (n === 0) return null;
  for (let k = i; k < end; k++) if (!isToken(s.charCodeAt(k))) return null;
  let canonical = written.toLowerCase();
  if (n === 1) canonical = COMPACT[canonical] ?? canonical;
  if (SEEN.size < 1024) SEEN.set(written, canonical);
  return canonical;
}

const METHODS = ['INVITE', 'ACK', 'BYE', 'CANCEL', 'REGISTER', 'OPTIONS', 'INFO', 'UPDATE', 'PRACK', 'SUBSCRIBE', 'NOTIFY', 'REFER', 'MESSAGE', 'PUBLISH'];

/** The method token s[i, end) (case-sensitive, §7.1): an interned constant when usual; null when not a token. */
function methodAt(s: string, i: number, end: number): string | null {
  const n = end - i;
  if (n === 0) return null;
  for (let k = 0; k < METHODS.length; k++) if (METHODS[k].length === n && s.startsWith(METHODS[k], i)) return METHODS[k];
  for (let k = i; k < end; k++) if (!isToken(s.charCodeAt(k))) return null;
  return s.slice(i, end);
}

/** "SIP/2.0" at s[i] (case-insensitive, §7.1). */
function isSip20(s: string, i: number): boolean {
  return (
    (s.charCodeAt(i) | 0x20) === 0x73 &&
    (s.charCodeAt(i + 1) | 0x20) === 0x69 &&
    (s.charCodeAt(i + 2) | 0x20) === 0x70 &&
    s.charCodeAt(i + 3) === SLASH &&
    s.charCodeAt(i + 4) === 0x32 &&
    s.charCodeAt(i + 5) === 0x2e &&
    s.charCodeAt(i + 6) === 0x30
  );
}

function skipWs(s: string, i: number, end: number): number {
  while (i < end && isWs(s.charCodeAt(i))) i++;
  return i;
}

function trimEnd(s: string, i: number, end: number): number {
  while (end > i && isWs(s.charCodeAt(end - 1))) end--;
  return end;
}

/** s[i] is a DQUOTE: the index after the closing one (quoted-pair skipped), or -1. */
function quotedEnd(s: string, i: number, end: number): number {
  for (let k = i + 1; k < end; k++) {
    const c = s.charCodeAt(k);
    if (c === BACKSLASH) k++;
    else if (c === DQUOTE) return k + 1;
  }
  return -1;
}

/** The next comma at the top level (outside quotes and <>) from i, `end` when none, -1 when a quote or <> is left open. */
function nextComma(s: string, i: number, end: number): number {
  for (let k = i; k < end; k++) {
    const c = s.charCodeAt(k);
    if (c === COMMA) return k;
    if (c === DQUOTE) {
      k = quotedEnd(s, k, end) - 1;
      if (k < 0) return -1;
    } else if (c === LAQUOT) {
      k = s.indexOf('>', k + 1);
      if (k === -1 || k >= end) return -1;
    }
  }
  return end;
}

// Results of scanParams / scanAddr (module scratch: no object per call).
let tagStart = -1;
let tagEnd = -1;
let uriStart = 0;
let uriEnd = 0;
let angle = false;

/** *( SEMI generic-param ) from i to end (§25.1); records a tag parameter's token. */
function scanParams(s: string, i: number, end: number): boolean {
  tagStart = -1;
  tagEnd = -1;
  for (;;) {
    i = skipWs(s, i, end);
    if (i === end) return true;
    if (s.charCodeAt(i) !== SEMI) return false;
    i = skipWs(s, i + 1, end);
    const ns = i;
    while (i < end && isToken(s.charCodeAt(i))) i++;
    if (i === ns) return false;
    const ne = i;
    i = skipWs(s, i, end);
    let vs = -1;
    let ve = -1;
    if (i < end && s.charCodeAt(i) === EQUAL) {
      i = skipWs(s, i + 1, end);
      vs = i;
      if (i < end && s.charCodeAt(i) === DQUOTE) {
        i = quotedEnd(s, i, end);
        if (i === -1) return false;
      } else {
        while (i < end) {
          const c = s.charCodeAt(i);
          if (c >= 128 || GENVALUE[c] !== 1) break;
          i++;
        }
        if (i === vs) return false;
      }
      ve = i;
    }
    if (ne - ns === 3 && (s.charCodeAt(ns) | 0x20) === 0x74 && (s.charCodeAt(ns + 1) | 0x20) === 0x61 && (s.charCodeAt(ns + 2) | 0x20) === 0x67) {
      // tag-param = "tag" EQUAL token
      if (vs === -1 || s.charCodeAt(vs) === DQUOTE) return false;
      tagStart = vs;
      tagEnd = ve;
    }
  }
}

/**
 * One name-addr or addr-spec with header parameters in s[i, end) (§20.10,
 * §25.1): sets uriStart/uriEnd (inside the <> when there are), angle, and
 * the tag. Without <>, the URI ends at the first ";" (a URI with ";", ","
 * or "?" must be in <>).
 */
function scanAddr(s: string, i: number, end: number): boolean {
  i = skipWs(s, i, end);
  end = trimEnd(s, i, end);
  if (i === end) return false;
  let lt = -1;
  if (s.charCodeAt(i) === DQUOTE) {
    const q = quotedEnd(s, i, end);
    if (q === -1) return false;
    lt = skipWs(s, q, end);
    if (lt === end || s.charCodeAt(lt) !== LAQUOT) return false;
  } else {
    let k = i;
    for (; k < end; k++) {
      const c = s.charCodeAt(k);
      if (c === LAQUOT) {
        lt = k;
        break;
      }
      if (c === SEMI || c === DQUOTE || c === RAQUOT) break;
    }
    if (lt === -1) {
      // addr-spec: no display name, no white space, params after the first ";".
      if (k < end && s.charCodeAt(k) !== SEMI) return false;
      for (let j = i; j < k; j++) if (isWs(s.charCodeAt(j))) return false;
      angle = false;
      uriStart = i;
      uriEnd = k;
      const colon = s.indexOf(':', i);
      return colon !== -1 && colon < k && scanParams(s, k, end);
    }
    // display-name as tokens and LWS
    for (let j = i; j < lt; j++) {
      const c = s.charCodeAt(j);
      if (!isToken(c) && !isWs(c)) return false;
    }
  }
  const gt = s.indexOf('>', lt + 1);
  if (gt === -1 || gt >= end) return false;
  const u = s.indexOf('<', lt + 1);
  if (u !== -1 && u < gt) return false;
  angle = true;
  uriStart = lt + 1;
  uriEnd = gt;
  const colon = s.indexOf(':', uriStart);
  if (colon === -1 || colon >= gt) return false;
  return scanParams(s, gt + 1, end);
}

/** via-parm (§20.42): sent-protocol LWS sent-by *( SEMI via-params ), protocol SIP/2.0. */
function scanVia(s: string, i: number, end: number): boolean {
  i = skipWs(s, i, end);
  end = trimEnd(s, i, end);
  // protocol-name SLASH protocol-version SLASH transport (SLASH = SWS "/" SWS)
  let ts = i;
  while (i < end && isToken(s.charCodeAt(i))) i++;
  if (i - ts !== 3 || (s.charCodeAt(ts) | 0x20) !== 0x73 || (s.charCodeAt(ts + 1) | 0x20) !== 0x69 || (s.charCodeAt(ts + 2) | 0x20) !== 0x70) return false;
  i = skipWs(s, i, end);
  if (s.charCodeAt(i) !== SLASH) return false;
  i = skipWs(s, i + 1, end);
  if (!(s.charCodeAt(i) === 0x32 && s.charCodeAt(i + 1) === 0x2e && s.charCodeAt(i + 2) === 0x30) || isToken(s.charCodeAt(i + 3))) return false;
  i = skipWs(s, i + 3, end);
  if (s.charCodeAt(i) !== SLASH) return false;
  i = skipWs(s, i + 1, end);
  ts = i;
  while (i < end && isToken(s.charCodeAt(i))) i++;
  if (i === ts || i === end || !isWs(s.charCodeAt(i))) return false;
  i = skipWs(s, i, end);
  // sent-by = host [ COLON port ]
  const hs = i;
  if (s.charCodeAt(i) === 0x5b) {
    const rb = s.indexOf(']', i);
    if (rb === -1 || rb >= end) return false;
    i = rb + 1;
  } else {
    while (i < end) {
      const c = s.charCodeAt(i);
      if (!((c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a) || c === 0x2d || c === 0x2e)) break;
      i++;
    }
  }
  if (i === hs) return false;
  const afterHost = i;
  i = skipWs(s, i, end);
  if (i < end && s.charCodeAt(i) === COLON) {
    i = skipWs(s, i + 1, end);
    const ps = i;
    while (i < end && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) i++;
    if (i === ps || i - ps > 5) return false;
  } else i = afterHost;
  return scanParams(s, i, end);
}

/** A parsed datagram: what bench/load reads of it. Header names are canonical (lower-case, full form). */
export class WireMessage {
  constructor(
    readonly isRequest: boolean,
    /** The request's method, '' for a response. */
    readonly method: string,
    /** The Request-URI as written, '' for a response. */
    readonly uri: string,
    /** The response's status code, 0 for a request. */
    readonly status: number,
    readonly reason: string,
    /** The header fields in order, one per line (folding undone): names[k] is the canonical name of values[k]. */
    readonly names: string[],
    readonly values: string[],
    readonly callId: string,
    /** CSeq sequence number and method. */
    readonly cseq: number,
    readonly cseqMethod: string,
    /** The From and To values as written. */
    readonly from: string,
    readonly to: string,
    /** The To tag, null when there is none. */
    readonly toTag: string | null,
  ) {}

  /** The value of the first header field of that canonical name. */
  get(name: string): string | undefined {
    const n = this.names;
    for (let k = 0; k < n.length; k++) if (n[k] === name) return this.values[k];
    return undefined;
  }

  /** The values of every header field of that canonical name, one per line, not split. */
  getAll(name: string): string[] {
    const out: string[] = [];
    const n = this.names;
    for (let k = 0; k < n.length; k++) if (n[k] === name) out.push(this.values[k]);
    return out;
  }

  /** Every Via element, top first, split on top-level commas (validated when read). */
  vias(): string[] {
    const out: string[] = [];
    const n = this.names;
    for (let k = 0; k < n.length; k++) {
      if (n[k] !== 'via') continue;
      const v = this.values[k];
      for (let i = 0; i <= v.length; ) {
        const e = nextComma(v, i, v.length);
        if (e === -1) break; // not after readWire: it checked every Via
        const a = skipWs(v, i, e);
        out.push(a === 0 && e === v.length ? v : v.slice(a, trimEnd(v, a, e)));
        i = e + 1;
      }
    }
    return out;
  }

  /** Record-Route elements in order (name-addr with <>, as written); null when one is malformed. */
  recordRoutes(): string[] | null {
    const out: string[] = [];
    const n = this.names;
    for (let k = 0; k < n.length; k++) {
      if (n[k] !== 'record-route') continue;
      const v = this.values[k];
      for (let i = 0; i <= v.length; ) {
        const e = nextComma(v, i, v.length);
        if (e === -1 || !scanAddr(v, i, e) || !angle) return null;
        const a = skipWs(v, i, e);
        out.push(a === 0 && e === v.length ? v : v.slice(a, trimEnd(v, a, e)));
        i = e + 1;
      }
    }
    return out;
  }

  /** The URIs of the Contact elements in order ("*" skipped); null when one is malformed. */
  contactUris(): string[] | null {
    const out: string[] = [];
    const n = this.names;
    for (let k = 0; k < n.length; k++) {
      if (n[k] !== 'contact') continue;
      const v = this.values[k];
      if (v === '*') continue;
      for (let i = 0; i <= v.length; ) {
        const e = nextComma(v, i, v.length);
        if (e === -1 || !scanAddr(v, i, e)) return null;
        out.push(v.slice(uriStart, uriEnd));
        i = e + 1;
      }
    }
    return out;
  }
}

/** Parses one UDP datagram; null when it is not a well-formed SIP message (see the top of this file). */
export function readWire(buf: Buffer): WireMessage | null {
  const s = buf.toString('latin1');
  const len = s.length;
  let i = 0;
  while (i + 1 < len && s.charCodeAt(i) === CR && s.charCodeAt(i + 1) === LF) i += 2;

  // ---- start line
  let lf = s.indexOf('\n', i);
  if (lf <= i || s.charCodeAt(lf - 1) !== CR || s.indexOf('\r', i) !== lf - 1) return null;
  let eol = lf - 1;
  let isRequest: boolean;
  let method = '';
  let uri = '';
  let status = 0;
  let reason = '';
  if (eol - i >= 11 && isSip20(s, i) && s.charCodeAt(i + 7) === SP) {
    // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
    isRequest = false;
    const d0 = s.charCodeAt(i + 8) - 0x30;
    const d1 = s.charCodeAt(i + 9) - 0x30;
    const d2 = s.charCodeAt(i + 10) - 0x30;
    if (d0 < 1 || d0 > 6 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return null;
    status = d0 * 100 + d1 * 10 + d2;
    if (eol > i + 11) {
      if (s.charCodeAt(i + 11) !== SP) return null;
      reason = s.slice(i + 12, eol);
    }
  } else {
    // Request-Line = Method SP Request-URI SP SIP-Version
    isRequest = true;
    const sp1 = s.indexOf(' ', i);
    if (sp1 === -1 || sp1 >= eol) return null;
    const m = methodAt(s, i, sp1);
    if (m === null) return null;
    method = m;
    const sp2 = s.indexOf(' ', sp1 + 1);
    if (sp2 === -1 || sp2 >= eol || sp2 === sp1 + 1 || eol - sp2 - 1 !== 7 || !isSip20(s, sp2 + 1)) return null;
    for (let k = sp1 + 1; k < sp2; k++) if (s.charCodeAt(k) <= SP || s.charCodeAt(k) >= 0x7f) return null;
    uri = s.slice(sp1 + 1, sp2);
    if (uri.indexOf(':') === -1) return null;
  }

  // ---- header fields, up to the empty line
  const names: string[] = [];
  const values: string[] = [];
  let iFrom = -1;
  let iTo = -1;
  let iCallId = -1;
  let iCSeq = -1;
  let iLength = -1;
  let vias = 0;
  i = lf + 1;
  for (;;) {
    lf = s.indexOf('\n', i);
    if (lf === -1 || s.charCodeAt(lf - 1) !== CR) return null;
    eol = lf - 1;
    const cr = s.indexOf('\r', i);
    if (cr !== eol) return null; // bare CR
    if (eol === i) break; // the empty line
    const c0 = s.charCodeAt(i);
    if (isWs(c0)) {
      // §7.3.1: a line starting with white space continues the previous field.
      const last = values.length - 1;
      if (last < 0) return null;
      const a = skipWs(s, i, eol);
      if (a < eol) {
        const more = s.slice(a, trimEnd(s, a, eol));
        values[last] = values[last] === '' ? more : values[last] + ' ' + more;
      }
      i = lf + 1;
      continue;
    }
    const colon = s.indexOf(':', i);
    if (colon === -1 || colon >= eol) return null;
    const name = headerName(s, i, trimEnd(s, i, colon));
    if (name === null) return null;
    const a = skipWs(s, colon + 1, eol);
    const k = names.length;
    names.push(name);
    values.push(s.slice(a, trimEnd(s, a, eol)));
    switch (name) {
      case 'via':
        vias++;
        break;
      case 'from':
        if (iFrom !== -1) return null;
        iFrom = k;
        break;
      case 'to':
        if (iTo !== -1) return null;
        iTo = k;
        break;
      case 'call-id':
        if (iCallId !== -1) return null;
        iCallId = k;
        break;
      case 'cseq':
        if (iCSeq !== -1) return null;
        iCSeq = k;
        break;
      case 'content-length':
        if (iLength !== -1) return null;
        iLength = k;
        break;
    }
    i = lf + 1;
  }
  const bodyStart = lf + 1;
  if (vias === 0 || iFrom === -1 || iTo === -1 || iCallId === -1 || iCSeq === -1) return null;

  // ---- the fields the generator relies on
  // Call-ID = word [ "@" word ]: visible characters, no white space.
  const callId = values[iCallId];
  if (callId === '') return null;
  for (let k = 0; k < callId.length; k++) {
    const c = callId.charCodeAt(k);
    if (c <= SP || c >= 0x7f) return null;
  }
  // CSeq = 1*DIGIT LWS Method (a 32-bit number below 2**31, §8.1.1.5).
  const cs = values[iCSeq];
  let p = 0;
  let seq = 0;
  while (p < cs.length && p < 10) {
    const d = cs.charCodeAt(p) - 0x30;
    if (d < 0 || d > 9) break;
    seq = seq * 10 + d;
    p++;
  }
  if (p === 0 || seq > 0x7fffffff || !isWs(cs.charCodeAt(p))) return null;
  const cseqMethod = methodAt(cs, skipWs(cs, p, cs.length), cs.length);
  if (cseqMethod === null || (isRequest && cseqMethod !== method)) return null;
  // From and To: one name-addr / addr-spec each.
  const from = values[iFrom];
  if (nextComma(from, 0, from.length) !== from.length || !scanAddr(from, 0, from.length)) return null;
  const to = values[iTo];
  if (nextComma(to, 0, to.length) !== to.length || !scanAddr(to, 0, to.length)) return null;
  const toTag = tagStart === -1 ? null : to.slice(tagStart, tagEnd);
  // Every Via element.
  for (let k = 0; k < names.length; k++) {
    if (names[k] !== 'via') continue;
    const v = values[k];
    for (let j = 0; j <= v.length; ) {
      const e = nextComma(v, j, v.length);
      if (e === -1 || !scanVia(v, j, e)) return null;
      j = e + 1;
    }
  }
  // Content-Length = 1*DIGIT, at most what the datagram holds after the empty line.
  if (iLength !== -1) {
    const cl = values[iLength];
    if (cl.length === 0 || cl.length > 9) return null;
    let n = 0;
    for (let k = 0; k < cl.length; k++) {
      const d = cl.charCodeAt(k) - 0x30;
      if (d < 0 || d > 9) return null;
      n = n * 10 + d;
    }
    if (n > len - bodyStart) return null;
  }

  return new WireMessage(isRequest, method, uri, status, reason, names, values, callId, seq, cseqMethod, from, to, toTag);
}
