// One dgram socket per UDP listen spec. A datagram is one SIP message
// (RFC 3261 §18.3 framing does not apply); it is handed up as received.

import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns';
import { isIP, isIPv6 } from 'node:net';
import { bindingResponse, isBindingIndication, isStun } from './stun.js';
import type {
  Endpoint,
  ListenSpec,
  Source,
  TransportLimits,
  TransportLog,
  TransportSink,
  TransportStats,
} from './types.js';

const CR = 0x0d;
const LF = 0x0a;

/**
 * dgram resolves every destination, an IP literal too, through dns.lookup(),
 * which answers a literal on the next tick: an object and a tick per
 * datagram sent, seven per proxied call. Portier sends to addresses it has
 * resolved already; a literal is answered at once, anything else still goes
 * to dns.lookup().
 */
function literalLookup(address: string, family: unknown, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const kind = isIP(address);
  if (kind !== 0) callback(null, address, kind);
  else dnsLookup(address, family as number, callback);
}

/**
 * Sources kept per listener, so that the datagrams of one address and port
 * share one frozen Source as a connection's messages do: a server
 * transaction keeps its Source for its 32 s of Timer J or L, and one object
 * per datagram was a tenth of what a call left in the old generation.
 * Emptied when full: a scan from many ports cannot grow it.
 */
const SOURCE_CACHE_MAX = 4096;

/**
 * Queue probes: a datagram the listener sends to itself, which waits in its
 * receive queue behind whatever is there. Its time there is what a request
 * arriving now waits before Portier reads it: the one figure that says the
 * server has fallen behind (overload control, src/transaction/overload.ts).
 * Node cannot read the socket's queue, and the event loop's lag stays small
 * however deep it is (libuv reads 32 datagrams per socket between timers).
 * A probe is 20 octets: 0x00 (never a SIP message's first octet), 15 random
 * octets of this listener, a sequence number; it never leaves the host.
 */
const PROBE_LENGTH = 20;
/** A probe not back by then was dropped (the queue was full) or cannot arrive. */
const PROBE_LOST_MS = 2000;
/** A probe lost while the listener read fewer datagrams than this cannot have found the queue full: probing stops. */
const PROBE_BROKEN_BELOW = 100;

export class UdpListener {
  readonly spec: ListenSpec;
  readonly family: 4 | 6;
  private readonly socket: dgram.Socket;
  private readonly limits: TransportLimits;
  private readonly stats: TransportStats;
  private readonly sink: TransportSink;
  private readonly log: TransportLog | undefined;
  private readonly bindHost: string;
  private localEndpoint: Endpoint | null = null;
  private closed = false;
  private readonly sources = new Map<number, Source>();
  private readonly probe = Buffer.alloc(PROBE_LENGTH);
  private probeSeq = 0;
  /** When the probe on its way was sent (performance.now()); 0: none is. */
  private probeSentAt = 0;
  /** The longest wait of the probes back since the last takeQueueDelay(). */
  private probeDelay = 0;
  /** The age of the probe on its way was reported: its wait, when it is back, adds nothing. */
  private probeAgeReported = false;
  /** Datagrams read since the probe on its way was sent. */
  private sinceProbe = 0;
  private probing = true;
  /**
   * With workers (config `workers`): this worker's index, written in its
   * probes' second octet, and where a probe of another worker goes (each
   * worker probes the queue they all read, and any of them may read it).
   */
  private workerIndex = -1;
  private probeOwner: ((worker: number, probe: Buffer) => void) | null = null;

  constructor(
    spec: ListenSpec,
    host: string,
    limits: TransportLimits,
    stats: TransportStats,
    sink: TransportSink,
    log?: TransportLog,
  ) {
    this.spec = spec;
    this.family = isIPv6(host) ? 6 : 4;
    this.limits = limits;
    this.stats = stats;
    this.sink = sink;
    this.log = log;
    const options: dgram.SocketOptions = {
      type: this.family === 6 ? 'udp6' : 'udp4',
      // So that [::] and 0.0.0.0 can be bound side by side, each family on its own socket.
      ipv6Only: this.family === 6,
      lookup: literalLookup as unknown as dgram.SocketOptions['lookup'],
    };
    if (limits.udpRecvBufferSize) options.recvBufferSize = limits.udpRecvBufferSize;
    if (limits.udpSendBufferSize) options.sendBufferSize = limits.udpSendBufferSize;
    this.socket = dgram.createSocket(options);
    this.bindHost = host;
    randomBytes(PROBE_LENGTH - 5).copy(this.probe, 1);
  }

