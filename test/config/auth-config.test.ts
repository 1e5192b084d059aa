/**
 * The `auth:` and `security:` configuration sections (and the rule that no
 * `auth:` section is allowed only while every listener is on loopback).
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { parseCidr } from '../../src/auth/cidr.js';
import { ConfigError, formatConfig, formatListen, loadConfig, parseConfig, parseListen } from '../../src/config/index.js';
import { DEFAULT_SECURITY, F, MIN, refusal } from './helpers.js';

const USERS_LINE = '# Portier accounts: HA1 digests only (RFC 3261 §22, RFC 8760). Manage with: portier user add|del|list\n';
const CREATE_HINT = '(create it with: portier user add AOR --users FILE)';

/** The reason parseCidr gives for `text`, or a test failure. */
function cidrReason(t: Test, text: string): string {
  try {
    parseCidr(text);
  } catch (err) {
    return (err as Error).message;
  }
  t.fail(`parseCidr accepted ${text}`);
  return '(none)';
}

/** A fresh directory holding an (empty) users file; returns the file's absolute path. */
function usersFile(t: Test): string {
  return join(t.testdir({ users: USERS_LINE }), 'users');
}

t.test('auth: defaults, and the realm defaults to the first domain', async (t) => {
  const users = usersFile(t);
  const c = parseConfig(`domains: [Intercom.Example.TEST, example.test]\nlisten: [udp:0.0.0.0]\nauth: {users: ${users}}\n`, F);
  t.same(c.auth, { users, realm: 'intercom.example.test', algorithms: ['SHA-256', 'MD5'], trusted: [], nonceLifetime: 300 });
  t.ok(Object.isFrozen(c.auth), 'frozen');
  t.ok(Object.isFrozen(c.auth?.algorithms));
  t.ok(Object.isFrozen(c.auth?.trusted));

  t.equal(parseConfig(`domains: ["[2001:DB8::1]", a.test]\nlisten: [udp:127.0.0.1]\nauth: {users: ${users}}\n`, F).auth?.realm, '2001:db8::1', 'an IPv6 first domain');
  t.equal(parseConfig(`${MIN}auth: {users: ${users}, realm: Portier-Realm}\n`, F).auth?.realm, 'Portier-Realm', 'an explicit realm is kept as written');
  // src/config/index.ts allows 1-86400 (as conf/portier.yaml documents); the brief said 10-86400.
  t.equal(parseConfig(`${MIN}auth: {users: ${users}, nonce-lifetime: 1}\n`, F).auth?.nonceLifetime, 1);
  t.equal(parseConfig(`${MIN}auth: {users: ${users}, nonce-lifetime: 10}\n`, F).auth?.nonceLifetime, 10);
  t.equal(parseConfig(`${MIN}auth: {users: ${users}, nonce-lifetime: 86400}\n`, F).auth?.nonceLifetime, 86400);

  const refused: Array<[string, string]> = [
    [`${MIN}auth: {users: ${users}, realm: ""}\n`, `${F}: auth.realm: must be visible ASCII without spaces, quotes or backslashes (got "")`],
    [`${MIN}auth: {users: ${users}, realm: "school realm"}\n`, `${F}: auth.realm: must be visible ASCII without spaces, quotes or backslashes (got "school realm")`],
    [`${MIN}auth: {users: ${users}, realm: 'a"b'}\n`, `${F}: auth.realm: must be visible ASCII without spaces, quotes or backslashes (got "a\\"b")`],
    [`${MIN}auth: {users: ${users}, realm: 'a\\b'}\n`, `${F}: auth.realm: must be visible ASCII without spaces, quotes or backslashes (got "a\\\\b")`],
    [`${MIN}auth: {users: ${users}, realm: 42}\n`, `${F}: auth.realm: must be a realm such as example.test (got 42)`],
    [`${MIN}auth: {users: ${users}, nonce-lifetime: 0}\n`, `${F}: auth.nonce-lifetime: must be an integer between 1 and 86400`],
    [`${MIN}auth: {users: ${users}, nonce-lifetime: 86401}\n`, `${F}: auth.nonce-lifetime: must be an integer between 1 and 86400`],
    [`${MIN}auth: {users: ${users}, nonce-lifetime: 2.5}\n`, `${F}: auth.nonce-lifetime: must be an integer between 1 and 86400`],
    [`${MIN}auth: {users: ${users}, nonce_lifetime: 60}\n`, `${F}: auth.nonce_lifetime: unknown key (did you mean "nonce-lifetime"?)`],
    [`${MIN}auth: {users: ${users}, password: x}\n`, `${F}: auth.password: unknown key (expected users, realm, algorithms, trusted or nonce-lifetime)`],
    [`${MIN}auth: {realm: a.test}\n`, `${F}: auth.users: required (e.g. users: conf/users)`],
    [`${MIN}auth:\n`, `${F}: auth.users: required (e.g. users: conf/users)`],
    [`${MIN}auth: {users: ""}\n`, `${F}: auth.users: must not be empty`],
    [`${MIN}auth: {users: [a]}\n`, `${F}: auth.users: must be a file path (got a list)`],
    [`${MIN}auth: true\n`, `${F}: auth: must be a mapping with the keys users, realm, algorithms, trusted and nonce-lifetime, not true`],
    [`${MIN}auth: on\n`, `${F}: auth: must be a mapping with the keys users, realm, algorithms, trusted and nonce-lifetime, not "on"`],
  ];
  for (const [text, message] of refused) {
    const err = refusal(t, text);
    t.equal(err.message, message, message);
    t.same(err.problems, [message], 'one problem');
  }
});

