// The provisioning listener of a running Portier, with links made by
// `portier provision` in-process: the XML once (HTTPS, test CA), 410 the
// second time, the new password accepted by the SIP side once the link is
// used, HTTP digest for the refresh and Linhome's device list, and expiry
// with an injected clock.

import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import t from 'tap';
import { Accounts, loadUsersFile } from '../../src/auth/users.js';
import { runCli } from '../../src/cli/run.js';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { ProvisioningServer } from '../../src/provisioning/server.js';
import { parseTokens } from '../../src/provisioning/tokens.js';
import { startServer } from '../../src/server.js';
import { makeTestCerts, opensslMissing } from '../helpers/certs.js';
import { UA } from '../helpers/ua.js';
import { digestGet, freeTcpPort, get, headerValues, parseLpConfig, recorder, writeProvisioningConfig } from './helpers.js';

async function provision(config: string, aor: string, extra: string[] = []): Promise<{ code: number; url: string; out: string; err: string }> {
  const r = recorder();
  const code = await runCli(['provision', aor, '--config', config, ...extra], r.io);
  const url = /^(https?:\/\/\S+\/p\/[A-Za-z0-9_-]{43})$/m.exec(r.out())?.[1] ?? '';
  return { code, url, out: r.out(), err: r.err() };
}

