// The transaction-stateful proxy core (RFC 3261 §16): what happens to each
// request the transaction layer hands up, and to each response that comes
// back on a branch.
//
// One ProxyCall (below) exists per forwarded request: it owns the client
// transactions of its branches, forwards provisionals and 2xx at once,
// keeps the best final response, cancels what is left when the call is
// answered, declined everywhere (6xx), cancelled or not answered in time.

import {
  buildResponse,
  detach,
  parseAndValidate,
  scrubContactPush,
  withoutPushParams,
  SipParseError,
  parseUri,
  responseAddress,
  responsePort,
  type ResponseOptions,
  type SipMessage,
  type Uri,
} from '../sip/index.js';
import type { Destination, Endpoint, Protocol, Source } from '../transport/index.js';
import type { ClientTransaction, ServerTransaction, TimerHandle, TimerTarget, TimerWheel } from '../transaction/index.js';
import { buildCancel, isReliable, statelessTag, TransactionState } from '../transaction/index.js';
import { forwardedStatus, isBetterResponse } from './best-response.js';
import { branchFor, isLoop, loopHash } from './loop.js';
import { addRecordRoute, HANDOFF_PARAM, HANDOFF_PROOF_PARAM, pathUri, preprocessRoutes, RouteSigner } from './route.js';
import { SipResolver } from './resolve.js';
import type { SelfAddresses } from './self.js';
import { CallTracker } from './calls.js';
import { CallLimit } from './call-limit.js';

/** The registrar as the proxy sees it (src/registrar implements it). */
export interface Location {
  /** Handles a REGISTER for a served domain and gives the response: at once when the store answers at once, else later. */
  register(req: SipMessage, source: Source): SipMessage | Promise<SipMessage>;
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
  /** The ring-group member this device belongs to (its AOR or URI), when the call came from a plan. */
  member?: string;
  /** The binding's AOR and key (one per device), for late forking; absent for addresses elsewhere. */
  aor?: string;
  key?: string;
  /** RFC 8599 push parameters of the binding; absent or null: it cannot be woken. */
  push?: Readonly<Record<string, string>> | null;
  /** False when the device's connection is known to be gone: an app asleep, to be woken by push. */
  alive?: boolean;
}

/** `aor`: the canonical AOR looked up (absent for a GRUU, which names one device): calls to it hear of its new registrations. */
export type LocationResult = { kind: 'found'; targets: Target[]; aor?: string } | { kind: 'unregistered'; aor?: string } | { kind: 'unknown' };

/** How a woken device's wait ended, for its last push (src/push). */
export type WakeEnd = 'delivered' | 'answered-elsewhere' | 'declined-elsewhere' | 'cancelled' | 'missed';

/** One device being woken by push for one request. */
export interface WakeHandle {
  /** iOS VoIP (PushKit): once woken, the device must get the INVITE, then a CANCEL, even if the call ended meanwhile. */
  readonly mustDeliver: boolean;
  /** Whether the first push went out. */
  readonly sent: Promise<boolean>;
  stop(reason: WakeEnd): void;
}

/** Wakes sleeping apps by push (the server implements it with src/push); absent: no push. */
export interface Waker {
  /** Starts waking the device of `target` for `req`; null when it cannot be woken (no push parameters or no provider for them). */
  wake(target: Target, req: SipMessage): WakeHandle | null;
  /** How long a woken device has to register again, ms. */
  readonly timeoutMs: number;
  /** What the caller hears once a push went out: 180, 110 (Flexisip's "Push sent") or 0 for nothing. */
  readonly provisional: number;
}

/** Who is calling, as authentication found it. */
export interface Caller {
  /** The authenticated account's kind; null for a trusted source or without authentication. */
  kind: 'door' | 'phone' | null;
  /** Authenticated, or from a trusted source. */
  authorised: boolean;
  /** The request goes elsewhere (a preloaded Route, another domain): only the policy for routes applies. */
  relay?: boolean;
}

/** One address a plan rings: an AOR of a served domain (its devices) or a URI elsewhere. */
export interface PlanMember {
  uri: string;
  local: boolean;
}

/** One step of a plan: these members ring together, for ringMs (null: until the call's ring timeout). */
export interface PlanStage {
  label: string;
  members: PlanMember[];
  ringMs: number | null;
  /** Reached only because an earlier group did not answer or was closed. */
  overflow: boolean;
}

/** Where a call goes, step after step: a ring group, then its overflow. */
export interface CallPlan {
  /** Why, for the call's log line. */
  label: string;
  stages: PlanStage[];
}

export type RouteDecision =
  /** The registered devices of the Request-URI, or of `uri` (an alias for an account). */
  | { kind: 'location'; uri: Uri | null; why: string }
  | { kind: 'refuse'; code: number; reason: string; why: string }
  | { kind: 'plan'; plan: CallPlan }
  /** To another server (a PBX): a Route to it, the Request-URI unchanged. */
  | { kind: 'external'; route: Uri; why: string };

/** Door-station routing (src/routing implements it): what an out-of-dialog request to a served domain becomes. */
export interface Router {
  route(req: SipMessage, target: Uri, caller: Caller): RouteDecision;
}

/** One line per call (INVITE outside a dialog) saying what routing did and how it ended. */
export interface CallRecord {
  callId: string;
  from: string;
  to: string;
  /** The routing decision. */
  route: string;
  /** Stages started, in order (groups, members for sequential, overflow). */
  stages: string[];
  /** Members tried and how many devices each had live (0: skipped). */
  members: Array<{ member: string; devices: number }>;
  /** The member (or device URI) that answered, null when nobody did. */
  answeredBy: string | null;
  /** Whether an overflow stage was started. */
  overflow: boolean;
  /** Final status sent to the caller (the 2xx when answered). */
  status: number;
  result: CallResult | 'refused';
  /** INVITE received to the 2xx forwarded, ms; null when not answered. */
  setupMs: number | null;
  /** Answer to hang-up (the BYE's answer), ms; null when not answered, or forgotten without a BYE (`ended: 'expired'`). */
  durationMs: number | null;
  ended: 'bye' | 'expired' | null;
}

/** What the proxy sends with. */
export interface ProxyTransactions {
  sendRequest(req: SipMessage, dest: Destination, owner: BranchOwner): ClientTransaction;
  send(data: Buffer, dest: Destination): void;
  readonly wheel: TimerWheel;
  /** Whether a stream connection is still open; absent: assume it is. */
  connected?(connectionId: number): boolean;
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
  /** Ring groups, aliases, policy and external routes; absent: every request goes to its Request-URI's devices. */
  router?: Router;
  /** Told once per call how it was routed and how it ended (the caller logs it). */
  onCall?: (record: CallRecord) => void;
  /** Push notifications for devices asleep; absent: a sleeping device is just unreachable. */
  waker?: Waker;
  /** This process in a cluster (handoff tokens name it); random when absent. */
  node?: string;
  /** DNS servers for RFC 3263 (`127.0.0.1:5353`); absent: the system's. */
  resolver?: readonly string[];
  /** Let destinations a user chose (a URI, a Contact, their DNS) be loopback, link-local or unspecified addresses. */
  relayToLoopback?: boolean;
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
  /** Push sent to a sleeping device to its registration, in seconds. */
  pushToRegister(seconds: number): void;
}

/** Methods whose 2xx creates a dialog: Portier record-routes them so in-dialog requests come back through it. */
const DIALOG_CREATING = new Set(['INVITE', 'SUBSCRIBE', 'REFER', 'NOTIFY']);

const TIMER_RING = 1;
/** After the call ended or was cancelled, how long branches may take to answer their CANCEL (§16.8: 64*T1). */
const TIMER_REAP = 2;
/** TIMER_WAKE + branch index: a woken device did not register in time. */
const TIMER_WAKE = 1000;
/** TIMER_QUIET + branch index: a device that can be woken has not answered its INVITE at all. */
const TIMER_QUIET = 1_000_000;
/**
 * How long an INVITE to a device with push parameters may go without any
 * answer before the device is pushed as well (Flexisip's push timeout): an
 * app asleep behind a connection that is half-open, or on UDP, never says
 * it is gone, and Timer B (32 s) would outlast the ring time.
 */
