// Building responses to a request (RFC 3261 §8.2.6) and the Via rules of
// the server transport (§18.2.1, §18.2.2, RFC 3581).

import { randomFillSync } from 'node:crypto';
import { isToken } from './chars.js';
import { HeaderField, SipMessage } from './message.js';
import { headerDisplayName, headerKey } from './names.js';
import { stripBrackets } from './uri.js';
import type { Via } from './via.js';

/** Reason phrases of RFC 3261 §21 and the extensions Portier sends. */
export const REASON_PHRASES: Readonly<Record<number, string>> = Object.freeze({
  100: 'Trying',
  180: 'Ringing',
  181: 'Call Is Being Forwarded',
  182: 'Queued',
  183: 'Session Progress',
  200: 'OK',
  202: 'Accepted',
  300: 'Multiple Choices',
  301: 'Moved Permanently',
  302: 'Moved Temporarily',
  305: 'Use Proxy',
  380: 'Alternative Service',
  400: 'Bad Request',
  401: 'Unauthorized',
  402: 'Payment Required',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  407: 'Proxy Authentication Required',
  408: 'Request Timeout',
  410: 'Gone',
  413: 'Request Entity Too Large',
  414: 'Request-URI Too Long',
  415: 'Unsupported Media Type',
  416: 'Unsupported URI Scheme',
  420: 'Bad Extension',
  421: 'Extension Required',
  423: 'Interval Too Brief',
  429: 'Too Many Requests',
  430: 'Flow Failed',
  439: 'First Hop Lacks Outbound Support',
  480: 'Temporarily Unavailable',
  481: 'Call/Transaction Does Not Exist',
  482: 'Loop Detected',
  483: 'Too Many Hops',
  484: 'Address Incomplete',
  485: 'Ambiguous',
  486: 'Busy Here',
  487: 'Request Terminated',
  488: 'Not Acceptable Here',
  491: 'Request Pending',
  493: 'Undecipherable',
  500: 'Server Internal Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Server Time-out',
  505: 'Version Not Supported',
  513: 'Message Too Large',
  600: 'Busy Everywhere',
  603: 'Decline',
  604: 'Does Not Exist Anywhere',
  606: 'Not Acceptable',
});

export function reasonPhrase(code: number): string {
  return REASON_PHRASES[code] ?? (code < 200 ? 'Provisional' : code < 300 ? 'OK' : 'Error');
}

// Random bytes are drawn 4 KiB at a time: one call into OpenSSL per 512
// tokens instead of one per tag or branch (it was 5% of a proxied call).
const POOL = Buffer.allocUnsafeSlow(4096);
let poolOffset = POOL.length;

/** A random tag or branch suffix: 64 bits of hex. */
export function randomToken(): string {
  if (poolOffset + 8 > POOL.length) {
    randomFillSync(POOL);
    poolOffset = 0;
  }
  const token = POOL.toString('hex', poolOffset, poolOffset + 8);
  poolOffset += 8;
  return token;
}

export interface ResponseOptions {
  reason?: string;
  /** To tag to add when the request's To has none (a fresh one is made if omitted, except for 100). */
  toTag?: string;
  /** Extra header lines, in order. */
  headers?: ReadonlyArray<readonly [string, string]>;
  body?: Buffer | string;
  contentType?: string;
}

// Lines copied from the request into every response (§8.2.6.2), and their names.
const COPIED = ['via', 'from', 'to', 'call-id', 'cseq'];
const COPIED_NAMES = COPIED.map(headerDisplayName);

const NO_BODY = Buffer.alloc(0);

/** CR and LF would end the line early: they become spaces. No regex for the values that have none. */
function oneLine(v: string): string {
  return v.indexOf('\r') === -1 && v.indexOf('\n') === -1 ? v : v.replace(/[\r\n]/g, ' ');
}

// Each header line of the last head written: its key, where it starts and
// where its colon is. buildResponse makes the message's fields from them
// instead of parsing its own output again. Heads are written synchronously,
// so one set serves every call; entries past lineCount are left over from
// a longer head (the arrays keep their size).
const lineKeys: string[] = [];
const lineStarts: number[] = [];
const lineColons: number[] = [];
let lineCount = 0;

// The head is written as octets into one scratch Buffer (grown when a head
// does not fit), then copied with the body into the message's own: no
// string per line, and no string of the whole head but the one read back.
type Latin1Buffer = Buffer & { latin1Write(s: string, offset: number, length: number): number; latin1Slice(start: number, end: number): string };
let head = Buffer.allocUnsafeSlow(4096) as Latin1Buffer;
let headLen = 0;

function reserve(n: number): void {
  if (headLen + n <= head.length) return;
  const bigger = Buffer.allocUnsafeSlow(Math.max(head.length * 2, headLen + n)) as Latin1Buffer;
  head.copy(bigger, 0, 0, headLen);
  head = bigger;
}

const PUT_NATIVE_FROM = 64;

/** s as latin1 octets (a char beyond latin1 as its low octet, as Buffer.from(s, 'latin1') writes it). */
function put(s: string): void {
  const n = s.length;
  reserve(n);
  // A call into C++ costs more than copying a short string here; most are short (names, tags, `: `).
  if (n > PUT_NATIVE_FROM) {
    headLen += head.latin1Write(s, headLen, n);
    return;
  }
  const h = head;
  let p = headLen;
  for (let k = 0; k < n; k++) h[p++] = s.charCodeAt(k);
  headLen = p;
}

/** s[start, end) as put() would write it, without slicing it out. */
function putRange(s: string, start: number, end: number): void {
  reserve(end - start);
  const h = head;
  let p = headLen;
  for (let k = start; k < end; k++) h[p++] = s.charCodeAt(k);
  headLen = p;
}

