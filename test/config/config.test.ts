import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import YAML from 'yaml';
import {
  ConfigError,
  DEFAULT_PORTS,
  DEMO_SOURCE,
  demoConfig,
  formatConfig,
  formatListen,
  loadConfig,
  parseConfig,
  parseListen,
  type Config,
} from '../../src/config/index.js';
import { Invalid, integer, run, section } from '../../src/config/schema.js';
import { DEFAULT_OVERLOAD, DEFAULT_SECURITY, F, MIN, refusal } from './helpers.js';


/** `storage:` with nothing set: SQLite, the path taken from the working directory. */
const DEFAULT_STORAGE = {
  type: 'sqlite',
  path: join(process.cwd(), 'data', 'portier.db'),
  flushInterval: 50,
  url: 'redis://127.0.0.1:6379',
  prefix: 'portier:',
  nodeAddress: null,
};

const DEFAULT_LIMITS = {
  messageSize: 65535,
  headers: 100,
  lineLength: 8192,
  connections: 10000,
  connectionsPerSource: 64,
  idleTimeout: 600,
  firstMessageTimeout: 10,
  callsPerDoor: 4,
};

const DEFAULT_PUSH = { callTimeout: 30, response: 180, registerWakeup: null, ca: null, fcm: null, apns: null, generic: null };
const DEFAULT_POLICY = { doorsMayCall: ['groups', 'aliases', 'phones'], phonesMayCallPhones: true, phonesMayCallDoors: true };

t.test('a full valid file', async (t) => {
  const dir = t.testdir({ users: '# Portier accounts: HA1 digests only\n' });
  const users = join(dir, 'users');
  const c = parseConfig(
    `# comment
domains: [Example.TEST, intercom.example.test, 192.0.2.10, "[2001:DB8:0:0::1]"]
listen:
  - udp:127.0.0.1:5060
  - tcp:0.0.0.0:5080
  - "udp:[::1]:5070"
limits:
  message-size: 32768
  headers: 50
  line-length: 4096
  connections: 500
  connections-per-source: 8
  idle-timeout: 120
  first-message-timeout: 2.5
registrar:
  min-expires: 30
  max-expires: 7200
  default-expires: 900
  max-bindings: 20
proxy:
  ring-timeout: 45
timers:
  t1: 250
  t2: 2000
  t4: 3000
log:
  level: debug
metrics:
  listen: "[::1]:9091"
auth:
  users: ${users}
  realm: Intercom.Example
  algorithms: [md5, SHA-256]
  trusted: [10.20.0.0/16, 192.0.2.7, "2001:db8::/32"]
  nonce-lifetime: 120
security:
  rate:
    per-source: 50
    burst: 200
  auth-failures:
    max: 5
    window: 300
    ban: 60
    max-ban: 3600
  exempt: ["::1", 198.51.100.0/24]
  drop-scanners: false
`,
    F,
  );
  t.same(c, {
    domains: ['example.test', 'intercom.example.test', '192.0.2.10', '2001:db8::1'],
    listen: [
      { protocol: 'udp', host: '127.0.0.1', port: 5060 },
      { protocol: 'tcp', host: '0.0.0.0', port: 5080 },
      { protocol: 'udp', host: '::1', port: 5070 },
    ],
    limits: {
      messageSize: 32768,
      headers: 50,
      lineLength: 4096,
      connections: 500,
      connectionsPerSource: 8,
      idleTimeout: 120,
      firstMessageTimeout: 2.5,
      callsPerDoor: 4,
    },
    registrar: { minExpires: 30, maxExpires: 7200, defaultExpires: 900, maxBindings: 20 },
    proxy: { ringTimeout: 45 },
    timers: { t1: 250, t2: 2000, t4: 3000 },
    log: { level: 'debug' },
    metrics: { listen: { host: '::1', port: 9091 } },
    tls: null,
    websocket: { path: null, maxPayload: 0, pingInterval: 30 },
    auth: {
      users,
      realm: 'Intercom.Example',
      algorithms: ['MD5', 'SHA-256'],
      trusted: ['10.20.0.0/16', '192.0.2.7', '2001:db8::/32'],
      nonceLifetime: 120,
    },
    security: {
      rate: { perSource: 50, burst: 200 },
      authFailures: { max: 5, window: 300, ban: 60, maxBan: 3600 },
      exempt: ['::1', '198.51.100.0/24'],
      dropScanners: false,
      relayToLoopback: false,
    },
    overload: DEFAULT_OVERLOAD,
    storage: DEFAULT_STORAGE,
    push: DEFAULT_PUSH,
    groups: {},
    aliases: {},
    policy: DEFAULT_POLICY,
    routes: [],
    provisioning: null,
    media: { stun: null, turn: null },
    resolver: [],
    workers: 1,
    demo: false,
    source: F,
  });
});