t.test('auth.users: relative to the config file, stored absolute, must be a readable file', async (t) => {
  const dir = t.testdir({
    etc: { 'portier.yaml': '', users: USERS_LINE, 'users.d': {} },
    data: { users: USERS_LINE },
  });
  const etc = join(dir, 'etc');
  const file = join(etc, 'portier.yaml');
  const load = (auth: string) => {
    writeFileSync(file, `${MIN}auth: ${auth}\n`);
    return loadConfig(file);
  };

  t.equal(load('{users: users}').auth?.users, join(etc, 'users'), 'next to the config file, not the working directory');
  t.equal(load('{users: ./users}').auth?.users, join(etc, 'users'));
  t.equal(load('{users: ../data/users}').auth?.users, join(dir, 'data', 'users'), 'normalised');
  t.equal(load(`{users: ${join(dir, 'data', 'users')}}`).auth?.users, join(dir, 'data', 'users'), 'an absolute path is kept');

  const missing = join(etc, 'nobody');
  t.throws(() => load('{users: nobody}'), {
    name: 'ConfigError',
    message: `${file}: auth.users: cannot read ${missing}: no such file ${CREATE_HINT}`,
  });
  t.throws(() => load('{users: users.d}'), {
    name: 'ConfigError',
    message: `${file}: auth.users: cannot read ${join(etc, 'users.d')}: is a directory, not a file`,
  });

  // A missing users file is reported together with the other file problems.
  writeFileSync(file, `domains: [a.test]\nlisten: [tls:127.0.0.1]\ntls: {cert: cert.pem, key: users}\nauth: {users: nobody}\n`);
  const err = t.throws(() => loadConfig(file)) as ConfigError;
  t.same(err.problems, [
    `${file}: tls.cert: cannot read ${join(etc, 'cert.pem')}: no such file`,
    `${file}: auth.users: cannot read ${missing}: no such file ${CREATE_HINT}`,
  ]);

  // `portier user add` creates the file: usersMayBeMissing lets a missing one through, resolved all the same.
  writeFileSync(file, `${MIN}auth: {users: nobody}\n`);
  t.equal(loadConfig(file, { usersMayBeMissing: true }).auth?.users, missing, 'missing is fine for user add');
  t.equal(parseConfig(`${MIN}auth: {users: nobody}\n`, file, { usersMayBeMissing: true }).auth?.users, missing);
  t.throws(() => loadConfig(file, { usersMayBeMissing: false }), { message: `${file}: auth.users: cannot read ${missing}: no such file ${CREATE_HINT}` });
  writeFileSync(file, `${MIN}auth: {users: users.d}\n`);
  t.throws(() => loadConfig(file, { usersMayBeMissing: true }), {
    message: `${file}: auth.users: cannot read ${join(etc, 'users.d')}: is a directory, not a file`,
  }, 'a directory is still refused');
  writeFileSync(file, `${MIN}tls: {cert: cert.pem, key: users}\nauth: {users: nobody}\n`);
  t.throws(() => loadConfig(file, { usersMayBeMissing: true }), { message: `${file}: tls.cert: cannot read ${join(etc, 'cert.pem')}: no such file` }, 'only the users file may be missing');

  // parseConfig resolves against the directory of its source name.
  t.equal(parseConfig(`${MIN}auth: {users: users}\n`, file).auth?.users, join(etc, 'users'));

  if (process.getuid?.() !== 0) {
    const secret = join(etc, 'secret');
    writeFileSync(secret, USERS_LINE);
    chmodSync(secret, 0o000);
    t.throws(() => load('{users: secret}'), { message: `${file}: auth.users: cannot read ${secret}: permission denied` });
    chmodSync(secret, 0o600);
  }
});

