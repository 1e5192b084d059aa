// APNs against a local HTTP/2 server over real TLS that checks each request
// as Apple does: /3/device/TOKEN, the provider token (ES256, verified with
// the test key, kid and iss), apns-topic, apns-push-type, apns-priority,
// apns-expiration, apns-id, and the payload; or a client certificate.

import t, { type Test } from 'tap';
import { PushService, type PushRequest, type UnregisteredEvent } from '../../src/push/index.js';
import { APNS_PRODUCTION, APNS_SANDBOX, apnsOrigin } from '../../src/push/apns.js';
import type { PushConfig } from '../../src/config/types.js';
import { makeTestCerts, opensslMissing, type TestCerts } from '../helpers/certs.js';
import { until } from '../helpers/wait.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CALL, FastClock, ManualClock, NO_PUSH, checkJwt, makeKeys, startProvider, target, type FakeProvider, type Handler, type Recorded, type Reply } from './helpers.js';

const missing = opensslMissing();
if (missing) t.plan(0, missing);

const certs: TestCerts = missing ? (null as unknown as TestCerts) : makeTestCerts();
t.teardown(() => certs?.remove());
const keys = makeKeys();
const KEY_ID = 'ABC123DEFG';
const TEAM_ID = 'DEF123GHIJ';
const BUNDLE = 'org.linhome.app';
const VOIP_TOKEN = 'a'.repeat(64);
const REMOTE_TOKEN = 'b'.repeat(64);

/** A Linhome-style device: alert pushes only, repeated every 3 s. */
const linhome = target({ provider: 'apns', token: REMOTE_TOKEN, voipToken: null, param: `${TEAM_ID}.${BUNDLE}.remote`, appId: BUNDLE, teamId: TEAM_ID, remotePushInterval: 3 });
/** A Linphone-style device with both tokens. */
const linphone = target({ provider: 'apns', token: REMOTE_TOKEN, voipToken: VOIP_TOKEN, param: `${TEAM_ID}.${BUNDLE}.voip&remote`, appId: BUNDLE, teamId: TEAM_ID, callSound: 'notes_of_the_optimistic.caf' });

interface Apple {
  server: FakeProvider;
  problems: string[];
  jwts: string[];
  reqs: () => Recorded[];
  bodies: () => Array<Record<string, any>>;
}

/** Apple's provider API: checks what every request must have; `reply` decides the answer (default 200). */
async function apple(t: Test, reply?: Handler, o: { certificate?: boolean } = {}): Promise<Apple> {
  const problems: string[] = [];
  const jwts: string[] = [];
  const server = await startProvider(
    t,
    certs,
    (r): Reply | Promise<Reply> => {
      const h = r.headers;
      const m = /^\/3\/device\/([0-9a-f]{64})$/.exec(r.path);
      if (r.httpVersion !== '2.0' || r.method !== 'POST' || !m) problems.push(`${r.httpVersion} ${r.method} ${r.path}`);
      const type = String(h['apns-push-type']);
      if (!['voip', 'alert', 'background'].includes(type)) problems.push(`apns-push-type ${type}`);
      const topic = String(h['apns-topic']);
      if (topic !== (type === 'voip' ? `${BUNDLE}.voip` : BUNDLE)) problems.push(`apns-topic ${topic} for ${type}`);
      if (h['apns-priority'] !== (type === 'background' ? '5' : '10')) problems.push(`apns-priority ${h['apns-priority']} for ${type}`);
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i.test(String(h['apns-id']))) problems.push(`apns-id ${h['apns-id']}`);
      if (!/^\d+$/.test(String(h['apns-expiration']))) problems.push(`apns-expiration ${h['apns-expiration']}`);
      if (o.certificate) {
        if (h.authorization !== undefined) problems.push('authorization header with certificate authentication');
        if (r.clientCert !== 'door-station') problems.push(`client certificate ${r.clientCert}`);
      } else {
        const bearer = /^bearer (.+)$/.exec(String(h.authorization ?? ''))?.[1];
        if (bearer === undefined) return { status: 403, body: { reason: 'MissingProviderToken' } };
        const jwt = checkJwt(bearer, 'ES256', keys.ecPublic);
        if (!jwt.valid || jwt.header.kid !== KEY_ID || jwt.claims.iss !== TEAM_ID || typeof jwt.claims.iat !== 'number') {
          return { status: 403, body: { reason: 'InvalidProviderToken' } };
        }
        jwts.push(bearer);
      }
      let body: Record<string, any> = {};
      try {
        body = JSON.parse(r.body) as Record<string, any>;
      } catch {
        problems.push('payload is not JSON');
      }
      if (typeof body.aps !== 'object') problems.push('no aps dictionary');
      if (Buffer.byteLength(r.body) > (type === 'voip' ? 5120 : 4096)) problems.push('payload too large');
      return reply ? reply(r) : { status: 200, headers: { 'apns-id': String(h['apns-id']) } };
    },
    { requestClientCert: o.certificate },
  );
  return { server, problems, jwts, reqs: () => server.requests, bodies: () => server.requests.map((r) => JSON.parse(r.body) as Record<string, any>) };
}