t.test('defaults are filled in and the result is deeply frozen', async (t) => {
  const c = parseConfig(MIN, F);
  t.same(c.limits, DEFAULT_LIMITS);
  t.equal(c.log.level, 'info');
  t.equal(c.registrar.maxBindings, 10);
  t.equal(c.auth, null, 'no auth section on loopback: no authentication');
  t.same(c.security, DEFAULT_SECURITY);
  t.equal(c.demo, false);
  t.ok(Object.isFrozen(c));
  t.ok(Object.isFrozen(c.limits));
  t.ok(Object.isFrozen(c.listen));
  t.ok(Object.isFrozen(c.listen[0]));
  t.ok(Object.isFrozen(c.domains));
  t.ok(Object.isFrozen(c.security.authFailures));
  t.ok(Object.isFrozen(c.security.exempt));
  t.throws(() => {
    (c.limits as { headers: number }).headers = 1;
  }, TypeError);
  // An empty section (every child commented out) means "all defaults".
  t.same(parseConfig(`${MIN}limits:\nlog:\n`, F).limits, DEFAULT_LIMITS);
  t.same(parseConfig(`${MIN}limits: {}\n`, F).limits, DEFAULT_LIMITS);
});

t.test('log levels', async (t) => {
  for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace']) {
    t.equal(parseConfig(`${MIN}log: {level: ${level}}\n`, F).log.level, level);
  }
  t.equal(parseConfig(`${MIN}log: {level: WARN}\n`, F).log.level, 'warn', 'case-insensitive');
});

t.test('listen entries', async (t) => {
  const cases: Array<[string, { protocol: string; host: string; port: number }]> = [
    ['udp:127.0.0.1:5060', { protocol: 'udp', host: '127.0.0.1', port: 5060 }],
    ['udp:127.0.0.1', { protocol: 'udp', host: '127.0.0.1', port: 5060 }],
    ['tcp:10.1.2.3', { protocol: 'tcp', host: '10.1.2.3', port: 5060 }],
    ['TCP:0.0.0.0:5080', { protocol: 'tcp', host: '0.0.0.0', port: 5080 }],
    ['udp:[::1]:5060', { protocol: 'udp', host: '::1', port: 5060 }],
    ['udp:[::1]', { protocol: 'udp', host: '::1', port: 5060 }],
    ['tcp:[::]:5060', { protocol: 'tcp', host: '::', port: 5060 }],
    ['udp:[FE80:0:0:0::1]:6000', { protocol: 'udp', host: 'fe80::1', port: 6000 }],
    ['udp:127.0.0.1:0', { protocol: 'udp', host: '127.0.0.1', port: 0 }],
  ];
  for (const [text, spec] of cases) {
    t.same(parseListen(text), spec, text);
    // This test is about listen parsing: auth: off lets non-loopback hosts through.
    t.same(parseConfig(`domains: [a.test]\nlisten: ["${text}"]\nauth: off\n`, F).listen, [spec], `${text} in a file`);
  }
  t.equal(formatListen({ protocol: 'udp', host: '::1', port: 5060 }), 'udp:[::1]:5060');
  t.equal(formatListen({ protocol: 'tcp', host: '0.0.0.0', port: 5060 }), 'tcp:0.0.0.0:5060');
  t.same(DEFAULT_PORTS, { udp: 5060, tcp: 5060, tls: 5061, ws: 80, wss: 443 });
  // udp and tcp on the same port do not conflict
  t.equal(parseConfig('domains: [a.test]\nlisten: [udp:0.0.0.0:5060, tcp:0.0.0.0:5060, "udp:[::1]:5060"]\nauth: off\n', F).listen.length, 3);
});

