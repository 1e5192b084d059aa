// Client transactions (RFC 3261 §17.1, RFC 6026 §7.2 and §8.4).
//
// A client transaction sends one request, retransmits it over UDP until a
// response comes (Timers A, E), gives up when no (final) response comes
// (Timers B, F), acknowledges non-2xx finals to an INVITE itself, and stays
// around long enough to absorb retransmitted finals (Timers D, K) or, after
// a 2xx to an INVITE, to pass each retransmitted 2xx up (Timer M).

import type { SipMessage } from '../sip/index.js';
import type { Destination } from '../transport/index.js';
import { isReliable } from './destination.js';
import { buildAckBytes } from './messages.js';
import { retained } from './retained.js';
import type { TimerHandle, TimerTarget } from './timer-wheel.js';
import { Timer, TransactionState, type ClientTransactionOwner, type TransactionContext } from './types.js';

/** The owner of a released transaction (release()): it hears nothing more. */
const RELEASED: ClientTransactionOwner = Object.freeze({
  onResponse() {},
  onTimeout() {},
  onTransportError() {},
});

export abstract class ClientTransaction implements TimerTarget {
  readonly reliable: boolean;
  /** Free for the owner: its per-transaction state. */
  userData: unknown = undefined;
  /** @internal */ readonly key: string;
  protected readonly ctx: TransactionContext;
  protected currentState: TransactionState;
  /** The request as sent: what a retransmission sends again; null once nothing will be. */
  protected bytes: Buffer | null;
  /** Timer A or E. */
  protected retransmitTimer: TimerHandle | null = null;
  /** Timer B or F (D, K and M are wheel waits, without a handle). */
  protected waitTimer: TimerHandle | null = null;
  protected interval = 0;

  readonly method: string;
  protected req: SipMessage | null;
  private currentOwner: ClientTransactionOwner;

  /** @internal Created by TransactionLayer.sendRequest(). */
  constructor(
    ctx: TransactionContext,
    key: string,
    request: SipMessage,
    readonly dest: Destination,
    owner: ClientTransactionOwner,
    initial: TransactionState,
  ) {
    this.ctx = ctx;
    this.key = key;
    this.req = request;
    this.method = request.method;
    this.currentOwner = owner;
    this.reliable = isReliable(dest.protocol);
    this.bytes = request.toBuffer();
    this.currentState = initial;
  }

  /**
   * The request as sent, top Via included, until the final response; null
   * after. What stays for Timers D, K and M is only what they need: their
   * 32 s at a thousand calls a second would otherwise hold every request.
   */
  get request(): SipMessage | null {
    return this.req;
  }

  /** The top Via's branch: the transaction's id (§17.1.3). Cut from the key, which holds it already. */
  get branch(): string {
    return this.key.slice(0, this.key.length - this.method.length - 1);
  }

  get owner(): ClientTransactionOwner {
    return this.currentOwner;
  }

  /**
   * Hands what the transaction still passes up (each 2xx of an accepted
   * INVITE, RFC 6026) to a smaller owner, so that a finished proxied call
   * need not stay alive for Timer M just to forward them.
   */
  handOver(owner: ClientTransactionOwner): void {
    this.currentOwner = owner;
  }

  get state(): TransactionState {
    return this.currentState;
  }

  /**
   * The owner is done with this accepted INVITE (a proxied call that
   * ended). Rather than keep the transaction and an owner for Timer M only
   * to pass up each further 2xx (RFC 6026 §8.4), the layer keeps a record
   * of it, and each 2xx that matches goes to the layer user's
   * onStrayResponse() with `upstream`, where the owner would have sent it.
   * The transaction then ends at once (owner.onTerminated()). False, and
   * nothing changes, when not in Accepted or the key cannot be kept.
   */
  release(upstream: Destination): boolean {
    if (this.currentState !== TransactionState.Accepted || !this.ctx.keepAccepted2xx(this, upstream)) return false;
    this.terminate();
    // Released later than from onResponse(), a Timer M wait still holds this object: not the owner too.
    this.currentOwner = RELEASED;
    return true;
  }

  get isInvite(): boolean {
    return false;
  }

  /** @internal Sends the request and starts the timers. */
  start(): void {
    const t1 = this.ctx.t1;
    if (!this.reliable) {
      this.interval = t1;
      this.retransmitTimer = this.ctx.wheel.schedule(this, this.isInvite ? Timer.A : Timer.E, t1);
    }
    this.waitTimer = this.ctx.wheel.schedule(this, this.isInvite ? Timer.B : Timer.F, 64 * t1);
    // Last: the transport may report a failure synchronously, which ends the
    // transaction and must find its timers set.
    this.send(this.bytes!);
  }

