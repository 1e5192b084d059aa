// The transaction layer (RFC 3261 §17): matches every received message to
// a server or client transaction, creates server transactions for new
// requests, and hands the user what no transaction absorbs.

import { detach, type SipMessage, type Via } from '../sip/index.js';
import type { Destination, Source } from '../transport/index.js';
import { InviteClientTransaction, NonInviteClientTransaction, type ClientTransaction } from './client.js';
import { CompletedRecords } from './finished.js';
import { clientKey, legacyServerKey, serverKey } from './keys.js';
import { InviteServerTransaction, NonInviteServerTransaction, type ServerTransaction } from './server.js';
import { TransactionTable } from './table.js';
import { TimerWheel } from './timer-wheel.js';
import { responseDestination } from './destination.js';
import type { OverloadControl } from './overload.js';
import {
  DEFAULT_TIMERS,
  type ClientTransactionOwner,
  type TransactionContext,
  type TransactionStats,
  type TransactionTimers,
  type TransactionTransport,
  type TransactionUser,
} from './types.js';

export interface TransactionLayerOptions {
  transport: TransactionTransport;
  user: TransactionUser;
  /** T1, T2, T4 in ms; defaults 500, 4000, 5000. */
  timers?: Partial<TransactionTimers>;
  /** The wheel to run timers on (a manual one in tests). Default: a new one, stopped with the layer. */
  wheel?: TimerWheel;
  /** Refuses new requests while the server is overloaded (overload.ts); none: every request is taken. */
  overload?: OverloadControl;
}

/**
 * What a completed client transaction's record keeps besides its key:
 * nothing is ever sent from it, and the transaction's own destination (an
 * object per call, often) would be kept alive for Timer K.
 */
const NOTHING = Buffer.alloc(0);
const NOWHERE: Destination = Object.freeze({ protocol: 'udp', address: '0.0.0.0', port: 0 });

/** Timer D on UDP: "at least 32 seconds" (§17.1.1.2), and no shorter than the server's Timer H, 64*T1. */
const MIN_TIMER_D_MS = 32_000;

export class TransactionLayer implements TransactionContext {
  /** @internal */ readonly transport: TransactionTransport;
  /** @internal */ readonly user: TransactionUser;
  readonly wheel: TimerWheel;
  readonly t1: number;
  readonly t2: number;
  readonly t4: number;
  /** @internal */ readonly timerD: number;
  /** @internal Counted by the transactions. */ retransmissionsSent = 0;
  /** @internal Counted by the transactions. */ retransmissionsAbsorbed = 0;

  /** Live transactions by key (table.ts: no Map, whose dead tables would promote what they held). */
  private readonly servers = new TransactionTable<ServerTransaction>();
  private readonly clients = new TransactionTable<ClientTransaction>();
  private serverInvite = 0;
  private serverNonInvite = 0;
  /** Non-INVITE server transactions over UDP in Completed, as records off the JS heap for Timer J (see finished.ts). */
  private readonly completedServers: CompletedRecords;
  /** Non-INVITE client transactions over UDP in Completed: only their keys, for Timer K. */
  private readonly completedClients: CompletedRecords;
  /** INVITE server transactions over UDP in Accepted: only their keys, for Timer L. */
  private readonly acceptedServers: CompletedRecords;
  /** INVITE client transactions over UDP in Completed: their ACKs, for Timer D. */
  private readonly completedInviteClients: CompletedRecords;
  /** INVITE client transactions in Accepted their owners released: where their 2xx go, for Timer M. */
  private readonly acceptedClients: CompletedRecords;
  private clientInvite = 0;
  private clientNonInvite = 0;
  private readonly ownsWheel: boolean;
  private readonly overload: OverloadControl | null;