t.test('every refusal names the file, the key and the reason', async (t) => {
  const cases: Array<[string, string]> = [
    // listen
    [`domains: [a.test]\nlisten: [udp:127.0.0.1, sctp:127.0.0.1:5060]\n`, `${F}: listen[1]: unknown transport "sctp" (expected udp, tcp, tls, ws or wss)`],
    [`domains: [a.test]\nlisten: [tls:127.0.0.1]\n`, `${F}: tls: required by listen[0] (tls:127.0.0.1:5061) (e.g. tls: {cert: /etc/portier/tls/cert.pem, key: /etc/portier/tls/key.pem})`],
    [`domains: [a.test]\nlisten: ["wss:[::1]"]\n`, `${F}: tls: required by listen[0] (wss:[::1]:443) (e.g. tls: {cert: /etc/portier/tls/cert.pem, key: /etc/portier/tls/key.pem})`],
    [`domains: [a.test]\nlisten: [ws:127.0.0.1:8080]\nwebsocket: {path: sip}\n`, `${F}: websocket.path: must be a URL path starting with "/", without spaces, "?" or "#" (got "sip")`],
    [`domains: [a.test]\nlisten: [ws:127.0.0.1:8080]\nwebsocket: {ping-interval: -1}\n`, `${F}: websocket.ping-interval: must be a number of seconds between 0 and 3600`],
    [`domains: [a.test]\nlisten: ["udp:::1:5060"]\n`, `${F}: listen[0]: IPv6 addresses must be in brackets, e.g. udp:[::1]:5060 (got "udp:::1:5060")`],
    [`domains: [a.test]\nlisten: ["udp:[::1"]\n`, `${F}: listen[0]: missing "]" after the IPv6 address in "udp:[::1"`],
    [`domains: [a.test]\nlisten: ["udp:[1.2.3.4]:5060"]\n`, `${F}: listen[0]: "1.2.3.4" in "udp:[1.2.3.4]:5060" is not a valid IPv6 address`],
    [`domains: [a.test]\nlisten: ["udp:[::1]5060"]\n`, `${F}: listen[0]: unexpected "5060" after "]" in "udp:[::1]5060"`],
    [`domains: [a.test]\nlisten: [udp:localhost:5060]\n`, `${F}: listen[0]: host "localhost" in "udp:localhost:5060" must be an IP address (e.g. 127.0.0.1, 0.0.0.0, [::1] or [::]), not a name`],
    [`domains: [a.test]\nlisten: [udp::5060]\n`, `${F}: listen[0]: missing host in "udp::5060", e.g. udp:127.0.0.1:5060, tcp:0.0.0.0:5060 or udp:[::1]:5060`],
    [`domains: [a.test]\nlisten: [udp:127.0.0.1:65536]\n`, `${F}: listen[0]: port "65536" in "udp:127.0.0.1:65536" must be an integer between 0 and 65535`],
    [`domains: [a.test]\nlisten: [udp:127.0.0.1:x]\n`, `${F}: listen[0]: port "x" in "udp:127.0.0.1:x" must be an integer between 0 and 65535`],
    [`domains: [a.test]\nlisten: [127.0.0.1]\n`, `${F}: listen[0]: "127.0.0.1" must be transport:host:port, e.g. udp:127.0.0.1:5060, tcp:0.0.0.0:5060 or udp:[::1]:5060`],
    [`domains: [a.test]\nlisten: [5060]\n`, `${F}: listen[0]: must be a string like udp:127.0.0.1:5060 (got 5060)`],
    [`domains: [a.test]\nlisten: udp:127.0.0.1\n`, `${F}: listen: must be a list (e.g. [udp:127.0.0.1:5060, tcp:127.0.0.1:5060]), not "udp:127.0.0.1"`],
    [`domains: [a.test]\nlisten: []\n`, `${F}: listen: must not be empty`],
    [`domains: [a.test]\n`, `${F}: listen: required (e.g. listen: [udp:127.0.0.1:5060, tcp:127.0.0.1:5060])`],
    [`domains: [a.test]\nlisten: [udp:127.0.0.1:5060, udp:127.0.0.1]\n`, `${F}: listen[1]: duplicate of listen[0] (udp:127.0.0.1:5060)`],
    [`domains: [a.test]\nlisten: ["tcp:[::1]:5060", "tcp:[0::1]:5060"]\n`, `${F}: listen[1]: duplicate of listen[0] (tcp:[::1]:5060)`],
    [`domains: [a.test]\nlisten: [udp:0.0.0.0:5060, udp:127.0.0.1:5060]\n`, `${F}: listen[1]: udp:127.0.0.1:5060 overlaps listen[0] (udp:0.0.0.0:5060): both need UDP port 5060 on the same address`],
    [`domains: [a.test]\nlisten: ["tcp:[::]:5060", tcp:127.0.0.1:5060]\n`, `${F}: listen[1]: tcp:127.0.0.1:5060 overlaps listen[0] (tcp:[::]:5060): both need TCP port 5060 on the same address`],
    // domains
    [`listen: [udp:127.0.0.1]\n`, `${F}: domains: required (e.g. domains: [example.test])`],
    [`domains: []\nlisten: [udp:127.0.0.1]\n`, `${F}: domains: must not be empty`],
    [`domains: example.test\nlisten: [udp:127.0.0.1]\n`, `${F}: domains: must be a list (e.g. [example.test]), not "example.test"`],
    [`domains: [a.test, A.TEST]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[1]: duplicate of domains[0] (a.test)`],
    [`domains: ["bad_name.test"]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: "bad_name.test" is not a valid host name or IP address`],
    [`domains: ["-a.test"]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: "-a.test" is not a valid host name or IP address`],
    [`domains: ["a..test"]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: "a..test" is not a valid host name or IP address`],
    [`domains: ["1.2.3"]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: "1.2.3" is not a valid IPv4 address or host name`],
    [`domains: ["sip:a.test"]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: write the domain without "sip:" (got "sip:a.test")`],
    [`domains: ["a.test:5060"]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: a domain has no port (got "a.test:5060")`],
    [`domains: ["[::g]"]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: "[::g]" is not a valid IPv6 address`],
    [`domains: [""]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: must not be empty`],
    [`domains: [42]\nlisten: [udp:127.0.0.1]\n`, `${F}: domains[0]: must be a host name or IP address (got 42)`],
    // limits
    [`${MIN}limits: {message-size: 100}\n`, `${F}: limits.message-size: must be an integer between 1024 and 1048576`],
    [`${MIN}limits: {message-size: 2000000}\n`, `${F}: limits.message-size: must be an integer between 1024 and 1048576`],
    [`${MIN}limits: {message-size: 4096.5}\n`, `${F}: limits.message-size: must be an integer between 1024 and 1048576`],
    [`${MIN}limits: {message-size: "64k"}\n`, `${F}: limits.message-size: must be an integer between 1024 and 1048576`],
    [`${MIN}limits: {headers: 0}\n`, `${F}: limits.headers: must be an integer between 16 and 1000`],
    [`${MIN}limits: {line-length: 10}\n`, `${F}: limits.line-length: must be an integer between 256 and 1048576`],
    [`${MIN}limits: {connections: 0}\n`, `${F}: limits.connections: must be an integer between 1 and 1000000`],
    [`${MIN}limits: {connections-per-source: -1}\n`, `${F}: limits.connections-per-source: must be an integer between 1 and 1000000`],
    [`${MIN}limits: {idle-timeout: 0}\n`, `${F}: limits.idle-timeout: must be a number of seconds between 0.1 and 86400`],
    [`${MIN}limits: {idle-timeout: .inf}\n`, `${F}: limits.idle-timeout: must be a number of seconds between 0.1 and 86400`],
    [`${MIN}limits: {first-message-timeout: 10s}\n`, `${F}: limits.first-message-timeout: must be a number of seconds between 0.1 and 3600`],
    [`${MIN}limits: {message-sise: 3000}\n`, `${F}: limits.message-sise: unknown key (did you mean "message-size"?)`],
    [`${MIN}limits: {messageSize: 3000}\n`, `${F}: limits.messageSize: unknown key (did you mean "message-size"?)`],
    [`${MIN}limits: {idle_timeout: 3}\n`, `${F}: limits.idle_timeout: unknown key (did you mean "idle-timeout"?)`],
    [`${MIN}limits: {bananas: 3}\n`, `${F}: limits.bananas: unknown key (expected message-size, headers, line-length, connections, connections-per-source, idle-timeout, first-message-timeout or calls-per-door)`],
    [`${MIN}limits: [1]\n`, `${F}: limits: must be a mapping with the keys message-size, headers, line-length, connections, connections-per-source, idle-timeout, first-message-timeout and calls-per-door, not a list`],
    // log
    [`${MIN}log: {level: verbose}\n`, `${F}: log.level: must be one of fatal, error, warn, info, debug or trace (got "verbose")`],
    [`${MIN}log: {level: 3}\n`, `${F}: log.level: must be one of fatal, error, warn, info, debug or trace`],
    [`${MIN}log: {lvl: info}\n`, `${F}: log.lvl: unknown key (expected level)`],
    [`${MIN}log: info\n`, `${F}: log: must be a mapping with the keys level, not "info"`],
    // top level
    [`${MIN}listn: []\n`, `${F}: listn: unknown key (did you mean "listen"?)`],
    [`${MIN}tlss: {}\n`, `${F}: tlss: unknown key (did you mean "tls"?)`],
    [`${MIN}bogus: {}\n`, `${F}: bogus: unknown key (expected domains, listen, limits, registrar, proxy, timers, log, metrics, tls, websocket, auth, security, overload, storage, push, groups, aliases, policy, routes, provisioning, media, resolver or workers)`],
    [`${MIN}tls: {}\n`, `${F}: tls.cert: required (e.g. cert: /etc/portier/tls/cert.pem)`],
    [`${MIN}tls: {cert: "", key: k}\n`, `${F}: tls.cert: must not be empty`],
    [`${MIN}tls: {cert: 3, key: k}\n`, `${F}: tls.cert: must be a file path (got 3)`],
    [`${MIN}tls: {cert: c, key: k, verify-clients: yes}\n`, `${F}: tls.verify-clients: must be false, optional or required (got "yes")`],
    [`${MIN}tls: {cert: c, key: k, verify-clients: true}\n`, `${F}: tls.verify-clients: must be false, optional or required (got true)`],
    [`${MIN}tls: {cert: c, key: k, min-version: TLSv1.1}\n`, `${F}: tls.min-version: must be one of TLSv1.2 or TLSv1.3 (got "TLSv1.1")`],
    [`${MIN}tls: {cert: c, key: k, ca: ca, verify-client: required}\n`, `${F}: tls.verify-client: unknown key (did you mean "verify-clients"?)`],
    [`- a\n`, `${F}: the top level must be a mapping with the keys domains, listen, limits, registrar, proxy, timers, log, metrics, tls, websocket, auth, security, overload, storage, push, groups, aliases, policy, routes, provisioning, media, resolver and workers, not a list`],
    [`just text\n`, `${F}: the top level must be a mapping with the keys domains, listen, limits, registrar, proxy, timers, log, metrics, tls, websocket, auth, security, overload, storage, push, groups, aliases, policy, routes, provisioning, media, resolver and workers, not "just text"`],
    [``, `${F}: the file is empty (it needs at least domains and listen; see conf/portier.yaml)`],
    [`# only a comment\n`, `${F}: the file is empty (it needs at least domains and listen; see conf/portier.yaml)`],
    [`${MIN}1: x\n`, `${F}: keys must be plain names, not 1`],
  ];
  for (const [text, message] of cases) {
    const err = refusal(t, text);
    t.equal(err.message, message, message);
    t.equal(err.source, F);
    t.notMatch(err.message, /\n/, 'one line');
  }
});

