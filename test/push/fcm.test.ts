// FCM HTTP v1 against local stand-ins for Google's OAuth token endpoint and
// the FCM send API, over real TLS: each request is checked as Google would
// (RS256 assertion signed by the service account's key, grant type, scope,
// audience; bearer token, project path, data message fields).

import t, { type Test } from 'tap';
import { PushService, type PushRequest, type UnregisteredEvent } from '../../src/push/index.js';
import { JWT_BEARER_GRANT, FCM_SCOPE } from '../../src/push/fcm.js';
import { makeTestCerts, opensslMissing, type TestCerts } from '../helpers/certs.js';
import {
  CALL,
  CLIENT_EMAIL,
  FastClock,
  ManualClock,
  NO_PUSH,
  PROJECT,
  checkJwt,
  makeKeys,
  startProvider,
  target,
  writeServiceAccount,
  type FakeProvider,
  type Handler,
  type Recorded,
  type Reply,
  type TestKeys,
} from './helpers.js';

const missing = opensslMissing();
if (missing) t.plan(0, missing);

const certs: TestCerts = missing ? (null as unknown as TestCerts) : makeTestCerts();
t.teardown(() => certs?.remove());
const keys: TestKeys = makeKeys();
const TOKEN = 'fVh3xA1bQ0e:APA91bHq_example-registration-token-0123456789';

interface Google {
  oauth: FakeProvider;
  fcm: FakeProvider;
  issued: string[];
  /** Problems found in the requests, as Google would refuse them. */
  problems: string[];
  sends: () => Recorded[];
}

/** Google's token endpoint and FCM, checking every request; `send` decides FCM's answers (default 200). */
async function google(t: Test, send?: Handler): Promise<Google> {
  const issued: string[] = [];
  const problems: string[] = [];
  let tokenUri = '';
  const oauth = await startProvider(t, certs, (r): Reply => {
    const form = new URLSearchParams(r.body);
    if (r.method !== 'POST' || r.path !== '/token') problems.push(`token: ${r.method} ${r.path}`);
    if (r.headers['content-type'] !== 'application/x-www-form-urlencoded') problems.push(`token content-type ${r.headers['content-type']}`);
    if (form.get('grant_type') !== JWT_BEARER_GRANT) problems.push(`grant_type ${form.get('grant_type')}`);
    const jwt = checkJwt(form.get('assertion') ?? '..', 'RS256', keys.rsaPublic);
    if (!jwt.valid) problems.push('assertion signature');
    const c = jwt.claims;
    if (c.iss !== CLIENT_EMAIL || c.scope !== FCM_SCOPE || c.aud !== tokenUri) problems.push(`claims ${JSON.stringify(c)}`);
    if (typeof c.iat !== 'number' || c.exp !== c.iat + 3600) problems.push('iat/exp');
    if (jwt.header.kid !== 'a1b2c3d4e5' || jwt.header.typ !== 'JWT') problems.push(`header ${JSON.stringify(jwt.header)}`);
    if (problems.length > 0) return { status: 400, body: { error: 'invalid_grant' } };
    const token = `ya29.test-${issued.length + 1}`;
    issued.push(token);
    return { status: 200, body: { access_token: token, expires_in: 3599, token_type: 'Bearer' } };
  });
  tokenUri = `${oauth.origin}/token`;
  const fcm = await startProvider(t, certs, (r): Reply | Promise<Reply> => {
    if (r.httpVersion !== '2.0') problems.push(`FCM over HTTP/${r.httpVersion}`);
    if (r.method !== 'POST' || r.path !== `/v1/projects/${PROJECT}/messages:send`) problems.push(`send: ${r.method} ${r.path}`);
    const bearer = /^Bearer (.+)$/.exec(String(r.headers.authorization ?? ''))?.[1];
    if (bearer === undefined || !issued.includes(bearer)) {
      return { status: 401, body: { error: { code: 401, message: 'Request had invalid authentication credentials.', status: 'UNAUTHENTICATED' } } };
    }
    return send ? send(r) : { status: 200, body: { name: `projects/${PROJECT}/messages/0:1` } };
  });
  return { oauth, fcm, issued, problems, sends: () => fcm.requests };
}

function service(t: Test, g: Google, o: { clock?: FastClock | ManualClock; onUnregistered?: (e: UnregisteredEvent) => void; withCa?: boolean } = {}) {
  const dir = t.testdir({});
  const file = writeServiceAccount(dir, keys, `${g.oauth.origin}/token`);
  const s = new PushService(
    { ...NO_PUSH, ca: o.withCa === false ? null : certs.paths.caCert, fcm: { serviceAccount: file, endpoint: g.fcm.origin } },
    { clock: o.clock ?? new FastClock(), onUnregistered: o.onUnregistered, requestTimeoutMs: 3000 },
  );
  t.teardown(() => s.close());
  return s;
}

const android = target({ provider: 'fcm', token: TOKEN, param: '929724111839', appId: '929724111839' });
const callReq = (over: Partial<PushRequest> = {}): PushRequest => ({ ...CALL, target: android, kind: 'call', ...over });

