// Overload control: new requests refused with a stateless 503 while
// requests wait too long in the UDP receive queue.
//
// Over UDP a server that falls behind by more than T1 collapses: every
// request it has not answered yet is sent again, the copies take their
// turn in the same queue, and it stays behind for good (bench/README,
// "Overload control"). A refusal costs a parse and one small send, a call
// taken costs seven datagrams and its transactions; so the new requests
// that would build up the queue are refused while it drains, and what is
// already under way goes on: retransmissions (matched before they get
// here), ACK, CANCEL, requests inside a dialog (a BYE ends a call, an INFO
// opens a door) and every response.
//
// The signal is how long a datagram waits in the UDP receive queue before
// Portier reads it, measured by a probe each UDP listener sends itself
// every 100 ms (src/transport/udp.ts). A queue cannot be read from Node,
// the loop's lag stays small however deep it is (libuv reads 32 datagrams
// per socket between timers), and a loop with no idle time is not
// overloaded by itself: a client that keeps 200 requests in flight keeps
// it busy with a queue 20-120 ms deep, served as fast as it can be. What does
// harm is the wait: at T1 (500 ms) every request comes twice. A window
// counts as saturated when the queue delay reached HIGH_DELAY_T1 of T1 and at
// least MIN_MESSAGES SIP messages that passed the per-source limits
// arrived in it (200/s): a loop stalled by something else (a start-up, a
// reload, a test harness in the same process, a flood the rate limit
// already drops) is not relieved by refusing SIP.
//
// The response is a level from 0 to 1. Two windows in a row with a long
// queue (one is a burst or a collection) raise it by RISE per window, more
// the longer the wait (up to three times). Below the high delay a queue
// that does not shrink nudges it up by NUDGE, so that the backlog drains
// instead of standing; one shrinking holds it; a short one (below
// LOW_DELAY_T1 of T1), or one that refusing SIP cannot shorten, lowers it
// by FALL, four times that when the event loop was also idle most of the
// window (the flood is over). Calls come first, since a visitor waits at the gate and a
// registration refresh can come back later: at level L, new requests
// other than INVITE are refused with fraction min(1, 2L), new INVITEs with
// fraction max(0, 2L - 1). The fraction is applied by an accumulator, not
// at random, so that it is exact and testable.
//
// RFC 3261 §21.5.4: 503 with Retry-After. The Retry-After is jittered
// between retryAfter and twice that, so that the devices refused together
// do not all come back in the same second. Stateless (§8.2.7): the To tag
// is a hash of the request's identifiers, the same for its retransmissions.

import { performance } from 'node:perf_hooks';
import { buildResponseBytes, type SipMessage } from '../sip/index.js';

/**
 * The UDP queue delay, as a share of T1, from which requests wait too long:
 * the level rises (150 ms with T1 = 500), well before their senders'
 * first retransmission at T1. A client that keeps 200 requests in flight
 * to a cold Portier on a slow machine queues ~120 ms: served, not refused.
 */
export const HIGH_DELAY_T1 = 0.3;
/** Below this share of T1 (50 ms) the queue is short: the level falls. */
export const LOW_DELAY_T1 = 0.1;
/** The high delay is never below this (the low one never below a quarter of it), whatever T1. */
export const MIN_HIGH_DELAY_MS = 100;
/** An event loop utilization below this is mostly idle: the level falls four times faster. */
export const IDLE = 0.45;
/** SIP messages a window must have received to count as saturated by them. */
export const MIN_MESSAGES = 20;
/** Saturated windows in a row before the level rises. */
export const CONFIRM_WINDOWS = 2;
/** Rise of the level per saturated window, once confirmed: from 0, INVITEs are refused from the fourth saturated window in a row. */
export const RISE = 0.2;
/** Fall of the level per relaxed window: from 1 to 0 in 2 s (0.5 s when idle). */
export const FALL = 0.05;
/** Rise of the level per window whose queue, between the low and high delays, did not shrink. */
export const NUDGE = 0.05;
const SAMPLE_MS = 100;

/** The classes refusals are counted in. */
export type RefusedClass = 'INVITE' | 'REGISTER' | 'other';