  constructor(opts: TransactionLayerOptions) {
    this.transport = opts.transport;
    this.user = opts.user;
    const t = opts.timers ?? {};
    this.t1 = positive(t.t1, DEFAULT_TIMERS.t1, 't1');
    this.t2 = positive(t.t2, DEFAULT_TIMERS.t2, 't2');
    this.t4 = positive(t.t4, DEFAULT_TIMERS.t4, 't4');
    this.timerD = Math.max(MIN_TIMER_D_MS, 64 * this.t1);
    this.ownsWheel = opts.wheel === undefined;
    this.wheel = opts.wheel ?? new TimerWheel();
    this.overload = opts.overload ?? null;
    // Records still count as live transactions until their timer.
    this.completedServers = new CompletedRecords(this.wheel, 64 * this.t1, (n) => {
      this.serverNonInvite -= n;
    });
    this.completedClients = new CompletedRecords(this.wheel, this.t4, (n) => {
      this.clientNonInvite -= n;
    });
    this.acceptedServers = new CompletedRecords(this.wheel, 64 * this.t1, (n) => {
      this.serverInvite -= n;
    });
    const inviteClientEnded = (n: number): void => {
      this.clientInvite -= n;
    };
    this.completedInviteClients = new CompletedRecords(this.wheel, this.timerD, inviteClientEnded);
    this.acceptedClients = new CompletedRecords(this.wheel, 64 * this.t1, inviteClientEnded);
  }

  /**
   * Every parsed, validated message, requests with received/rport already
   * stamped on their top Via (§18.2.1).
   */
  receive(msg: SipMessage, source: Source): void {
    if (msg.isRequest) this.receiveRequest(msg, source);
    else this.receiveResponse(msg, source);
  }

  /**
   * Starts a client transaction: `req` must carry the top Via this hop
   * added, with a fresh branch (newBranch()). The request is sent before
   * this returns; a failure the transport reports at once reaches
   * owner.onTransportError() before it returns too. Throws for ACK (not a
   * transaction: send it with the transport), for a branch without the
   * magic cookie, and for a branch and method already in use.
   */
  sendRequest(req: SipMessage, dest: Destination, owner: ClientTransactionOwner): ClientTransaction {
    if (!req.isRequest) throw new Error('sendRequest() needs a request');
    const method = req.method;
    if (method === 'ACK') throw new Error('ACK is not sent in a client transaction');
    const via = req.topVia();
    const branch = via === null ? null : via.branch;
    if (via === null || branch === null || !via.hasRfc3261Branch) throw new Error('the request needs a top Via with a z9hG4bK branch');
    const key = detach(clientKey(branch, method));
    if (this.clients.has(key)) throw new Error('a client transaction with branch ' + branch + ' and method ' + method + ' exists');
    let tx: ClientTransaction;
    if (method === 'INVITE') {
      tx = new InviteClientTransaction(this, key, req, dest, owner);
      this.clientInvite++;
    } else {
      tx = new NonInviteClientTransaction(this, key, req, dest, owner);
      this.clientNonInvite++;
    }
    this.clients.set(key, tx);
    tx.start();
    return tx;
  }

  /**
   * The transport could not send to `dest` (wire TransportSink.onSendError
   * here). Every client transaction still waiting for a response from that
   * endpoint or connection ends with owner.onTransportError(): the
   * transport names the endpoint, not the message, and a failed connect
   * loses everything queued on it. Walks the client table: errors are rare.
   */
  transportError(dest: Destination, err: Error): void {
    const failed: ClientTransaction[] = [];
    const conn = dest.connectionId ?? 0;
    for (const tx of this.clients.snapshot()) {
      const d = tx.dest;
      if (
        (d.protocol === dest.protocol && d.port === dest.port && d.address === dest.address) ||
        (conn !== 0 && d.connectionId === conn)
      ) {
        failed.push(tx);
      }
    }
    for (const tx of failed) tx.transportFailed(err);
  }

  stats(): TransactionStats {
    return {
      serverInvite: this.serverInvite,
      serverNonInvite: this.serverNonInvite,
      clientInvite: this.clientInvite,
      clientNonInvite: this.clientNonInvite,
      retransmissionsSent: this.retransmissionsSent,
      retransmissionsAbsorbed: this.retransmissionsAbsorbed,
    };
  }

  /** Drops every transaction without telling anyone, and stops the wheel when the layer made it. */
  stop(): void {
    for (const tx of this.servers.snapshot()) tx.abandon();
    for (const tx of this.clients.snapshot()) tx.abandon();
    // Their last waits have no handle to cancel; on a wheel of its own, stop() below drops them.
    if (!this.ownsWheel) {
      const servers = this.servers;
      const clients = this.clients;
      const records: unknown[] = this.records;
      this.wheel.dropWaits((t) => {
        const key = (t as { key?: unknown }).key;
        return records.includes(t) || (typeof key === 'string' && (servers.get(key) === t || clients.get(key) === t));
      });
    }
    for (const r of this.records) r.clear();
    this.servers.clear();
    this.clients.clear();
    this.serverInvite = this.serverNonInvite = this.clientInvite = this.clientNonInvite = 0;
    if (this.ownsWheel) this.wheel.stop();
  }

