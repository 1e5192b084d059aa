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
import { NameAddr, nameAddrsAt, parseNameAddr } from './address.js';
import { headerDisplayName, headerKey, LIST_HEADERS, methodAt } from './names.js';
import { parseUri, type Uri } from './uri.js';
import { viasAt, type Via } from './via.js';

/** One header field line. `src[lineStart, lineEnd)` is the whole field without its final CRLF. */
export class HeaderField {
  private cached: string | undefined;
  /** valueStart * 4 + (folded ? 1 : 0) + (fromSource ? 2 : 0): three facts in one slot of an object made per header line. */
  private readonly meta: number;
  /** Full lower-case name (compact forms expanded). */
  readonly key: string;
  readonly src: string;
  readonly lineStart: number;
  readonly lineEnd: number;

  constructor(
    key: string,
    src: string,
    lineStart: number,
    lineEnd: number,
    /** Offset just past the colon. */
    valueStart: number,
    /** True when the value continues on further lines (RFC 3261 §7.3.1 folding). */
    folded: boolean,
    /** True when the bytes are those of the message's source Buffer at the same offsets. */
    fromSource: boolean,
  ) {
    this.cached = undefined;
    this.meta = valueStart * 4 + (folded ? 1 : 0) + (fromSource ? 2 : 0);
    this.key = key;
    this.src = src;
    this.lineStart = lineStart;
    this.lineEnd = lineEnd;
  }

  /** Offset just past the colon. */
  get valueStart(): number {
    return this.meta >>> 2;
  }

  /** True when the value continues on further lines (RFC 3261 §7.3.1 folding). */
  get folded(): boolean {
    return (this.meta & 1) !== 0;
  }

