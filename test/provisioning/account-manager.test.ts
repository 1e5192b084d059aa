// The account-manager URLs Portier's provisioning XML gives the apps
// ([assistant] xmlrpc_url = BASE/xmlrpc, [account_creator] url = BASE/api/)
// and what Portier answers there after HTTP digest, never an account
// (src/provisioning/account-manager.ts says why): FlexiAPI 404s, XML-RPC
// faults, and for create_push_account a string refusal, which liblinphone
// takes for a failure where it would take a fault for success.
// The requests are those Linhome sends: create_push_account as linhome-
// android's LinhomeAccount.kt builds it with liblinphone's XmlRpcSession, and
// FlexiAPI's account_creation_tokens/send-by-push; the last test has
// Debian's liblinphone 5.1 itself make both after being provisioned.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import t from 'tap';
import { Accounts, loadUsersFile } from '../../src/auth/users.js';
import { runCli } from '../../src/cli/run.js';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { FAULT, MAX_REQUEST_BODY, PUSH_ACCOUNT_REFUSED, answerXmlRpc, parseMethodCall, renderXmlRpc } from '../../src/provisioning/account-manager.js';
import { ProvisioningServer } from '../../src/provisioning/server.js';
import { startServer } from '../../src/server.js';
import { makeTestCerts, opensslMissing } from '../helpers/certs.js';
import { digestAuthorization, digestGet, freeTcpPort, get, headerValues, parseLpConfig, recorder, writeProvisioningConfig } from './helpers.js';
import { provisioningRc, startProvisionedPortier } from './liblinphone.js';

const UA_LINHOME = 'LinhomeAndroid/1.6.0 (Pixel 7) LinphoneSDK/5.3.0';

/**
 * create_push_account as liblinphone's XmlRpcSession sends it (coreapi/xmlrpc.c format_request:
 * libxml2's text writer, indented by one space) with Linhome's three arguments: the core's user
 * agent, [assistant] domain and [assistant] password_algo (LinhomeAccount.kt createPushGateway).
 */
function methodCall(method: string, args: string[]): string {
  const params = args.map((a) => ['  <param>', '   <value>', `    <string>${a}</string>`, '   </value>', '  </param>'].join('\n'));
  return ['<?xml version="1.0" encoding="UTF-8"?>', '<methodCall>', ` <methodName>${method}</methodName>`, ' <params>', ...params, ' </params>', '</methodCall>', ''].join('\n');
}

const LINHOME_CALL = methodCall('create_push_account', [UA_LINHOME, 'sip.linhome.org', 'SHA-256']);

/** An XML-RPC methodResponse read with a real XML parser: its fault (code, string), or its one string result. */
function reply(xml: string): { code: number; message: string } | { result: string } {
  const doc = new XMLParser({ parseTagValue: false, isArray: (n) => n === 'member' }).parse(xml) as {
    methodResponse?: {
      fault?: { value: { struct: { member: Array<{ name: string; value: { int?: string; string?: string } }> } } };
      params?: { param: { value: { string?: string } } };
    };
  };
  const r = doc.methodResponse;
  if (r?.params !== undefined) return { result: String(r.params.param.value.string) };
  const members = r?.fault?.value.struct.member ?? [];
  const get = (n: string) => members.find((m) => m.name === n)?.value;
  return { code: Number(get('faultCode')?.int), message: String(get('faultString')?.string) };
}

/** The fault code answered to `body`, or null for a result. */
const faultOf = (body: string): number | null => {
  const a = answerXmlRpc(body);
  return 'fault' in a ? a.fault.code : null;
};

