// Table keys for matching messages to transactions. Plain string
// concatenation of fields the parser has already read; a space separates
// them because no token, host or tag can hold one.

import type { SipMessage, Via } from '../sip/index.js';

/**
 * §17.2.3 with the magic cookie: the top Via's branch and sent-by, and the
 * method, ACK counting as INVITE (`method` is passed already mapped).
 */
export function serverKey(via: Via, branch: string, method: string): string {
  const port = via.port;
  return branch + ' ' + via.host.toLowerCase() + (port === null ? ' ' : ':' + port + ' ') + method;
}

/**
 * §17.2.3 for RFC 2543 requests (no magic cookie): Request-URI, To tag,
 * From tag, Call-ID, CSeq number and method, and the top Via. The caller
 * picks the To tag and method to look up with: an ACK is matched to its
 * INVITE (whose To tag is usually still empty) and then checked against the
 * tag of the response sent.
 */
export function legacyServerKey(req: SipMessage, via: Via, toTag: string, method: string): string {
  return '2543 ' + req.uri + ' ' + toTag + ' ' + (req.from().tag ?? '') + ' ' + req.callId() + ' ' + req.cseq().seq + ' ' + method + ' ' + via.raw;
}

/** §17.1.3: the top Via's branch and the CSeq method. */
export function clientKey(branch: string, method: string): string {
  return branch + ' ' + method;
}
