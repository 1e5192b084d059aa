// SIP over WebSocket and secure WebSocket (RFC 7118): listeners and
// connections. An HTTP(S) server takes the upgrade, refused unless it asks
// for the `sip` subprotocol (and, when a path is set, names it); each
// WebSocket message then carries exactly one SIP message (§5.2), text or
// binary, handed up like a framed TCP message. Portier never dials out over
// WebSocket: a client is only reached down the connection it opened.
//
// A connection enters the connection table at TCP accept (for wss: once
// the TLS handshake is done), before its upgrade, so that the total and
// per-source bounds and the first-message timeout also cover clients that
// never finish the HTTP upgrade.

import { isUtf8 } from 'node:buffer';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { admitSocket, StreamListener, tlsHandshakeFailed, tlsServerOptions } from './accept.js';
import { now, type CloseReason, type StreamConnection } from './connections.js';
import type { StreamContext } from './tcp.js';
import { endpointKey, type Endpoint, type ListenSpec, type Source, type WsSettings } from './types.js';

export type WsProtocol = 'ws' | 'wss';

/** RFC 7118 §4.1: the WebSocket subprotocol of SIP. */
export const SIP_SUBPROTOCOL = 'sip';

// RFC 5626 §4.4.1 keep-alives work over WebSocket too (SIP.js sends them as
// a message of its own): a double CRLF is answered by a single one.
const PONG = Buffer.from('\r\n', 'latin1');

const CR = 0x0d;
const LF = 0x0a;

export interface WsContext extends StreamContext {
  readonly ws: Readonly<WsSettings>;
}

export class WsConnection implements StreamConnection {
  readonly id: number;
  readonly protocol: WsProtocol;
  readonly key: string;
  readonly remoteAddress: string;
  readonly remote: Readonly<Endpoint>;
  readonly inbound = true;
  readonly connecting = false;
  readonly openedAt: number;
  lastActivity: number;
  delivered = false;
  /** The same (frozen) object goes with every message. */
  readonly source: Readonly<Source>;
  /** Answered the last ping (or none was sent yet). */
  alive = true;

  private readonly ctx: WsContext;
  private readonly listener: WsListener;
  private readonly socket: net.Socket;
  private ws: WebSocket | null = null;
  private closed = false;