const QUIET_MS = 5000;
const REAP_MS = 32_000;

export class Proxy {
  /** Established calls, for metrics and the call log: bounded, so a lost BYE never leaks. */
  readonly callTracker = new CallTracker<CallRecord>({
    onForgotten: (c) => {
      if (c.record === null) return;
      c.record.ended = 'expired';
      this.options.onCall?.(c.record);
    },
  });
  readonly stats: ProxyStats = { forwarded: 0, answeredLocally: {}, loops: 0, internalErrors: 0, callResults: { answered: 0, busy: 0, no_answer: 0, cancelled: 0, failed: 0 } };
  /** Set by whoever exports metrics. */
  observer: ProxyObserver | null = null;

  /** RFC 3263: NAPTR, SRV, A/AAAA, cached (so that in-dialog requests towards a PBX named by host do not wait for DNS). */
  private readonly resolver: SipResolver;
  /** Calls ringing an AOR, by AOR: a device of it that registers meanwhile joins them (late forking). */
  private readonly watchers = new Map<string, Set<ProxyCall>>();
  /** Calls answered after a push woke the device that answered, for metrics. */
  answeredAfterPush = 0;
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
    this.signer = new RouteSigner(options.routeKey, options.node);
    this.resolver = new SipResolver({ servers: options.resolver });
  }

  // ---- from the transaction layer ----

  onRequest(stx: ServerTransaction, req: SipMessage): void {
    if (req.method === 'REGISTER') {
      const ruri = req.requestUri!;
      if (ruri.isSip && this.self.isOwnHost(ruri.host)) return this.register(stx, req);
    }
    const received = performance.now();
    void this.handle(stx, req, received).catch((err: unknown) => this.failed(stx, req, err));
  }

  /** A request that threw: answered all the same. */
  private failed(stx: ServerTransaction, req: SipMessage, err: unknown): void {
    // A shared store out of reach is an outage, not a bug: 503, try again.
    if ((err as { code?: unknown }).code === 'STORAGE_UNAVAILABLE') return this.respond(stx, 503, { headers: [['Retry-After', '5']] });
    // The cause is counted, not sent: error text would tell a scanner about the internals.
    this.stats.internalErrors++;
    this.options.onError?.(err, req);
    this.respond(stx, 500);
  }

  /**
   * A REGISTER for Portier's own domain or address: the registrar's. Answered
   * in this task when the store answers at once (memory, SQLite), without
   * the promises of handle(): a REGISTER is most of what a registrar does.
   */
  private register(stx: ServerTransaction, req: SipMessage): void {
    try {
      const gate = this.options.gate;
      if (gate !== undefined) {
        const g = gate.check(req, stx.source, 'register');
        if (!g.pass) return this.refuseAuth(stx, g.code, g.headers);
      }
      const res = this.location.register(req, stx.source);
      if (res instanceof Promise) {
        res.then((r) => this.registered(stx, r)).catch((err: unknown) => this.failed(stx, req, err));
      } else this.registered(stx, res);
    } catch (err) {
      this.failed(stx, req, err);
    }
  }

  private registered(stx: ServerTransaction, res: SipMessage): void {
    this.count(res.status);
    stx.respond(res);
  }

  onCancel(cancelTx: ServerTransaction, inviteTx: ServerTransaction | null, req: SipMessage, inviteAnswered: boolean): void {
    // §9.2: a CANCEL matching an INVITE transaction gets 200, even when the
    // INVITE was already answered (the CANCEL then has no effect).
    if (inviteTx === null) {
      this.respond(cancelTx, inviteAnswered ? 200 : 481);
      return;
    }
    this.respond(cancelTx, 200);
    // RFC 3326: the caller's reason travels on with the CANCELs (a door station's "cause=200" too).
    callOf(inviteTx)?.cancelByCaller(req.get('reason') ?? null);
  }

  /** ACK for a 2xx, and any other ACK no transaction took: forwarded statelessly along its Route or to its Request-URI. */
  onAck(req: SipMessage, source: Source): void {
    void this.forwardStateless(req, source).catch(() => {});
  }

  /**
   * A response without a transaction (a 2xx retransmitted after ours
   * ended): forward it upstream by its Vias. With `upstream`, a 2xx to a
   * call that ended here (a retransmission, or another fork's): forwarded
   * there, as through the call's server transaction (see LateAnswers).
   */
  onStrayResponse(res: SipMessage, _source: Source, upstream?: Destination): void {
    const top = res.topVia();
    if (top === null || !this.self.isSelf(top.host, top.port)) return;
    if (res.status < 200 || res.status >= 300) return;
    res.removeFirstValue('via');
    if (upstream !== undefined) {
      scrubContactPush(res);
      this.tx.send(res.toBuffer(), upstream);
      return;
    }
    const next = res.topVia();
    if (next === null) return;
    const protocol = next.transport.toLowerCase() as Protocol;
    // §18.2.2 / RFC 3581, as for any response: received address, rport or sent-by port.
    this.tx.send(res.toBuffer(), { protocol, address: responseAddress(next), port: responsePort(next, protocol === 'tls' ? 5061 : 5060) });
  }

  /** A device registered (or registered again): calls ringing its AOR ring it too, and a device woken by push gets its call. */
  onRegistered(target: Target): void {
    if (target.aor === undefined) return;
    const calls = this.watchers.get(target.aor);
    if (calls === undefined) return;
    for (const c of [...calls]) c.lateTarget(target);
  }

  /** Whether a call rings this AOR now (and would take a device that registers). */
  isWatched(aor: string): boolean {
    return this.watchers.has(aor);
  }

  watch(aor: string, call: ProxyCall): void {
    let set = this.watchers.get(aor);
    if (set === undefined) this.watchers.set(aor, (set = new Set()));
    set.add(call);
  }

  unwatch(aor: string, call: ProxyCall): void {
    const set = this.watchers.get(aor);
    if (set === undefined) return;
    set.delete(call);
    if (set.size === 0) this.watchers.delete(aor);
  }

  onServerTerminated(stx: ServerTransaction): void {
    this.endCall(stx);
  }

  // ---- routing ----

  private async handle(stx: ServerTransaction, req: SipMessage, received: number): Promise<void> {
    const ruri = req.requestUri!;
    if (ruri.scheme !== 'sip' && ruri.scheme !== 'sips' && ruri.scheme !== 'tel') return this.respond(stx, 416);

    const toSelf = ruri.isSip && (ruri.user === null || ruri.user === '') && this.self.isOwnHost(ruri.host) && !req.has('route');
    if (toSelf && req.method === 'OPTIONS') {
      return this.respond(stx, 200, { headers: [['Allow', this.options.allow], ['Accept', 'application/sdp'], ['Supported', this.options.supported]] });
    }
    // A REGISTER for Portier itself never gets here (onRequest gives it to register()).
    const gate = this.options.gate;

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
    const pre = preprocessRoutes(req, this.self, this.signer);
    // A cluster node hands over a call for a device whose flow is here (over the nodes' own link, not the device's).
    if (pre.handoff !== null && req.to().tag === null) return this.handoff(stx, req, hash, pre.handoff, received);
    // RFC 5630: a sips request comes over TLS (or WSS) on every hop, the first one too; its dialog's Record-Route is sips.
    if (ruri.scheme === 'sips' && req.method !== 'REGISTER' && stx.source.protocol !== 'tls' && stx.source.protocol !== 'wss') return this.respond(stx, 403, { reason: 'TLS Required' });
    const viaOurRoute = pre.dialog && req.to().tag !== null;
    let authorised = viaOurRoute;
    let callerKind: 'door' | 'phone' | null = null;
    if (!viaOurRoute && gate !== undefined) {
      const g = gate.check(req, stx.source, 'request');
      if (!g.pass) return this.refuseAuth(stx, g.code, g.headers);
      authorised = true;
      const kind = g.identity?.kind;
      callerKind = kind === 'door' || kind === 'phone' ? kind : null;
      const door = kind === 'door' ? (g.identity as { aor: string }).aor : null;
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

    let routes = req.routes();
    // A phone whose outbound proxy names Portier by a host name that is not
    // one of its domains (sip.school.example.org) preloads a Route to it:
    // once resolved to one of Portier's own sockets, that Route is ours too.
    for (let i = 0; i < 4 && routes !== null && routes.length > 0 && !routes[0].uri.params.has('pt'); i++) {
      const all = await this.uriDestinations(routes[0].uri);
      if (!all.some((d) => this.self.isSelf(d.address, d.port))) break;
      req.removeFirstValue('route');
      routes = req.routes();
    }
    const target = req.requestUri!;
    // A door station's calls elsewhere (a preloaded Route, another domain) are held to its policy too: a stolen door password must not call out.
    if (!viaOurRoute && authorised && callerKind !== 'phone' && this.options.router !== undefined && ((routes !== null && routes.length > 0) || !(target.isSip && this.self.isDomain(target.host)))) {
      const d = this.options.router.route(req, target, { kind: callerKind, authorised, relay: true });
      if (d.kind === 'refuse') {
        this.record(req, d.why, d.code, 'refused');
        return this.respond(stx, d.code, { reason: d.reason });
      }
    }
    if (routes !== null && routes.length > 0) {
      // Loose routing to the next hop: for dialogs Portier record-routed, and for authenticated senders.
      if (!authorised) return this.respond(stx, 403, { reason: 'Relaying Not Allowed' });
      const dest = await this.uriDestination(routes[0].uri);
      if (dest === null) return this.respond(stx, 502, { reason: 'Next Hop Not Resolvable' });
      return this.startCall(stx, req, hash, [{ uri: req.uri, q: 1, flow: null, path: [] }], dest, received);
    }
    if (target.isSip && this.self.isDomain(target.host)) {
      let lookup = target;
      let why = 'account';
      const router = this.options.router;
      if (router !== undefined && !viaOurRoute) {
        const d = router.route(req, target, { kind: callerKind, authorised });
        if (d.kind === 'refuse') {
          this.record(req, d.why, d.code, 'refused');
          return this.respond(stx, d.code, { reason: d.reason });
        }
        if (d.kind === 'plan') {
          if (d.plan.stages.length === 0) {
            // Closed, and nowhere to overflow to.
            this.record(req, d.plan.label, 480, 'no_answer');
            return this.respond(stx, 480, { reason: 'Closed' });
          }
          return this.startPlan(stx, req, hash, d.plan, received);
        }
        if (d.kind === 'external') {
          const dest = await this.uriDestination(d.route);
          if (dest === null) return this.respond(stx, 502, { reason: 'Next Hop Not Resolvable' });
          req.prependHeader('route', '<' + (d.route.params.has('lr') ? d.route.raw : d.route.raw + ';lr') + '>');
          return this.startCall(stx, req, hash, [{ uri: req.uri, q: 1, flow: null, path: [] }], dest, received, d.why);
        }
        if (d.uri !== null) lookup = d.uri;
        why = d.why;
      }
      const found = await this.location.targets(lookup);
      if (found.kind === 'unknown') {
        this.record(req, why, 404, 'failed');
        return this.respond(stx, 404);
      }
      if (found.kind === 'unregistered') {
        this.record(req, why, 480, 'no_answer');
        return this.respond(stx, 480);
      }
      return this.startCall(stx, req, hash, found.targets, null, received, why, found.aor);
    }
    if (target.isSip && authorised) {
      // In a record-routed dialog the Request-URI is the remote target; an
      // authenticated sender may also reach other domains. A WebSocket client's is reached down its flow.
      const flow = viaOurRoute ? this.openFlow(pre.flow) : null;
      if (flow !== null) return this.startCall(stx, req, hash, [{ uri: req.uri, q: 1, flow: null, path: [] }], flow, received);
      // Elsewhere: located by RFC 3263 when the branch starts, with failover to the next server.
      if ((await this.uriDestination(target)) === null) return this.respond(stx, 502, { reason: 'Next Hop Not Resolvable' });
      return this.startCall(stx, req, hash, [{ uri: req.uri, q: 1, flow: null, path: [] }], null, received);
    }
    return this.respond(stx, 403, { reason: 'Relaying Not Allowed' });
  }

  /**
   * Another node of the cluster sends a request for a device whose flow is
   * on this one (through the Path entry this node put in its binding): it
   * authenticated the caller and routed the call; this node only carries it
   * down the flow. A flow that is gone (closed, or from before a restart)
   * gets 480 at once, so the other node can wake the device by push.
   */
  private handoff(stx: ServerTransaction, req: SipMessage, hash: string, flow: Destination | 'gone', received: number): void {
    if (req.method === 'INVITE') this.respond(stx, 100);
    const dest = flow === 'gone' ? null : flow.protocol === 'udp' ? flow : this.openFlow(flow);
    if (dest === null) return this.respond(stx, 480, { reason: 'Flow Gone' });
    this.startCall(stx, req, hash, [{ uri: req.uri, q: 1, flow: null, path: [] }], dest, received, 'handoff from another node');
  }

  private startCall(stx: ServerTransaction, req: SipMessage, hash: string, targets: Target[], fixed: Destination | null, received: number, why = 'route', aor?: string): void {
    // Sequential between q groups, parallel within one (§16.6, RFC 3261 §10.2.1.2).
    const groups = new Map<number, Target[]>();
    for (const t of targets) {
      const g = groups.get(t.q);
      if (g) g.push(t);
      else groups.set(t.q, [t]);
    }
    const stages: Stage[] = [...groups.entries()].sort((a, b) => b[0] - a[0]).map((e) => ({ label: '', targets: e[1], members: null, ringMs: null, overflow: false, aors: aor === undefined ? [] : [aor] }));
    this.launch(new ProxyCall(this, stx, req, hash, stages, fixed, received, why));
  }

  private startPlan(stx: ServerTransaction, req: SipMessage, hash: string, plan: CallPlan, received: number): void {
    const stages: Stage[] = plan.stages.map((p) => ({ label: p.label, targets: null, members: p.members, ringMs: p.ringMs ?? this.options.ringTimeoutMs, overflow: p.overflow, aors: [] }));
    this.launch(new ProxyCall(this, stx, req, hash, stages, null, received, plan.label));
  }

  private launch(call: ProxyCall): void {
    call.stx.userData = call;
    call.start();
  }

  /** The devices of a plan's member: an AOR's live bindings, or the URI itself when it is elsewhere. */
  async memberTargets(m: PlanMember): Promise<{ targets: Target[]; aor?: string }> {
    if (!m.local) return { targets: [{ uri: m.uri, q: 1, flow: null, path: [], member: m.uri }] };
    const uri = parseUri(m.uri);
    if (uri === null) return { targets: [] };
    const found = await this.location.targets(uri);
    if (found.kind === 'unknown') return { targets: [] };
    if (found.kind === 'unregistered') return { targets: [], aor: found.aor };
    for (const t of found.targets) t.member = m.uri;
    return { targets: found.targets, aor: found.aor };
  }

  /** Tells the log how a call that never forked ended. */
  private record(req: SipMessage, route: string, status: number, result: CallResult | 'refused'): void {
    if (req.method !== 'INVITE' || this.options.onCall === undefined) return;
    this.options.onCall({ callId: req.callId(), from: req.from().uri.raw, to: req.uri, route, stages: [], members: [], answeredBy: null, overflow: false, status, result, setupMs: null, durationMs: null, ended: null });
  }

  /** A BYE got its final answer (whatever it was: 481 and 408 end a dialog too): the call is over; its log line now has its duration. */
  callEnded(callId: string): void {
    const call = this.callTracker.ended(callId);
    if (call === undefined || call.record === null) return;
    call.record.durationMs = Date.now() - call.at;
    call.record.ended = 'bye';
    this.options.onCall?.(call.record);
  }

  /** Where a URI points: IP literals as they are, host names through the system resolver (RFC 3263 comes later). */
  /** Where a URI points, first choice (RFC 3263; IP literals as they are). */
  async uriDestination(uri: Uri): Promise<Destination | null> {
    return (await this.uriDestinations(uri))[0] ?? null;
  }

  /** Where a URI points, in RFC 3263 order: the next ones are for failover. */
  uriDestinations(uri: Uri): Promise<Destination[]> {
    return this.resolver.resolve(uri);
  }


  /** A flow token's connection while it is open; a closed one falls back to the Request-URI (the Contact). */
  private openFlow(flow: Destination | null): Destination | null {
    if (flow === null) return null;
    // A UDP flow is the address the client's packets came from (its NAT binding): nothing to close.
    if (flow.protocol === 'udp') return flow;
    if (flow.connectionId === undefined) return null;
    return this.tx.connected === undefined || this.tx.connected(flow.connectionId) ? flow : null;
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
    const { dialog, flow } = preprocessRoutes(req, this.self, this.signer);
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
      req.setRequestUri(t.push ? withoutPushParams(t.uri) : t.uri);
      const u = parseUri(t.uri);
      dest = t.flow !== null ? flowDestination(t.flow) : u === null ? null : await this.uriDestination(u);
    } else dest = this.openFlow(flow) ?? (await this.uriDestination(next));
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
    const req = stx.request;
    if (req === null) return; // answered already (an error after the final): nothing more to say
    this.count(code);
    // A new call refused here frees its slot (a failed re-INVITE leaves the call up).
    if (code >= 300 && this.doorCalls !== null && req.method === 'INVITE' && req.to().tag === null) this.doorCalls.end(callKey(req, req.from().tag));
    stx.respond(buildResponse(req, code, opts));
  }

  /**
   * The gate's answer to a request it did not let through. A challenge (401,
   * 407) to anything but an INVITE is sent statelessly (RFC 3261 §26.3.2.4;
   * ServerTransaction.respondStateless), with the To tag the overload 503 has,
   * made from the request so that a retransmission gets the same one
   * (§8.2.7); its nonce is fresh. An INVITE's 407 stays in its transaction
   * (its ACK must be absorbed) and in respond(), which frees a door's call slot.
   * A 403 is a verdict on credentials and stays in its transaction: a
   * retransmission of a wrong password must not count as a second failure.
   */
  private refuseAuth(stx: ServerTransaction, code: number, headers: Array<[string, string]> | undefined): void {
    const req = stx.request;
    if ((code !== 401 && code !== 407) || req === null || req.method === 'INVITE') return this.respond(stx, code, { headers });
    this.count(code);
    stx.respondStateless(buildResponse(req, code, { headers, toTag: statelessTag(req) }));
  }

  private count(code: number): void {
    this.stats.answeredLocally[code] = (this.stats.answeredLocally[code] ?? 0) + 1;
  }

  endCall(stx: ServerTransaction): void {
    stx.userData = undefined;
  }
}

