// Types shared by the transport layer and its users. The transport moves
// bytes and frames messages; it knows nothing else of SIP.

export type Protocol = 'udp' | 'tcp' | 'tls' | 'ws' | 'wss';

export const PROTOCOLS: readonly Protocol[] = ['udp', 'tcp', 'tls', 'ws', 'wss'];

export interface Endpoint {
  protocol: Protocol;
  /** IP literal, no brackets. */
  address: string;
  port: number;
}

/**
 * Where a message came from. For a connection the same (frozen) object is
 * handed up with every message of that connection, and for UDP with every
 * datagram from one address and port (while the listener's cache holds it),
 * so it is cheap to keep.
 */
export interface Source extends Endpoint {
  family: 4 | 6;
  /** The local end the message arrived on. */
  local: Endpoint;
  /** 0 for UDP. */
  connectionId: number;
}

export interface Destination extends Endpoint {
  /** Send down this connection if it is still open. */
  connectionId?: number;
  /**
   * UDP: send from the socket bound to this local endpoint when there is one,
   * so a reply leaves from the address the request came to (NAT bindings are
   * keyed on it). A Source passed as a Destination carries it already.
   */
  local?: Endpoint;
}

export interface ListenSpec {
  protocol: Protocol;
  /** IP literal; brackets around an IPv6 literal are accepted. */
  host: string;
  /** 0 asks the system for a free port; see TransportLayer.listening(). */
  port: number;
  /**
   * Bound in common with the other workers of a node:cluster primary
   * (config `workers`): one socket read by all of them, connections
   * handed out in turn. Default: this process alone.
   */
  shared?: boolean;
}

export interface TransportSink {
  onMessage(data: Buffer, source: Source): void;
  onConnectionClosed?(connectionId: number, remote: Endpoint): void;
  /** A send that could not be carried out (no socket for the family, failed connect, write error). */
  onSendError?(dest: Destination, err: Error): void;
}

export interface TransportLimits {
  /** Whole message in bytes; larger datagrams are dropped, larger stream messages close the connection. */
  maxMessageSize: number;
  /** Open connections, inbound and outbound, all protocols. */
  maxConnections: number;
  /** Open inbound connections from one remote IP address. */
  maxConnectionsPerSource: number;
  /** A connection with no traffic at all (pings count) for this long is closed. */
  idleTimeoutMs: number;
  /**
   * An inbound connection that has not delivered one complete message this
   * long after accept is closed (slow-loris protection). Also bounds how long
   * an outbound connect may take.
   */
  firstMessageTimeoutMs: number;
  udpRecvBufferSize?: number;
  udpSendBufferSize?: number;
}

export const DEFAULT_MAX_MESSAGE_SIZE = 65535;
export const DEFAULT_MAX_CONNECTIONS = 10000;
export const DEFAULT_MAX_CONNECTIONS_PER_SOURCE = 64;
// 10 minutes. A flow to a UA behind NAT is the only way to reach it, so
// closing it early makes the UA unreachable until it re-registers. UAs that
// keep flows alive (RFC 5626 §4.4.1 CRLF pings, about every two minutes on
// TCP at most) stay far inside this; UAs that do not are kept as long as they
// refresh their registration more often than every 10 minutes, which the
// registrar should ensure by capping Expires for stream transports below this
// value. Dead peers whose FIN never arrived (power cut, NAT dropped the
// mapping) are still reaped, which bounds the table.
export const DEFAULT_IDLE_TIMEOUT_MS = 600_000;
// 10 s: ample for a UA to send its first request once connected, short enough
// that connections held open without a message cannot pile up.
export const DEFAULT_FIRST_MESSAGE_TIMEOUT_MS = 10_000;

export const DEFAULT_TRANSPORT_LIMITS: Readonly<TransportLimits> = Object.freeze({
  maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE,
  maxConnections: DEFAULT_MAX_CONNECTIONS,
  maxConnectionsPerSource: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
  idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
  firstMessageTimeoutMs: DEFAULT_FIRST_MESSAGE_TIMEOUT_MS,
});

export type DropReason = 'oversize' | 'framing' | 'connection-limit' | 'timeout' | 'stun' | 'send-error' | 'tls-handshake' | 'ws-handshake';

