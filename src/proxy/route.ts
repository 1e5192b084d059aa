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
import { HmacSha256 } from '../hmac.js';
import type { SipMessage, Uri } from '../sip/index.js';
import { detach, hostForUri, parseUri } from '../sip/index.js';
import type { Destination, Endpoint } from '../transport/index.js';
import type { SelfAddresses } from './self.js';

/** URI parameter of Portier's Record-Route entries holding the dialog token. */
export const TOKEN_PARAM = 'pt';

/** URI parameter of Portier's Record-Route entries naming a stream client's connection (flow token). */
export const FLOW_PARAM = 'pf';

/**
 * With one Record-Route entry for both sides (same transport and socket),
 * `pf` names the caller's flow and this one the callee's; the direction of
 * an in-dialog request (whose tag made the dialog token) picks one.
 */
export const CALLEE_FLOW_PARAM = 'pf2';

/**
 * URI parameter of the Path entry a node of a cluster adds to the bindings
 * it registers (RFC 3327): it names the node's own flow to the device, so
 * that another node sends the device's calls through this one.
 */
export const HANDOFF_PARAM = 'pfn';

/**
 * URI parameter a node adds, per request, next to a handoff token it sends
 * on: proof (time and MAC over the token and the Call-ID) that a node of the
 * cluster sends it. The token alone is no key: a device sees it in the Path
 * of its REGISTER's 200.
 */
export const HANDOFF_PROOF_PARAM = 'pfa';

/** How old a handoff proof may be (clocks of the nodes may differ a little). */
const HANDOFF_PROOF_MS = 60_000;

/**
 * The MACs computed lately, by their input. A dialog's token and flow tokens
 * are made for its INVITE and checked again for its ACK, BYE and every
 * request in it: the same HMAC-SHA256 over the same input, about 2.5 µs
 * each, a tenth of what Portier spends on a call of its own. Two
 * generations of maps bound it (the older is dropped when the newer fills)
 * with no work per lookup; the inputs are copied so that they do not keep
 * the messages they were cut from. Small on purpose: what it saves is the
 * ACK's check, which follows the 200 within milliseconds (a BYE minutes
 * later misses any cache), and an entry that outlives two young-generation
 * collections (~0.25 s apart at 1,000 calls/s) is promoted and copied. With
 * 8,192 entries per generation the cache was a third of what each call left
 * in the old generation; with 128 (a call makes three or four) an entry
 * lives 30-60 ms at that rate and dies young.
 */
class RecentMacs {
  private current = new Map<string, string>();
  private previous = new Map<string, string>();

  private readonly hmac: HmacSha256;

  constructor(
    key: Buffer,
    /** Characters of the base64url MAC kept. */
    private readonly length: number,
    private readonly max = 128,
  ) {
    this.hmac = new HmacSha256(key);
  }

  mac(input: string): string {
    let mac = this.current.get(input);
    if (mac !== undefined) return mac;
    mac = this.previous.get(input) ?? this.hmac.digest(input, 'base64url').slice(0, this.length);
    if (this.current.size >= this.max) {
      this.previous = this.current;
      this.current = new Map();
    }
    this.current.set(detach(input), mac);
    return mac;
  }
}

/** Signs and checks dialog tokens. One key per process unless one is given. */
export class RouteSigner {
  private readonly key: Buffer;
  // Its own key: a flow token must never equal a dialog token made from a chosen Call-ID and tag.
  private readonly flowKey: Buffer;

  private readonly handoffMac: HmacSha256;
  private readonly dialogMacs: RecentMacs;
  private readonly flowMacs: RecentMacs;

  /** `node`: this process (a flow lives and dies with it): handoff tokens of another process are not ours to follow. */
  constructor(key?: Buffer, readonly node: string = randomBytes(9).toString('base64url')) {
    this.key = key ?? randomBytes(32);
    this.flowKey = createHmac('sha256', this.key).update('portier flow tokens').digest();
    this.handoffMac = new HmacSha256(createHmac('sha256', this.key).update('portier node handoff').digest());
    this.dialogMacs = new RecentMacs(this.key, 16);
    this.flowMacs = new RecentMacs(this.flowKey, 16);
  }

  /** The handoff token of a flow of this node (stream connection or UDP 5-tuple). */
  handoffToken(flow: Destination): string {
    const payload = Buffer.from(`${this.node}|${flow.protocol}|${flow.address}|${flow.port}|${flow.connectionId ?? 0}`).toString('base64url');
    return payload + '.' + this.handoffMac.digest(payload, 'base64url').slice(0, 22);
  }

  /** The proof that a cluster node sends this request on with `token` (see HANDOFF_PROOF_PARAM). */
  handoffProof(token: string, callId: string, now = Date.now()): string {
    const ts = Math.floor(now / 1000).toString(36);
    return ts + '.' + this.handoffMac.digest('proof|' + ts + '|' + token + '|' + callId, 'base64url').slice(0, 22);
  }

