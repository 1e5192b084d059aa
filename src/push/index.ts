/**
 * Push notifications to sleeping apps: FCM HTTP v1, APNs, a generic HTTP gateway.
 *
 * What the proxy and registrar use:
 *
 *   readPushTarget(binding.pushParams)  PushTarget | {problem} | null   (parsePushTarget: PushTarget | null)
 *   isPushParam(name), PUSH_PARAM_NAMES  URI parameters to strip before forwarding to the device
 *   const push = new PushService(config.push, { log, onUnregistered })
 *                                      reads the files named in config.push (PushCredentialError if one is bad;
 *                                      loadConfig has checked them already)
 *   push.canPush(target)               a configured provider and a usable token exist for calls
 *   push.send({ target, kind, callId, fromUri, fromName, toUri, instance, binding })
 *                                      Promise<PushOutcome>: {result: sent|unregistered|failed, reason?, status?}
 *   const ring = push.ring(target, { callId, fromUri, fromName, toUri, instance, binding })
 *     ring.mode                        'voip' (APNs PushKit: iOS needs the INVITE, then a CANCEL, even if
 *                                      the call ended meanwhile), 'alert' (APNs visible notification, repeated
 *                                      every pn-call-remote-push-interval s), 'data' (FCM, generic), 'none'
 *     ring.first                       Promise<PushOutcome> of the first push (sent at once)
 *     ring.stop(reason)                'delivered' (the INVITE reached the woken device: nothing more) or
 *                                      answered-elsewhere | declined-elsewhere | cancelled | missed: repeats
 *                                      end and an 'alert' device gets one last call-end alert.
 *                                      Promise<PushOutcome | null> (null: no final push).
 *   push.stats()                       counters by provider, result and reason, for /metrics on scrape
 *   push.onUnregistered = (ev) => ...  the provider said the token is gone: drop ev.binding's push params
 *   push.close()                       ends sessions, timers and queued pushes
 *
 * Choice of push: FCM and the generic gateway get one data message per push for every kind. APNs:
 * call → VoIP (PushKit) when the device gave a VoIP token, else an alert; message and call-end → alert;
 * wakeup → background (content-available, priority 5). A target whose provider has no native section
 * (fcm:, apns:) goes to `generic:` when there is one, else fails at once with reason not-configured.
 *
 * Delivery: at most `maxInFlight` pushes in progress and `maxQueued` waiting (more: failed,
 * queue-full); 429 and 5xx are retried with exponential back-off (Retry-After honoured, up to 30 s),
 * `attempts` tries in all; a refused connection, a TLS failure or a timeout fails at once (a call
 * cannot wait for a provider that is down). The 110-or-180 choice (config.push.response) is the
 * proxy's to apply: Flexisip sends "110 Push sent" once per call and, for a push that rings (APNs
 * VoIP or a call alert), "180 Ringing" when nothing else rings yet; Portier's default is 180 because
 * door stations show ringing on 180 and many ignore 110.
 */

import type { PushConfig } from '../config/types.js';
import { ApnsClient } from './apns.js';
import { loadPushCredentials, type PushCredentials } from './credentials.js';
import { FcmClient } from './fcm.js';
import { GenericClient } from './generic.js';
import { Http1Client } from './http1.js';
import { Http2Pool, TransportError, classifyError } from './http2-pool.js';
import type { PushTarget } from './params.js';
import {
  SILENT_LOG,
  SYSTEM_CLOCK,
  type Attempt,
  type CallEndReason,
  type Clock,
  type Delivery,
  type ProviderClient,
  type PushLog,
  type PushOutcome,
  type PushRequest,
} from './types.js';

export { PUSH_PARAM_NAMES, decodeParam, isPushParam, isPushTarget, parsePushTarget, readPushTarget, targetKey } from './params.js';
export type { PushParamProblem, PushTarget } from './params.js';
export type { CallEndReason, Clock, ProviderName, PushKind, PushLog, PushOutcome, PushRequest, PushResult } from './types.js';
export { SYSTEM_CLOCK } from './types.js';
export { RegisterWakeup, type WakeupBinding, type WakeupOptions } from './wakeup.js';
export { loadPushCredentials, readPushCredentials, PushCredentialError, type PushCredentials } from './credentials.js';

/** What the registrar needs to clear a binding's push parameters. */
export interface UnregisteredEvent {
  target: PushTarget;
  request: PushRequest;
  /** The client that was told: fcm, apns or generic. */
  provider: string;
  /** The provider's word (UNREGISTERED, BadDeviceToken, Unregistered, gone...). */
  reason: string;
  /** As given in the request. */
  binding?: { aor: string; key: string };
}

