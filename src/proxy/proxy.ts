// The transaction-stateful proxy core (RFC 3261 §16): what happens to each
// request the transaction layer hands up, and to each response that comes
// back on a branch.
//
// One ProxyCall (below) exists per forwarded request: it owns the client
// transactions of its branches, forwards provisionals and 2xx at once,
// keeps the best final response, cancels what is left when the call is
// answered, declined everywhere (6xx), cancelled or not answered in time.

import { isIP } from 'node:net';
import { lookup as dnsLookup } from 'node:dns/promises';
import {
  buildResponse,
  parseUri,
  responseAddress,
  responsePort,
  type ResponseOptions,
  type SipMessage,
  type Uri,
} from '../sip/index.js';
import type { Destination, Endpoint, Protocol, Source } from '../transport/index.js';
import type { ClientTransaction, ServerTransaction, TimerHandle, TimerTarget, TimerWheel } from '../transaction/index.js';
import { buildCancel, isReliable } from '../transaction/index.js';
import { forwardedStatus, isBetterResponse } from './best-response.js';
import { branchFor, isLoop, loopHash } from './loop.js';
import { addRecordRoute, preprocessRoutes, RouteSigner } from './route.js';
import type { SelfAddresses } from './self.js';
import { CallTracker } from './calls.js';
import { CallLimit } from './call-limit.js';

/** The registrar as the proxy sees it (src/registrar implements it). */
export interface Location {
  /** Handles a REGISTER for a served domain and gives the response. */
  register(req: SipMessage, source: Source): Promise<SipMessage>;
  /** Live contacts of an address-of-record, best q first. */
  targets(uri: Uri): Promise<LocationResult>;
}

export interface Target {
  /** Request-URI for the branch: the registered Contact URI. */
  uri: string;
  q: number;
  /** The flow the device registered on: requests go back down it (NAT, TCP). */
  flow: Source | null;
  /** Path headers of the registration (RFC 3327), as Route values. */
  path: string[];
}

export type LocationResult = { kind: 'found'; targets: Target[] } | { kind: 'unregistered' } | { kind: 'unknown' };

/** What the proxy sends with. */
export interface ProxyTransactions {
  sendRequest(req: SipMessage, dest: Destination, owner: BranchOwner): ClientTransaction;
  send(data: Buffer, dest: Destination): void;
  readonly wheel: TimerWheel;
}

export interface BranchOwner {
  onResponse(ctx: ClientTransaction, res: SipMessage): void;
  onTimeout(ctx: ClientTransaction): void;
  onTransportError(ctx: ClientTransaction, err: Error): void;
}

/** Who may register and start calls (src/auth implements it); without one, anyone may. */
export interface Gatekeeper {
  /** 'register': a REGISTER (401, the To is the identity); 'request': any other request outside a dialog Portier record-routed (407, the From). */
  check(req: SipMessage, source: Source, kind: 'register' | 'request'): GateDecision;
  /** Removes credentials meant for Portier from a request it forwards. */
  scrub(req: SipMessage): void;
}

export type GateDecision =
  | { pass: true; identity: { aor: string; kind: string } | null; how: string }
  | { pass: false; code: number; headers?: Array<[string, string]> };

export interface ProxyOptions {
  ringTimeoutMs: number;
  /** Methods listed in Allow of OPTIONS answers and 405/501s. */
  allow: string;
  supported: string;
  /** Told of an unexpected error while routing a request (the caller logs it). */
  onError?: (err: unknown, req: SipMessage) => void;
  /** Authentication; absent, every request is let in (but never relayed to another domain). */
  gate?: Gatekeeper;
  /** Most calls one door-station account may have at once (ringing or established); 0 or absent: no limit. */
  callsPerDoor?: number;
  /** Key of the Record-Route tokens; kept across restarts and shared by nodes so dialogs outlive one process. Random when absent. */
  routeKey?: Buffer;
}