t.test('auth.algorithms: order kept, duplicates and unknown names refused', async (t) => {
  const users = usersFile(t);
  const algs = (list: string) => parseConfig(`${MIN}auth: {users: ${users}, algorithms: ${list}}\n`, F).auth?.algorithms;
  t.same(algs('[SHA-256, MD5]'), ['SHA-256', 'MD5']);
  t.same(algs('[MD5, SHA-256]'), ['MD5', 'SHA-256'], 'MD5 first for clients that read only the first challenge');
  t.same(algs('[MD5]'), ['MD5']);
  t.same(algs('[SHA-256]'), ['SHA-256']);
  t.same(algs('[md5, sha-256]'), ['MD5', 'SHA-256'], 'case-insensitive, stored in the canonical spelling');

  const refused: Array<[string, string]> = [
    ['[SHA-256, MD5, SHA-256]', `${F}: auth.algorithms[2]: duplicate of SHA-256`],
    ['[MD5, md5]', `${F}: auth.algorithms[1]: duplicate of MD5`],
    ['[SHA-512]', `${F}: auth.algorithms[0]: must be one of SHA-256 or MD5 (got "SHA-512")`],
    ['[MD5, SHA-256-sess]', `${F}: auth.algorithms[1]: must be one of SHA-256 or MD5 (got "SHA-256-sess")`],
    ['[MD5, 5]', `${F}: auth.algorithms[1]: must be one of SHA-256 or MD5`],
    ['[]', `${F}: auth.algorithms: must not be empty`],
    ['MD5', `${F}: auth.algorithms: must be a list, not "MD5"`],
  ];
  for (const [list, message] of refused) {
    t.equal(refusal(t, `${MIN}auth: {users: ${users}, algorithms: ${list}}\n`).message, message, message);
  }
});

t.test('auth.trusted and security.exempt: CIDRs checked with parseCidr', async (t) => {
  const users = usersFile(t);
  const valid = ['10.20.0.0/16', '192.0.2.7', '0.0.0.0/0', '2001:db8::/32', '::1', '::/0', 'fe80::/10', '198.51.100.0/24'];
  const yamlList = `[${valid.map((v) => JSON.stringify(v)).join(', ')}]`;
  const c = parseConfig(`${MIN}auth: {users: ${users}, trusted: ${yamlList}}\nsecurity: {exempt: ${yamlList}}\n`, F);
  t.same(c.auth?.trusted, valid, 'IPv4, IPv6, ranges and bare addresses, in order');
  t.same(c.security.exempt, valid);
  t.same(parseConfig(`${MIN}auth: {users: ${users}, trusted: []}\n`, F).auth?.trusted, []);

  const bad = ['10.0.0.1/8', 'intercom.example.test', '10.0.0.0/33', '2001:db8::1/129', 'fe80::1%eth0', '10.0.0.0/08', '2001:db8::1/32', '10.0.0.0/'];
  for (const entry of bad) {
    const reason = cidrReason(t, entry);
    t.equal(
      refusal(t, `${MIN}auth: {users: ${users}, trusted: [10.0.0.0/8, ${JSON.stringify(entry)}]}\n`).message,
      `${F}: auth.trusted[1]: ${reason}`,
      `trusted ${entry}`,
    );
    t.equal(refusal(t, `${MIN}security: {exempt: [${JSON.stringify(entry)}]}\n`).message, `${F}: security.exempt[0]: ${reason}`, `exempt ${entry}`);
  }
  // parseCidr's reasons, spelled out once so that the above is not only self-consistent.
  t.equal(refusal(t, `${MIN}auth: {users: ${users}, trusted: [10.0.0.0/8, 10.0.0.1/8]}\n`).message, `${F}: auth.trusted[1]: "10.0.0.1/8" has host bits set; write 10.0.0.0/8`);
  t.equal(refusal(t, `${MIN}security: {exempt: [sbc.example.test]}\n`).message, `${F}: security.exempt[0]: "sbc.example.test" must be an IP address or ADDRESS/PREFIX`);
  t.equal(refusal(t, `${MIN}security: {exempt: ["::/129"]}\n`).message, `${F}: security.exempt[0]: "::/129": prefix 129 is too long for IPv6 (at most 128)`);

  const err = refusal(t, `${MIN}auth: {users: ${users}, trusted: [x, 10.0.0.0/8, 42]}\nsecurity: {exempt: [10.0.0.0/8, 1.2.3.4/40]}\n`);
  t.same(err.problems, [
    `${F}: auth.trusted[0]: "x" must be an IP address or ADDRESS/PREFIX`,
    `${F}: auth.trusted[2]: must be an address or ADDRESS/PREFIX (e.g. 10.20.0.0/16 or 2001:db8::/32) (got 42)`,
    `${F}: security.exempt[1]: "1.2.3.4/40": prefix 40 is too long for IPv4 (at most 32)`,
  ], 'every bad entry is reported');
  t.equal(refusal(t, `${MIN}security: {exempt: 10.0.0.0/8}\n`).message, `${F}: security.exempt: must be a list, not "10.0.0.0/8"`);
});