function tokenConfig(t: Test, a: Apple, over: Partial<PushConfig> = {}): PushConfig {
  const dir = t.testdir({ 'AuthKey.p8': keys.ecPem });
  return {
    ...NO_PUSH,
    ca: certs.paths.caCert,
    apns: { key: join(dir, 'AuthKey.p8'), keyId: KEY_ID, teamId: TEAM_ID, cert: null, production: true, endpoint: a.server.origin },
    ...over,
  };
}

function service(t: Test, cfg: PushConfig, o: { clock?: FastClock | ManualClock; onUnregistered?: (e: UnregisteredEvent) => void } = {}) {
  const s = new PushService(cfg, { clock: o.clock ?? new FastClock(), onUnregistered: o.onUnregistered, requestTimeoutMs: 3000 });
  t.teardown(() => s.close());
  return s;
}

const req = (tg = linphone, over: Partial<PushRequest> = {}): PushRequest => ({ ...CALL, target: tg, kind: 'call', ...over });

t.test('a call to a device with a VoIP token: a PushKit push to the .voip topic', async (t) => {
  const a = await apple(t);
  const clock = new ManualClock();
  const s = service(t, tokenConfig(t, a), { clock });
  t.same(await s.send(req()), { result: 'sent', status: 200, provider: 'apns' });
  t.same(a.problems, []);
  const r = a.reqs()[0];
  t.equal(r.path, `/3/device/${VOIP_TOKEN}`, 'the VoIP token');
  t.equal(r.headers['apns-push-type'], 'voip');
  t.equal(r.headers['apns-topic'], `${BUNDLE}.voip`);
  t.equal(r.headers['apns-expiration'], String(Math.floor(clock.time / 1000) + 30), 'expires when the call stops ringing');
  t.equal(r.headers['apns-collapse-id'], undefined);
  const jwt = checkJwt(a.jwts[0], 'ES256', keys.ecPublic);
  t.same(jwt.header, { alg: 'ES256', typ: 'JWT', kid: KEY_ID });
  t.same(jwt.claims, { iss: TEAM_ID, iat: Math.floor(clock.time / 1000) });
  const b = a.bodies()[0];
  t.equal(b['call-id'], CALL.callId);
  t.equal(b.aps['call-id'], CALL.callId, 'also inside aps, where liblinphone looks');
  t.equal(b.uuid, 'urn:uuid:0a1b2c3d-1111-2222-3333-444455556666');
  t.equal(b['from-uri'], CALL.fromUri);
  t.equal(b['display-name'], CALL.fromName);
  t.notOk('alert' in b.aps);
});

t.test('a call to a remote-only device (Linhome): an alert Linhome\'s extension can rewrite', async (t) => {
  const a = await apple(t);
  const s = service(t, tokenConfig(t, a));
  t.equal((await s.send(req(linhome))).result, 'sent');
  t.same(a.problems, []);
  const r = a.reqs()[0];
  t.equal(r.path, `/3/device/${REMOTE_TOKEN}`);
  t.equal(r.headers['apns-push-type'], 'alert');
  t.equal(r.headers['apns-topic'], BUNDLE);
  t.equal(r.headers['apns-priority'], '10');
  t.equal(r.headers['apns-collapse-id'], CALL.callId, 'repeats replace each other');
  const b = a.bodies()[0];
  t.same(b.aps, { alert: { 'loc-key': 'IC_MSG', 'loc-args': [CALL.fromName] }, sound: 'default', 'mutable-content': 1 });
  t.equal(b['call-id'], CALL.callId);
  t.equal(b.uuid, 'urn:uuid:0a1b2c3d-1111-2222-3333-444455556666');
  t.equal(b['from-uri'], CALL.fromUri);
});

