// SIP over TCP: listeners and connections. Each connection owns a
// StreamFramer and the Source its messages are handed up with.

import net from 'node:net';
import {
  FRAMING_ERROR_HEAD_TOO_LARGE,
  FRAMING_ERROR_MESSAGE_TOO_LARGE,
  StreamFramer,
  type FramerSink,
} from '../sip/framer.js';
import { now, type CloseReason, type ConnectionTable, type TableConnection } from './connections.js';
import {
  endpointKey,
  type Destination,
  type Endpoint,
  type ListenSpec,
  type Source,
  type TransportLimits,
  type TransportLog,
  type TransportSink,
  type TransportStats,
} from './types.js';

// RFC 5626 §4.4.1: the pong to a double-CRLF ping is a single CRLF.
const PONG = Buffer.from('\r\n', 'latin1');

/** What all connections of a transport layer share. */
export interface StreamContext {
  readonly table: ConnectionTable<TcpConnection>;
  readonly limits: TransportLimits;
  readonly stats: TransportStats;
  readonly sink: TransportSink;
  readonly log: TransportLog | undefined;
}

export class TcpConnection implements TableConnection, FramerSink {
  readonly id: number;
  readonly protocol = 'tcp' as const;
  readonly key: string;
  readonly remoteAddress: string;
  readonly remote: Readonly<Endpoint>;
  readonly family: 4 | 6;
  readonly inbound: boolean;
  readonly openedAt: number;
  lastActivity: number;
  delivered = false;
  connecting: boolean;
  /** Set once connected; the same object goes with every message. */
  source: Readonly<Source> | null = null;

  private readonly ctx: StreamContext;
  private readonly socket: net.Socket;
  private readonly framer: StreamFramer;
  // Outbound only: data written before the connect completed, and the
  // destination to blame when it fails.
  private queue: Buffer[] | null = null;
  private queuedBytes = 0;
  private readonly dest: Destination | null;
  private closed = false;
  private connectError: Error | null = null;

  constructor(ctx: StreamContext, socket: net.Socket, remote: Endpoint, family: 4 | 6, dest: Destination | null) {
    this.ctx = ctx;
    this.socket = socket;
    this.id = ctx.table.nextId();
    this.remote = Object.freeze({ protocol: 'tcp', address: remote.address, port: remote.port });
    this.remoteAddress = remote.address;
    this.key = endpointKey('tcp', remote.address, remote.port);
    this.family = family;
    this.inbound = dest === null;
    this.dest = dest;
    this.connecting = dest !== null;
    this.openedAt = now();
    this.lastActivity = this.openedAt;
    this.framer = new StreamFramer(this, { maxMessageSize: ctx.limits.maxMessageSize });
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    if (this.connecting) {
      this.queue = [];
      socket.once('connect', this.onConnect);
    } else {
      this.makeSource();
    }
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Bytes accepted for sending but not yet handed to the kernel. */
  get pendingBytes(): number {
    return this.connecting ? this.queuedBytes : this.socket.writableLength;
  }

  /** Sends (or queues while connecting). Returns false when the data was dropped. */
  write(data: Buffer): boolean {
    const stats = this.ctx.stats;
    if (this.closed) {
      stats.dropped['send-error']++;
      return false;
    }
    // A peer that stops reading must not make us buffer without bound.
    const bound = this.ctx.limits.maxMessageSize * 16;
    if (this.pendingBytes + data.length > bound) {
      stats.dropped['send-error']++;
      this.ctx.log?.warn({ connectionId: this.id, remote: this.remote }, 'tcp peer not reading, closing');
      this.destroy(null);
      return false;
    }
    if (this.queue !== null) {
      this.queue.push(data);
      this.queuedBytes += data.length;
      return true;
    }
    stats.messagesOut.tcp++;
    stats.bytesOut.tcp += data.length;
    this.socket.write(data);
    return true;
  }

  /** Closes at once; pending output is discarded. */
  destroy(err: Error | null): void {
    if (this.closed) return;
    if (err !== null && this.connecting) this.connectError = err;
    this.finish();
    this.socket.destroy();
  }

  timeout(reason: CloseReason): void {
    this.ctx.log?.debug?.({ connectionId: this.id, remote: this.remote, reason }, 'tcp connection timed out');
    this.destroy(reason === 'connect-timeout' ? Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }) : null);
  }

  // FramerSink

  onFrame(message: Buffer): void {
    this.delivered = true;
    const ctx = this.ctx;
    ctx.stats.messagesIn.tcp++;
    try {
      ctx.sink.onMessage(message, this.source as Source);
    } catch (err) {
      ctx.log?.warn({ err, connectionId: this.id }, 'message handler threw');
    }
  }

  onPing(): void {
    this.ctx.stats.keepalivesIn.tcp++;
    if (!this.closed) {
      this.ctx.stats.bytesOut.tcp += PONG.length;
      this.socket.write(PONG);
    }
  }

  onFramingError(reason: string): void {
    const oversize = reason === FRAMING_ERROR_HEAD_TOO_LARGE || reason === FRAMING_ERROR_MESSAGE_TOO_LARGE;
    this.ctx.stats.dropped[oversize ? 'oversize' : 'framing']++;
    this.ctx.log?.warn({ connectionId: this.id, remote: this.remote, reason }, 'tcp framing error, closing');
    this.destroy(null);
  }

  // Socket events

  private readonly onConnect = (): void => {
    if (this.closed) return;
    this.connecting = false;
    this.lastActivity = now();
    this.makeSource();
    const queue = this.queue as Buffer[];
    this.queue = null;
    this.queuedBytes = 0;
    for (let i = 0; i < queue.length; i++) this.write(queue[i]);
  };

  private readonly onData = (chunk: Buffer): void => {
    if (this.closed) return;
    this.lastActivity = now();
    this.ctx.stats.bytesIn.tcp += chunk.length;
    this.framer.push(chunk);
  };

  private readonly onError = (err: Error): void => {
    // Resets and the like are the normal end of a connection; 'close' follows.
    if (this.connecting && this.connectError === null) this.connectError = err;
    this.ctx.log?.debug?.({ err, connectionId: this.id, remote: this.remote }, 'tcp socket error');
  };

  private readonly onClose = (): void => {
    this.finish();
  };

  private makeSource(): void {
    const s = this.socket;
    const local: Endpoint = Object.freeze({ protocol: 'tcp', address: s.localAddress ?? '', port: s.localPort ?? 0 });
    this.source = Object.freeze({
      protocol: 'tcp',
      address: this.remote.address,
      port: this.remote.port,
      family: this.family,
      local,
      connectionId: this.id,
    });
  }

  // Leaves the table and tells the sink, exactly once.
  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.framer.close();
    const ctx = this.ctx;
    ctx.table.remove(this);
    ctx.stats.connectionsClosed++;
    if (this.queue !== null) {
      // Never connected: everything queued is lost.
      const lost = this.queue.length;
      this.queue = null;
      this.queuedBytes = 0;
      ctx.stats.dropped['send-error'] += lost === 0 ? 1 : lost;
      const err = this.connectError ?? Object.assign(new Error('connection closed before connect'), { code: 'ECONNABORTED' });
      ctx.log?.debug?.({ err, remote: this.remote }, 'tcp connect failed');
      if (ctx.sink.onSendError) {
        try {
          ctx.sink.onSendError(this.dest as Destination, err);
        } catch (e) {
          ctx.log?.warn({ err: e }, 'send error handler threw');
        }
      }
    }
    if (ctx.sink.onConnectionClosed) {
      try {
        ctx.sink.onConnectionClosed(this.id, this.remote);
      } catch (err) {
        ctx.log?.warn({ err, connectionId: this.id }, 'connection closed handler threw');
      }
    }
  }
}