  private get records(): CompletedRecords[] {
    return [this.completedServers, this.completedClients, this.acceptedServers, this.completedInviteClients, this.acceptedClients];
  }

  /** @internal */
  serverTerminated(tx: ServerTransaction): void {
    if (!this.servers.deleteIf(tx.key, tx)) return;
    if (tx.isInvite) this.serverInvite--;
    else this.serverNonInvite--;
  }

  /**
   * @internal A non-INVITE server transaction over UDP sent its final:
   * from now on the layer answers its retransmissions from a record, for
   * Timer J, and the transaction object leaves the table. False: keep it.
   */
  keepFinal(tx: ServerTransaction, bytes: Buffer): boolean {
    return this.serverRecord(tx, this.completedServers, bytes, tx.dest);
  }

  /** @internal An INVITE server transaction over UDP sent a 2xx: the layer absorbs retransmitted INVITEs for Timer L from a record. */
  keepAccepted(tx: ServerTransaction): boolean {
    return this.serverRecord(tx, this.acceptedServers, NOTHING, NOWHERE);
  }

  /**
   * @internal A non-INVITE client transaction over UDP got its final: the
   * layer absorbs the retransmissions of it for Timer K from a record, and
   * the transaction object leaves the table. False: keep it.
   */
  keepCompleted(tx: ClientTransaction): boolean {
    return this.clientRecord(tx, this.completedClients, NOTHING, NOWHERE);
  }

  /** @internal An INVITE client transaction over UDP got a non-2xx final: the layer resends `ack` for each retransmission of it, for Timer D. */
  keepAck(tx: ClientTransaction, ack: Buffer): boolean {
    return this.clientRecord(tx, this.completedInviteClients, ack, tx.dest);
  }

  /** @internal An accepted INVITE client transaction was released: each 2xx that matches goes to the user with `upstream`, for Timer M. */
  keepAccepted2xx(tx: ClientTransaction, upstream: Destination): boolean {
    return this.clientRecord(tx, this.acceptedClients, NOTHING, upstream);
  }

  private serverRecord(tx: ServerTransaction, records: CompletedRecords, bytes: Buffer, dest: Destination): boolean {
    // Out of the table first, so that serverTerminated() leaves the count to the record.
    if (!this.servers.deleteIf(tx.key, tx)) return false;
    if (records.keep(tx.key, bytes, dest)) return true;
    this.servers.set(tx.key, tx); // a key the records cannot hold (beyond latin1): the object stays
    return false;
  }

  private clientRecord(tx: ClientTransaction, records: CompletedRecords, bytes: Buffer, dest: Destination): boolean {
    // Out of the table first, so that clientTerminated() leaves the count to the record.
    if (!this.clients.deleteIf(tx.key, tx)) return false;
    if (records.keep(tx.key, bytes, dest)) return true;
    this.clients.set(tx.key, tx); // a key the records cannot hold (beyond latin1): the object stays
    return false;
  }

  /** @internal */
  clientTerminated(tx: ClientTransaction): void {
    if (!this.clients.deleteIf(tx.key, tx)) return;
    if (tx.isInvite) this.clientInvite--;
    else this.clientNonInvite--;
  }