/**
 * The call a server transaction carries, until it ends: in the
 * transaction's free field rather than a Map keyed by transaction, whose
 * churn would leave dead tables that promote ended calls (see
 * src/transaction/table.ts).
 */
function callOf(stx: ServerTransaction): ProxyCall | undefined {
  const call = stx.userData;
  return call instanceof ProxyCall ? call : undefined;
}

/** A call as the door limit counts it: its Call-ID and the caller's tag (a reused Call-ID is another call). */
function callKey(req: SipMessage, tag: string | null): string {
  return req.callId() + '\n' + (tag ?? '');
}


export function flowDestination(flow: Source): Destination {
  if (isReliable(flow.protocol)) return { protocol: flow.protocol, address: flow.address, port: flow.port, connectionId: flow.connectionId, local: flow.local };
  return { protocol: flow.protocol, address: flow.address, port: flow.port, local: flow.local };
}


/** One step of a call: its targets (known at once) or its members (looked up when it starts). */
interface Stage {
  label: string;
  targets: Target[] | null;
  members: PlanMember[] | null;
  /** How long it rings before the next stage; null: it shares the call's ring timer. */
  ringMs: number | null;
  overflow: boolean;
  /** AORs it rings: their devices that register while it rings join it. */
  aors: string[];
}

/** Loopback, unspecified, link-local and multicast addresses: never a destination a user may choose. */
export function isInternalAddress(address: string): boolean {
  const a = address.toLowerCase();
  if (a.includes(':')) return a === '::1' || a === '::' || a.startsWith('fe8') || a.startsWith('fe9') || a.startsWith('fea') || a.startsWith('feb') || a.startsWith('ff') || a.startsWith('::ffff:127.');
  return a.startsWith('127.') || a.startsWith('0.') || a.startsWith('169.254.') || Number(a.split('.')[0]) >= 224;
}

