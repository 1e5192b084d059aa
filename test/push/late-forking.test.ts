// Late forking end to end (issue 6): a Linhome app on Android registers
// over TCP with its FCM token, then sleeps (its connection closes). A door
// station calls: Portier pushes through a local stand-in for FCM (real
// HTTP/2 over TLS, OAuth token from the service account), holds the branch,
// and sends the INVITE when the app registers again.
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import type { RunningServer } from '../../src/server.js';
import { makeTestCerts, opensslMissing, type TestCerts } from '../helpers/certs.js';
import { newBranch, UA } from '../helpers/ua.js';
import { metric, scrape } from '../helpers/tools.js';
import { until } from '../helpers/wait.js';
import { makeKeys, PROJECT, startProvider, writeServiceAccount, type FakeProvider, type Recorded, type Reply } from './helpers.js';
import { startPushPortier } from './portier.js';

const missing = opensslMissing();
if (missing) t.plan(0, missing);
const certs: TestCerts = missing ? (null as unknown as TestCerts) : makeTestCerts();
t.teardown(() => certs?.remove());
const keys = makeKeys();

interface Fcm {
  oauth: FakeProvider;
  fcm: FakeProvider;
  sends: () => Array<{ token: string; data: Record<string, string> }>;
}

/** Google's token endpoint and FCM; `answer` decides FCM's replies (default 200). */
async function fakeFcm(t: Test, answer?: (r: Recorded) => Reply): Promise<Fcm> {
  const oauth = await startProvider(t, certs, () => ({ status: 200, body: { access_token: 'ya29.late', expires_in: 3599, token_type: 'Bearer' } }));
  const fcm = await startProvider(t, certs, (r) => {
    if (r.path !== `/v1/projects/${PROJECT}/messages:send` || r.headers.authorization !== 'Bearer ya29.late') return { status: 401, body: { error: { status: 'UNAUTHENTICATED' } } };
    return answer ? answer(r) : { status: 200, body: { name: `projects/${PROJECT}/messages/1` } };
  });
  const sends = () => fcm.requests.map((r) => (JSON.parse(r.body) as { message: { token: string; data: Record<string, string> } }).message);
  return { oauth, fcm, sends };
}

const PW = 'a long password for tests';

async function portier(t: Test, g: Fcm, callTimeout = 3): Promise<{ server: RunningServer; tcp: number; udp: number; metrics: () => Promise<string> }> {
  const dir = t.testdir({});
  const sa = writeServiceAccount(dir, keys, `${g.oauth.origin}/token`);
  writeFileSync(join(dir, 'users'), '');
  const p = await startPushPortier(t, dir, `{call-timeout: ${callTimeout}, ca: ${certs.paths.caCert}, fcm: {service-account: ${sa}, endpoint: "${g.fcm.origin}"}}`, '127.0.0.1:0');
  return { ...p, metrics: () => scrape(p.server.metricsAddress()!.port) };
}

const TOKEN = 'dQw4w9WgXcQ:APA91bF-late-forking-token';
const PUSH = `pn-provider=fcm;pn-prid=${TOKEN};pn-param=portier-test-1234`;
const INSTANCE = 'urn:uuid:5b1f6c3e-0000-4000-8000-00000000a11c';

/** The app registers over TCP with its push token, then goes to sleep: its connection closes. */
async function sleepingPhone(t: Test, p: { server: RunningServer; tcp: number }): Promise<void> {
  const app = await UA.create({ transport: 'tcp', user: 'alice', domain: 'example.test', proxyPort: p.tcp, instance: INSTANCE, password: PW });
  const res = await app.register({ uriParams: PUSH, expires: 3600 });
  t.equal(res.status, 200, 'the app registered with its push token');
  t.equal(res.get('feature-caps'), '*;+sip.pns="fcm"', 'RFC 8599: the 200 says Portier pushes through FCM');
  await app.close();
  // Asleep for a while: Portier has seen the connection close.
  await until(() => p.server.transport.connectionCount('tcp') === 0, 'the connection to close');
}

async function wakingPhone(t: Test, port: number): Promise<UA> {
  const app = await UA.create({ transport: 'tcp', user: 'alice', domain: 'example.test', proxyPort: port, instance: INSTANCE, password: PW });
  t.teardown(() => app.close());
  return app;
}