  constructor(ctx: WsContext, listener: WsListener, socket: net.Socket, address: string, port: number, family: 4 | 6) {
    this.ctx = ctx;
    this.listener = listener;
    this.protocol = listener.protocol;
    this.socket = socket;
    this.id = ctx.table.nextId();
    this.remote = Object.freeze({ protocol: this.protocol, address, port });
    this.remoteAddress = address;
    this.key = endpointKey(this.protocol, address, port);
    this.openedAt = now();
    this.lastActivity = this.openedAt;
    const local: Endpoint = Object.freeze({ protocol: this.protocol, address: socket.localAddress ?? '', port: socket.localPort ?? 0 });
    this.source = Object.freeze({ protocol: this.protocol, address, port, family, local, connectionId: this.id });
    socket.setNoDelay(true);
    socket.on('close', this.onClose);
    // Before the upgrade nobody else listens for errors; after it ws does too.
    socket.on('error', this.onSocketError);
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  get upgraded(): boolean {
    return this.ws !== null;
  }

  /** The upgrade succeeded: from now on messages flow. */
  attach(ws: WebSocket): void {
    if (this.closed) {
      ws.terminate();
      return;
    }
    this.ws = ws;
    this.lastActivity = now();
    ws.on('message', this.onMessage);
    ws.on('pong', this.onPong);
    // A client's own ping is traffic (ws answers it with a pong itself).
    ws.on('ping', this.onClientPing);
    ws.on('error', this.onWsError);
    this.listener.upgraded(this);
  }

  write(data: Buffer): boolean {
    const stats = this.ctx.stats;
    const ws = this.ws;
    if (this.closed || ws === null || ws.readyState !== ws.OPEN) {
      stats.dropped['send-error']++;
      return false;
    }
    // A peer that stops reading must not make us buffer without bound.
    if (ws.bufferedAmount + data.length > this.ctx.limits.maxMessageSize * 16) {
      stats.dropped['send-error']++;
      this.ctx.log?.warn({ connectionId: this.id, remote: this.remote }, `${this.protocol} peer not reading, closing`);
      this.destroy(null);
      return false;
    }
    stats.messagesOut[this.protocol]++;
    stats.bytesOut[this.protocol] += data.length;
    // Text frames must be UTF-8 (RFC 6455 §5.6); SIP nearly always is, and
    // browsers' clients handle text best. Anything else goes binary.
    ws.send(data, { binary: !isUtf8(data), compress: false });
    return true;
  }

  destroy(_err: Error | null): void {
    if (this.closed) return;
    this.finish();
    if (this.ws !== null) this.ws.terminate();
    else this.socket.destroy();
  }

  timeout(reason: CloseReason): void {
    this.ctx.log?.debug?.({ connectionId: this.id, remote: this.remote, reason }, `${this.protocol} connection timed out`);
    this.destroy(null);
  }

  /** The listener's heartbeat: close when the last ping went unanswered, else ping again. */
  heartbeat(): void {
    const ws = this.ws;
    if (this.closed || ws === null) return;
    if (!this.alive) {
      this.ctx.stats.dropped.timeout++;
      this.ctx.log?.debug?.({ connectionId: this.id, remote: this.remote }, `${this.protocol} peer stopped answering pings, closing`);
      this.destroy(null);
      return;
    }
    this.alive = false;
    ws.ping();
  }

  private readonly onMessage = (data: RawData, _isBinary: boolean): void => {
    if (this.closed) return;
    // binaryType is the default 'nodebuffer': fragments come joined in one Buffer.
    const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    const ctx = this.ctx;
    this.lastActivity = now();
    ctx.stats.bytesIn[this.protocol] += buf.length;
    if (isCrlfOnly(buf)) {
      // A double CRLF is a keep-alive ping; a lone CRLF (a pong) needs nothing.
      if (buf.length >= 4) {
        ctx.stats.keepalivesIn[this.protocol]++;
        ctx.stats.bytesOut[this.protocol] += PONG.length;
        this.ws?.send(PONG, { binary: false, compress: false });
      }
      return;
    }
    this.delivered = true;
    ctx.stats.messagesIn[this.protocol]++;
    try {
      ctx.sink.onMessage(buf, this.source);
    } catch (err) {
      ctx.log?.warn({ err, connectionId: this.id }, 'message handler threw');
    }
  };

  private readonly onPong = (): void => {
    // Liveness only: the idle timeout counts what the client sends itself.
    this.alive = true;
  };

  private readonly onClientPing = (): void => {
    this.lastActivity = now();
    this.alive = true;
  };

  private readonly onWsError = (err: Error & { code?: string }): void => {
    // ws closes the connection itself after a protocol error; 'close' follows.
    const oversize = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';
    this.ctx.stats.dropped[oversize ? 'oversize' : 'framing']++;
    this.ctx.log?.warn({ connectionId: this.id, remote: this.remote, reason: err.message }, `${this.protocol} ${oversize ? 'message too large' : 'protocol error'}, closing`);
  };

  private readonly onSocketError = (err: Error): void => {
    // Resets and the like are the normal end of a connection; 'close' follows.
    this.ctx.log?.debug?.({ err, connectionId: this.id, remote: this.remote }, `${this.protocol} socket error`);
  };

  private readonly onClose = (): void => {
    this.finish();
  };

  // Leaves the table and tells the sink, exactly once.
  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    const ctx = this.ctx;
    ctx.table.remove(this);
    this.listener.closed(this);
    ctx.stats.connectionsClosed++;
    if (ctx.sink.onConnectionClosed) {
      try {
        ctx.sink.onConnectionClosed(this.id, this.remote);
      } catch (err) {
        ctx.log?.warn({ err, connectionId: this.id }, 'connection closed handler threw');
      }
    }
  }
}

/** True for a message made only of CRLF pairs. */
function isCrlfOnly(buf: Buffer): boolean {
  if (buf.length < 2 || buf.length % 2 !== 0 || buf.length > 64) return false;
  for (let i = 0; i < buf.length; i += 2) if (buf[i] !== CR || buf[i + 1] !== LF) return false;
  return true;
}