t.test('auth: off', async (t) => {
  for (const off of ['off', 'OFF', 'Off', 'false', 'FALSE', '"off"']) {
    const c = parseConfig(`domains: [a.test]\nlisten: [udp:0.0.0.0, "tcp:[::]"]\nauth: ${off}\n`, F);
    t.equal(c.auth, null, `auth: ${off} switches authentication off, even beyond loopback`);
  }
  t.equal(parseConfig(`${MIN}auth: off\n`, F).auth, null);
});

t.test('no auth section: allowed only while every listener is on loopback', async (t) => {
  const refused: Array<[string, string]> = [
    [
      'domains: [example.test]\nlisten: [udp:0.0.0.0:5060]\n',
      `${F}: auth: required when listening beyond loopback (listen[0] is udp:0.0.0.0:5060): e.g. auth: {users: users, realm: example.test}, or auth: off to accept anyone`,
    ],
    [
      'domains: [school.example, a.test]\nlisten: [udp:127.0.0.1, tcp:10.1.2.3, "udp:[::]:5070"]\n',
      `${F}: auth: required when listening beyond loopback (listen[1] is tcp:10.1.2.3:5060): e.g. auth: {users: users, realm: school.example}, or auth: off to accept anyone`,
    ],
    [
      'domains: [a.test]\nlisten: ["udp:[::]"]\n',
      `${F}: auth: required when listening beyond loopback (listen[0] is udp:[::]:5060): e.g. auth: {users: users, realm: a.test}, or auth: off to accept anyone`,
    ],
    [
      'domains: [a.test]\nlisten: ["udp:[::1]", "tcp:[2001:db8::5]:5080"]\n',
      `${F}: auth: required when listening beyond loopback (listen[1] is tcp:[2001:db8::5]:5080): e.g. auth: {users: users, realm: a.test}, or auth: off to accept anyone`,
    ],
  ];
  for (const [text, message] of refused) {
    const err = refusal(t, text);
    t.equal(err.message, message, message);
    t.same(err.problems, [message]);
  }

  for (const listen of ['[udp:127.0.0.1]', '[udp:127.0.0.1, tcp:127.0.0.1, "udp:[::1]:5070", "tcp:[::1]"]', '[udp:127.1.2.3:5080]']) {
    t.equal(parseConfig(`domains: [a.test]\nlisten: ${listen}\n`, F).auth, null, `${listen}: no auth`);
  }
  t.equal(
    parseConfig(`domains: [a.test]\nlisten: [udp:127.0.0.1]\nmetrics: {listen: 0.0.0.0:9090}\n`, F).auth,
    null,
    'the metrics listener is not a SIP listener',
  );
});

