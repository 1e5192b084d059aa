// Server transactions (RFC 3261 §17.2, RFC 6026 §7.1 and §8.5-8.7).
//
// A server transaction receives one request and its retransmissions, and
// sends the responses the user gives it: it resends the last response when
// the request is retransmitted, retransmits a non-2xx final to an INVITE
// over UDP until the ACK comes (Timer G), and stays around long enough to
// absorb late retransmissions (Timers I, J, L).

import type { SipMessage } from '../sip/index.js';
import type { Destination, Source } from '../transport/index.js';
import { isReliable, responseDestination } from './destination.js';
import { retained } from './retained.js';
import type { TimerHandle, TimerTarget } from './timer-wheel.js';
import { Timer, TransactionState, type TransactionContext } from './types.js';

export abstract class ServerTransaction implements TimerTarget {
  /** Where responses go (§18.2.2): the connection, or the source address and rport/sent-by port. */
  readonly dest: Destination;
  readonly reliable: boolean;
  /** Free for the user: its per-transaction state (the proxy's response context). */
  userData: unknown = undefined;
  /** @internal */ readonly key: string;
  protected readonly ctx: TransactionContext;
  protected currentState: TransactionState;
  /** The last response sent, as sent (a final as retained() keeps it): resent when the request is retransmitted. */
  protected lastResponse: Buffer | null = null;
  protected lastStatus = 0;
  readonly method: string;
  private req: SipMessage | null;

  /** @internal Created by TransactionLayer. */
  constructor(ctx: TransactionContext, key: string, request: SipMessage, readonly source: Source, initial: TransactionState) {
    this.ctx = ctx;
    this.key = key;
    this.req = request;
    this.method = request.method;
    this.dest = responseDestination(request, source);
    this.reliable = isReliable(source.protocol);
    this.currentState = initial;
  }

  /**
   * The request that created the transaction, until the final response is
   * sent; null after. A finished transaction keeps only its key, where to
   * send and what to resend: at a thousand calls a second its 32 s of
   * Timer J or L would otherwise hold every request for that long.
   */
  get request(): SipMessage | null {
    return this.req;
  }

  get state(): TransactionState {
    return this.currentState;
  }

  get isInvite(): boolean {
    return false;
  }

  /** Status of the last response sent; 0 before the first. */
  get status(): number {
    return this.lastStatus;
  }

  /**
   * Sends a response to the request. Returns false, sending nothing, when the
   * state allows no such response (a second final; anything once
   * terminated), except that an INVITE transaction in Accepted passes every
   * further 2xx through (RFC 6026 §8.7).
   */
  abstract respond(res: SipMessage): boolean;

  /**
   * A final response sent once, as a stateless UAS sends it (RFC 3261 §8.2.7),
   * where the method allows: a non-INVITE transaction ends at once, without
   * its Completed state, so that a retransmission of the request is handled
   * as a new one. For challenges (§26.3.2.4: "behaving statelessly towards
   * unauthenticated requests"): a flood of them holds no state for Timer J.
   * An INVITE transaction answers as respond() does: its ACK must be absorbed.
   */
  respondStateless(res: SipMessage): boolean {
    return this.respond(res);
  }

  /** @internal The request arrived again. */
  abstract receiveRetransmission(): void;

  /** @internal */
  abstract onTimer(kind: number): void;

  /** @internal Stops timers and leaves quietly: the layer is shutting down. */
  abandon(): void {
    this.currentState = TransactionState.Terminated;
    this.cancelTimers();
  }

  protected abstract cancelTimers(): void;

  /** The final response went: the request is no longer needed. */
  protected finalSent(): void {
    this.req = null;
  }

  protected send(bytes: Buffer): void {
    this.ctx.transport.send(bytes, this.dest);
  }

  /** Resends the last response, if any, for a retransmitted request. */
  protected resendLast(): void {
    const last = this.lastResponse;
    if (last === null) return;
    this.ctx.retransmissionsSent++;
    this.send(last);
  }

  protected terminate(): void {
    if (this.currentState === TransactionState.Terminated) return;
    this.currentState = TransactionState.Terminated;
    this.cancelTimers();
    this.ctx.serverTerminated(this);
    this.ctx.user.onServerTerminated?.(this);
  }
}

