// The registrar (RFC 3261 §10.3, with GRUU RFC 5627, Path RFC 3327, the
// outbound flows of RFC 5626 and the push parameters of RFC 8599).
//
// Transport-agnostic: register() takes a parsed, validated REGISTER and the
// Source it came from, and returns what to answer. Sending the answer,
// authenticating the UA (§10.3 steps 3-4) and forwarding REGISTERs for
// other domains are the caller's business.

import { EventEmitter } from 'node:events';
import { buildResponse, detach, parseUri, quote, reasonPhrase, type SipMessage, type Uri } from '../sip/index.js';
import type { Source } from '../transport/types.js';
import { aorOf, canonicalDomain, canonicalHost, domainOfAor } from './aor.js';
import { readContact, formatContact, type ContactGruus } from './contact.js';
import { gruuRefOf, mintTempGruuToken, pubGruuUri, tempGruuUri } from './gruu.js';
import { MemoryLocationStore } from './memory-store.js';
import type { Binding, BindingCounts, GruuResolution, LocationStore, UpdateDecision, UpdateOutcome } from './location-store.js';
import { planRegister, type GrantedContact, type Plan, type RemovalCause } from './plan.js';

/** Option tags the registrar implements, for Supported and for checking Require (§8.2.2.3). */
export const REGISTRAR_OPTION_TAGS: readonly string[] = ['gruu', 'path', 'outbound'];

/**
 * The Flow-Timer (RFC 5626 §6) for a stream idle timeout in seconds: the UA
 * sends a keep-alive every 80 to 100% of it (§4.4.1), so 80% of the idle
 * timeout leaves a fifth of it for the network before the connection is
 * closed as idle. At most 120 s, the RFC's own default for streams: NATs and
 * mobile firewalls drop idle TCP mappings after a few minutes, and a longer
 * Flow-Timer would make UAs ping less often than they do by default.
 */
export function flowTimerFor(idleTimeoutSeconds: number): number {
  return Math.max(1, Math.min(120, Math.floor(idleTimeoutSeconds * 0.8)));
}

export interface RegistrarConfig {
  /** Domains served (host names or IP literals); REGISTERs for others are refused. */
  domains: readonly string[];
  /** Shortest non-zero expiry accepted, seconds; shorter gets 423 with Min-Expires. */
  minExpires: number;
  /** Longest expiry granted, seconds; longer requests are cut to it. */
  maxExpires: number;
  /** Expiry when the REGISTER asks for none, seconds. */
  defaultExpires: number;
  /**
   * Longest expiry for contacts registered over TCP/TLS/WS, seconds, or
   * null for no extra cap. A UA that sends no keep-alives stays reachable
   * only while its connection lives: set this below the transport's idle
   * timeout so that it refreshes (and so keeps the connection) in time.
   */
  maxStreamExpires: number | null;
  /** Most bindings per AOR; beyond it the least recently refreshed are dropped. */
  maxBindingsPerAor: number;
  /**
   * Flow-Timer, seconds, in the 200 to an outbound registration (RFC 5626)
   * made straight over a stream connection; null: none. See flowTimerFor().
   */
  flowTimer: number | null;
  /** Most temp-gruus remembered per binding (one is issued per refresh). */
  maxTempGruus: number;
  /** How often expired bindings are swept, ms; 0 disables the timer (call sweep() yourself). */
  sweepIntervalMs: number;
}

export const DEFAULT_REGISTRAR_CONFIG: Readonly<Omit<RegistrarConfig, 'domains'>> = Object.freeze({
  minExpires: 60,
  maxExpires: 3600,
  defaultExpires: 600,
  maxStreamExpires: null,
  maxBindingsPerAor: 16,
  flowTimer: null,
  maxTempGruus: 16,
  sweepIntervalMs: 30_000,
});

export interface RegistrarOptions {
  /** Where bindings live; a MemoryLocationStore (owned, closed by close()) when omitted. */
  store?: LocationStore;
  /** The clock, ms since the epoch. */
  now?: () => number;
}