function putCrlf(): void {
  reserve(2);
  head[headLen++] = 0x0d;
  head[headLen++] = 0x0a;
}

/** A header line `name: ` starts: noted for buildResponse. */
function startLine(key: string, name: string): void {
  lineKeys[lineCount] = key;
  lineStarts[lineCount] = headLen;
  lineColons[lineCount] = headLen + name.length;
  lineCount++;
  put(name);
  put(': ');
}

function bodyOf(opts: ResponseOptions): Buffer {
  return opts.body === undefined ? NO_BODY : typeof opts.body === 'string' ? Buffer.from(opts.body, 'utf8') : opts.body;
}

/**
 * The response as octets: the start line and header lines, the empty line,
 * the body. Fills lineKeys, lineStarts and lineColons (lineCount of
 * them); headLen is where the body starts.
 */
function writeMessage(req: SipMessage, code: number, opts: ResponseOptions, body: Buffer): Buffer {
  lineCount = 0;
  headLen = 0;
  put('SIP/2.0 ');
  if (Number.isInteger(code) && code >= 100 && code <= 999) {
    reserve(3);
    head[headLen++] = 0x30 + Math.floor(code / 100);
    head[headLen++] = 0x30 + (Math.floor(code / 10) % 10);
    head[headLen++] = 0x30 + (code % 10);
  } else put(String(code));
  put(' ');
  put(oneLine(opts.reason ?? reasonPhrase(code)));
  putCrlf();
  const fields = req.headerFields();
  for (let k = 0; k < COPIED.length; k++) {
    const key = COPIED[k];
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i];
      if (f.key !== key) continue;
      startLine(key, COPIED_NAMES[k]);
      if (f.folded) put(f.value);
      else putRange(f.src, f.start, f.end);
      if (key === 'to' && code !== 100) {
        const to = req.toOrNull();
        if (to !== null && to.tag === null) {
          put(';tag=');
          put(opts.toTag ?? randomToken());
        }
      }
      putCrlf();
    }
  }
  if (opts.headers) {
    for (const [name, value] of opts.headers) {
      const key = headerKey(name);
      startLine(key, headerDisplayName(key));
      put(oneLine(value));
      putCrlf();
    }
  }
  if (body.length > 0 && opts.contentType) {
    startLine('content-type', 'Content-Type');
    put(opts.contentType);
    putCrlf();
  }
  startLine('content-length', 'Content-Length');
  put(String(body.length));
  putCrlf();
  putCrlf();
  const out = Buffer.allocUnsafe(headLen + body.length);
  head.copy(out, 0, 0, headLen);
  if (body.length > 0) body.copy(out, headLen);
  return out;
}

/**
 * Builds a response to `req` as octets. Via (all of them, in order), From,
 * To, Call-ID and CSeq are copied; a To tag is added for non-100 responses.
 * Works on partially parsed requests too (the 400 for a bad message), as
 * long as they have a Via.
 */
export function buildResponseBytes(req: SipMessage, code: number, opts: ResponseOptions = {}): Buffer {
  return writeMessage(req, code, opts, bodyOf(opts));
}

/** 'SIP/2.0 NNN ': where the reason phrase starts. */
const REASON_AT = 12;

/**
 * As buildResponseBytes, as a message to hand to the transaction layer: the
 * message the parser would make of those octets, its fields made from where
 * the head put each line rather than by parsing it again (that was as dear
 * as building it). Serializing it gives the octets back unchanged.
 */
export function buildResponse(req: SipMessage, code: number, opts: ResponseOptions = {}): SipMessage {
  if (!Number.isInteger(code) || code < 100 || code > 699) throw new Error('built an invalid response: malformed status code');
  const body = bodyOf(opts);
  const bytes = writeMessage(req, code, opts, body);
  const len = headLen;
  // Read back from the octets, as the parser would: a char beyond latin1 went out as one octet.
  const src = (bytes as Latin1Buffer).latin1Slice(0, len);
  const fields: HeaderField[] = [];
  const n = lineCount;
  for (let i = 0; i < n; i++) {
    const start = lineStarts[i];
    const colon = lineColons[i];
    if (!isToken(src, start, colon)) throw new Error('built an invalid response: malformed header name');
    const end = (i + 1 < n ? lineStarts[i + 1] : len - 2) - 2;
    fields.push(new HeaderField(lineKeys[i], src, start, end, colon + 1, false, true));
  }
  const startLineEnd = lineStarts[0] - 2;
  return new SipMessage(false, '', '', code, reasonOf(src, code, startLineEnd), 'SIP/2.0', bytes, startLineEnd, fields, len, bytes.length);
}

/** The reason phrase of a built start line: the constant itself when it is the usual one. */
function reasonOf(src: string, code: number, end: number): string {
  const usual = REASON_PHRASES[code];
  if (usual !== undefined && end - REASON_AT === usual.length && src.startsWith(usual, REASON_AT)) return usual;
  return src.slice(REASON_AT, end);
}

/**
 * RFC 3261 §18.2.1 and RFC 3581 §4: the top Via of a received request, with
 * `received` when the sent-by host is not the source address (always when
 * rport was asked for) and `rport` filled with the source port. Returns null
 * when nothing needs to change.
 */
export function stampedVia(via: Via, sourceAddress: string, sourcePort: number): string | null {
  return via.stamped(sourceAddress, sourcePort);
}

/** Where a response goes over UDP (§18.2.2 and RFC 3581 §4): the source address, and the source port when rport was used. */
export function responsePort(via: Via, defaultPort: number): number {
  const rp = via.rport;
  if (typeof rp === 'number') return rp;
  return via.port ?? defaultPort;
}

/** The address a response goes to: `received` if present, else the sent-by host. */
export function responseAddress(via: Via): string {
  return stripBrackets(via.received ?? via.host);
}
