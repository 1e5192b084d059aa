/**
 * Portier's Prometheus registry: the Node/process metrics (./runtime.ts) and the
 * portier_* metrics. Nothing here runs per message: every portier_* value is
 * read on scrape (collect callbacks) from the counters the layers keep anyway
 * (./counters.ts, TransportLayer.stats, TransactionLayer.stats(), ...).
 *
 * Labels are bounded sets: methods (unknown ones are "other"), code classes,
 * transports, the configured domains, fixed reasons. Never a user, Call-ID or
 * address.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Protocol } from '../config/types.js';
import type { BindingCounts } from '../registrar/index.js';
import type { CallCounts } from '../proxy/calls.js';
import type { TransactionStats } from '../transaction/index.js';
import type { DropReason, RelayStats, TransportStats } from '../transport/index.js';
import { CODE_CLASSES, METHODS, PARSE_ERROR_REASONS, type SipCounters } from './counters.js';
import { DEVICE_KINDS, DOOR_STATES, type DeviceSnapshot } from './devices.js';
import { PROTOCOLS } from '../config/types.js';
import { registerRuntimeMetrics } from './runtime.js';

/** The proxy's call outcome counters (a subset of ProxyStats). */
export interface CallStats {
  callResults: Record<'answered' | 'busy' | 'no_answer' | 'cancelled' | 'failed', number>;
}

/** Histograms the proxy feeds (through its observer). */
export interface CallTimings {
  callSetup(seconds: number): void;
  processing(seconds: number): void;
  /** A push went out to a sleeping device, which then registered: the delay, in seconds. */
  pushToRegister(seconds: number): void;
}

/** Push notifications (src/push counts, the proxy counts calls answered after one). */
export interface PushSources {
  outcomes(): ReadonlyArray<{ provider: string; result: string; reason: string; count: number }>;
  /** Pushes being sent and waiting to be. */
  pending(): number;
  answeredAfterPush(): number;
}

/** What the registry reads on scrape. */
export interface MetricsSources {
  counters: SipCounters;
  /** SIP transports configured (label values of per-transport series). */
  protocols: readonly Protocol[];
  /** Served domains: the only values of the domain label. */
  domains: readonly string[];
  version: string;
  transport: { readonly stats: TransportStats; connectionCount(protocol?: Protocol): number; readonly relayStats?: Readonly<RelayStats> | null };
  transactions: { stats(): TransactionStats };
  registrations(): Promise<BindingCounts>;
  /** Null before the proxy exists. */
  calls(): { stats: CallStats; active: CallCounts } | null;
  /** The proxy's observer: the registry points its methods at the histograms. */
  timings?: CallTimings;
  /** Authentication and per-source protection. */
  security?: SecuritySources;
  /** Whether the location store can be written (portier_storage_up). */
  storageUp?: () => boolean;
  /** Devices by kind and door stations by state (portier_registered_devices, portier_door_stations); see ./devices.ts. */
  devices?: { snapshot(): Promise<DeviceSnapshot> };
  /** Absent when no push provider is configured. */
  push?: PushSources;
  /** Overload control (src/transaction/overload.ts). */
  overload?: OverloadSources;
}

export interface OverloadSources {
  /** 0: every request taken; up to 1: every new one refused. */
  level(): number;
  /** How long a datagram waited in the UDP receive queue, ms (the last 100 ms window). */
  queueDelay(): number;
  /** Refusals since start, by class of request. */
  refused: Readonly<Record<'INVITE' | 'REGISTER' | 'other', number>>;
}

/** Requests refused before any SIP work, by reason. */
export type RefusalReason = 'rate_limit' | 'banned' | 'scanner';
export const REFUSAL_REASONS: readonly RefusalReason[] = ['rate_limit', 'banned', 'scanner'];

export interface SecuritySources {
  /** Failed authentications by reason (fixed set); null when authentication is off. */
  authFailures(): Readonly<Record<string, number>> | null;
  refused: Readonly<Record<RefusalReason, number>>;
  activeBans(): number;
  bansStarted(): number;
}

const STREAM_PROTOCOLS: readonly Protocol[] = ['tcp', 'tls', 'ws', 'wss'];