export interface ProxyStats {
  forwarded: number;
  answeredLocally: Record<string, number>;
  loops: number;
  /** Requests answered 500 because routing them threw. */
  internalErrors: number;
  /** Forwarded INVITEs by how they ended, each counted once. */
  callResults: Record<CallResult, number>;
}

export type CallResult = 'answered' | 'busy' | 'no_answer' | 'cancelled' | 'failed';

/** Timings for metrics; the proxy knows nothing of Prometheus. */
export interface ProxyObserver {
  /** INVITE received to first 2xx forwarded, in seconds. */
  callSetup(seconds: number): void;
  /** Request received to its first copy forwarded, in seconds (the time spent inside Portier). */
  processing(seconds: number): void;
}

/** Methods whose 2xx creates a dialog: Portier record-routes them so in-dialog requests come back through it. */
const DIALOG_CREATING = new Set(['INVITE', 'SUBSCRIBE', 'REFER', 'NOTIFY']);

const TIMER_RING = 1;
/** After the call ended or was cancelled, how long branches may take to answer their CANCEL (§16.8: 64*T1). */
const TIMER_REAP = 2;
const REAP_MS = 32_000;

export class Proxy {
  /** Established calls, for metrics: bounded, so a lost BYE never leaks. */
  readonly callTracker = new CallTracker();
  readonly stats: ProxyStats = { forwarded: 0, answeredLocally: {}, loops: 0, internalErrors: 0, callResults: { answered: 0, busy: 0, no_answer: 0, cancelled: 0, failed: 0 } };
  /** Set by whoever exports metrics. */
  observer: ProxyObserver | null = null;

  private readonly calls = new Map<ServerTransaction, ProxyCall>();
  /** Signs Portier's Record-Route entries so that only real dialogs are routed through it. */
  readonly signer: RouteSigner;
  /** Calls per door station, when limited. */
  readonly doorCalls: CallLimit | null;

  constructor(
    readonly self: SelfAddresses,
    private readonly location: Location,
    readonly tx: ProxyTransactions,
    /** The bound local endpoints, to fill Via sent-by and Record-Route (fixed once the transports are up). */
    private readonly listening: readonly Endpoint[],
    readonly options: ProxyOptions,
  ) {
    this.doorCalls = options.callsPerDoor ? new CallLimit(options.callsPerDoor) : null;
    this.signer = new RouteSigner(options.routeKey);
  }

  // ---- from the transaction layer ----

  onRequest(stx: ServerTransaction, req: SipMessage): void {
    const received = performance.now();
    void this.handle(stx, req, received).catch((err: unknown) => {
      // A shared store out of reach is an outage, not a bug: 503, try again.
      if ((err as { code?: unknown }).code === 'STORAGE_UNAVAILABLE') return this.respond(stx, 503, { headers: [['Retry-After', '5']] });
      // The cause is counted, not sent: error text would tell a scanner about the internals.
      this.stats.internalErrors++;
      this.options.onError?.(err, req);
      this.respond(stx, 500);
    });
  }

  onCancel(cancelTx: ServerTransaction, inviteTx: ServerTransaction | null, _req: SipMessage): void {
    if (inviteTx === null) {
      this.respond(cancelTx, 481);
      return;
    }
    // §9.2: a CANCEL matching an INVITE transaction gets 200, even when the
    // INVITE was already answered (the CANCEL then has no effect).
    this.respond(cancelTx, 200);
    this.calls.get(inviteTx)?.cancelByCaller();
  }

  /** ACK for a 2xx, and any other ACK no transaction took: forwarded statelessly along its Route or to its Request-URI. */
  onAck(req: SipMessage, source: Source): void {
    void this.forwardStateless(req, source).catch(() => {});
  }

  /** A response without a transaction (a 2xx retransmitted after ours ended): forward it upstream by its Vias. */
  onStrayResponse(res: SipMessage, _source: Source): void {
    const top = res.topVia();
    if (top === null || !this.self.isSelf(top.host, top.port)) return;
    if (res.status < 200 || res.status >= 300) return;
    res.removeFirstValue('via');
    const next = res.topVia();
    if (next === null) return;
    const protocol = next.transport.toLowerCase() as Protocol;
    // §18.2.2 / RFC 3581, as for any response: received address, rport or sent-by port.
    this.tx.send(res.toBuffer(), { protocol, address: responseAddress(next), port: responsePort(next, protocol === 'tls' ? 5061 : 5060) });
  }

