// Overload control: new requests refused with a stateless 503 while the
// event loop has no idle time left.
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
// The signal is the event loop's utilization (ELU) over windows of 100 ms.
// A loop that never went idle in a window never found its sockets empty;
// one that did idle had drained them. A queue cannot be read from Node
// (and the loop's lag stays small: libuv reads at most 32 datagrams per
// socket before it runs timers), but an ELU of ~1 is exactly "arrivals
// keep up with the work". A loop can also be full of work that is not SIP
// (start-up, a burst of TLS handshakes, a reload, a test harness sharing
// the process) or of a flood the per-source limits already drop: then
// refusing requests relieves nothing. So a window only counts as saturated
// when it also received at least MIN_MESSAGES SIP messages that passed
// those limits (200/s): fewer could not fill a core even at 5 ms each,
// fifty times what a message costs here.
//
// The response is a level from 0 to 1. Two saturated windows in a row
// (one is a burst or a collection) raise it by RISE per window; a window
// with idle time to spare (below RELAXED) lowers it by FALL, four times that
// when the loop was idle most of the window; in between it holds. Calls come first, since a visitor waits at the gate and a
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

/** A window whose utilization reaches this had no idle time worth the name. */
export const SATURATED = 0.97;
/** A window below this had idle time to spare. */
export const RELAXED = 0.9;
/** SIP messages a window must have received to count as saturated by them. */
export const MIN_MESSAGES = 20;
/** Saturated windows in a row before the level rises. */
export const CONFIRM_WINDOWS = 2;
/** Rise of the level per saturated window, once confirmed: from 0, INVITEs are refused from the fourth saturated window in a row. */
export const RISE = 0.2;
/** Fall of the level per relaxed window: from 1 to 0 in 2 s (0.5 s when idle). */
export const FALL = 0.05;
const SAMPLE_MS = 100;

/** The classes refusals are counted in. */
export type RefusedClass = 'INVITE' | 'REGISTER' | 'other';

export interface OverloadOptions {
  /** Seconds in Retry-After: a value between this and twice this. */
  retryAfter: number;
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
  /** The last window's utilization. */
  utilization = 0;
  /** SIP messages received in the current window (the server counts them: received()). */
  private messages = 0;
  /** The last window's. */
  lastMessages = 0;
  /** Refusals since start, by class. */
  readonly refused: Record<RefusedClass, number> = { INVITE: 0, REGISTER: 0, other: 0 };
  private saturatedWindows = 0;
  private inviteCredit = 0;
  private otherCredit = 0;
  private timer: NodeJS.Timeout | null = null;
  private retryAfter: number;
  private readonly readUtilization: () => number;
  private readonly random: () => number;
  private readonly onChange: OverloadOptions['onChange'];
  private readonly onRefused: OverloadOptions['onRefused'];
  private readonly manual: boolean;

  constructor(opts: OverloadOptions) {
    this.retryAfter = checkRetryAfter(opts.retryAfter);
    this.readUtilization = opts.utilization ?? loopUtilization();
    this.random = opts.random ?? Math.random;
    this.onChange = opts.onChange;
    this.onRefused = opts.onRefused;
    this.manual = opts.manual === true;
  }

  /** Starts sampling (a no-op when manual or started). */
  start(): void {
    if (this.manual || this.timer !== null) return;
    this.readUtilization(); // the windows start now, not at process start
    this.messages = 0;
    this.timer = setInterval(() => {
      const n = this.messages;
      this.messages = 0;
      this.sample(this.readUtilization(), n);
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

  /** One window's utilization (0-1) and the SIP messages it received. */
  sample(u: number, messages = MIN_MESSAGES): void {
    this.utilization = u;
    this.lastMessages = messages;
    if (u >= SATURATED && messages >= MIN_MESSAGES) {
      this.saturatedWindows++;
      if (this.saturatedWindows >= CONFIRM_WINDOWS) this.setLevel(Math.min(1, this.level + RISE));
      return;
    }
    this.saturatedWindows = 0;
    if (u >= RELAXED || this.level === 0) return;
    // A loop mostly idle (the flood over) takes everything again four times faster.
    const step = u < RELAXED / 2 ? 4 * FALL : FALL;
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