/** The destination of a branch before its address is known. */
const UNRESOLVED: Destination = Object.freeze({ protocol: 'udp', address: '0.0.0.0', port: 0 });

/** Branch.final of a branch that ended without a response of its own (replaced, or a push that was never delivered). */
const ENDED = 1;

/** Finals that say the device was not reached (rather than that it answered): such a device may be tried again when it registers. */
const UNREACHED: ReadonlySet<number> = new Set([408, 480, 503]);

/** The device a binding key names: `i:<instance>` whatever its reg-id; the key itself for a binding without +sip.instance. */
function deviceOf(key: string | undefined): string | undefined {
  if (key === undefined || !key.startsWith('i:')) return key;
  const bar = key.lastIndexOf('|');
  return bar < 0 ? key : key.slice(0, bar);
}

function sameFlow(a: Source | null, b: Source | null): boolean {
  if (a === null || b === null) return a === b;
  return a.protocol === b.protocol && a.address === b.address && a.port === b.port && a.connectionId === b.connectionId;
}

/** RFC 3326 reason of the CANCELs sent when another branch answered: apps then show no missed call. */
const COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"';

/** One branch of a forked request. */
class Branch {
  ctx: ClientTransaction | null = null;
  provisional = false;
  final = 0;
  /** A CANCEL is wanted; it goes when the branch has sent a provisional (§9.1). */
  cancelWanted = false;
  cancelSent = false;
  /** The Reason header of that CANCEL, if any. */
  cancelReason: string | null = null;
  /** Cancelled because its stage rang out: its 487 is not the call's answer. */
  abandoned = false;
  /** A device being woken by push: no transaction yet, it gets one when the device registers. */
  wake: WakeHandle | null = null;
  /** A woken iOS VoIP device owed its INVITE (then a CANCEL) although the call ended. */
  owed = false;
  wakeTimer: TimerHandle | null = null;
  /** This branch's INVITE went to a device a push woke. */
  afterPush = false;
  /** When the push was asked for (performance.now()). */
  wokenAt = 0;
  /** The INVITE owed to a woken iOS device after its call ended: its answers are Portier's to deal with. */
  ghost = false;
  /** Runs until the device's first answer (see QUIET_MS). */
  quietTimer: TimerHandle | null = null;
  /** The next servers of an RFC 3263 list, for failover. */
  alternates: Destination[] = [];
  constructor(
    readonly target: Target,
    readonly request: SipMessage,
    /** Where it goes; UNRESOLVED while the address is being looked up. */
    public dest: Destination,
    readonly stage: number,
  ) {}
}

/**
 * The state of one proxied request: its stages (q groups, or a ring
 * group's members then its overflow), their branches, the best final
 * response so far, the ring timer, and whether the caller cancelled.
 */
