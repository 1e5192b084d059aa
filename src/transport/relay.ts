// The link between the worker processes of one server (config `workers`):
// every worker reads the same public sockets, and a message it reads that
// another worker owns (owner: a function of the message's bytes given by the
// caller, the Call-ID's hash) is handed to that worker over this link, with
// where it came from. A worker that must send down a connection another
// worker holds asks that worker to. Connections opening and closing are told
// to every worker, so each knows which flows are up.
//
// One TCP connection on loopback per ordered pair of workers, carrying
// length-prefixed frames; the first frame proves the sender knows the
// primary's cookie. TCP rather than UDP: a message from a stream connection
// must not be lost on the way, and a UDP datagram may not fit with its header.

import net from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { PROTOCOLS, type Destination, type Endpoint, type Protocol, type Source, type TransportLog } from './types.js';

/** Which worker this process is, of how many, and the secret that the links between them prove. */
export interface WorkerSeat {
  index: number;
  count: number;
  /** 16 octets, the same for every worker of one primary. */
  cookie: Buffer;
}

/** What the relay hands to the transport layer of this worker. */
export interface RelayHandlers {
  /** A message this worker owns, read by another. */
  deliver(data: Buffer, source: Source): void;
  /** Send down one of this worker's connections, for another worker. */
  send(data: Buffer, dest: Destination): void;
  /** A queue probe of one of this worker's UDP listeners, read by another worker. */
  probe(listener: number, data: Buffer): void;
  opened(connectionId: number, remote: Endpoint): void;
  closed(connectionId: number, remote: Endpoint): void;
}

export interface RelayStats {
  /** Messages handed to another worker, and read for this one. */
  forwarded: number;
  received: number;
  /** Sends asked of another worker. */
  sendsRelayed: number;
  /** Frames lost: no link to that worker (not started, restarting) or its link backed up. */
  dropped: number;
}

const OP_HELLO = 0;
const OP_MSG = 1;
const OP_SEND = 2;
const OP_OPEN = 3;
const OP_CLOSED = 4;
const OP_PROBE = 5;

/** Largest frame: the largest message limits.message-size allows (1 MiB) and its header. */
const MAX_FRAME = 1048576 + 1024;
/** A link this far behind drops what is asked of it (a worker that hangs must not take the others' memory). */
const MAX_BACKLOG = 16 * 1024 * 1024;
const SOURCE_CACHE_MAX = 4096;

function uncork(link: Link): void {
  link.corked = false;
  link.socket.uncork();
}

function protocolCode(p: Protocol): number {
  return PROTOCOLS.indexOf(p);
}

/** Writes `s` (an IP literal, ASCII) with a length octet before it; returns the next offset. */
function putAddress(buf: Buffer, off: number, s: string): number {
  buf[off] = s.length;
  buf.write(s, off + 1, 'latin1');
  return off + 1 + s.length;
}

interface Link {
  socket: net.Socket;
  port: number;
  /** Frames written in this tick go out together, in one write, at its end. */
  corked: boolean;
}

export class WorkerRelay {
  readonly seat: WorkerSeat;
  readonly stats: RelayStats = { forwarded: 0, received: 0, sendsRelayed: 0, dropped: 0 };
  private readonly handlers: RelayHandlers;
  private readonly log: TransportLog | undefined;
  private readonly server: net.Server;
  private readonly inbound = new Set<net.Socket>();
  private peers: Array<number | null> = [];
  private readonly links: Array<Link | null> = [];
  private readonly sources = new Map<string, Source>();
  private closed = false;

  constructor(seat: WorkerSeat, handlers: RelayHandlers, log?: TransportLog) {
    if (seat.cookie.length !== 16) throw new Error('worker cookie must be 16 octets');
    this.seat = seat;
    this.handlers = handlers;
    this.log = log;
    this.server = net.createServer((socket) => this.accept(socket));
    for (let i = 0; i < seat.count; i++) this.links.push(null);
  }

