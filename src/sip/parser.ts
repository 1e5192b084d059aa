// From octets to a SipMessage, and the checks that decide whether a message
// is fit to process (RFC 3261 §8.2, §16.3, §18.3; RFC 4475).
//
// parseAndValidate never throws: it returns a SipMessage or a SipParseError
// that says which response the RFC asks for (400, 413, 505) or 0 when the
// message must be dropped (a bad response, or octets without a usable head).
// When the head could be read, the error carries the partial message so the
// caller can build the response from its Via, From, To, Call-ID and CSeq.

import { CR, HT, isToken, LF, MAX_UINT32, parseDigits, scan, SP, trimEnd, WORD } from './chars.js';
import { HeaderField, SipMessage } from './message.js';
import { REASON_PHRASES } from './response.js';
import {
  H_CALL_ID,
  H_CONTENT_LENGTH,
  H_CONTENT_TYPE,
  H_CSEQ,
  H_EXPIRES,
  H_FROM,
  H_MAX_FORWARDS,
  H_TO,
  H_VIA,
  headerKeyAt,
  lastHeaderId,
  methodAt,
} from './names.js';

export interface ParseLimits {
  /** Whole message in octets. */
  maxMessageSize: number;
  /** Header field lines. */
  maxHeaders: number;
  /** One header field (its lines together) or the start line, in octets. */
  maxLineLength: number;
}

export const DEFAULT_PARSE_LIMITS: Readonly<ParseLimits> = Object.freeze({
  maxMessageSize: 65535,
  maxHeaders: 100,
  maxLineLength: 8192,
});

export interface ParseOptions {
  /**
   * The transport the octets came on. Datagram transports (udp, the
   * default) carry one message per datagram and may omit Content-Length,
   * and so do ws and wss, one message per WebSocket message (RFC 7118
   * §5.2); on stream transports it is required (RFC 3261 §18.3).
   */
  transport?: string;
  limits?: Partial<ParseLimits>;
}

/** Why a message was refused. Not an Error: parse failures are ordinary and must stay cheap. */
export class SipParseError {
  constructor(
    /** The response the RFC asks for: 400, 413, 505...; 0 means drop silently. */
    readonly code: number,
    /** Short reason, fit for a Warning or a log line. */
    readonly reason: string,
    /** The message as far as it could be parsed, when its head could be read. */
    readonly message?: SipMessage,
  ) {}
}

const TERMINATOR = Buffer.from('\r\n\r\n', 'latin1');
const WHOLE_DECODE_MAX = 4096;

// Buffer#latin1Slice skips toString()'s argument handling; Node's own
// modules (and undici) use it on their hot paths.
type Latin1Buffer = Buffer & { latin1Slice(start: number, end: number): string };
function latin1(buf: Buffer, start: number, end: number): string {
  return (buf as Latin1Buffer).latin1Slice(start, end);
}

function isDatagram(transport: string | undefined): boolean {
  // Exact spellings: no lower-casing on the hot path (callers pass Source.protocol).
  return transport === undefined || transport === 'udp' || transport === 'ws' || transport === 'wss' || transport === 'UDP' || transport === 'WS' || transport === 'WSS';
}

function limitsOf(opts: ParseOptions | undefined): ParseLimits {
  const l = opts?.limits;
  if (l === undefined) return DEFAULT_PARSE_LIMITS;
  if (l.maxMessageSize !== undefined && l.maxHeaders !== undefined && l.maxLineLength !== undefined) return l as ParseLimits;
  return {
    maxMessageSize: l.maxMessageSize ?? DEFAULT_PARSE_LIMITS.maxMessageSize,
    maxHeaders: l.maxHeaders ?? DEFAULT_PARSE_LIMITS.maxHeaders,
    maxLineLength: l.maxLineLength ?? DEFAULT_PARSE_LIMITS.maxLineLength,
  };
}

/** True when s[b, e) is longer than 4 chars and starts with "SIP/" in any case. */
function startsWithSipSlash(s: string, b: number, e: number): boolean {
  return e - b > 4 && (s.charCodeAt(b) | 0x20) === 0x73 && (s.charCodeAt(b + 1) | 0x20) === 0x69 && (s.charCodeAt(b + 2) | 0x20) === 0x70 && s.charCodeAt(b + 3) === 0x2f;
}