  /** True when the bytes are those of the message's source Buffer at the same offsets. */
  get fromSource(): boolean {
    return (this.meta & 2) !== 0;
  }

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

/**
 * The next comma of v[i..n) outside quoted strings and <>: where a list
 * header's element ends. n when there is none (an unterminated quote or
 * bracket runs to n).
 */
function listComma(v: string, i: number, n: number): number {
  while (i < n) {
    const c = v.charCodeAt(i);
    if (c === DQUOTE) {
      const qe = quotedStringEnd(v, i, n);
      i = qe < 0 ? n : qe;
      continue;
    }
    if (c === LAQUOT) {
      const gt = v.indexOf('>', i);
      i = gt < 0 || gt >= n ? n : gt + 1;
      continue;
    }
    if (c === COMMA) return i;
    i++;
  }
  return n;
}

/** Splits a list header value on commas outside quoted strings and angle brackets; elements trimmed. */
export function splitList(v: string): string[] {
  const out: string[] = [];
  const n = v.length;
  let start = 0;
  for (;;) {
    const comma = listComma(v, start, n);
    const s = skipWs(v, start, comma);
    const e = trimEnd(v, s, comma);
    if (e > s) out.push(v.slice(s, e));
    if (comma === n) return out;
    start = comma + 1;
  }
}

/**
 * True when a list header line may hold more than one element: it has a
 * comma outside quoted strings and <> (where splitList would cut). Read in
 * place; otherwise elementsOf gives one element, or none for an empty value.
 */
function hasSecondElement(key: string, f: HeaderField): boolean {
  return LIST_HEADERS.has(key) && listComma(f.text, f.start, f.end) < f.end;
}

/** The elements of one field value: split on commas for list headers only (LIST_HEADERS). */
function elementsOf(key: string, value: string): string[] {
  return LIST_HEADERS.has(key) ? splitList(value) : [value];
}

const UNSET = -2;

// Vias and addresses are parsed into one array that keeps its size, then
// copied out at their count: an array grown by push from [] takes room
// for 17 (parsing is synchronous, so one serves every message).
const SCRATCH: Array<Via | NameAddr | undefined> = [];

/** Drops what SCRATCH holds: it must not keep a message's values (and text) alive. */
function clearScratch(): void {
  for (let i = 0; i < SCRATCH.length && SCRATCH[i] !== undefined; i++) SCRATCH[i] = undefined;
}

type Latin1Buffer = Buffer & { latin1Write(s: string, offset: number, length: number): number };

/**
 * src[start, end) into out at pos; returns the position after. Short runs
 * byte by byte: Buffer#copy makes a view of the source for every call.
 */
function copyRun(src: Buffer, out: Buffer, pos: number, start: number, end: number): number {
  if (end - start > 256) return pos + src.copy(out, pos, start, end);
  for (let k = start; k < end; k++) out[pos++] = src[k];
  return pos;
}

/** copyRun() of whole header lines (their range stops before the last one's CRLF), then that CRLF. */
function copyLines(src: Buffer, out: Buffer, pos: number, start: number, end: number): number {
  pos = copyRun(src, out, pos, start, end);
  out[pos++] = CR;
  out[pos++] = LF;
  return pos;
}

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
    const f = this.fields;
    let first = -1;
    let n = 0;
    for (let i = 0; i < f.length; i++) {
      if (f[i].key !== key) continue;
      if (n++ === 0) first = i;
    }
    // Mostly none or one line (a Route, a Contact): an array of that size, not one grown by push.
    if (n === 0) return [];
    if (n === 1) return [f[first].value];
    const out: string[] = [];
    for (let i = first; i < f.length; i++) if (f[i].key === key) out.push(f[i].value);
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
    const f = this.fields;
    for (let i = 0; i < f.length; i++) if (f[i].key === key) for (const v of elementsOf(key, f[i].value)) out.push(v);
    return out;
  }

  /** Option tags or tokens of a list header, lower-cased (Supported, Require, Proxy-Require, Allow...). */
  tokens(name: string): string[] {
    const v = this.values(name); // a fresh array: lower-cased in place, no closure or second array per call
    for (let i = 0; i < v.length; i++) v[i] = v[i].toLowerCase();
    return v;
  }

  /** Number of header fields of that name. */
  count(name: string): number {
    const key = headerKey(name);
    let n = 0;
    const f = this.fields;
    for (let i = 0; i < f.length; i++) if (f[i].key === key) n++;
    return n;
  }

  /** All Via values, top first; null if one is malformed. */
  viaOrNull(): Via[] | null {
    if (this.cVia === undefined) {
      let n = 0;
      const fields = this.fields;
      for (let i = 0; i < fields.length; i++) {
        const f = fields[i];
        if (f.key === 'via') {
          n = viasAt(f.text, SCRATCH as Via[], n, f.start, f.end);
          if (n < 0) break;
        }
      }
      this.cVia = n < 0 ? null : (SCRATCH.slice(0, n) as Via[]);
      clearScratch();
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
    let n = 0;
    const fields = this.fields;
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i];
      if (f.key !== key) continue;
      if (allowStar && f.end - f.start === 1 && f.text.charCodeAt(f.start) === 0x2a) continue;
      n = nameAddrsAt(f.text, SCRATCH as NameAddr[], n, f.start, f.end);
      if (n < 0) break;
    }
    const out = n < 0 ? null : n === 0 ? [] : (SCRATCH.slice(0, n) as NameAddr[]);
    clearScratch();
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
      copyFields(this.fields),
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
    this.insertAt(i === -1 ? 0 : i, HeaderField.create(key, value));
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
    const f = this.fields;
    if (i === -1) f.push(field);
    else {
      f[i] = field;
      // The other lines of that name go, in place.
      let w = i + 1;
      for (let r = i + 1; r < f.length; r++) if (f[r].key !== key) f[w++] = f[r];
      f.length = w;
    }
    this.changed(key);
  }

  /** Removes every line of that name. Returns how many were removed. */
  removeHeader(name: string): number {
    const key = headerKey(name);
    const f = this.fields;
    let w = 0;
    for (let r = 0; r < f.length; r++) if (f[r].key !== key) f[w++] = f[r];
    const n = f.length - w;
    f.length = w;
    if (n > 0) this.changed(key);
    return n;
  }

  /** Removes one line, as returned by field() or headerFields(): the credentials a proxy consumed, say. */
  removeField(field: HeaderField): boolean {
    const i = this.fields.indexOf(field);
    if (i === -1) return false;
    this.removeAt(i);
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
    const f = this.fields[i];
    if (!hasSecondElement(key, f)) this.removeAt(i);
    else {
      const rest = elementsOf(key, f.value);
      rest.shift();
      if (rest.length === 0) this.removeAt(i);
      else this.fields[i] = HeaderField.create(key, rest.join(', '));
    }
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
    const f = this.fields[i];
    if (!hasSecondElement(key, f)) this.fields[i] = HeaderField.create(key, value);
    else {
      const rest = elementsOf(key, f.value);
      rest[0] = value;
      this.fields[i] = HeaderField.create(key, rest.join(', '));
    }
    this.changed(key);
  }

  private findIndex(key: string): number {
    const f = this.fields;
    for (let i = 0; i < f.length; i++) if (f[i].key === key) return i;
    return -1;
  }

  /** splice(i, 0, field) without the array of removed elements splice returns. */
  private insertAt(i: number, field: HeaderField): void {
    const f = this.fields;
    f.push(field);
    for (let j = f.length - 1; j > i; j--) f[j] = f[j - 1];
    f[i] = field;
  }

  /** splice(i, 1) without the array of removed elements splice returns. */
  private removeAt(i: number): void {
    const f = this.fields;
    for (let j = i; j < f.length - 1; j++) f[j] = f[j + 1];
    f.pop();
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
    const startLen = this.startLine === null ? this.startLineEnd : this.startLine.length;
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
    const out = Buffer.allocUnsafe(total) as Latin1Buffer;
    let pos = 0;
    // Source lines that follow each other are copied in one piece: src[runStart, runEnd), pending.
    let runStart = -1;
    let runEnd = -1;
    if (this.startLine === null) {
      runStart = 0;
      runEnd = this.startLineEnd;
    } else {
      pos = out.latin1Write(this.startLine, 0, this.startLine.length);
      out[pos++] = CR;
      out[pos++] = LF;
    }
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i];
      if (f.fromSource && runStart >= 0 && f.lineStart === runEnd + 2) {
        runEnd = f.lineEnd;
        continue;
      }
      if (runStart >= 0) {
        pos = copyLines(src, out, pos, runStart, runEnd);
        runStart = -1;
      }
      if (f.fromSource) {
        runStart = f.lineStart;
        runEnd = f.lineEnd;
        continue;
      }
      const s = f.src;
      if (f.lineStart === 0 && f.lineEnd === s.length) pos += out.latin1Write(s, pos, s.length);
      else for (let k = f.lineStart; k < f.lineEnd; k++) out[pos++] = s.charCodeAt(k);
      out[pos++] = CR;
      out[pos++] = LF;
    }
    if (runStart >= 0) pos = copyLines(src, out, pos, runStart, runEnd);
    if (lengthLine !== null) {
      pos += out.latin1Write(lengthLine, pos, lengthLine.length);
      out[pos++] = CR;
      out[pos++] = LF;
    }
    out[pos++] = CR;
    out[pos++] = LF;
    copyRun(src, out, pos, this.bodyStart, this.messageEnd);
    return out;
  }

  /** The message as a latin1 string (one char per octet), for logs and tests. */
  toString(): string {
    return this.toBuffer().toString('latin1');
  }
}

/**
 * The fields of a clone, in an array grown by push: room for 17 lines, so
 * the Via and Record-Route a forwarded copy gains mostly fit without the
 * array being copied again (slice() would make it just as long as now).
 */
function copyFields(fields: HeaderField[]): HeaderField[] {
  const out: HeaderField[] = [];
  for (let i = 0; i < fields.length; i++) out.push(fields[i]);
  return out;
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
  return { seq, method: methodAt(v, ms, n) };
}