export interface OverloadOptions {
  /** Seconds in Retry-After: a value between this and twice this. */
  retryAfter: number;
  /** T1 of the transactions, ms (default 500): the delays that count are shares of it. */
  t1?: number;
  /** How long datagrams waited in the UDP receive queue since the previous call, ms (TransportLayer.takeUdpQueueDelay); 0 without UDP. */
  queueDelay?: () => number;
  /** Sends the next queue probes (TransportLayer.probeUdp), once per window. */
  probe?: () => void;
  /** The utilization of the loop since the previous call, 0-1. Default: performance.eventLoopUtilization(). */
  utilization?: () => number;
  /** No timer: the caller feeds sample() (tests). */
  manual?: boolean;
  /** Uniform in [0, 1): the Retry-After jitter. */
  random?: () => number;
  /** The level left 0 (entering overload) or came back to it. */
  onChange?: (overloaded: boolean, control: OverloadControl) => void;
  /** A refusal went out (counted as a response by the caller). */
  onRefused?: (method: string) => void;
}

export class OverloadControl {
  /** 0: every request is taken; 1: every new one is refused. */
  level = 0;
  /** The last window's UDP queue delay, ms. */
  delay = 0;
  /** The last window's event loop utilization. */
  utilization = 0;
  /** SIP messages received in the current window that passed the per-source limits (received()). */
  private messages = 0;
  /** Every datagram or stream message read in the current window (arrived()). */
  private arrivals = 0;
  /** The last window's. */
  lastMessages = 0;
  /** Refusals since start, by class. */
  readonly refused: Record<RefusedClass, number> = { INVITE: 0, REGISTER: 0, other: 0 };
  private saturatedWindows = 0;
  /** The previous window's queue delay. */
  private previousDelay = 0;
  private inviteCredit = 0;
  private otherCredit = 0;
  private timer: NodeJS.Timeout | null = null;
  private retryAfter: number;
  private readonly readUtilization: () => number;
  private readonly queueDelay: () => number;
  private readonly probe: () => void;
  private readonly random: () => number;
  private readonly onChange: OverloadOptions['onChange'];
  private readonly onRefused: OverloadOptions['onRefused'];
  private readonly manual: boolean;
  private readonly highDelay: number;
  private readonly lowDelay: number;

  constructor(opts: OverloadOptions) {
    const t1 = opts.t1 ?? 500;
    // Never below 100 and 25 ms: a short T1 (tests, a LAN) must not make a queue of a few ms overload.
    this.highDelay = Math.max(MIN_HIGH_DELAY_MS, HIGH_DELAY_T1 * t1);
    this.lowDelay = Math.max(MIN_HIGH_DELAY_MS / 4, LOW_DELAY_T1 * t1);
    this.retryAfter = checkRetryAfter(opts.retryAfter);
    this.readUtilization = opts.utilization ?? loopUtilization();
    this.queueDelay = opts.queueDelay ?? (() => 0);
    this.probe = opts.probe ?? (() => {});
    this.random = opts.random ?? Math.random;
    this.onChange = opts.onChange;
    this.onRefused = opts.onRefused;
    this.manual = opts.manual === true;
  }

  /** Starts sampling (a no-op when manual or started). */
  start(): void {
    if (this.manual || this.timer !== null) return;
    this.readUtilization(); // the windows start now, not at process start
    this.messages = this.arrivals = 0;
    this.probe();
    this.timer = setInterval(() => {
      const n = this.messages;
      const all = this.arrivals;
      this.messages = this.arrivals = 0;
      this.sample(this.queueDelay(), n, this.readUtilization(), all);
      this.probe();
    }, SAMPLE_MS);
    this.timer.unref();
  }