t.test('all problems are collected, in file order', async (t) => {
  const err = refusal(
    t,
    'domains: []\nlisten: [sctp:1.2.3.4, udp:1.2.3.4]\nlimits: {headers: 1, bogus: 2}\nextra: 1\n',
  );
  t.same(err.problems, [
    `${F}: domains: must not be empty`,
    `${F}: listen[0]: unknown transport "sctp" (expected udp, tcp, tls, ws or wss)`,
    `${F}: limits.headers: must be an integer between 16 and 1000`,
    `${F}: limits.bogus: unknown key (expected message-size, headers, line-length, connections, connections-per-source, idle-timeout, first-message-timeout or calls-per-door)`,
    `${F}: extra: unknown key (expected domains, listen, limits, registrar, proxy, timers, log, metrics, tls, websocket, auth, security, overload, storage, push, groups, aliases, policy, routes, provisioning, media, resolver or workers)`,
  ]);
  t.equal(err.message, err.problems[0]);
  t.ok(err instanceof Error);
  t.equal(err.name, 'ConfigError');
});

t.test('YAML syntax errors give file:line:col', async (t) => {
  const cases: Array<[string, string]> = [
    [`domains: [a.test\nlisten: [udp:127.0.0.1]\n`, `${F}:2:1: Flow sequence in block collection must be sufficiently indented and end with a ]`],
    [`domains: [a.test]\ndomains: [b.test]\n`, `${F}:2:1: Map keys must be unique`],
    [`domains: [a.test]\nlisten: [udp:127.0.0.1]\nlog: {level: @x}\n`, `${F}:3:14: Plain value cannot start with reserved character @`],
    [`${MIN}---\n${MIN}`, `${F}:3:1: Source contains multiple documents; please use YAML.parseAllDocuments()`],
    [`domains: !secret [a.test]\nlisten: [udp:127.0.0.1]\n`, `${F}:1:10: Unresolved tag: !secret`],
  ];
  for (const [text, message] of cases) {
    t.equal(refusal(t, text).message, message, message);
  }
  t.equal(refusal(t, `domains: *nope\nlisten: [udp:127.0.0.1]\n`).message.startsWith(`${F}:`), true, 'bad alias');
  // Anchors and aliases themselves are fine
  t.same(parseConfig(`domains: &d [a.test]\nlisten: [udp:127.0.0.1]\nlimits: {headers: &n 20, line-length: 256}\n`, F).domains, ['a.test']);
});