/**
 * What became of a REGISTER, for logs and metrics:
 * - registered: 200, bindings added, refreshed or removed;
 * - fetched: 200, no Contact, the bindings listed (§10.2.3);
 * - foreign-domain: 403, the Request-URI names a domain not served. §10.3
 *   step 1 says a registrar that is also a proxy SHOULD forward such a
 *   request; Portier serves its own domains only, so it refuses. A caller
 *   that wants to forward checks servesDomain() before calling register();
 * - unsupported-scheme: 416, the Request-URI is not sip or sips;
 * - bad-extension: 420, Require names an extension not supported; or 439,
 *   Require: outbound with a reg-id through an edge proxy without outbound
 *   (no `ob` in its Path, RFC 5626 §6);
 * - not-found: 404, the To URI is no AOR of a served domain (§10.3 step 5);
 * - bad-request: 400;
 * - forbidden: 403, a Contact is a GRUU of a served domain (RFC 5627 forbids binding those);
 * - interval-too-brief: 423, with Min-Expires;
 * - stale: 500, same Call-ID and a CSeq not higher than the binding's (§10.3 step 7).
 */
export type RegisterOutcome =
  | 'registered'
  | 'fetched'
  | 'foreign-domain'
  | 'unsupported-scheme'
  | 'bad-extension'
  | 'not-found'
  | 'bad-request'
  | 'forbidden'
  | 'interval-too-brief'
  | 'stale'
  /** 503: the store cannot be written now (Redis unreachable). */
  | 'unavailable';

export interface RegisterResult {
  status: number;
  reason: string;
  /** Header lines for the response, in order (Contact, Path, Require and Flow-Timer, Supported, Date; or Min-Expires, Unsupported, Warning). */
  headers: Array<[string, string]>;
  outcome: RegisterOutcome;
  /** Why it failed, in words (also in a Warning header); null on success. */
  detail: string | null;
  /** The canonical AOR, once known. */
  aor: string | null;
  /** The AOR's bindings after the request (200 only). */
  bindings: Binding[];
}

/**
 * Why a binding ended: removal by the UA, replacement, eviction (see
 * RemovalCause), expiry, removal through removeBinding(), or the close of
 * the stream connection it was registered on (connectionClosed()).
 */
export type UnbindCause = RemovalCause | 'expired' | 'removed' | 'connection-closed';

/**
 * Emitted synchronously once the store has been written, before register()
 * resolves; a listener that throws makes register() reject, so listeners
 * must not throw.
 */
export interface RegistrarEvents {
  /** A binding was created (previous null) or refreshed/superseded. */
  registered: [binding: Binding, previous: Binding | null];
  unregistered: [binding: Binding, cause: UnbindCause];
}

/** Counters for metrics. Plain numbers, incremented in place. */
export interface RegistrarStats {
  /** REGISTER requests handled. */
  requests: number;
  /** Successful REGISTERs (200) by AOR domain. */
  registrations: Record<string, number>;
  /** Responses by status code. */
  responses: Record<string, number>;
  bindingsAdded: number;
  bindingsRefreshed: number;
  /** Ended other than by expiry. */
  bindingsRemoved: number;
  bindingsExpired: number;
  /** Periodic sweeps that failed (a store error). */
  sweepErrors: number;
}

const STREAM_PROTOCOLS: ReadonlySet<string> = new Set(['tcp', 'tls', 'ws', 'wss']);

/** The Supported value of every 200. */
const SUPPORTED = REGISTRAR_OPTION_TAGS.join(', ');

/** An option tag of a Require the registrar does not implement. */
function notOurs(tag: string): boolean {
  return !REGISTRAR_OPTION_TAGS.includes(tag);
}

// Most REGISTERs come without a Path: they share this one.
const NO_PATH: readonly string[] = Object.freeze([]);

// The Date of a 200 (RFC 3261 §20.17) has one-second resolution: written
// once per second rather than once per REGISTER.
let dateSecond = NaN;
let dateText = '';

function httpDate(now: number): string {
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(second * 1000).toUTCString();
  }
  return dateText;
}

/** What a REGISTER's update carries to its end (Registrar.updated). */
interface Registering {
  aor: string;
  scheme: 'sip' | 'sips';
  cseq: number;
  now: number;
  source: Source;
  /** Portier is the device's first hop (one Via, no Path). */
  edge: boolean;
  supported: readonly string[];
  path: readonly string[];
  outbound: OutboundReply | null;
}

