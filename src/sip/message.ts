// A parsed SIP message that keeps its wire bytes.
//
// The parser records, for every header field, where its line lies in the
// source Buffer; values are decoded and parsed only when asked for, and the
// result is cached. Serializing an unmodified message returns the source
// bytes; after a change (a pushed Via, a decremented Max-Forwards) only the
// changed fields are written anew and every untouched run of lines is copied
// from the source in one piece. The body is never touched.
//
// Header fields are immutable: a change replaces the field object in the
// message's own array. clone() copies that array only, so forking a request
// to several branches costs one small array per branch.

import { BACKSLASH, COMMA, CR, DQUOTE, HT, LAQUOT, LF, MAX_UINT32, parseDigits, quotedStringEnd, skipWs, SP, trimEnd } from './chars.js';
import { NameAddr, parseNameAddr, parseNameAddrList } from './address.js';
import { headerDisplayName, headerKey, LIST_HEADERS } from './names.js';
import { parseUri, type Uri } from './uri.js';
import { parseVias, type Via } from './via.js';

/** One header field line. `src[lineStart, lineEnd)` is the whole field without its final CRLF. */
export class HeaderField {
  private cached: string | undefined;

  constructor(
    /** Full lower-case name (compact forms expanded). */
    readonly key: string,
    readonly src: string,
    readonly lineStart: number,
    readonly lineEnd: number,
    /** Offset just past the colon. */
    readonly valueStart: number,
    /** True when the value continues on further lines (RFC 3261 §7.3.1 folding). */
    readonly folded: boolean,
    /** True when the bytes are those of the message's source Buffer at the same offsets. */
    readonly fromSource: boolean,
  ) {}

  /** The name as written on the wire. */
  get name(): string {
    const s = this.src;
    return s.slice(this.lineStart, trimEnd(s, this.lineStart, s.indexOf(':', this.lineStart)));
  }

  /** The value with folding replaced by one SP and surrounding white space removed (RFC 3261 §7.3.1). */
  get value(): string {
    let v = this.cached;
    if (v === undefined) {
      const s = this.src;
      const start = skipWs(s, this.valueStart, this.lineEnd);
      v = this.folded ? unfold(s.slice(start, this.lineEnd)) : s.slice(start, trimEnd(s, start, this.lineEnd));
      this.cached = v;
    }
    return v;
  }

  /** The string holding the value, for parsers that read in place: no slice for unfolded values. */
  get text(): string {
    return this.folded ? this.value : this.src;
  }

  /** Offset of the value's first char in `text`. */
  get start(): number {
    return this.folded ? 0 : skipWs(this.src, this.valueStart, this.lineEnd);
  }

  /** Offset just past the value's last char in `text`. */
  get end(): number {
    return this.folded ? this.value.length : trimEnd(this.src, this.valueStart, this.lineEnd);
  }

  /** Builds a field that is not in the source. */
  static create(key: string, value: string): HeaderField {
    const name = headerDisplayName(key);
    const line = name + ': ' + value;
    return new HeaderField(key, line, 0, line.length, name.length + 1, false, false);
  }
}

/**
 * Each LWS holding a CRLF ([*WSP CRLF] 1*WSP) becomes one SP, then the value
 * is trimmed (RFC 3261 §7.3.1). Only the white space of that LWS goes: the SP
 * put for a previous fold and a quoted-pair (an escaped SP or HT inside a
 * quoted string) stay.
 */
function unfold(v: string): string {
  let out = '';
  let keep = 0; // out[0, keep) is not white space of the current LWS
  let quoted = false;
  let i = 0;
  const n = v.length;
  while (i < n) {
    const c = v.charCodeAt(i);
    if (c === CR && v.charCodeAt(i + 1) === LF) {
      const e = trimEnd(out, keep, out.length);
      out = (e === out.length ? out : out.slice(0, e)) + ' ';
      keep = out.length;
      i = skipWs(v, i + 2, n);
      continue;
    }
    if (c === DQUOTE) quoted = !quoted;
    else if (c === BACKSLASH && quoted && i + 1 < n && v.charCodeAt(i + 1) !== CR) {
      out += v.slice(i, i + 2);
      i += 2;
      keep = out.length;
      continue;
    }
    out += v[i];
    i++;
  }
  const s = skipWs(out, 0, out.length);
  return out.slice(s, trimEnd(out, s, out.length));
}

