// The provisioning: and media: sections: every key, defaults, refusals with
// file, key and reason, and `portier check`, which never prints the TURN secret.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runCli } from '../../src/cli/run.js';
import { ConfigError, formatConfig, loadConfig, parseConfig } from '../../src/config/index.js';
import { recorder } from './helpers.js';

function setup(dir: string, body: string[]): string {
  writeFileSync(join(dir, 'users'), '');
  writeFileSync(join(dir, 'turn-secret'), 'the-secret-value\n');
  writeFileSync(join(dir, 'empty-secret'), '\n');
  writeFileSync(join(dir, 'cert.pem'), 'x');
  writeFileSync(join(dir, 'key.pem'), 'x');
  const path = join(dir, 'portier.yaml');
  writeFileSync(path, ['domains: [example.test]', 'listen: [udp:127.0.0.1:5060]', 'auth: {users: users}', 'groups: {g: {members: [a]}}', ...body].join('\n') + '\n');
  return path;
}

function problems(path: string): string[] {
  try {
    loadConfig(path);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

t.test('every key', async (t) => {
  const dir = t.testdir();
  const path = setup(dir, [
    'tls: {cert: cert.pem, key: key.pem}',
    'provisioning:',
    '  listen: "[::]:8443"',
    '  base-url: https://portier.ville.example:8443/',
    '  token-ttl: 2d',
    '  transport: tcp',
    '  sip-server: sip.ville.example:5080',
    '  tokens: state/tokens',
    '  reg-expires: 600',
    '  push-gateway: Vendor',
    '  devices:',
    '    - {account: portail@example.test, name: Portail, type: intercom, dtmf: rfc2833, groups: [g], actions: [{type: unlock, code: "1234#"}]}',
    'media:',
    '  stun: stun:stun.example.test',
    '  turn: {url: "turns:turn.example.test:443?transport=tcp", secret: turn-secret, ttl: 3600}',
  ]);
  const c = loadConfig(path);
  t.same(c.provisioning, {
    listen: { host: '::', port: 8443 },
    baseUrl: 'https://portier.ville.example:8443',
    tokenTtl: 172800,
    transport: 'tcp',
    sipServer: 'sip.ville.example:5080',
    tokens: join(dir, 'state/tokens'),
    regExpires: 600,
    devices: [{ account: 'portail@example.test', name: 'Portail', type: 'intercom', dtmf: 'rfc2833', groups: ['g'], actions: [{ type: 'unlock', code: '1234#' }] }],
    pushGateway: 'vendor',
  });
  t.same(c.media, { stun: 'stun:stun.example.test', turn: { url: 'turns:turn.example.test:443?transport=tcp', secret: join(dir, 'turn-secret'), ttl: 3600 } });
  const text = formatConfig(c);
  t.notMatch(text, /the-secret-value/, 'the effective configuration names the secret file, never the secret');
  t.match(text, /token-ttl: 2d/);
  const r = recorder();
  t.equal(await runCli(['check', '--config', path], r.io), 0, r.err());
  t.notMatch(r.out(), /the-secret-value/, 'portier check never prints the TURN secret');
  t.match(r.out(), new RegExp(`secret: ${join(dir, 'turn-secret')}`));
});

t.test('defaults; no sections: nothing served', async (t) => {
  const dir = t.testdir();
  const c = loadConfig(setup(dir, ['provisioning: {listen: 127.0.0.1:8443, base-url: "http://127.0.0.1:8443"}']));
  t.same(c.provisioning, { listen: { host: '127.0.0.1', port: 8443 }, baseUrl: 'http://127.0.0.1:8443', tokenTtl: 86400, transport: 'tls', sipServer: null, tokens: null, regExpires: 3600, devices: [], pushGateway: 'portier' });
  t.same(c.media, { stun: null, turn: null });
  const none = parseConfig('domains: [example.test]\nlisten: [udp:127.0.0.1:5060]\n', 'conf/x.yaml');
  t.equal(none.provisioning, null);
  t.same(none.media, { stun: null, turn: null });
});

t.test('refusals name the file, the key and the reason', async (t) => {
  const dir = t.testdir();
  const cases: Array<[string[], RegExp]> = [
    [['provisioning: {listen: 0.0.0.0:8443, base-url: "http://portier.example.test"}'], /provisioning\.base-url: must be an https:\/\/ URL \(http:\/\/ only to a loopback address, for tests\)/],
    [['provisioning: {listen: 0.0.0.0:8443, base-url: "http://127.0.0.1:8443"}'], /provisioning: an http:\/\/ base-url is for tests on loopback only: listen must be 127\.0\.0\.1 or \[::1\] \(got 0\.0\.0\.0\)/],
    [['provisioning: {listen: 0.0.0.0:8443, base-url: "https://p.example.test"}'], /provisioning: an https base-url needs the tls: section/],
    [['provisioning: {listen: 0.0.0.0, base-url: "https://p.example.test"}'], /provisioning\.listen: "0\.0\.0\.0" must be host:port/],
    [['provisioning: {listen: 127.0.0.1:1, base-url: "https://u:p@p.example.test"}'], /provisioning\.base-url: must be scheme:\/\/host\[:port\]\[\/path\] without credentials/],
    [['provisioning: {listen: 127.0.0.1:1, base-url: "http://127.0.0.1:1", token-ttl: 10s}'], /provisioning\.token-ttl: must be a duration from 1m to 30d such as 24h \(got "10s"\)/],
    [['provisioning: {listen: 127.0.0.1:1, base-url: "http://127.0.0.1:1", transport: ws}'], /provisioning\.transport: must be one of tls, tcp or udp/],
    [['provisioning: {listen: 127.0.0.1:1, base-url: "http://127.0.0.1:1", push-gateway: linhome}'], /provisioning\.push-gateway: must be one of portier or vendor \(got "linhome"\)/],
    [['provisioning: {listen: 127.0.0.1:1, base-url: "http://127.0.0.1:1", devices: [{account: p, name: P, type: intercom, groups: [nope]}]}'], /provisioning: devices\[0\]\.groups\[0\]: no ring group named "nope"/],
    [['provisioning: {listen: 127.0.0.1:1, base-url: "http://127.0.0.1:1", devices: [{account: p, name: P, type: intercom, groups: [g], actions: [{type: open-door, code: "x"}]}]}'], /devices\[0\]\.actions\[0\]\.code: must be DTMF digits 0-9, A-D, \* and #/],
    [['provisioning: {listen: 127.0.0.1:1, base-url: "http://127.0.0.1:1", devices: [{account: p, name: P, groups: [g]}]}'], /devices\[0\]\.type: required/],
    [['media: {stun: "turn:x.example.test"}'], /media\.stun: must be a stun: or stuns: URL such as stun:turn\.example\.test:3478/],
    [['media: {turn: {url: "turn:x.example.test?transport=sctp", secret: turn-secret}}'], /media\.turn\.url: must be a turn: or turns: URL/],
    [['media: {turn: {url: "turn:x.example.test"}}'], /media\.turn\.secret: required \(e\.g\. secret: \/etc\/portier\/turn-secret\)/],
    [['media: {turn: {url: "turn:x.example.test", secret: missing}}'], /media\.turn\.secret: cannot read .*missing: no such file/],
    [['media: {turn: {url: "turn:x.example.test", secret: empty-secret}}'], /media\.turn\.secret: .*empty-secret is empty \(it holds coturn's static-auth-secret\)/],
    [['media: {turn: {url: "turn:x.example.test", secret: turn-secret, ttl: 0}}'], /media\.turn\.ttl: must be a duration/],
  ];
  for (const [body, re] of cases) {
    const path = setup(dir, body);
    const found = problems(path);
    t.match(found.join('\n'), re, body.join(' '));
    t.ok(found.every((p) => p.startsWith(`${path}: `)), 'each problem names the file');
  }
  const noAuth = join(dir, 'noauth.yaml');
  writeFileSync(noAuth, 'domains: [example.test]\nlisten: [udp:127.0.0.1:5060]\nprovisioning: {listen: 127.0.0.1:1, base-url: "http://127.0.0.1:1"}\n');
  t.match(problems(noAuth).join('\n'), /provisioning: needs the auth: section/);
});