/** A store that cannot be reached (Redis) gives 503: the device retries, and nothing was half-written. Anything else is a bug, thrown on. */
function storageFailure(err: unknown): RegisterResult {
  const code = (err as { code?: unknown }).code;
  if (code !== 'STORAGE_UNAVAILABLE' && code !== 'STORAGE_CONFLICT') throw err;
  return fail(503, 'unavailable', 'registrations cannot be stored now', [['Retry-After', '5']]);
}

/** The bindings registered over one stream connection of this process, and that connection's Source. */
interface FlowBindings {
  source: Source;
  /** bindingRef() → AOR. */
  refs: Map<string, string>;
}

function bindingRef(aor: string, key: string): string {
  return aor + '\n' + key;
}

/** Whether `b` is still bound to the connection `s` (a refresh may have moved it to another, here or on another node). */
function onFlow(b: Binding, s: Source): boolean {
  const f = b.source;
  return f.connectionId === s.connectionId && f.protocol === s.protocol && f.address === s.address && f.port === s.port && f.local.address === s.local.address && f.local.port === s.local.port;
}

export class Registrar extends EventEmitter<RegistrarEvents> {
  readonly config: Readonly<RegistrarConfig>;
  readonly store: LocationStore;
  readonly stats: RegistrarStats = {
    requests: 0,
    registrations: {},
    responses: {},
    bindingsAdded: 0,
    bindingsRefreshed: 0,
    bindingsRemoved: 0,
    bindingsExpired: 0,
    sweepErrors: 0,
  };
  private readonly domains: ReadonlySet<string>;
  private readonly now: () => number;
  private readonly ownsStore: boolean;
  private timer: NodeJS.Timeout | null = null;
  private sweeping = false;
  private closed = false;
  /**
   * Bindings tied to their flow: registered straight over a stream connection
   * of this process (one Via, no Path), by connection id. Bounded by the
   * bindings themselves: an entry goes when its binding ends or moves.
   */
  private readonly flows = new Map<number, FlowBindings>();
  /** bindingRef() → the connection id it is indexed under in `flows`. */
  private readonly flowOf = new Map<string, number>();
  // The domain of the last AOR counted in stats.registrations, and its host
  // as the AOR writes it: most REGISTERs are for one domain, which is then
  // not cut out of the AOR again.
  private statHost = '';
  private statDomain = '';

  constructor(config: Partial<RegistrarConfig> & Pick<RegistrarConfig, 'domains'>, options: RegistrarOptions = {}) {
    super();
    this.config = Object.freeze(checkConfig({ ...DEFAULT_REGISTRAR_CONFIG, ...config }));
    this.domains = new Set(this.config.domains.map(canonicalDomain));
    this.now = options.now ?? Date.now;
    this.ownsStore = options.store === undefined;
    this.store = options.store ?? new MemoryLocationStore();
    if (this.config.sweepIntervalMs > 0) {
      // unref: a pending sweep must not keep the process alive on shutdown.
      this.timer = setInterval(() => void this.periodicSweep(), this.config.sweepIntervalMs);
      this.timer.unref();
    }
  }

  /** True when `host` (as in a URI, any case, IPv6 with or without brackets) is a served domain. */
  servesDomain(host: string): boolean {
    return this.domains.has(canonicalDomain(host));
  }

  /** Handles a REGISTER (RFC 3261 §10.3). Never throws for a bad request: that is a 4xx result. */
  /**
   * `ownPath`: a Path entry of Portier's own (a cluster node naming its flow)
   * stored first on the bindings, as if the REGISTER had carried it, but
   * neither seen by the outbound rules (the device is still at its first
   * hop) nor returned in the 200.
   */
  async register(req: SipMessage, source: Source, ownPath?: string): Promise<RegisterResult> {
    return this.registerNow(req, source, ownPath);
  }