/** §17.2.1 (figure 7) as changed by RFC 6026 (figure 5). */
export class InviteServerTransaction extends ServerTransaction {
  /** Timer G. */
  private retransmitTimer: TimerHandle | null = null;
  /** Timer H (Timers I and L are wheel waits, without a handle). */
  private waitTimer: TimerHandle | null = null;
  private interval = 0;
  /**
   * RFC 2543 requests only: the To tag of the final response, which the ACK
   * must carry to match (§17.2.3). Null otherwise.
   */
  private finalToTag: string | null = null;
  /**
   * A 2xx was sent: respond() passes further 2xx through (RFC 6026 §8.7),
   * in Accepted and, once the layer keeps the Accepted state as a record
   * (UDP), after this object terminated. Timer L on the object and layer
   * shutdown end it.
   */
  private passes2xx = false;

  /** @internal */
  constructor(
    ctx: TransactionContext,
    key: string,
    request: SipMessage,
    source: Source,
    /** True when matched by the RFC 2543 rules (no magic cookie in the branch). */
    private readonly legacy: boolean,
  ) {
    super(ctx, key, request, source, TransactionState.Proceeding);
  }

  override get isInvite(): boolean {
    return true;
  }

  respond(res: SipMessage): boolean {
    if (res.isRequest) throw new Error('respond() needs a response');
    const status = res.status;
    const state = this.currentState;
    if (this.passes2xx) {
      // Accepted, or its record (RFC 6026 §8.7): the TU's 2xx
      // retransmissions, and 2xx from other forks a proxy forwards, go
      // straight through.
      if (status < 200 || status >= 300) return false;
      this.send(res.toBuffer());
      return true;
    }
    if (state !== TransactionState.Proceeding) return false;
    const bytes = res.toBuffer();
    this.lastResponse = bytes;
    this.lastStatus = status;
    this.send(bytes);
    if (status < 200) return true;
    if (status < 300) {
      // The TU (end to end) retransmits 2xx; the transaction only absorbs
      // retransmitted INVITEs meanwhile.
      this.currentState = TransactionState.Accepted;
      // Accepted resends nothing: the 2xx is the TU's to retransmit.
      this.lastResponse = null;
      this.passes2xx = true;
      this.finalSent();
      if (!this.reliable && this.ctx.keepAccepted(this)) {
        // Over UDP the layer absorbs retransmitted INVITEs for Timer L from
        // a record, and this object ends now; whoever still holds it (a
        // proxy with forks still ringing) may pass further 2xx through it.
        this.terminate();
        return true;
      }
      this.ctx.wheel.wait(this, Timer.L, 64 * this.ctx.t1);
      return true;
    }
    this.currentState = TransactionState.Completed;
    this.finalSent();
    this.lastResponse = retained(bytes);
    if (this.legacy) this.finalToTag = res.to().tag ?? '';
    if (!this.reliable) {
      this.interval = this.ctx.t1;
      this.retransmitTimer = this.ctx.wheel.schedule(this, Timer.G, this.interval);
    }
    this.waitTimer = this.ctx.wheel.schedule(this, Timer.H, 64 * this.ctx.t1);
    return true;
  }

  receiveRetransmission(): void {
    this.ctx.retransmissionsAbsorbed++;
    // Proceeding: the last provisional (a 100 included), so the client stops
    // retransmitting. Completed: the final again. Accepted, Confirmed:
    // nothing; a 2xx is the TU's to resend.
    const state = this.currentState;
    if (state === TransactionState.Proceeding || state === TransactionState.Completed) this.resendLast();
  }

  /**
   * @internal An ACK matched this transaction. Returns true when absorbed:
   * the ACK for the non-2xx final. Otherwise (Accepted: the ACK for a 2xx,
   * RFC 6026 §8.7) the layer passes it to the user.
   */
  receiveAck(ack: SipMessage): boolean {
    const state = this.currentState;
    if (state === TransactionState.Confirmed) {
      this.ctx.retransmissionsAbsorbed++;
      return true;
    }
    if (state !== TransactionState.Completed) return false;
    if (this.legacy && (ack.to().tag ?? '') !== this.finalToTag) return false;
    this.currentState = TransactionState.Confirmed;
    this.cancelTimers();
    if (this.reliable) this.terminate();
    else this.ctx.wheel.wait(this, Timer.I, this.ctx.t4);
    return true;
  }