class ProxyCall implements BranchOwner, TimerTarget {
  private branches: Branch[] = [];
  private best: SipMessage | null = null;
  private answered = false;
  private finished = false;
  private cancelled = false;
  private ring: TimerHandle | null = null;
  private reaper: TimerHandle | null = null;
  private timed = false;
  private timedOut = false;
  private readonly isInvite: boolean;
  private readonly isCall: boolean;
  /** Index of the stage ringing now; the stages after it wait. */
  private stage = -1;
  /** The stage whose members are being looked up (-1: none): no verdict on the call until its branches exist. */
  private resolvingStage = -1;
  private readonly planned: boolean;
  private readonly log: CallRecord | null;
  /** AORs this call listens to for new registrations. */
  private readonly watched = new Set<string>();
  private pushProvisional = false;
  /** The branch whose request is being handed to the transactions right now. */
  private sending: Branch | null = null;
  private rr: { dialog: string; inbound: string } | null = null;
  private request: SipMessage | null;

  constructor(
    private readonly proxy: Proxy,
    readonly stx: ServerTransaction,
    request: SipMessage,
    private readonly hash: string,
    private stages: Stage[],
    private readonly fixed: Destination | null,
    private readonly received: number,
    route: string,
  ) {
    const req = (this.request = request);
    this.isInvite = req.method === 'INVITE';
    // A re-INVITE is not a call: only an INVITE outside a dialog counts in the call metrics and log.
    this.isCall = this.isInvite && req.to().tag === null;
    this.planned = stages.some((s) => s.members !== null);
    const logged = this.isCall && proxy.options.onCall !== undefined;
    this.log = logged
      ? // Kept until the BYE: copies, not views of the INVITE's text.
        { callId: detach(req.callId()), from: detach(req.from().uri.raw), to: detach(req.uri), route, stages: [], members: [], answeredBy: null, overflow: false, status: 0, result: 'failed', setupMs: null, durationMs: null, ended: null }
      : null;
  }

  /** The request being proxied, until the call ends (see end()). */
  private get req(): SipMessage {
    const r = this.request;
    if (r === null) throw new Error('a proxied call was used after it ended');
    return r;
  }

  start(): void {
    if (!this.nextStage()) this.finishWith(buildResponse(this.req, 480));
  }

  /** Starts the next stage; false when there is none left. */
  private nextStage(): boolean {
    if (this.stage + 1 >= this.stages.length) return false;
    const s = this.stages[++this.stage];
    if (this.isInvite) {
      if (s.ringMs !== null) {
        this.stopRing();
        this.ring = this.proxy.tx.wheel.schedule(this, TIMER_RING, s.ringMs);
      } else if (this.ring === null) this.ring = this.proxy.tx.wheel.schedule(this, TIMER_RING, this.proxy.options.ringTimeoutMs);
    }
    if (this.log !== null && s.label !== '') {
      this.log.stages.push(s.label);
      if (s.overflow) this.log.overflow = true;
    }
    for (const aor of s.aors) this.watchAor(aor);
    if (s.targets !== null) {
      for (const target of s.targets) void this.fork(target, this.stage);
      return true;
    }
    this.resolvingStage = this.stage;
    void this.resolveStage(s, this.stage);
    return true;
  }

  private async resolveStage(s: Stage, index: number): Promise<void> {
    let targets: Target[] = [];
    try {
      const lists = await Promise.all((s.members ?? []).map((m) => this.proxy.memberTargets(m)));
      lists.forEach((found, i) => {
        if (this.request === null) return;
        this.log?.members.push({ member: (s.members as PlanMember[])[i].uri, devices: found.targets.length });
        targets = targets.concat(found.targets);
        if (found.aor !== undefined) {
          s.aors.push(found.aor);
          if (index === this.stage) this.watchAor(found.aor);
        }
      });
    } catch {
      // The store is out of reach: this stage rings nobody; the next may be elsewhere (a PBX).
    }
    if (this.request === null) return; // the call ended meanwhile
    // A stage that rang out before its lookup ended leaves the current one's flag alone.
    if (this.resolvingStage === index) this.resolvingStage = -1;
    if (this.finished || this.cancelled || index !== this.stage) return this.maybeDone();
    if (targets.length === 0) {
      // Nobody of this stage has a live device: straight on to the next.
      if (!this.nextStage()) this.finishWith(this.best ?? buildResponse(this.req, 480));
      return;
    }
    for (const t of targets) void this.fork(t, index);
  }

  /** Sends the request to one target; `owed`: the INVITE a woken iOS device gets after its call ended. */
  private async fork(target: Target, stage: number, owed = false, next?: Destination[]): Promise<void> {
    if (!owed && next === undefined && target.alive === false && this.sleep(target, stage)) return;
    const copy = this.req.clone();
    // In the list at once: a branch whose address is still being resolved is one to wait for.
    const branch = new Branch(target, copy, UNRESOLVED, stage);
    this.branches.push(branch);
    let dest: Destination | null = this.fixed;
    if (dest === null) {
      // The push token is for Portier, not for the device (RFC 8599 §4.1.1).
      copy.setRequestUri(target.push ? withoutPushParams(target.uri) : target.uri);
      if (target.flow !== null) dest = flowDestination(target.flow);
      else {
        // With a Path (RFC 3327: an edge proxy, or the cluster node that holds the flow) the request goes there first.
        const u = target.path.length > 0 ? pathUri(target.path[0]) : copy.requestUri;
        // RFC 3263 §4.3: the other servers of the list are tried when this one fails.
        let all = next ?? (u === null ? [] : await this.proxy.uriDestinations(u));
        // A URI a user chose (another domain, a Contact, a GRUU) and its DNS must not point Portier at
        // this machine's own services (a local Redis speaks a line protocol a SIP body can feed).
        // Plan members and Paths were put there by the administrator or a registrar.
        if (target.member === undefined && target.path.length === 0 && !this.proxy.options.relayToLoopback) all = all.filter((d) => !isInternalAddress(d.address));
        dest = all[0] ?? null;
        branch.alternates = all.slice(1);
      }
    }
    // Ended while its address was being resolved (the reaper): nothing more to do.
    if (branch.final !== 0) return this.maybeDone();
    if (dest !== null) branch.dest = dest;
    for (let i = target.path.length - 1; i >= 0; i--) copy.prependHeader('route', i === 0 ? this.proveHandoff(target.path[0]) : target.path[i]);
    scrubContactPush(copy);
    const local = dest === null ? null : this.proxy.localFor(dest);
    if (branch.cancelWanted) {
      // Cancelled (or its stage answered elsewhere) before it was sent: it never will be.
      branch.final = 487;
      branch.abandoned = true;
      this.considerFinal(branch, buildResponse(this.req, 487));
      return;
    }
    // RFC 5630: a sips request travels over TLS or WSS on every hop. A device with no such flow cannot be reached now (480); a plain next hop named by a Route or the dialog is refused (403).
    // The hop to the cluster node that holds the device's flow is the nodes' own link (documented: a private network).
    const clusterHop = target.flow === null && target.path.length > 0 && target.path[0].includes(';' + HANDOFF_PARAM + '=');
    if (dest !== null && !clusterHop && this.req.requestUri?.scheme === 'sips' && dest.protocol !== 'tls' && dest.protocol !== 'wss') {
      // A registered device without a TLS flow cannot be reached now (480); a next hop named over UDP is refused (403).
      const code = target.aor !== undefined ? 480 : 403;
      branch.final = code;
      branch.abandoned = stage !== this.stage;
      // Once the stage's other branches have started: this one refused must not end the call alone.
      queueMicrotask(() => {
        if (this.request !== null) this.considerFinal(branch, buildResponse(this.req, code, code === 403 ? { reason: 'TLS Required' } : undefined));
      });
      return;
    }
    if (dest === null || local === null || (!owed && (this.finished || stage !== this.stage))) {
      branch.final = 503;
      // Its stage rang out while its address was being resolved: not the call's answer.
      branch.abandoned = stage !== this.stage;
      this.considerFinal(branch, buildResponse(this.req, 503, { reason: 'Target Unreachable' }));
      return;
    }
    if (DIALOG_CREATING.has(copy.method) && !copy.to().tag) {
      // The dialog token and the caller's flow token are the same for every branch: made once per call.
      const rr = (this.rr ??= this.recordRouteTokens());
      // RFC 3261 §16.6 step 4: in a sips dialog, sips Record-Route entries.
      addRecordRoute(copy, this.stx.source.local, local, rr.dialog, { inbound: rr.inbound, outbound: this.proxy.signer.flowToken(dest, rr.dialog) }, this.req.requestUri?.scheme === 'sips');
    }
    this.proxy.prepareForward(copy, local, branchFor(this.hash));
    this.proxy.stats.forwarded++;
    if (!this.timed) {
      this.timed = true;
      this.proxy.observer?.processing((performance.now() - this.received) / 1000);
    }
    // A transport error may be reported before sendRequest returns: `sending` says whose.
    this.sending = branch;
    branch.ctx = this.proxy.tx.sendRequest(copy, dest, this);
    this.sending = null;
    if (this.isInvite && target.push && this.proxy.options.waker !== undefined && branch.final === 0) {
      branch.quietTimer = this.proxy.tx.wheel.schedule(this, TIMER_QUIET + this.branches.indexOf(branch), QUIET_MS);
    }
  }