  /**
   * register(), answered in the same task when the store answers at once
   * (memory, SQLite: see LocationStore.updateNow); a Promise only from a
   * store that waits (Redis). From the socket to the 200 no Promise is made
   * (the proxy, this and the store made five).
   */
  registerNow(req: SipMessage, source: Source, ownPath?: string): RegisterResult | Promise<RegisterResult> {
    if (!req.isRequest || req.method !== 'REGISTER') throw new TypeError('Registrar.register: not a REGISTER request');
    this.stats.requests++;
    const now = this.now();
    let r: RegisterResult | Promise<RegisterResult>;
    try {
      r = this.process(req, source, now, ownPath);
    } catch (err) {
      return this.answered(storageFailure(err));
    }
    if (r instanceof Promise) return r.then((x) => this.answered(x), (err: unknown) => this.answered(storageFailure(err)));
    return this.answered(r);
  }

  /** Counts the answer to a REGISTER. */
  private answered(r: RegisterResult): RegisterResult {
    this.stats.responses[r.status] = (this.stats.responses[r.status] ?? 0) + 1;
    if (r.status === 200 && r.aor !== null) {
      const d = this.domainOf(r.aor);
      this.stats.registrations[d] = (this.stats.registrations[d] ?? 0) + 1;
    }
    return r;
  }

  /** domainOfAor(aor), without new strings when the AOR ends in the last one's host. */
  private domainOf(aor: string): string {
    const h = this.statHost;
    const at = aor.length - h.length - 1;
    if (h !== '' && at > 0 && aor.charCodeAt(at) === 0x40 && aor.endsWith(h)) return this.statDomain;
    this.statDomain = domainOfAor(aor);
    const last = aor.lastIndexOf('@');
    this.statHost = last < 0 ? '' : detach(aor.slice(last + 1)); // kept: not a view of anything
    return this.statDomain;
  }

  /** The live bindings of an AOR (canonical string or any URI of it), highest q first, then most recently refreshed. */
  async lookup(aor: string | Uri): Promise<Binding[]> {
    const key = typeof aor === 'string' ? canonicalAorText(aor) : aorOf(aor);
    if (key === null) return [];
    return sortBindings(await this.store.get(key, this.now()));
  }

  /**
   * The binding a GRUU Request-URI reaches (RFC 5627): a pub-gruu (AOR with
   * `gr=<instance-id>`) gives that instance's binding, a temp-gruu
   * (`tgruu.<token>`, valueless `gr`) the binding it was issued to.
   * 'expired': the GRUU was valid but its binding has ended (answer 480);
   * null: not a GRUU of a served domain, or never issued (answer 404).
   */
  async resolveGruu(uri: Uri): Promise<GruuResolution> {
    if (!uri.isSip || !this.domains.has(canonicalHost(uri))) return null;
    const ref = gruuRefOf(uri);
    if (ref === null) return null;
    const r = await this.store.findByGruu(ref, this.now());
    // Tokens are global; the GRUU is only that token in its own domain.
    if (ref.kind === 'temp' && typeof r === 'object' && r !== null && domainOfAor(r.aor) !== canonicalHost(uri)) return null;
    return r;
  }

  /** Removes one binding, e.g. when the proxy finds its flow dead. */
  async removeBinding(aor: string, key: string): Promise<Binding | null> {
    const b = await this.store.remove(aor, key, this.now());
    if (b !== null) this.unbound(b, 'removed');
    return b;
  }

  /** Forgets a binding's push parameters (the provider said its token is gone) when `stillThese` says they are those; the binding stays. True when dropped. */
  async dropPushParams(aor: string, key: string, stillThese: (params: Readonly<Record<string, string>>) => boolean = () => true): Promise<boolean> {
    const out = await this.store.update(aor, this.now(), (current) => {
      const b = current.find((x) => x.key === key);
      // The device may have registered a new token since the push went out: that one stays.
      if (b === undefined || Object.keys(b.pushParams).length === 0 || !stillThese(b.pushParams)) return { changes: null, result: false };
      return { changes: { put: [{ ...b, pushParams: {} }] }, result: true };
    });
    return out.result;
  }

  /** Removes expired bindings now (the timer does this every sweepIntervalMs); emits 'unregistered' for each. */
  async sweep(): Promise<Binding[]> {
    const expired = await this.store.sweep(this.now());
    for (const b of expired) this.unbound(b, 'expired');
    return expired;
  }

  /** Live bindings and AORs per domain, for metrics. */
  async bindingCounts(): Promise<BindingCounts> {
    return this.store.count(this.now());
  }