/** The subprotocols an upgrade request offers (RFC 6455 §4.1: a comma list of tokens, case-sensitive). */
export function offeredSubprotocols(header: string | string[] | undefined): string[] {
  if (header === undefined) return [];
  const all = Array.isArray(header) ? header.join(',') : header;
  return all
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** A ws listener, or a wss one (HTTPS with the `tls` settings) for spec.protocol 'wss'. */
export class WsListener extends StreamListener<WsProtocol> {
  private readonly ctx: WsContext;
  private readonly server: http.Server;
  private readonly wss: WebSocketServer;
  /** Accepted sockets still waiting for their upgrade, and the connection each is. */
  private readonly pending = new WeakMap<Duplex, WsConnection>();
  /** Upgraded connections, pinged by the heartbeat. */
  private readonly live = new Set<WsConnection>();
  private heartbeatTimer: NodeJS.Timeout | null = null;

  constructor(spec: ListenSpec, host: string, ctx: WsContext) {
    super(spec, host, spec.protocol === 'wss' ? 'wss' : 'ws');
    this.ctx = ctx;
    // maxPayload below maxMessageSize would refuse messages the parser takes.
    const maxPayload = Math.max(ctx.ws.maxPayload ?? 0, ctx.limits.maxMessageSize);
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload,
      perMessageDeflate: false,
      clientTracking: false,
      handleProtocols: (protocols: Set<string>) => (protocols.has(SIP_SUBPROTOCOL) ? SIP_SUBPROTOCOL : false),
    });
    if (this.protocol === 'wss') {
      const server = https.createServer(tlsServerOptions(ctx));
      server.on('secureConnection', this.onConnection);
      server.on('tlsClientError', this.onTlsClientError);
      this.server = server;
    } else {
      this.server = http.createServer();
      this.server.on('connection', this.onConnection);
    }
    this.server.on('upgrade', this.onUpgrade);
    this.server.on('request', this.onPlainRequest);
  }

  async start(): Promise<void> {
    await this.bind(this.server, this.onError);
    const interval = this.ctx.ws.pingIntervalMs;
    if (interval > 0) {
      this.heartbeatTimer = setInterval(this.heartbeat, interval);
      this.heartbeatTimer.unref();
    }
  }

  /** WSS listeners: new handshakes use `context`; open connections keep theirs (TransportLayer.reloadTls). */
  setSecureContext(context: tls.SecureContextOptions): void {
    if (this.server instanceof https.Server) this.server.setSecureContext(context);
  }

  /** Stops accepting; the connections are the table's (the layer destroys them first). */
  close(): Promise<void> {
    if (this.heartbeatTimer !== null) {
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = null;
    }
    return new Promise((resolve) => {
      if (!this.server.listening) {
        resolve();
        return;
      }
      this.server.close(() => resolve());
      // Sockets HTTP still holds (mid-request, or a TLS handshake done but no request yet).
      this.server.closeAllConnections();
    });
  }

  /** @internal */
  upgraded(conn: WsConnection): void {
    this.live.add(conn);
  }

  /** @internal */
  closed(conn: WsConnection): void {
    this.live.delete(conn);
  }

  private readonly heartbeat = (): void => {
    // Copy: a connection closed here leaves the set.
    for (const c of [...this.live]) c.heartbeat();
  };

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
    const conn = new WsConnection(ctx, this, socket, address, port, family);
    this.pending.set(socket, conn);
    ctx.table.add(conn);
    ctx.stats.connectionsAccepted++;
  };

  private readonly onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const conn = this.pending.get(socket);
    if (conn === undefined || !conn.isOpen || conn.upgraded) {
      socket.destroy();
      return;
    }
    this.pending.delete(socket);
    const wanted = this.ctx.ws.path;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (wanted !== undefined && path !== wanted) {
      this.refuse(socket, conn, 404, `no SIP WebSocket service at ${path}`);
      return;
    }
    if (!offeredSubprotocols(req.headers['sec-websocket-protocol']).includes(SIP_SUBPROTOCOL)) {
      // RFC 7118 §4.1: the client MUST ask for "sip"; without it this is not SIP.
      this.refuse(socket, conn, 400, 'the sip WebSocket subprotocol is required (RFC 7118)');
      return;
    }
    // Without verifyClient the upgrade completes (or fails) synchronously;
    // ws answers malformed ones itself (400, 405) and closes the socket.
    this.wss.handleUpgrade(req, socket, head, (ws) => conn.attach(ws));
    if (!conn.upgraded) this.ctx.stats.dropped['ws-handshake']++;
  };

  /** Not an upgrade at all: this port speaks WebSocket only. */
  private readonly onPlainRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    this.ctx.stats.dropped['ws-handshake']++;
    const conn = this.pending.get(req.socket);
    this.ctx.log?.debug?.({ remote: conn?.remote, url: req.url }, `${this.protocol} request without upgrade refused`);
    res.shouldKeepAlive = false;
    res.writeHead(426, { Upgrade: 'websocket', Connection: 'close', 'Content-Type': 'text/plain', 'Sec-WebSocket-Protocol': SIP_SUBPROTOCOL });
    res.end('SIP over WebSocket (RFC 7118): upgrade with subprotocol "sip"\n');
  };

  private refuse(socket: Duplex, conn: WsConnection, code: number, why: string): void {
    this.ctx.stats.dropped['ws-handshake']++;
    this.ctx.log?.debug?.({ remote: conn.remote, code, reason: why }, `${this.protocol} upgrade refused`);
    const body = why + '\n';
    socket.once('finish', () => socket.destroy());
    socket.end(
      `HTTP/1.1 ${code} ${http.STATUS_CODES[code] ?? ''}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
}