t.test('property: without auth:, a listener is accepted exactly when it is on loopback', async (t) => {
  // An oracle independent of the implementation: 127.0.0.0/8 and ::1 are loopback.
  const host = fc.oneof(
    fc.ipV4().map((h) => ({ h, loopback: h.startsWith('127.') })),
    fc.ipV4Extended().filter((h) => /^\d+\.\d+\.\d+\.\d+$/.test(h) && !/(^|\.)0\d/.test(h)).map((h) => ({ h, loopback: h.split('.')[0] === '127' })),
    fc.ipV6().filter((h) => !/^[0:]*:ffff:/i.test(h) && !h.includes('.')).map((h) => ({ h, loopback: parseCidr(h).address === '::1' })),
    fc.constantFrom(
      { h: '0.0.0.0', loopback: false },
      { h: '::', loopback: false },
      { h: '::1', loopback: true },
      { h: '0:0:0:0:0:0:0:1', loopback: true },
      { h: '127.0.0.1', loopback: true },
      { h: '127.255.255.254', loopback: true },
      { h: '128.0.0.1', loopback: false },
      { h: '126.255.255.255', loopback: false },
    ),
  );
  fc.assert(
    fc.property(fc.constantFrom('udp', 'tcp'), host, fc.integer({ min: 0, max: 65535 }), (protocol, { h, loopback }, port) => {
      const listen = formatListen(parseListen(`${protocol}:${h.includes(':') ? `[${h}]` : h}:${port}`));
      const text = `domains: [a.test]\nlisten: ["udp:127.0.0.1:5090", "${listen}"]\n`;
      // With auth: off every host is fine.
      if (parseConfig(`${text}auth: off\n`, F).auth !== null) return false;
      try {
        return parseConfig(text, F).auth === null && loopback;
      } catch (err) {
        return (
          !loopback &&
          err instanceof ConfigError &&
          err.message ===
            `${F}: auth: required when listening beyond loopback (listen[1] is ${listen}): e.g. auth: {users: users, realm: a.test}, or auth: off to accept anyone`
        );
      }
    }),
  );
  t.pass('loopback iff accepted without auth');
});

t.test('security: defaults, ranges, cross-check', async (t) => {
  t.same(parseConfig(MIN, F).security, DEFAULT_SECURITY, 'no security section: the defaults');
  t.same(parseConfig(`${MIN}security:\n`, F).security, DEFAULT_SECURITY, 'an empty section: the defaults');
  t.same(parseConfig(`${MIN}security: {rate: {}, auth-failures: {}}\n`, F).security, DEFAULT_SECURITY);
  t.same(
    parseConfig(`${MIN}security: {rate: {burst: 10}}\n`, F).security,
    { ...DEFAULT_SECURITY, rate: { perSource: 100, burst: 10 } },
    'one key set, the rest defaults',
  );

  const sec = (yaml: string) => parseConfig(`${MIN}security: ${yaml}\n`, F).security;
  t.equal(sec('{rate: {per-source: 0}}').rate.perSource, 0, 'per-source 0 switches the rate limit off');
  t.equal(sec('{rate: {per-source: 1000000, burst: 10000000}}').rate.burst, 10000000);
  t.equal(sec('{rate: {burst: 1}}').rate.burst, 1);
  t.equal(sec('{auth-failures: {max: 0}}').authFailures.max, 0, 'max 0 switches bans off');
  t.same(sec('{auth-failures: {ban: 300, max-ban: 300}}').authFailures, { max: 10, window: 600, ban: 300, maxBan: 300 }, 'max-ban equal to ban');
  t.same(sec('{auth-failures: {ban: 1, max-ban: 1, window: 1}}').authFailures, { max: 10, window: 1, ban: 1, maxBan: 1 });
  t.equal(sec('{drop-scanners: false}').dropScanners, false);
  t.equal(sec('{drop-scanners: true}').dropScanners, true);

  const refused: Array<[string, string]> = [
    ['{rate: {per-source: -1}}', `${F}: security.rate.per-source: must be an integer between 0 and 1000000`],
    ['{rate: {per-source: 1000001}}', `${F}: security.rate.per-source: must be an integer between 0 and 1000000`],
    ['{rate: {per-source: 1.5}}', `${F}: security.rate.per-source: must be an integer between 0 and 1000000`],
    ['{rate: {burst: 0}}', `${F}: security.rate.burst: must be an integer between 1 and 10000000`],
    ['{rate: {burst: 10000001}}', `${F}: security.rate.burst: must be an integer between 1 and 10000000`],
    ['{auth-failures: {max: -1}}', `${F}: security.auth-failures.max: must be an integer between 0 and 100000`],
    ['{auth-failures: {window: 0}}', `${F}: security.auth-failures.window: must be an integer between 1 and 86400`],
    ['{auth-failures: {ban: 0}}', `${F}: security.auth-failures.ban: must be an integer between 1 and 31536000`],
    ['{auth-failures: {max-ban: 299}}', `${F}: security.auth-failures.max-ban: must not be below ban (300)`],
    ['{auth-failures: {ban: 600, max-ban: 599}}', `${F}: security.auth-failures.max-ban: must not be below ban (600)`],
    ['{drop-scanners: yes}', `${F}: security.drop-scanners: must be true or false`],
    ['{drop-scanners: 1}', `${F}: security.drop-scanners: must be true or false`],
    ['{rate: {per_source: 5}}', `${F}: security.rate.per_source: unknown key (did you mean "per-source"?)`],
    ['{auth-failures: {maxban: 5}}', `${F}: security.auth-failures.maxban: unknown key (did you mean "max-ban"?)`],
    ['{exemt: []}', `${F}: security.exemt: unknown key (did you mean "exempt"?)`],
    ['{bananas: 1}', `${F}: security.bananas: unknown key (expected rate, auth-failures, exempt, drop-scanners or relay-to-loopback)`],
    ['{rate: 100}', `${F}: security.rate: must be a mapping with the keys per-source and burst, not 100`],
    ['off', `${F}: security: must be a mapping with the keys rate, auth-failures, exempt, drop-scanners and relay-to-loopback, not "off"`],
  ];
  for (const [yaml, message] of refused) {
    t.equal(refusal(t, `${MIN}security: ${yaml}\n`).message, message, message);
  }
  const c = parseConfig(`${MIN}security: {exempt: [10.0.0.0/8]}\n`, F);
  t.ok(Object.isFrozen(c.security.rate));
  t.ok(Object.isFrozen(c.security.exempt));
});

