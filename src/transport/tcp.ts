// SIP over TCP and TLS: listeners and connections. Each connection owns a
// StreamFramer and the Source its messages are handed up with. TLS differs
// only in how the socket is made (node:tls server and tls.connect) and in
// when it counts as connected (after the handshake); framing, limits,
// timeouts, keep-alives and the connection table are the same code.

import net from 'node:net';
import tls from 'node:tls';
import {
  FRAMING_ERROR_HEAD_TOO_LARGE,
  FRAMING_ERROR_MESSAGE_TOO_LARGE,
  StreamFramer,
  type FramerSink,
} from '../sip/framer.js';
import { admitSocket, StreamListener, tlsHandshakeFailed, tlsServerOptions } from './accept.js';
import { now, type CloseReason, type ConnectionTable, type StreamConnection } from './connections.js';
import {
  endpointKey,
  type Destination,
  type Endpoint,
  type ListenSpec,
  type Source,
  type TransportLimits,
  type TransportLog,
  type TlsSettings,
  type TransportSink,
  type TransportStats,
} from './types.js';

/** The stream protocols served by this file. */
export type StreamProtocol = 'tcp' | 'tls';

// RFC 5626 §4.4.1: the pong to a double-CRLF ping is a single CRLF.
const PONG = Buffer.from('\r\n', 'latin1');

/** What all connections of a transport layer share. */
export interface StreamContext {
  readonly table: ConnectionTable<StreamConnection>;
  readonly limits: TransportLimits;
  readonly stats: TransportStats;
  readonly sink: TransportSink;
  readonly log: TransportLog | undefined;
  readonly tls: Readonly<TlsSettings>;
}

export class TcpConnection implements StreamConnection, FramerSink {
  readonly id: number;
  readonly protocol: StreamProtocol;
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
  // Outbound TLS: the TCP connect completed, so a failure now is the handshake's.
  private tcpConnected = false;

