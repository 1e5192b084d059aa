// Building responses to a request (RFC 3261 §8.2.6) and the Via rules of
// the server transport (§18.2.1, §18.2.2, RFC 3581).

import { randomFillSync } from 'node:crypto';
import { headerDisplayName, headerKey } from './names.js';
import type { SipMessage } from './message.js';
import { parseAndValidate, SipParseError } from './parser.js';
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

// Lines copied from the request into every response (§8.2.6.2).
const COPIED = ['via', 'from', 'to', 'call-id', 'cseq'];

/**
 * Builds a response to `req` as octets. Via (all of them, in order), From,
 * To, Call-ID and CSeq are copied; a To tag is added for non-100 responses.
 * Works on partially parsed requests too (the 400 for a bad message), as
 * long as they have a Via.
 */
export function buildResponseBytes(req: SipMessage, code: number, opts: ResponseOptions = {}): Buffer {
  const reason = (opts.reason ?? reasonPhrase(code)).replace(/[\r\n]/g, ' ');
  let text = 'SIP/2.0 ' + code + ' ' + reason + '\r\n';
  for (const key of COPIED) {
    for (const f of req.headerFields()) {
      if (f.key !== key) continue;
      let v = f.value;
      if (key === 'to' && code !== 100) {
        const to = req.toOrNull();
        if (to !== null && to.tag === null) v += ';tag=' + (opts.toTag ?? randomToken());
      }
      text += headerDisplayName(key) + ': ' + v + '\r\n';
    }
  }
  if (opts.headers) {
    for (const [name, value] of opts.headers) {
      text += headerDisplayName(headerKey(name)) + ': ' + value.replace(/[\r\n]/g, ' ') + '\r\n';
    }
  }
  const body = opts.body === undefined ? Buffer.alloc(0) : typeof opts.body === 'string' ? Buffer.from(opts.body, 'utf8') : opts.body;
  if (body.length > 0 && opts.contentType) text += 'Content-Type: ' + opts.contentType + '\r\n';
  text += 'Content-Length: ' + body.length + '\r\n\r\n';
  const head = Buffer.from(text, 'latin1');
  return body.length === 0 ? head : Buffer.concat([head, body]);
}

/** As buildResponseBytes, parsed back: a response message to hand to the transaction layer. */
export function buildResponse(req: SipMessage, code: number, opts: ResponseOptions = {}): SipMessage {
  const r = parseAndValidate(buildResponseBytes(req, code, opts), { transport: 'tcp' });
  if (r instanceof SipParseError) throw new Error('built an invalid response: ' + r.reason);
  return r;
}

/**
 * RFC 3261 §18.2.1 and RFC 3581 §4: the top Via of a received request, with
 * `received` when the sent-by host is not the source address (always when
 * rport was asked for) and `rport` filled with the source port. Returns null
 * when nothing needs to change.
 */
export function stampedVia(via: Via, sourceAddress: string, sourcePort: number): string | null {
  const wantsRport = via.params.has('rport');
  const sentBy = stripBrackets(via.host).toLowerCase();
  const needReceived = wantsRport || sentBy !== sourceAddress.toLowerCase();
  if (!needReceived && !wantsRport) return null;
  let out = 'SIP/2.0/' + via.transport + ' ' + via.host + (via.port !== null ? ':' + via.port : '');
  for (const [k, v] of via.params) {
    if (k === 'received') continue;
    if (k === 'rport') out += ';rport=' + sourcePort;
    else out += v === null ? ';' + k : ';' + k + '=' + v;
  }
  if (needReceived) out += ';received=' + sourceAddress;
  return out;
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
