// The `push:` configuration section: defaults, files resolved against the
// configuration file's directory and checked at load, URL rules, APNs
// authentication forms, and the round trip through `portier check`.

import t from 'tap';
import { join } from 'node:path';
import { ConfigError, formatConfig, loadConfig, parseConfig } from '../../src/config/index.js';
import { MIN } from '../config/helpers.js';
import { writeFileSync } from 'node:fs';
import { makeKeys } from './helpers.js';
import { makeTestCerts, opensslMissing } from '../helpers/certs.js';

const keys = makeKeys();
const SA = JSON.stringify({
  type: 'service_account',
  project_id: 'p1',
  private_key: keys.rsaPem,
  client_email: 'x@p1.iam.gserviceaccount.com',
  token_uri: 'https://oauth2.googleapis.com/token',
});

function problems(text: string, dir?: string): string {
  try {
    if (dir === undefined) parseConfig(text, 'conf/x.yaml');
    else {
      writeFileSync(join(dir, 'portier.yaml'), text);
      loadConfig(join(dir, 'portier.yaml'));
    }
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  return '(accepted)';
}

t.test('no push section: the defaults, no providers', async (t) => {
  const c = parseConfig(MIN, 'conf/x.yaml');
  t.same(c.push, { callTimeout: 30, response: 180, registerWakeup: null, ca: null, fcm: null, apns: null, generic: null });
  t.ok(Object.isFrozen(c.push));
});

// The CA and the APNs client certificate come from the openssl CLI.
t.test('every key, files relative to the configuration file', { skip: opensslMissing() ?? false }, async (t) => {
  const dir = t.testdir({ 'sa.json': SA, 'AuthKey.p8': keys.ecPem, push: { 'ca.pem': '' } });
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  writeFileSync(join(dir, 'push', 'ca.pem'), certs.caCert);
  writeFileSync(
    join(dir, 'portier.yaml'),
    `${MIN}push:
  call-timeout: 45
  response: 110
  register-wakeup: 30m
  ca: push/ca.pem
  fcm: {service-account: sa.json, endpoint: "https://fcm.example.test"}
  apns: {key: AuthKey.p8, key-id: ABC123DEFG, team-id: DEF123GHIJ, production: false}
  generic: {url: "https://ntfy.example.test/$token?from=$from-uri", method: put, body: '{"m": "$from-name"}'}
`,
  );
  const c = loadConfig(join(dir, 'portier.yaml'));
  t.same(c.push, {
    callTimeout: 45,
    response: 110,
    registerWakeup: 1800,
    ca: join(dir, 'push', 'ca.pem'),
    fcm: { serviceAccount: join(dir, 'sa.json'), endpoint: 'https://fcm.example.test' },
    apns: { key: join(dir, 'AuthKey.p8'), keyId: 'ABC123DEFG', teamId: 'DEF123GHIJ', cert: null, production: false, endpoint: null },
    generic: { url: 'https://ntfy.example.test/$token?from=$from-uri', method: 'PUT', body: '{"m": "$from-name"}' },
  });
  const again = parseConfig(formatConfig(c), c.source);
  t.same(again.push, c.push, 'formatConfig round-trips the push section');
  t.match(formatConfig(c), /register-wakeup: 30m/);

  // Certificate authentication instead of a .p8 key.
  writeFileSync(join(dir, 'portier.yaml'), `${MIN}push:\n  apns: {cert: ${certs.paths.clientCert}, key: ${certs.paths.clientKey}}\n`);
  t.match(loadConfig(join(dir, 'portier.yaml')).push.apns, { cert: certs.paths.clientCert, key: certs.paths.clientKey, keyId: null, teamId: null, production: true });
  t.match(problems(`${MIN}push:\n  apns: {cert: ${certs.paths.clientCert}, key: ${certs.paths.serverKey}}\n`, dir), /push\.apns\.key: .*is not the private key of/);
});

t.test('missing or wrong files are refused at load, naming the key', async (t) => {
  const dir = t.testdir({ 'sa.json': SA, 'bad.json': '{"project_id": "p"}', 'rsa.p8': keys.rsaPem, 'notjson.json': 'hello' });
  t.match(problems(`${MIN}push: {fcm: {service-account: nowhere.json}}\n`, dir), new RegExp(`push\\.fcm\\.service-account: cannot read ${join(dir, 'nowhere.json')}`));
  t.match(problems(`${MIN}push: {fcm: {service-account: bad.json}}\n`, dir), /push\.fcm\.service-account: .*bad\.json: client_email is missing/);
  t.match(problems(`${MIN}push: {fcm: {service-account: notjson.json}}\n`, dir), /push\.fcm\.service-account: .*not JSON/);
  t.match(problems(`${MIN}push: {apns: {key: rsa.p8, key-id: K1, team-id: T1}}\n`, dir), /push\.apns\.key: .*an EC P-256 private key is needed, not rsa/);
  t.match(problems(`${MIN}push: {ca: sa.json}\n`, dir), /push\.ca: /);
  t.match(problems(`${MIN}push: {fcm: {}}\n`), /push\.fcm\.service-account: required/);
});

t.test('URLs: https, http only to loopback, APNs endpoint without a path', async (t) => {
  const dir = t.testdir({ 'sa.json': SA });
  t.match(problems(`${MIN}push: {fcm: {service-account: sa.json, endpoint: "http://fcm.example.test"}}\n`, dir), /push\.fcm\.endpoint: must be an https:\/\/ URL \(http:\/\/ only to a loopback address\)/);
  t.equal(problems(`${MIN}push: {fcm: {service-account: sa.json, endpoint: "http://127.0.0.1:8080"}}\n`, dir), '(accepted)');
  t.equal(problems(`${MIN}push: {generic: {url: "http://localhost:2586/door?c=$call-id"}}\n`), '(accepted)');
  t.match(problems(`${MIN}push: {generic: {url: "http://192.0.2.9/$token"}}\n`), /push\.generic\.url: must be an https/);
  t.match(problems(`${MIN}push: {generic: {url: "not a url"}}\n`), /push\.generic\.url: "not a url" is not a URL/);
  t.match(problems(`${MIN}push: {generic: {}}\n`), /push\.generic\.url: required \(e\.g\. url: https:\/\/ntfy/);
  t.match(problems(`${MIN}push: {generic: {url: "https://h/$token", method: DELETE}}\n`), /push\.generic\.method: must be one of GET, POST or PUT/);
  const p8 = t.testdir({ 'k.p8': keys.ecPem });
  t.match(problems(`${MIN}push: {apns: {key: k.p8, key-id: K, team-id: T, endpoint: "https://apns.example.test/3"}}\n`, p8), /push\.apns\.endpoint: must be scheme:\/\/host\[:port\] without a path/);
});

t.test('APNs: token authentication needs key-id and team-id; a certificate takes neither', async (t) => {
  t.match(problems(`${MIN}push: {apns: {key: k.p8}}\n`), /push\.apns\.key-id: required for token authentication/);
  t.match(problems(`${MIN}push: {apns: {key: k.p8, key-id: K}}\n`), /push\.apns\.team-id: required/);
  t.match(problems(`${MIN}push: {apns: {key: k.pem, cert: c.pem, team-id: T}}\n`), /push\.apns\.team-id: only for token authentication/);
  t.match(problems(`${MIN}push: {apns: {key: k.p8, key-id: "AB-12", team-id: T}}\n`), /push\.apns\.key-id: must be letters and digits/);
});

t.test('other values', async (t) => {
  t.match(problems(`${MIN}push: {response: 183}\n`), /push\.response: must be 110 or 180/);
  t.equal(parseConfig(`${MIN}push: {response: "110"}\n`, 'x').push.response, 110);
  t.match(problems(`${MIN}push: {register-wakeup: 10s}\n`), /push\.register-wakeup: must be off or a duration from 1m to 24h/);
  t.equal(parseConfig(`${MIN}push: {register-wakeup: 2h}\n`, 'x').push.registerWakeup, 7200);
  t.equal(parseConfig(`${MIN}push: {register-wakeup: 90s}\n`, 'x').push.registerWakeup, 90);
  t.equal(parseConfig(`${MIN}push: {register-wakeup: 'off'}\n`, 'x').push.registerWakeup, null);
  t.match(problems(`${MIN}push: {call-timeout: 0}\n`), /push\.call-timeout: must be an integer between 1 and 600/);
  t.match(problems(`${MIN}push: {call-timout: 20}\n`), /push\.call-timout: unknown key \(did you mean "call-timeout"\?\)/);
  t.same(parseConfig(`${MIN}push:\n`, 'x').push.fcm, null, 'an empty section is the defaults');
});