  /** Listens on a free port of 127.0.0.1 and resolves with it (the primary tells it to the other workers). */
  start(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
        this.server.removeListener('error', reject);
        this.server.on('error', (err) => this.log?.warn({ err }, 'worker relay listener error'));
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  /**
   * Who takes a message that worker `w` owns: w while it is up, else the
   * next worker up after it (in index order), the same for every reader so
   * that a call's messages still meet in one place while w restarts.
   */
  route(w: number): number {
    const n = this.seat.count;
    for (let k = 0; k < n; k++) {
      const j = (w + k) % n;
      if (this.isUp(j)) return j;
    }
    return this.seat.index;
  }

  /** Whether worker `w` is up (its relay port known). */
  isUp(w: number): boolean {
    const p = this.peers[w];
    return w === this.seat.index || (p !== null && p !== undefined);
  }

  /** Every worker is up and known: a probe read by any of them comes back. */
  get complete(): boolean {
    if (this.peers.length !== this.seat.count) return false;
    for (const p of this.peers) if (p === null) return false;
    return true;
  }

  /** The relay port of every worker (null: not up); a worker restarted has a new one. */
  setPeers(ports: Array<number | null>): void {
    this.peers = ports.slice();
    for (let i = 0; i < this.links.length; i++) {
      const l = this.links[i];
      if (l !== null && l.port !== ports[i]) {
        l.socket.destroy();
        this.links[i] = null;
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.links) l?.socket.destroy();
    for (const s of this.inbound) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Hands a message read here to the worker that owns it. */
  forward(worker: number, data: Buffer, source: Source): void {
    const local = source.local;
    const head = 1 + 1 + 4 + 2 + 1 + source.address.length + 1 + 2 + 1 + local.address.length;
    const frame = this.frame(head, data);
    let off = 4;
    frame[off++] = OP_MSG;
    frame[off++] = protocolCode(source.protocol);
    frame.writeUInt32BE(source.connectionId >>> 0, off);
    frame.writeUInt16BE(source.port, off + 4);
    off = putAddress(frame, off + 6, source.address);
    frame[off++] = protocolCode(local.protocol);
    frame.writeUInt16BE(local.port, off);
    off = putAddress(frame, off + 2, local.address);
    data.copy(frame, off);
    this.stats.forwarded++;
    this.write(worker, frame);
  }

  /** Asks the worker holding dest.connectionId to send `data` down it. */
  sendVia(worker: number, data: Buffer, dest: Destination): void {
    const head = 1 + 1 + 4 + 2 + 1 + dest.address.length;
    const frame = this.frame(head, data);
    let off = 4;
    frame[off++] = OP_SEND;
    frame[off++] = protocolCode(dest.protocol);
    frame.writeUInt32BE((dest.connectionId ?? 0) >>> 0, off);
    frame.writeUInt16BE(dest.port, off + 4);
    off = putAddress(frame, off + 6, dest.address);
    data.copy(frame, off);
    this.stats.sendsRelayed++;
    this.write(worker, frame);
  }

  /** A queue probe of `worker`'s UDP listener number `listener`, read here. */
  probe(worker: number, listener: number, data: Buffer): void {
    const frame = this.frame(2, data);
    frame[4] = OP_PROBE;
    frame[5] = listener;
    data.copy(frame, 6);
    this.write(worker, frame);
  }

  broadcastOpened(connectionId: number, remote: Endpoint): void {
    this.broadcastConnection(OP_OPEN, connectionId, remote);
  }

  broadcastClosed(connectionId: number, remote: Endpoint): void {
    this.broadcastConnection(OP_CLOSED, connectionId, remote);
  }

  private broadcastConnection(op: number, connectionId: number, remote: Endpoint): void {
    const frame = this.frame(1 + 4 + 1 + 2 + 1 + remote.address.length, null);
    frame[4] = op;
    frame.writeUInt32BE(connectionId >>> 0, 5);
    frame[9] = protocolCode(remote.protocol);
    frame.writeUInt16BE(remote.port, 10);
    putAddress(frame, 12, remote.address);
    this.broadcast(frame);
  }

  /** A frame with room for its length, a head of `head` octets and `data`; the length is written. */
  private frame(head: number, data: Buffer | null): Buffer {
    const size = head + (data === null ? 0 : data.length);
    const frame = Buffer.allocUnsafe(4 + size);
    frame.writeUInt32BE(size, 0);
    return frame;
  }

  private broadcast(frame: Buffer): void {
    for (let i = 0; i < this.seat.count; i++) if (i !== this.seat.index) this.write(i, frame);
  }

  private write(worker: number, frame: Buffer): void {
    const link = frame.length - 4 > MAX_FRAME ? null : this.link(worker);
    if (link === null || link.socket.writableLength > MAX_BACKLOG) {
      this.stats.dropped++;
      return;
    }
    if (!link.corked) {
      link.corked = true;
      link.socket.cork();
      process.nextTick(uncork, link);
    }
    link.socket.write(frame);
  }

  private link(worker: number): Link | null {
    if (worker === this.seat.index || worker >= this.seat.count) return null;
    const existing = this.links[worker];
    if (existing !== null) return existing;
    const port = this.peers[worker];
    if (this.closed || port === null || port === undefined) return null;
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    const link: Link = { socket, port, corked: false };
    this.links[worker] = link;
    const hello = this.frame(1 + 16 + 1, null);
    hello[4] = OP_HELLO;
    this.seat.cookie.copy(hello, 5);
    hello[21] = this.seat.index;
    socket.write(hello);
    socket.on('error', (err) => this.log?.debug?.({ err, worker }, 'worker relay link error'));
    socket.on('close', () => {
      if (this.links[worker] === link) this.links[worker] = null;
    });
    // Nothing comes back on a link this worker opened.
    socket.on('data', () => socket.destroy());
    return link;
  }

  private accept(socket: net.Socket): void {
    if (this.closed || socket.remoteAddress !== '127.0.0.1') {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    this.inbound.add(socket);
    let pending: Buffer | null = null;
    let proven = false;
    socket.on('error', () => {});
    socket.on('close', () => this.inbound.delete(socket));
    socket.on('data', (chunk: Buffer) => {
      const buf = pending === null ? chunk : Buffer.concat([pending, chunk]);
      let off = 0;
      while (buf.length - off >= 4) {
        const len = buf.readUInt32BE(off);
        if (len < 1 || len > MAX_FRAME) {
          socket.destroy();
          return;
        }
        if (buf.length - off - 4 < len) break;
        const frame = buf.subarray(off + 4, off + 4 + len);
        off += 4 + len;
        if (!proven) {
          if (frame[0] !== OP_HELLO || frame.length !== 18 || !timingSafeEqual(frame.subarray(1, 17), this.seat.cookie)) {
            this.log?.warn({ remote: socket.remotePort }, 'worker relay: a connection without the cookie, closed');
            socket.destroy();
            return;
          }
          proven = true;
          continue;
        }
        try {
          this.onFrame(frame);
        } catch (err) {
          this.log?.warn({ err }, 'worker relay: frame handler threw');
        }
      }
      pending = off < buf.length ? buf.subarray(off) : null;
    });
  }

  private onFrame(frame: Buffer): void {
    switch (frame[0]) {
      case OP_MSG: {
        const protocol = PROTOCOLS[frame[1]];
        const connectionId = frame.readUInt32BE(2);
        const port = frame.readUInt16BE(6);
        const aLen = frame[8];
        const address = frame.toString('latin1', 9, 9 + aLen);
        let off = 9 + aLen;
        const lProtocol = PROTOCOLS[frame[off]];
        const lPort = frame.readUInt16BE(off + 1);
        const lLen = frame[off + 3];
        const lAddress = frame.toString('latin1', off + 4, off + 4 + lLen);
        off += 4 + lLen;
        if (protocol === undefined || lProtocol === undefined) return;
        this.stats.received++;
        // Its own copy: the chunk it came in holds other messages.
        this.handlers.deliver(Buffer.from(frame.subarray(off)), this.sourceOf(protocol, address, port, connectionId, lProtocol, lAddress, lPort));
        return;
      }
      case OP_SEND: {
        const protocol = PROTOCOLS[frame[1]];
        if (protocol === undefined) return;
        const connectionId = frame.readUInt32BE(2);
        const port = frame.readUInt16BE(6);
        const aLen = frame[8];
        const address = frame.toString('latin1', 9, 9 + aLen);
        this.handlers.send(Buffer.from(frame.subarray(9 + aLen)), { protocol, address, port, connectionId });
        return;
      }
      case OP_OPEN:
      case OP_CLOSED: {
        const protocol = PROTOCOLS[frame[5]];
        if (protocol === undefined) return;
        const aLen = frame[8];
        const remote: Endpoint = { protocol, port: frame.readUInt16BE(6), address: frame.toString('latin1', 9, 9 + aLen) };
        if (frame[0] === OP_OPEN) this.handlers.opened(frame.readUInt32BE(1), remote);
        else this.handlers.closed(frame.readUInt32BE(1), remote);
        return;
      }
      case OP_PROBE:
        this.handlers.probe(frame[1], Buffer.from(frame.subarray(2)));
        return;
      default:
        return;
    }
  }

  /** One frozen Source per remote and local end, as the listeners keep them. */
  private sourceOf(protocol: Protocol, address: string, port: number, connectionId: number, lProtocol: Protocol, lAddress: string, lPort: number): Source {
    const key = protocol + '|' + address + '|' + port + '|' + connectionId + '|' + lAddress + '|' + lPort;
    let s = this.sources.get(key);
    if (s !== undefined) return s;
    if (this.sources.size >= SOURCE_CACHE_MAX) this.sources.clear();
    s = Object.freeze<Source>({
      protocol,
      address,
      port,
      family: address.indexOf(':') === -1 ? 4 : 6,
      local: Object.freeze({ protocol: lProtocol, address: lAddress, port: lPort }),
      connectionId,
    });
    this.sources.set(key, s);
    return s;
  }
}