/** Opens an outbound connection to `dest`; the caller has admitted it. */
export function connectTcp(ctx: StreamContext, dest: Destination, localAddress: string | undefined): TcpConnection {
  const family: 4 | 6 = dest.address.indexOf(':') === -1 ? 4 : 6;
  const options: net.TcpNetConnectOpts = { host: dest.address, port: dest.port, family };
  if (localAddress !== undefined) options.localAddress = localAddress;
  const socket = net.connect(options);
  const conn = new TcpConnection(ctx, socket, dest, family, dest);
  ctx.table.add(conn);
  ctx.stats.connectionsOutbound++;
  return conn;
}

export class TcpListener {
  readonly spec: ListenSpec;
  readonly family: 4 | 6;
  private readonly host: string;
  private readonly ctx: StreamContext;
  private readonly server: net.Server;
  private localEndpoint: Endpoint | null = null;

  constructor(spec: ListenSpec, host: string, ctx: StreamContext) {
    this.spec = spec;
    this.host = host;
    this.family = host.indexOf(':') === -1 ? 4 : 6;
    this.ctx = ctx;
    this.server = net.createServer();
    this.server.on('connection', this.onConnection);
  }

  /** The host as bound, when it names one address (not a wildcard). */
  get specificAddress(): string | undefined {
    return this.host === '0.0.0.0' || this.host === '::' ? undefined : this.host;
  }

  get local(): Endpoint {
    if (this.localEndpoint === null) throw new Error('TCP listener not started');
    return this.localEndpoint;
  }

  get started(): boolean {
    return this.localEndpoint !== null;
  }

  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = this.server;
      const onError = (err: Error) => {
        server.removeListener('listening', onListening);
        reject(err);
      };
      const onListening = () => {
        server.removeListener('error', onError);
        const a = server.address() as net.AddressInfo;
        this.localEndpoint = Object.freeze({ protocol: 'tcp', address: a.address, port: a.port });
        server.on('error', this.onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      // ipv6Only so that [::] and 0.0.0.0 can be bound side by side.
      server.listen({ host: this.host, port: this.spec.port, ipv6Only: this.family === 6, exclusive: true });
    });
  }

  /** Stops accepting; existing connections are the table's. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) {
        resolve();
        return;
      }
      this.server.close(() => resolve());
    });
  }

  private readonly onError = (err: Error): void => {
    this.ctx.log?.warn({ err, local: this.localEndpoint }, 'tcp server error');
  };

  private readonly onConnection = (socket: net.Socket): void => {
    const ctx = this.ctx;
    const address = socket.remoteAddress;
    const port = socket.remotePort;
    // Gone already (reset right after the handshake): nothing to keep.
    if (address === undefined || port === undefined) {
      socket.on('error', ignore);
      socket.destroy();
      return;
    }
    if (!ctx.table.admitInbound(address)) {
      socket.on('error', ignore);
      socket.destroy();
      ctx.log?.debug?.({ remote: address }, 'tcp connection refused: limit');
      return;
    }
    const family: 4 | 6 = socket.remoteFamily === 'IPv6' ? 6 : 4;
    const conn = new TcpConnection(ctx, socket, { protocol: 'tcp', address, port }, family, null);
    ctx.table.add(conn);
    ctx.stats.connectionsAccepted++;
  };
}

function ignore(): void {}