  /** @internal A response matched this transaction (§17.1.3). */
  abstract receiveResponse(res: SipMessage): void;

  /** @internal */
  abstract onTimer(kind: number): void;

  /**
   * @internal The transport could not send to this transaction's
   * destination (§17.1.1.2, §17.1.2.2): terminated, owner told. Ignored once
   * a final response came; an ACK lost that way is recovered by the
   * server's retransmission.
   */
  transportFailed(err: Error): void {
    const state = this.currentState;
    if (state !== TransactionState.Calling && state !== TransactionState.Trying && state !== TransactionState.Proceeding) return;
    this.leave();
    try {
      this.owner.onTransportError(this, err);
    } finally {
      this.owner.onTerminated?.(this);
    }
  }

  /** @internal Stops timers and leaves quietly: the layer is shutting down. */
  abandon(): void {
    this.currentState = TransactionState.Terminated;
    this.cancelTimers();
  }

  protected send(bytes: Buffer): void {
    this.ctx.transport.send(bytes, this.dest);
  }

  protected retransmit(kind: number, nextInterval: number): void {
    this.ctx.retransmissionsSent++;
    this.interval = nextInterval;
    this.retransmitTimer = this.ctx.wheel.schedule(this, kind, nextInterval);
    this.send(this.bytes!);
  }

  /** Timer B or F: gone from the tables, then the owner is told. */
  protected timeout(): void {
    this.leave();
    try {
      this.owner.onTimeout(this);
    } finally {
      this.owner.onTerminated?.(this);
    }
  }

  /** Passes a response up; on a stream the final ends the transaction at once (Timers D, K are zero). */
  protected passUp(res: SipMessage, endAfter: boolean): void {
    if (!endAfter) {
      this.owner.onResponse(this, res);
      return;
    }
    try {
      this.owner.onResponse(this, res);
    } finally {
      this.terminate();
    }
  }

  /**
   * Ends the transaction now: timers stop, it leaves the tables, then
   * owner.onTerminated(). Nothing is sent. For what the RFC leaves to the
   * user: an INVITE in Proceeding has no timer of its own, so a proxy whose
   * Timer C fired and whose CANCEL got no final within 64*T1 (§9.1, §16.8)
   * ends it here. Responses arriving later are strays.
   */
  terminate(): void {
    if (this.currentState === TransactionState.Terminated) return;
    this.leave();
    this.owner.onTerminated?.(this);
  }

  protected leave(): void {
    this.currentState = TransactionState.Terminated;
    this.cancelTimers();
    this.ctx.clientTerminated(this);
  }

  protected cancelTimers(): void {
    if (this.retransmitTimer !== null) {
      this.retransmitTimer.cancel();
      this.retransmitTimer = null;
    }
    if (this.waitTimer !== null) {
      this.waitTimer.cancel();
      this.waitTimer = null;
    }
  }

  /** A final response came: nothing will be retransmitted or built from the request any more. */
  protected finalReceived(): void {
    this.req = null;
    this.bytes = null;
  }

  /**
   * Replaces Timer B/F by the wait of the Completed or Accepted state: a
   * wheel wait, without a handle, which nearly always runs out; when the
   * transaction ended before, its firing finds it Terminated.
   */
  protected wait(kind: number, ms: number): void {
    this.cancelTimers();
    this.ctx.wheel.wait(this, kind, ms);
  }
}

/** §17.1.1 (figure 5) as changed by RFC 6026 (figure 4). */
export class InviteClientTransaction extends ClientTransaction {
  /** The ACK for the non-2xx final (as retained() keeps it, for Timer D), resent for each retransmission of it. */
  private ack: Buffer | null = null;

  /** @internal */
  constructor(ctx: TransactionContext, key: string, request: SipMessage, dest: Destination, owner: ClientTransactionOwner) {
    super(ctx, key, request, dest, owner, TransactionState.Calling);
  }

  override get isInvite(): boolean {
    return true;
  }