t.test('loadConfig reads files and reports unreadable ones', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portier-config-'));
  const good = join(dir, 'good.yaml');
  writeFileSync(good, MIN);
  const c = loadConfig(good);
  t.equal(c.source, good);
  t.same(c.domains, ['example.test']);

  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, `${MIN}limits: {headers: 5}\n`);
  t.throws(() => loadConfig(bad), { name: 'ConfigError', message: `${bad}: limits.headers: must be an integer between 16 and 1000` });

  const missing = join(dir, 'missing.yaml');
  t.throws(() => loadConfig(missing), { name: 'ConfigError', message: `${missing}: cannot read the configuration: no such file` });
  t.throws(() => loadConfig(dir), { name: 'ConfigError', message: `${dir}: cannot read the configuration: is a directory, not a file` });
});

t.test('the example conf/portier.yaml is valid and sets every key', async (t) => {
  const path = new URL('../../conf/portier.yaml', import.meta.url).pathname;
  const c = loadConfig(path);
  t.equal(c.demo, false);
  const raw = YAML.parse(readFileSync(path, 'utf8')) as Record<string, Record<string, unknown>>;
  t.same(Object.keys(raw).sort(), ['aliases', 'auth', 'domains', 'groups', 'limits', 'listen', 'log', 'metrics', 'overload', 'policy', 'proxy', 'registrar', 'resolver', 'routes', 'security', 'storage', 'timers', 'workers']);
  t.equal(c.workers, 1, 'the example runs one process');
  t.same(Object.keys(raw.overload).sort(), ['enabled', 'retry-after', 'warm-up']);
  t.same(c.overload, DEFAULT_OVERLOAD, 'the example shows the overload defaults');
  t.same(c.storage, DEFAULT_STORAGE, 'the example shows the storage defaults');
  t.same(Object.keys(raw.metrics), ['listen']);
  t.same(c.metrics, { listen: { host: '127.0.0.1', port: 9090 } }, 'the example serves metrics on localhost');
  t.same(Object.keys(raw.registrar).sort(), ['default-expires', 'max-bindings', 'max-expires', 'min-expires']);
  t.equal(c.registrar.maxBindings, 10, 'the example shows the max-bindings default');
  t.same(Object.keys(raw.auth).sort(), ['algorithms', 'nonce-lifetime', 'realm', 'trusted', 'users']);
  t.same(
    c.auth,
    { users: join(dirname(path), 'users'), realm: 'example.test', algorithms: ['SHA-256', 'MD5'], trusted: [], nonceLifetime: 300 },
    'the example authenticates against users next to it, with the defaults',
  );
  t.same(Object.keys(raw.security).sort(), ['auth-failures', 'drop-scanners', 'exempt', 'rate', 'relay-to-loopback']);
  t.same(Object.keys(raw.security.rate as object).sort(), ['burst', 'per-source']);
  t.same(Object.keys(raw.security['auth-failures'] as object).sort(), ['ban', 'max', 'max-ban', 'window']);
  t.same(c.security, DEFAULT_SECURITY, 'the example shows the security defaults');
  t.same(Object.keys(raw.timers).sort(), ['t1', 't2', 't4']);
  t.same(Object.keys(raw.limits).sort(), [
    'calls-per-door',
    'connections',
    'connections-per-source',
    'first-message-timeout',
    'headers',
    'idle-timeout',
    'line-length',
    'message-size',
  ]);
  t.same(c.limits, DEFAULT_LIMITS, 'the example shows the defaults');
});