export interface CSeq {
  seq: number;
  method: string;
}

/** Splits a list header value on commas outside quoted strings and angle brackets; elements trimmed. */
export function splitList(v: string): string[] {
  const out: string[] = [];
  const n = v.length;
  let start = 0;
  let i = 0;
  while (i < n) {
    const c = v.charCodeAt(i);
    if (c === DQUOTE) {
      const qe = quotedStringEnd(v, i, n);
      i = qe < 0 ? n : qe;
      continue;
    }
    if (c === LAQUOT) {
      const gt = v.indexOf('>', i);
      i = gt < 0 ? n : gt + 1;
      continue;
    }
    if (c === COMMA) {
      const s = skipWs(v, start, i);
      const e = trimEnd(v, s, i);
      if (e > s) out.push(v.slice(s, e));
      start = i + 1;
    }
    i++;
  }
  const s = skipWs(v, start, n);
  const e = trimEnd(v, s, n);
  if (e > s) out.push(v.slice(s, e));
  return out;
}

/** The elements of one field value: split on commas for list headers only (LIST_HEADERS). */
function elementsOf(key: string, value: string): string[] {
  return LIST_HEADERS.has(key) ? splitList(value) : [value];
}

const CRLF = Buffer.from('\r\n', 'latin1');
const UNSET = -2;

export class SipMessage {
  readonly isRequest: boolean;
  /** Request method (case-sensitive), '' for a response. */
  readonly method: string;
  /** Status code of a response, 0 for a request. */
  readonly status: number;
  /** Reason phrase of a response (latin1 string of its octets), '' for a request. */
  readonly reason: string;
  /** The start line's SIP-Version as written. */
  readonly version: string;
  private bodyView: Buffer | undefined;
  private readonly bodyStart: number;

  private uriRaw: string;
  private source: Buffer;
  private startLine: string | null; // set when the start line was rewritten
  private readonly startLineEnd: number;
  private readonly messageEnd: number;
  private fields: HeaderField[];
  private modified: boolean;

  private cVia: Via[] | null | undefined;
  private cCSeq: CSeq | null | undefined;
  private cFrom: NameAddr | null | undefined;
  private cTo: NameAddr | null | undefined;
  private cContacts: NameAddr[] | null | undefined;
  private cUri: Uri | null | undefined;
  private cMaxForwards: number = UNSET;

  /** @internal Use parseMessage / parseAndValidate. */
  constructor(
    isRequest: boolean,
    method: string,
    uri: string,
    status: number,
    reason: string,
    version: string,
    source: Buffer,
    startLineEnd: number,
    fields: HeaderField[],
    bodyStart: number,
    messageEnd: number,
  ) {
    this.isRequest = isRequest;
    this.method = method;
    this.uriRaw = uri;
    this.status = status;
    this.reason = reason;
    this.version = version;
    this.source = source;
    this.startLine = null;
    this.startLineEnd = startLineEnd;
    this.fields = fields;
    this.bodyStart = bodyStart;
    this.bodyView = undefined;
    this.messageEnd = messageEnd;
    this.modified = false;
    this.cVia = undefined;
    this.cCSeq = undefined;
    this.cFrom = undefined;
    this.cTo = undefined;
    this.cContacts = undefined;
    this.cUri = undefined;
  }

  /** Message body octets: a view into the source, never altered. */
  get body(): Buffer {
    let b = this.bodyView;
    if (b === undefined) {
      b = this.source.subarray(this.bodyStart, this.messageEnd);
      this.bodyView = b;
    }
    return b;
  }

  /** Length of the body in octets. */
  get bodyLength(): number {
    return this.messageEnd - this.bodyStart;
  }

  /** The raw Request-URI of a request, '' for a response. */
  get uri(): string {
    return this.uriRaw;
  }

  /** The Request-URI parsed; null for a response or when it is not a well-formed URI. */
  get requestUri(): Uri | null {
    if (this.cUri === undefined) this.cUri = this.isRequest ? parseUri(this.uriRaw) : null;
    return this.cUri;
  }

  /** True when serialization would not return the source bytes. */
  get isModified(): boolean {
    return this.modified;
  }

  /** Number of header fields (lines). */
  get headerCount(): number {
    return this.fields.length;
  }

  /** The header fields, in order. Do not mutate. */
  headerFields(): readonly HeaderField[] {
    return this.fields;
  }

  // ---- reading ----