export interface PushServiceOptions {
  log?: PushLog;
  onUnregistered?: (ev: UnregisteredEvent) => void;
  /** Time for tokens, retries and call repeats; tests move it by hand. */
  clock?: Clock;
  /** Pushes in progress at once (default 64). */
  maxInFlight?: number;
  /** Pushes waiting for a slot (default 1000); beyond: failed, queue-full. */
  maxQueued?: number;
  /** Tries per push, the first included (default 3); back-off base and cap in ms (default 500 and 8000). */
  retry?: { attempts?: number; baseDelayMs?: number; maxDelayMs?: number };
  /** Milliseconds one HTTP request may take, connection included (default 10000). */
  requestTimeoutMs?: number;
  /** Already-read credentials; default: read from the files named in the config (throws PushCredentialError). */
  credentials?: PushCredentials;
}

export interface PushCounter {
  /** fcm, apns or generic; for not-configured, the target's provider (fcm, apns or other). */
  provider: string;
  result: PushOutcome['result'];
  /** '' for sent. */
  reason: string;
  count: number;
}

export interface PushStats {
  /** Totals since start, one row per provider, result and reason seen. */
  outcomes: PushCounter[];
  inFlight: number;
  queued: number;
}

/** The call a ring announces: a PushRequest without target, kind and end reason. */
export type RingCall = Omit<PushRequest, 'target' | 'kind' | 'endReason'>;

export type RingStopReason = CallEndReason | 'delivered';

export interface PushRing {
  readonly mode: 'voip' | 'alert' | 'data' | 'none';
  readonly first: Promise<PushOutcome>;
  /** Call pushes sent successfully so far, repeats included. */
  readonly sent: number;
  stop(reason: RingStopReason): Promise<PushOutcome | null>;
}

/** Longest Retry-After waited for: past that, the call would be over before the push. */
const MAX_RETRY_AFTER_MS = 30_000;

interface Route {
  client: ProviderClient;
  delivery: Delivery;
}

export class PushService {
  onUnregistered: ((ev: UnregisteredEvent) => void) | null;
  private readonly clock: Clock;
  private readonly log: PushLog;
  private readonly fcm: FcmClient | null = null;
  private readonly apns: ApnsClient | null = null;
  private readonly generic: GenericClient | null = null;
  private readonly pools: Http2Pool[] = [];
  private readonly http1: Http1Client;
  private readonly maxInFlight: number;
  private readonly maxQueued: number;
  private readonly attempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private inFlight = 0;
  private readonly queue: Array<{ start: () => void; cancel: () => void }> = [];
  private readonly counters = new Map<string, PushCounter>();
  private readonly sleeps = new Set<() => void>();
  private readonly rings = new Set<Ring>();
  private closed = false;