  /** One of several workers reading this socket: `relay` takes the probes of the others. */
  shareProbes(workerIndex: number, relay: (worker: number, probe: Buffer) => void): void {
    this.workerIndex = workerIndex;
    this.probe[1] = workerIndex;
    this.probeOwner = relay;
  }

  /** The probe on its way may be lost through no fault of the queue (a worker restarting): it is not waited for. */
  forgetProbe(): void {
    this.probeSentAt = 0;
    this.probeDelay = 0;
  }

  /** A probe of this listener, read by another worker. */
  acceptProbe(msg: Buffer): void {
    if (msg.length === PROBE_LENGTH && this.localEndpoint !== null) this.isProbe(msg, this.localEndpoint.port);
  }

  /**
   * Sends a queue probe to this socket unless one is on its way. One lost
   * (PROBE_LOST_MS) is replaced; one lost while the socket read almost
   * nothing cannot have been dropped by a full queue: the path to itself is
   * blocked (a firewall), probing stops for good and queueDelay() says 0.
   */
  sendProbe(now: number): void {
    if (!this.probing || this.closed || this.localEndpoint === null) return;
    if (this.probeSentAt !== 0) {
      if (now - this.probeSentAt < PROBE_LOST_MS) return;
      if (this.sinceProbe < PROBE_BROKEN_BELOW) {
        this.probing = false;
        this.probeDelay = 0;
        this.log?.warn({ local: this.localEndpoint }, 'udp queue probes do not come back (a firewall on loopback?): overload control cannot watch this socket');
        return;
      }
      this.probeDelay = Math.max(this.probeDelay, now - this.probeSentAt);
    }
    this.probe.writeUInt32BE(++this.probeSeq >>> 0, PROBE_LENGTH - 4);
    this.probeSentAt = now;
    this.probeAgeReported = false;
    this.sinceProbe = 0;
    const e = this.localEndpoint;
    const to = e.address === '0.0.0.0' ? '127.0.0.1' : e.address === '::' ? '::1' : e.address;
    this.socket.send(this.probe, e.port, to, this.onSent);
  }

  /**
   * How long a datagram waited in this socket's queue before it was read,
   * in ms, since the previous call: the longest wait of the probes back
   * since, or the age of the one on its way when that is longer (a queue
   * that has grown). Each probe's wait is reported once, as its age or as
   * its wait: a pause of the loop (a collection) counts in one window, not
   * in two.
   */
  takeQueueDelay(now: number): number {
    const age = this.probeSentAt === 0 ? 0 : now - this.probeSentAt;
    if (this.probeSentAt !== 0) this.probeAgeReported = true;
    const out = age > this.probeDelay ? age : this.probeDelay;
    this.probeDelay = 0;
    return out;
  }

  /** This listener's own probe, the one on its way: its wait is recorded. */
  private isProbe(msg: Buffer, port: number): boolean {
    const probe = this.probe;
    if (port !== this.localEndpoint?.port || msg.compare(probe, 0, PROBE_LENGTH - 4, 0, PROBE_LENGTH - 4) !== 0) return false;
    if (msg.readUInt32BE(PROBE_LENGTH - 4) === probe.readUInt32BE(PROBE_LENGTH - 4) && this.probeSentAt !== 0) {
      if (!this.probeAgeReported) this.probeDelay = Math.max(this.probeDelay, performance.now() - this.probeSentAt);
      this.probeSentAt = 0;
    }
    return true; // a late copy of an earlier probe: swallowed too
  }

  /** The bound local endpoint; valid after start(). */
  get local(): Endpoint {
    if (this.localEndpoint === null) throw new Error('UDP listener not started');
    return this.localEndpoint;
  }