t.test('formatConfig round-trips auth and security', async (t) => {
  const dir = t.testdir({ conf: { 'portier.yaml': '', users: USERS_LINE } });
  const file = join(dir, 'conf', 'portier.yaml');
  writeFileSync(
    file,
    `domains: [school.example, "[2001:db8::10]"]
listen: [udp:0.0.0.0, "tcp:[::]:5080"]
registrar: {max-bindings: 4}
auth:
  users: users
  algorithms: [MD5, SHA-256]
  trusted: [10.20.0.0/16, 192.0.2.7, "2001:db8::/32", "::1", "::/0", "::ffff:10.0.0.0/104"]
  nonce-lifetime: 60
security:
  rate: {per-source: 0, burst: 1}
  auth-failures: {max: 3, window: 60, ban: 30, max-ban: 30}
  exempt: ["::", 0.0.0.0/0, 198.51.100.0/24]
  drop-scanners: false
`,
  );
  const c = loadConfig(file);
  t.same(c.auth, {
    users: join(dir, 'conf', 'users'),
    realm: 'school.example',
    algorithms: ['MD5', 'SHA-256'],
    trusted: ['10.20.0.0/16', '192.0.2.7', '2001:db8::/32', '::1', '::/0', '::ffff:10.0.0.0/104'],
    nonceLifetime: 60,
  });
  t.same(c.security, {
    rate: { perSource: 0, burst: 1 },
    authFailures: { max: 3, window: 60, ban: 30, maxBan: 30 },
    exempt: ['::', '0.0.0.0/0', '198.51.100.0/24'],
    dropScanners: false,
    relayToLoopback: false,
  });
  t.equal(c.registrar.maxBindings, 4);

  const text = formatConfig(c);
  t.match(text, new RegExp(`^ {2}users: ${join(dir, 'conf', 'users').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'), 'users written absolute');
  t.match(text, /^ {2}realm: school\.example$/m, 'the defaulted realm is written out');
  t.match(text, /^ {2}nonce-lifetime: 60$/m, 'YAML keys');
  t.match(text, /^ {4}per-source: 0$/m);
  t.match(text, /^ {2}drop-scanners: false$/m);
  t.same(parseConfig(text, c.source), c, 'parse(format(c)) equals c');
  // The written users path is absolute: it reads back the same from anywhere.
  const elsewhere = join(dir, 'elsewhere');
  mkdirSync(elsewhere);
  t.same(parseConfig(text, join(elsewhere, 'copy.yaml')).auth, c.auth);

  // auth: off beyond loopback is written back as off, and accepted again.
  const off = parseConfig(`domains: [a.test]\nlisten: [udp:0.0.0.0]\nauth: off\nsecurity: {exempt: ["::1"]}\n`, F);
  t.match(formatConfig(off), /^auth: off$/m);
  t.same(parseConfig(formatConfig(off), F), off);
  // Defaults only: security written in full, and read back equal.
  const plain = parseConfig(MIN, F);
  t.match(formatConfig(plain), /^ {2}exempt: \[\]$/m);
  t.same(parseConfig(formatConfig(plain), F), plain);
});