t.test('a call push: token from the service account, data message as FCM v1 wants it', async (t) => {
  const g = await google(t);
  const s = service(t, g);
  const out = await s.send(callReq());
  t.same(out, { result: 'sent', status: 200, provider: 'fcm' });
  t.same(g.problems, []);
  t.equal(g.issued.length, 1);
  const r = g.sends()[0];
  t.equal(r.headers.authorization, `Bearer ${g.issued[0]}`);
  t.match(r.headers['content-type'], /^application\/json/);
  const body = JSON.parse(r.body) as { message: { token: string; data: Record<string, unknown>; android: Record<string, unknown>; notification?: unknown } };
  t.equal(body.message.token, TOKEN);
  t.same(body.message.android, { priority: 'high', ttl: '30s' }, 'high priority, ttl = call-timeout');
  t.notOk('notification' in body.message, 'a data message: the app wakes up and registers');
  const d = body.message.data;
  t.equal(d['call-id'], CALL.callId);
  t.equal(d.uuid, 'urn:uuid:0a1b2c3d-1111-2222-3333-444455556666', 'the +sip.instance without brackets');
  t.equal(d['from-uri'], CALL.fromUri);
  t.equal(d['display-name'], CALL.fromName);
  t.equal(d['loc-key'], 'IC_MSG');
  t.equal(d.type, 'call');
  t.match(d['send-time'], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.ok(Object.values(d).every((v) => typeof v === 'string'), 'FCM data values are all strings');
});

t.test('one token and one HTTP/2 session for many pushes, sent at once', async (t) => {
  const g = await google(t);
  const s = service(t, g);
  const outs = await Promise.all(Array.from({ length: 5 }, (_, i) => s.send(callReq({ callId: `call-${i}` }))));
  t.ok(outs.every((o) => o.result === 'sent'));
  const more = await s.send(callReq({ kind: 'message' }));
  t.equal(more.result, 'sent');
  t.equal(g.oauth.requests.length, 1, 'one token request, shared by concurrent sends');
  t.equal(s.fcmTokenRequests, 1);
  t.equal(g.fcm.connections(), 1, 'one TLS connection to FCM');
  t.equal(new Set(g.sends().map((r) => r.connection)).size, 1, 'every push on it');
  t.same(g.problems, []);
});

t.test('the token is renewed shortly before it expires, not after every push', async (t) => {
  const g = await google(t);
  const clock = new ManualClock();
  const s = service(t, g, { clock });
  t.equal((await s.send(callReq())).result, 'sent');
  clock.time += 3000 * 1000;
  t.equal((await s.send(callReq())).result, 'sent');
  t.equal(g.oauth.requests.length, 1, 'still valid after 50 minutes');
  clock.time += 400 * 1000;
  t.equal((await s.send(callReq())).result, 'sent');
  t.equal(g.oauth.requests.length, 2, 'renewed within five minutes of expiry');
  t.equal(g.sends()[2].headers.authorization, `Bearer ${g.issued[1]}`);
});

t.test('401: the token is refreshed once and the push sent again', async (t) => {
  let first = true;
  const g = await google(t, () => {
    if (first) {
      first = false;
      return { status: 401, body: { error: { code: 401, status: 'UNAUTHENTICATED', message: 'expired' } } };
    }
    return { status: 200, body: {} };
  });
  const s = service(t, g);
  t.equal((await s.send(callReq())).result, 'sent');
  t.equal(g.oauth.requests.length, 2, 'a second token');
  t.equal(g.sends()[1].headers.authorization, `Bearer ${g.issued[1]}`);
});

t.test('503 then 200: retried after the back-off, and sent', async (t) => {
  let n = 0;
  const g = await google(t, () => (++n === 1 ? { status: 503, body: { error: { code: 503, status: 'UNAVAILABLE' } } } : { status: 200, body: {} }));
  const clock = new FastClock();
  const s = service(t, g, { clock });
  t.same(await s.send(callReq()), { result: 'sent', status: 200, provider: 'fcm' });
  t.equal(g.sends().length, 2);
  t.same(clock.delays, [500], 'the first back-off');
  t.same(s.stats().outcomes, [{ provider: 'fcm', result: 'sent', reason: '', count: 1 }]);
});

t.test('429 with Retry-After: waits what FCM asks', async (t) => {
  let n = 0;
  const g = await google(t, () =>
    ++n === 1 ? { status: 429, headers: { 'retry-after': '7' }, body: { error: { code: 429, status: 'RESOURCE_EXHAUSTED', details: [{ errorCode: 'QUOTA_EXCEEDED' }] } } } : { status: 200, body: {} },
  );
  const clock = new FastClock();
  const s = service(t, g, { clock });
  t.equal((await s.send(callReq())).result, 'sent');
  t.same(clock.delays, [7000]);
});

t.test('5xx every time: bounded tries, then failed and counted', async (t) => {
  const g = await google(t, () => ({ status: 500, body: { error: { code: 500, status: 'INTERNAL' } } }));
  const clock = new FastClock();
  const s = service(t, g, { clock });
  const out = await s.send(callReq());
  t.match(out, { result: 'failed', reason: 'server-error', status: 500 });
  t.equal(g.sends().length, 3, 'three tries in all');
  t.same(clock.delays, [500, 1000], 'exponential back-off');
  t.same(s.stats().outcomes, [{ provider: 'fcm', result: 'failed', reason: 'server-error', count: 1 }]);
});

t.test('404 UNREGISTERED: unregistered, and the registrar is told which binding', async (t) => {
  const g = await google(t, () => ({
    status: 404,
    body: { error: { code: 404, message: 'Requested entity was not found.', status: 'NOT_FOUND', details: [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode: 'UNREGISTERED' }] } },
  }));
  const events: UnregisteredEvent[] = [];
  const s = service(t, g, { onUnregistered: (e) => events.push(e) });
  const out = await s.send(callReq({ binding: { aor: 'sip:alice@school.example.test', key: 'i:urn:uuid:0a1b|1' } }));
  t.match(out, { result: 'unregistered', reason: 'UNREGISTERED', status: 404 });
  t.equal(g.sends().length, 1, 'not retried');
  t.equal(events.length, 1);
  t.same(events[0].binding, { aor: 'sip:alice@school.example.test', key: 'i:urn:uuid:0a1b|1' });
  t.equal(events[0].provider, 'fcm');
  t.equal(events[0].target.token, TOKEN);
});

