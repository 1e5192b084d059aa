// Requests the transaction layer and its users build from an INVITE: the
// ACK for a non-2xx final (§17.1.1.3), CANCEL (§9.1), and fresh branches
// (§8.1.1.7).

import { parseAndValidate, randomToken, SipParseError, type SipMessage } from '../sip/index.js';

/** The RFC 3261 magic cookie that starts every branch Portier makes. */
export const BRANCH_COOKIE = 'z9hG4bK';

/** A branch unique in space and time (§8.1.1.7): the cookie and 64 random bits. */
export function newBranch(): string {
  return BRANCH_COOKIE + randomToken();
}

/**
 * The ACK a client transaction sends for a 300-699 response to `invite`
 * (§17.1.1.3): the INVITE's Request-URI, Call-ID, From, CSeq number and
 * Route headers, only its top Via (so the branch matches the server
 * transaction), and the To of the response, which carries the tag.
 */
export function buildAckBytes(invite: SipMessage, response: SipMessage): Buffer {
  return Buffer.from(derivedRequest(invite, 'ACK', response.get('to') ?? invite.get('to') ?? ''), 'latin1');
}

/** buildAckBytes as a message. */
export function buildAck(invite: SipMessage, response: SipMessage): SipMessage {
  return parseBuilt(buildAckBytes(invite, response));
}

/**
 * A CANCEL for `invite` (§9.1): same Request-URI, Call-ID, To, From and
 * CSeq number, CSeq method CANCEL, a single Via equal to the INVITE's top
 * Via (the server matches it to the INVITE by its branch, §9.2), and the
 * INVITE's Route headers. Send it as a non-INVITE client transaction to the
 * INVITE's destination.
 */
export function buildCancel(invite: SipMessage): SipMessage {
  return parseBuilt(Buffer.from(derivedRequest(invite, 'CANCEL', invite.get('to') ?? ''), 'latin1'));
}

function derivedRequest(invite: SipMessage, method: string, to: string): string {
  const via = invite.topVia();
  if (!invite.isRequest || via === null) throw new Error(`cannot build ${method}: not a request with a Via`);
  let text = method + ' ' + invite.uri + ' SIP/2.0\r\nVia: ' + via.raw + '\r\n';
  const mf = invite.maxForwards();
  text += 'Max-Forwards: ' + (mf === null || mf < 0 ? 70 : mf) + '\r\n';
  for (const route of invite.getAll('route')) text += 'Route: ' + route + '\r\n';
  text +=
    'From: ' + (invite.get('from') ?? '') + '\r\n' +
    'To: ' + to + '\r\n' +
    'Call-ID: ' + invite.callId() + '\r\n' +
    'CSeq: ' + invite.cseq().seq + ' ' + method + '\r\n' +
    'Content-Length: 0\r\n\r\n';
  return text;
}

function parseBuilt(bytes: Buffer): SipMessage {
  const m = parseAndValidate(bytes, { transport: 'tcp' });
  if (m instanceof SipParseError) throw new Error('built an invalid request: ' + m.reason);
  return m;
}