  /** Value of the first header field of that name (full or compact form, any case), unfolded. */
  get(name: string): string | undefined {
    const key = headerKey(name);
    const f = this.fields;
    for (let i = 0; i < f.length; i++) if (f[i].key === key) return f[i].value;
    return undefined;
  }

  /** get() for a lower-case full name: no name normalisation. */
  getKey(key: string): string | undefined {
    const f = this.fields;
    for (let i = 0; i < f.length; i++) if (f[i].key === key) return f[i].value;
    return undefined;
  }

  /** The first field with that lower-case full name, or null. */
  field(key: string): HeaderField | null {
    const f = this.fields;
    for (let i = 0; i < f.length; i++) if (f[i].key === key) return f[i];
    return null;
  }

  has(name: string): boolean {
    return this.findIndex(headerKey(name)) !== -1;
  }

  /** Values of every header field of that name, one per line, in order. */
  getAll(name: string): string[] {
    const key = headerKey(name);
    const out: string[] = [];
    for (const f of this.fields) if (f.key === key) out.push(f.value);
    return out;
  }

  /**
   * Elements of a list header across all its lines, split on commas (outside
   * quotes and <>). Other headers (Date, User-Agent...) are not split: one
   * element per line.
   */
  values(name: string): string[] {
    const key = headerKey(name);
    const out: string[] = [];
    for (const f of this.fields) if (f.key === key) for (const v of elementsOf(key, f.value)) out.push(v);
    return out;
  }

  /** Option tags or tokens of a list header, lower-cased (Supported, Require, Proxy-Require, Allow...). */
  tokens(name: string): string[] {
    return this.values(name).map((v) => v.toLowerCase());
  }

  /** Number of header fields of that name. */
  count(name: string): number {
    const key = headerKey(name);
    let n = 0;
    for (const f of this.fields) if (f.key === key) n++;
    return n;
  }

  /** All Via values, top first; null if one is malformed. */
  viaOrNull(): Via[] | null {
    if (this.cVia === undefined) {
      const out: Via[] = [];
      let ok = true;
      for (const f of this.fields) {
        if (f.key === 'via' && !parseVias(f.text, out, f.start, f.end)) {
          ok = false;
          break;
        }
      }
      this.cVia = ok ? out : null;
    }
    return this.cVia;
  }

  /** All Via values, top first (empty when malformed: a validated message never is). */
  via(): Via[] {
    return this.viaOrNull() ?? [];
  }

  topVia(): Via | null {
    const v = this.viaOrNull();
    return v !== null && v.length > 0 ? v[0] : null;
  }

  cseqOrNull(): CSeq | null {
    if (this.cCSeq === undefined) {
      const f = this.field('cseq');
      this.cCSeq = f === null ? null : parseCSeq(f.text, f.start, f.end, this.method);
    }
    return this.cCSeq;
  }

  cseq(): CSeq {
    return this.cseqOrNull() ?? { seq: -1, method: '' };
  }

  callId(): string {
    return this.getKey('call-id') ?? '';
  }

  fromOrNull(): NameAddr | null {
    if (this.cFrom === undefined) {
      const f = this.field('from');
      this.cFrom = f === null ? null : parseNameAddr(f.text, f.start, f.end);
    }
    return this.cFrom;
  }

  toOrNull(): NameAddr | null {
    if (this.cTo === undefined) {
      const f = this.field('to');
      this.cTo = f === null ? null : parseNameAddr(f.text, f.start, f.end);
    }
    return this.cTo;
  }

  from(): NameAddr {
    return this.fromOrNull() ?? NULL_ADDR;
  }

  to(): NameAddr {
    return this.toOrNull() ?? NULL_ADDR;
  }

  /** True for `Contact: *` (REGISTER removing all bindings). */
  isContactStar(): boolean {
    return this.getKey('contact') === '*';
  }

  /** Contact values in order; [] for none or `*`; null when one is malformed. */
  contacts(): NameAddr[] | null {
    if (this.cContacts === undefined) this.cContacts = this.parseAddressList('contact', true);
    return this.cContacts;
  }

  /** Route values (top first); null when malformed. */
  routes(): NameAddr[] | null {
    return this.parseAddressList('route', false);
  }

  recordRoutes(): NameAddr[] | null {
    return this.parseAddressList('record-route', false);
  }

  /** Name-addr values of any list header (Path, Service-Route...); null when malformed. */
  addresses(name: string): NameAddr[] | null {
    return this.parseAddressList(headerKey(name), false);
  }

