// Route pre-processing (RFC 3261 §16.4) and Record-Route values (§16.6
// step 4, RFC 5658 double Record-Route).

import type { SipMessage } from '../sip/index.js';
import { hostForUri } from '../sip/index.js';
import type { Endpoint } from '../transport/index.js';
import type { SelfAddresses } from './self.js';

/**
 * Applies §16.4 to `req` in place: a Request-URI that is one of this server's
 * Record-Route values means the previous hop is a strict router, so the real
 * Request-URI is the last Route value; then every topmost Route entry naming
 * this server is removed (two of them after a double Record-Route).
 */
export function preprocessRoutes(req: SipMessage, self: SelfAddresses): void {
  const ruri = req.requestUri;
  if (ruri !== null && ruri.isSip && ruri.user === null && ruri.hasParam('lr') && self.isSelfUri(ruri)) {
    const routes = req.routes();
    if (routes !== null && routes.length > 0) {
      const last = routes[routes.length - 1];
      req.setRequestUri(last.uriText);
      // Rewrite the Route set without its last entry.
      const rest = routes.slice(0, -1).map((r) => r.raw);
      req.removeHeader('route');
      if (rest.length > 0) req.appendHeader('route', rest.join(', '));
    }
  }
  for (;;) {
    const routes = req.routes();
    if (routes === null || routes.length === 0) return;
    const top = routes[0].uri;
    if (!self.isSelfUri(top)) return;
    req.removeFirstValue('route');
  }
}

/** The Record-Route URI for one of this server's endpoints: `<sip:addr:port;transport=x;lr>`. */
export function recordRouteValue(local: Endpoint): string {
  const transport = local.protocol === 'udp' ? '' : ';transport=' + local.protocol;
  return '<sip:' + hostForUri(local.address) + ':' + local.port + transport + ';lr>';
}

/**
 * Adds this server's Record-Route to a request it forwards. When the request
 * leaves on another transport or interface than it arrived on, two entries
 * are added (RFC 5658): the inbound one below, the outbound one on top, so
 * each side of the dialog reaches Portier over its own transport.
 */
export function addRecordRoute(req: SipMessage, inbound: Endpoint, outbound: Endpoint): void {
  const inVal = recordRouteValue(inbound);
  const outVal = recordRouteValue(outbound);
  req.prependHeader('record-route', inVal);
  if (outVal !== inVal) req.prependHeader('record-route', outVal);
}