  /**
   * The transport closed a stream connection: the bindings registered over
   * it (straight from the device, not through another proxy) are removed,
   * unless they carry push parameters: those stay, and a push wakes the app
   * (the proxy sees their flow is gone). UDP has no such event: its bindings
   * end at their expiry. Returns the bindings removed.
   */
  async connectionClosed(connectionId: number): Promise<Binding[]> {
    const flow = this.flows.get(connectionId);
    // Closed: the server is stopping, so every connection closes; the devices did not leave.
    if (flow === undefined || this.closed) return [];
    this.flows.delete(connectionId);
    const byAor = new Map<string, Set<string>>();
    for (const [ref, aor] of flow.refs) {
      this.flowOf.delete(ref);
      let keys = byAor.get(aor);
      if (keys === undefined) byAor.set(aor, (keys = new Set()));
      keys.add(ref.slice(aor.length + 1));
    }
    const removed: Binding[] = [];
    const now = this.now();
    for (const [aor, keys] of byAor) {
      const out = await this.store.update(aor, now, (current) => {
        const gone = current.filter((b) => keys.has(b.key) && onFlow(b, flow.source) && Object.keys(b.pushParams).length === 0);
        return { changes: gone.length === 0 ? null : { remove: gone.map((b) => b.key) }, result: null };
      });
      for (const b of out.expired) this.unbound(b, 'expired');
      for (const b of out.removed) {
        this.unbound(b, 'connection-closed');
        removed.push(b);
      }
    }
    return removed;
  }