  private parseAddressList(key: string, allowStar: boolean): NameAddr[] | null {
    const out: NameAddr[] = [];
    for (const f of this.fields) {
      if (f.key !== key) continue;
      if (allowStar && f.end - f.start === 1 && f.text.charCodeAt(f.start) === 0x2a) continue;
      if (!parseNameAddrList(f.text, out, f.start, f.end)) return null;
    }
    return out;
  }

  /** Max-Forwards as a number; null when absent; -1 when malformed or over 255. */
  maxForwards(): number | null {
    if (this.cMaxForwards === UNSET) {
      const v = this.getKey('max-forwards');
      this.cMaxForwards = v === undefined ? -3 : parseDigits(v, 0, v.length, 255);
    }
    return this.cMaxForwards === -3 ? null : this.cMaxForwards;
  }

  /** Expires header as seconds; null when absent; -1 when malformed. */
  expires(): number | null {
    const v = this.getKey('expires');
    if (v === undefined) return null;
    return parseDigits(v, 0, v.length, MAX_UINT32);
  }

  // ---- changing ----

  /** A copy that shares the source bytes and field objects; changes to either do not affect the other. */
  clone(): SipMessage {
    const m = new SipMessage(
      this.isRequest,
      this.method,
      this.uriRaw,
      this.status,
      this.reason,
      this.version,
      this.source,
      this.startLineEnd,
      this.fields.slice(),
      this.bodyStart,
      this.messageEnd,
    );
    m.startLine = this.startLine;
    m.modified = this.modified;
    m.cVia = this.cVia;
    m.cCSeq = this.cCSeq;
    m.cFrom = this.cFrom;
    m.cTo = this.cTo;
    m.cContacts = this.cContacts;
    m.cUri = this.cUri;
    m.cMaxForwards = this.cMaxForwards;
    return m;
  }

  /** Rewrites the Request-URI (the start line). */
  setRequestUri(uri: string): void {
    if (!this.isRequest) throw new Error('not a request');
    this.uriRaw = uri;
    this.cUri = undefined;
    this.startLine = this.method + ' ' + uri + ' SIP/2.0';
    this.modified = true;
  }

  /** Adds a header line above every other line of the same name (or at the very top when there is none). */
  prependHeader(name: string, value: string): void {
    const key = headerKey(name);
    const i = this.findIndex(key);
    this.fields.splice(i === -1 ? 0 : i, 0, HeaderField.create(key, value));
    this.changed(key);
  }

  /** Adds a header line after every other line. */
  appendHeader(name: string, value: string): void {
    const key = headerKey(name);
    this.fields.push(HeaderField.create(key, value));
    this.changed(key);
  }

  /** Replaces every line of that name with one line holding `value` (in the first one's place). */
  setHeader(name: string, value: string): void {
    const key = headerKey(name);
    const i = this.findIndex(key);
    const field = HeaderField.create(key, value);
    if (i === -1) this.fields.push(field);
    else {
      this.fields[i] = field;
      this.fields = this.fields.filter((f, j) => j <= i || f.key !== key);
    }
    this.changed(key);
  }

  /** Removes every line of that name. Returns how many were removed. */
  removeHeader(name: string): number {
    const key = headerKey(name);
    const before = this.fields.length;
    this.fields = this.fields.filter((f) => f.key !== key);
    const n = before - this.fields.length;
    if (n > 0) this.changed(key);
    return n;
  }

  /** Removes one line, as returned by field() or headerFields(): the credentials a proxy consumed, say. */
  removeField(field: HeaderField): boolean {
    const i = this.fields.indexOf(field);
    if (i === -1) return false;
    this.fields.splice(i, 1);
    this.changed(field.key);
    return true;
  }

  /**
   * Removes the first element of a list header (the top Via of a response
   * on its way back, the top Route a proxy consumed). A line holding several
   * elements is rewritten with the rest.
   */
  removeFirstValue(name: string): boolean {
    const key = headerKey(name);
    const i = this.findIndex(key);
    if (i === -1) return false;
    const rest = elementsOf(key, this.fields[i].value);
    rest.shift();
    if (rest.length === 0) this.fields.splice(i, 1);
    else this.fields[i] = HeaderField.create(key, rest.join(', '));
    this.changed(key);
    return true;
  }

