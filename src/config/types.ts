/**
 * The typed shape of Portier's configuration.
 *
 * A `Config` is produced only by `parseConfig`, `loadConfig` or `demoConfig`
 * (src/config/index.ts): it has been validated, every default is filled in,
 * and the whole object is deeply frozen.
 */

/** SIP transports Portier knows how to name. udp, tcp and tls are served so far. */
export type Protocol = 'udp' | 'tcp' | 'tls' | 'ws' | 'wss';

export const PROTOCOLS: readonly Protocol[] = ['udp', 'tcp', 'tls', 'ws', 'wss'];

/** One socket to listen on. The transport layer declares an identical structural type. */
export interface ListenSpec {
  protocol: Protocol;
  /** IP literal without brackets: `127.0.0.1`, `0.0.0.0`, `::1`, `::`. */
  host: string;
  /** 0 means "any free port" (useful in tests only). */
  port: number;
}

/** Levels accepted by `log.level`, most to least severe. */
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

/** `limits:` — protection against oversized messages and connection floods. */
export interface Limits {
  /** Largest SIP message in bytes; larger ones get 413 (streams) or are dropped (UDP). */
  messageSize: number;
  /** Most header fields in one message; more gets 400. */
  headers: number;
  /** Longest header line in bytes. */
  lineLength: number;
  /** Most stream (TCP, later TLS/WS) connections in total. */
  connections: number;
  /** Most stream connections from one remote IP address. */
  connectionsPerSource: number;
  /** Seconds without traffic before a stream connection is closed. */
  idleTimeout: number;
  /** Seconds a new stream connection has to send its first complete message. */
  firstMessageTimeout: number;
  /** Most calls one door-station account may have at once (ringing or established); 0: no limit. */
  callsPerDoor: number;
}

export interface LogConfig {
  level: LogLevel;
}

/** `registrar:` — how long bindings last, in seconds (RFC 3261 §10.3). */
export interface RegistrarConfig {
  /** Shorter non-zero expirations get 423 Interval Too Brief with Min-Expires. */
  minExpires: number;
  /** Longer expirations are shortened to this. */
  maxExpires: number;
  /** Used when a REGISTER gives neither an expires parameter nor an Expires header. */
  defaultExpires: number;
  /** Most contacts one address-of-record may have registered; more gets 403. */
  maxBindings: number;
}

/** `proxy:` — call routing. */
export interface ProxyConfig {
  /** Seconds a call may ring before the caller gets 408 and the branches are cancelled (Timer C). */
  ringTimeout: number;
}

/** `timers:` — RFC 3261 §17 transaction timers, in milliseconds. */
export interface TimersConfig {
  t1: number;
  t2: number;
  t4: number;
}

/** An HTTP listening address: `127.0.0.1:9090`, `[::1]:9090`. */
export interface HttpListen {
  /** IP literal without brackets. */
  host: string;
  /** 0 means "any free port" (useful in tests only). */
  port: number;
}

/** `metrics:` — the HTTP listener for /metrics (Prometheus) and /healthz. */
export interface MetricsConfig {
  /** Where to listen; null (`listen: off`, or no `metrics:` section) serves no HTTP at all. */
  listen: HttpListen | null;
}

/** `tls.verify-clients`: whether TLS listeners ask clients for a certificate. */
export type VerifyClients = false | 'optional' | 'required';

export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsVersion = (typeof TLS_VERSIONS)[number];

/** `tls:` — certificates for tls listeners and trust for outbound TLS. Paths were readable at load. */
export interface TlsConfig {
  /** PEM certificate chain, server certificate first. */
  cert: string;
  /** PEM private key of `cert`. */
  key: string;
  /** PEM CA bundle trusted for client certificates and for servers reached over TLS; null: the system store. */
  ca: string | null;
  /** false: no client certificate asked; optional: verified when given; required: refused without one. */
  verifyClients: VerifyClients;
  /** Oldest TLS version accepted, in and out. */
  minVersion: TlsVersion;
}

/** Digest algorithms Portier can challenge with (RFC 8760). */
export const DIGEST_ALGORITHMS = ['SHA-256', 'MD5'] as const;
export type DigestAlgorithm = (typeof DIGEST_ALGORITHMS)[number];

/** `auth:` — who may register and call (RFC 3261 §22 digest). */
export interface AuthConfig {
  /** The users file (HA1 hashes only), absolute; it existed and was readable at load. */
  users: string;
  /** Digest realm; the hashes in the users file are computed with it. */
  realm: string;
  /** Algorithms offered, one challenge header each, in this order. */
  algorithms: DigestAlgorithm[];
  /** Sources (CIDRs) that may register and call without digest: door stations on a trusted LAN, a PBX. */
  trusted: string[];
  /** Seconds a nonce stays valid; an older one gets stale=true and a fresh challenge. */
  nonceLifetime: number;
}

/** `security:` — per-source limits against scanners and floods; 0 switches a limit off. */
export interface SecurityConfig {
  rate: { perSource: number; burst: number };
  authFailures: { max: number; window: number; ban: number; maxBan: number };
  /** CIDRs never rate-limited or banned (an SBC, a PBX, monitoring). */
  exempt: string[];
  /** Silently drop requests whose User-Agent names a scanning tool. */
  dropScanners: boolean;
}

export const STORAGE_TYPES = ['sqlite', 'memory', 'redis'] as const;
export type StorageType = (typeof STORAGE_TYPES)[number];

/** `storage:` — where registrations (and bans) are kept. */
export interface StorageConfig {
  /** sqlite: a file, survives restarts (the default); memory: lost on restart; redis: shared by several nodes. */
  type: StorageType;
  /** SQLite file, absolute (relative paths are taken from the working directory). */
  path: string;
  /** Most milliseconds a change waits before SQLite has it: what a crash may lose. */
  flushInterval: number;
  /** Redis server, redis://[user:password@]host:port[/db]. */
  url: string;
  /** Prefix of every Redis key and channel. */
  prefix: string;
}

export interface Config {
  /** SIP domains this server is authoritative for; lower-cased, IPv6 without brackets. */
  domains: string[];
  listen: ListenSpec[];
  limits: Limits;
  registrar: RegistrarConfig;
  proxy: ProxyConfig;
  timers: TimersConfig;
  log: LogConfig;
  metrics: MetricsConfig;
  /** Null when there is no `tls:` section (allowed only without tls listeners). */
  tls: TlsConfig | null;
  /** Null: no authentication (`auth: off`, or no section while every listener is on loopback). */
  auth: AuthConfig | null;
  security: SecurityConfig;
  storage: StorageConfig;
  /** True only for the embedded demo configuration (no --config given). */
  demo: boolean;
  /** The file the configuration came from, or '(embedded demo)'. */
  source: string;
}