t.test('over HTTPS: link once, SIP with the new password, digest for the refresh and the devices', { skip: opensslMissing() ?? false, timeout: 60_000 }, async (t) => {
  const dir = t.testdir();
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const port = await freeTcpPort();
  const path = writeProvisioningConfig(dir, { baseUrl: `https://localhost:${port}`, listen: `127.0.0.1:${port}`, tls: { cert: certs.paths.serverCert, key: certs.paths.serverKey } });
  const logs: string[] = [];
  const server = await startServer(loadConfig(path), createLogger('debug', { write: (s: string) => void logs.push(s) }));
  t.teardown(() => server.stop());
  t.same(server.provisioningAddress(), { address: '127.0.0.1', port });
  const ca = certs.caCert;

  const p = await provision(path, 'directrice@example.test');
  t.equal(p.code, 0, p.err);
  t.match(p.out, /^added directrice@example\.test \(phone\) with password set; provisioning link, valid once until \d{4}-\d\d-\d\dT/);
  t.match(p.out, /▄|█/, 'a QR code in the terminal');

  const sipPort = server.listening().find((e) => e.protocol === 'udp')!.port;
  const first = await get(p.url, { ca });
  t.equal(first.status, 200);
  t.match(first.headers['content-type'], /^application\/xml/);
  t.equal(first.headers['cache-control'], 'no-store');
  const c = parseLpConfig(first.body);
  const password = c.auth_info_0.passwd;
  t.match(password, /^[A-Za-z0-9_-]{27}$/, 'a fresh random password');
  t.same(c.auth_info_0, { username: 'directrice', userid: 'directrice', passwd: password, realm: 'example.test', domain: 'example.test' });
  t.equal(c.proxy_0.reg_proxy, '<sip:localhost:5061;transport=tls>', "TLS by default, to base-url's host");
  t.equal(c.proxy_0.reg_identity, '"directrice" <sip:directrice@example.test>');
  t.equal(c.proxy_0.push_notification_allowed, '1');
  t.equal(c.net.force_ice_disablement, '0');
  t.equal(c.nat_policy_0.protocols, 'stun,turn,ice');
  t.equal(c.nat_policy_0.stun_server, 'turn.example.test:3478', 'the TURN server answers STUN too');
  const turnUser = c.nat_policy_0.stun_server_username;
  const expiry = Number(turnUser.split(':')[0]);
  t.ok(Math.abs(expiry - (Date.now() / 1000 + 12 * 3600)) < 60, 'TURN credential valid media.turn.ttl from now');
  t.equal(turnUser.slice(turnUser.indexOf(':') + 1), 'directrice@example.test');
  t.equal(c.auth_info_1.passwd, createHmac('sha1', 'north-gate-shared-secret').update(turnUser).digest('base64'));
  t.same(c.misc, { 'config-uri': `https://localhost:${port}/config`, transient_provisioning: '0', 'contacts-vcard-list': `https://localhost:${port}/contacts/vcard` });
  t.same(c.default_actions, { method_type: 'method_dtmf_sip_info', action_1_type: 'action_open_door', action_1_code: '*1' });

  const again = await get(p.url, { ca });
  t.equal(again.status, 410, 'the second fetch of the same link is refused');
  t.equal((await get(`https://localhost:${port}/p/${'A'.repeat(43)}`, { ca })).status, 404, 'an unknown link');
  t.equal((await get(`https://localhost:${port}/p/../users`, { ca })).status, 404);
  t.equal((await get(p.url, { ca, method: 'POST' })).status, 405);

  // The users file changed under the running server: using the link had it read again.
  const ua = await UA.create({ transport: 'udp', user: 'directrice', domain: 'example.test', proxyPort: sipPort, password });
  t.teardown(() => ua.close());
  t.equal((await ua.register()).status, 200, 'the app registers with the password it was given');

  const vcard = await digestGet(`https://localhost:${port}/contacts/vcard`, 'directrice', password, { ca });
  t.equal(vcard.status, 200);
  t.match(vcard.headers['content-type'], /^text\/vcard/);
  t.match(vcard.body, /IMPP:sip:portail-jaures@example\.test\r\nFN:Portail Jaurès\r\nX-LINPHONE-ACCOUNT-TYPE:intercom\r\nX-LINPHONE-ACCOUNT-DTMF-PROTOCOL:sipinfo\r\nX-LINPHONE-ACCOUNT-ACTION:action_open_door;\*1\r\n/);
  t.match(vcard.body, /IMPP:sip:barriere@example\.test\r\nFN:Barrière\\, parking\r\n/, 'a door of a group containing her group (securite > ecole-jaures)');
  const md5 = await digestGet(`https://localhost:${port}/contacts/vcard`, 'directrice', password, { ca, algorithm: 'MD5' });
  t.equal(md5.status, 200, 'MD5 digest too');
  const challenge = await get(`https://localhost:${port}/contacts/vcard`, { ca });
  t.equal(challenge.status, 401);
  t.match(headerValues(challenge, 'www-authenticate'), [/^Digest realm="example\.test", nonce="[^"]+", algorithm=SHA-256, qop="auth"$/, /algorithm=MD5/], 'one challenge per algorithm, SHA-256 first');
  t.equal((await digestGet(`https://localhost:${port}/contacts/vcard`, 'directrice', 'not-the-password', { ca })).status, 401);

  const refresh = await digestGet(`https://localhost:${port}/config`, 'directrice', password, { ca });
  t.equal(refresh.status, 200);
  const r = parseLpConfig(refresh.body);
  t.notOk('auth_info_0' in r, 'a refresh never carries the password');
  t.ok('auth_info_1' in r, 'but fresh TURN credentials');

  // A link whose password was changed since (portier user add) no longer works.
  const p2 = await provision(path, 'gardien@example.test', ['--png', join(dir, 'gardien.png')]);
  t.equal(p2.code, 0, p2.err);
  t.equal((await get(p2.url, { ca, method: 'HEAD' })).status, 200, 'HEAD does not use the link up');
  const changed = recorder();
  t.equal(await runCli(['user', 'add', 'gardien@example.test', '--config', path], { ...changed.io, stdin: Readable.from([Buffer.from('another-password-42\n')]) }), 0, changed.err());
  t.equal((await get(p2.url, { ca })).status, 410, 'superseded by a password change');

  const all = logs.join('');
  t.match(all, /"msg":"provisioning link used: the app was given its account"/);
  t.notMatch(all, new RegExp(p.url.slice(-43)), 'the link is never logged');
  t.notMatch(all, new RegExp(password), 'the password is never logged');
  t.notMatch(all, /north-gate-shared-secret/);
});

t.test('plain HTTP on loopback; expiry with an injected clock', { timeout: 30_000 }, async (t) => {
  const dir = t.testdir();
  const port = await freeTcpPort();
  const path = writeProvisioningConfig(dir, { baseUrl: `http://127.0.0.1:${port}`, listen: `127.0.0.1:${port}`, turn: null });
  const p = await provision(path, 'poste-securite@example.test');
  t.equal(p.code, 0, p.err);
  const config = loadConfig(path);
  const expires = parseTokens(readFileSync(join(dir, 'users.tokens'), 'utf8'))[0].expires;
  let now = expires - 3600_000;
  let accounts: Accounts = loadUsersFile(config.auth!.users).accounts;
  const srv = new ProvisioningServer({ config: () => config, accounts: () => accounts, usersChanged: () => (accounts = loadUsersFile(config.auth!.users).accounts), log: { info() {}, warn() {} }, now: () => now });
  await srv.start();
  t.teardown(() => srv.close());
  now = expires;
  t.equal((await get(p.url)).status, 410, 'refused once token-ttl (1h) is over');
  now = expires - 1;
  const ok = await get(p.url);
  t.equal(ok.status, 200, 'served just before');
  const c = parseLpConfig(ok.body);
  t.same(c.nat_policy_0, { ref: 'portier', stun_server: 'turn.example.test:3478', protocols: 'stun,ice' }, 'STUN only without media.turn');
  t.same(c.misc['transient_provisioning'], '1', 'without TURN nothing expires: the link is forgotten once applied');
  t.equal(c.misc['contacts-vcard-list'], `http://127.0.0.1:${port}/contacts/vcard`);
  t.equal(c.default_actions.method_type, 'method_dtmf_rfc_4733', "poste-securite sees the parking gate's actions");
  t.equal(c.default_actions.action_2_type, 'action_lightup');
  t.equal((await get(p.url)).status, 410);
  t.equal((await get(`http://127.0.0.1:${port}/config`)).status, 404, 'no refresh without TURN');
  t.match(readFileSync(join(dir, 'state', 'provisioning-used'), 'utf8'), /^[0-9a-f]{64} \d+\n$/);
});
