// Shared by the stream listeners (TCP, TLS, WS, WSS): binding the server,
// and what every inbound socket goes through before it becomes a
// connection, whatever speaks on it next (SIP over TCP/TLS, or an HTTP
// upgrade to WebSocket): still there, within the connection limits, and,
// where a client certificate is optional, not an invalid one. And the
// listener state they have in common (StreamListener).

import type net from 'node:net';
import type tls from 'node:tls';
import type { StreamContext } from './tcp.js';
import type { Endpoint, ListenSpec, Protocol } from './types.js';

export interface Accepted {
  address: string;
  port: number;
  family: 4 | 6;
}

/** Counts and logs a TLS handshake that failed (or a client certificate refused). */
export function tlsHandshakeFailed(ctx: StreamContext, local: Endpoint | null, reason: string, address: string | undefined, port: number | undefined): void {
  ctx.stats.dropped['tls-handshake']++;
  ctx.log?.warn({ remote: `${address ?? '?'}:${port ?? '?'}`, local, reason }, 'tls handshake failed');
}

/** The peer of a new inbound socket, or null when it was refused (and destroyed). */
/** The options of a TLS listener (sips over TLS and WSS alike): the certificate, TLS 1.2+, client certificates as configured. */
export function tlsServerOptions(ctx: StreamContext): tls.TlsOptions {
  const t = ctx.tls;
  return {
    cert: t.cert,
    key: t.key,
    ca: t.ca,
    minVersion: t.minVersion,
    requestCert: t.verifyClients !== false,
    rejectUnauthorized: t.verifyClients === 'required',
    // A handshake is bounded like the wait for the first message.
    handshakeTimeout: ctx.limits.firstMessageTimeoutMs,
  };
}

export function admitSocket(ctx: StreamContext, socket: net.Socket, protocol: Protocol, local: Endpoint | null): Accepted | null {
  const address = socket.remoteAddress;
  const port = socket.remotePort;
  // Gone already (reset right after the handshake): nothing to keep.
  if (address === undefined || port === undefined) {
    socket.on('error', ignore);
    socket.destroy();
    return null;
  }
  if (!ctx.table.admitInbound(address)) {
    socket.on('error', ignore);
    socket.destroy();
    ctx.log?.debug?.({ remote: address }, `${protocol} connection refused: limit`);
    return null;
  }
  if ((protocol === 'tls' || protocol === 'wss') && ctx.tls.verifyClients === 'optional') {
    // Asked but not required: no certificate is fine, an unverified one is not.
    const s = socket as tls.TLSSocket;
    if (!s.authorized && Object.keys(s.getPeerCertificate()).length > 0) {
      tlsHandshakeFailed(ctx, local, `client certificate refused: ${String(s.authorizationError)}`, address, port);
      socket.on('error', ignore);
      socket.destroy();
      return null;
    }
  }
  return { address, port, family: socket.remoteFamily === 'IPv6' ? 6 : 4 };
}

/**
 * Binds a stream server and resolves with the endpoint it got (the port
 * resolved when 0 was asked); later server errors go to `onError`.
 */
export function bindServer(server: net.Server, protocol: Protocol, host: string, port: number, family: 4 | 6, onError: (err: Error) => void, shared = false): Promise<Endpoint> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => {
      server.removeListener('listening', listening);
      reject(err);
    };
    const listening = () => {
      server.removeListener('error', failed);
      const a = server.address() as net.AddressInfo;
      server.on('error', onError);
      resolve(Object.freeze({ protocol, address: a.address, port: a.port }));
    };
    server.once('error', failed);
    server.once('listening', listening);
    // ipv6Only so that [::] and 0.0.0.0 can be bound side by side.
    // Exclusive unless shared with the other workers of a cluster (ListenSpec.shared).
    server.listen({ host, port, ipv6Only: family === 6, exclusive: !shared });
  });
}

/** What TcpListener and WsListener share: the spec, the bound host, and the endpoint once started. */
export abstract class StreamListener<P extends Protocol> {
  readonly spec: ListenSpec;
  readonly family: 4 | 6;
  readonly protocol: P;
  protected readonly host: string;
  protected localEndpoint: Endpoint | null = null;

  protected constructor(spec: ListenSpec, host: string, protocol: P) {
    this.spec = spec;
    this.host = host;
    this.family = host.indexOf(':') === -1 ? 4 : 6;
    this.protocol = protocol;
  }

  /** The host as bound, when it names one address (not a wildcard). */
  get specificAddress(): string | undefined {
    return this.host === '0.0.0.0' || this.host === '::' ? undefined : this.host;
  }

  get local(): Endpoint {
    if (this.localEndpoint === null) throw new Error(`${this.protocol.toUpperCase()} listener not started`);
    return this.localEndpoint;
  }

  get started(): boolean {
    return this.localEndpoint !== null;
  }

  /** Binds `server` on the spec's port (bindServer) and keeps the endpoint it got. */
  protected async bind(server: net.Server, onError: (err: Error) => void): Promise<void> {
    this.localEndpoint = await bindServer(server, this.protocol, this.host, this.spec.port, this.family, onError, this.spec.shared === true);
  }
}

function ignore(): void {}