async function door(t: Test, port: number): Promise<UA> {
  const d = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: port, t1: 100, t2: 400 });
  t.teardown(() => d.close());
  return d;
}

t.test('Android asleep: FCM push with the call-id, the app registers, gets the INVITE, answers; the door station gets 200', async (t) => {
  const g = await fakeFcm(t);
  const p = await portier(t, g);
  await sleepingPhone(t, p);
  const d = await door(t, p.udp);
  const call = d.call('sip:alice@example.test');
  await until(() => g.sends().length === 1, 'the push');
  const push = g.sends()[0];
  t.equal(push.token, TOKEN, 'pushed to the registered token');
  t.equal(push.data['call-id'], call.callId, 'with the Call-ID the app will find');
  t.equal(push.data.uuid, INSTANCE, 'and the device (+sip.instance)');
  t.equal((await call.response(180)).status, 180, 'the door station hears ringing while the phone wakes');

  const app = await wakingPhone(t, p.tcp);
  t.equal((await app.register({ uriParams: PUSH, expires: 3600 })).status, 200, 'the woken app registers again');
  const incoming = await app.waitIncoming(3000);
  t.equal(incoming.request.callId(), call.callId, 'the INVITE reaches it');
  t.notMatch(incoming.request.uri, /pn-/, 'push parameters are not sent to the device');
  t.equal((await call.final()).status, 200, 'answered');
  t.equal(g.sends().length, 1, 'one push');
  t.equal((await call.bye()).status, 200);
  const m = await p.metrics();
  t.equal(metric(m, 'portier_push_total', { provider: 'fcm', result: 'sent', reason: '' }), 1, 'portier_push_total counts it');
  t.equal(metric(m, 'portier_calls_answered_after_push_total'), 1, 'answered after a push');
  t.equal(metric(m, 'portier_push_register_seconds_count'), 1, 'push-to-register delay observed');
});

t.test('the door station cancels before the app wakes: nothing is delivered when it registers', async (t) => {
  const g = await fakeFcm(t);
  const p = await portier(t, g);
  await sleepingPhone(t, p);
  const d = await door(t, p.udp);
  const call = d.call('sip:alice@example.test');
  await until(() => g.sends().length === 1, 'the push');
  await call.response(180);
  t.equal((await call.cancel()).status, 200);
  t.equal((await call.final()).status, 487, 'the door station hears 487');
  const app = await wakingPhone(t, p.tcp);
  t.equal((await app.register({ uriParams: PUSH, expires: 3600 })).status, 200);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(app.filter({ method: 'INVITE' }).length, 0, 'no INVITE for a call that is over');
});

t.test('the app never wakes: its branch ends at call-timeout and the caller gets the best final response', async (t) => {
  const g = await fakeFcm(t);
  const p = await portier(t, g, 1);
  await sleepingPhone(t, p);
  const d = await door(t, p.udp);
  const res = await d.call('sip:alice@example.test').final(5000);
  t.equal(res.status, 480, '480 after push.call-timeout, not the 10 s ring timeout');
  t.equal(g.sends().length, 1);
});

t.test('FCM says the token is gone: the push parameters leave the binding; the next call is not pushed', async (t) => {
  const g = await fakeFcm(t, () => ({ status: 404, body: { error: { code: 404, status: 'NOT_FOUND', details: [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode: 'UNREGISTERED' }] } } }));
  const p = await portier(t, g, 1);
  await sleepingPhone(t, p);
  const d = await door(t, p.udp);
  const first = await d.call('sip:alice@example.test').final(5000);
  t.ok(first.status >= 400, `the call fails (${first.status})`);
  t.equal(g.sends().length, 1);
  await new Promise((r) => setTimeout(r, 100));
  const second = await d.call('sip:alice@example.test').final(5000);
  t.ok(second.status >= 400, `the next call fails too (${second.status})`);
  t.equal(g.sends().length, 1, 'but is not pushed again');
});