  constructor(
    readonly config: PushConfig,
    opts: PushServiceOptions = {},
  ) {
    this.clock = opts.clock ?? SYSTEM_CLOCK;
    this.log = opts.log ?? SILENT_LOG;
    this.onUnregistered = opts.onUnregistered ?? null;
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 64);
    this.maxQueued = Math.max(0, opts.maxQueued ?? 1000);
    this.attempts = Math.max(1, opts.retry?.attempts ?? 3);
    this.baseDelayMs = opts.retry?.baseDelayMs ?? 500;
    this.maxDelayMs = opts.retry?.maxDelayMs ?? 8000;
    const timeoutMs = opts.requestTimeoutMs ?? 10_000;
    const creds = opts.credentials ?? loadPushCredentials(config);
    this.http1 = new Http1Client({ ca: creds.ca }, { timeoutMs });
    if (config.fcm !== null && creds.serviceAccount !== null) {
      const pool = new Http2Pool({ ca: creds.ca }, { timeoutMs });
      this.pools.push(pool);
      this.fcm = new FcmClient({ account: creds.serviceAccount, endpoint: config.fcm.endpoint ?? undefined, pool, http1: this.http1, clock: this.clock });
    }
    if (config.apns !== null && creds.apns !== null) {
      // Certificate authentication lives in the TLS session: APNs gets a pool of its own.
      const pool = new Http2Pool({ ca: creds.ca, cert: creds.apns.cert, key: creds.apns.key }, { timeoutMs });
      this.pools.push(pool);
      this.apns = new ApnsClient({ auth: creds.apns.auth, production: config.apns.production, endpoint: config.apns.endpoint, pool, clock: this.clock });
    }
    if (config.generic !== null) {
      this.generic = new GenericClient({ ...config.generic, http1: this.http1, clock: this.clock });
    }
  }

  /** True when a call to this target can be pushed: a provider is configured and the device gave a token for it. */
  canPush(target: PushTarget): boolean {
    return !('result' in this.plan({ target, kind: 'call', callId: '', fromUri: '', fromName: '', toUri: '', instance: '' }));
  }

  /** The client and delivery for a request, or the outcome when it cannot be sent at all. */
  private plan(req: PushRequest): Route | PushOutcome {
    const t = req.target;
    const native = t.provider === 'fcm' ? this.fcm : t.provider === 'apns' ? this.apns : null;
    const client: ProviderClient | null = native ?? this.generic;
    if (client === null) return { result: 'failed', reason: 'not-configured', detail: `no push.${t.provider === 'fcm' || t.provider === 'apns' ? t.provider : 'generic'} section` };
    let token = t.token;
    let apnsType: Delivery['apnsType'];
    if (t.provider === 'apns') {
      if (req.kind === 'call' && t.voipToken !== null) {
        token = t.voipToken;
        apnsType = 'voip';
      } else apnsType = req.kind === 'wakeup' ? 'background' : 'alert';
    }
    if (token === null || token === '') {
      return { result: 'failed', reason: 'no-token', provider: client.name, detail: `the device gave no token for a ${req.kind} push` };
    }
    return { client, delivery: { req, token, apnsType, ttl: req.ttl ?? this.config.callTimeout } };
  }

  send(req: PushRequest): Promise<PushOutcome> {
    const planned = this.plan(req);
    if ('result' in planned) return Promise.resolve(this.finish(req, planned, labelOf(req.target)));
    if (this.closed) return Promise.resolve(this.finish(req, { result: 'failed', reason: 'closed' }, planned.client.name));
    return new Promise((resolve) => {
      const start = () => {
        this.inFlight++;
        void this.deliver(planned).then((outcome) => {
          this.inFlight--;
          this.next();
          resolve(this.finish(req, outcome, planned.client.name));
        });
      };
      if (this.inFlight < this.maxInFlight) start();
      else if (this.queue.length < this.maxQueued) {
        this.queue.push({ start, cancel: () => resolve(this.finish(req, { result: 'failed', reason: 'closed' }, planned.client.name)) });
      } else resolve(this.finish(req, { result: 'failed', reason: 'queue-full' }, planned.client.name));
    });
  }

  private next(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0 && !this.closed) this.queue.shift()!.start();
  }

  private async deliver({ client, delivery }: Route): Promise<PushOutcome> {
    for (let attempt = 1; ; attempt++) {
      let a: Attempt;
      try {
        a = await client.send(delivery);
      } catch (err) {
        a = attemptOfError(err);
      }
      if (a.kind === 'sent') return { result: 'sent', status: a.status };
      if (a.kind === 'unregistered') return { result: 'unregistered', reason: a.reason, status: a.status, detail: a.detail };
      if (a.kind === 'failed') return { result: 'failed', reason: a.reason, status: a.status, detail: a.detail };
      const gaveUp: PushOutcome = { result: 'failed', reason: a.reason, status: a.status, detail: a.detail };
      if (attempt >= this.attempts || this.closed) return gaveUp;
      if (a.retryAfterMs !== undefined && a.retryAfterMs > MAX_RETRY_AFTER_MS) return { ...gaveUp, detail: `Retry-After ${a.retryAfterMs / 1000} s` };
      const backoff = Math.min(this.baseDelayMs * 2 ** (attempt - 1), this.maxDelayMs);
      await this.sleep(a.retryAfterMs ?? backoff);
      if (this.closed) return { result: 'failed', reason: 'closed' };
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.sleeps.delete(wake);
        resolve();
      };
      const cancel = this.clock.setTimeout(done, ms);
      const wake = () => {
        cancel();
        done();
      };
      this.sleeps.add(wake);
    });
  }

  private finish(req: PushRequest, outcome: PushOutcome, provider: string): PushOutcome {
    const out: PushOutcome = { ...outcome, provider: provider === 'fcm' || provider === 'apns' || provider === 'generic' ? provider : outcome.provider };
    const reason = out.result === 'sent' ? '' : (out.reason ?? '');
    const key = `${provider}\0${out.result}\0${reason}`;
    const c = this.counters.get(key);
    if (c) c.count++;
    else this.counters.set(key, { provider, result: out.result, reason, count: 1 });
    const where = { provider, kind: req.kind, callId: req.callId, aor: req.binding?.aor };
    if (out.result === 'unregistered') {
      this.log.info({ ...where, reason, status: out.status }, 'push token no longer valid: dropping the push parameters of the binding');
      try {
        this.onUnregistered?.({ target: req.target, request: req, provider, reason, binding: req.binding });
      } catch (err) {
        this.log.warn({ ...where, err }, 'onUnregistered handler failed');
      }
    } else if (out.result === 'failed') {
      this.log.warn({ ...where, reason, status: out.status, detail: out.detail }, 'push not sent');
    } else this.log.debug(where, 'push sent');
    return out;
  }

  /** Pushes for one call: the first at once, repeats for APNs alert devices, a last alert on stop. */
  ring(target: PushTarget, call: RingCall): PushRing {
    const r = new Ring(this, target, call, this.clock, () => this.rings.delete(r));
    if (!this.closed) this.rings.add(r);
    return r;
  }

  /** @internal How Ring learns its mode without sending. */
  modeOf(target: PushTarget, call: RingCall): PushRing['mode'] {
    const p = this.plan({ ...call, target, kind: 'call' });
    if ('result' in p) return 'none';
    if (p.delivery.apnsType === 'voip') return 'voip';
    // A generic gateway gets data whatever the target: repeating is the app's business there.
    return p.delivery.apnsType === 'alert' && p.client.name === 'apns' ? 'alert' : 'data';
  }

  stats(): PushStats {
    return { outcomes: [...this.counters.values()].map((c) => ({ ...c })), inFlight: this.inFlight, queued: this.queue.length };
  }

  /** The FCM client's access-token requests so far (for tests and logs). */
  get fcmTokenRequests(): number {
    return this.fcm?.tokenRequests ?? 0;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const r of [...this.rings]) r.cancel();
    for (const q of this.queue.splice(0)) q.cancel();
    for (const wake of [...this.sleeps]) wake();
    for (const p of this.pools) p.close();
    this.http1.close();
  }
}