  onServerTerminated(stx: ServerTransaction): void {
    this.calls.delete(stx);
  }

  // ---- routing ----

  private async handle(stx: ServerTransaction, req: SipMessage, received: number): Promise<void> {
    const ruri = req.requestUri!;
    if (ruri.scheme !== 'sip' && ruri.scheme !== 'sips' && ruri.scheme !== 'tel') return this.respond(stx, 416);

    const toSelf = ruri.isSip && (ruri.user === null || ruri.user === '') && this.self.isOwnHost(ruri.host) && !req.has('route');
    if (toSelf && req.method === 'OPTIONS') {
      return this.respond(stx, 200, { headers: [['Allow', this.options.allow], ['Accept', 'application/sdp'], ['Supported', this.options.supported]] });
    }
    const gate = this.options.gate;
    if (req.method === 'REGISTER' && ruri.isSip && this.self.isOwnHost(ruri.host)) {
      if (gate !== undefined) {
        const g = gate.check(req, stx.source, 'register');
        if (!g.pass) return this.respond(stx, g.code, { headers: g.headers });
      }
      const res = await this.location.register(req, stx.source);
      this.count(res.status);
      stx.respond(res);
      return;
    }

    // §16.3 validation.
    const proxyRequire = req.tokens('proxy-require');
    if (proxyRequire.length > 0) return this.respond(stx, 420, { headers: [['Unsupported', proxyRequire.join(', ')]] });
    const mf = req.maxForwards();
    if (mf === 0) return this.respond(stx, 483);
    const hash = loopHash(req);
    if (isLoop(req, hash, (h, p) => this.self.isSelf(h, p))) {
      this.stats.loops++;
      return this.respond(stx, 482);
    }

    // §16.4: our own Route entries go; whatever is left routes the request.
    // True only when the request came through a Route Portier record-routed
    // for this very dialog (signed with its Call-ID): never an open relay.
    // A request inside a dialog (it has a To tag, RFC 3261 §12) that Portier
    // record-routed was authorised when the dialog was set up; everything
    // else proves who sends it (or comes from a trusted source).
    const viaOurRoute = preprocessRoutes(req, this.self, this.signer).dialog && req.to().tag !== null;
    let authorised = viaOurRoute;
    if (!viaOurRoute && gate !== undefined) {
      const g = gate.check(req, stx.source, 'request');
      if (!g.pass) return this.respond(stx, g.code, { headers: g.headers });
      authorised = true;
      const door = g.identity?.kind === 'door' ? g.identity.aor : null;
      if (door !== null && req.method === 'INVITE' && this.doorCalls !== null && !this.doorCalls.tryStart(door, callKey(req, req.from().tag))) {
        // §21.4.4: understood, refused by policy; credentials would not help.
        return this.respond(stx, 403, { reason: 'Too Many Calls' });
      }
    }
    // A BYE ends the call whatever its answer (a 481 or a timeout too).
    if (viaOurRoute && req.method === 'BYE' && this.doorCalls !== null) {
      this.doorCalls.end(callKey(req, req.from().tag));
      this.doorCalls.end(callKey(req, req.to().tag));
    }
    if (req.method === 'INVITE') this.respond(stx, 100);

    const routes = req.routes();
    if (routes !== null && routes.length > 0) {
      // Loose routing to the next hop: for dialogs Portier record-routed, and for authenticated senders.
      if (!authorised) return this.respond(stx, 403, { reason: 'Relaying Not Allowed' });
      const dest = await this.uriDestination(routes[0].uri);
      if (dest === null) return this.respond(stx, 502, { reason: 'Next Hop Not Resolvable' });
      return this.startCall(stx, req, hash, [{ uri: req.uri, q: 1, flow: null, path: [] }], dest, received);
    }
    const target = req.requestUri!;
    if (target.isSip && this.self.isDomain(target.host)) {
      const found = await this.location.targets(target);
      if (found.kind === 'unknown') return this.respond(stx, 404);
      if (found.kind === 'unregistered') return this.respond(stx, 480);
      return this.startCall(stx, req, hash, found.targets, null, received);
    }
    if (target.isSip && authorised) {
      // In a record-routed dialog the Request-URI is the remote target; an
      // authenticated sender may also reach other domains.
      const dest = await this.uriDestination(target);
      if (dest === null) return this.respond(stx, 502, { reason: 'Next Hop Not Resolvable' });
      return this.startCall(stx, req, hash, [{ uri: req.uri, q: 1, flow: null, path: [] }], dest, received);
    }
    return this.respond(stx, 403, { reason: 'Relaying Not Allowed' });
  }