t.test('FCM down: the devices that are awake still ring and answer', async (t) => {
  const g = await fakeFcm(t);
  await g.fcm.close();
  const p = await portier(t, g, 2);
  await sleepingPhone(t, p);
  const pc = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: p.udp, t1: 100, t2: 400 });
  t.teardown(() => pc.close());
  t.equal((await pc.register()).status, 200, 'the PC is awake');
  const d = await door(t, p.udp);
  const call = d.call('sip:alice@example.test');
  t.equal((await call.final()).status, 200, 'answered by the PC');
  t.equal((await call.bye()).status, 200);
  const m = await p.metrics();
  t.equal(metric(m, 'portier_push_total', { provider: 'fcm', result: 'failed', reason: 'unreachable' }), 1, 'the failed push is counted');
});

t.test('a device that registers while the call rings elsewhere joins it', async (t) => {
  const g = await fakeFcm(t);
  const p = await portier(t, g);
  const phone = await UA.create({ transport: 'udp', user: 'bob', domain: 'example.test', proxyPort: p.udp, t1: 100, t2: 400 });
  t.teardown(() => phone.close());
  phone.onInvite = () => ({ action: 'ring' });
  t.equal((await phone.register()).status, 200);
  const d = await door(t, p.udp);
  const call = d.call('sip:bob@example.test');
  await phone.waitIncoming();
  const tablet = await UA.create({ transport: 'udp', user: 'bob', domain: 'example.test', proxyPort: p.udp, t1: 100, t2: 400 });
  t.teardown(() => tablet.close());
  tablet.onInvite = () => ({ action: 'answer', ring: true, after: 50 });
  t.equal((await tablet.register()).status, 200, 'the tablet comes online during the call');
  await tablet.waitIncoming(3000);
  t.equal((await call.final()).status, 200, 'and answers it');
  const cancel = await phone.waitFor({ method: 'CANCEL' });
  t.equal(cancel.get('reason'), 'SIP;cause=200;text="Call completed elsewhere"');
  t.equal((await call.bye()).status, 200);
});

t.test('a MESSAGE to a sleeping app is pushed and held until the app registers', async (t) => {
  const g = await fakeFcm(t);
  const p = await portier(t, g);
  await sleepingPhone(t, p);
  const d = await door(t, p.udp);
  const { bytes, msg } = d.request({
    method: 'MESSAGE',
    ruri: 'sip:alice@example.test',
    branch: newBranch(),
    from: '<sip:door@example.test>;tag=m1',
    to: '<sip:alice@example.test>',
    callId: 'message-1@127.0.0.1',
    cseq: 1,
    body: 'Visitor at the main gate',
    contentType: 'text/plain',
  });
  const sent = d.startClient(bytes, msg, d.proxy).done;
  await until(() => g.sends().length === 1, 'the push');
  t.equal(g.sends()[0].data['call-id'], 'message-1@127.0.0.1');
  const app = await wakingPhone(t, p.tcp);
  t.equal((await app.register({ uriParams: PUSH, expires: 3600 })).status, 200);
  const got = await app.waitFor({ method: 'MESSAGE' }, 3000);
  t.equal(got.body.toString(), 'Visitor at the main gate', 'the message reaches the woken app');
  t.ok((await sent).status >= 200, 'and its answer the sender');
});

t.test('an app that never says its connection is gone (UDP, or half-open TCP) and does not answer is pushed after a quiet while', async (t) => {
  const g = await fakeFcm(t);
  const p = await portier(t, g, 10);
  const mute = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: p.udp, instance: INSTANCE, t1: 100, t2: 400 });
  t.teardown(() => mute.close());
  mute.onInvite = () => undefined; // asleep: the packets arrive, nobody reads them
  t.equal((await mute.register({ uriParams: PUSH, expires: 3600 })).status, 200);
  const d = await door(t, p.udp);
  const call = d.call('sip:alice@example.test');
  await mute.waitIncoming(3000);
  t.equal(g.sends().length, 0, 'no push while the INVITE may still be answered');
  await until(() => g.sends().length === 1, 'the push after the quiet while', 8000);
  const app = await wakingPhone(t, p.tcp);
  t.equal((await app.register({ uriParams: PUSH, expires: 3600 })).status, 200, 'the woken app registers over TCP');
  const inc = await app.waitIncoming(3000);
  t.equal(inc.request.callId(), call.callId);
  t.equal((await call.final()).status, 200, 'answered on the woken app');
  // The silent branch is given up; it gets no CANCEL (§9.1: not before a provisional), only its transaction's end.
  t.equal((await call.bye()).status, 200);
});