  /**
   * Wakes the device by push and keeps a branch waiting for it to register
   * again (late forking). False when it cannot be woken: the caller then
   * tries what is left (its flow, or nothing).
   */
  private sleep(target: Target, stage: number): boolean {
    const waker = this.proxy.options.waker;
    // A call or a message is worth waking a phone for; an OPTIONS qualify or a SUBSCRIBE is not.
    if (waker === undefined || !target.push || this.finished || stage !== this.stage || (this.req.method !== 'INVITE' && this.req.method !== 'MESSAGE')) return false;
    const handle = waker.wake(target, this.req);
    if (handle === null) return false;
    const b = new Branch(target, this.req, UNRESOLVED, stage);
    b.wake = handle;
    b.wokenAt = performance.now();
    this.branches.push(b);
    b.wakeTimer = this.proxy.tx.wheel.schedule(this, TIMER_WAKE + this.branches.length - 1, waker.timeoutMs);
    handle.sent.then(
      (sent) => this.pushed(b, sent),
      () => this.pushed(b, false),
    );
    return true;
  }

  /** The first push of a waking branch went out, or failed (then the branch is over). */
  private pushed(b: Branch, sent: boolean): void {
    if (b.final !== 0) return;
    if (!sent) {
      this.endWake(b, 'missed');
      b.final = 480;
      this.considerFinal(b, buildResponse(this.req, 480, { reason: 'Push Failed' }));
      return;
    }
    const code = this.proxy.options.waker?.provisional ?? 0;
    if (code === 0 || this.pushProvisional || this.finished || !this.isInvite) return;
    // The caller hears something while the phone wakes up (once per call).
    this.pushProvisional = true;
    this.stx.respond(buildResponse(this.req, code, code === 110 ? { reason: 'Push sent' } : undefined));
  }

  /** Ends a waking branch: its last push says why; an iOS VoIP device is still owed its INVITE. */
  private endWake(b: Branch, reason: WakeEnd): void {
    const h = b.wake;
    if (h === null) return;
    b.wake = null;
    h.stop(reason);
    if (reason !== 'delivered' && reason !== 'missed' && h.mustDeliver && b.wakeTimer !== null) {
      b.owed = true; // its timer still runs: the INVITE, then a CANCEL, if it registers before it fires
      return;
    }
    if (b.wakeTimer !== null) b.wakeTimer.cancel();
    b.wakeTimer = null;
  }

  /** A device of an AOR this call rings has registered. */
  lateTarget(target: Target): void {
    if (this.request === null) return; // ended and released (see end())
    const owed = this.branches.find((b) => b.owed && b.target.key === target.key);
    if (owed !== undefined) {
      // iOS requires every VoIP push to end in a call: the INVITE, cancelled as soon as it rings.
      owed.owed = false;
      owed.wakeTimer?.cancel();
      owed.wakeTimer = null;
      const reason = this.answered ? COMPLETED_ELSEWHERE : null;
      void this.forkOwed(target, owed.stage, reason);
      this.maybeUnwatch();
      return;
    }
    if (this.finished || this.cancelled || this.answered) return;
    const stage = this.stages[this.stage];
    if (stage === undefined || target.aor === undefined || !stage.aors.includes(target.aor)) return;
    const member = this.branches.find((b) => b.target.aor === target.aor && b.target.member !== undefined)?.target.member;
    // One device, whatever flow (reg-id) it registered again on (RFC 5626 §5.3).
    const device = deviceOf(target.key);
    const same = this.branches.filter((b) => deviceOf(b.target.key) === device);
    // A refresh of a device already trying on the same address, or one that rings (on any of its flows): nothing new.
    if (same.some((b) => b.final === 0 && b.wake === null && b.ctx !== null && !b.cancelWanted && (b.provisional || (b.target.uri === target.uri && sameFlow(b.target.flow, target.flow))))) return;
    // A device that answered this call (busy, declined...) is not rung again; one that could not be reached may be.
    if (same.some((b) => b.final >= 300 && !b.abandoned && !UNREACHED.has(b.final))) return;
    let woken = false;
    for (const b of same) {
      if (b.final !== 0) continue;
      if (b.wake !== null) {
        woken = true;
        this.proxy.observer?.pushToRegister((performance.now() - b.wokenAt) / 1000);
        this.endWake(b, 'delivered');
        b.final = ENDED; // replaced by the branch below
        b.abandoned = true;
        continue;
      }
      // Still trying its old address (quiet: its app slept): the new registration replaces it.
      b.abandoned = true;
      this.cancelBranch(b, null, 'delivered');
    }
    const t: Target = { ...target, alive: true, member: target.member ?? member };
    const before = this.branches.length;
    void this.fork(t, this.stage);
    if (woken && this.branches.length > before) this.branches[before].afterPush = true;
  }

  /** The INVITE a woken iOS VoIP device is owed after its call ended: CANCELled at its first provisional. */
  private async forkOwed(target: Target, stage: number, reason: string | null): Promise<void> {
    const before = this.branches.length;
    await this.fork({ ...target, alive: true }, stage, true);
    const b = this.branches[before];
    if (b === undefined) return;
    b.abandoned = true;
    b.ghost = true;
    this.cancelBranch(b, reason ?? 'SIP;cause=487;text="Call cancelled"', 'cancelled');
  }

  /**
   * What the device owed an INVITE answers concerns nobody upstream: the
   * caller's side is over. A 2xx (CallKit may answer at once) is ACKed and
   * hung up by Portier itself, so the device ends up with no call.
   */
  private ghostResponse(b: Branch, res: SipMessage): void {
    if (res.status < 200) {
      if (b.cancelWanted) this.sendCancel(b);
      return;
    }
    b.final = res.status;
    if (res.status < 300) this.hangUpGhost(b, res);
    this.maybeDone();
  }

