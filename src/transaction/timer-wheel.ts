// One hashed timer wheel for every transaction timer (RFC 3261 §17 timers
// A to K, RFC 6026 L and M).
//
// A busy proxy holds 100,000 live transactions, each with one to three
// timers that are nearly always cancelled before they fire. A Node timer per
// transaction costs a Timeout object, a closure and a place in libuv's
// timer heap for each; here a timer is one small handle object linked into
// a slot list, scheduling and cancelling are O(1), and a single unref'd
// interval drives the whole wheel.
//
// Time is cut into ticks of `resolutionMs` (10 ms by default). A timer is
// placed in the slot of the tick it is due in (`tick & mask`); a slot holds
// timers from several revolutions, so each carries its absolute due tick and
// is only fired when the wheel reaches it. With 4096 slots of 10 ms a
// revolution is 40.96 s: every SIP transaction timer (at most 64*T1 = 32 s)
// is visited once, on the tick it is due. Timers fire late by less than one
// tick plus the interval's own lateness, and never early.
//
// Targets get `onTimer(kind)`: the transaction itself is the target and the
// kind says which timer fired, so nothing is allocated per timer but the
// handle.
//
// The waits that end a transaction (Timers D, I, J, K, L, M) nearly always
// run out, and at a thousand calls a second some 100,000 of them are
// pending for their 32 s. They go on wait lanes instead: one FIFO per delay,
// whose due ticks only grow, so it stays sorted with no handle at all: a
// wait costs two array slots, and cannot be cancelled (the target checks
// its own state when it fires).

/** Whatever a timer fires on. `kind` is the number given to schedule(). */
export interface TimerTarget {
  onTimer(kind: number): void;
}

/**
 * A scheduled timer. Also the node of the slot's circular doubly-linked
 * list, so cancelling is an unlink with no search. Slot heads are handles
 * with a null target (sentinels).
 */
export class TimerHandle {
  /** @internal */ next: TimerHandle;
  /** @internal */ prev: TimerHandle;
  /** @internal Absolute tick the timer is due in. */ due: number;

  /** @internal Use TimerWheel.schedule(). */
  constructor(
    /** @internal */ public target: TimerTarget | null,
    readonly kind: number,
    /** @internal */ public wheel: TimerWheel | null,
  ) {
    this.next = this;
    this.prev = this;
    this.due = 0;
  }

  /** True until the timer fires or is cancelled. */
  get active(): boolean {
    return this.wheel !== null;
  }

  /** Cancels the timer; a no-op when it already fired or was cancelled. O(1). */
  cancel(): void {
    const w = this.wheel;
    if (w !== null) w.cancel(this);
  }
}

/** The waits of one delay, in the order they fire: a ring of targets, kinds and due ticks. */
class WaitLane {
  targets: Array<TimerTarget | null>;
  kinds: Uint8Array;
  dues: Float64Array;
  head = 0;
  count = 0;

  constructor(readonly delayMs: number) {
    this.targets = new Array<TimerTarget | null>(64).fill(null);
    this.kinds = new Uint8Array(64);
    this.dues = new Float64Array(64);
  }

  push(target: TimerTarget, kind: number, due: number): void {
    let cap = this.targets.length;
    if (this.count === cap) {
      this.grow(cap * 2);
      cap *= 2;
    }
    const i = (this.head + this.count) & (cap - 1);
    // Due ticks of one delay only grow; a clock that stepped back must not make the FIFO unsorted.
    const last = this.count === 0 ? 0 : this.dues[(i - 1) & (cap - 1)];
    this.targets[i] = target;
    this.kinds[i] = kind;
    this.dues[i] = due > last ? due : last;
    this.count++;
  }

  private grow(cap: number): void {
    const old = this.targets.length;
    const targets = new Array<TimerTarget | null>(cap).fill(null);
    const kinds = new Uint8Array(cap);
    const dues = new Float64Array(cap);
    for (let k = 0; k < this.count; k++) {
      const j = (this.head + k) & (old - 1);
      targets[k] = this.targets[j];
      kinds[k] = this.kinds[j];
      dues[k] = this.dues[j];
    }
    this.targets = targets;
    this.kinds = kinds;
    this.dues = dues;
    this.head = 0;
  }
}

export interface TimerWheelOptions {
  /** Length of one tick in ms. Default 10. */
  resolutionMs?: number;
  /** Number of slots; rounded up to a power of two. Default 4096 (40.96 s at 10 ms). */
  slots?: number;
  /**
   * The clock, in ms. Default: performance.now() (monotonic). Tests pass a
   * fake one, or use `manual` and advance().
   */
  now?: () => number;
  /**
   * No Node timer: time moves only through advance() (which then owns the
   * clock, starting at 0, unless `now` is given) or tick().
   */
  manual?: boolean;
}

const DEFAULT_RESOLUTION_MS = 10;
/** runWaits() found no target throwing (a thrown value can be anything, undefined included). */
const NO_ERROR: unique symbol = Symbol('no error');
const DEFAULT_SLOTS = 4096;