  /** Stops sampling and takes every request again. */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.saturatedWindows = 0;
    this.setLevel(0);
  }

  setRetryAfter(seconds: number): void {
    this.retryAfter = checkRetryAfter(seconds);
  }

  /** A SIP message is about to be processed: a response, or a request the per-source limits let through. */
  received(): void {
    this.messages++;
  }

  /** A message was read, whatever becomes of it (a flood the per-source limits drop included). */
  arrived(): void {
    this.arrivals++;
  }

  /**
   * One window: the UDP queue delay (ms), the SIP messages that passed the
   * per-source limits, the event loop's utilization (0-1), and every
   * message read. Refusing can only shorten the queue when what passed the
   * limits is at least half of what fills it: a flood from one source,
   * which the rate limit drops, is that limit's job.
   */
  sample(delay: number, messages = MIN_MESSAGES, utilization = 1, arrivals = messages): void {
    this.delay = delay;
    this.utilization = utilization;
    this.lastMessages = messages;
    const before = this.previousDelay;
    this.previousDelay = delay;
    const sip = messages >= MIN_MESSAGES && 2 * messages >= arrivals;
    if (delay >= this.highDelay && sip) {
      this.saturatedWindows++;
      // Faster the longer the wait: twice the high delay, twice the rise (at most three times).
      if (this.saturatedWindows >= CONFIRM_WINDOWS) this.setLevel(Math.min(1, this.level + RISE * Math.min(3, delay / this.highDelay)));
      return;
    }
    this.saturatedWindows = 0;
    if (this.level === 0) return;
    if (delay >= this.lowDelay && sip) {
      // A standing queue that does not shrink: refuse a little more, until it drains.
      if (delay >= before) this.setLevel(Math.min(1, this.level + NUDGE));
      return;
    }
    // A short queue, or one that refusing SIP cannot shorten: take more again.
    // A loop mostly idle (the flood over) takes everything again four times faster.
    const step = utilization < IDLE ? 4 * FALL : FALL;
    // Rounded to a twentieth, so that the level comes back to 0 exactly.
    this.setLevel(Math.max(0, Math.round((this.level - step) * 20) / 20));
  }

  /** Whether a new request (not a retransmission, not ACK or CANCEL) is refused; counts it when it is. */
  refuses(req: SipMessage): boolean {
    if (this.level === 0) return false;
    // Inside a dialog: what is under way goes on.
    if (req.to().tag !== null) return false;
    const method = req.method;
    let refuse: boolean;
    if (method === 'INVITE') {
      this.inviteCredit += 2 * this.level - 1;
      refuse = this.inviteCredit >= 1;
      if (refuse) this.inviteCredit -= 1;
      else if (this.inviteCredit < 0) this.inviteCredit = 0;
    } else {
      this.otherCredit += Math.min(1, 2 * this.level);
      refuse = this.otherCredit >= 1;
      if (refuse) this.otherCredit -= 1;
    }
    if (refuse) this.refused[method === 'INVITE' ? 'INVITE' : method === 'REGISTER' ? 'REGISTER' : 'other']++;
    return refuse;
  }

  /** The stateless 503 for a request refuses() refused. */
  refusal(req: SipMessage): Buffer {
    const seconds = this.retryAfter + Math.floor(this.random() * (this.retryAfter + 1));
    this.onRefused?.(req.method);
    return buildResponseBytes(req, 503, { toTag: statelessTag(req), headers: [['Retry-After', String(seconds)]] });
  }

  private setLevel(level: number): void {
    const was = this.level;
    this.level = level;
    if (level === 0) this.inviteCredit = this.otherCredit = 0;
    if ((was === 0) !== (level === 0)) this.onChange?.(level > 0, this);
  }
}

function checkRetryAfter(s: number): number {
  if (!Number.isInteger(s) || s < 1) throw new RangeError('retryAfter must be a whole number of seconds, at least 1');
  return s;
}

/** The loop's utilization since the previous call. */
function loopUtilization(): () => number {
  let last = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const u = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    return u;
  };
}

/**
 * §8.2.7: a stateless UAS makes the To tag the same for every copy of a
 * request: here FNV-1a of its top Via branch, From tag and Call-ID, twice
 * (two offsets) for 64 bits.
 */
export function statelessTag(req: SipMessage): string {
  const via = req.topVia();
  const s = (via?.branch ?? '') + '\n' + (req.from().tag ?? '') + '\n' + req.callId();
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193);
  }
  return 'ol' + (a >>> 0).toString(16).padStart(8, '0') + (b >>> 0).toString(16).padStart(8, '0');
}