  private hangUpGhost(b: Branch, res: SipMessage): void {
    const contact = res.contacts()?.[0]?.uriText;
    const local = this.proxy.localFor(b.dest);
    if (contact === undefined || local === null) return;
    const seq = b.request.cseq().seq;
    const host = local.address.includes(':') ? '[' + local.address + ']' : local.address;
    const request = (method: string, cseq: number, branch: string, extra: string) =>
      parseAndValidate(
        Buffer.from(
          `${method} ${contact} SIP/2.0\r\nVia: SIP/2.0/${local.protocol.toUpperCase()} ${host}:${local.port};branch=${branch};rport\r\nMax-Forwards: 70\r\n` +
            `From: ${b.request.get('from') ?? ''}\r\nTo: ${res.get('to') ?? ''}\r\nCall-ID: ${b.request.callId()}\r\nCSeq: ${cseq} ${method}\r\n${extra}Content-Length: 0\r\n\r\n`,
          'latin1',
        ),
        { transport: 'tcp' },
      );
    const ack = request('ACK', seq, branchFor(this.hash + 'ack'), '');
    const bye = request('BYE', seq + 1, branchFor(this.hash + 'bye'), 'Reason: ' + COMPLETED_ELSEWHERE + '\r\n');
    if (ack instanceof SipParseError || bye instanceof SipParseError) return;
    this.proxy.tx.send(ack.toBuffer(), b.dest);
    this.proxy.tx.sendRequest(bye, b.dest, NO_OWNER);
  }


  /** RFC 3263 §4.3: a server of the list failed (transport error, timeout, 503): the next one gets the request. */
  private failOver(b: Branch): boolean {
    if (b.alternates.length === 0 || this.finished || this.cancelled || b.stage !== this.stage || b.cancelWanted) return false;
    b.abandoned = true;
    void this.fork(b.target, b.stage, false, b.alternates);
    return true;
  }

  /** A branch to a device with push parameters failed (408, 503, connection gone): wake it and wait for it instead. */
  private retryByPush(b: Branch): boolean {
    if (!b.target.push || b.afterPush || b.cancelWanted || b.abandoned || this.finished || this.cancelled || b.stage !== this.stage) return false;
    if (this.branches.some((o) => o.target.key === b.target.key && (o.wake !== null || o.owed))) return false;
    if (!this.sleep(b.target, b.stage)) return false;
    b.abandoned = true;
    return true;
  }

  private watchAor(aor: string): void {
    if (this.watched.has(aor)) return;
    this.watched.add(aor);
    this.proxy.watch(aor, this);
  }

  /** Stops listening for registrations once nothing can join any more. */
  private maybeUnwatch(): void {
    if (this.watched.size === 0) return;
    if (!(this.finished || this.answered || this.cancelled)) return;
    if (this.branches.some((b) => b.owed)) return;
    for (const aor of this.watched) this.proxy.unwatch(aor, this);
    this.watched.clear();
  }

  /** A Path entry of another cluster node gets this request's proof next to its handoff token. */
  private proveHandoff(entry: string): string {
    const u = pathUri(entry);
    const token = u?.params.get(HANDOFF_PARAM);
    if (typeof token !== 'string') return entry;
    const gt = entry.lastIndexOf('>');
    if (gt < 0) return entry;
    return entry.slice(0, gt) + ';' + HANDOFF_PROOF_PARAM + '=' + this.proxy.signer.handoffProof(token, this.req.callId()) + entry.slice(gt);
  }

  private recordRouteTokens(): { dialog: string; inbound: string } {
    const dialog = this.proxy.signer.token(this.req.callId(), this.req.from().tag ?? '');
    return { dialog, inbound: this.proxy.signer.flowToken(this.stx.source, dialog) };
  }

  private branchOf(ctx: ClientTransaction): Branch | undefined {
    for (const b of this.branches) if (b.ctx === ctx) return b;
    return undefined;
  }

  // ---- branch events ----

  onResponse(ctx: ClientTransaction, res: SipMessage): void {
    // Ended and released (see end()): a 2xx still goes upstream.
    if (this.request === null) return new LateAnswers(this.stx).onResponse(ctx, res);
    const b = this.branchOf(ctx);
    if (b === undefined) return;
    if (b.ghost) return this.ghostResponse(b, res);
    if (b.quietTimer !== null) {
      b.quietTimer.cancel();
      b.quietTimer = null;
    }
    // Our Via goes; the rest travels back upstream (§16.7 step 3).
    res.removeFirstValue('via');
    scrubContactPush(res);
    const status = res.status;
    if (status < 200) {
      if (status === 100) return; // hop by hop: ours went already
      b.provisional = true;
      if (b.cancelWanted) this.sendCancel(b);
      // A branch being cancelled rings no more as far as the caller is concerned.
      else if (!this.finished) this.stx.respond(res);
      return;
    }
    b.final = status;
    if (status < 300) {
      // Every 2xx goes upstream at once, even a second one (§16.7 step 5).
      this.stx.respond(res);
      if (!this.answered) {
        this.answered = true;
        if (this.isCall) {
          this.proxy.stats.callResults.answered++;
          if (b.afterPush) this.proxy.answeredAfterPush++;
          const setup = performance.now() - this.received;
          this.proxy.observer?.callSetup(setup / 1000);
          // The call's log line waits for its BYE, to say how long it lasted.
          const log = this.log;
          if (log !== null && log.status === 0) {
            log.status = status;
            log.result = 'answered';
            log.answeredBy = b.target.member ?? b.target.uri;
            log.setupMs = Math.round(setup);
          }
          this.proxy.callTracker.established(this.req.callId(), Date.now(), log);
        } else if (this.req.method === 'BYE') {
          this.proxy.callEnded(this.req.callId());
        }
        this.stopRing();
        this.cancelOthers(b, COMPLETED_ELSEWHERE);
      }
      this.finished = true;
      this.maybeDone();
      return;
    }
    if (status >= 600 && this.isInvite) {
      const reason = `SIP;cause=${status};text="${(res.reason || 'Declined').replace(/["\\]/g, '')}"`;
      if (this.planned && b.target.member !== undefined) {
        // In a ring group one person declining stops their own devices,
        // not their colleagues': the group rings on, then overflows.
        for (const o of this.branches) if (o !== b && o.final === 0 && o.target.member === b.target.member) this.cancelBranch(o, reason, 'declined-elsewhere');
      } else this.cancelOthers(b, reason, 'declined-elsewhere');
    }
    // 480 from the cluster node that held the device's flow: that flow is gone, as a 408 would say.
    const flowGone = status === 408 || status === 503 || (status === 480 && b.target.flow === null && b.target.path.length > 0);
    if (status === 503 && this.failOver(b)) return this.maybeDone();
    if (flowGone && this.retryByPush(b)) return this.maybeDone();
    this.considerFinal(b, res);
  }

  onTimeout(ctx: ClientTransaction): void {
    if (this.request === null) return; // ended and released (see end())
    const b = this.branchOf(ctx);
    if (b === undefined || b.final !== 0) return;
    b.final = 408;
    if (this.failOver(b) || this.retryByPush(b)) return this.maybeDone();
    this.considerFinal(b, buildResponse(this.req, 408));
  }

  onTransportError(ctx: ClientTransaction, _err: Error): void {
    if (this.request === null) return; // ended and released (see end())
    const b = this.branchOf(ctx) ?? this.sending ?? undefined;
    if (b === undefined || b.final !== 0) return;
    b.final = 503;
    if (this.failOver(b) || this.retryByPush(b)) return this.maybeDone();
    this.considerFinal(b, buildResponse(this.req, 503, { reason: 'Target Unreachable' }));
  }