  private startCall(stx: ServerTransaction, req: SipMessage, hash: string, targets: Target[], fixed: Destination | null, received: number): void {
    const call = new ProxyCall(this, stx, req, hash, targets, fixed, received);
    this.calls.set(stx, call);
    call.start();
  }

  /** Where a URI points: IP literals as they are, host names through the system resolver (RFC 3263 comes later). */
  async uriDestination(uri: Uri): Promise<Destination | null> {
    if (!uri.isSip) return null;
    const param = uri.params.get('transport');
    let protocol: Protocol = uri.scheme === 'sips' ? 'tls' : 'udp';
    if (typeof param === 'string') {
      const p = param.toLowerCase();
      if (p === 'udp' || p === 'tcp' || p === 'tls' || p === 'ws' || p === 'wss') protocol = p;
    }
    const maddr = uri.params.get('maddr');
    let host = typeof maddr === 'string' ? maddr : uri.hostname;
    if (host.startsWith('[')) host = host.slice(1, -1);
    if (isIP(host) === 0) {
      try {
        host = (await dnsLookup(host)).address;
      } catch {
        return null;
      }
    }
    return { protocol, address: host, port: uri.port ?? (protocol === 'tls' ? 5061 : 5060) };
  }

  /** The local endpoint a message to `dest` leaves from: the flow's own, or the first listener of that protocol and family. */
  localFor(dest: Destination): Endpoint | null {
    if (dest.local) return dest.local;
    const v6 = dest.address.includes(':');
    let fallback: Endpoint | null = null;
    for (const ep of this.listening) {
      if (ep.protocol !== dest.protocol) continue;
      const epV6 = ep.address.includes(':');
      if (epV6 === v6) return ep;
      fallback ??= ep;
    }
    return fallback;
  }

  private async forwardStateless(req: SipMessage, _source: Source): Promise<void> {
    if (req.maxForwards() === 0) return;
    const { dialog } = preprocessRoutes(req, this.self, this.signer);
    const routes = req.routes();
    const next = routes !== null && routes.length > 0 ? routes[0].uri : req.requestUri;
    if (next === null) return;
    // Only ACKs of dialogs Portier record-routed (signed Route) go on: an ACK
    // from nobody we know is dropped, never relayed, not even to a local user.
    if (!dialog) return;
    let dest: Destination | null;
    if (next.isSip && this.self.isDomain(next.host) && (routes === null || routes.length === 0)) {
      const found = await this.location.targets(next);
      if (found.kind !== 'found' || found.targets.length === 0) return;
      const t = found.targets[0];
      req.setRequestUri(t.uri);
      const u = parseUri(t.uri);
      dest = t.flow !== null ? flowDestination(t.flow) : u === null ? null : await this.uriDestination(u);
    } else dest = await this.uriDestination(next);
    if (dest === null) return;
    const local = this.localFor(dest);
    if (local === null) return;
    this.prepareForward(req, local, branchFor(loopHash(req)));
    this.tx.send(req.toBuffer(), dest);
  }