/** -1: s[b, e) is not SIP-Version syntax; 0: SIP/2.0; 1: another version. */
function versionKind(s: string, b: number, e: number): number {
  if (!startsWithSipSlash(s, b, e)) return -1;
  const dot = indexIn(s, 0x2e, b + 4, e);
  if (dot < b + 5 || dot === e - 1) return -1;
  if (parseDigits(s, b + 4, dot, 1e6) < 0 || parseDigits(s, dot + 1, e, 1e6) < 0) return -1;
  return e - b === 7 && s.charCodeAt(b + 4) === 0x32 && s.charCodeAt(b + 6) === 0x30 ? 0 : 1;
}

/** Index of the first char `c` in s[from, end), or -1. */
function indexIn(s: string, c: number, from: number, end: number): number {
  for (let i = from; i < end; i++) if (s.charCodeAt(i) === c) return i;
  return -1;
}

/** s[b, e), as the constant when it is `SIP/2.0` (nearly always): no string per message. */
function versionAt(s: string, b: number, e: number): string {
  return e - b === 7 && s.startsWith('SIP/2.0', b) ? 'SIP/2.0' : s.slice(b, e);
}

/** s[b, e), as the constant when it is the usual phrase of that status. */
function reasonAt(s: string, b: number, e: number, status: number): string {
  const usual = REASON_PHRASES[status];
  return usual !== undefined && usual.length === e - b && s.startsWith(usual, b) ? usual : s.slice(b, e);
}

/**
 * Parses and checks one message. `buf` is one datagram or one frame cut by
 * the stream framer. The returned message may keep views into `buf`.
 */
export function parseAndValidate(buf: Buffer, opts?: ParseOptions): SipMessage | SipParseError {
  try {
    return parse(buf, opts);
  } catch {
    // Defence in depth: a bug in a lazy accessor must not take the process down.
    return new SipParseError(0, 'internal parser error');
  }
}