export class TimerWheel {
  readonly resolutionMs: number;
  private readonly mask: number;
  private readonly slots: TimerHandle[];
  private readonly clock: () => number;
  private readonly manual: boolean;
  /** Virtual time of a manual wheel without an external clock. */
  private manualTime = 0;
  private readonly ownsClock: boolean;
  /** The last tick processed: every timer due at or before it has fired. */
  private currentTick: number;
  private live = 0;
  private interval: NodeJS.Timeout | null = null;
  private stopped = false;
  /** A reused sentinel: the slot being processed is moved onto it first. */
  private readonly pending: TimerHandle;
  /** wait(): one lane per delay (a handful: 64*T1, T4, Timer D). */
  private lanes: WaitLane[] = [];
  private readonly onInterval: () => void;

  constructor(opts: TimerWheelOptions = {}) {
    const res = opts.resolutionMs ?? DEFAULT_RESOLUTION_MS;
    if (!(res > 0)) throw new RangeError('resolutionMs must be positive');
    this.resolutionMs = res;
    let n = 1;
    const want = Math.max(2, opts.slots ?? DEFAULT_SLOTS);
    while (n < want) n <<= 1;
    this.mask = n - 1;
    this.slots = new Array<TimerHandle>(n);
    for (let i = 0; i < n; i++) this.slots[i] = new TimerHandle(null, -1, null);
    this.pending = new TimerHandle(null, -1, null);
    this.manual = opts.manual === true;
    this.ownsClock = this.manual && opts.now === undefined;
    this.clock = opts.now ?? (this.ownsClock ? () => this.manualTime : () => performance.now());
    this.currentTick = Math.floor(this.clock() / res);
    // One bound function for the lifetime of the wheel.
    this.onInterval = () => this.tick();
  }

  /** The wheel's clock, in ms. */
  now(): number {
    return this.clock();
  }

  /** Timers scheduled and not yet fired or cancelled. */
  get size(): number {
    return this.live;
  }

  /**
   * Calls target.onTimer(kind) once, `delayMs` from now (rounded up to the
   * next tick; a delay of 0 or less fires on the next tick). After stop()
   * the returned handle is inert and never fires.
   */
  schedule(target: TimerTarget, kind: number, delayMs: number): TimerHandle {
    if (this.stopped) return new TimerHandle(target, kind, null);
    const due = this.dueTick(delayMs);
    const h = new TimerHandle(target, kind, this);
    h.due = due;
    const head = this.slots[due & this.mask];
    // Append: timers due in the same tick fire in the order scheduled.
    const last = head.prev;
    h.prev = last;
    h.next = head;
    last.next = h;
    head.prev = h;
    this.added();
    return h;
  }

  /**
   * Calls target.onTimer(kind) once, `delayMs` from now, like schedule(),
   * but with no handle: it cannot be cancelled, and nothing is allocated
   * for it. For waits that nearly always run out (a transaction's last
   * state), whose target ignores a firing it no longer needs. `kind` is
   * 0-255. Waits of one delay fire in the order given; in a tick, after the
   * schedule()d timers of that tick. stop() drops them; so does dropWaits().
   */
  wait(target: TimerTarget, kind: number, delayMs: number): void {
    if (!(kind >= 0 && kind <= 255 && Number.isInteger(kind))) throw new RangeError('a wait kind is an integer in 0-255');
    if (this.stopped) return;
    if (!(delayMs > 0)) delayMs = 0; // one lane for every delay of zero or less (and NaN)
    const due = this.dueTick(delayMs);
    const lanes = this.lanes;
    let lane: WaitLane | undefined;
    for (let i = 0; i < lanes.length; i++) {
      if (lanes[i].delayMs === delayMs) {
        lane = lanes[i];
        break;
      }
    }
    if (lane === undefined) {
      lane = new WaitLane(delayMs);
      this.lanes = [...lanes, lane];
    }
    lane.push(target, kind, due);
    this.added();
  }

  /** Drops the pending wait()s whose target `drop` picks (a layer that stops on a shared wheel). */
  dropWaits(drop: (target: TimerTarget) => boolean): void {
    for (const lane of this.lanes) {
      const cap = lane.targets.length;
      for (let k = 0; k < lane.count; k++) {
        const j = (lane.head + k) & (cap - 1);
        const t = lane.targets[j];
        if (t !== null && drop(t)) {
          lane.targets[j] = null;
          this.live--;
        }
      }
    }
  }

  /** The tick a timer `delayMs` from now is due in: never the current one. */
  private dueTick(delayMs: number): number {
    const res = this.resolutionMs;
    const now = this.clock();
    if (this.live === 0) {
      // Nothing is pending, so the ticks the wheel slept through hold
      // nothing to fire: skip them instead of walking them on the next tick.
      const t = Math.floor(now / res);
      if (t > this.currentTick) this.currentTick = t;
    }
    const due = Math.ceil((now + (delayMs > 0 ? delayMs : 0)) / res);
    return due > this.currentTick ? due : this.currentTick + 1; // also catches NaN
  }