/** Who must present a certificate to a TLS listener. */
export type VerifyClients = false | 'optional' | 'required';

/**
 * TLS settings shared by the TLS listeners and outbound TLS connections.
 * PEM contents, not paths: the transport reads no files.
 */
export interface TlsSettings {
  /** Our certificate chain; also presented as client certificate on outbound connections. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /**
   * Trusted CAs: client certificates are verified against them, and so are
   * server certificates on outbound connections (instead of the system store).
   */
  ca?: string | Buffer;
  /** false: no client certificate asked; optional: asked, and verified when given; required: refused without a valid one. */
  verifyClients: VerifyClients;
  minVersion: 'TLSv1.2' | 'TLSv1.3';
}

export const DEFAULT_TLS_SETTINGS: Readonly<TlsSettings> = Object.freeze({ verifyClients: false, minVersion: 'TLSv1.2' });

/** Settings of the ws and wss listeners (RFC 7118); wss takes its certificate from TlsSettings. */
export interface WsSettings {
  /** Only upgrades to this path are accepted (others get HTTP 404); undefined: any path. */
  path?: string;
  /**
   * Largest WebSocket message in bytes: a larger one closes the connection
   * (status 1009). Default and floor: maxMessageSize. Messages between the
   * two reach the parser, which answers 413.
   */
  maxPayload?: number;
  /** Each connection is pinged this often; one whose pong has not come by the next ping is closed. 0: no pings. */
  pingIntervalMs: number;
}

// 30 s: a dead browser tab or a dropped NAT mapping is noticed within a
// minute, at one small frame each way per connection and interval.
export const DEFAULT_WS_PING_INTERVAL_MS = 30_000;

export const DEFAULT_WS_SETTINGS: Readonly<WsSettings> = Object.freeze({ pingIntervalMs: DEFAULT_WS_PING_INTERVAL_MS });

/** Per-protocol counters. */
export type ProtocolCounters = Record<Protocol, number>;

/**
 * Counters read by metrics. Plain numbers incremented in place; never
 * replaced, so a reader may keep a reference to any nested object.
 */
export interface TransportStats {
  messagesIn: ProtocolCounters;
  messagesOut: ProtocolCounters;
  bytesIn: ProtocolCounters;
  bytesOut: ProtocolCounters;
  /**
   * oversize: datagram over maxMessageSize, or stream message/head over it
   * (connection closed); framing: other stream framing errors (connection
   * closed); connection-limit: connection refused over a bound; timeout:
   * connection closed by idle, first-message or connect timeout; stun: a STUN
   * datagram not answered (not a well-formed Binding request); send-error: a
   * message that could not be sent; tls-handshake: a TLS handshake that
   * failed (inbound or outbound), or a client certificate refused;
   * ws-handshake: a WebSocket upgrade refused (wrong path, no `sip`
   * subprotocol, not an upgrade, malformed).
   */
  dropped: Record<DropReason, number>;
  /** CRLF keep-alives received: UDP CRLF datagrams, stream double-CRLF pings. */
  keepalivesIn: ProtocolCounters;
  /** STUN Binding requests answered. */
  stunAnswered: number;
  connectionsAccepted: number;
  connectionsOutbound: number;
  connectionsClosed: number;
}

export interface TransportLog {
  warn(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

function protocolCounters(): ProtocolCounters {
  return { udp: 0, tcp: 0, tls: 0, ws: 0, wss: 0 };
}

export function createTransportStats(): TransportStats {
  return {
    messagesIn: protocolCounters(),
    messagesOut: protocolCounters(),
    bytesIn: protocolCounters(),
    bytesOut: protocolCounters(),
    dropped: { oversize: 0, framing: 0, 'connection-limit': 0, timeout: 0, stun: 0, 'send-error': 0, 'tls-handshake': 0, 'ws-handshake': 0 },
    keepalivesIn: protocolCounters(),
    stunAnswered: 0,
    connectionsAccepted: 0,
    connectionsOutbound: 0,
    connectionsClosed: 0,
  };
}

/** Key of a remote endpoint in the connection table. */
export function endpointKey(protocol: Protocol, address: string, port: number): string {
  return protocol + '|' + address + '|' + port;
}