t.test('XML-RPC: what Linhome sends, and faults for everything', async (t) => {
  t.same(parseMethodCall(LINHOME_CALL), {
    method: 'create_push_account',
    params: [
      { type: 'string', value: UA_LINHOME },
      { type: 'string', value: 'sip.linhome.org' },
      { type: 'string', value: 'SHA-256' },
    ],
  });
  t.same(answerXmlRpc(LINHOME_CALL), { method: 'create_push_account', result: PUSH_ACCOUNT_REFUSED }, 'create_push_account: a string refusal, no account');
  t.same(reply(renderXmlRpc(answerXmlRpc(LINHOME_CALL))), { result: 'ERROR_PUSH_GATEWAY_DISABLED' });
  t.equal(answerXmlRpc(methodCall('create_push_account', ['Lindoor/1.0'])).method, 'create_push_account');
  t.equal(faultOf(methodCall('create_push_account', ['Lindoor/1.0'])), null, "Lindoor's one-argument form too");
  const cases: Array<[string, string, number]> = [
    ['an int argument', methodCall('create_push_account', ['ua']).replace('<string>ua</string>', '<int>7</int>'), FAULT.invalidParams],
    ['four arguments', methodCall('create_push_account', ['a', 'b', 'c', 'd']), FAULT.invalidParams],
    ['no argument', methodCall('create_push_account', []), FAULT.invalidParams],
    ['another method', methodCall('check_authentication', ['u', 'h']), FAULT.methodNotFound],
    ['untyped value = string', methodCall('get_phone_number_for_account', ['x']).replace('<string>x</string>', 'x'), FAULT.methodNotFound],
    ['not XML', 'create_push_account(ua)', FAULT.notWellFormed],
    ['truncated', LINHOME_CALL.slice(0, 120), FAULT.notWellFormed],
    ['mismatched tags', '<methodCall><methodName>x</methodCall></methodName>', FAULT.notWellFormed],
    ['a DOCTYPE (entity expansion)', '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa">]><methodCall><methodName>&a;</methodName></methodCall>', FAULT.notWellFormed],
    ['an unknown entity', '<methodCall><methodName>&a;</methodName></methodCall>', FAULT.notWellFormed],
    ['not an entity of an object prototype', '<methodCall><methodName>&valueOf;</methodName></methodCall>', FAULT.notWellFormed],
    ['a bare &', methodCall('create_push_account', ['a & b']), FAULT.notWellFormed],
    ['a surrogate', methodCall('create_push_account', ['&#xD800;']), FAULT.notWellFormed],
    ['two roots', '<methodCall><methodName>x</methodName></methodCall><methodCall/>', FAULT.notWellFormed],
    ['too deep', `<methodCall>${'<a>'.repeat(40)}${'</a>'.repeat(40)}</methodCall>`, FAULT.notWellFormed],
    ['not a methodCall', '<methodResponse><params/></methodResponse>', FAULT.invalidRequest],
    ['no methodName', '<methodCall><params/></methodCall>', FAULT.invalidRequest],
    ['a bad methodName', '<methodCall><methodName>a b</methodName></methodCall>', FAULT.invalidRequest],
    ['two values in a param', methodCall('create_push_account', ['a']).replace('</value>', '</value><value>b</value>'), FAULT.invalidRequest],
  ];
  for (const [what, body, code] of cases) t.equal(faultOf(body), code, what);
  t.equal(faultOf('<?xml version="1.0"?>\n<!-- c --><methodCall><methodName>x</methodName><params><param><value><string><![CDATA[<&>]]></string></value></param></params></methodCall>'), FAULT.methodNotFound, 'comments and CDATA are XML');
  t.same(parseMethodCall('<methodCall><methodName>m</methodName><params><param><value><string>a&amp;b&#x3c;&#233;</string></value></param></params></methodCall>').params, [{ type: 'string', value: 'a&b<é' }]);
  const f = reply(renderXmlRpc({ method: null, fault: { code: FAULT.methodNotFound, message: 'no <such> method & more' } }));
  t.same(f, { code: -32601, message: 'no <such> method & more' }, 'a fault reads back with a real XML parser');
});

