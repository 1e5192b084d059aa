// Route pre-processing (RFC 3261 §16.4) and Record-Route values (§16.6
// step 4, RFC 5658 double Record-Route).
//
// Portier's Record-Route URIs carry a token: an HMAC of the dialog's Call-ID
// and the From tag of the request that created it, under a key only this
// server knows. A Route naming Portier is honoured as "this request belongs
// to a dialog Portier record-routed" only when its token matches the
// request's Call-ID and one of its tags (the creator's tag is the From tag of
// its own requests and the To tag of the other side's); otherwise anyone
// could write `Route: <sip:portier;lr>` and use Portier as an open relay, or
// reuse a Call-ID seen once to start new calls without authenticating.
//
// The Record-Route entry on the side of a stream client (TCP, TLS, WS, WSS)
// also carries a flow token (RFC 5626 §5.3, as RFC 7118 appendix B
// suggests): a request inside the dialog goes back down the connection the
// client opened, not to its Contact, which a WebSocket client fills with an
// `.invalid` host and a phone or door station behind NAT with an address
// nobody can reach. Signed so that nobody can point it at someone else's
// connection.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { SipMessage, Uri } from '../sip/index.js';
import { hostForUri } from '../sip/index.js';
import type { Destination, Endpoint } from '../transport/index.js';
import type { SelfAddresses } from './self.js';

/** URI parameter of Portier's Record-Route entries holding the dialog token. */
export const TOKEN_PARAM = 'pt';

/** URI parameter of Portier's Record-Route entries naming a stream client's connection (flow token). */
export const FLOW_PARAM = 'pf';

/** Signs and checks dialog tokens. One key per process unless one is given. */
export class RouteSigner {
  private readonly key: Buffer;
  // Its own key: a flow token must never equal a dialog token made from a chosen Call-ID and tag.
  private readonly flowKey: Buffer;

  constructor(key?: Buffer) {
    this.key = key ?? randomBytes(32);
    this.flowKey = createHmac('sha256', this.key).update('portier flow tokens').digest();
  }

  /** The flow token of a stream connection; '' for UDP and destinations without a connection. */
  flowToken(flow: Destination): string {
    if (flow.protocol === 'udp' || !flow.connectionId) return '';
    const payload = Buffer.from(`${flow.protocol}|${flow.address}|${flow.port}|${flow.connectionId}`).toString('base64url');
    return payload + '.' + createHmac('sha256', this.flowKey).update(payload).digest('base64url').slice(0, 16);
  }

  /** Where a flow token this server made points; null for anything else. */
  flowOf(token: string | null | undefined): Destination | null {
    if (typeof token !== 'string') return null;
    const dot = token.indexOf('.');
    if (dot <= 0) return null;
    const payload = token.slice(0, dot);
    const got = Buffer.from(token.slice(dot + 1));
    const want = Buffer.from(createHmac('sha256', this.flowKey).update(payload).digest('base64url').slice(0, 16));
    if (got.length !== want.length || !timingSafeEqual(got, want)) return null;
    const [protocol, address, port, id] = Buffer.from(payload, 'base64url').toString('utf8').split('|');
    if (protocol !== 'tcp' && protocol !== 'tls' && protocol !== 'ws' && protocol !== 'wss') return null;
    return { protocol, address, port: Number(port), connectionId: Number(id) };
  }

  token(callId: string, creatorTag: string): string {
    return createHmac('sha256', this.key).update(callId).update('\n').update(creatorTag).digest('base64url').slice(0, 16);
  }

  /** Whether `token` was made for this request's Call-ID and its From or To tag. */
  verify(req: SipMessage, token: string | null | undefined): boolean {
    if (typeof token !== 'string' || token.length !== 16) return false;
    const got = Buffer.from(token);
    const callId = req.callId();
    for (const tag of [req.fromOrNull()?.tag, req.toOrNull()?.tag]) {
      if (tag === null || tag === undefined || tag === '') continue;
      if (timingSafeEqual(got, Buffer.from(this.token(callId, tag)))) return true;
    }
    return false;
  }
}

export interface RouteResult {
  /** True when a Route (or a strict-routed Request-URI) of this server carried a valid token for this Call-ID and tags. */
  dialog: boolean;
  /**
   * In such a dialog, with no Route left: the connection named by the flow
   * token of the last entry of ours removed (the one facing the next hop).
   */
  flow: Destination | null;
}

/**
 * Applies §16.4 to `req` in place: a Request-URI that is one of this server's
 * Record-Route values means the previous hop is a strict router, so the real
 * Request-URI is the last Route value; then every topmost Route entry naming
 * this server is removed (two of them after a double Record-Route).
 */
export function preprocessRoutes(req: SipMessage, self: SelfAddresses, signer: RouteSigner): RouteResult {
  let dialog = false;
  let flow: string | null | undefined;
  const ruri = req.requestUri;
  if (ruri !== null && ruri.isSip && ruri.user === null && ruri.hasParam('lr') && self.isSelfUri(ruri)) {
    const routes = req.routes();
    if (routes !== null && routes.length > 0) {
      if (signer.verify(req, tokenOf(ruri))) dialog = true;
      flow = ruri.params.get(FLOW_PARAM);
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
    if (routes === null || routes.length === 0) break;
    const top = routes[0].uri;
    if (!self.isSelfUri(top)) {
      flow = undefined; // another hop comes next: it is not ours to reach
      break;
    }
    // One valid token is enough: no HMAC for the second entry of a double Record-Route.
    if (!dialog && signer.verify(req, tokenOf(top))) dialog = true;
    flow = top.params.get(FLOW_PARAM);
    req.removeFirstValue('route');
  }
  return { dialog, flow: dialog ? signer.flowOf(flow) : null };
}

function tokenOf(uri: Uri): string | null | undefined {
  return uri.params.get(TOKEN_PARAM);
}

/** The Record-Route URI for one of this server's endpoints: `<sip:addr:port;transport=x;lr;pt=TOKEN[;pf=FLOW]>`. */
export function recordRouteValue(local: Endpoint, token: string, flow = ''): string {
  const transport = local.protocol === 'udp' ? '' : ';transport=' + local.protocol;
  return '<sip:' + hostForUri(local.address) + ':' + local.port + transport + ';lr;' + TOKEN_PARAM + '=' + token + (flow === '' ? '' : ';' + FLOW_PARAM + '=' + flow) + '>';
}

/**
 * Adds this server's Record-Route to a request it forwards. When the request
 * leaves on another transport or interface than it arrived on, two entries
 * are added (RFC 5658): the inbound one below, the outbound one on top, so
 * each side of the dialog reaches Portier over its own transport.
 */
export function addRecordRoute(req: SipMessage, inbound: Endpoint, outbound: Endpoint, token: string, flows?: { inbound: string; outbound: string }): void {
  const inVal = recordRouteValue(inbound, token, flows?.inbound);
  const outVal = recordRouteValue(outbound, token, flows?.outbound);
  req.prependHeader('record-route', inVal);
  if (outVal !== inVal) req.prependHeader('record-route', outVal);
}