t.test('message → alert on the remote token; wakeup → background at priority 5', async (t) => {
  const a = await apple(t);
  const s = service(t, tokenConfig(t, a));
  t.equal((await s.send(req(linphone, { kind: 'message' }))).result, 'sent');
  t.equal((await s.send(req(linphone, { kind: 'wakeup' }))).result, 'sent');
  t.same(a.problems, []);
  const [msg, wake] = a.reqs();
  t.equal(msg.path, `/3/device/${REMOTE_TOKEN}`, 'a message never goes to PushKit (iOS would demand a call)');
  t.equal(msg.headers['apns-push-type'], 'alert');
  t.equal(a.bodies()[0].aps.alert['loc-key'], 'IM_MSG');
  t.equal(wake.headers['apns-push-type'], 'background');
  t.equal(wake.headers['apns-priority'], '5');
  t.same(a.bodies()[1].aps, { 'content-available': 1 });
  const voipOnly = target({ ...linphone, token: null });
  t.match(await s.send(req(voipOnly, { kind: 'message' })), { result: 'failed', reason: 'no-token' });
  t.equal(a.reqs().length, 2, 'nothing sent without a remote token');
});

t.test('the provider token is reused, then signed again after 40 minutes; one session throughout', async (t) => {
  const a = await apple(t);
  const clock = new ManualClock();
  const s = service(t, tokenConfig(t, a), { clock });
  for (let i = 0; i < 3; i++) t.equal((await s.send(req())).result, 'sent');
  clock.time += 39 * 60 * 1000;
  t.equal((await s.send(req())).result, 'sent');
  t.equal(new Set(a.jwts).size, 1, 'one token for 39 minutes');
  clock.time += 2 * 60 * 1000;
  t.equal((await s.send(req())).result, 'sent');
  t.equal(new Set(a.jwts).size, 2, 'a new one after 40');
  t.equal(checkJwt(a.jwts[4], 'ES256', keys.ecPublic).claims.iat, Math.floor(clock.time / 1000));
  t.equal(a.server.connections(), 1);
});

t.test('410 and 400 BadDeviceToken: unregistered; 400 BadTopic: failed', async (t) => {
  const answers: Reply[] = [
    { status: 410, body: { reason: 'Unregistered', timestamp: 1700000000000 } },
    { status: 400, body: { reason: 'BadDeviceToken' } },
    { status: 400, body: { reason: 'DeviceTokenNotForTopic' } },
    { status: 400, body: { reason: 'BadTopic' } },
  ];
  const a = await apple(t, () => answers.shift()!);
  const events: UnregisteredEvent[] = [];
  const s = service(t, tokenConfig(t, a), { onUnregistered: (e) => events.push(e) });
  t.match(await s.send(req(linhome, { binding: { aor: 'sip:bob@school.example.test', key: 'k1' } })), { result: 'unregistered', reason: 'Unregistered', status: 410 });
  t.match(await s.send(req(linhome)), { result: 'unregistered', reason: 'BadDeviceToken', status: 400 });
  t.match(await s.send(req(linhome)), { result: 'unregistered', reason: 'DeviceTokenNotForTopic' });
  t.match(await s.send(req(linhome)), { result: 'failed', reason: 'rejected', status: 400, detail: 'BadTopic' });
  t.equal(events.length, 3);
  t.same(events[0].binding, { aor: 'sip:bob@school.example.test', key: 'k1' });
  t.equal(a.reqs().length, 4, 'none retried');
  t.same(
    s.stats().outcomes.map((c) => `${c.provider} ${c.result} ${c.reason} ${c.count}`).sort(),
    ['apns failed rejected 1', 'apns unregistered BadDeviceToken 1', 'apns unregistered DeviceTokenNotForTopic 1', 'apns unregistered Unregistered 1'],
  );
});