  constructor(
    ctx: StreamContext,
    protocol: StreamProtocol,
    socket: net.Socket,
    remote: Endpoint,
    family: 4 | 6,
    dest: Destination | null,
  ) {
    this.ctx = ctx;
    this.protocol = protocol;
    this.socket = socket;
    this.id = ctx.table.nextId();
    this.remote = Object.freeze({ protocol, address: remote.address, port: remote.port });
    this.remoteAddress = remote.address;
    this.key = endpointKey(protocol, remote.address, remote.port);
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
      if (protocol === 'tls') {
        socket.once('connect', () => {
          this.tcpConnected = true;
        });
        socket.once('secureConnect', this.onConnect);
      } else {
        socket.once('connect', this.onConnect);
      }
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
      this.ctx.log?.warn({ connectionId: this.id, remote: this.remote }, `${this.protocol} peer not reading, closing`);
      this.destroy(null);
      return false;
    }
    if (this.queue !== null) {
      this.queue.push(data);
      this.queuedBytes += data.length;
      return true;
    }
    stats.messagesOut[this.protocol]++;
    stats.bytesOut[this.protocol] += data.length;
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
    this.ctx.log?.debug?.({ connectionId: this.id, remote: this.remote, reason }, `${this.protocol} connection timed out`);
    this.destroy(reason === 'connect-timeout' ? Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }) : null);
  }

  // FramerSink

  onFrame(message: Buffer): void {
    this.delivered = true;
    const ctx = this.ctx;
    ctx.stats.messagesIn[this.protocol]++;
    try {
      ctx.sink.onMessage(message, this.source as Source);
    } catch (err) {
      ctx.log?.warn({ err, connectionId: this.id }, 'message handler threw');
    }
  }

  onPing(): void {
    this.ctx.stats.keepalivesIn[this.protocol]++;
    if (!this.closed) {
      this.ctx.stats.bytesOut[this.protocol] += PONG.length;
      this.socket.write(PONG);
    }
  }

  onFramingError(reason: string): void {
    const oversize = reason === FRAMING_ERROR_HEAD_TOO_LARGE || reason === FRAMING_ERROR_MESSAGE_TOO_LARGE;
    this.ctx.stats.dropped[oversize ? 'oversize' : 'framing']++;
    this.ctx.log?.warn({ connectionId: this.id, remote: this.remote, reason }, `${this.protocol} framing error, closing`);
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
    this.ctx.stats.bytesIn[this.protocol] += chunk.length;
    this.framer.push(chunk);
  };

  private readonly onError = (err: Error): void => {
    // Resets and the like are the normal end of a connection; 'close' follows.
    if (this.connecting && this.connectError === null) {
      this.connectError = err;
      if (this.tcpConnected) {
        this.ctx.stats.dropped['tls-handshake']++;
        this.ctx.log?.warn({ err, remote: this.remote }, 'outbound tls handshake failed');
        return;
      }
    }
    this.ctx.log?.debug?.({ err, connectionId: this.id, remote: this.remote }, `${this.protocol} socket error`);
  };

  private readonly onClose = (): void => {
    this.finish();
  };

  private makeSource(): void {
    const s = this.socket;
    const local: Endpoint = Object.freeze({ protocol: this.protocol, address: s.localAddress ?? '', port: s.localPort ?? 0 });
    this.source = Object.freeze({
      protocol: this.protocol,
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
      ctx.log?.debug?.({ err, remote: this.remote }, `${this.protocol} connect failed`);
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

/**
 * Opens an outbound connection to `dest` (TCP, or TLS for dest.protocol
 * 'tls'); the caller has admitted it.
 *
 * TLS verifies the server's certificate against the configured `ca`, or the
 * system store without one, always: an unverified peer is a failed connect.
 * A destination given by name is sent as SNI and checked against the
 * certificate; an IP literal is checked against its IP subjectAltNames.
 */
export function connectTcp(ctx: StreamContext, dest: Destination, localAddress: string | undefined): TcpConnection {
  const family: 4 | 6 = dest.address.indexOf(':') === -1 ? 4 : 6;
  const protocol: StreamProtocol = dest.protocol === 'tls' ? 'tls' : 'tcp';
  let socket: net.Socket;
  if (protocol === 'tls') {
    const t = ctx.tls;
    // tls.connect hands family and localAddress on to the TCP connect.
    const options: tls.ConnectionOptions & Pick<net.TcpNetConnectOpts, 'family' | 'localAddress'> = {
      host: dest.address,
      port: dest.port,
      family,
      minVersion: t.minVersion,
      rejectUnauthorized: true,
    };
    if (net.isIP(dest.address) === 0) options.servername = dest.address;
    if (t.ca !== undefined) options.ca = t.ca;
    if (t.cert !== undefined && t.key !== undefined) {
      options.cert = t.cert;
      options.key = t.key;
    }
    if (localAddress !== undefined) options.localAddress = localAddress;
    socket = tls.connect(options);
  } else {
    const options: net.TcpNetConnectOpts = { host: dest.address, port: dest.port, family };
    if (localAddress !== undefined) options.localAddress = localAddress;
    socket = net.connect(options);
  }
  const conn = new TcpConnection(ctx, protocol, socket, dest, family, dest);
  ctx.table.add(conn);
  ctx.stats.connectionsOutbound++;
  return conn;
}

/** A TCP listener, or a TLS one for spec.protocol 'tls' (whose connections enter the table once the handshake is done). */
export class TcpListener extends StreamListener<StreamProtocol> {
  private readonly ctx: StreamContext;
  private readonly server: net.Server;

  constructor(spec: ListenSpec, host: string, ctx: StreamContext) {
    super(spec, host, spec.protocol === 'tls' ? 'tls' : 'tcp');
    this.ctx = ctx;
    if (this.protocol === 'tls') {
      const server = tls.createServer(tlsServerOptions(ctx));
      server.on('secureConnection', this.onConnection);
      server.on('tlsClientError', this.onTlsClientError);
      this.server = server;
    } else {
      this.server = net.createServer();
      this.server.on('connection', this.onConnection);
    }
  }

  async start(): Promise<void> {
    await this.bind(this.server, this.onError);
  }

  /** TLS listeners: new handshakes use `context`; open connections keep theirs (TransportLayer.reloadTls). */
  setSecureContext(context: tls.SecureContextOptions): void {
    if (this.server instanceof tls.Server) this.server.setSecureContext(context);
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
    this.ctx.log?.warn({ err, local: this.localEndpoint }, `${this.protocol} server error`);
  };

  private readonly onTlsClientError = (err: Error, socket: tls.TLSSocket): void => {
    tlsHandshakeFailed(this.ctx, this.localEndpoint, err.message, socket.remoteAddress, socket.remotePort);
    socket.destroy();
  };

  private readonly onConnection = (socket: net.Socket): void => {
    const ctx = this.ctx;
    const peer = admitSocket(ctx, socket, this.protocol, this.localEndpoint);
    if (peer === null) return;
    const { address, port, family } = peer;
    const conn = new TcpConnection(ctx, this.protocol, socket, { protocol: this.protocol, address, port }, family, null);
    ctx.table.add(conn);
    ctx.stats.connectionsAccepted++;
  };
}
