// Names shared by the transaction layer's modules: states, timer kinds,
// timer values and the callbacks of the layer's users.

import type { SipMessage } from '../sip/index.js';
import type { Destination, Source } from '../transport/index.js';
import type { ClientTransaction } from './client.js';
import type { ServerTransaction } from './server.js';
import type { TimerWheel } from './timer-wheel.js';

/**
 * Transaction states of RFC 3261 §17 (figures 5 to 8) with RFC 6026's
 * Accepted. Which ones a transaction passes through depends on its kind:
 *   INVITE client:     Calling → Proceeding → Accepted | Completed → Terminated
 *   non-INVITE client: Trying → Proceeding → Completed → Terminated
 *   INVITE server:     Proceeding → Accepted | Completed → Confirmed → Terminated
 *   non-INVITE server: Trying → Proceeding → Completed → Terminated
 */
export const TransactionState = {
  Calling: 'Calling',
  Trying: 'Trying',
  Proceeding: 'Proceeding',
  Completed: 'Completed',
  Accepted: 'Accepted',
  Confirmed: 'Confirmed',
  Terminated: 'Terminated',
} as const;
export type TransactionState = (typeof TransactionState)[keyof typeof TransactionState];

/** Timer kinds passed to TimerWheel.schedule() and back to onTimer(). */
export const Timer = {
  /** INVITE client: retransmit the INVITE (UDP). */
  A: 1,
  /** INVITE client: no response at all. */
  B: 2,
  /** INVITE client: absorb retransmitted non-2xx finals. */
  D: 4,
  /** non-INVITE client: retransmit the request (UDP). */
  E: 5,
  /** non-INVITE client: no final response. */
  F: 6,
  /** INVITE server: retransmit the non-2xx final (UDP). */
  G: 7,
  /** INVITE server: the ACK never came. */
  H: 8,
  /** INVITE server: absorb retransmitted ACKs. */
  I: 9,
  /** non-INVITE server: absorb retransmitted requests. */
  J: 10,
  /** non-INVITE client: absorb retransmitted finals. */
  K: 11,
  /** INVITE server (RFC 6026): absorb retransmitted INVITEs after a 2xx. */
  L: 12,
  /** INVITE client (RFC 6026): pass up retransmitted 2xx. */
  M: 13,
  /**
   * non-INVITE server, not in the RFC: the user never sent a final. The
   * client gave up long ago (Timer F, 64*T1; RFC 4320), so after twice that
   * the transaction is dropped rather than kept for ever.
   */
  NoFinal: 14,
} as const;

/** RFC 3261 §17.1.1.1 and table 4, in ms. */
export interface TransactionTimers {
  /** RTT estimate. Default 500. */
  t1: number;
  /** Longest interval between retransmissions of non-INVITE requests and INVITE responses. Default 4000. */
  t2: number;
  /** Longest time a message stays in the network. Default 5000. */
  t4: number;
}

export const DEFAULT_TIMERS: Readonly<TransactionTimers> = Object.freeze({ t1: 500, t2: 4000, t4: 5000 });

/** What the layer sends with: the transport layer, or a fake in tests. */
export interface TransactionTransport {
  send(data: Buffer, dest: Destination): void;
}

/** The core above the layer (proxy, registrar): gets what no transaction absorbed. */
export interface TransactionUser {
  /** A new request (never a retransmission, never ACK or CANCEL). Answer with tx.respond(). */
  onRequest(tx: ServerTransaction, req: SipMessage): void;
  /**
   * A new CANCEL, with the INVITE server transaction it cancels (§9.2), or
   * null when there is none. `inviteAnswered`: there is no object, but the
   * INVITE is known, its 2xx sent, its Accepted state a record of the
   * layer (answer 200: the CANCEL has no effect). Neither: answer 481. The
   * CANCEL has its own transaction: answer it through cancelTx.
   */
  onCancel(cancelTx: ServerTransaction, inviteTx: ServerTransaction | null, req: SipMessage, inviteAnswered: boolean): void;
  /**
   * An ACK no server transaction absorbed: the ACK for a 2xx (its own
   * transaction in RFC 3261 terms), which a proxy forwards statelessly.
   */
  onAck(req: SipMessage, source: Source): void;
  /**
   * A response that matches no client transaction (§16.7: forward 2xx
   * statelessly, RFC 6026). With `upstream`: a 2xx that matched the record
   * of an accepted INVITE whose owner released it
   * (InviteClientTransaction.release()), and where the owner said it goes.
   */
  onStrayResponse(res: SipMessage, source: Source, upstream?: Destination): void;
  /** Timer H fired: the non-2xx final response to an INVITE was never acknowledged. */
  onServerTimeout?(tx: ServerTransaction): void;
  /** A server transaction ended and left the tables (for the user's per-transaction state). */
  onServerTerminated?(tx: ServerTransaction): void;
}

/** Whoever sent a request through a client transaction: the proxy's branch, the registrar's probe... */
export interface ClientTransactionOwner {
  /** Every response the transaction passes up: provisionals, the first final, and each 2xx to an INVITE. */
  onResponse(ctx: ClientTransaction, res: SipMessage): void;
  /** Timer B or F: no (final) response in time. The transaction is terminated. */
  onTimeout(ctx: ClientTransaction): void;
  /**
   * The transport reported it could not send the request (it may do so
   * during sendRequest(), before it returns). The transaction is terminated.
   */
  onTransportError(ctx: ClientTransaction, err: Error): void;
  /** The transaction ended and left the tables, whatever the reason. */
  onTerminated?(ctx: ClientTransaction): void;
}

/** Counters for metrics; a fresh snapshot per call. */
export interface TransactionStats {
  serverInvite: number;
  serverNonInvite: number;
  clientInvite: number;
  clientNonInvite: number;
  /** Messages sent again: Timer A/E/G retransmissions, responses resent to retransmitted requests, ACKs resent. */
  retransmissionsSent: number;
  /** Retransmitted requests, responses and ACKs a transaction took without passing them up. */
  retransmissionsAbsorbed: number;
}

/**
 * @internal What a transaction needs from the layer. Implemented by
 * TransactionLayer; kept as an interface so the transaction modules do not
 * import the layer.
 */
export interface TransactionContext {
  readonly transport: TransactionTransport;
  readonly user: TransactionUser;
  readonly wheel: TimerWheel;
  readonly t1: number;
  readonly t2: number;
  readonly t4: number;
  /** Timer D on UDP. */
  readonly timerD: number;
  retransmissionsSent: number;
  retransmissionsAbsorbed: number;
  serverTerminated(tx: ServerTransaction): void;
  /** A non-INVITE server transaction over UDP in Completed: true when the context keeps its final for Timer J. */
  keepFinal(tx: ServerTransaction, bytes: Buffer): boolean;
  clientTerminated(tx: ClientTransaction): void;
  /** A non-INVITE client transaction over UDP in Completed: true when the context absorbs its retransmitted responses for Timer K. */
  keepCompleted(tx: ClientTransaction): boolean;
  /** An INVITE server transaction over UDP in Accepted: true when the context absorbs its retransmitted INVITEs for Timer L. */
  keepAccepted(tx: ServerTransaction): boolean;
  /** An INVITE client transaction over UDP in Completed: true when the context resends `ack` for each retransmitted final, for Timer D. */
  keepAck(tx: ClientTransaction, ack: Buffer): boolean;
  /** An INVITE client transaction in Accepted its owner released: true when the context passes each further 2xx on towards `upstream`, for Timer M. */
  keepAccepted2xx(tx: ClientTransaction, upstream: Destination): boolean;
}