  /** Stops the sweep timer; closes the store when the registrar made it. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.ownsStore) await this.store.close();
  }

  // ---- REGISTER processing ----

  private process(req: SipMessage, source: Source, now: number, ownPath: string | undefined): RegisterResult | Promise<RegisterResult> {
    // Step 1: the Request-URI names the registrar's domain. Accepted: a
    // served domain, or the address the request arrived on (phones set up
    // with the server's IP as "proxy" put it there).
    const ruri = req.requestUri;
    if (ruri === null) return fail(400, 'bad-request', 'malformed Request-URI');
    if (!ruri.isSip) return fail(416, 'unsupported-scheme', 'Request-URI must be a sip or sips URI');
    const ruriHost = canonicalHost(ruri);
    const ruriServed = this.domains.has(ruriHost);
    if (!ruriServed && ruriHost !== canonicalDomain(source.local.address)) {
      return fail(403, 'foreign-domain', 'domain not served here: ' + ruriHost);
    }

    // Step 2: Require is processed as a UAS does (§8.2.2.3).
    const require = req.tokens('require');
    const unsupported = require.length === 0 ? require : require.filter(notOurs);
    if (unsupported.length > 0) {
      return fail(420, 'bad-extension', 'unsupported extension', [['Unsupported', unsupported.join(', ')]]);
    }

    // Step 5: the AOR, from To.
    const to = req.toOrNull();
    if (to === null || !to.uriIsValid) return fail(400, 'bad-request', 'malformed To header');
    const toUri = to.uri;
    if (!toUri.isSip) return fail(404, 'not-found', 'To must be a sip or sips URI');
    const toHost = canonicalHost(toUri);
    if (!this.domains.has(toHost)) return fail(404, 'not-found', 'domain not served here: ' + toHost);
    if (ruriServed && toHost !== ruriHost) return fail(404, 'not-found', 'To domain differs from the Request-URI domain');
    if (toUri.user === null || toUri.user === '') return fail(404, 'not-found', 'To URI has no user part');
    const aor = aorOf(toUri);
    const scheme = toUri.scheme === 'sips' ? 'sips' : 'sip';

    // Step 6: `Contact: *` only alone and with Expires: 0.
    const contactLines = req.getAll('contact');
    const star = contactLines.includes('*');
    if (star) {
      if (contactLines.length !== 1) return fail(400, 'bad-request', 'Contact: * with other contacts', [], aor);
      if (req.expires() !== 0) return fail(400, 'bad-request', 'Contact: * requires Expires: 0', [], aor);
    }

    // Steps 6-7, the part that needs no stored state: read and check every
    // Contact, grant expiries. The request succeeds or fails as a whole.
    const granted: GrantedContact[] = [];
    if (!star) {
      const contacts = req.contacts();
      if (contacts === null) return fail(400, 'bad-request', 'malformed Contact header', [], aor);
      const headerExpires = req.expires();
      let tooBrief = false;
      for (let i = 0; i < contacts.length; i++) {
        const intent = readContact(contacts[i], headerExpires, this.config.defaultExpires);
        if ('problem' in intent) return fail(400, 'bad-request', intent.problem, [], aor);
        if (intent.uri.params.has('gr') && this.domains.has(canonicalHost(intent.uri))) {
          return fail(403, 'forbidden', 'a GRUU cannot be registered as a Contact', [], aor);
        }
        const expires = this.grant(intent.requested, source, hasAny(intent.pushParams));
        if (expires < 0) tooBrief = true;
        else granted.push({ intent, expires });
      }
      if (tooBrief) {
        return fail(423, 'interval-too-brief', 'expiry shorter than ' + this.config.minExpires + ' s', [['Min-Expires', String(this.config.minExpires)]], aor);
      }
    }

    const pathAddrs = req.addresses('path');
    if (pathAddrs === null) return fail(400, 'bad-request', 'malformed Path header', [], aor);
    const path = pathAddrs.length === 0 ? NO_PATH : pathAddrs.map((a) => a.raw);
    const supported = req.tokens('supported');
    // RFC 5626 §6. Portier is the device's first hop when the REGISTER has
    // one Via and no Path: the connection it came on is the device's flow.
    const edge = path.length === 0 && req.viaOrNull()?.length === 1;
    const wantsOutbound = supported.includes('outbound') || require.includes('outbound');
    let flowContacts = false;
    for (let i = 0; i < granted.length; i++) if (granted[i].intent.regId !== null) flowContacts = true;
    // Through an edge proxy, outbound needs that proxy's `ob` in the Path it added (the bottom one).
    const firstHopOutbound = edge || (pathAddrs.length > 0 && pathAddrs[pathAddrs.length - 1].uri.params.has('ob'));
    if (flowContacts && !firstHopOutbound && require.includes('outbound')) {
      return fail(439, 'bad-extension', 'the first hop does not support outbound', [], aor);
    }
    const outbound: OutboundReply | null =
      wantsOutbound && flowContacts && firstHopOutbound
        ? { flowTimer: edge && STREAM_PROTOCOLS.has(source.protocol) ? this.config.flowTimer : null }
        : null;

    // No Contact: a query (§10.2.3); nothing changes.
    const store = this.store;
    if (!star && granted.length === 0) {
      if (store.getNow !== undefined) return this.success('fetched', aor, scheme, store.getNow(aor, now), now, supported, path, outbound);
      return store.get(aor, now).then((bindings) => this.success('fetched', aor, scheme, bindings, now, supported, path, outbound));
    }

    const cseq = req.cseq().seq;
    const callId = req.callId();
    const decide = (current: readonly Binding[]): UpdateDecision<Plan> => {
      const plan = planRegister(current, star ? 'star' : granted, {
        aor,
        callId,
        cseq,
        now,
        source,
        userAgent: req.get('user-agent') ?? null,
        path: ownPath === undefined ? path : [ownPath, ...path],
        issueTempGruu: supported.includes('gruu'),
        maxTempGruus: this.config.maxTempGruus,
        maxBindings: this.config.maxBindingsPerAor,
        mintToken: mintTempGruuToken,
      });
      return { changes: plan.ok ? plan.changes : null, result: plan };
    };
    const r: Registering = { aor, scheme, cseq, now, source, edge, supported, path, outbound };
    if (store.updateNow !== undefined) return this.updated(store.updateNow(aor, now, decide), r);
    return store.update(aor, now, decide).then((outcome) => this.updated(outcome, r));
  }

  /** §10.3 steps 7-8 once the store has decided: events, counters, the flow index, the 200. */
  private updated(outcome: UpdateOutcome<Plan>, r: Registering): RegisterResult {
    const { aor, cseq, source } = r;
    const expired = outcome.expired;
    for (let i = 0; i < expired.length; i++) this.unbound(expired[i], 'expired');
    const plan = outcome.result;
    if (!plan.ok) {
      if (plan.reason === 'too-many') return fail(403, 'forbidden', 'more than ' + this.config.maxBindingsPerAor + ' contacts', [], aor);
      // §10.3 step 7 says the request fails; 500 is what RFC 3261 registrars
      // send. No Retry-After: nothing is overloaded, and the UA's next
      // REGISTER carries a higher CSeq anyway.
      return fail(500, 'stale', 'CSeq ' + cseq + ' not higher than ' + plan.binding.cseq + ' for this Call-ID', [], aor);
    }
    const removals = plan.removals;
    for (let i = 0; i < removals.length; i++) this.unbound(removals[i].binding, removals[i].cause);
    const flowBound = r.edge && STREAM_PROTOCOLS.has(source.protocol) && source.connectionId > 0;
    const writes = plan.writes;
    for (let i = 0; i < writes.length; i++) {
      const { binding, previous } = writes[i];
      if (previous === null) this.stats.bindingsAdded++;
      else this.stats.bindingsRefreshed++;
      this.unindexFlow(binding.aor, binding.key);
      if (flowBound) this.indexFlow(binding);
      this.emit('registered', binding, previous);
    }
    return this.success('registered', aor, r.scheme, outcome.bindings, r.now, r.supported, r.path, r.outbound);
  }