  receiveResponse(res: SipMessage): void {
    const status = res.status;
    switch (this.currentState) {
      case TransactionState.Calling:
      case TransactionState.Proceeding:
        if (status < 200) {
          // A provisional stops retransmissions and Timer B: from here on
          // the proxy's Timer C decides how long to wait.
          this.currentState = TransactionState.Proceeding;
          this.cancelTimers();
          // No more INVITE retransmissions (Timer A stops with the first provisional).
          this.bytes = null;
          this.passUp(res, false);
        } else if (status < 300) {
          this.currentState = TransactionState.Accepted;
          this.finalReceived();
          this.cancelTimers();
          try {
            this.passUp(res, false);
          } finally {
            // Timer M after the owner heard the 2xx: an owner that released
            // the transaction (release()) then leaves nothing on the wheel
            // to hold it, and the owner with it, for 32 s.
            if (this.currentState === TransactionState.Accepted) this.ctx.wheel.wait(this, Timer.M, 64 * this.ctx.t1);
          }
        } else {
          this.currentState = TransactionState.Completed;
          const ack = buildAckBytes(this.req!, res);
          this.finalReceived();
          this.send(ack);
          if (this.reliable || this.ctx.keepAck(this, ack)) {
            // Timer D is zero on streams; over UDP the layer resends the ACK
            // for each retransmitted final from a record, for Timer D.
            this.cancelTimers();
            this.passUp(res, true);
            return;
          }
          this.ack = retained(ack);
          this.wait(Timer.D, this.ctx.timerD);
          this.passUp(res, false);
        }
        return;
      case TransactionState.Accepted:
        // RFC 6026 §8.4: every 2xx goes up, retransmission or another fork's.
        if (status >= 200 && status < 300) this.passUp(res, false);
        else this.ctx.retransmissionsAbsorbed++;
        return;
      case TransactionState.Completed:
        if (status >= 300) {
          // The server did not get our ACK: send it again, tell nobody.
          this.ctx.retransmissionsAbsorbed++;
          this.ctx.retransmissionsSent++;
          this.send(this.ack!);
        } else if (status >= 200) {
          // A 2xx after a non-2xx (a misbehaving fork): a proxy must still
          // forward it, or the call is left half set up.
          this.passUp(res, false);
        } else {
          this.ctx.retransmissionsAbsorbed++;
        }
        return;
      default:
        return;
    }
  }

  onTimer(kind: number): void {
    const state = this.currentState;
    switch (kind) {
      case Timer.A:
        this.retransmitTimer = null;
        // §17.1.1.2: doubling each time, no cap; Timer B ends it.
        if (state === TransactionState.Calling) this.retransmit(Timer.A, 2 * this.interval);
        return;
      case Timer.B:
        this.waitTimer = null;
        if (state === TransactionState.Calling) this.timeout();
        return;
      case Timer.D:
      case Timer.M:
        this.terminate();
        return;
    }
  }
}

/** §17.1.2 (figure 6). */
export class NonInviteClientTransaction extends ClientTransaction {
  /** @internal */
  constructor(ctx: TransactionContext, key: string, request: SipMessage, dest: Destination, owner: ClientTransactionOwner) {
    super(ctx, key, request, dest, owner, TransactionState.Trying);
  }

  receiveResponse(res: SipMessage): void {
    const state = this.currentState;
    if (state === TransactionState.Completed) {
      this.ctx.retransmissionsAbsorbed++;
      return;
    }
    if (state !== TransactionState.Trying && state !== TransactionState.Proceeding) return;
    if (res.status < 200) {
      // Timer E keeps running (at T2 from its next firing) and so does F.
      this.currentState = TransactionState.Proceeding;
      this.passUp(res, false);
      return;
    }
    this.currentState = TransactionState.Completed;
    this.finalReceived();
    if (this.reliable || this.ctx.keepCompleted(this)) {
      // Timer K is zero on streams; over UDP the layer absorbs retransmitted responses from a record.
      this.cancelTimers();
      this.passUp(res, true);
      return;
    }
    this.wait(Timer.K, this.ctx.t4);
    this.passUp(res, false);
  }

  onTimer(kind: number): void {
    const state = this.currentState;
    switch (kind) {
      case Timer.E:
        this.retransmitTimer = null;
        // §17.1.2.2: doubling up to T2 while Trying; every T2 once Proceeding.
        if (state === TransactionState.Trying) this.retransmit(Timer.E, Math.min(2 * this.interval, this.ctx.t2));
        else if (state === TransactionState.Proceeding) this.retransmit(Timer.E, this.ctx.t2);
        return;
      case Timer.F:
        this.waitTimer = null;
        if (state === TransactionState.Trying || state === TransactionState.Proceeding) this.timeout();
        return;
      case Timer.K:
        this.terminate();
        return;
    }
  }
}
