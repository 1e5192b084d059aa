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
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import YAML from 'yaml';
import { ConfigError } from './errors.js';
import { checkListenConflicts, formatListen, parseDomain, parseHostPort, parseListen } from './hosts.js';
import {
  FAILED,
  Invalid,
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
import {
  LOG_LEVELS,
  TLS_VERSIONS,
  type Config,
  type HttpListen,
  type ListenSpec,
  type LogLevel,
  type MetricsConfig,
  type TlsConfig,
  type TlsVersion,
  type VerifyClients,
} from './types.js';

export { ConfigError } from './errors.js';
export { DEFAULT_PORTS, formatListen, parseListen } from './hosts.js';
export type {
  Config,
  HttpListen,
  Limits,
  ListenSpec,
  LogConfig,
  LogLevel,
  MetricsConfig,
  Protocol,
  ProxyConfig,
  RegistrarConfig,
  TimersConfig,
  TlsConfig,
  TlsVersion,
  VerifyClients,
} from './types.js';
export { LOG_LEVELS, PROTOCOLS, TLS_VERSIONS } from './types.js';

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
});

const registrar = section(
  {
    'min-expires': integer({ min: 1, max: 86400, default: 60 }),
    'max-expires': integer({ min: 1, max: 604800, default: 3600 }),
    'default-expires': integer({ min: 1, max: 604800, default: 600 }),
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
  },
  {
    check(c, report) {
      const i = c.listen.findIndex((l) => l.protocol === 'tls');
      if (i >= 0 && c.tls === null) report('tls', `required by listen[${i}] (${formatListen(c.listen[i])}) (e.g. ${TLS_EXAMPLE})`);
    },
  },
);

// The validated YAML must be exactly the Config minus its bookkeeping fields:
type SchemaOutput = ReturnType<typeof SCHEMA.parse>;
type AssertEqual<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const schemaMatchesTypes: AssertEqual<SchemaOutput, Omit<Config, 'demo' | 'source'>> = true;
void schemaMatchesTypes;

function validate(data: unknown, source: string, demo: boolean): Config {
  if (data === null || data === undefined) {
    throw new ConfigError(source, [`${source}: the file is empty (it needs at least domains and listen; see conf/portier.yaml)`]);
  }
  const ctx: Ctx = { issues: [] };
  const result = run(SCHEMA, data, [], ctx);
  if (result === FAILED || ctx.issues.length > 0) throw ConfigError.fromIssues(source, ctx.issues);
  const tls = result.tls === null ? null : resolveTlsFiles(result.tls, demo ? process.cwd() : dirname(source), ctx.issues);
  if (ctx.issues.length > 0) throw ConfigError.fromIssues(source, ctx.issues);
  return deepFreeze({ ...result, tls, demo, source });
}

/**
 * TLS paths are relative to the configuration file's directory; they are
 * stored absolute, and every file must be readable now, so that a typo
 * is found by `portier check` and not at the first handshake.
 */
function resolveTlsFiles(tls: TlsConfig, base: string, issues: Issue[]): TlsConfig {
  const check = (key: 'cert' | 'key' | 'ca', p: string): string => {
    const abs = resolve(base, p);
    try {
      if (statSync(abs).isDirectory()) {
        issues.push({ path: ['tls', key], reason: `cannot read ${abs}: is a directory, not a file` });
        return abs;
      }
      accessSync(abs, fsConstants.R_OK);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message;
      issues.push({ path: ['tls', key], reason: `cannot read ${abs}: ${why}` });
    }
    return abs;
  };
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
export function parseConfig(text: string, source: string): Config {
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true, strict: true });
  const problems = [...doc.errors, ...doc.warnings].map((e) => yamlProblem(source, e));
  if (problems.length > 0) throw new ConfigError(source, problems);
  let data: unknown;
  try {
    data = doc.toJS({ mapAsMap: true, maxAliasCount: 100 });
  } catch (err) {
    throw new ConfigError(source, [`${source}: ${(err as Error).message}`]);
  }
  return validate(data, source, false);
}

/** Read and validate a configuration file. */
export function loadConfig(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? 'no such file'
        : e.code === 'EACCES'
          ? 'permission denied'
          : e.code === 'EISDIR'
            ? 'is a directory, not a file'
            : e.message;
    throw new ConfigError(path, [`${path}: cannot read the configuration: ${why}`]);
  }
  return parseConfig(text, path);
}

/** The embedded configuration used without --config: localhost only, for trying Portier on one machine. */
export function demoConfig(): Config {
  return validate(
    { domains: ['localhost'], listen: ['udp:127.0.0.1:5060', 'tcp:127.0.0.1:5060'], metrics: { listen: '127.0.0.1:9090' } },
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