t.test('503 and 429: retried (Retry-After honoured); a bad provider token is not', async (t) => {
  const answers: Reply[] = [
    { status: 503, body: { reason: 'ServiceUnavailable' } },
    { status: 429, headers: { 'retry-after': '2' }, body: { reason: 'TooManyRequests' } },
    { status: 200 },
  ];
  const a = await apple(t, () => answers.shift() ?? { status: 200 });
  const clock = new FastClock();
  const s = service(t, tokenConfig(t, a), { clock });
  t.equal((await s.send(req())).result, 'sent');
  t.same(clock.delays, [500, 2000]);

  // A key Apple does not know for this key id.
  const cfg = tokenConfig(t, a);
  writeFileSync(cfg.apns!.key, makeKeys().ecPem);
  const s2 = service(t, cfg);
  t.match(await s2.send(req()), { result: 'failed', reason: 'auth', status: 403, detail: 'InvalidProviderToken' });
});

t.test('ExpiredProviderToken: a token at least 20 minutes old is signed again, once', async (t) => {
  let expire = true;
  const a = await apple(t, (): Reply => {
    if (expire) {
      expire = false;
      return { status: 403, body: { reason: 'ExpiredProviderToken' } };
    }
    return { status: 200 };
  });
  const clock = new ManualClock();
  const s = service(t, tokenConfig(t, a), { clock });
  expire = false;
  t.equal((await s.send(req())).result, 'sent');
  clock.time += 25 * 60 * 1000;
  expire = true;
  t.equal((await s.send(req())).result, 'sent');
  t.equal(new Set(a.jwts).size, 2);
});

t.test('certificate-based authentication: the client certificate in TLS, no authorization header', async (t) => {
  const a = await apple(t, undefined, { certificate: true });
  const cfg: PushConfig = {
    ...NO_PUSH,
    ca: certs.paths.caCert,
    apns: { key: certs.paths.clientKey, keyId: null, teamId: null, cert: certs.paths.clientCert, production: true, endpoint: a.server.origin },
  };
  const s = service(t, cfg);
  t.equal((await s.send(req(linhome))).result, 'sent');
  t.equal((await s.send(req(linphone))).result, 'sent');
  t.same(a.problems, []);
  t.equal(a.reqs()[0].clientCert, 'door-station');
});

t.test('sandbox or production: pn-provider apns.dev, production: false, endpoint', async (t) => {
  t.equal(apnsOrigin(linhome, true, null), APNS_PRODUCTION);
  t.equal(apnsOrigin({ ...linhome, sandbox: true }, true, null), APNS_SANDBOX);
  t.equal(apnsOrigin(linhome, false, null), APNS_SANDBOX);
  t.equal(apnsOrigin({ ...linhome, sandbox: true }, true, 'https://127.0.0.1:8443/'), 'https://127.0.0.1:8443');
  t.equal(APNS_PRODUCTION, 'https://api.push.apple.com');
  t.equal(APNS_SANDBOX, 'https://api.sandbox.push.apple.com');
});

t.test('ring() for an alert-only device: repeated every pn-call-remote-push-interval, then a final alert', async (t) => {
  const a = await apple(t);
  const clock = new ManualClock();
  const s = service(t, tokenConfig(t, a), { clock });
  const ring = s.ring(linhome, { ...CALL, binding: { aor: 'sip:alice@school.example.test', key: 'k' } });
  t.equal(ring.mode, 'alert');
  t.equal((await ring.first).result, 'sent');
  t.equal(a.reqs().length, 1, 'the first push at once');
  t.same(clock.pending(), [3000], 'the next in 3 s');
  clock.advance(3000);
  await until(() => a.reqs().length === 2, 'the second push');
  await until(() => clock.pending().length === 1, 'the third scheduled');
  clock.advance(3000);
  // ring.sent counts a push once APNs has answered it, a moment after the server saw it.
  await until(() => ring.sent === 3, 'the third push answered');
  t.equal(a.reqs().length, 3);
  const last = await ring.stop('answered-elsewhere');
  t.match(last, { result: 'sent' });
  t.same(clock.pending(), [], 'no repeat left');
  clock.advance(60_000);
  t.equal(a.reqs().length, 4, 'three call alerts and the final one');
  const final = a.bodies()[3];
  t.equal(final.aps.alert['loc-key'], 'Accepted elsewhere');
  t.equal(final.type, 'call-end');
  t.equal(final['end-reason'], 'answered-elsewhere');
  t.equal(a.reqs()[3].headers['apns-collapse-id'], CALL.callId, 'replaces the ringing alert');
  t.ok(a.bodies().slice(0, 3).every((b) => b.aps.alert['loc-key'] === 'IC_MSG'));
  t.same(a.problems, []);
  t.equal(await ring.stop('missed'), last, 'stop is idempotent');
  t.equal(a.reqs().length, 4);
});