  get started(): boolean {
    return this.localEndpoint !== null;
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = this.socket;
      const onError = (err: Error) => {
        socket.removeListener('listening', onListening);
        reject(err);
      };
      const onListening = () => {
        socket.removeListener('error', onError);
        const a = socket.address();
        this.localEndpoint = Object.freeze({ protocol: 'udp', address: a.address, port: a.port });
        socket.on('error', this.onError);
        socket.on('message', this.onMessage);
        resolve();
      };
      socket.once('error', onError);
      socket.once('listening', onListening);
      // Exclusive unless shared with the other workers of a cluster (ListenSpec.shared).
      socket.bind({ port: this.spec.port, address: this.bindHost, exclusive: this.spec.shared !== true });
    });
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve(); // never bound, or already closed
      }
    });
  }

  send(data: Buffer, port: number, address: string): void {
    if (this.closed) {
      this.stats.dropped['send-error']++;
      return;
    }
    this.stats.messagesOut.udp++;
    this.stats.bytesOut.udp += data.length;
    this.socket.send(data, port, address, this.onSent);
  }

  // Shared callback: send errors (EHOSTUNREACH, ENETUNREACH, a closed socket)
  // are counted, the datagram is lost as UDP datagrams may be.
  private readonly onSent = (err: Error | null): void => {
    if (err) {
      this.stats.dropped['send-error']++;
      this.log?.debug?.({ err, local: this.localEndpoint }, 'udp send failed');
    }
  };

  private readonly onError = (err: Error): void => {
    this.log?.warn({ err, local: this.localEndpoint }, 'udp socket error');
  };

  private readonly onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    const stats = this.stats;
    stats.bytesIn.udp += msg.length;
    if (msg.length > this.limits.maxMessageSize) {
      stats.dropped.oversize++;
      return;
    }
    if (msg.length === 0) return;
    this.sinceProbe++;
    const first = msg[0];
    if (first === CR || first === LF) {
      if (onlyCrlf(msg)) {
        stats.keepalivesIn.udp++;
        return;
      }
    } else if (first <= 0x01) {
      if (msg.length === PROBE_LENGTH && first === 0) {
        if (this.isProbe(msg, rinfo.port)) return;
        // Another worker's: it goes to that worker (a probe never leaves the host, nor comes from elsewhere).
        if (this.probeOwner !== null && msg[1] !== this.workerIndex && rinfo.port === this.localEndpoint?.port) {
          this.probeOwner(msg[1], msg);
          return;
        }
      }
      if (isStun(msg)) {
        this.answerStun(msg, rinfo);
        return;
      }
    }
    stats.messagesIn.udp++;
    const source = this.sourceOf(rinfo.address, rinfo.port);
    try {
      this.sink.onMessage(msg, source);
    } catch (err) {
      this.log?.warn({ err, source }, 'message handler threw');
    }
  };

  private sourceOf(address: string, port: number): Source {
    // By port first: one lookup by a small integer, then the address compared.
    // Two devices on one port (behind different NATs) take turns in the slot.
    let source = this.sources.get(port);
    if (source !== undefined && source.address === address) return source;
    if (source === undefined && this.sources.size >= SOURCE_CACHE_MAX) this.sources.clear();
    source = Object.freeze<Source>({
      protocol: 'udp',
      address,
      port,
      family: this.family,
      local: this.localEndpoint as Endpoint,
      connectionId: 0,
    });
    this.sources.set(port, source);
    return source;
  }

  private answerStun(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const response = bindingResponse(msg, rinfo.address, rinfo.port);
    if (response === null) {
      if (isBindingIndication(msg)) this.stats.keepalivesIn.udp++;
      else this.stats.dropped.stun++;
      return;
    }
    this.stats.stunAnswered++;
    this.stats.bytesOut.udp += response.length;
    this.socket.send(response, rinfo.port, rinfo.address, this.onSent);
  }
}

function onlyCrlf(msg: Buffer): boolean {
  for (let i = 0; i < msg.length; i++) {
    const b = msg[i];
    if (b !== CR && b !== LF) return false;
  }
  return true;
}