function parse(input: Buffer, opts: ParseOptions | undefined): SipMessage | SipParseError {
  const limits = limitsOf(opts);
  const datagram = isDatagram(opts?.transport);
  // RFC 3261 §7.5: CRLFs before the start line are ignored.
  let skip = 0;
  while (skip + 1 < input.length && input[skip] === CR && input[skip + 1] === LF) skip += 2;
  const buf = skip === 0 ? input : input.subarray(skip);
  if (buf.length === 0) return new SipParseError(0, 'empty message');

  // Small messages (nearly all) are decoded whole: searching the string is
  // cheaper than Buffer#indexOf, and the body bytes cost little more.
  const whole = buf.length <= WHOLE_DECODE_MAX ? latin1(buf, 0, buf.length) : null;
  let headEnd = whole !== null ? whole.indexOf('\r\n\r\n') : buf.indexOf(TERMINATOR);
  let missingBlankLine = false;
  let cut = false;
  if (headEnd === -1) {
    // No empty line: read what there is so that a 400 can still be sent.
    missingBlankLine = true;
    headEnd = buf.length >= 2 && buf[buf.length - 2] === CR && buf[buf.length - 1] === LF ? buf.length - 2 : buf.length;
    if (headEnd > limits.maxMessageSize) {
      headEnd = limits.maxMessageSize;
      cut = true; // buf[headEnd] is no longer a CRLF
    }
  }
  // head holds the start line and every header line, each with its CRLF.
  const head =
    !cut && headEnd + 2 <= buf.length ? (whole !== null && !missingBlankLine ? whole : latin1(buf, 0, headEnd + 2)) : latin1(buf, 0, headEnd) + '\r\n';
  const headLen = cut || headEnd + 2 > buf.length ? head.length : headEnd + 2;

  // ---- start line ----
  const slEnd = head.indexOf('\r\n');
  if (slEnd > limits.maxLineLength) return new SipParseError(0, 'start line too long');
  if (head.indexOf('\n') < slEnd || head.indexOf('\r') < slEnd) return new SipParseError(0, 'bare CR or LF in the start line');
  let isRequest: boolean;
  let method = '';
  let uri = '';
  let status = 0;
  let reason = '';
  let version: string;
  let startError: SipParseError | null = null;
  // Read in place in head[0, slEnd): only the Request-URI is cut out; the
  // method, version and reason phrase are constants when they are the usual ones.
  if (startsWithSipSlash(head, 0, slEnd)) {
    // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
    isRequest = false;
    const sp1 = indexIn(head, SP, 0, slEnd);
    if (sp1 === -1) return new SipParseError(0, 'malformed status line');
    version = versionAt(head, 0, sp1);
    let sp2 = indexIn(head, SP, sp1 + 1, slEnd);
    if (sp2 === -1) sp2 = slEnd;
    status = sp2 - sp1 - 1 === 3 ? parseDigits(head, sp1 + 1, sp2, 699) : -1;
    if (status < 100) return new SipParseError(0, 'malformed status code');
    reason = sp2 < slEnd ? reasonAt(head, sp2 + 1, slEnd, status) : '';
    if (versionKind(head, 0, sp1) !== 0) return new SipParseError(0, 'unsupported SIP version in a response');
  } else {
    // Request-Line = Method SP Request-URI SP SIP-Version, single SPs.
    isRequest = true;
    const sp1 = indexIn(head, SP, 0, slEnd);
    const sp2 = sp1 === -1 ? -1 : indexIn(head, SP, sp1 + 1, slEnd);
    if (sp1 <= 0 || sp2 === -1) return new SipParseError(0, 'malformed request line');
    method = methodAt(head, 0, sp1);
    uri = head.slice(sp1 + 1, sp2);
    version = versionAt(head, sp2 + 1, slEnd);
    if (!isToken(head, 0, sp1)) return new SipParseError(0, 'malformed request method');
    if (uri.length === 0 || indexIn(head, SP, sp2 + 1, slEnd) !== -1 || indexIn(head, HT, 0, slEnd) !== -1) {
      startError = new SipParseError(400, 'malformed request line (white space)');
    } else {
      const vk = versionKind(head, sp2 + 1, slEnd);
      if (vk < 0) startError = new SipParseError(400, 'malformed SIP version');
      else if (vk > 0) startError = new SipParseError(505, 'SIP version not supported');
    }
  }

  // ---- header fields ----
  const fields: HeaderField[] = [];
  for (let i = 0; i < COUNTS.length; i++) COUNTS[i] = 0;
  let pos = slEnd + 2;
  let headerError: string | null = null;
  if (pos < headLen && (head.charCodeAt(pos) === SP || head.charCodeAt(pos) === HT)) headerError = 'continuation line before the first header';
  while (pos < headLen && headerError === null) {
    // A bare LF or CR is refused: a stack that ends lines at either would
    // see a header hidden in another downstream (RFC 3261 allows CRLF only).
    let lf = head.indexOf('\n', pos);
    if (head.charCodeAt(lf - 1) !== CR || head.indexOf('\r', pos) !== lf - 1) {
      headerError = 'bare CR or LF in a header';
      break;
    }
    let folded = false;
    // Continuation lines (folding) belong to this field.
    while (lf + 1 < headLen && (head.charCodeAt(lf + 1) === SP || head.charCodeAt(lf + 1) === HT)) {
      folded = true;
      const next = head.indexOf('\n', lf + 1);
      if (head.charCodeAt(next - 1) !== CR || head.indexOf('\r', lf + 1) !== next - 1) {
        headerError = 'bare CR or LF in a header';
        break;
      }
      lf = next;
    }
    if (headerError !== null) break;
    const lineEnd = lf - 1;
    if (lineEnd - pos > limits.maxLineLength) {
      headerError = 'header field too long';
      break;
    }
    const colon = head.indexOf(':', pos);
    if (colon === -1 || colon > lineEnd) {
      headerError = 'header line without a colon';
      break;
    }
    const key = colon > pos ? headerKeyAt(head, pos, trimEnd(head, pos, colon)) : null;
    if (key === null) {
      headerError = 'malformed header name';
      break;
    }
    COUNTS[lastHeaderId]++;
    fields.push(new HeaderField(key, head, pos, lineEnd, colon + 1, folded, true));
    pos = lf + 1;
  }

  // ---- body ----
  const bodyStart = headEnd + 4;
  let bodyEnd = buf.length;
  let lengthError: string | null = null;
  let declared = -1;
  for (let i = fields.length - 1, left = COUNTS[H_CONTENT_LENGTH]; i >= 0 && left > 0; i--) {
    const f = fields[i];
    if (f.key !== 'content-length') continue;
    left--;
    const n = parseDigits(f.text, f.start, f.end, MAX_UINT32);
    if (n < 0) {
      lengthError = 'malformed Content-Length';
      break;
    }
    if (declared >= 0 && n !== declared) {
      lengthError = 'conflicting Content-Length values';
      break;
    }
    declared = n;
  }
  if (missingBlankLine) bodyEnd = buf.length;
  else if (lengthError === null) {
    if (declared >= 0) {
      if (bodyStart + declared > buf.length) lengthError = 'Content-Length larger than the message';
      else bodyEnd = bodyStart + declared;
    } else if (!datagram) lengthError = 'Content-Length required on a stream transport';
  }
  const bStart = missingBlankLine ? buf.length : bodyStart;
  const msg = new SipMessage(isRequest, method, uri, status, reason, version, buf, slEnd, fields, bStart, Math.max(bodyEnd, bStart));

  const fail = (code: number, why: string): SipParseError => new SipParseError(isRequest ? code : 0, why, msg);
  if (startError !== null) return new SipParseError(startError.code, startError.reason, msg);
  if (headerError !== null) return fail(400, headerError);
  if (missingBlankLine) return fail(400, 'no empty line after the header fields');
  if (lengthError !== null) return fail(400, lengthError);
  if (bodyEnd > limits.maxMessageSize) return fail(413, 'message too large');
  if (fields.length > limits.maxHeaders) return fail(400, 'too many header fields');
  const why = checkHeaders(msg, fields);
  if (why !== null) return fail(400, why);
  return msg;
}