  checkHandoffProof(token: string, proof: string | null | undefined, callId: string, now = Date.now()): boolean {
    if (typeof proof !== 'string') return false;
    const dot = proof.indexOf('.');
    if (dot <= 0) return false;
    const ts = proof.slice(0, dot);
    const at = parseInt(ts, 36) * 1000;
    if (!Number.isFinite(at) || Math.abs(now - at) > HANDOFF_PROOF_MS) return false;
    const want = Buffer.from(this.handoffMac.digest('proof|' + ts + '|' + token + '|' + callId, 'base64url').slice(0, 22));
    const got = Buffer.from(proof.slice(dot + 1));
    return got.length === want.length && timingSafeEqual(got, want);
  }

  /**
   * The flow a handoff token names, when this very process made it; null
   * otherwise (forged, or made before a restart: that flow is gone).
   * `stale` tells the two apart for the caller that must say "gone".
   */
  handoffOf(token: string | null | undefined): { flow: Destination | null; ours: boolean } {
    if (typeof token !== 'string') return { flow: null, ours: false };
    const dot = token.indexOf('.');
    if (dot <= 0) return { flow: null, ours: false };
    const payload = token.slice(0, dot);
    const got = Buffer.from(token.slice(dot + 1));
    const want = Buffer.from(this.handoffMac.digest(payload, 'base64url').slice(0, 22));
    if (got.length !== want.length || !timingSafeEqual(got, want)) return { flow: null, ours: false };
    const [node, protocol, address, port, id] = Buffer.from(payload, 'base64url').toString('utf8').split('|');
    if (node !== this.node) return { flow: null, ours: true };
    if (protocol !== 'udp' && protocol !== 'tcp' && protocol !== 'tls' && protocol !== 'ws' && protocol !== 'wss') return { flow: null, ours: false };
    const flow: Destination = { protocol, address, port: Number(port) };
    if (protocol !== 'udp') flow.connectionId = Number(id);
    return { flow, ours: true };
  }

  /**
   * The flow token of a client's flow (its stream connection, or the source
   * address and port of its UDP packets: a NAT binding), for the
   * Record-Route entry that carries `dialogToken`; '' for a stream
   * destination without a connection. Bound to that dialog: lifted into
   * another dialog's Route, it is refused.
   */
  flowToken(flow: Destination, dialogToken: string): string {
    if (flow.protocol !== 'udp' && !flow.connectionId) return '';
    const payload = Buffer.from(`${flow.protocol}|${flow.address}|${flow.port}|${flow.connectionId ?? 0}`).toString('base64url');
    return payload + '.' + this.flowMacs.mac(dialogToken + '|' + payload);
  }

  /** Where a flow token this server made for the dialog of `dialogToken` points; null for anything else. */
  flowOf(token: string | null | undefined, dialogToken: string | null | undefined): Destination | null {
    if (typeof token !== 'string' || typeof dialogToken !== 'string') return null;
    const dot = token.indexOf('.');
    if (dot <= 0) return null;
    const payload = token.slice(0, dot);
    const got = Buffer.from(token.slice(dot + 1));
    const want = Buffer.from(this.flowMacs.mac(dialogToken + '|' + payload));
    if (got.length !== want.length || !timingSafeEqual(got, want)) return null;
    const [protocol, address, port, id] = Buffer.from(payload, 'base64url').toString('utf8').split('|');
    if (protocol === 'udp') return { protocol, address, port: Number(port) };
    if (protocol !== 'tcp' && protocol !== 'tls' && protocol !== 'ws' && protocol !== 'wss') return null;
    return { protocol, address, port: Number(port), connectionId: Number(id) };
  }

  token(callId: string, creatorTag: string): string {
    return this.dialogMacs.mac(callId + '\n' + creatorTag);
  }

  /** Whether `token` was made for this request's Call-ID and its From or To tag. */
  verify(req: SipMessage, token: string | null | undefined): boolean {
    return this.sender(req, token) !== null;
  }