t.test('demo config', async (t) => {
  const c = demoConfig();
  t.same(c, {
    domains: ['localhost'],
    listen: [
      { protocol: 'udp', host: '127.0.0.1', port: 5060 },
      { protocol: 'tcp', host: '127.0.0.1', port: 5060 },
    ],
    limits: DEFAULT_LIMITS,
    registrar: { minExpires: 60, maxExpires: 3600, defaultExpires: 600, maxBindings: 10 },
    proxy: { ringTimeout: 30 },
    timers: { t1: 500, t2: 4000, t4: 5000 },
    log: { level: 'info' },
    metrics: { listen: { host: '127.0.0.1', port: 9090 } },
    tls: null,
    websocket: { path: null, maxPayload: 0, pingInterval: 30 },
    auth: null,
    security: DEFAULT_SECURITY,
    overload: DEFAULT_OVERLOAD,
    storage: { ...DEFAULT_STORAGE, type: 'memory' },
    push: DEFAULT_PUSH,
    groups: {},
    aliases: {},
    policy: DEFAULT_POLICY,
    routes: [],
    provisioning: null,
    media: { stun: null, turn: null },
    resolver: [],
    workers: 1,
    demo: true,
    source: DEMO_SOURCE,
  });
  t.equal(DEMO_SOURCE, '(embedded demo)');
  t.ok(Object.isFrozen(c.listen[1]));
  t.not(demoConfig(), c, 'a fresh object each time');
});

t.test('formatConfig round-trips through parseConfig', async (t) => {
  const dir = t.testdir({ users: '' });
  const samples: Config[] = [
    parseConfig(MIN, F),
    parseConfig(
      `domains: [a.test, "::1", 192.0.2.1]\nlisten: ["udp:[::]:5070", tcp:127.0.0.1:0]\nlimits: {idle-timeout: 0.5, headers: 20}\nlog: {level: trace}\nauth: off\n`,
      F,
    ),
    parseConfig(
      `domains: [a.test]\nlisten: [udp:0.0.0.0]\nregistrar: {max-bindings: 3}\n` +
        `auth: {users: ${join(dir, 'users')}, algorithms: [MD5], trusted: ["::/0", 10.0.0.0/8, 192.0.2.1]}\n` +
        `security: {rate: {per-source: 0}, auth-failures: {max: 0, max-ban: 300}, exempt: ["::", "::ffff:10.0.0.0/104"], drop-scanners: false}\n`,
      F,
    ),
    { ...demoConfig(), demo: false },
    parseConfig(`${MIN}storage: {type: redis, url: "redis://10.0.0.5:6380/2", prefix: "city:"}\n`, F),
    parseConfig(`${MIN}storage: {type: sqlite, path: /var/lib/portier/p.db, flush-interval: 100}\n`, F),
    parseConfig(`domains: [a.test]\nlisten: [ws:127.0.0.1:8080]\nwebsocket: {path: /sip, max-payload: 131072, ping-interval: 0}\n`, F),
  ];
  for (const c of samples) {
    const text = formatConfig(c);
    t.match(text, new RegExp(`^# Effective Portier configuration from ${c.source.replace(/[()]/g, '\\$&')}`));
    t.same(parseConfig(text, c.source), c);
  }
  const text = formatConfig(parseConfig(MIN, F));
  t.match(text, /^ {2}message-size: 65535$/m, 'YAML keys, not camelCase');
  t.match(text, /^ {2}- udp:127\.0\.0\.1:5060$/m);
  t.match(text, /^auth: off$/m, 'no auth section (loopback only) is written back as auth: off');
  t.match(text, /^ {2}max-bindings: 10$/m);
  t.match(text, /^security:\n {2}rate:\n {4}per-source: 100\n {4}burst: 400$/m);
});

t.test('property: any valid listen spec round-trips through its text form', async (t) => {
  const host = fc.oneof(
    fc.ipV4(),
    fc.ipV6().map((h) => h.toLowerCase()),
    fc.constantFrom('0.0.0.0', '::', '::1', '127.0.0.1'),
  );
  fc.assert(
    fc.property(fc.constantFrom('udp', 'tcp'), host, fc.integer({ min: 0, max: 65535 }), (protocol, h, port) => {
      const spec = parseListen(formatListen({ protocol, host: h, port }));
      const again = parseListen(formatListen(spec));
      // In a file too; auth: off because most generated hosts are beyond loopback.
      const inFile = parseConfig(`domains: [a.test]\nlisten: ["${formatListen(spec)}"]\nauth: off\n`, F).listen;
      return (
        again.protocol === protocol &&
        again.port === port &&
        again.host === spec.host &&
        inFile.length === 1 &&
        inFile[0].protocol === protocol &&
        inFile[0].host === spec.host &&
        inFile[0].port === port
      );
    }),
  );
  t.pass('round-trips');
});

t.test('the validator builders', async (t) => {
  // Cross-field checks report against the named key, after all fields parsed.
  const s = section(
    { low: integer({ min: 0, max: 10, default: 1 }), high: integer({ min: 0, max: 10, default: 5 }) },
    { check: (v, report) => (v.low > v.high ? report('low', 'must not exceed high') : undefined) },
  );
  const ok = { issues: [] };
  t.same(run(s, new Map([['high', 7]]), ['x'], ok), { low: 1, high: 7 });
  const ctx = { issues: [] as Array<{ path: ReadonlyArray<string | number>; reason: string }> };
  run(s, { low: 9, high: 2 }, ['x'], ctx);
  t.same(ctx.issues, [{ path: ['x', 'low'], reason: 'must not exceed high' }]);
  t.ok(s.default, 'a section whose fields all have defaults has a default');
  t.same(s.default?.(), { low: 1, high: 5 });
  t.equal(new Invalid('x').reason, 'x');
});