t.test('over HTTPS: the XML carries the URLs; digest, then faults and 404s; limits', { skip: opensslMissing() ?? false, timeout: 60_000 }, async (t) => {
  const dir = t.testdir();
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const port = await freeTcpPort();
  const base = `https://localhost:${port}`;
  const path = writeProvisioningConfig(dir, { baseUrl: base, listen: `127.0.0.1:${port}`, tls: { cert: certs.paths.serverCert, key: certs.paths.serverKey } });
  const logs: string[] = [];
  const server = await startServer(loadConfig(path), createLogger('info', { write: (s: string) => void logs.push(s) }));
  t.teardown(() => server.stop());
  const ca = certs.caCert;
  const r = recorder();
  t.equal(await runCli(['provision', 'directrice@example.test', '--config', path], r.io), 0, r.err());
  const link = /^(https:\/\/\S+\/p\/\S+)$/m.exec(r.out())![1];

  const c = parseLpConfig((await get(link, { ca })).body);
  const password = c.auth_info_0.passwd;
  t.same(c.app, { auto_create_push_gateway_account: '0' }, 'Linhome creates no push gateway account');
  t.same(c.assistant, { xmlrpc_url: `${base}/xmlrpc` }, "XML-RPC goes to Portier, not the vendor's account manager");
  t.same(c.account_creator, { url: `${base}/api/` }, 'FlexiAPI too');
  t.same(parseLpConfig((await digestGet(`${base}/config`, 'directrice', password, { ca })).body).app, { auto_create_push_gateway_account: '0' }, 'the refresh says it again');

  const xmlrpc = `${base}/xmlrpc`;
  const post = { ca, method: 'POST', body: LINHOME_CALL, headers: { 'Content-Type': 'text/xml', From: 'sip:directrice@example.test', 'User-Agent': UA_LINHOME } };
  const challenge = await get(xmlrpc, post);
  t.equal(challenge.status, 401, 'no answer without digest');
  t.match(headerValues(challenge, 'www-authenticate'), [/^Digest realm="example\.test", nonce="[^"]+", algorithm=SHA-256, qop="auth"$/, /algorithm=MD5/]);

  const answered = await digestGet(xmlrpc, 'directrice', password, post);
  t.equal(answered.status, 200, 'XML-RPC answers travel in a 200, faults included (XML-RPC spec)');
  t.match(answered.headers['content-type'], /^text\/xml/);
  t.same(reply(answered.body), { result: PUSH_ACCOUNT_REFUSED }, 'create_push_account: refused in a string, which liblinphone reports as LinphoneXmlRpcStatusFailed');
  const md5 = await digestGet(xmlrpc, 'directrice', password, { ...post, algorithm: 'MD5' });
  t.same(reply(md5.body), { result: PUSH_ACCOUNT_REFUSED }, 'MD5 digest too');
  t.match(reply((await digestGet(xmlrpc, 'directrice', password, { ...post, body: 'not xml' })).body), { code: FAULT.notWellFormed });
  t.match(reply((await digestGet(xmlrpc, 'directrice', password, { ...post, body: methodCall('delete_account', ['x']) })).body), { code: FAULT.methodNotFound, message: /delete_account not found/ });
  t.match(reply((await digestGet(xmlrpc, 'directrice', password, { ...post, body: Buffer.from([0x3c, 0xff, 0xfe]) })).body), { code: FAULT.notWellFormed }, 'not UTF-8');
  t.equal((await digestGet(xmlrpc, 'directrice', password, { ...post, headers: { ...post.headers, 'Content-Type': 'application/json' } })).status, 415);
  const getXmlrpc = await get(xmlrpc, { ca });
  t.equal(getXmlrpc.status, 405);
  t.equal(getXmlrpc.headers.allow, 'POST');

  // FlexiAPI: the first request of FlexiApiPushAccountCreationViewModel (liblinphone FlexiAPIClient::sendAccountCreationTokenByPush).
  const tokenByPush = { ca, method: 'POST', body: JSON.stringify({ pn_provider: 'fcm', pn_param: 'linhome-project', pn_prid: 'a-device-token' }), headers: { 'Content-Type': 'application/json', Accept: 'application/json', From: 'sip:directrice@example.test' } };
  t.equal((await get(`${base}/api/account_creation_tokens/send-by-push`, tokenByPush)).status, 401, 'FlexiAPI: digest first');
  const flexi = await digestGet(`${base}/api/account_creation_tokens/send-by-push`, 'directrice', password, tokenByPush);
  t.equal(flexi.status, 404, 'no token by push: liblinphone reports an error, Linhome a failed push gateway');
  t.match(flexi.headers['content-type'], /^application\/json/);
  t.match(JSON.parse(flexi.body), { message: /no push gateway account/ }, "FlexiAPI's error shape");
  for (const p of ['/api/accounts/with-account-creation-token', '/api/accounts/me/provision', '/api/provisioning/abc', '/api', '/api/accounts/me?x=1']) {
    t.equal((await digestGet(`${base}${p}`, 'directrice', password, { ca })).status, 404, p);
  }
  t.equal((await get(`${base}/apix`, { ca })).status, 404, 'not under /api/');

  // The same answer for an unknown user and for a wrong password.
  const wrong = await digestGet(xmlrpc, 'directrice', 'not-the-password', post);
  const unknown = await digestGet(xmlrpc, 'nobody', 'not-the-password', post);
  t.equal(wrong.status, 401);
  t.equal(unknown.status, 401);
  t.equal(wrong.body, unknown.body);
  t.same(headerValues(wrong, 'www-authenticate').map((v) => v.replace(/nonce="[^"]+"/, '')), headerValues(unknown, 'www-authenticate').map((v) => v.replace(/nonce="[^"]+"/, '')));

  // Bodies are limited: a declared length before anything else, a chunked body while it is read.
  const big = await get(xmlrpc, { ...post, body: 'x'.repeat(MAX_REQUEST_BODY + 1) });
  t.equal(big.status, 413, 'an oversized Content-Length is refused before authentication');
  t.equal(big.headers.connection, 'close');
  const chunked = await digestChunked(xmlrpc, password, ca, MAX_REQUEST_BODY + 4096);
  t.match(chunked, /^HTTP\/1\.1 413 /, 'a chunked body is cut at the limit');

  // Wrong answers count with the same limiter as /config and /contacts/vcard: 2 + 8 more, then 429.
  for (let i = 0; i < 8; i++) await digestGet(i % 2 === 0 ? `${base}/contacts/vcard` : xmlrpc, 'directrice', 'guess', i % 2 === 0 ? { ca } : post);
  const banned = await digestGet(xmlrpc, 'directrice', password, post);
  t.equal(banned.status, 429, 'rate-limited after 10 wrong answers from one address');

  const all = logs.join('');
  t.match(all, /"aor":"directrice@example\.test","path":"\/xmlrpc".*"method":"create_push_account","result":"ERROR_PUSH_GATEWAY_DISABLED","msg":"provisioning: XML-RPC call refused/);
  t.match(all, /"method":"delete_account","faultCode":-32601/);
  t.match(all, /"path":"\/api\/account_creation_tokens\/…".*"msg":"provisioning: FlexiAPI request refused/, 'FlexiAPI paths logged without what may be a token');
  t.notMatch(all, /\/api\/provisioning\/abc/);
  t.notMatch(all, new RegExp(password), 'the password is never logged');
});

/** A digest-authenticated POST /xmlrpc whose body is sent chunked, `size` bytes; returns the raw response. */
async function digestChunked(url: string, password: string, ca: string, size: number): Promise<string> {
  const u = new URL(url);
  const first = await get(url, { ca, method: 'POST', body: '', headers: { 'Content-Type': 'text/xml' } });
  const auth = digestAuthorization(headerValues(first, 'www-authenticate'), { user: 'directrice', password, method: 'POST', uri: u.pathname });
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: Number(u.port), servername: 'localhost', ca }, () => {
      s.write(`POST ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\nAuthorization: ${auth}\r\n\r\n`);
      const chunk = 'x'.repeat(1024);
      for (let sent = 0; sent < size; sent += chunk.length) s.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
    });
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('close', () => resolve(got));
    s.on('error', (err) => (got === '' ? reject(err) : resolve(got)));
    s.setTimeout(10_000, () => s.destroy());
  });
}