  /** Who sends this request in the dialog of `token`: its creator (the caller: its From tag made the token), the other side, or null when the token is not this dialog's. */
  sender(req: SipMessage, token: string | null | undefined): 'creator' | 'other' | null {
    if (typeof token !== 'string' || token.length !== 16) return null;
    const got = Buffer.from(token);
    const callId = req.callId();
    const from = req.fromOrNull()?.tag;
    if (from && timingSafeEqual(got, Buffer.from(this.token(callId, from)))) return 'creator';
    const to = req.toOrNull()?.tag;
    if (to && timingSafeEqual(got, Buffer.from(this.token(callId, to)))) return 'other';
    return null;
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
  /**
   * A request another node of the cluster sent this one for a device whose
   * flow is here (the Path entry this node registered): that flow, while
   * this process holds it. `handoff: 'gone'` when the entry is this node's
   * but from before a restart.
   */
  handoff: Destination | 'gone' | null;
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
  /** The dialog token of the entry that carried `flow`. */
  let flowDialog: string | null | undefined;
  /** The callee's flow, when one entry served both sides. */
  let flow2: string | null | undefined;
  let handoff: Destination | 'gone' | null = null;
  // The token that proved the dialog and who sent the request: the flow's entry normally carries the same token, so no second HMAC.
  let proved: string | null | undefined;
  let provedSender: 'creator' | 'other' | null = null;
  const ruri = req.requestUri;
  if (ruri !== null && ruri.isSip && ruri.user === null && ruri.hasParam('lr') && self.isSelfUri(ruri)) {
    const routes = req.routes();
    if (routes !== null && routes.length > 0) {
      proved = tokenOf(ruri);
      provedSender = signer.sender(req, proved);
      dialog = provedSender !== null;
      flow = ruri.params.get(FLOW_PARAM);
      flow2 = ruri.params.get(CALLEE_FLOW_PARAM);
      flowDialog = tokenOf(ruri);
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
    if (!dialog) {
      proved = tokenOf(top);
      provedSender = signer.sender(req, proved);
      dialog = provedSender !== null;
    }
    flow = top.params.get(FLOW_PARAM);
    flow2 = top.params.get(CALLEE_FLOW_PARAM);
    flowDialog = tokenOf(top);
    const h = top.params.get(HANDOFF_PARAM);
    // Only with the proof another node adds per request: the token alone authorises nothing.
    if (typeof h === 'string' && signer.checkHandoffProof(h, top.params.get(HANDOFF_PROOF_PARAM), req.callId())) {
      const r = signer.handoffOf(h);
      handoff = r.flow ?? (r.ours ? 'gone' : null);
    }
    req.removeFirstValue('route');
  }
  // One entry for both sides: the caller's requests go to the callee's flow, and the other way round.
  // The entry that carries the flow must be of this very dialog (not one lifted from another).
  const sender = flowDialog === proved ? provedSender : signer.sender(req, flowDialog);
  if (flow2 !== undefined && sender === 'creator') flow = flow2;
  return { dialog, flow: dialog && sender !== null ? signer.flowOf(flow, flowDialog) : null, handoff };
}

/** The URI of a Path (or Route) value: `<sip:host;lr>`. */
export function pathUri(value: string): Uri | null {
  const lt = value.indexOf('<');
  const gt = value.indexOf('>', lt + 1);
  return lt >= 0 && gt > lt ? parseUri(value.slice(lt + 1, gt)) : parseUri(value.trim());
}

function tokenOf(uri: Uri): string | null | undefined {
  return uri.params.get(TOKEN_PARAM);
}

/**
 * The Record-Route URI for one of this server's endpoints:
 * `<sip:addr:port;transport=x;lr;pt=TOKEN[;pf=FLOW]>`. In a sips dialog a
 * sips URI (RFC 5630: TLS implied, so no transport=tls; WSS written
 * `sips:...;transport=ws`, RFC 7118).
 */
export function recordRouteValue(local: Endpoint, token: string, flow = '', sips = false): string {
  const p = local.protocol;
  const transport = p === 'udp' || (sips && p === 'tls') ? '' : ';transport=' + (sips && p === 'wss' ? 'ws' : p);
  return (sips ? '<sips:' : '<sip:') + hostForUri(local.address) + ':' + local.port + transport + ';lr;' + TOKEN_PARAM + '=' + token + (flow === '' ? '' : ';' + FLOW_PARAM + '=' + flow) + '>';
}

/**
 * Adds this server's Record-Route to a request it forwards. When the request
 * leaves on another transport or interface than it arrived on, two entries
 * are added (RFC 5658): the inbound one below, the outbound one on top, so
 * each side of the dialog reaches Portier over its own transport.
 */
export function addRecordRoute(req: SipMessage, inbound: Endpoint, outbound: Endpoint, token: string, flows?: { inbound: string; outbound: string }, sips = false): void {
  if (recordRouteValue(inbound, token) === recordRouteValue(outbound, token)) {
    // Same transport and socket both ways: one entry, carrying both flows.
    const value = recordRouteValue(inbound, token, flows?.inbound, sips);
    const callee = flows?.outbound ?? '';
    req.prependHeader('record-route', callee === '' ? value : value.slice(0, -1) + ';' + CALLEE_FLOW_PARAM + '=' + callee + '>');
    return;
  }
  req.prependHeader('record-route', recordRouteValue(inbound, token, flows?.inbound, sips));
  req.prependHeader('record-route', recordRouteValue(outbound, token, flows?.outbound, sips));
}