  /** §16.6 steps 3, 7, 8: Max-Forwards down by one (70 when absent), our Via on top. */
  prepareForward(req: SipMessage, local: Endpoint, branch: string): void {
    this.options.gate?.scrub(req);
    const mf = req.maxForwards();
    req.setHeader('max-forwards', String(mf === null ? 70 : mf - 1));
    const host = local.address.includes(':') ? '[' + local.address + ']' : local.address;
    req.prependHeader('via', `SIP/2.0/${local.protocol.toUpperCase()} ${host}:${local.port};branch=${branch};rport`);
  }

  respond(stx: ServerTransaction, code: number, opts?: ResponseOptions): void {
    this.count(code);
    // A new call refused here frees its slot (a failed re-INVITE leaves the call up).
    if (code >= 300 && this.doorCalls !== null && stx.request.method === 'INVITE' && stx.request.to().tag === null) this.doorCalls.end(callKey(stx.request, stx.request.from().tag));
    stx.respond(buildResponse(stx.request, code, opts));
  }

  private count(code: number): void {
    this.stats.answeredLocally[code] = (this.stats.answeredLocally[code] ?? 0) + 1;
  }

  endCall(stx: ServerTransaction): void {
    this.calls.delete(stx);
  }
}

/** A call as the door limit counts it: its Call-ID and the caller's tag (a reused Call-ID is another call). */
function callKey(req: SipMessage, tag: string | null): string {
  return req.callId() + '\n' + (tag ?? '');
}

export function flowDestination(flow: Source): Destination {
  if (isReliable(flow.protocol)) return { protocol: flow.protocol, address: flow.address, port: flow.port, connectionId: flow.connectionId, local: flow.local };
  return { protocol: flow.protocol, address: flow.address, port: flow.port, local: flow.local };
}


/** One branch of a forked request. */
class Branch {
  ctx: ClientTransaction | null = null;
  provisional = false;
  final = 0;
  cancelSent = false;
  constructor(
    readonly target: Target,
    readonly request: SipMessage,
    readonly dest: Destination,
  ) {}
}

/**
 * The state of one proxied request: its branches, the best final response
 * so far, the ring timer (Timer C), and whether the caller cancelled.
 */
class ProxyCall implements BranchOwner, TimerTarget {
  private readonly branches: Branch[] = [];
  private best: SipMessage | null = null;
  private answered = false;
  private finished = false;
  private cancelled = false;
  private ring: TimerHandle | null = null;
  private reaper: TimerHandle | null = null;
  private timed = false;
  private timedOut = false;
  private readonly isInvite: boolean;
  private pendingGroups: Target[][] = [];

  constructor(
    private readonly proxy: Proxy,
    private readonly stx: ServerTransaction,
    private readonly req: SipMessage,
    private readonly hash: string,
    targets: Target[],
    private readonly fixed: Destination | null,
    private readonly received: number,
  ) {
    this.isInvite = req.method === 'INVITE';
    // Sequential between q groups, parallel within one (§16.6, RFC 3261 §10.2.1.2).
    const groups = new Map<number, Target[]>();
    for (const t of targets) {
      const g = groups.get(t.q);
      if (g) g.push(t);
      else groups.set(t.q, [t]);
    }
    this.pendingGroups = [...groups.entries()].sort((a, b) => b[0] - a[0]).map((e) => e[1]);
  }

  start(): void {
    if (this.isInvite) this.ring = this.proxy.tx.wheel.schedule(this, TIMER_RING, this.proxy.options.ringTimeoutMs);
    this.nextGroup();
  }

  private nextGroup(): boolean {
    const group = this.pendingGroups.shift();
    if (group === undefined) return false;
    for (const target of group) void this.fork(target);
    return true;
  }