t.test('push-gateway: vendor leaves the app its factory settings', async (t) => {
  const dir = t.testdir();
  const port = await freeTcpPort();
  const path = writeProvisioningConfig(dir, { baseUrl: `http://127.0.0.1:${port}`, listen: `127.0.0.1:${port}` });
  writeFileSync(path, readFileSync(path, 'utf8').replace('  token-ttl: 1h\n', '  token-ttl: 1h\n  push-gateway: vendor\n'));
  const config = loadConfig(path);
  t.equal(config.provisioning?.pushGateway, 'vendor');
  const r = recorder();
  t.equal(await runCli(['provision', 'gardien@example.test', '--config', path], r.io), 0, r.err());
  let accounts: Accounts = loadUsersFile(config.auth!.users).accounts;
  const srv = new ProvisioningServer({ config: () => config, accounts: () => accounts, usersChanged: () => (accounts = loadUsersFile(config.auth!.users).accounts), log: { info() {}, warn() {} } });
  await srv.start();
  t.teardown(() => srv.close());
  const c = parseLpConfig((await get(/^(http:\/\/\S+\/p\/\S+)$/m.exec(r.out())![1])).body);
  for (const section of ['app', 'assistant', 'account_creator']) t.notOk(section in c, `no ${section} section`);
  t.ok('proxy_0' in c && 'auth_info_0' in c, 'the account itself is provisioned as before');
});