const DROP_REASONS: readonly DropReason[] = ['oversize', 'framing', 'connection-limit', 'timeout', 'stun', 'send-error', 'tls-handshake', 'ws-handshake'];

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * The registry behind /metrics. It renders one metric family per event-loop
 * turn: a whole scrape is ~3 ms of JavaScript on the development machine,
 * and in one piece it held every SIP socket that long, once per scrape (most
 * of bench/budget's setup p99 in the seventh session). Same text as
 * Registry.metrics() in the Prometheus format.
 */
export class PortierRegistry extends Registry {
  /** Renders in progress (two scrapes may overlap). */
  private rendering = 0;
  private readonly scrapeEnded: Array<() => void> = [];
  private readonly closers: Array<() => void> = [];

  override async metrics(): Promise<string> {
    if (this.contentType !== Registry.PROMETHEUS_CONTENT_TYPE) return super.metrics();
    this.rendering++;
    try {
      const parts: string[] = [];
      for (const metric of this.getMetricsAsArray()) {
        parts.push(await this.getSingleMetricAsString(metric.name));
        await nextTurn();
      }
      return parts.join('\n\n') + '\n';
    } finally {
      if (--this.rendering === 0) for (const f of this.scrapeEnded) f();
    }
  }

  /**
   * `compute` once per scrape for the collectors that share it (families are
   * collected one after another now, not concurrently); outside a scrape, at
   * every call.
   */
  perScrape<T>(compute: () => T): () => T {
    let memo: { value: T } | null = null;
    this.scrapeEnded.push(() => (memo = null));
    return () => {
      if (this.rendering === 0) return compute();
      memo ??= { value: compute() };
      return memo.value;
    };
  }

  /** Runs `f` on close(). */
  onClose(f: () => void): void {
    this.closers.push(f);
  }

  /** Stops what the runtime metrics keep running (event-loop monitor, GC observer). */
  close(): void {
    for (const f of this.closers.splice(0)) f();
  }
}

export function createRegistry(src: MetricsSources): PortierRegistry {
  const register = new PortierRegistry();
  register.onClose(registerRuntimeMetrics(register));
  const registers = [register];
  const protocols = PROTOCOLS.filter((p) => src.protocols.includes(p));
  const streams = protocols.filter((p) => STREAM_PROTOCOLS.includes(p));
  const c = src.counters;

  new Gauge({
    name: 'portier_build_info',
    help: 'Always 1; the version label names the running Portier.',
    labelNames: ['version'],
    registers,
    collect() {
      this.set({ version: src.version }, 1);
    },
  });

  new Counter({
    name: 'portier_sip_requests_total',
    help: 'SIP requests received that passed the parser, retransmissions included, by method (unknown methods as "other") and transport.',
    labelNames: ['method', 'transport'],
    registers,
    collect() {
      this.reset();
      METHODS.forEach((method, m) => {
        for (const transport of protocols) {
          this.inc({ method, transport }, c.requests[m * PROTOCOLS.length + PROTOCOLS.indexOf(transport)]);
        }
      });
    },
  });

  new Counter({
    name: 'portier_sip_responses_total',
    help:
      'Final SIP responses Portier sent or forwarded upstream, one per server transaction, counted when the ' +
      'transaction ends (a non-INVITE, and an INVITE\'s 2xx, as the final is sent; an INVITE\'s non-2xx over UDP once its ACK came and T4 passed, 5 s with the default timers), ' +
      'plus stateless answers to malformed requests and overload refusals (503, each copy of a retransmitted request); ' +
      'by code class and the method of the request. Provisional responses, retransmissions and stateless ' +
      'forwarding are not counted.',
    labelNames: ['code_class', 'method'],
    registers,
    collect() {
      this.reset();
      METHODS.forEach((method, m) => {
        CODE_CLASSES.forEach((codeClass, k) => {
          const n = c.responses[m * CODE_CLASSES.length + k];
          if (n > 0) this.inc({ code_class: codeClass, method }, n);
        });
      });
    },
  });

  new Counter({
    name: 'portier_sip_parse_errors_total',
    help: 'Messages refused by the SIP parser, by transport and reason: the response sent (400, 413, 505) or "drop" when none could be.',
    labelNames: ['transport', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const transport of protocols) {
        const p = PROTOCOLS.indexOf(transport);
        PARSE_ERROR_REASONS.forEach((reason, r) => {
          const n = c.parseErrors[p * PARSE_ERROR_REASONS.length + r];
          if (reason !== 'other' || n > 0) this.inc({ transport, reason }, n);
        });
      }
    },
  });

  new Gauge({
    name: 'portier_transactions_active',
    help: 'SIP transactions in progress, by kind (server_invite, server_non_invite, client_invite, client_non_invite).',
    labelNames: ['kind'],
    registers,
    collect() {
      const s = src.transactions.stats();
      this.set({ kind: 'server_invite' }, s.serverInvite);
      this.set({ kind: 'server_non_invite' }, s.serverNonInvite);
      this.set({ kind: 'client_invite' }, s.clientInvite);
      this.set({ kind: 'client_non_invite' }, s.clientNonInvite);
    },
  });

  new Gauge({
    name: 'portier_registrations_active',
    help: 'Live registration bindings (registered contacts), by served domain.',
    labelNames: ['domain'],
    registers,
    async collect() {
      this.reset();
      let byDomain: Record<string, number>;
      try {
        byDomain = (await src.registrations()).byDomain;
      } catch {
        return; // the store did not answer: no value rather than a wrong one
      }
      for (const domain of src.domains) this.set({ domain }, byDomain[domain] ?? 0);
    },
  });

  const census = src.devices;
  if (census !== undefined) {
    const snapshot = register.perScrape(() => census.snapshot());
    new Gauge({
      name: 'portier_registered_devices',
      help:
        'Live registration bindings by served domain and device kind: door (a door station) or phone. The kind is the account\'s ' +
        '(kind= in the users file); without an account, a known door-station maker in the User-Agent makes a door. ' +
        'The kinds of a domain add up to portier_registrations_active.',
      labelNames: ['domain', 'kind'],
      registers,
      async collect() {
        this.reset();
        const counts = (await snapshot()).devices;
        if (counts === null) return; // the store did not answer: no value rather than a wrong one
        for (const [domain, k] of counts) for (const kind of DEVICE_KINDS) this.set({ domain, kind }, k[kind]);
      },
    });
    new Gauge({
      name: 'portier_door_stations',
      help:
        'Door-station accounts (kind=door in the users file) by served domain and state: online with a live binding, ' +
        'offline without one. Their names are on /status. Zero without authentication.',
      labelNames: ['domain', 'state'],
      registers,
      async collect() {
        this.reset();
        const snap = await snapshot();
        if (snap.doorsUnknown > 0) return; // some doors could not be looked up: no value rather than a wrong one
        const n = new Map<string, number>();
        for (const d of snap.doors) n.set(d.domain + '\n' + d.state, (n.get(d.domain + '\n' + d.state) ?? 0) + 1);
        for (const domain of src.domains) for (const state of DOOR_STATES) this.set({ domain, state }, n.get(domain + '\n' + state) ?? 0);
      },
    });
  }

  new Gauge({
    name: 'portier_calls_active',
    help: 'Calls established through Portier (2xx to an INVITE forwarded) and not yet ended by a BYE.',
    registers,
    collect() {
      this.set(src.calls()?.active.active ?? 0);
    },
  });

  new Counter({
    name: 'portier_calls_total',
    help:
      'INVITEs Portier forwarded that ended, by result: answered (2xx), busy (486, 600, 603), no_answer (ring timeout, 408, 480), ' +
      'cancelled (by the caller), failed (every other final response). INVITEs Portier refused itself (404, 480, 403...) are not counted.',
    labelNames: ['result'],
    registers,
    collect() {
      this.reset();
      const r = src.calls()?.stats.callResults;
      for (const result of ['answered', 'busy', 'no_answer', 'cancelled', 'failed'] as const) this.inc({ result }, r?.[result] ?? 0);
    },
  });

  new Gauge({
    name: 'portier_connections_active',
    help: 'Open stream connections (connecting ones included), by transport.',
    labelNames: ['transport'],
    registers,
    collect() {
      for (const transport of streams) this.set({ transport }, src.transport.connectionCount(transport));
    },
  });

  new Counter({
    name: 'portier_transport_dropped_total',
    help:
      'Messages and connections the transport dropped, by reason: oversize, framing, connection-limit, timeout, ' +
      'stun (STUN not answered), send-error.',
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset();
      const d = src.transport.stats.dropped;
      for (const reason of DROP_REASONS) this.inc({ reason }, d[reason]);
    },
  });

  if (src.transport.relayStats) {
    const relay = src.transport.relayStats;
    new Counter({
      name: 'portier_worker_relay_total',
      help:
        'With workers: messages this worker read for another (forwarded) and read by another for this one (received), ' +
        'sends it asked of the worker holding the connection (sends), frames lost because that worker was not up (dropped).',
      labelNames: ['kind'],
      registers,
      collect() {
        this.reset();
        this.inc({ kind: 'forwarded' }, relay.forwarded);
        this.inc({ kind: 'received' }, relay.received);
        this.inc({ kind: 'sends' }, relay.sendsRelayed);
        this.inc({ kind: 'dropped' }, relay.dropped);
      },
    });
  }

  new Counter({
    name: 'portier_retransmissions_total',
    help: 'SIP messages sent again by the transactions: request retransmissions (timers A, E, G), responses resent to retransmitted requests, ACKs resent.',
    registers,
    collect() {
      this.reset();
      this.inc(src.transactions.stats().retransmissionsSent);
    },
  });

  new Counter({
    name: 'portier_retransmissions_absorbed_total',
    help: 'Retransmitted requests, responses and ACKs received that a transaction absorbed.',
    registers,
    collect() {
      this.reset();
      this.inc(src.transactions.stats().retransmissionsAbsorbed);
    },
  });

  const storageUp = src.storageUp;
  if (storageUp !== undefined) {
    new Gauge({
      name: 'portier_storage_up',
      help: '1 while the registration store (storage.type) can be written, 0 while it cannot (SQLite write errors, Redis unreachable).',
      registers,
      collect() {
        this.set(storageUp() ? 1 : 0);
      },
    });
  }

  const overload = src.overload;
  if (overload !== undefined) {
    new Gauge({
      name: 'portier_overload_level',
      help:
        'Overload control: 0 while every request is taken; above 0, new requests are refused with 503 (those other than INVITE ' +
        'with fraction min(1, 2 x level), INVITEs with max(0, 2 x level - 1)) because requests waited too long in the UDP receive queue.',
      registers,
      collect() {
        this.set(overload.level());
      },
    });
    new Gauge({
      name: 'portier_udp_queue_delay_seconds',
      help: 'How long a datagram waits in the UDP receive queue before Portier reads it (a probe each listener sends itself every 100 ms; the deepest queue). Overload control acts from 0.4 x T1 (0.2 s).',
      registers,
      collect() {
        this.set(overload.queueDelay() / 1000);
      },
    });
    new Counter({
      name: 'portier_overload_refused_total',
      help: 'New requests refused with 503 Service Unavailable by overload control, by method: INVITE, REGISTER, other.',
      labelNames: ['method'],
      registers,
      collect() {
        this.reset();
        for (const method of ['INVITE', 'REGISTER', 'other'] as const) this.inc({ method }, overload.refused[method]);
      },
    });
  }

  const sec = src.security;
  if (sec !== undefined) {
    new Counter({
      name: 'portier_auth_failures_total',
      help:
        'Authentications that did not succeed, by reason: wrong_password, unknown_user, identity_mismatch (credentials of one account, ' +
        'From/To of another), malformed, bad_nonce (not made by this process: forged, or from before a restart), replay, stale, banned. ' +
        'The first three spend the source\'s failure budget.',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        const f = sec.authFailures();
        if (f === null) return;
        for (const [reason, n] of Object.entries(f)) this.inc({ reason }, n);
      },
    });
    new Gauge({
      name: 'portier_bans_active',
      help: 'Source addresses banned now for repeated authentication failures (security.auth-failures).',
      registers,
      collect() {
        this.set(sec.activeBans());
      },
    });
    new Counter({
      name: 'portier_bans_total',
      help: 'Bans started since Portier started.',
      registers,
      collect() {
        this.reset();
        this.inc(sec.bansStarted());
      },
    });
    new Counter({
      name: 'portier_requests_refused_total',
      help:
        'Requests refused before any SIP processing, by reason: rate_limit (over security.rate: 503 on streams, dropped on UDP), ' +
        'banned (source banned: dropped), scanner (User-Agent of a scanning tool, security.drop-scanners: dropped).',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const reason of REFUSAL_REASONS) this.inc({ reason }, sec.refused[reason]);
      },
    });
  }

  const setup = new Histogram({
    name: 'portier_call_setup_seconds',
    help: 'Time from an INVITE reaching Portier to the first 2xx forwarded back to the caller (ringing included).',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60],
    registers,
  });
  const processing = new Histogram({
    name: 'portier_proxy_processing_seconds',
    help: 'Time a request spends inside Portier, from its arrival to its first copy forwarded.',
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
    registers,
  });
  const woken = new Histogram({
    name: 'portier_push_register_seconds',
    help: 'Time from the push sent to a sleeping app to its registration (late forking); apps that never register are not counted here.',
    buckets: [0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30],
    registers,
  });
  if (src.timings) {
    src.timings.callSetup = (seconds) => setup.observe(seconds);
    src.timings.processing = (seconds) => processing.observe(seconds);
    src.timings.pushToRegister = (seconds) => woken.observe(seconds);
  }

  const push = src.push;
  if (push !== undefined) {
    new Counter({
      name: 'portier_push_total',
      help:
        'Push notifications by provider (fcm, apns, generic), result (sent, unregistered: the provider says the token is gone, failed) ' +
        'and reason (empty when sent; e.g. unreachable, tls, timeout, queue-full, not-configured, http-5xx).',
      labelNames: ['provider', 'result', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const o of push.outcomes()) this.inc({ provider: o.provider, result: o.result, reason: o.reason }, o.count);
      },
    });
    new Gauge({
      name: 'portier_push_pending',
      help: 'Push notifications being sent or queued.',
      registers,
      collect() {
        this.set(push.pending());
      },
    });
    new Counter({
      name: 'portier_calls_answered_after_push_total',
      help: 'Calls answered by a device that a push woke up (late forking).',
      registers,
      collect() {
        this.reset();
        this.inc(push.answeredAfterPush());
      },
    });
  }

  return register;
}