function labelOf(t: PushTarget): string {
  return t.provider === 'fcm' || t.provider === 'apns' ? t.provider : 'other';
}

function attemptOfError(err: unknown): Attempt {
  if (err instanceof TransportError || (err as NodeJS.ErrnoException)?.code !== undefined) {
    const te = classifyError(err);
    // A stream reset or a GOAWAY that refused the request: a new session may take it.
    return te.reason === 'closed' ? { kind: 'retry', reason: 'closed', detail: te.message } : { kind: 'failed', reason: te.reason, detail: te.message };
  }
  return { kind: 'failed', reason: 'internal', detail: (err as Error)?.message ?? String(err) };
}

class Ring implements PushRing {
  readonly mode: PushRing['mode'];
  readonly first: Promise<PushOutcome>;
  sent = 0;
  private cancelTimer: (() => void) | null = null;
  private repeatsLeft: number;
  private stopped: Promise<PushOutcome | null> | null = null;
  private done = false;
  /** The latest call push, so that the final alert never overtakes a repeat (they share a collapse id). */
  private latest: Promise<PushOutcome>;

  constructor(
    private readonly service: PushService,
    private readonly target: PushTarget,
    private readonly call: RingCall,
    private readonly clock: Clock,
    private readonly forget: () => void,
  ) {
    this.mode = service.modeOf(target, call);
    const interval = target.remotePushInterval;
    // Bounded by the time the call may ring, so that a ring nobody stops still ends.
    const ringSeconds = call.ttl ?? service.config.callTimeout;
    this.repeatsLeft = this.mode === 'alert' && interval !== null ? Math.floor(ringSeconds / interval) : 0;
    this.first = this.push().then((o) => {
      if (o.result === 'sent') this.schedule();
      return o;
    });
    this.latest = this.first;
  }

  private push(): Promise<PushOutcome> {
    return this.service.send({ ...this.call, target: this.target, kind: 'call' }).then((o) => {
      if (o.result === 'sent') this.sent++;
      return o;
    });
  }

  private schedule(): void {
    const interval = this.target.remotePushInterval;
    if (this.done || interval === null || this.repeatsLeft <= 0) return;
    this.repeatsLeft--;
    this.cancelTimer = this.clock.setTimeout(() => {
      this.cancelTimer = null;
      if (this.done) return;
      this.latest = this.push().then((o) => {
        if (o.result === 'sent') this.schedule();
        return o;
      });
    }, interval * 1000);
  }

  /** Ends repeats without a final push (service closing). */
  cancel(): void {
    this.done = true;
    this.cancelTimer?.();
    this.cancelTimer = null;
    this.forget();
  }

  stop(reason: RingStopReason): Promise<PushOutcome | null> {
    if (this.stopped !== null) return this.stopped;
    const closing = this.done;
    this.cancel();
    this.stopped = Promise.all([this.first, this.latest]).then(([first]) => {
      // The device has the INVITE (SIP will carry the CANCEL), or it never got the call push.
      if (closing || reason === 'delivered' || this.mode !== 'alert' || first.result !== 'sent' || this.service.isClosed) return null;
      return this.service.send({ ...this.call, target: this.target, kind: 'call-end', endReason: reason });
    });
    return this.stopped;
  }
}
