/**
 * Portier's configuration: YAML text → one validated, deeply frozen `Config`.
 *
 *   loadConfig(path)           read and validate a file
 *   parseConfig(text, source)  validate YAML text; `source` names it in errors
 *   demoConfig()               the embedded config used when no --config is given
 *   formatConfig(config)       the effective config as YAML (parses back to the same Config)
 *
 * Every problem is a `ConfigError` whose message reads `FILE: KEY.PATH: reason`.
 * To add a section: describe it with the builders of ./schema.js in `SCHEMA`
 * below and add its interface to ./types.ts (the compiler checks they agree).
 */
import { accessSync, existsSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import YAML from 'yaml';
import { ConfigError, unreadableReason } from './errors.js';
import { checkListenConflicts, formatListen, hideUrlPassword, parseDomain, parseHostPort, parseListen } from './hosts.js';
import {
  FAILED,
  Invalid,
  boolean,
  deepFreeze,
  integer,
  list,
  oneOf,
  run,
  seconds,
  section,
  text,
  type Ctx,
  type Field,
  type Issue,
} from './schema.js';
import { parseCidr } from '../auth/cidr.js';
import { aliases, checkRouting, groups, policy, routes } from './routing.js';
import { readPushCredentials } from '../push/credentials.js';
import { checkProvisioning, mediaField, provisioningField, resolveMediaFiles, resolveProvisioningFiles } from './provisioning.js';
import {
  DIGEST_ALGORITHMS,
  LOG_LEVELS,
  TLS_VERSIONS,
  type AuthConfig,
  type Config,
  type DigestAlgorithm,
  type SecurityConfig,
  type OverloadConfig,
  type StorageConfig,
  type StorageType,
  STORAGE_TYPES,
  type HttpListen,
  type ListenSpec,
  type LogLevel,
  type MetricsConfig,
  type TlsConfig,
  type TlsVersion,
  type VerifyClients,
  type WebsocketConfig,
  GENERIC_PUSH_METHODS,
  type GenericPushMethod,
  type PushConfig,
} from './types.js';

export { ConfigError } from './errors.js';
export { DEFAULT_PORTS, formatListen, parseListen } from './hosts.js';
export type {
  AuthConfig,
  Config,
  DigestAlgorithm,
  SecurityConfig,
  OverloadConfig,
  StorageConfig,
  StorageType,
  HttpListen,
  Limits,
  ListenSpec,
  LogConfig,
  LogLevel,
  MediaConfig,
  MetricsConfig,
  Protocol,
  ProvisioningConfig,
  ProvisioningDevice,
  TurnConfig,
  ProxyConfig,
  RegistrarConfig,
  TimersConfig,
  TlsConfig,
  TlsVersion,
  VerifyClients,
  WebsocketConfig,
} from './types.js';
export { DIGEST_ALGORITHMS, LOG_LEVELS, PROTOCOLS, STORAGE_TYPES, TLS_VERSIONS } from './types.js';

export const DEMO_SOURCE = '(embedded demo)';

// Limits are independent: a line-length above message-size, or connections-per-source
// above connections, is harmless (the smaller limit applies first), so it is not refused.
const limits = section({
  'message-size': integer({ min: 1024, max: 1048576, default: 65535 }),
  headers: integer({ min: 16, max: 1000, default: 100 }),
  'line-length': integer({ min: 256, max: 1048576, default: 8192 }),
  connections: integer({ min: 1, max: 1000000, default: 10000 }),
  'connections-per-source': integer({ min: 1, max: 1000000, default: 64 }),
  'idle-timeout': seconds({ min: 0.1, max: 86400, default: 600 }),
  'first-message-timeout': seconds({ min: 0.1, max: 3600, default: 10 }),
  'calls-per-door': integer({ min: 0, max: 10000, default: 4 }),
});

const registrar = section(
  {
    'min-expires': integer({ min: 1, max: 86400, default: 60 }),
    'max-expires': integer({ min: 1, max: 604800, default: 3600 }),
    'default-expires': integer({ min: 1, max: 604800, default: 600 }),
    'max-bindings': integer({ min: 1, max: 1000, default: 10 }),
  },
  {
    check(r, report) {
      if (r.minExpires > r.maxExpires) report('min-expires', `must not exceed max-expires (${r.maxExpires})`);
      if (r.defaultExpires < r.minExpires || r.defaultExpires > r.maxExpires) {
        report('default-expires', `must lie between min-expires (${r.minExpires}) and max-expires (${r.maxExpires})`);
      }
    },
  },
);

// RFC 3261 §17.1.1.1: T1 500 ms, T2 4 s, T4 5 s by default; T1 may be raised
// on high-latency networks, never T2 below T1.
const timers = section(
  {
    t1: integer({ min: 10, max: 10000, default: 500 }),
    t2: integer({ min: 10, max: 60000, default: 4000 }),
    t4: integer({ min: 10, max: 60000, default: 5000 }),
  },
  {
    check(t, report) {
      if (t.t2 < t.t1) report('t2', `must not be below t1 (${t.t1})`);
    },
  },
);

const HTTP_LISTEN_EXAMPLE = '127.0.0.1:9090, 0.0.0.0:9090 or [::1]:9090';

/** `host:port` for an HTTP listener (IPv6 in brackets), or `off`. */
export function parseHttpListen(raw: string): HttpListen | null {
  if (raw.toLowerCase() === 'off') return null;
  const needsPort = `${JSON.stringify(raw)} must be host:port, e.g. ${HTTP_LISTEN_EXAMPLE}, or off`;
  return parseHostPort(raw, { defaultPort: null, raw, v6Example: '[::1]:9090', needsPort, missingHost: needsPort });
}

/** Inverse of parseHttpListen. */
export function formatHttpListen(listen: HttpListen | null): string {
  if (listen === null) return 'off';
  return `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`;
}

// `metrics:` present needs its `listen`; no `metrics:` section at all serves no HTTP
// (so that test and embedded configs never claim port 9090 by surprise).
const metricsSection = section({
  listen: text<HttpListen | null>({
    convert: parseHttpListen,
    format: formatHttpListen,
    expected: `host:port (e.g. ${HTTP_LISTEN_EXAMPLE}) or off`,
    example: '127.0.0.1:9090',
  }),
});
const metrics: Field<MetricsConfig> = { ...metricsSection, default: () => ({ listen: null }) };

const path = (example: string) =>
  text<string>({
    convert(s) {
      if (s === '') throw new Invalid('must not be empty');
      return s;
    },
    format: (p) => p,
    expected: 'a file path',
    example,
  });

const VERIFY_CLIENTS_REASON = 'must be false, optional or required';
const verifyClients: Field<VerifyClients> = {
  parse(value) {
    if (value === false) return false;
    if (typeof value === 'string') {
      const v = value.toLowerCase();
      if (v === 'false') return false;
      if (v === 'optional' || v === 'required') return v;
    }
    throw new Invalid(`${VERIFY_CLIENTS_REASON}${typeof value === 'string' || typeof value === 'boolean' ? ` (got ${JSON.stringify(value)})` : ''}`);
  },
  format: (v) => v,
  default: () => false,
};

const tlsSection = section({
  cert: path('/etc/portier/tls/cert.pem'),
  key: path('/etc/portier/tls/key.pem'),
  // Absent (or written back as nothing): the system store.
  ca: { ...path('/etc/portier/tls/ca.pem'), format: (p: string | null) => p ?? undefined, default: () => null } as Field<string | null>,
  'verify-clients': verifyClients,
  'min-version': oneOf<TlsVersion>(TLS_VERSIONS, { default: 'TLSv1.2' }),
});
// No `tls:` section: null, and nothing written back.
const tlsField: Field<TlsConfig | null> = {
  parse: (value, p, ctx) => tlsSection.parse(value, p, ctx),
  format: (v) => (v === null ? undefined : tlsSection.format(v)),
  default: () => null,
};

// `websocket:` — ws/wss listeners (RFC 7118). Absent: any path, payloads up
// to limits.message-size, a ping every 30 s.
const websocket: Field<WebsocketConfig> = section({
  path: text<string | null>({
    convert(s) {
      if (!/^\/[\x21-\x7e]*$/.test(s) || s.includes('?') || s.includes('#')) throw new Invalid(`must be a URL path starting with "/", without spaces, "?" or "#" (got ${JSON.stringify(s)})`);
      return s;
    },
    format: (p) => p ?? undefined,
    expected: 'a URL path such as /sip',
    default: () => null,
  }),
  'max-payload': integer({ min: 0, max: 16777216, default: 0 }),
  'ping-interval': seconds({ min: 0, max: 3600, default: 30 }),
});

const cidr = text<string>({
  convert(s) {
    try {
      parseCidr(s);
    } catch (err) {
      throw new Invalid((err as Error).message);
    }
    return s;
  },
  format: (c) => c,
  expected: 'an address or ADDRESS/PREFIX (e.g. 10.20.0.0/16 or 2001:db8::/32)',
});

// The digest realm is a quoted string on the wire; kept to visible ASCII
// without quotes or backslashes so that every client hashes the same bytes.
const realm = text<string>({
  convert(s) {
    if (!/^[!#-[\]-~]+$/.test(s)) throw new Invalid(`must be visible ASCII without spaces, quotes or backslashes (got ${JSON.stringify(s)})`);
    return s;
  },
  format: (r) => r,
  expected: 'a realm such as example.test',
  // Filled with the first domain once the domains are known (see validate).
  default: () => '',
});

const authSection = section({
  users: path('conf/users'),
  realm,
  algorithms: list<DigestAlgorithm>(oneOf<DigestAlgorithm>(DIGEST_ALGORITHMS), {
    min: 1,
    default: () => ['SHA-256', 'MD5'],
    check(algs, report) {
      algs.forEach((a, i) => {
        if (algs.indexOf(a) < i) report(i, `duplicate of ${a}`);
      });
    },
  }),
  trusted: list(cidr, { default: () => [] }),
  'nonce-lifetime': integer({ min: 1, max: 86400, default: 300 }),
});
// `auth: off` (or false) switches authentication off; so does no section at
// all, but only while every listener is on loopback (checked in validate).
const authField: Field<AuthConfig | null> = {
  parse(value, p, ctx) {
    if (value === false || (typeof value === 'string' && value.toLowerCase() === 'off')) return null;
    return authSection.parse(value, p, ctx);
  },
  format: (v) => (v === null ? 'off' : authSection.format(v)),
  default: () => null,
};

const security: Field<SecurityConfig> = section({
  rate: section(
    {
      'per-source': integer({ min: 0, max: 1000000, default: 100 }),
      burst: integer({ min: 1, max: 10000000, default: 400 }),
    },
  ),
  'auth-failures': section(
    {
      max: integer({ min: 0, max: 100000, default: 10 }),
      window: integer({ min: 1, max: 86400, default: 600 }),
      ban: integer({ min: 1, max: 31536000, default: 300 }),
      'max-ban': integer({ min: 1, max: 31536000, default: 86400 }),
    },
    {
      check(f, report) {
        if (f.maxBan < f.ban) report('max-ban', `must not be below ban (${f.ban})`);
      },
    },
  ),
  exempt: list(cidr, { default: () => [] }),
  'drop-scanners': boolean({ default: true }),
  'relay-to-loopback': boolean({ default: false }),
});

const overload: Field<OverloadConfig> = section({
  enabled: boolean({ default: true }),
  'retry-after': integer({ min: 1, max: 3600, default: 2 }),
  'warm-up': integer({ min: 0, max: 5000, default: 500 }),
});

const nodeAddress: Field<string | null> = {
  parse(value) {
    if (value === null || value === 'auto') return null;
    const h = typeof value === 'string' ? value.trim().replace(/^\[(.*)\]$/, '$1') : '';
    if (isIP(h) === 0) throw new Invalid(`must be an IP address of this node, or auto (got ${JSON.stringify(value)})`);
    return h.toLowerCase();
  },
  format: (v) => v ?? 'auto',
  default: () => null,
};

const storage: Field<StorageConfig> = section({
  type: oneOf<StorageType>(STORAGE_TYPES, { default: 'sqlite' }),
  path: { ...path('data/portier.db'), default: () => 'data/portier.db' },
  'flush-interval': integer({ min: 1, max: 10000, default: 50 }),
  url: text<string>({
    convert(s) {
      let u: URL;
      try {
        u = new URL(s);
      } catch {
        throw new Invalid(`${JSON.stringify(hideUrlPassword(s))} is not a URL (e.g. redis://127.0.0.1:6379)`);
      }
      if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Invalid(`must be a redis:// or rediss:// URL (got ${JSON.stringify(hideUrlPassword(s))})`);
      return s;
    },
    // `portier check` prints the configuration: never the password.
    format: hideUrlPassword,
    expected: 'a redis:// URL',
    default: () => 'redis://127.0.0.1:6379',
  }),
  prefix: text<string>({
    convert(s) {
      if (s === '' || /\s/.test(s)) throw new Invalid('must be non-empty, without spaces');
      return s;
    },
    format: (p) => p,
    expected: 'a key prefix such as portier:',
    default: () => 'portier:',
  }),
  // With several nodes (type redis): the address the other nodes reach this one on, for calls to devices
  // whose connection is here. Absent: the listener's own address, or this machine's first one.
  'node-address': nodeAddress,
});

// ---------------------------------------------------------------- push
// Provider URLs are https; plain http only to a loopback host (a relay on the
// same machine), so that push contents (caller, token) never cross a network
// unencrypted. Files are resolved and read in resolvePushFiles.

function isLoopbackHost(h: string): boolean {
  return h === 'localhost' || h === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

function pushUrl(s: string, opts: { template: boolean; originOnly: boolean }): string {
  // Placeholders are not URL syntax everywhere ($token in the host of a template): try with a stand-in.
  const probe = opts.template ? s.replace(/\$[a-z-]+/g, 'x') : s;
  let u: URL;
  try {
    u = new URL(probe);
  } catch {
    throw new Invalid(`${JSON.stringify(s)} is not a URL (e.g. https://ntfy.example.test/$token)`);
  }
  if (!(u.protocol === 'https:' || (u.protocol === 'http:' && isLoopbackHost(u.hostname)))) {
    throw new Invalid(`must be an https:// URL (http:// only to a loopback address) (got ${JSON.stringify(s)})`);
  }
  if (opts.originOnly && (u.pathname !== '/' || u.search !== '' || u.hash !== '')) {
    throw new Invalid(`must be scheme://host[:port] without a path (got ${JSON.stringify(s)})`);
  }
  return s;
}

const endpointField = (originOnly: boolean) =>
  text<string | null>({
    convert: (s) => pushUrl(s, { template: false, originOnly }),
    format: (v) => v ?? undefined,
    expected: 'an https:// URL',
    default: () => null,
  });

function nullable<T>(field: Field<T>): Field<T | null> {
  return { parse: (v, p, ctx) => field.parse(v, p, ctx), format: (v) => (v === null ? undefined : field.format(v)), default: () => null };
}

const optionalPath = (example: string) => ({ ...path(example), format: (p: string | null) => p ?? undefined, default: () => null }) as Field<string | null>;

const appleId = text<string | null>({
  convert(s) {
    if (!/^[A-Za-z0-9]{1,32}$/.test(s)) throw new Invalid(`must be letters and digits, as Apple shows it (got ${JSON.stringify(s)})`);
    return s;
  },
  format: (v) => v ?? undefined,
  expected: 'an Apple identifier such as ABC123DEFG',
  default: () => null,
});

const pushResponse: Field<110 | 180> = {
  parse(value) {
    const n = typeof value === 'string' ? Number(value) : value;
    if (n !== 110 && n !== 180) throw new Invalid(`must be 110 or 180 (got ${JSON.stringify(value)})`);
    return n;
  },
  format: (v) => v,
  default: () => 180,
};

const registerWakeup: Field<number | null> = {
  parse(value) {
    if (value === false || (typeof value === 'string' && value.toLowerCase() === 'off')) return null;
    const m = typeof value === 'string' ? /^(\d+)\s*(s|m|h)?$/i.exec(value.trim()) : null;
    const secs = typeof value === 'number' ? value : m ? Number(m[1]) * ({ s: 1, m: 60, h: 3600 }[(m[2] ?? 's').toLowerCase() as 's' | 'm' | 'h']) : NaN;
    if (!Number.isInteger(secs) || secs < 60 || secs > 86400) throw new Invalid(`must be off or a duration from 1m to 24h such as 30m (got ${JSON.stringify(value)})`);
    return secs;
  },
  format: (v) => (v === null ? 'off' : v % 3600 === 0 ? `${v / 3600}h` : v % 60 === 0 ? `${v / 60}m` : `${v}s`),
  default: () => null,
};

const APNS_TOKEN_EXAMPLE = 'apns: {key: AuthKey_ABC123DEFG.p8, key-id: ABC123DEFG, team-id: DEF123GHIJ}';

const push: Field<PushConfig> = section({
  'call-timeout': integer({ min: 1, max: 600, default: 30 }),
  response: pushResponse,
  'register-wakeup': registerWakeup,
  ca: optionalPath('/etc/portier/push/ca.pem'),
  fcm: nullable(
    section({
      'service-account': path('/etc/portier/push/firebase-service-account.json'),
      endpoint: endpointField(false),
    }),
  ),
  apns: nullable(
    section(
      {
        key: path('/etc/portier/push/AuthKey_ABC123DEFG.p8'),
        'key-id': appleId,
        'team-id': appleId,
        cert: optionalPath('/etc/portier/push/apns-cert.pem'),
        production: boolean({ default: true }),
        endpoint: endpointField(true),
      },
      {
        check(a, report) {
          if (a.cert === null) {
            if (a.keyId === null) report('key-id', `required for token authentication (e.g. ${APNS_TOKEN_EXAMPLE})`);
            if (a.teamId === null) report('team-id', `required for token authentication (e.g. ${APNS_TOKEN_EXAMPLE})`);
          } else {
            if (a.keyId !== null) report('key-id', 'only for token authentication (a .p8 key); with cert, key is the certificate\'s private key');
            if (a.teamId !== null) report('team-id', 'only for token authentication (a .p8 key); the certificate names the team');
          }
        },
      },
    ),
  ),
  generic: nullable(
    section({
      url: text<string>({ convert: (s) => pushUrl(s, { template: true, originOnly: false }), format: (s) => s, expected: 'a URL template such as https://ntfy.example.test/$token', example: 'https://ntfy.example.test/$token' }),
      method: oneOf<GenericPushMethod>(GENERIC_PUSH_METHODS, { default: 'POST' }),
      body: text<string | null>({ convert: (s) => s, format: (v) => v ?? undefined, expected: 'a body template', default: () => null }),
    }),
  ),
});

const TLS_EXAMPLE = 'tls: {cert: /etc/portier/tls/cert.pem, key: /etc/portier/tls/key.pem}';

export const SCHEMA = section(
  {
    domains: list(text({ convert: parseDomain, format: (d: string) => d, expected: 'a host name or IP address' }), {
      min: 1,
      example: '[example.test]',
      check(domains, report) {
        domains.forEach((d, i) => {
          const j = domains.indexOf(d);
          if (j < i) report(i, `duplicate of domains[${j}] (${d})`);
        });
      },
    }),
    listen: list(
      text<ListenSpec>({ convert: parseListen, format: formatListen, expected: 'a string like udp:127.0.0.1:5060' }),
      { min: 1, example: '[udp:127.0.0.1:5060, tcp:127.0.0.1:5060]', check: checkListenConflicts },
    ),
    limits,
    registrar,
    proxy: section({ 'ring-timeout': integer({ min: 1, max: 3600, default: 30 }) }),
    timers,
    log: section({ level: oneOf<LogLevel>(LOG_LEVELS, { default: 'info' }) }),
    metrics,
    tls: tlsField,
    websocket,
    auth: authField,
    security,
    overload,
    storage,
    push,
    groups,
    aliases,
    policy,
    routes,
    provisioning: provisioningField,
    media: mediaField,
    resolver: list(
      text<string>({
        convert(v) {
          const hint = 'a DNS server is an IP address with an optional port, e.g. 127.0.0.1:53 or [::1]:5353';
          const hp = parseHostPort(v, { defaultPort: 53, raw: v, v6Example: '[::1]:5353', needsPort: hint, missingHost: hint });
          if (isIP(hp.host) === 0) throw new Invalid(`${JSON.stringify(v)}: ${hint}`);
          return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
        },
        format: (v) => v,
        expected: 'a DNS server as IP:PORT',
      }),
      { default: () => [] },
    ),
    workers: integer({ min: 1, max: 64, default: 1 }),
  },
  {
    check(c, report) {
      checkRouting(c, report);
      checkProvisioning(c, report);
      // Every worker must see the bindings the others write: one shared store, on one machine.
      if (c.workers > 1 && c.storage.type !== 'redis') report('workers', `more than one worker needs storage type redis (the workers share the registrations), not ${c.storage.type}`);
      if (c.workers > 1 && c.storage.nodeAddress !== null) report('workers', 'more than one worker serves one machine: it cannot be combined with storage.node-address (several nodes)');
      const i = c.listen.findIndex((l) => l.protocol === 'tls' || l.protocol === 'wss');
      if (i >= 0 && c.tls === null) report('tls', `required by listen[${i}] (${formatListen(c.listen[i])}) (e.g. ${TLS_EXAMPLE})`);
    },
  },
);

// The validated YAML must be exactly the Config minus its bookkeeping fields:
type SchemaOutput = ReturnType<typeof SCHEMA.parse>;
type AssertEqual<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const schemaMatchesTypes: AssertEqual<SchemaOutput, Omit<Config, 'demo' | 'source'>> = true;
void schemaMatchesTypes;

export interface LoadOptions {
  /** `portier user add` creates the users file: it may not exist yet. */
  usersMayBeMissing?: boolean;
}

function validate(data: unknown, source: string, demo: boolean, opts: LoadOptions = {}): Config {
  if (data === null || data === undefined) {
    throw new ConfigError(source, [`${source}: the file is empty (it needs at least domains and listen; see conf/portier.yaml)`]);
  }
  const ctx: Ctx = { issues: [] };
  const result = run(SCHEMA, data, [], ctx);
  if (result === FAILED || ctx.issues.length > 0) throw ConfigError.fromIssues(source, ctx.issues);
  const base = demo ? process.cwd() : dirname(source);
  const tls = result.tls === null ? null : resolveTlsFiles(result.tls, base, ctx.issues);
  let auth = result.auth;
  if (auth !== null) {
    const users = resolve(base, auth.users);
    const missingOk = opts.usersMayBeMissing === true && !existsSync(users);
    auth = { ...auth, realm: auth.realm === '' ? result.domains[0] : auth.realm, users: missingOk ? users : readableFile(['auth', 'users'], users, ctx.issues) };
  } else if (!hasKey(data, 'auth')) {
    const open = result.listen.findIndex((l) => !isLoopback(l.host));
    if (open >= 0) {
      ctx.issues.push({
        path: ['auth'],
        reason: `required when listening beyond loopback (listen[${open}] is ${formatListen(result.listen[open])}): e.g. auth: {users: users, realm: ${result.domains[0]}}, or auth: off to accept anyone`,
      });
    }
  }
  const pushConfig = resolvePushFiles(result.push, base, ctx.issues);
  const media = resolveMediaFiles(result.media, base, ctx.issues);
  const provisioning = resolveProvisioningFiles(result.provisioning, base);
  if (ctx.issues.length > 0) throw ConfigError.fromIssues(source, ctx.issues);
  // The database is state, not configuration: relative to the working
  // directory (systemd's WorkingDirectory=/var/lib/portier), never to /etc.
  const storage = { ...result.storage, path: resolve(process.cwd(), result.storage.path) };
  return deepFreeze({ ...result, tls, auth, storage, push: pushConfig, media, provisioning, demo, source });
}

function hasKey(data: unknown, key: string): boolean {
  if (data instanceof Map) return data.has(key);
  return data !== null && typeof data === 'object' && Object.prototype.hasOwnProperty.call(data, key);
}

function isLoopback(host: string): boolean {
  return host === '::1' || host.startsWith('127.');
}

/** An absolute path that must name a readable file now, so that `portier check` finds a typo before the first request. */
function readableFile(key: Array<string>, abs: string, issues: Issue[]): string {
  try {
    if (statSync(abs).isDirectory()) {
      issues.push({ path: key, reason: `cannot read ${abs}: is a directory, not a file` });
      return abs;
    }
    accessSync(abs, fsConstants.R_OK);
  } catch (err) {
    const hint = key[0] === 'auth' && (err as NodeJS.ErrnoException).code === 'ENOENT' ? ' (create it with: portier user add AOR --users FILE)' : '';
    issues.push({ path: key, reason: `cannot read ${abs}: ${unreadableReason(err)}${hint}` });
  }
  return abs;
}

/**
 * TLS paths are relative to the configuration file's directory; they are
 * stored absolute, and every file must be readable now, so that a typo
 * is found by `portier check` and not at the first handshake.
 */
/**
 * Push files, like the TLS ones, are relative to the configuration file's
 * directory and must be readable now; their contents (service-account JSON,
 * keys, certificates) are checked too, so that `portier check` finds a wrong
 * file before the first call to a sleeping phone.
 */
function resolvePushFiles(p: PushConfig, base: string, issues: Issue[]): PushConfig {
  const before = issues.length;
  const file = (key: string[], f: string) => readableFile(key, resolve(base, f), issues);
  const out: PushConfig = {
    ...p,
    ca: p.ca === null ? null : file(['push', 'ca'], p.ca),
    fcm: p.fcm === null ? null : { ...p.fcm, serviceAccount: file(['push', 'fcm', 'service-account'], p.fcm.serviceAccount) },
    apns: p.apns === null ? null : { ...p.apns, key: file(['push', 'apns', 'key'], p.apns.key), cert: p.apns.cert === null ? null : file(['push', 'apns', 'cert'], p.apns.cert) },
  };
  if (issues.length === before) for (const problem of readPushCredentials(out).problems) issues.push(problem);
  return out;
}

function resolveTlsFiles(tls: TlsConfig, base: string, issues: Issue[]): TlsConfig {
  const check = (key: 'cert' | 'key' | 'ca', p: string): string => readableFile(['tls', key], resolve(base, p), issues);
  return {
    ...tls,
    cert: check('cert', tls.cert),
    key: check('key', tls.key),
    ca: tls.ca === null ? null : check('ca', tls.ca),
  };
}

function yamlProblem(source: string, e: YAML.YAMLError): string {
  const first = e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
  const pos = e.linePos?.[0];
  return pos ? `${source}:${pos.line}:${pos.col}: ${first}` : `${source}: ${first}`;
}

/** Validate YAML text. `source` (usually the file path) prefixes every error message. */
export function parseConfig(text: string, source: string, opts: LoadOptions = {}): Config {
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true, strict: true });
  const problems = [...doc.errors, ...doc.warnings].map((e) => yamlProblem(source, e));
  if (problems.length > 0) throw new ConfigError(source, problems);
  let data: unknown;
  try {
    data = doc.toJS({ mapAsMap: true, maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError(source, [`${source}: ${(err as Error).message}`]);
  }
  return validate(data, source, false, opts);
}

/** Read and validate a configuration file. */
export function loadConfig(path: string, opts: LoadOptions = {}): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [`${path}: cannot read the configuration: ${unreadableReason(err)}`]);
  }
  return parseConfig(text, path, opts);
}

/** The embedded configuration used without --config: localhost only, for trying Portier on one machine. */
export function demoConfig(): Config {
  return validate(
    // The demo keeps registrations in memory: trying Portier leaves no file behind.
    { domains: ['localhost'], listen: ['udp:127.0.0.1:5060', 'tcp:127.0.0.1:5060'], metrics: { listen: '127.0.0.1:9090' }, storage: { type: 'memory' } },
    DEMO_SOURCE,
    true,
  );
}

/** The effective configuration (defaults filled in) as YAML; `parseConfig` reads it back to an equal Config. */
export function formatConfig(config: Config): string {
  const { demo: _demo, source, ...rest } = config;
  const body = YAML.stringify(SCHEMA.format(rest), { lineWidth: 0 });
  return `# Effective Portier configuration from ${source}, defaults filled in\n${body}`;
}
