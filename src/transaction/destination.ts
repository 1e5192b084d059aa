// Where a server transaction sends its responses (RFC 3261 §18.2.2 with
// RFC 3581). The same rule as src/server.ts' responseDestination, kept here
// so the transaction layer does not depend on the server.

import { responsePort, type SipMessage } from '../sip/index.js';
import type { Destination, Protocol, Source } from '../transport/index.js';

const DEFAULT_PORT: Readonly<Record<Protocol, number>> = { udp: 5060, tcp: 5060, tls: 5061, ws: 80, wss: 443 };

/** Streams (tcp, tls, ws, wss) are reliable: no retransmissions, zero-length wait timers (§17). */
export function isReliable(protocol: Protocol): boolean {
  return protocol !== 'udp';
}

/**
 * On a stream, back down the connection the request came on. Over UDP, to
 * the source address (the Via's `received`), at the source port when the
 * client asked for rport, else at the Via's sent-by port; from the local
 * socket the request arrived on, so NAT bindings hold.
 */
export function responseDestination(req: SipMessage, source: Source): Destination {
  if (source.protocol !== 'udp') {
    return { protocol: source.protocol, address: source.address, port: source.port, connectionId: source.connectionId };
  }
  const via = req.topVia();
  const port = via === null ? source.port : responsePort(via, DEFAULT_PORT.udp);
  // With rport (nearly always) that is the source itself: one object fewer per transaction, kept 32 s.
  if (port === source.port) return source;
  return { protocol: 'udp', address: source.address, port, local: source.local };
}