t.test('storage: sqlite by default, relative paths from the working directory, bad values refused', async (t) => {
  t.same(parseConfig(MIN, F).storage, DEFAULT_STORAGE);
  t.equal(parseConfig(`${MIN}storage: {path: state/x.db}\n`, F).storage.path, join(process.cwd(), 'state', 'x.db'));
  t.equal(parseConfig(`${MIN}storage: {type: MEMORY}\n`, F).storage.type, 'memory');
  const secret = parseConfig(`${MIN}storage: {type: redis, url: "redis://portier:s3cret@10.0.0.5:6379/1"}\n`, F);
  t.equal(secret.storage.url, 'redis://portier:s3cret@10.0.0.5:6379/1', 'the password is used');
  t.notMatch(formatConfig(secret), /s3cret/, 'but portier check never prints it');
  t.match(formatConfig(secret), /redis:\/\/portier:\*\*\*@10\.0\.0\.5:6379\/1/);
  for (const [text, message] of [
    [`${MIN}storage: {type: postgres}\n`, `${F}: storage.type: must be one of sqlite, memory or redis (got "postgres")`],
    [`${MIN}storage: {flush-interval: 0}\n`, `${F}: storage.flush-interval: must be an integer between 1 and 10000`],
    [`${MIN}storage: {url: "http://x"}\n`, `${F}: storage.url: must be a redis:// or rediss:// URL (got "http://x")`],
    [`${MIN}storage: {url: "not a url"}\n`, `${F}: storage.url: "not a url" is not a URL (e.g. redis://127.0.0.1:6379)`],
    [`${MIN}storage: {prefix: "a b"}\n`, `${F}: storage.prefix: must be non-empty, without spaces`],
    [`${MIN}storage: {path: ""}\n`, `${F}: storage.path: must not be empty`],
  ] as const) {
    t.equal(refusal(t, text).problems[0], message);
  }
});

t.test('registrar, proxy and timers: defaults and cross-checks', async (t) => {
  const c = parseConfig(MIN, F);
  t.same(c.registrar, { minExpires: 60, maxExpires: 3600, defaultExpires: 600, maxBindings: 10 }, 'registrar defaults (RFC 3261 §10.3 ranges)');
  t.equal(parseConfig(`${MIN}registrar: {max-bindings: 1}\n`, F).registrar.maxBindings, 1);
  t.equal(parseConfig(`${MIN}registrar: {max-bindings: 1000}\n`, F).registrar.maxBindings, 1000);
  for (const bad of ['0', '1001', '2.5', '"10"']) {
    t.throws(
      () => parseConfig(`${MIN}registrar: {max-bindings: ${bad}}\n`, F),
      { name: 'ConfigError', message: `${F}: registrar.max-bindings: must be an integer between 1 and 1000` },
      `max-bindings ${bad}`,
    );
  }
  t.throws(() => parseConfig(`${MIN}registrar: {max_bindings: 3}\n`, F), { message: `${F}: registrar.max_bindings: unknown key (did you mean "max-bindings"?)` });
  t.same(c.proxy, { ringTimeout: 30 }, 'ring timeout 30 s');
  t.same(c.timers, { t1: 500, t2: 4000, t4: 5000 }, 'RFC 3261 timer defaults');
  t.throws(() => parseConfig(`${MIN}registrar: {min-expires: 600, max-expires: 60}\n`, F), /registrar.min-expires: must not exceed max-expires/);
  t.throws(() => parseConfig(`${MIN}registrar: {default-expires: 10}\n`, F), /default-expires: must lie between/);
  t.throws(() => parseConfig(`${MIN}timers: {t1: 1000, t2: 500}\n`, F), /timers.t2: must not be below t1/);
  t.throws(() => parseConfig(`${MIN}proxy: {ring-timeout: 0}\n`, F), /proxy.ring-timeout/);
  t.throws(() => parseConfig(`${MIN}proxy: {ringtimeout: 3}\n`, F), /unknown key/);
});