  private async fork(target: Target): Promise<void> {
    const copy = this.req.clone();
    let dest: Destination | null = this.fixed;
    if (dest === null) {
      copy.setRequestUri(target.uri);
      if (target.flow !== null) dest = flowDestination(target.flow);
      else {
        const u = copy.requestUri;
        dest = u === null ? null : await this.proxy.uriDestination(u);
      }
    }
    for (let i = target.path.length - 1; i >= 0; i--) copy.prependHeader('route', target.path[i]);
    const local = dest === null ? null : this.proxy.localFor(dest);
    const branch = new Branch(target, copy, dest ?? { protocol: 'udp', address: '0.0.0.0', port: 0 });
    this.branches.push(branch);
    if (dest === null || local === null || this.finished) {
      branch.final = 503;
      this.considerFinal(buildResponse(this.req, 503, { reason: 'Target Unreachable' }));
      return;
    }
    if (DIALOG_CREATING.has(copy.method) && !copy.to().tag) addRecordRoute(copy, this.stx.source.local, local, this.proxy.signer.token(copy.callId(), copy.from().tag ?? ''));
    this.proxy.prepareForward(copy, local, branchFor(this.hash));
    this.proxy.stats.forwarded++;
    if (!this.timed) {
      this.timed = true;
      this.proxy.observer?.processing((performance.now() - this.received) / 1000);
    }
    branch.ctx = this.proxy.tx.sendRequest(copy, dest, this);
  }

  private branchOf(ctx: ClientTransaction): Branch | undefined {
    for (const b of this.branches) if (b.ctx === ctx) return b;
    return undefined;
  }

  // ---- branch events ----

  onResponse(ctx: ClientTransaction, res: SipMessage): void {
    const b = this.branchOf(ctx);
    if (b === undefined) return;
    // Our Via goes; the rest travels back upstream (§16.7 step 3).
    res.removeFirstValue('via');
    const status = res.status;
    if (status < 200) {
      if (status === 100) return; // hop by hop: ours went already
      b.provisional = true;
      if (b.cancelSent === false && (this.cancelled || this.answered)) this.cancelBranch(b);
      if (!this.finished) this.stx.respond(res);
      return;
    }
    b.final = status;
    if (status < 300) {
      // Every 2xx goes upstream at once, even a second one (§16.7 step 5).
      this.stx.respond(res);
      if (!this.answered) {
        this.answered = true;
        if (this.isInvite) {
          this.proxy.stats.callResults.answered++;
          this.proxy.observer?.callSetup((performance.now() - this.received) / 1000);
          this.proxy.callTracker.established(this.req.callId());
        } else if (this.req.method === 'BYE') {
          this.proxy.callTracker.ended(this.req.callId());
        }
        this.stopRing();
        this.cancelOthers(b);
      }
      this.finished = true;
      this.maybeDone();
      return;
    }
    if (status >= 600 && this.isInvite) this.cancelOthers(b);
    this.considerFinal(res);
  }

  onTimeout(ctx: ClientTransaction): void {
    const b = this.branchOf(ctx);
    if (b === undefined || b.final !== 0) return;
    b.final = 408;
    this.considerFinal(buildResponse(this.req, 408));
  }

  onTransportError(ctx: ClientTransaction, _err: Error): void {
    const b = this.branchOf(ctx) ?? this.branches.find((x) => x.ctx === null && x.final === 0);
    if (b === undefined || b.final !== 0) return;
    b.final = 503;
    this.considerFinal(buildResponse(this.req, 503, { reason: 'Target Unreachable' }));
  }

  /** Timer C: nobody answered in time. */
  onTimer(kind: number): void {
    if (kind === TIMER_REAP) {
      // Branches that never answered their CANCEL: end their transactions (§16.8).
      this.reaper = null;
      for (const b of this.branches) {
        if (b.final !== 0) continue;
        b.final = 408;
        b.ctx?.terminate();
      }
      if (!this.finished) {
        // Cancelled, and no branch ever answered: the caller still needs a final response.
        this.finished = true;
        this.stopRing();
        this.sendFinal(this.best ?? buildResponse(this.req, 487));
      }
      this.proxy.endCall(this.stx);
      return;
    }
    if (kind !== TIMER_RING || this.finished) return;
    this.ring = null;
    this.timedOut = true;
    this.finished = true;
    for (const b of this.branches) if (b.final === 0) this.cancelBranch(b);
    this.sendFinal(buildResponse(this.req, 408, { reason: 'Request Timeout' }));
  }