  private added(): void {
    this.live++;
    if (this.interval === null && !this.manual) {
      this.interval = setInterval(this.onInterval, this.resolutionMs);
      this.interval.unref();
    }
  }

  /** Cancels a timer (same as handle.cancel()). */
  cancel(h: TimerHandle): void {
    if (h.wheel !== this) return;
    h.prev.next = h.next;
    h.next.prev = h.prev;
    h.next = h;
    h.prev = h;
    h.wheel = null;
    h.target = null;
    this.live--;
  }

  /**
   * Fires every timer due by now(). Called by the Node timer; tests call it
   * after moving an injected clock. A target that throws does not stop the
   * others: the first error is rethrown once the tick is done.
   */
  tick(): void {
    this.runUntil(Math.floor(this.clock() / this.resolutionMs), false);
    if (this.live === 0 && this.interval !== null) {
      // Idle: no wake-ups until something is scheduled again.
      clearInterval(this.interval);
      this.interval = null;
    }
  }

  /**
   * Manual wheels with their own clock: moves time forward by `ms`, firing
   * timers tick by tick. While a target runs, now() reads the time of the
   * tick it fires in, so timers it schedules (a doubled retransmission
   * interval) land where they would in real time.
   */
  advance(ms: number): void {
    if (!this.ownsClock) throw new Error('advance() needs a manual wheel without an injected clock');
    const end = this.manualTime + (ms > 0 ? ms : 0);
    this.runUntil(Math.floor(end / this.resolutionMs), true);
    this.manualTime = end;
  }

  /** Cancels every timer and the Node timer. Timers scheduled afterwards never fire. */
  stop(): void {
    this.stopped = true;
    if (this.interval !== null) {
      clearInterval(this.interval);
      this.interval = null;
    }
    for (const head of this.slots) {
      while (head.next !== head) this.cancel(head.next);
    }
    // stop() called from a target while a slot is being processed.
    const p = this.pending;
    while (p.next !== p) this.cancel(p.next);
    this.dropWaits(() => true);
    for (const lane of this.lanes) lane.head = lane.count = 0;
  }

  private runUntil(lastTick: number, setClock: boolean): void {
    let error: unknown = null;
    let failed = false;
    while (this.currentTick < lastTick) {
      if (this.live === 0) {
        this.currentTick = lastTick;
        break;
      }
      const tick = ++this.currentTick;
      const head = this.slots[tick & this.mask];
      if (head.next === head) {
        if (this.lanes.length !== 0) {
          if (setClock) this.manualTime = tick * this.resolutionMs;
          const e = this.runWaits(tick);
          if (e !== NO_ERROR && !failed) {
            failed = true;
            error = e;
          }
        }
        continue;
      }
      if (setClock) this.manualTime = tick * this.resolutionMs;
      // Move the slot's list onto `pending`, then take timers off it one at
      // a time. A target may cancel any other timer, including ones still on
      // `pending` (an unlink works on any list), or schedule new ones, which
      // go onto the slot lists and never onto `pending`.
      const p = this.pending;
      p.next = head.next;
      p.prev = head.prev;
      p.next.prev = p;
      p.prev.next = p;
      head.next = head;
      head.prev = head;
      while (p.next !== p) {
        const h = p.next;
        p.next = h.next;
        h.next.prev = p;
        if (h.due > tick) {
          // A later revolution: back onto its slot.
          const last = head.prev;
          h.prev = last;
          h.next = head;
          last.next = h;
          head.prev = h;
          continue;
        }
        const target = h.target!;
        h.next = h;
        h.prev = h;
        h.wheel = null;
        h.target = null;
        this.live--;
        try {
          target.onTimer(h.kind);
        } catch (err) {
          if (!failed) {
            failed = true;
            error = err;
          }
        }
      }
      if (this.lanes.length !== 0) {
        const e = this.runWaits(tick);
        if (e !== NO_ERROR && !failed) {
          failed = true;
          error = e;
        }
      }
    }
    if (failed) throw error;
  }

  /** Fires the waits due by `tick`; the first error a target threw, or NO_ERROR. */
  private runWaits(tick: number): unknown {
    let error: unknown = NO_ERROR;
    for (const lane of this.lanes) {
      while (lane.count !== 0) {
        const cap = lane.targets.length;
        const i = lane.head;
        if (lane.dues[i] > tick) break;
        const target = lane.targets[i];
        const kind = lane.kinds[i];
        lane.targets[i] = null;
        lane.head = (i + 1) & (cap - 1);
        lane.count--;
        if (target === null) continue; // dropped: already uncounted
        this.live--;
        try {
          target.onTimer(kind);
        } catch (err) {
          if (error === NO_ERROR) error = err;
        }
      }
    }
    return error;
  }
}