// ------------------------------------------------------------ liblinphone itself

const LIBLINPHONE = '/usr/lib/x86_64-linux-gnu/liblinphone.so.10';
const noClient =
  opensslMissing() ??
  (spawnSync('gcc', ['--version']).error !== undefined ? 'gcc is not installed' : !existsSync(LIBLINPHONE) ? `${LIBLINPHONE} is missing (Debian: liblinphone10)` : false);

t.test("liblinphone 5.1, provisioned by Portier, asks Portier's account manager and is refused", { skip: noClient, timeout: 90_000 }, async (t) => {
  const s = await startProvisionedPortier(t, { turn: false });
  const bin = join(s.dir, 'liblinphone-client');
  const cc = spawnSync('gcc', ['-Wall', '-o', bin, join(import.meta.dirname, 'liblinphone-client.c'), LIBLINPHONE], { encoding: 'utf8' });
  t.equal(cc.status, 0, cc.stderr);
  const { home, rc } = provisioningRc(s.dir, s.caCert, s.url, 'client');
  // Not spawnSync: that would block the event loop serving Portier.
  const out = await run(bin, [rc, 'sip.linhome.org'], home);
  const facts = Object.fromEntries(out.split('\n').filter((l) => /^[a-z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  if (facts.done !== 'yes') t.comment(`client output:\n${out.slice(-4000)}\nPortier:\n${s.logs.join('').slice(-3000)}`);
  t.equal(facts.provisioned, 'yes', 'the core applied the XML fetched from the link');
  t.equal(facts.auto_create_push_gateway_account, '0');
  t.equal(facts.xmlrpc_url, `${s.baseUrl}/xmlrpc`);
  t.equal(facts.account_creator_url, `${s.baseUrl}/api/`);
  // The request liblinphone built is the one the unit test reconstructs.
  const sent = parseMethodCall(facts.xmlrpc_request.replace(/\\n/g, '\n'));
  t.equal(sent.method, 'create_push_account');
  t.same(sent.params.slice(1), [{ type: 'string', value: 'sip.linhome.org' }, { type: 'string', value: 'SHA-256' }], 'after the user agent, as the unit test above reconstructs it');
  t.same(reply(facts.xmlrpc_response.replace(/\\n/g, '\n')), { result: PUSH_ACCOUNT_REFUSED }, "Portier's answer, after liblinphone answered the digest challenge");
  t.equal(facts.xmlrpc_status, '2', 'LinphoneXmlRpcStatusFailed: Linhome says "failed creating push gateway", and goes on with its account');
  t.equal(facts.fault_status, '1', 'a fault to a string-struct request: LinphoneXmlRpcStatusOk (why create_push_account is not answered with one)');
  t.equal(facts.fault_list, 'empty', 'with an empty list, which Linhome would index');
  t.equal(facts.flexiapi_sent, '0', 'the FlexiAPI request was sent');
  t.not(facts.flexiapi_status, '-1', 'and answered');
  t.not(facts.flexiapi_status, '0', 'not with success');
  const logs = s.logs.join('');
  t.match(logs, /"aor":"directrice@example\.test","path":"\/xmlrpc".*"result":"ERROR_PUSH_GATEWAY_DISABLED"/, 'authenticated as the provisioned account');
  t.match(logs, /"aor":"directrice@example\.test","path":"\/api\/[^"]*".*"method":"POST".*FlexiAPI request refused/);
  // 5.1's FlexiAPIClient::sendToken posts to `tokens`; later ones to account_creation_tokens/send-by-push.
  t.match(/"path":"(\/api\/[^"]*)"/.exec(logs)?.[1], /^\/api\/(tokens|account_creation_tokens\/…)$/, 'the token-by-push request');
});

/** Runs `bin` in `cwd` (HOME too) and resolves with its stdout and stderr, killed after 60 s. */
function run(bin: string, args: string[], cwd: string): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(bin, args, { cwd, env: { ...process.env, HOME: cwd, LANG: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}
