// `portier provision AOR --config FILE [--png FILE]`: a fresh password in the
// users file (HA1 only), a link in the tokens file (hashed), the URL and a QR
// code printed, and a PNG that decodes back to the URL.

import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import jsQRModule from 'jsqr';
import { PNG } from 'pngjs';
import t from 'tap';
import { loadUsersFile } from '../../src/auth/users.js';
import { HELP, runCli } from '../../src/cli/run.js';
import { parseTokens, tokenId } from '../../src/provisioning/tokens.js';
import { recorder, writeProvisioningConfig } from './helpers.js';
import { usersLine } from '../helpers/tools.js';

// jsqr is CommonJS with a default export typed as an ES module one: the function is module.exports itself.
const jsQR = jsQRModule as unknown as typeof jsQRModule.default;

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = recorder();
  const code = await runCli(argv, r.io);
  return { code, out: r.out(), err: r.err() };
}

t.test('prints the link and a QR code, writes a PNG that decodes to the link', async (t) => {
  const dir = t.testdir();
  const path = writeProvisioningConfig(dir, { baseUrl: 'http://127.0.0.1:8443' });
  writeFileSync(join(dir, 'users'), usersLine('gardien', 'old-password-123', { realm: 'example.test', domain: 'example.test' }) + '\n');
  const before = loadUsersFile(join(dir, 'users')).accounts.get('gardien@example.test')!;
  const png = join(dir, 'gardien.png');
  const r = await cli(['provision', 'sip:gardien@example.test', '-c', path, '--png', png]);
  t.equal(r.code, 0, r.err);
  t.equal(r.err, '');
  const url = /^(http:\/\/127\.0\.0\.1:8443\/p\/([A-Za-z0-9_-]{43}))$/m.exec(r.out);
  t.ok(url, 'the URL on a line of its own');
  t.match(r.out, /^gardien@example\.test: new password set; provisioning link, valid once until /);
  t.match(r.out, /QR code written to .*gardien\.png/);

  const image = readFileSync(png);
  t.same([...image.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG signature');
  t.equal(statSync(png).mode & 0o777, 0o600, 'the image is a credential: mode 0600');
  const decoded = PNG.sync.read(image);
  const code = jsQR(new Uint8ClampedArray(decoded.data), decoded.width, decoded.height);
  t.equal(code?.data, url![1], 'the QR code holds the link');

  const after = loadUsersFile(join(dir, 'users')).accounts.get('gardien@example.test')!;
  t.not(after.ha1.sha256, before.ha1.sha256, 'a fresh password');
  t.equal(after.kind, 'phone');
  const tokens = readFileSync(join(dir, 'users.tokens'), 'utf8');
  t.equal(statSync(join(dir, 'users.tokens')).mode & 0o777, 0o600);
  t.notMatch(tokens, new RegExp(url![2]), 'the tokens file holds a hash of the link, not the link');
  const [record] = parseTokens(tokens);
  t.equal(record.id, tokenId(url![2]));
  t.equal(record.aor, 'gardien@example.test');
  t.ok(Math.abs(record.expires - (Date.now() + 3600_000)) < 60_000, 'valid token-ttl (1h)');
  t.notMatch(readFileSync(join(dir, 'users'), 'utf8'), /password/);
});

t.test('refusals', async (t) => {
  const dir = t.testdir();
  const path = writeProvisioningConfig(dir);
  writeFileSync(join(dir, 'users'), usersLine('portail', 'door-password-1', { realm: 'example.test', domain: 'example.test', kind: 'door' }) + '\n');
  const none = join(dir, 'none.yaml');
  writeFileSync(none, 'domains: [example.test]\nlisten: [udp:127.0.0.1:0]\nauth: {users: users}\n');
  const cases: Array<[string[], number, RegExp]> = [
    [['provision'], 2, /^portier: provision needs an account: user@domain\nTry 'portier provision --help'\.\n$/],
    [['provision', 'alice@example.test'], 2, /provision needs --config FILE/],
    [['provision', 'alice', '-c', path], 2, /the account "alice" must be user@domain/],
    [['provision', 'a@example.test', 'b@example.test', '-c', path], 2, /unexpected argument "b@example\.test"/],
    [['provision', 'a@example.test', '-c', path, '--bogus'], 2, /unknown option '--bogus'/],
    [['provision', 'alice@other.test', '-c', path], 1, /^portier: other\.test is not one of the domains of .*portier\.yaml \(example\.test\)\n$/],
    [['provision', 'portail@example.test', '-c', path], 1, /portail@example\.test is a door-station account/],
    [['provision', 'alice@example.test', '-c', none], 1, /none\.yaml has no provisioning: section/],
    [['provision', 'alice@example.test', '-c', join(dir, 'missing.yaml')], 1, /cannot read the configuration: no such file/],
  ];
  for (const [argv, code, err] of cases) {
    const r = await cli(argv);
    t.equal(r.code, code, argv.join(' '));
    t.match(r.err, err, argv.join(' '));
    t.equal(r.out, '');
  }
  const help = await cli(['provision', '--help']);
  t.equal(help.code, 0);
  t.match(help.out, /^Usage: portier provision AOR --config FILE \[--png FILE\]/);
  t.match(HELP, /portier provision AOR --config FILE \[--png FILE\]/, 'portier --help names it');
});
