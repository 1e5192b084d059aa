// The running server: configuration in, the layers wired together, out.
//
//   transport (UDP, TCP) -> parse and check -> transaction layer -> proxy
//                                                                 -> registrar (REGISTER)
//
// Malformed requests are answered here, statelessly (400/413/505), or
// dropped and counted; everything well formed goes to the transactions.

import { hkdfSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { LRUCache } from 'lru-cache';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { createSecureContext } from 'node:tls';
import type { Config } from './config/index.js';
import { logRegistration, safeContact, type Logger } from './log.js';
import {
  buildResponse,
  buildResponseBytes,
  ownerOf,
  parseAndValidate,
  parseUri,
  SipParseError,
  stampedVia,
  type ParseLimits,
  type SipMessage,
  type Uri,
} from './sip/index.js';
import {
  TransportLayer,
  type Destination,
  type Endpoint,
  type Source,
  type TlsSettings,
  type TransportLimits,
  type WorkerSeat,
  type WsSettings,
} from './transport/index.js';
import { OverloadControl, TransactionLayer, responseDestination, type TransactionUser } from './transaction/index.js';
import { Registrar, aorOf, buildRegisterResponse, flowTimerFor, type Binding, type RegisterResult } from './registrar/index.js';
import { Proxy, flowDestination, type Location, type LocationResult, type ProxyObserver, type Target, type Waker, type WakeHandle } from './proxy/proxy.js';
import { HANDOFF_PARAM, pathUri, type RouteSigner } from './proxy/route.js';
import { SelfAddresses } from './proxy/self.js';
import { DeviceCensus, MetricsHttpServer, SipCounters, type PortierRegistry, createRegistry, renderStatus, type Health, type RefusalReason } from './metrics/index.js';
import { openStore, type OpenedStore } from './storage/index.js';
import { AddressSet, Authenticator, DigestAuthenticator, SourceGuard, accountFor, isScanner, loadUsersFile, type Accounts, type Ban } from './auth/index.js';
import { DoorRouter, RoutingNames } from './routing/index.js';
import { PushService, RegisterWakeup, parsePushTarget, targetKey, type PushTarget, type RingStopReason } from './push/index.js';
import { version } from './version.js';
import { ProvisioningServer } from './provisioning/index.js';

/** Methods Portier answers itself or routes. */
export const ALLOWED_METHODS = 'INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, MESSAGE, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER';

/** Option tags Portier supports. */
export const SUPPORTED_OPTIONS = 'path, gruu, outbound';

/** Counters of what the server did with what it received; read by tests and metrics. */
export interface ServerStats {
  requests: number;
  responses: number;
  /** Messages refused by the parser, by the response sent: '400', '413', '505', or 'drop'. */
  parseErrors: Record<string, number>;
  /** Responses with no transaction to go to. */
  strayResponses: number;
  /** Requests answered locally, by status code. */
  answered: Record<string, number>;
}

export interface RunningServer {
  stop(): Promise<void>;
  /** Bound endpoints (ports resolved when the config asked for port 0). */
  listening(): Endpoint[];
  readonly stats: ServerStats;
  readonly transport: TransportLayer;
  /** Overload control: its level, its refusals (tests drive it with stop() and sample()). */
  readonly overload: OverloadControl;
  /** Where /metrics and /healthz are served (port resolved when 0 was asked); null when metrics.listen is off. */
  metricsAddress(): { address: string; port: number } | null;
  /** Where provisioning links are served (port resolved when 0 was asked); null without a provisioning: section. */
  provisioningAddress(): { address: string; port: number } | null;
  /**
   * SIGHUP: read the users file again; given `next` (the configuration file
   * loaded again, keys that need a restart set back to their running values:
   * src/cli/reload.ts), also apply what changes live. Throws, changing
   * nothing, when a file cannot be read or a certificate does not load.
   */
  reload(next?: Config): void;
}

/** Receive buffer asked for on UDP sockets: 8 MiB. */
const UDP_RECEIVE_BUFFER = 8 * 1024 * 1024;

export function transportLimits(config: Config): TransportLimits {
  return {
    maxMessageSize: config.limits.messageSize,
    maxConnections: config.limits.connections,
    maxConnectionsPerSource: config.limits.connectionsPerSource,
    idleTimeoutMs: config.limits.idleTimeout * 1000,
    firstMessageTimeoutMs: config.limits.firstMessageTimeout * 1000,
    // Node's default (about 208 KiB) overflows near 2,000 calls/s or during
    // any pause of the event loop; the kernel caps this at net.core.rmem_max.
    udpRecvBufferSize: UDP_RECEIVE_BUFFER,
  };
}

/** The `tls:` section with its files read; undefined without one (outbound TLS then trusts the system store). */
export function tlsSettings(config: Config): TlsSettings | undefined {
  const tls = config.tls;
  if (tls === null) return undefined;
  const read = (key: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`${config.source}: tls.${key}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
  };
  const out: TlsSettings = {
    cert: read('cert', tls.cert),
    key: read('key', tls.key),
    verifyClients: tls.verifyClients,
    minVersion: tls.minVersion,
  };
  if (tls.ca !== null) out.ca = read('ca', tls.ca);
  return out;
}

/** The `websocket:` section as the ws/wss listeners take it. */
export function wsSettings(config: Config): WsSettings {
  const w = config.websocket;
  const out: WsSettings = { pingIntervalMs: w.pingInterval * 1000 };
  if (w.path !== null) out.path = w.path;
  if (w.maxPayload > 0) out.maxPayload = w.maxPayload;
  return out;
}

export function parseLimits(config: Config): ParseLimits {
  return {
    maxMessageSize: config.limits.messageSize,
    maxHeaders: config.limits.headers,
    maxLineLength: config.limits.lineLength,
  };
}

class Server implements RunningServer {
  readonly stats: ServerStats = { requests: 0, responses: 0, parseErrors: {}, strayResponses: 0, answered: {} };
  readonly transport: TransportLayer;
  readonly transactions: TransactionLayer;
  readonly registrar: Registrar;
  proxy!: Proxy;
  /** Per-method and per-transport counts read by the metrics on scrape. */
  readonly counters = new SipCounters();
  /** The proxy's timing observer; the metrics registry points it at its histograms. */
  private readonly timings: ProxyObserver = { callSetup() {}, processing() {}, pushToRegister() {} };
  private limits: ParseLimits;
  /** Per-source rate limits and bans; applies with or without authentication. */
  readonly guard: SourceGuard;
  /** Null when authentication is off. */
  readonly authenticator: Authenticator | null = null;
  private accounts: Accounts | null = null;
  /** The authenticator's options, whose trusted sources a reload replaces. */
  private authOptions: { trusted: AddressSet } | null = null;
  /** Ring groups, aliases, policy and routes; a reload replaces it (the proxy asks through a stable wrapper). */
  private router: DoorRouter | null = null;
  /** Null when no push provider is configured. */
  readonly push: PushService | null = null;
  /** push.register-wakeup: silent pushes before bindings expire; null when off. */
  private readonly wakeup: RegisterWakeup | null = null;
  readonly refused: Record<RefusalReason, number> = { rate_limit: 0, banned: 0, scanner: 0 };
  /** Refuses new requests with 503 while they wait too long in the UDP receive queue (overload: in the config). */
  readonly overload: OverloadControl;
  /** Refusals when the overload began: the warning at its end says how many. */
  private refusedBefore = 0;
  private overloadSince = 0;
  private http: MetricsHttpServer | null = null;
  private registry: PortierRegistry | null = null;
  private provisioning: ProvisioningServer | null = null;
  private state: 'new' | 'running' | 'stopping' = 'new';
  private startedAt = 0;
  private readonly version = version();

  constructor(
    private config: Config,
    private readonly log: Logger,
    private readonly storage: OpenedStore,
    /** One worker of several (config `workers`); undefined: this process alone. */
    private readonly seat?: ServerSeat,
  ) {
    this.limits = parseLimits(config);
    this.transport = new TransportLayer(
      config.listen.map((l) => ({ protocol: l.protocol, host: l.host, port: l.port })),
      transportLimits(config),
      {
        onMessage: (data, source) => this.onMessage(data, source),
        onSendError: (dest, err) => {
          this.log.debug({ dest: `${dest.protocol}:${dest.address}:${dest.port}`, err: err.message }, 'send failed');
          this.transactions.transportError(dest, err);
        },
        // A device's stream connection closed: its bindings go (those with push parameters stay, to be woken).
        onConnectionClosed: (id) => {
          this.registrar.connectionClosed(id).catch((err: unknown) => this.log.warn({ err: (err as Error).message, connectionId: id }, 'cannot remove the bindings of a closed connection'));
        },
      },
      {
        warn: (obj, msg) => this.log.warn(obj, msg),
        debug: (obj, msg) => this.log.debug(obj, msg),
      },
      tlsSettings(config),
      wsSettings(config),
      // A call's every message goes to the worker its Call-ID hashes to; one without a Call-ID stays where it was read.
      seat === undefined ? undefined : { seat, owner: (data) => ownerOf(data, seat.count, seat.index) },
    );
    this.registrar = new Registrar(
      {
      domains: config.domains,
      minExpires: config.registrar.minExpires,
      maxExpires: config.registrar.maxExpires,
      defaultExpires: config.registrar.defaultExpires,
      // A binding on a TCP flow must not outlive the flow: the idle timeout
      // closes a silent connection, so registrations over TCP are refreshed
      // within it (src/transport/types.ts, DEFAULT_IDLE_TIMEOUT_MS).
      maxBindingsPerAor: config.registrar.maxBindings,
      maxStreamExpires: Math.max(config.registrar.minExpires, Math.min(config.registrar.maxExpires, Math.floor(config.limits.idleTimeout))),
      // RFC 5626 keep-alives must come before the idle timeout closes the connection.
      flowTimer: flowTimerFor(config.limits.idleTimeout),
      },
      { store: storage.store },
    );
    // One info line per registration change (README, Operations: logs).
    this.registrar.on('registered', (b, previous) => logRegistration(this.log, previous === null ? 'added' : 'refreshed', b));
    this.registrar.on('unregistered', (b, cause) => logRegistration(this.log, cause === 'expired' ? 'expired' : 'removed', b, cause));
    const user: TransactionUser = {
      onRequest: (tx, req) => this.proxy.onRequest(tx, req),
      onCancel: (ctx, inv, req, answered) => this.proxy.onCancel(ctx, inv, req, answered),
      onAck: (req, source) => this.proxy.onAck(req, source),
      onStrayResponse: (res, source, upstream) => {
        // A 2xx to a call that ended (upstream given) matched a transaction's record: not a stray.
        if (upstream === undefined) this.stats.strayResponses++;
        this.proxy.onStrayResponse(res, source, upstream);
      },
      onServerTerminated: (tx) => {
        // The final response this transaction sent (0 or 1xx: it never got one).
        if (tx.status >= 200) this.counters.response(tx.method, tx.status);
        this.proxy.onServerTerminated(tx);
      },
    };
    this.overload = new OverloadControl({
      retryAfter: config.overload.retryAfter,
      t1: config.timers.t1,
      queueDelay: () => this.transport.takeUdpQueueDelay(),
      probe: () => this.transport.probeUdp(),
      onRefused: (method) => this.counters.response(method, 503),
      onChange: (overloaded, o) => this.overloadChanged(overloaded, o),
    });
    this.transactions = new TransactionLayer({ transport: this.transport, user, timers: config.timers, overload: this.overload });
    const p = config.push;
    if (p.fcm !== null || p.apns !== null || p.generic !== null) {
      this.push = new PushService(p, {
        log: { info: (o, m) => this.log.info(o, m), warn: (o, m) => this.log.warn(o, m), debug: (o, m) => this.log.debug(o, m) },
        // The provider says the app is gone (uninstalled, token rotated): stop pushing to it.
        onUnregistered: (ev) => {
          if (ev.binding === undefined) return;
          this.log.warn({ aor: ev.binding.aor, provider: ev.provider, reason: ev.reason }, 'push token no longer valid: push parameters dropped from the binding');
          this.registrar.dropPushParams(ev.binding.aor, ev.binding.key, (params) => samePushTarget(params, ev.target)).catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'cannot drop push parameters'));
        },
      });
      if (p.registerWakeup !== null) {
        const wakeup = new RegisterWakeup(this.push, p.registerWakeup * 1000);
        this.registrar.on('registered', (b) => wakeup.registered(b));
        this.registrar.on('unregistered', (b) => wakeup.unregistered(b));
        this.wakeup = wakeup;
      }
    }
    const security = config.security;
    this.guard = new SourceGuard({ rate: security.rate, authFailures: security.authFailures, exempt: security.exempt, dropScanners: security.dropScanners });

    const auth = config.auth;
    if (auth !== null) {
      this.accounts = this.readAccounts(auth.users, true);
      const authOptions = {
        digest: new DigestAuthenticator({ realm: auth.realm, algorithms: auth.algorithms, nonceLifetimeMs: auth.nonceLifetime * 1000, secret: subkey(storage.secret, 'digest nonces') }),
        accounts: () => this.accounts as Accounts,
        trusted: new AddressSet(auth.trusted),
        guard: this.guard,
        onBan: (ban: Ban, user: string | null) => {
          this.log.warn(
            { source: ban.address, seconds: Math.round((ban.until - Date.now()) / 1000), level: ban.level, user },
            'source banned after repeated authentication failures',
          );
          this.storage.bans?.save(ban).catch((err: unknown) => this.log.error({ err: (err as Error).message }, 'cannot store a ban'));
        },
      };
      this.authenticator = new Authenticator(authOptions);
      this.authOptions = authOptions;
    }
  }

  private overloadChanged(overloaded: boolean, o: OverloadControl): void {
    const total = o.refused.INVITE + o.refused.REGISTER + o.refused.other;
    if (overloaded) {
      this.refusedBefore = total;
      this.overloadSince = performance.now();
      this.log.warn(
        { queueDelayMs: Math.round(o.delay), messagesPerSecond: o.lastMessages * 10, utilization: Math.round(o.utilization * 1000) / 1000 },
        'overload: requests wait too long in the UDP receive queue; new ones are refused with 503 until it drains',
      );
    } else {
      this.log.warn({ refused: total - this.refusedBefore, seconds: Math.round(performance.now() - this.overloadSince) / 1000 }, 'overload over: new requests are taken again');
    }
  }

  /** The users file; problems are logged with their line number and the rest still loads. */
  private readAccounts(path: string, atStart: boolean): Accounts {
    const { accounts, problems } = loadUsersFile(path);
    for (const p of problems) this.log.warn({ file: path, line: p.line }, `users file: ${p.reason}`);
    const realm = this.config.auth?.realm;
    const other = accounts.list().filter((a) => a.realm !== realm);
    if (other.length > 0) {
      this.log.warn(
        { file: path, accounts: other.length, first: other[0].aor, realm: other[0].realm, expected: realm },
        'accounts hashed for another realm than auth.realm cannot authenticate: set their passwords again with portier user add --config',
      );
    }
    if (accounts.size === 0) this.log.warn({ file: path }, 'no accounts in the users file: nobody can register (add one with: portier user add AOR)');
    else if (!atStart) this.log.info({ file: path, accounts: accounts.size }, 'users file reloaded');
    return accounts;
  }

  /** Ring-group members that are no account never ring: say so at start and after a reload, not when a visitor waits. */
  private warnUnknownMembers(): void {
    const accounts = this.accounts;
    if (accounts === null) return;
    const names = new RoutingNames(this.config.domains, Object.keys(this.config.groups), this.config.aliases);
    for (const [group, g] of Object.entries(this.config.groups)) {
      for (const m of g.members) {
        // Nested groups are checked as groups; addresses elsewhere are not ours to know.
        const ref = names.resolve(m, group);
        if (ref.kind !== 'local') continue;
        const uri = parseUri(ref.uri);
        if (uri !== null && accountFor(accounts, uri) === undefined) this.log.warn({ group, member: ref.uri }, 'ring-group member is not an account in the users file: it will never ring');
      }
    }
  }

  /** The door-station router of a configuration; account kinds come from the accounts loaded now. */
  private makeRouter(config: Config): DoorRouter {
    const auth = config.auth !== null;
    return new DoorRouter(config, { kindOf: (uri) => (auth && this.accounts !== null ? accountFor(this.accounts, uri)?.kind : undefined) });
  }

  reload(next: Config = this.config): void {
    // Everything that can fail comes first, so that a failure changes nothing.
    const tls = next.tls === null ? undefined : tlsSettings(next);
    if (tls !== undefined) createSecureContext({ cert: tls.cert, key: tls.key, ca: tls.ca, minVersion: tls.minVersion });
    const router = this.router === null ? null : this.makeRouter(next);
    const trusted = next.auth === null ? null : new AddressSet(next.auth.trusted);
    const guardSettings = { rate: next.security.rate, authFailures: next.security.authFailures, exempt: next.security.exempt, dropScanners: next.security.dropScanners };
    let accounts = this.accounts;
    if (next.auth !== null && this.config.auth !== null) {
      try {
        accounts = this.readAccounts(next.auth.users, false);
      } catch (err) {
        throw new Error(`auth.users: cannot read ${next.auth.users}: ${(err as Error).message}`, { cause: err });
      }
    }
    // Apply. Certificates first: the only step that could still refuse.
    if (tls !== undefined && this.transport.reloadTls(tls)) {
      this.log.info({ cert: next.tls?.cert, key: next.tls?.key, ca: next.tls?.ca ?? undefined }, 'tls: new certificate loaded (new handshakes use it; open connections keep theirs)');
    }
    this.accounts = accounts;
    if (trusted !== null && this.authOptions !== null) this.authOptions.trusted = trusted;
    this.guard.reconfigure(guardSettings);
    this.overload.setRetryAfter(next.overload.retryAfter);
    if (this.state === 'running') {
      if (next.overload.enabled) this.overload.start();
      else this.overload.stop();
    }
    this.limits = parseLimits(next);
    if (router !== null) this.router = router;
    if (this.proxy !== undefined) this.proxy.options.ringTimeoutMs = next.proxy.ringTimeout * 1000;
    if (this.log.level !== next.log.level) this.log.level = next.log.level;
    this.config = next;
    this.warnUnknownMembers();
  }

  async start(): Promise<void> {
    // A restart does not lift a ban when the store keeps them.
    try {
      const kept = (await this.storage.bans?.load(Date.now())) ?? [];
      if (kept.length > 0) this.log.info({ bans: this.guard.restoreBans(kept) }, 'bans restored from storage');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot read the stored bans; starting without them');
    }
    await this.transport.start();
    // Several nodes on one shared store: each must tell the others where it is (calls to devices whose flow it holds).
    // Workers of one machine share its sockets: none needs to be reached through another (no Path).
    const nodeAddress = this.config.storage.type === 'redis' && this.seat === undefined ? advertisedAddress(this.transport.listening(), this.config.storage.nodeAddress) : null;
    const self = new SelfAddresses(this.config.domains, this.transport.listening(), nodeAddress === null ? [] : [nodeAddress]);
    const layer = this.transactions;
    const sender = {
      sendRequest: layer.sendRequest.bind(layer),
      send: (data: Buffer, dest: Destination) => this.transport.send(data, dest),
      wheel: layer.wheel,
      connected: (id: number) => this.transport.hasConnection(id),
    };
    const accounts = this.config.auth === null ? null : () => this.accounts as Accounts;
    const alive = (id: number) => this.transport.hasConnection(id);
    this.router = this.makeRouter(this.config);
    const location = new RegistrarLocation(this.registrar, accounts, alive);
    this.proxy = new Proxy(self, location, sender, this.transport.listening(), {
      // Read at each call: a reload may change push.call-timeout and push.response.
      waker: this.push === null ? undefined : pushWaker(this.push, () => this.config.push.callTimeout * 1000, () => this.config.push.response),
      gate: this.authenticator ?? undefined,
      routeKey: subkey(this.storage.secret, 'record-route tokens'),
      callsPerDoor: this.config.limits.callsPerDoor,
      resolver: this.config.resolver,
      relayToLoopback: this.config.security.relayToLoopback,
      ringTimeoutMs: this.config.proxy.ringTimeout * 1000,
      allow: ALLOWED_METHODS,
      supported: SUPPORTED_OPTIONS,
      onError: (err, req) => this.log.error({ err, method: req.method, callId: req.callId() }, 'routing failed'),
      // A stable wrapper: a reload swaps the router behind it.
      router: { route: (req, target, caller) => (this.router as DoorRouter).route(req, target, caller) },
      onCall: (call) => this.log.info({ call }, 'call'),
    });
    this.proxy.observer = this.timings;
    const cluster = nodeAddress === null ? null : clusterNode(this.transport.listening(), nodeAddress, this.proxy.signer, self);
    location.cluster = cluster;
    const p = this.config.push;
    const pns = [...(p.fcm !== null || p.generic !== null ? ['fcm'] : []), ...(p.apns !== null || p.generic !== null ? ['apns'] : [])];
    location.pns = this.push === null || pns.length === 0 ? null : pns.join(',');
    if (cluster !== null) this.log.info({ node: cluster.uri }, 'cluster node: other nodes reach devices registered here through this address');
    // Late forking: a device that registers while a call rings its AOR joins it (a woken app gets its call),
    // here or, with a shared store, on another node.
    // The target is only built for an AOR a call rings (it parses the Contact): not on every REGISTER.
    this.registrar.on('registered', (b) => {
      if (this.proxy.isWatched(b.aor)) this.proxy.onRegistered(bindingTarget(b, alive, cluster));
    });
    // Another node wrote an AOR a call rings: only the bindings that node has just written are news
    // (an unchanged binding replayed would end a push wake as if the device had registered).
    const heard = new LRUCache<string, number>({ max: 10_000, ttl: 120_000 });
    this.storage.changes?.listen((aor) => {
      if (!this.proxy.isWatched(aor)) return;
      this.registrar.lookup(aor).then(
        (bindings) => {
          const now = Date.now();
          for (const b of bindings) {
            const id = b.aor + '\n' + b.key;
            if (b.updatedAt < now - 10_000 || (heard.get(id) ?? -1) >= b.updatedAt) continue;
            heard.set(id, b.updatedAt);
            this.proxy.onRegistered(bindingTarget(b, alive, cluster));
          }
        },
        () => {},
      );
    });
    this.warnUnknownMembers();
    if (this.config.metrics.listen !== null) {
      const ops = this.metricsRegistry();
      const http = new MetricsHttpServer(this.config.metrics.listen, ops.registry, () => this.health(), { status: ops.status });
      try {
        await http.start();
      } catch (err) {
        ops.registry.close();
        await this.stopSip();
        throw err;
      }
      this.http = http;
      this.registry = ops.registry;
    }
    // With workers, the first serves provisioning links (the others are told when a password changed).
    if (this.config.provisioning !== null && (this.seat === undefined || this.seat.index === 0)) {
      // The users file is read again when a link made by `portier provision` (a new password) is used.
      let provisioning: ProvisioningServer;
      try {
        provisioning = new ProvisioningServer({ config: () => this.config, accounts: () => this.accounts, usersChanged: () => this.reloadUsersForProvisioning(), log: this.log });
        await provisioning.start();
      } catch (err) {
        await this.closeMetrics();
        await this.stopSip();
        throw err;
      }
      this.provisioning = provisioning;
      this.log.info({ provisioning: this.config.provisioning.baseUrl }, 'provisioning listening');
    }
    if (this.config.overload.enabled) this.overload.start();
    this.startedAt = performance.now();
    this.state = 'running';
    const metrics = this.metricsAddress();
    if (metrics !== null) this.log.info({ metrics: `http://${metrics.address.includes(':') ? `[${metrics.address}]` : metrics.address}:${metrics.port}/metrics` }, 'metrics listening');
    this.log.info({ listen: this.listening().map((e) => `${e.protocol}:${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}`), domains: this.config.domains }, 'listening');
  }

  async stop(): Promise<void> {
    // /healthz answers 503 from here until the HTTP listener closes.
    this.state = 'stopping';
    await this.stopSip();
    await this.closeMetrics();
    await this.provisioning?.close();
  }

  private async closeMetrics(): Promise<void> {
    await this.http?.close();
    this.registry?.close();
  }

  provisioningAddress(): { address: string; port: number } | null {
    return this.provisioning?.address() ?? null;
  }

  /** The users file only (a SIGHUP reads everything): `portier provision` changed a password. */
  private reloadUsersForProvisioning(): void {
    const auth = this.config.auth;
    if (auth === null) return;
    try {
      this.accounts = this.readAccounts(auth.users, false);
      this.warnUnknownMembers();
      this.seat?.usersChanged?.();
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'provisioning: cannot read the users file again');
    }
  }

  private async stopSip(): Promise<void> {
    this.overload.stop();
    this.transactions.stop();
    this.wakeup?.close();
    this.push?.close();
    await this.registrar.close();
    await this.transport.stop();
    await this.storage.store.close();
  }

  metricsAddress(): { address: string; port: number } | null {
    return this.http?.address() ?? null;
  }

  /** The Prometheus registry and the /status page; the device census follows the registrar's events from here on. */
  private metricsRegistry() {
    const protocols = [...new Set(this.config.listen.map((l) => l.protocol))];
    const census = new DeviceCensus({
      domains: this.config.domains,
      bindingCounts: () => this.registrar.bindingCounts(),
      lookup: (aor) => this.registrar.lookup(aor),
      accounts: () => this.accounts,
    });
    this.registrar.on('registered', (b) => census.registered(b));
    this.registrar.on('unregistered', (b, cause) => census.unregistered(b, cause));
    const status = async (): Promise<string> => {
      const [h, devices] = await Promise.all([this.health(), census.snapshot()]);
      return renderStatus({
        version: this.version,
        uptime: h.body.uptime as number,
        listeners: h.body.transports as string[],
        storage: this.config.storage.type,
        storageUp: this.storage.up(),
        ready: h.ready ?? { ok: h.ok, checks: {} },
        devices,
        auth: this.config.auth !== null,
        now: Date.now(),
      });
    };
    const registry = createRegistry({
      counters: this.counters,
      protocols,
      domains: this.config.domains,
      version: this.version,
      transport: this.transport,
      transactions: this.transactions,
      registrations: () => this.registrar.bindingCounts(),
      calls: () => (this.proxy === undefined ? null : { stats: this.proxy.stats, active: this.proxy.callTracker.stats() }),
      timings: this.timings,
      storageUp: () => this.storage.up(),
      security: {
        authFailures: () => this.authenticator?.failures ?? null,
        refused: this.refused,
        activeBans: () => this.guard.activeBans(),
        bansStarted: () => this.guard.stats.bansStarted,
      },
      devices: census,
      overload: { level: () => this.overload.level, queueDelay: () => this.overload.delay, refused: this.overload.refused },
      push:
        this.push === null
          ? undefined
          : {
              outcomes: () => (this.push as PushService).stats().outcomes,
              pending: () => {
                const st = (this.push as PushService).stats();
                return st.inFlight + st.queued;
              },
              answeredAfterPush: () => this.proxy?.answeredAfterPush ?? 0,
            },
    });
    return { registry, status };
  }

  /**
   * Liveness (`ok`): the SIP transports are up; storage trouble shows as registrations: null, not as a failure.
   * Readiness (`ready`, /readyz): every configured SIP listener bound, and the store reachable (up() and answering).
   */
  private async health(): Promise<Health> {
    const bound = this.listening();
    const up = this.state === 'running' && bound.length > 0;
    let registrations: number | null = null;
    let storeError: string | null = null;
    try {
      registrations = (await this.registrar.bindingCounts()).bindings;
    } catch (err) {
      storeError = err instanceof Error ? err.message : String(err);
    }
    const show = (e: Endpoint) => `${e.protocol}:${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}`;
    const unbound = this.config.listen.filter((l) => !bound.some((e) => e.protocol === l.protocol && (l.port === 0 || e.port === l.port)));
    const storageUp = this.storage.up() && storeError === null;
    const type = this.config.storage.type;
    const ready = {
      ok: false,
      checks: {
        listeners:
          this.state !== 'running'
            ? { ok: false, detail: this.state === 'new' ? 'starting' : 'stopping' }
            : unbound.length > 0
              ? { ok: false, detail: `not bound: ${unbound.map((l) => `${l.protocol}:${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`).join(', ')}` }
              : { ok: true, detail: bound.map(show).join(', ') },
        storage: storageUp
          ? { ok: true, detail: `${type} store up` }
          : { ok: false, detail: storeError === null ? `the ${type} store cannot be written` : `the ${type} store does not answer: ${storeError}` },
      },
    };
    ready.ok = ready.checks.listeners.ok && ready.checks.storage.ok;
    return {
      ok: up,
      ready,
      body: {
        uptime: this.state === 'new' ? 0 : Math.round(performance.now() - this.startedAt) / 1000,
        version: this.version,
        transports: this.listening().map((e) => `${e.protocol}:${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}`),
        registrations,
        storage: this.storage.up() ? 'up' : 'down',
      },
    };
  }

  listening(): Endpoint[] {
    return this.transport.listening();
  }

  private onMessage(data: Buffer, source: Source): void {
    this.overload.arrived();
    const r = parseAndValidate(data, { transport: source.protocol, limits: this.limits });
    if (r instanceof SipParseError) {
      this.onParseError(r, source);
      return;
    }
    if (r.isRequest) {
      this.stats.requests++;
      this.counters.request(r.method, source.protocol);
      stampTopVia(r, source);
      if (this.refuse(r, source)) return;
    } else this.stats.responses++;
    // What overload control could relieve: not a flood the per-source limits already dropped.
    this.overload.received();
    // Per-message detail at debug only (levelVal: pino's number, the cheapest check); never the raw text.
    if (this.log.levelVal <= 20) this.logMessage(r, source);
    this.transactions.receive(r, source);
  }

  private logMessage(m: SipMessage, source: Source): void {
    const cseq = m.cseq();
    this.log.debug(
      {
        source: `${source.protocol}:${source.address.includes(':') ? `[${source.address}]` : source.address}:${source.port}`,
        ...(m.isRequest ? { method: m.method, uri: safeContact(m.uri) } : { status: m.status }),
        cseq: `${cseq.seq} ${cseq.method}`,
        callId: m.callId(),
        from: safeContact(m.from().uri.raw),
        to: safeContact(m.to().uri.raw),
      },
      m.isRequest ? 'sip request in' : 'sip response in',
    );
  }

  /**
   * Per-source protection before any SIP work: scanners and banned sources
   * are dropped without a word; a source over its rate gets 503 on a stream
   * (a UDP answer would feed a flood of forged sources) and silence on UDP.
   * Responses are never refused: calls already set up go on.
   */
  private refuse(req: SipMessage, source: Source): boolean {
    const guard = this.guard;
    if (this.config.security.dropScanners && isScanner(req.get('user-agent')) && !guard.isExempt(source.address)) {
      this.refused.scanner++;
      return true;
    }
    const admission = guard.admit(source.address);
    if (admission === 'ok') return false;
    if (admission === 'banned') {
      this.refused.banned++;
      return true;
    }
    this.refused.rate_limit++;
    if (source.protocol !== 'udp' && req.method !== 'ACK') {
      this.counters.response(req.method, 503);
      this.transport.send(buildResponseBytes(req, 503, { headers: [['Retry-After', '1']] }), responseDestination(req, source));
    }
    return true;
  }

  private onParseError(err: SipParseError, source: Source): void {
    const msg = err.message;
    // A response needs the request's Via, From, To, Call-ID and CSeq
    // (RFC 3261 §8.2.6.2); without them no client could match it: drop.
    const canAnswer =
      err.code !== 0 &&
      msg !== undefined &&
      msg.isRequest &&
      msg.method !== 'ACK' &&
      msg.topVia() !== null &&
      msg.has('from') &&
      msg.has('to') &&
      msg.has('call-id') &&
      msg.has('cseq');
    const key = canAnswer ? String(err.code) : 'drop';
    this.stats.parseErrors[key] = (this.stats.parseErrors[key] ?? 0) + 1;
    this.counters.parseError(source.protocol, key);
    this.log.debug({ source: `${source.protocol}:${source.address}:${source.port}`, code: err.code, reason: err.reason }, 'malformed message');
    if (!canAnswer) return;
    stampTopVia(msg, source);
    const headers: Array<[string, string]> = [['Warning', `399 portier "${err.reason}"`]];
    if (err.code === 505) headers.push(['Supported', SUPPORTED_OPTIONS]);
    // Stateless: a malformed request gets no transaction (RFC 3261 §16.3).
    this.stats.answered[err.code] = (this.stats.answered[err.code] ?? 0) + 1;
    this.counters.response(msg.method, err.code);
    this.transport.send(buildResponseBytes(msg, err.code, { headers }), responseDestination(msg, source));
  }
}

/** The registrar as the proxy's location service. */
class RegistrarLocation implements Location {
  /** Set once the proxy exists, when this node is one of several. */
  cluster: ClusterNode | null = null;
  /** The push services Portier can use (`fcm,apns`), for Feature-Caps; null without push. */
  pns: string | null = null;

  constructor(
    private readonly registrar: Registrar,
    /** With authentication, only accounts exist; null: every AOR of a served domain does. */
    private readonly accounts: (() => Accounts) | null,
    /** Whether a stream connection is still open. */
    private readonly alive: (connectionId: number) => boolean,
  ) {}

  register(req: SipMessage, source: Source): SipMessage | Promise<SipMessage> {
    // A trusted source registers without credentials, but only for an account.
    if (this.accounts !== null && accountFor(this.accounts(), req.to().uri) === undefined) return buildResponse(req, 404);
    // RFC 3327: this node puts itself on the binding's Path, naming its flow to the device,
    // so that a call reaching another node comes through this one.
    const c = this.cluster;
    const own = c === null ? undefined : '<' + c.uri + ';' + HANDOFF_PARAM + '=' + c.signer.handoffToken(flowDestination(source)) + '>';
    const result = this.registrar.registerNow(req, source, own);
    if (result instanceof Promise) return result.then((r) => this.registered(req, r));
    return this.registered(req, result);
  }

  private registered(req: SipMessage, result: RegisterResult): SipMessage {
    const res = buildRegisterResponse(req, result);
    // RFC 8599 §5: the proxy says which push services it can use for the device.
    if (this.pns !== null && res.status === 200 && (req.get('contact') ?? '').includes('pn-provider')) res.appendHeader('feature-caps', `*;+sip.pns="${this.pns}"`);
    return res;
  }

  async targets(uri: Uri): Promise<LocationResult> {
    if (uri.params.has('gr')) {
      // A GRUU names one device (RFC 5627 §8.4.1).
      const b = await this.registrar.resolveGruu(uri);
      if (b === null) return { kind: 'unknown' };
      if (b === 'expired') return { kind: 'unregistered' };
      return { kind: 'found', targets: [bindingTarget(b, this.alive, this.cluster)] };
    }
    if (this.accounts !== null && accountFor(this.accounts(), uri) === undefined) return { kind: 'unknown' };
    const aor = aorOf(uri);
    const bindings = await this.registrar.lookup(uri);
    if (bindings.length === 0) return { kind: 'unregistered', aor };
    return { kind: 'found', targets: oneFlowPerInstance(bindings.map((b) => bindingTarget(b, this.alive, this.cluster))), aor };
  }
}

/**
 * RFC 5626 §5.3: a device registered over several flows (reg-id 1 and 2,
 * one per network) is rung once, on one flow: an open one, the most
 * recently refreshed (bindings come refreshed-last-first from the store's
 * sort, see sortBindings). The others stay for the next call.
 */
function oneFlowPerInstance(targets: Target[]): Target[] {
  const seen = new Map<string, Target>();
  const out: Target[] = [];
  for (const t of targets) {
    const key = t.key;
    const instance = key !== undefined && key.startsWith('i:') && !key.endsWith('|') ? key.slice(0, key.lastIndexOf('|')) : null;
    if (instance === null) {
      out.push(t);
      continue;
    }
    const kept = seen.get(instance);
    if (kept === undefined) {
      seen.set(instance, t);
      out.push(t);
    } else if (kept.alive === false && t.alive !== false) {
      // A dead flow gives way to an open one of the same device.
      out[out.indexOf(kept)] = t;
      seen.set(instance, t);
    }
  }
  return out;
}

/** This node among several sharing one store (storage type redis). */
interface ClusterNode {
  /** Where the other nodes reach this one: `sip:ADDR:PORT;transport=tcp;lr`. */
  uri: string;
  signer: RouteSigner;
  self: SelfAddresses;
}

function bindingTarget(b: Binding, alive: (connectionId: number) => boolean, cluster: ClusterNode | null): Target {
  let flow: Source | null = b.source;
  const path = [...b.path];
  const push = Object.keys(b.pushParams).length > 0 ? b.pushParams : null;
  // A stream flow that closed is an app asleep (or gone): only a push reaches it now.
  let open = flow === null || flow.protocol === 'udp' || flow.connectionId === undefined || alive(flow.connectionId);
  const top = cluster === null || path.length === 0 ? null : pathUri(path[0]);
  if (cluster !== null && top !== null && top.params.has(HANDOFF_PARAM)) {
    if (cluster.self.isSelfUri(top)) {
      // Registered here. Made by this very process: its flow; by the one before a restart: gone with it.
      path.shift();
      if (cluster.signer.handoffOf(top.params.get(HANDOFF_PARAM)).flow === null) open = false;
    } else {
      // Another node holds the flow (a connection, or a NAT binding only it can reach): through that node.
      flow = null;
      open = true;
    }
  }
  // A Contact that is a GRUU of another domain (stock Linhome behind its vendor's push gateway):
  // the call goes to that domain (RFC 3263), not down the connection the REGISTER came on.
  const contact = parseUri(b.contact);
  if (contact !== null && contact.params.has('gr') && isIP(contact.hostname) === 0 && !contact.hostname.endsWith('.invalid')) {
    flow = null;
    open = true;
    // Not through the cluster node it registered on either: straight to that domain.
    while (path.length > 0 && path[0].includes(';' + HANDOFF_PARAM + '=')) path.shift();
  }
  return { uri: b.contact, q: b.q, flow, path, aor: b.aor, key: b.key, push, alive: open };
}

/** The address other nodes reach this one on: configured, else the listener's own, else this machine's first of that family. */
function advertisedAddress(listening: readonly Endpoint[], configured: string | null): string {
  if (configured !== null) return configured;
  const ep = nodeEndpoint(listening);
  if (ep.address !== '0.0.0.0' && ep.address !== '::') return ep.address;
  const v6 = ep.address === '::';
  for (const list of Object.values(networkInterfaces())) {
    // Not link-local (fe80::, 169.254.x: unusable by other machines without a scope).
    for (const ni of list ?? []) if (!ni.internal && (ni.family === 'IPv6') === v6 && !ni.address.startsWith('fe80:') && !ni.address.startsWith('169.254.')) return ni.address;
  }
  return v6 ? '::1' : '127.0.0.1';
}

/** The listener other nodes send to: TCP when there is one (reliable, any size), else UDP, else the first. */
function nodeEndpoint(listening: readonly Endpoint[]): Endpoint {
  return listening.find((e) => e.protocol === 'tcp') ?? listening.find((e) => e.protocol === 'udp') ?? listening[0];
}

function clusterNode(listening: readonly Endpoint[], address: string, signer: RouteSigner, self: SelfAddresses): ClusterNode {
  const ep = nodeEndpoint(listening);
  const host = address.includes(':') ? '[' + address + ']' : address;
  return { uri: `sip:${host}:${ep.port};transport=${ep.protocol};lr`, signer, self };
}

/** Whether a binding's push parameters still name the device token a provider refused. */
function samePushTarget(params: Readonly<Record<string, string>>, refused: PushTarget): boolean {
  const now = parsePushTarget(params);
  return now !== null && targetKey(now) === targetKey(refused);
}

/** The proxy's Waker on the push service: one ring (first push, repeats, last push) per woken device and call. */
function pushWaker(push: PushService, timeoutMs: () => number, provisional: () => number): Waker {
  return {
    get timeoutMs() {
      return timeoutMs();
    },
    get provisional() {
      return provisional();
    },
    wake(target: Target, req: SipMessage): WakeHandle | null {
      const pt = target.push ? parsePushTarget(target.push) : null;
      if (pt === null || !push.canPush(pt)) return null;
      const from = req.from();
      const call = {
        callId: req.callId(),
        fromUri: from.uri.raw,
        fromName: from.displayText ?? '',
        toUri: req.to().uri.raw,
        instance: target.key?.startsWith('i:') ? target.key.slice(2).split('|')[0] : '',
        binding: target.aor !== undefined && target.key !== undefined ? { aor: target.aor, key: target.key } : undefined,
      };
      if (req.method !== 'INVITE') {
        // A MESSAGE (or another request) to a sleeping app: one alert, held like a call.
        const sent = push.send({ ...call, target: pt, kind: 'message' }).then((o) => o.result === 'sent');
        return { mustDeliver: false, sent, stop() {} };
      }
      const ring = push.ring(pt, call);
      return {
        mustDeliver: ring.mode === 'voip',
        sent: ring.first.then((o) => o.result === 'sent'),
        stop: (reason) => void ring.stop(reason as RingStopReason).catch(() => {}),
      };
    },
  };
}

/** One key per use, derived from the server's secret (HKDF-SHA256). */
function subkey(secret: Buffer, use: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), 'portier ' + use, 32));
}