  /**
   * Seconds granted for a Contact asking for `requested`; 0 removes; -1 is
   * too brief (423). The stream cap keeps a UA that sends no keep-alives
   * refreshing (so talking) within the idle timeout; a binding with push
   * parameters is exempt: it outlives its connection on purpose, for a push
   * to wake the app.
   */
  private grant(requested: number, source: Source, push: boolean): number {
    if (requested === 0) return 0;
    // §10.3 step 7 allows 423 only for an interval under one hour.
    if (requested < this.config.minExpires && requested < 3600) return -1;
    let e = Math.min(requested, this.config.maxExpires);
    if (this.config.maxStreamExpires !== null && !push && STREAM_PROTOCOLS.has(source.protocol)) e = Math.min(e, this.config.maxStreamExpires);
    return e;
  }

  private indexFlow(b: Binding): void {
    const id = b.source.connectionId;
    let flow = this.flows.get(id);
    if (flow === undefined) this.flows.set(id, (flow = { source: b.source, refs: new Map() }));
    const ref = bindingRef(b.aor, b.key);
    flow.refs.set(ref, b.aor);
    this.flowOf.set(ref, id);
  }

  private unindexFlow(aor: string, key: string): void {
    if (this.flowOf.size === 0) return; // nothing registered over a stream here: no key to build
    const ref = bindingRef(aor, key);
    const id = this.flowOf.get(ref);
    if (id === undefined) return;
    this.flowOf.delete(ref);
    const flow = this.flows.get(id);
    if (flow === undefined) return;
    flow.refs.delete(ref);
    if (flow.refs.size === 0) this.flows.delete(id);
  }

  /** §10.3 step 8: the 200 lists every current binding. `supported`: the REGISTER's option tags. */
  private success(
    outcome: RegisterOutcome,
    aor: string,
    scheme: 'sip' | 'sips',
    bindings: Binding[],
    now: number,
    supported: readonly string[],
    path: readonly string[],
    outbound: OutboundReply | null,
  ): RegisterResult {
    sortBindings(bindings);
    const headers: Array<[string, string]> = [];
    const withGruu = supported.includes('gruu');
    for (let i = 0; i < bindings.length; i++) {
      const b = bindings[i];
      headers.push(['Contact', formatContact(b, now, withGruu ? this.gruusOf(b, scheme) : null)]);
    }
    // RFC 3327 §5.3: the Path the registrar stored goes back to the UA, which
    // asked for it with Supported: path.
    if (path.length > 0 && supported.includes('path')) headers.push(['Path', path.join(', ')]);
    // RFC 5626 §6: the UA learns that its flow is in use (and, over a
    // stream straight to Portier, how often to keep it alive).
    if (outbound !== null) {
      headers.push(['Require', 'outbound']);
      if (outbound.flowTimer !== null) headers.push(['Flow-Timer', String(outbound.flowTimer)]);
    }
    headers.push(['Supported', SUPPORTED]);
    headers.push(['Date', httpDate(now)]);
    return { status: 200, reason: reasonPhrase(200), headers, outcome, detail: null, aor, bindings };
  }