t.test('400 INVALID_ARGUMENT on the token: unregistered; on anything else: failed', async (t) => {
  let bad = 'token';
  const g = await google(t, () => ({
    status: 400,
    body: {
      error: {
        code: 400,
        message: bad === 'token' ? 'The registration token is not a valid FCM registration token' : 'Invalid value at message.android.ttl',
        status: 'INVALID_ARGUMENT',
        details: [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode: 'INVALID_ARGUMENT' }],
      },
    },
  }));
  const events: UnregisteredEvent[] = [];
  const s = service(t, g, { onUnregistered: (e) => events.push(e) });
  t.match(await s.send(callReq()), { result: 'unregistered', reason: 'INVALID_ARGUMENT' });
  bad = 'ttl';
  t.match(await s.send(callReq()), { result: 'failed', reason: 'rejected', status: 400 });
  t.equal(events.length, 1, 'a bad request is not a dead token');
});

t.test('FCM down (port closed): failed at once, counted', async (t) => {
  const g = await google(t);
  const dir = t.testdir({});
  const file = writeServiceAccount(dir, keys, `${g.oauth.origin}/token`);
  const down = g.fcm.port;
  await g.fcm.close();
  const clock = new FastClock();
  const s = new PushService({ ...NO_PUSH, ca: certs.paths.caCert, fcm: { serviceAccount: file, endpoint: `https://127.0.0.1:${down}` } }, { clock });
  t.teardown(() => s.close());
  const out = await s.send(callReq());
  t.match(out, { result: 'failed', reason: 'unreachable' });
  t.same(clock.delays, [], 'no retry against a closed port');
  t.same(s.stats().outcomes, [{ provider: 'fcm', result: 'failed', reason: 'unreachable', count: 1 }]);
});

t.test('token endpoint down or refusing: failed, with the reason', async (t) => {
  const g = await google(t);
  const dir = t.testdir({});
  await g.oauth.close();
  const file = writeServiceAccount(dir, keys, `${g.oauth.origin}/token`);
  const s = new PushService({ ...NO_PUSH, ca: certs.paths.caCert, fcm: { serviceAccount: file, endpoint: g.fcm.origin } }, { clock: new FastClock() });
  t.teardown(() => s.close());
  t.match(await s.send(callReq()), { result: 'failed', reason: 'unreachable' });
  t.equal(g.sends().length, 0);

  const other = makeKeys();
  const g2 = await google(t);
  const dir2 = t.testdir({});
  // Signed with a key Google does not know: invalid_grant.
  const file2 = writeServiceAccount(dir2, other, `${g2.oauth.origin}/token`);
  const s2 = new PushService({ ...NO_PUSH, ca: certs.paths.caCert, fcm: { serviceAccount: file2, endpoint: g2.fcm.origin } }, { clock: new FastClock() });
  t.teardown(() => s2.close());
  t.match(await s2.send(callReq()), { result: 'failed', reason: 'auth' });
  t.same(g2.problems, ['assertion signature'], 'the stand-in really checks the signature');
});

t.test('a certificate nobody trusts: failed (verification stays on)', async (t) => {
  const g = await google(t);
  const s = service(t, g, { withCa: false });
  const out = await s.send(callReq());
  t.match(out, { result: 'failed', reason: 'tls' });
  t.equal(g.oauth.requests.length + g.sends().length, 0, 'nothing reached the servers');
});

t.test('a GOAWAY from FCM: the next push opens a new session', async (t) => {
  const g = await google(t);
  const s = service(t, g);
  t.equal((await s.send(callReq())).result, 'sent');
  t.equal(g.fcm.sessions.size, 1);
  for (const sess of g.fcm.sessions) sess.goaway();
  t.equal((await s.send(callReq())).result, 'sent');
  t.equal(g.fcm.connections(), 2, 'a second connection after GOAWAY');
  t.equal(g.sends()[1].connection, 2);
});