  /** The caller sent CANCEL (§16.10). */
  cancelByCaller(): void {
    if (this.finished || this.cancelled) return;
    this.cancelled = true;
    this.pendingGroups = [];
    for (const b of this.branches) if (b.final === 0) this.cancelBranch(b);
    // The UAS answers its INVITE with 487, which becomes the best response;
    // should a branch never answer, the reaper ends it.
    this.reaper ??= this.proxy.tx.wheel.schedule(this, TIMER_REAP, REAP_MS);
    if (!this.waiting()) {
      // Nothing rang: no response to wait for (a silent device, a dead
      // binding). The caller hears 487 now, not at the ring timeout.
      this.finished = true;
      this.stopRing();
      this.sendFinal(this.best ?? buildResponse(this.req, 487));
    }
  }

  /**
   * Whether a branch may still give a final response worth waiting for.
   * Once the caller cancelled, only branches that rang are (they answer
   * the CANCEL with 487); a silent one is cancelled when it first speaks.
   */
  private waiting(): boolean {
    return this.branches.some((b) => b.final === 0 && (!this.cancelled || b.provisional));
  }

  private cancelOthers(winner: Branch): void {
    this.pendingGroups = [];
    for (const b of this.branches) if (b !== winner && b.final === 0) this.cancelBranch(b);
  }

  /** CANCEL one branch; before its first provisional it waits for one (§9.1). */
  private cancelBranch(b: Branch): void {
    if (b.cancelSent || b.ctx === null || !this.isInvite) return;
    if (!b.provisional) return; // sent when the first provisional arrives (onResponse)
    b.cancelSent = true;
    const cancel = buildCancel(b.request);
    this.proxy.tx.sendRequest(cancel, b.dest, NO_OWNER);
  }

  private considerFinal(res: SipMessage): void {
    if (this.finished) {
      this.maybeDone();
      return;
    }
    if (this.best === null || isBetterResponse(res.status, this.best.status)) this.best = res;
    if (res.status >= 600 && this.isInvite) {
      this.finished = true;
      this.stopRing();
      this.sendFinal(this.best);
      return;
    }
    if (this.waiting()) return;
    // Every branch of this group failed: try the next q group, unless cancelled.
    if (!this.cancelled && this.nextGroup()) return;
    this.finished = true;
    this.stopRing();
    this.sendFinal(this.best);
  }

  private sendFinal(res: SipMessage): void {
    if (this.isInvite && !this.answered) {
      this.proxy.stats.callResults[this.resultOf(res.status)]++;
      if (this.req.to().tag === null) this.proxy.doorCalls?.end(callKey(this.req, this.req.from().tag));
    }
    const status = forwardedStatus(res.status);
    if (status !== res.status) this.stx.respond(buildResponse(this.req, status));
    else this.stx.respond(res);
    this.maybeDone();
  }

  /** How a call that was not answered ended, for metrics. */
  private resultOf(status: number): CallResult {
    if (this.timedOut) return 'no_answer';
    if (this.cancelled) return 'cancelled';
    if (status === 486 || status === 600 || status === 603) return 'busy';
    if (status === 408 || status === 480) return 'no_answer';
    return 'failed';
  }

  private maybeDone(): void {
    if (this.branches.every((b) => b.final !== 0)) {
      if (this.reaper !== null) this.reaper.cancel();
      this.proxy.endCall(this.stx);
    } else if (this.finished && this.reaper === null) {
      this.reaper = this.proxy.tx.wheel.schedule(this, TIMER_REAP, REAP_MS);
    }
  }

  private stopRing(): void {
    if (this.ring !== null) {
      this.ring.cancel();
      this.ring = null;
    }
  }
}

/** CANCELs are fire and forget: their responses matter to nobody. */
const NO_OWNER: BranchOwner = {
  onResponse() {},
  onTimeout() {},
  onTransportError() {},
};