  /** The ring timer (Timer C, or a stage's ring time), and the reaper. */
  onTimer(kind: number): void {
    if (this.request === null) return; // ended and released (see end())
    if (kind >= TIMER_QUIET) {
      // Not a word from a device that can be woken: push it too, and keep this branch (it may still answer).
      const b = this.branches[kind - TIMER_QUIET];
      if (b === undefined) return;
      b.quietTimer = null;
      if (b.final === 0 && !b.provisional && !b.cancelWanted && !this.branches.some((o) => o.target.key === b.target.key && (o.wake !== null || o.owed))) this.sleep(b.target, b.stage);
      return;
    }
    if (kind >= TIMER_WAKE) {
      const b = this.branches[kind - TIMER_WAKE];
      if (b === undefined) return;
      b.wakeTimer = null;
      if (b.owed) {
        b.owed = false; // it never registered: nothing is owed any more
        this.maybeUnwatch();
        return;
      }
      if (b.wake === null || b.final !== 0) return;
      // Woken, but it did not register in time.
      this.endWake(b, 'missed');
      b.final = 480;
      this.considerFinal(b, buildResponse(this.req, 480));
      return;
    }
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
      this.end();
      return;
    }
    if (kind !== TIMER_RING || this.finished) return;
    this.ring = null;
    const current = this.stages[this.stage];
    if (current !== undefined && current.ringMs !== null && this.stage + 1 < this.stages.length && !this.cancelled) {
      // This stage rang out: its branches stop, the next stage (the next member, the overflow) rings.
      for (const b of this.branches) {
        if (b.final !== 0 || b.stage !== this.stage) continue;
        b.abandoned = true;
        this.cancelBranch(b, null, 'missed');
      }
      this.nextStage();
      return;
    }
    this.finished = true;
    for (const b of this.branches) if (b.final === 0) this.cancelBranch(b, null, 'missed');
    if (this.cancelled) {
      // A branch that rang never answered the CANCEL: the caller cancelled, it hears 487, not a timeout.
      this.sendFinal(this.best ?? buildResponse(this.req, 487));
      return;
    }
    this.timedOut = true;
    this.sendFinal(buildResponse(this.req, 408, { reason: 'Request Timeout' }));
  }

  /** The caller sent CANCEL (§16.10). */
  cancelByCaller(reason: string | null): void {
    if (this.request === null) return; // ended and released (see end())
    if (this.finished || this.cancelled) return;
    this.cancelled = true;
    this.stage = this.stages.length;
    for (const b of this.branches) if (b.final === 0) this.cancelBranch(b, reason, 'cancelled');
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
   * Branches of a stage that rang out are not: the next stage rings.
   */
  private waiting(): boolean {
    return this.branches.some((b) => b.final === 0 && !b.abandoned && (!this.cancelled || b.provisional));
  }

  private cancelOthers(winner: Branch, reason: string | null, end: WakeEnd = 'answered-elsewhere'): void {
    this.stage = this.stages.length;
    for (const b of this.branches) if (b !== winner && b.final === 0) this.cancelBranch(b, reason, end);
  }

  /**
   * CANCEL one branch; before its first provisional it waits for one (§9.1).
   * A device still being woken gets no INVITE: its last push says why (`end`).
   */
  private cancelBranch(b: Branch, reason: string | null, end: WakeEnd): void {
    if (b.wake !== null) {
      this.endWake(b, end);
      b.final = ENDED; // over, without a response
      b.abandoned = true;
      return;
    }
    if (b.cancelWanted || !this.isInvite) return;
    // Not sent yet (its address being resolved): fork() sees this and does not send it.
    b.cancelWanted = true;
    b.cancelReason = reason;
    if (b.ctx !== null && b.provisional) this.sendCancel(b);
  }

  private sendCancel(b: Branch): void {
    if (b.cancelSent) return;
    b.cancelSent = true;
    const cancel = buildCancel(b.request);
    if (b.cancelReason !== null) cancel.setHeader('reason', b.cancelReason);
    this.proxy.tx.sendRequest(cancel, b.dest, NO_OWNER);
  }

  private considerFinal(b: Branch, res: SipMessage): void {
    if (this.finished) {
      this.maybeDone();
      return;
    }
    // A branch cancelled because its stage rang out answers 487: to the caller that is no answer.
    const r = b.abandoned ? buildResponse(this.req, 408) : res;
    if (this.best === null || isBetterResponse(r.status, this.best.status)) this.best = r;
    if (r.status >= 600 && this.isInvite && !this.planned) {
      this.finished = true;
      this.stopRing();
      this.sendFinal(this.best);
      return;
    }
    if (this.resolvingStage !== -1 || this.waiting()) return;
    // Every branch of this stage failed: on to the next, unless cancelled.
    if (!this.cancelled && this.nextStage()) return;
    this.finishWith(this.best);
  }

  private finishWith(res: SipMessage): void {
    if (this.finished) return;
    this.finished = true;
    this.stopRing();
    this.sendFinal(res);
  }

  private sendFinal(res: SipMessage): void {
    const status = forwardedStatus(res.status);
    // A BYE ends the call whatever its answer: 481 (the other side forgot it), 408, 500.
    if (this.req.method === 'BYE') this.proxy.callEnded(this.req.callId());
    if (this.isCall && !this.answered) {
      const result = this.resultOf(res.status);
      this.proxy.stats.callResults[result]++;
      if (this.req.to().tag === null) this.proxy.doorCalls?.end(callKey(this.req, this.req.from().tag));
      this.done(status, result);
    }
    if (status !== res.status) this.stx.respond(buildResponse(this.req, status));
    else this.stx.respond(res);
    this.maybeDone();
  }

  /** The log line of a call that was not answered, once (an answered call's waits for its BYE). */
  private done(status: number, result: CallResult): void {
    const log = this.log;
    if (log === null || log.status !== 0) return;
    log.status = status;
    log.result = result;
    this.proxy.options.onCall?.(log);
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
    if (this.resolvingStage !== -1) return;
    this.maybeUnwatch();
    if (this.branches.every((b) => b.final !== 0)) {
      if (this.reaper !== null) this.reaper.cancel();
      if (this.finished) this.end();
      else if (this.branches.length > 0) this.proxy.endCall(this.stx);
    } else if (this.finished && this.reaper === null) {
      this.reaper = this.proxy.tx.wheel.schedule(this, TIMER_REAP, REAP_MS);
    }
  }

  /**
   * The call is over for the proxy: every branch has its final. What its
   * client transactions may still pass up for Timer D or M (RFC 6026: each
   * 2xx, a retransmission or another fork's) goes to a small forwarder, so
   * that this call, its requests and responses, is not kept 32 s for that.
   */
  private end(): void {
    this.proxy.endCall(this.stx);
    let late: LateAnswers | null = null;
    let idle = this.watched.size === 0;
    for (const b of this.branches) {
      // A device woken by push may still register (or owes its INVITE): that branch is this call's to finish.
      if (b.ghost || b.owed || b.wake !== null || b.wokenAt !== 0) idle = false;
      const ctx = b.ctx;
      if (ctx === null || b.ghost || b.owed || ctx.state === TransactionState.Terminated) continue;
      // An accepted INVITE becomes a record of the layer, its 2xx sent where the server transaction sends (onStrayResponse()).
      if (ctx.release(this.stx.dest)) continue;
      late ??= new LateAnswers(this.stx);
      ctx.handOver(late);
    }
    if (!idle) return;
    // Nothing will call into this call again: let go of the messages and
    // branches, so that whatever still points at it for a while (measured:
    // at a thousand calls a second, ended calls were still being copied by
    // the young-generation collections) keeps a few fields, not the call.
    for (const b of this.branches) b.quietTimer?.cancel();
    this.stopRing();
    this.reaper?.cancel();
    this.branches = [];
    this.stages = [];
    this.best = null;
    this.request = null;
  }

  private stopRing(): void {
    if (this.ring !== null) {
      this.ring.cancel();
      this.ring = null;
    }
  }
}

/** Forwards the 2xx that come after a call ended upstream through its server transaction (§16.7 step 5, RFC 6026). */
class LateAnswers implements BranchOwner {
  constructor(private readonly stx: ServerTransaction) {}

  onResponse(_ctx: ClientTransaction, res: SipMessage): void {
    const status = res.status;
    if (status < 200 || status >= 300) return;
    res.removeFirstValue('via');
    scrubContactPush(res);
    this.stx.respond(res);
  }

  onTimeout(): void {}
  onTransportError(): void {}
}

/** CANCELs are fire and forget: their responses matter to nobody. */
const NO_OWNER: BranchOwner = {
  onResponse() {},
  onTimeout() {},
  onTransportError() {},
};