  /** Replaces the first element of a list header (the top Via gaining received/rport). */
  replaceFirstValue(name: string, value: string): void {
    const key = headerKey(name);
    const i = this.findIndex(key);
    if (i === -1) {
      this.prependHeader(key, value);
      return;
    }
    const rest = elementsOf(key, this.fields[i].value);
    rest[0] = value;
    this.fields[i] = HeaderField.create(key, rest.join(', '));
    this.changed(key);
  }

  private findIndex(key: string): number {
    const f = this.fields;
    for (let i = 0; i < f.length; i++) if (f[i].key === key) return i;
    return -1;
  }

  private changed(key: string): void {
    this.modified = true;
    switch (key) {
      case 'via':
        this.cVia = undefined;
        break;
      case 'cseq':
        this.cCSeq = undefined;
        break;
      case 'from':
        this.cFrom = undefined;
        break;
      case 'to':
        this.cTo = undefined;
        break;
      case 'contact':
        this.cContacts = undefined;
        break;
      case 'max-forwards':
        this.cMaxForwards = UNSET;
        break;
    }
  }

  // ---- writing ----

  /**
   * The message as octets. Unmodified: the source bytes (a view, no copy).
   * Modified: changed lines written anew, untouched runs copied, and a
   * Content-Length added when the message had none (RFC 3261 §18.3 needs it
   * on streams, and the next hop may use one).
   */
  toBuffer(): Buffer {
    if (!this.modified) return this.source.subarray(0, this.messageEnd);
    const src = this.source;
    const fields = this.fields;
    const startLen = this.startLine === null ? this.startLineEnd : Buffer.byteLength(this.startLine, 'latin1');
    let total = startLen + 2;
    let hasLength = false;
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i];
      total += f.lineEnd - f.lineStart + 2;
      if (f.key === 'content-length') hasLength = true;
    }
    let lengthLine: string | null = null;
    if (!hasLength) {
      lengthLine = 'Content-Length: ' + this.bodyLength;
      total += lengthLine.length + 2;
    }
    total += 2 + this.bodyLength;
    const out = Buffer.allocUnsafe(total);
    let pos: number;
    if (this.startLine === null) pos = src.copy(out, 0, 0, this.startLineEnd);
    else pos = out.write(this.startLine, 0, 'latin1');
    pos += CRLF.copy(out, pos);
    let i = 0;
    while (i < fields.length) {
      const f = fields[i];
      if (f.fromSource) {
        // Extend over following fields that sit right after this one in the source.
        let runEnd = f.lineEnd;
        let j = i + 1;
        while (j < fields.length && fields[j].fromSource && fields[j].lineStart === runEnd + 2) {
          runEnd = fields[j].lineEnd;
          j++;
        }
        pos += src.copy(out, pos, f.lineStart, runEnd);
        i = j;
      } else {
        pos += f.lineStart === 0 && f.lineEnd === f.src.length ? out.write(f.src, pos, 'latin1') : out.write(f.src.slice(f.lineStart, f.lineEnd), pos, 'latin1');
        i++;
      }
      out[pos++] = CR;
      out[pos++] = LF;
    }
    if (lengthLine !== null) {
      pos += out.write(lengthLine, pos, 'latin1');
      out[pos++] = CR;
      out[pos++] = LF;
    }
    out[pos++] = CR;
    out[pos++] = LF;
    src.copy(out, pos, this.bodyStart, this.messageEnd);
    return out;
  }

  /** The message as a latin1 string (one char per octet), for logs and tests. */
  toString(): string {
    return this.toBuffer().toString('latin1');
  }
}

const NULL_ADDR = new NameAddr(null, 'sip:invalid', new Map(), '', 0, 0, false);

function parseCSeq(v: string, start: number, n: number, hint: string): CSeq | null {
  let i = start;
  while (i < n) {
    const c = v.charCodeAt(i);
    if (c < 0x30 || c > 0x39) break;
    i++;
  }
  const seq = parseDigits(v, start, i, MAX_UINT32);
  if (seq < 0) return null;
  const ms = skipWs(v, i, n);
  if (ms === i || ms >= n) return null;
  for (let j = ms; j < n; j++) {
    const c = v.charCodeAt(j);
    if (c === SP || c === HT) return null;
  }
  // Reuse the request's method string when they match (the usual case).
  if (n - ms === hint.length && v.startsWith(hint, ms)) return { seq, method: hint };
  return { seq, method: v.slice(ms, n) };
}