t.test('metrics: listen host:port or off; no section means off', async (t) => {
  t.same(parseConfig(MIN, F).metrics, { listen: null }, 'no metrics section: no HTTP listener');
  const cases: Array<[string, { host: string; port: number } | null]> = [
    ['127.0.0.1:9090', { host: '127.0.0.1', port: 9090 }],
    ['0.0.0.0:9100', { host: '0.0.0.0', port: 9100 }],
    ['"[::1]:9090"', { host: '::1', port: 9090 }],
    ['"[0:0::0]:0"', { host: '::', port: 0 }],
    ['off', null],
    ['OFF', null],
  ];
  for (const [text, listen] of cases) {
    t.same(parseConfig(`${MIN}metrics: {listen: ${text}}\n`, F).metrics, { listen }, text);
  }
  const refused: Array<[string, string]> = [
    [`${MIN}metrics:\n`, `${F}: metrics.listen: required (e.g. listen: 127.0.0.1:9090)`],
    [`${MIN}metrics: {}\n`, `${F}: metrics.listen: required (e.g. listen: 127.0.0.1:9090)`],
    [`${MIN}metrics: {listen: localhost:9090}\n`, `${F}: metrics.listen: host "localhost" in "localhost:9090" must be an IP address (e.g. 127.0.0.1, 0.0.0.0, [::1] or [::]), not a name`],
    [`${MIN}metrics: {listen: 127.0.0.1}\n`, `${F}: metrics.listen: "127.0.0.1" must be host:port, e.g. 127.0.0.1:9090, 0.0.0.0:9090 or [::1]:9090, or off`],
    [`${MIN}metrics: {listen: "::1:9090"}\n`, `${F}: metrics.listen: IPv6 addresses must be in brackets, e.g. [::1]:9090 (got "::1:9090")`],
    [`${MIN}metrics: {listen: "[::1]"}\n`, `${F}: metrics.listen: "[::1]" needs a port after "]", e.g. [::1]:9090`],
    [`${MIN}metrics: {listen: "[::1:9090"}\n`, `${F}: metrics.listen: missing "]" after the IPv6 address in "[::1:9090"`],
    [`${MIN}metrics: {listen: "[1.2.3.4]:9090"}\n`, `${F}: metrics.listen: "1.2.3.4" in "[1.2.3.4]:9090" is not a valid IPv6 address`],
    [`${MIN}metrics: {listen: 127.0.0.1:65536}\n`, `${F}: metrics.listen: port "65536" in "127.0.0.1:65536" must be an integer between 0 and 65535`],
    [`${MIN}metrics: {listen: false}\n`, `${F}: metrics.listen: must be host:port (e.g. 127.0.0.1:9090, 0.0.0.0:9090 or [::1]:9090) or off (got false)`],
    [`${MIN}metrics: {port: 9090}\n`, `${F}: metrics.port: unknown key (expected listen)`],
  ];
  for (const [text, message] of refused) {
    t.throws(() => parseConfig(text, F), { name: 'ConfigError', message }, text);
  }
  const off = parseConfig(`${MIN}metrics: {listen: off}\n`, F);
  t.match(formatConfig(off), /^metrics:\n {2}listen: off$/m, 'off is written back as off');
  t.same(parseConfig(formatConfig(off), F), off);
  const v6 = parseConfig(`${MIN}metrics: {listen: "[::1]:9090"}\n`, F);
  t.same(parseConfig(formatConfig(v6), F), v6, 'IPv6 round-trips in brackets');
});

t.test('tls section: files, defaults, relative paths, round trip', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portier-tls-conf-'));
  for (const f of ['cert.pem', 'key.pem', 'ca.pem']) writeFileSync(join(dir, f), 'PEM\n');
  const file = join(dir, 'portier.yaml');
  const listen = 'domains: [a.test]\nlisten: [tls:127.0.0.1, "tls:[::1]:5071", tcp:127.0.0.1]\n';
  writeFileSync(file, `${listen}tls: {cert: cert.pem, key: ${join(dir, 'key.pem')}}\n`);
  const c = loadConfig(file);
  t.same(c.listen.slice(0, 2), [
    { protocol: 'tls', host: '127.0.0.1', port: 5061 },
    { protocol: 'tls', host: '::1', port: 5071 },
  ]);
  t.same(c.tls, { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), ca: null, verifyClients: false, minVersion: 'TLSv1.2' }, 'relative to the file, defaults');
  t.ok(Object.isFrozen(c.tls));
  t.same(parseConfig(formatConfig(c), file), c, 'round trip without ca');
  t.notMatch(formatConfig(c), /ca:/, 'no ca written');
  t.notMatch(formatConfig(parseConfig(MIN, F)), /tls/, 'no tls section written');

  writeFileSync(file, `${listen}tls: {cert: cert.pem, key: key.pem, ca: ca.pem, verify-clients: Required, min-version: tlsv1.3}\n`);
  const full = loadConfig(file);
  t.same(full.tls, { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), ca: join(dir, 'ca.pem'), verifyClients: 'required', minVersion: 'TLSv1.3' });
  t.same(parseConfig(formatConfig(full), file), full, 'round trip with ca');
  for (const v of ['false', 'optional']) {
    writeFileSync(file, `${listen}tls: {cert: cert.pem, key: key.pem, verify-clients: "${v}"}\n`);
    t.equal(loadConfig(file).tls?.verifyClients, v === 'false' ? false : v);
  }
  // A tls section without tls listeners is fine (outbound TLS trust).
  t.equal(parseConfig(`${MIN}tls: {cert: ${join(dir, 'cert.pem')}, key: ${join(dir, 'key.pem')}}\n`, F).tls?.minVersion, 'TLSv1.2');

  writeFileSync(file, `${listen}tls: {cert: missing.pem, key: ${dir}, ca: ca.pem}\n`);
  const err = t.throws(() => loadConfig(file)) as ConfigError;
  t.same(err.problems, [
    `${file}: tls.cert: cannot read ${join(dir, 'missing.pem')}: no such file`,
    `${file}: tls.key: cannot read ${dir}: is a directory, not a file`,
  ]);
});

t.test('workers: more than one needs redis, and no node-address', async (t) => {
  const base = 'domains: [a.test]\nlisten: [udp:127.0.0.1:5060]\n';
  t.equal(parseConfig(base, F).workers, 1, 'default 1');
  t.equal(parseConfig(base + 'workers: 4\nstorage: {type: redis}\n', F).workers, 4, 'four on redis');
  t.throws(() => parseConfig(base + 'workers: 2\nstorage: {type: sqlite}\n', F), { message: /workers: more than one worker needs storage type redis .*not sqlite/ });
  t.throws(() => parseConfig(base + 'workers: 2\nstorage: {type: redis, node-address: 127.0.0.1}\n', F), { message: /workers: more than one worker serves one machine/ });
  t.throws(() => parseConfig(base + 'workers: 0\n', F), { message: /workers/ });
  t.throws(() => parseConfig(base + 'workers: 65\n', F), { message: /workers/ });
});