// Scratch counters for checkHeaders (parsing is synchronous, so one set serves all).
const COUNTS = new Uint16Array(10);

/** The checks every message passes before Portier acts on it; a reason on failure. */
function checkHeaders(msg: SipMessage, fields: readonly HeaderField[]): string | null {
  // Mandatory headers (RFC 3261 §8.1.1) and single-valued ones given twice
  // (RFC 4475 §3.1.2.17). Max-Forwards stays optional for RFC 2543 peers.
  const n = COUNTS;
  if (n[H_VIA] === 0) return 'missing Via header';
  if (n[H_FROM] === 0) return 'missing From header';
  if (n[H_TO] === 0) return 'missing To header';
  if (n[H_CALL_ID] === 0) return 'missing Call-ID header';
  if (n[H_CSEQ] === 0) return 'missing CSeq header';
  if (n[H_FROM] > 1 || n[H_TO] > 1 || n[H_CALL_ID] > 1 || n[H_CSEQ] > 1 || n[H_MAX_FORWARDS] > 1 || n[H_CONTENT_TYPE] > 1 || n[H_EXPIRES] > 1) {
    return 'single-valued header given more than once';
  }

  if (msg.viaOrNull() === null) return 'malformed Via header';
  const cs = msg.cseqOrNull();
  if (cs === null || (cs.method !== msg.method && !isToken(cs.method, 0, cs.method.length))) return 'malformed CSeq header';
  if (msg.isRequest && cs.method !== msg.method) return 'CSeq method does not match the request method';
  const cid = msg.callId();
  if (!isCallId(cid)) return 'malformed Call-ID header';
  if (msg.fromOrNull() === null) return 'malformed From header';
  if (msg.toOrNull() === null) return 'malformed To header';
  const mf = msg.maxForwards();
  if (mf !== null && mf < 0) return 'malformed Max-Forwards header';
  if (n[H_EXPIRES] > 0) {
    const ex = msg.expires();
    if (ex !== null && ex < 0) return 'malformed Expires header';
  }
  if (msg.isRequest) {
    const ruri = msg.requestUri;
    if (ruri === null) return 'malformed Request-URI';
    if (ruri.isSip && ruri.headers !== null) return 'Request-URI with headers';
    if (msg.method === 'REGISTER') {
      // The registrar stores these: check them whole.
      if (!msg.to().uriIsValid) return 'malformed To URI';
      const contacts = msg.contacts();
      if (contacts === null) return 'malformed Contact header';
      for (const c of contacts) {
        if (!c.uriIsValid) return 'malformed Contact URI';
        const e = c.param('expires');
        if (e !== undefined && (e === null || parseDigits(e, 0, e.length, MAX_UINT32) < 0)) return 'malformed Contact expires';
      }
      if (msg.isContactStar() && msg.count('contact') > 1) return 'Contact: * with other contacts';
    }
  }
  return null;
}

/** callid = word [ "@" word ] */
function isCallId(s: string): boolean {
  const at = s.indexOf('@');
  if (at === -1) return scan(s, 0, s.length, WORD) === s.length && s.length > 0;
  return at > 0 && at < s.length - 1 && scan(s, 0, at, WORD) === at && scan(s, at + 1, s.length, WORD) === s.length && s.indexOf('@', at + 1) === -1;
}