t.test('ring() repeats end by themselves when the call could no longer ring', async (t) => {
  const a = await apple(t);
  const clock = new ManualClock();
  const s = service(t, tokenConfig(t, a), { clock });
  const ring = s.ring(linhome, { ...CALL, ttl: 9 });
  await ring.first;
  for (let i = 2; i <= 4; i++) {
    await until(() => clock.pending().length === 1, `repeat ${i} scheduled`);
    clock.advance(3000);
    await until(() => a.reqs().length === i, `push ${i}`);
  }
  await new Promise((r) => setTimeout(r, 20));
  t.same(clock.pending(), [], 'bounded by the 9 s the call rings: three repeats');
  t.match(await ring.stop('missed'), { result: 'sent' });
  t.equal(a.bodies()[4].aps.alert['loc-key'], 'Missing call');
});

t.test('ring() for a VoIP device: one push, no repeats, no final alert', async (t) => {
  const a = await apple(t);
  const clock = new ManualClock();
  const s = service(t, tokenConfig(t, a), { clock });
  const ring = s.ring({ ...linphone, remotePushInterval: 3 }, CALL);
  t.equal(ring.mode, 'voip');
  t.equal((await ring.first).result, 'sent');
  t.same(clock.pending(), []);
  t.equal(await ring.stop('cancelled'), null, 'the proxy sends INVITE then CANCEL instead');
  t.equal(a.reqs().length, 1);
  t.equal(a.reqs()[0].headers['apns-push-type'], 'voip');
});

t.test('ring() stopped because the device got the INVITE: no final alert; close() ends repeats', async (t) => {
  const a = await apple(t);
  const clock = new ManualClock();
  const s = service(t, tokenConfig(t, a), { clock });
  const r1 = s.ring(linhome, CALL);
  await r1.first;
  t.equal(await r1.stop('delivered'), null);
  t.same(clock.pending(), []);
  const r2 = s.ring(linhome, { ...CALL, callId: 'other' });
  await r2.first;
  t.same(clock.pending(), [3000]);
  s.close();
  t.same(clock.pending(), [], 'close() clears the repeat timers');
  t.equal(await r2.stop('missed'), null, 'nothing sent once closed');
  t.equal(a.reqs().length, 2);
});

t.test('an APNs key that is not P-256 is refused when the service is built', async (t) => {
  const dir = t.testdir({ 'rsa.p8': keys.rsaPem });
  t.throws(
    () => new PushService({ ...NO_PUSH, apns: { key: join(dir, 'rsa.p8'), keyId: KEY_ID, teamId: TEAM_ID, cert: null, production: true, endpoint: null } }),
    /push\.apns\.key: .*rsa\.p8: an EC P-256 private key is needed, not rsa/,
  );
});

t.test('APNs that never answers: failed with reason timeout, not retried', async (t) => {
  const a = await apple(t, () => new Promise<Reply>(() => {}));
  const clock = new FastClock();
  const s = new PushService(tokenConfig(t, a), { clock, requestTimeoutMs: 150 });
  t.teardown(() => s.close());
  t.match(await s.send(req(linhome)), { result: 'failed', reason: 'timeout' });
  t.same(clock.delays, []);
  t.equal(a.reqs().length, 1);
});