/** RFC 3261 §18.2.1, RFC 3581: note where the request really came from in its top Via. */
function stampTopVia(req: SipMessage, source: Source): void {
  const top = req.topVia();
  if (top === null) return;
  const v = stampedVia(top, source.address, source.port);
  if (v !== null) req.replaceFirstValue('via', v);
}

/** A worker's seat (src/cli/workers.ts), and whom to tell when a provisioning link changed the users file. */
export interface ServerSeat extends WorkerSeat {
  usersChanged?: () => void;
}

/** The JIT warm-up `portier run` does before startServer (config `overload.warm-up`). */
export { warmUp } from './warmup.js';

/** Starts Portier with a validated configuration (the contract src/cli/run.ts expects). */
export async function startServer(config: Config, log: Logger, seat?: ServerSeat): Promise<RunningServer> {
  const storage = await openStore(config.storage, { warn: (obj, msg) => log.warn(obj, msg) });
  let server: Server;
  try {
    server = new Server(config, log, storage, seat);
  } catch (err) {
    await storage.store.close();
    throw err;
  }
  log.info({ storage: config.storage.type, path: config.storage.type === 'sqlite' ? config.storage.path : undefined }, 'storage open');
  try {
    await server.start();
  } catch (err) {
    await storage.store.close().catch(() => {});
    throw err;
  }
  return server;
}
