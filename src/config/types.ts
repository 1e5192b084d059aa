/**
 * The typed shape of Portier's configuration.
 *
 * A `Config` is produced only by `parseConfig`, `loadConfig` or `demoConfig`
 * (src/config/index.ts): it has been validated, every default is filled in,
 * and the whole object is deeply frozen.
 */

/** SIP transports Portier knows how to name and serve. */
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

/** `overload:` — new requests refused with 503 while requests wait too long in the UDP receive queue (src/transaction/overload.ts). */
export interface OverloadConfig {
  enabled: boolean;
  /** Seconds in Retry-After; each refusal says a value between this and twice it. */
  retryAfter: number;
  /** Milliseconds of JIT warm-up before `portier run` opens its sockets (src/warmup.ts); 0: none. */
  warmUp: number;
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

/** `websocket:` — settings of the ws and wss listeners (RFC 7118); wss takes its certificate from `tls:`. */
export interface WebsocketConfig {
  /** Only upgrades to this path are accepted (others get 404); null: any path. */
  path: string | null;
  /** Largest WebSocket message in bytes (larger closes the connection); 0: limits.message-size. */
  maxPayload: number;
  /** Seconds between pings to each connection; one without a pong by the next ping is closed. 0: no pings. */
  pingInterval: number;
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
  /** Let requests whose destination comes from a user (another domain's URI, a Contact, DNS) reach loopback, link-local or unspecified addresses (tests, one-machine setups). */
  relayToLoopback: boolean;
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
  /** With several nodes: the IP address the other nodes reach this one on; null: the listener's, or the machine's first. */
  nodeAddress: string | null;
}

// ---------------------------------------------------------------- door-station routing

export const GROUP_STRATEGIES = ['parallel', 'sequential'] as const;
export type GroupStrategy = (typeof GROUP_STRATEGIES)[number];

/** One opening window of a schedule: on these days, from..to local time (to < from spans midnight). */
export interface ScheduleWindow {
  /** Days of the week, 0 = Sunday .. 6 = Saturday, ascending. */
  days: number[];
  /** Minutes after midnight. */
  from: number;
  to: number;
}

/** A ring group: `groups.NAME`, reachable as sip:NAME@DOMAIN. */
export interface GroupConfig {
  /** Accounts (`alice@example.test`, `alice` in the first domain), other groups, or SIP URIs elsewhere (a PBX extension). */
  members: string[];
  strategy: GroupStrategy;
  /** Seconds the group rings (each member, for sequential) before the overflow. */
  ringTime: number;
  /** Where an unanswered call goes next: a group, an account or a SIP URI; null: the caller gets the failure. */
  overflow: string | null;
  /** Windows when the group rings; empty: always. Outside them calls go straight to the overflow. */
  schedule: ScheduleWindow[];
  /** IANA time zone of the schedule. */
  timezone: string;
}

/** `policy:` — who may call whom. */
export interface PolicyConfig {
  /** What a door-station account may call: 'any', or a list of groups, aliases, phones, doors, routes. */
  doorsMayCall: 'any' | DoorCallTarget[];
  phonesMayCallPhones: boolean;
  phonesMayCallDoors: boolean;
}

export const DOOR_CALL_TARGETS = ['groups', 'aliases', 'phones', 'doors', 'routes'] as const;
export type DoorCallTarget = (typeof DOOR_CALL_TARGETS)[number];

/** `routes:` — numbers that belong to another server (a PBX). */
export interface ExternalRoute {
  /** Regular expression tested against the user part of the Request-URI. */
  match: string;
  /** SIP URI of the next hop, sent as a Route (loose routing). */
  to: string;
}

// ---------------------------------------------------------------- push notifications

/** `push.fcm:` — Firebase Cloud Messaging HTTP v1. */
export interface FcmPushConfig {
  /** Service-account JSON (project_id, client_email, private_key, token_uri), absolute; readable at load. */
  serviceAccount: string;
  /** Base URL of the send API; null: https://fcm.googleapis.com. */
  endpoint: string | null;
}

/** `push.apns:` — Apple Push Notification service, by provider token (key, key-id, team-id) or by certificate (cert, key). */
export interface ApnsPushConfig {
  /** Token authentication: the AuthKey_KEYID.p8 (EC P-256) file; certificate authentication: the certificate's private key. Absolute. */
  key: string;
  /** Key ID of the .p8 key (token authentication); null with a certificate. */
  keyId: string | null;
  /** Apple Developer team ID (token authentication); null with a certificate. */
  teamId: string | null;
  /** PEM client certificate (certificate authentication); null: token authentication. Absolute. */
  cert: string | null;
  /** false sends every push to the sandbox; pn-provider=apns.dev goes there anyway. */
  production: boolean;
  /** Base URL replacing api.push.apple.com and api.sandbox.push.apple.com; null: Apple's. */
  endpoint: string | null;
}

export const GENERIC_PUSH_METHODS = ['GET', 'POST', 'PUT'] as const;
export type GenericPushMethod = (typeof GENERIC_PUSH_METHODS)[number];

/** `push.generic:` — an HTTP gateway (ntfy, UnifiedPush, a city's relay), as Flexisip's external-push-uri. */
export interface GenericPushConfig {
  /** URL template with $token $app-id $from-uri $from-name $to-uri $call-id $event $uid $type $sound $msgid. */
  url: string;
  method: GenericPushMethod;
  /** Body template (same placeholders); null: empty. */
  body: string | null;
}

/** `push:` — waking sleeping apps (RFC 8599) for late-forked calls and messages. No providers: no pushes. */
export interface PushConfig {
  /** Seconds a pushed call waits for the woken device to register. */
  callTimeout: number;
  /** Provisional response sent to the caller once a push is out: 110 Push sent, or 180 Ringing. */
  response: 110 | 180;
  /** Seconds: devices whose binding expires within this get a silent push to register again; null: off. */
  registerWakeup: number | null;
  /** PEM CA bundle trusted besides the system roots for provider connections, absolute; null: the roots only. */
  ca: string | null;
  fcm: FcmPushConfig | null;
  apns: ApnsPushConfig | null;
  generic: GenericPushConfig | null;
}

// ---------------------------------------------------------------- provisioning and media

export type ProvisioningTransport = 'tls' | 'tcp' | 'udp';

/** A door station shown in Linhome's device list (its vCard), to the members of its groups. */
export interface ProvisioningDevice {
  /** The door station's account: `portail` (first domain) or `portail@example.test`. */
  account: string;
  /** Shown in the app. */
  name: string;
  /** A device-type key of the app's theme (Linhome: device_types.xml), sent as X-LINPHONE-ACCOUNT-TYPE. */
  type: string;
  /** How the app sends the door-open code: SIP INFO, RFC 2833/4733 in RTP, or a SIP MESSAGE. */
  dtmf: 'sipinfo' | 'rfc2833' | 'sipmessage';
  /** Buttons in the app during a call with it. */
  actions: Array<{ type: 'open-door' | 'open-gate' | 'light-up' | 'unlock'; code: string }>;
  /** Ring groups whose members see it. */
  groups: string[];
}

/** `provisioning:` — remote provisioning of the apps by QR code (src/provisioning/). */
export interface ProvisioningConfig {
  /** Its own HTTP(S) listener. */
  listen: HttpListen;
  /** The public URL of that listener, without a trailing slash: links are BASE/p/TOKEN. */
  baseUrl: string;
  /** Seconds a link stays valid. */
  tokenTtl: number;
  /** What the apps register over. */
  transport: ProvisioningTransport;
  /** host[:port] of Portier's SIP listener for the apps; null: the host of base-url, the transport's default port. */
  sipServer: string | null;
  /** The tokens file, absolute; null: the users file's path + `.tokens`. */
  tokens: string | null;
  /** reg_expires given to the apps, in seconds. */
  regExpires: number;
  devices: ProvisioningDevice[];
  /**
   * Where Linhome's push gateway account goes. `portier`: nowhere; the XML turns Linhome's
   * `[app] auto_create_push_gateway_account` off and points its account-manager URLs
   * (`[assistant] xmlrpc_url`, `[account_creator] url`) at Portier. `vendor`: the XML leaves them
   * to the app's factory settings (stock Linhome: an account on its publisher's gateway).
   */
  pushGateway: 'portier' | 'vendor';
}

/** `media.turn:` — a coturn server with `use-auth-secret` (TURN REST API credentials). */
export interface TurnConfig {
  /** `turn:host:port?transport=udp` (RFC 7065). */
  url: string;
  /** File holding coturn's static-auth-secret, absolute (readable and non-empty at load). */
  secret: string;
  /** Seconds a TURN credential Portier issues stays valid. */
  ttl: number;
}

/** `media:` — STUN/TURN servers given to the apps; Portier itself never touches RTP. */
export interface MediaConfig {
  /** `stun:host:port` (RFC 7064); null: none (the TURN server answers STUN too). */
  stun: string | null;
  turn: TurnConfig | null;
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
  /** Null when there is no `tls:` section (allowed only without tls and wss listeners). */
  tls: TlsConfig | null;
  websocket: WebsocketConfig;
  /** Null: no authentication (`auth: off`, or no section while every listener is on loopback). */
  auth: AuthConfig | null;
  security: SecurityConfig;
  overload: OverloadConfig;
  storage: StorageConfig;
  /** Always present: no `push:` section gives the defaults with no providers. */
  push: PushConfig;
  /** Ring groups by name. */
  groups: Record<string, GroupConfig>;
  /** Other names for groups or accounts: what door stations dial (`100`). */
  aliases: Record<string, string>;
  policy: PolicyConfig;
  routes: ExternalRoute[];
  /** Null when there is no `provisioning:` section: no provisioning listener. */
  provisioning: ProvisioningConfig | null;
  /** Always present: no `media:` section gives no STUN and no TURN. */
  media: MediaConfig;
  /**
   * Processes that share the SIP sockets (node:cluster), each owning the
   * calls whose Call-ID hashes to it; 1: this process alone. More than one
   * needs storage type redis. Restart only.
   */
  workers: number;
  /** DNS servers for RFC 3263 lookups (`127.0.0.1:53`, `[::1]:5353`); empty: the system's. */
  resolver: string[];
  /** True only for the embedded demo configuration (no --config given). */
  demo: boolean;
  /** The file the configuration came from, or '(embedded demo)'. */
  source: string;
}