  private receiveRequest(req: SipMessage, source: Source): void {
    const via = req.topVia();
    if (via === null) return; // validated messages always have one
    const method = req.method;
    const branch = via.branch;
    const rfc3261 = branch !== null && via.hasRfc3261Branch;
    if (method === 'ACK') {
      this.receiveAck(req, source, via, rfc3261 ? branch : null);
      return;
    }
    const toTag = rfc3261 ? '' : (req.to().tag ?? '');
    const key = rfc3261 ? serverKey(via, branch, method) : legacyServerKey(req, via, toTag, method);
    const existing = this.servers.get(key);
    if (existing !== undefined) {
      existing.receiveRetransmission();
      return;
    }
    if (method === 'INVITE') {
      if (this.acceptedServers.has(key)) {
        // An accepted INVITE again: absorbed, nothing sent (RFC 6026 §8.7, the 2xx is the TU's to resend).
        this.retransmissionsAbsorbed++;
        return;
      }
    } else {
      const answer = this.completedServers.answer(key);
      if (answer !== null) {
        // A retransmission of a request whose transaction is in Completed: its final again (§17.2.2).
        this.retransmissionsAbsorbed++;
        this.retransmissionsSent++;
        this.transport.send(answer.bytes, answer.dest);
        return;
      }
    }
    // Overloaded: a new request is refused before it costs a transaction (CANCEL goes on: it ends work).
    const overload = this.overload;
    if (overload !== null && overload.level > 0 && method !== 'CANCEL' && overload.refuses(req)) {
      this.transport.send(overload.refusal(req), responseDestination(req, source));
      return;
    }
    let tx: ServerTransaction;
    const kept = detach(key);
    if (method === 'INVITE') {
      tx = new InviteServerTransaction(this, kept, req, source, !rfc3261);
      this.serverInvite++;
    } else {
      tx = new NonInviteServerTransaction(this, kept, req, source);
      this.serverNonInvite++;
    }
    this.servers.set(kept, tx);
    if (method === 'CANCEL') {
      // §9.2: the INVITE with the same branch (or, RFC 2543, the same
      // identifying fields), method INVITE.
      const inviteKey = rfc3261 ? serverKey(via, branch, 'INVITE') : legacyServerKey(req, via, toTag, 'INVITE');
      const invite = this.servers.get(inviteKey);
      if (invite !== undefined) this.user.onCancel(tx, invite, req, false);
      else this.user.onCancel(tx, null, req, this.acceptedServers.has(inviteKey));
      return;
    }
    this.user.onRequest(tx, req);
  }

  /**
   * §17.2.3: an ACK matches the INVITE transaction it acknowledges. RFC
   * 2543 ACKs carry the tag of the response in To while the INVITE usually
   * had none: look up with the ACK's To tag (an INVITE inside a dialog),
   * then with none; the transaction checks the tag against its final.
   */
  private receiveAck(ack: SipMessage, source: Source, via: Via, branch: string | null): void {
    let tx: ServerTransaction | undefined;
    if (branch !== null) tx = this.servers.get(serverKey(via, branch, 'INVITE'));
    else {
      const toTag = ack.to().tag ?? '';
      tx = this.servers.get(legacyServerKey(ack, via, toTag, 'INVITE'));
      if (tx === undefined && toTag !== '') tx = this.servers.get(legacyServerKey(ack, via, '', 'INVITE'));
    }
    if (tx instanceof InviteServerTransaction && tx.receiveAck(ack)) return;
    this.user.onAck(ack, source);
  }

  private receiveResponse(res: SipMessage, source: Source): void {
    const via = res.topVia();
    const branch = via === null ? null : via.branch;
    if (branch === null) {
      this.user.onStrayResponse(res, source);
      return;
    }
    const method = res.cseq().method;
    const key = clientKey(branch, method);
    const tx = this.clients.get(key);
    if (tx !== undefined) tx.receiveResponse(res);
    else if (method === 'INVITE') this.inviteRecordResponse(res, source, key);
    else if (this.completedClients.has(key)) {
      // A retransmitted final for a transaction in Completed (§17.1.2.2).
      this.retransmissionsAbsorbed++;
    } else this.user.onStrayResponse(res, source);
  }

  /** A response to an INVITE whose client transaction is a record, if any: as the transaction would have taken it (client.ts). */
  private inviteRecordResponse(res: SipMessage, source: Source, key: string): void {
    const status = res.status;
    const accepted = this.acceptedClients.answer(key);
    if (accepted !== null) {
      // Accepted (RFC 6026 §8.4): each 2xx goes on, to where the owner said; anything else is absorbed.
      if (status >= 200 && status < 300) this.user.onStrayResponse(res, source, accepted.dest);
      else this.retransmissionsAbsorbed++;
      return;
    }
    const completed = this.completedInviteClients.answer(key);
    if (completed === null) this.user.onStrayResponse(res, source);
    else if (status >= 300) {
      // The server did not get our ACK (§17.1.1.2): send it again.
      this.retransmissionsAbsorbed++;
      this.retransmissionsSent++;
      this.transport.send(completed.bytes, completed.dest);
    } else if (status >= 200) {
      // A 2xx after a non-2xx (a misbehaving fork): forwarded as any 2xx without a transaction.
      this.user.onStrayResponse(res, source);
    } else this.retransmissionsAbsorbed++;
  }
}

function positive(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!(v > 0) || !Number.isFinite(v)) throw new RangeError(`timer ${name} must be a positive number of ms`);
  return v;
}