  onTimer(kind: number): void {
    switch (kind) {
      case Timer.G:
        this.retransmitTimer = null;
        if (this.currentState !== TransactionState.Completed) return;
        this.resendLast();
        this.interval = Math.min(2 * this.interval, this.ctx.t2);
        this.retransmitTimer = this.ctx.wheel.schedule(this, Timer.G, this.interval);
        return;
      case Timer.H:
        this.waitTimer = null;
        if (this.currentState !== TransactionState.Completed) return;
        // The ACK never came (§17.2.1): tell the user, after leaving the tables.
        this.currentState = TransactionState.Terminated;
        this.cancelTimers();
        this.ctx.serverTerminated(this);
        try {
          this.ctx.user.onServerTimeout?.(this);
        } finally {
          this.ctx.user.onServerTerminated?.(this);
        }
        return;
      case Timer.L:
        this.passes2xx = false;
        this.terminate();
        return;
      case Timer.I:
        // A wait (no handle): the transaction may have ended already, and terminate() then does nothing.
        this.terminate();
        return;
    }
  }

  override abandon(): void {
    this.passes2xx = false;
    super.abandon();
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
}

/** §17.2.2 (figure 8). */
export class NonInviteServerTransaction extends ServerTransaction {
  /** The NoFinal guard (Timer J is a wheel wait, without a handle). */
  private waitTimer: TimerHandle | null;

  /** @internal */
  constructor(ctx: TransactionContext, key: string, request: SipMessage, source: Source) {
    super(ctx, key, request, source, TransactionState.Trying);
    // Trying and Proceeding have no timer in the RFC: without this a user
    // that never answers would leave the transaction in the table for ever.
    this.waitTimer = ctx.wheel.schedule(this, Timer.NoFinal, 128 * ctx.t1);
  }

  respond(res: SipMessage): boolean {
    if (res.isRequest) throw new Error('respond() needs a response');
    return this.answer(res, true);
  }

  override respondStateless(res: SipMessage): boolean {
    if (res.isRequest || res.status < 200) throw new Error('respondStateless() needs a final response');
    return this.answer(res, false);
  }

  /** A response sent; a final one is then kept for Timer J (`keep`, over UDP) or the transaction ends. */
  private answer(res: SipMessage, keep: boolean): boolean {
    const state = this.currentState;
    if (state !== TransactionState.Trying && state !== TransactionState.Proceeding) return false;
    const status = res.status;
    const bytes = res.toBuffer();
    this.lastResponse = bytes;
    this.lastStatus = status;
    this.send(bytes);
    if (status < 200) {
      this.currentState = TransactionState.Proceeding;
      return true;
    }
    this.currentState = TransactionState.Completed;
    this.finalSent();
    this.cancelTimers();
    // Timer J is zero on streams, and a stateless answer has none: nothing to absorb.
    if (this.reliable || !keep) {
      this.lastResponse = null;
      this.terminate();
      return true;
    }
    if (this.ctx.keepFinal(this, bytes)) {
      // The layer answers retransmissions for Timer J from a record: this object is done.
      this.lastResponse = null;
      this.terminate();
      return true;
    }
    this.lastResponse = retained(bytes);
    this.ctx.wheel.wait(this, Timer.J, 64 * this.ctx.t1);
    return true;
  }

  receiveRetransmission(): void {
    this.ctx.retransmissionsAbsorbed++;
    // Trying: nothing to resend yet; the client keeps retransmitting.
    if (this.currentState !== TransactionState.Trying) this.resendLast();
  }

  onTimer(kind: number): void {
    if (kind === Timer.NoFinal) this.waitTimer = null;
    else if (kind !== Timer.J) return; // Timer J is a wait: terminate() does nothing if it ended already
    this.terminate();
  }

  protected cancelTimers(): void {
    if (this.waitTimer !== null) {
      this.waitTimer.cancel();
      this.waitTimer = null;
    }
  }
}