  /** RFC 5627: the pub-gruu and the newest temp-gruu of an instance binding. */
  private gruusOf(b: Binding, scheme: 'sip' | 'sips'): ContactGruus | null {
    if (b.gruu === null) return null;
    const t = b.gruu.temp;
    return {
      pub: pubGruuUri(scheme, b.aor, b.gruu.pub),
      temp: t.length === 0 ? null : tempGruuUri(scheme, domainOfAor(b.aor), t[t.length - 1]),
    };
  }

  private unbound(b: Binding, cause: UnbindCause): void {
    this.unindexFlow(b.aor, b.key);
    if (cause === 'expired') this.stats.bindingsExpired++;
    else this.stats.bindingsRemoved++;
    this.emit('unregistered', b, cause);
  }

  private async periodicSweep(): Promise<void> {
    if (this.sweeping) return; // a slow store: do not pile sweeps up
    this.sweeping = true;
    try {
      await this.sweep();
    } catch {
      this.stats.sweepErrors++;
    } finally {
      this.sweeping = false;
    }
  }
}

/** Whether a record has a property (Object.keys without the array). */
function hasAny(r: Readonly<Record<string, unknown>>): boolean {
  for (const k in r) if (Object.prototype.hasOwnProperty.call(r, k)) return true;
  return false;
}

/** What a 200 says about RFC 5626 outbound: Require: outbound, and the Flow-Timer when there is one. */
interface OutboundReply {
  flowTimer: number | null;
}

/** The response for a RegisterResult, ready for the transaction layer. */
export function buildRegisterResponse(req: SipMessage, result: RegisterResult, opts: { toTag?: string } = {}): SipMessage {
  return buildResponse(req, result.status, { reason: result.reason, headers: result.headers, toTag: opts.toTag });
}

/** Highest q first; among equals, the most recently refreshed (the likeliest to answer). */
export function sortBindings(bindings: Binding[]): Binding[] {
  return bindings.sort((a, b) => b.q - a.q || b.updatedAt - a.updatedAt);
}

function fail(status: number, outcome: RegisterOutcome, detail: string, headers: Array<[string, string]> = [], aor: string | null = null): RegisterResult {
  return {
    status,
    reason: reasonPhrase(status),
    headers: [...headers, ['Warning', '399 portier ' + quote(detail)]],
    outcome,
    detail,
    aor,
    bindings: [],
  };
}

/** An AOR given as text: canonicalised when it parses as a SIP URI. */
function canonicalAorText(aor: string): string | null {
  const uri = parseUri(aor);
  return uri === null || !uri.isSip ? null : aorOf(uri);
}

function checkConfig(c: RegistrarConfig): RegistrarConfig {
  const int = (name: keyof RegistrarConfig, v: number, min: number) => {
    if (!Number.isInteger(v) || v < min) throw new RangeError(`registrar ${name} must be an integer >= ${min} (got ${v})`);
  };
  int('minExpires', c.minExpires, 1);
  int('maxExpires', c.maxExpires, 1);
  int('defaultExpires', c.defaultExpires, 1);
  int('maxBindingsPerAor', c.maxBindingsPerAor, 1);
  int('maxTempGruus', c.maxTempGruus, 1);
  int('sweepIntervalMs', c.sweepIntervalMs, 0);
  if (c.minExpires > c.maxExpires) throw new RangeError('registrar minExpires must not exceed maxExpires');
  if (c.defaultExpires < c.minExpires || c.defaultExpires > c.maxExpires) {
    throw new RangeError('registrar defaultExpires must lie between minExpires and maxExpires');
  }
  if (c.flowTimer !== null) int('flowTimer', c.flowTimer, 1);
  if (c.maxStreamExpires !== null) {
    int('maxStreamExpires', c.maxStreamExpires, 1);
    if (c.maxStreamExpires < c.minExpires) throw new RangeError('registrar maxStreamExpires must not be below minExpires');
  }
  if (c.domains.length === 0) throw new RangeError('registrar needs at least one domain');
  return { ...c, domains: [...c.domains] };
}
