// Late forking for iOS (issue 6) against a local stand-in for APNs (HTTP/2
// over TLS, provider token ES256 checked with the test key): a VoIP
// (PushKit) device woken for a call answered elsewhere still gets the INVITE,
// then a CANCEL saying why, as iOS requires; an alert-only device (Linhome)
// gets its alert again every pn-call-remote-push-interval, then a last one.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { RunningServer } from '../../src/server.js';
import { makeTestCerts, opensslMissing, type TestCerts } from '../helpers/certs.js';
import { UA } from '../helpers/ua.js';
import { until } from '../helpers/wait.js';
import { checkJwt, makeKeys, startProvider, type FakeProvider } from './helpers.js';
import { startPushPortier } from './portier.js';

const missing = opensslMissing();
if (missing) t.plan(0, missing);
const certs: TestCerts = missing ? (null as unknown as TestCerts) : makeTestCerts();
t.teardown(() => certs?.remove());
const keys = makeKeys();
const KEY_ID = 'ABC123DEFG';
const TEAM = 'DEF123GHIJ';
const BUNDLE = 'org.linphone.phone';
const VOIP = 'c'.repeat(64);
const REMOTE = 'd'.repeat(64);

interface Push {
  type: string;
  topic: string;
  token: string;
  body: Record<string, any>;
}

async function apple(t: Test): Promise<{ server: FakeProvider; pushes: () => Push[]; problems: string[] }> {
  const problems: string[] = [];
  const server = await startProvider(t, certs, (r) => {
    const bearer = /^bearer (.+)$/.exec(String(r.headers.authorization ?? ''))?.[1] ?? '..';
    const jwt = checkJwt(bearer, 'ES256', keys.ecPublic);
    if (!jwt.valid || jwt.header.kid !== KEY_ID || jwt.claims.iss !== TEAM) return { status: 403, body: { reason: 'InvalidProviderToken' } };
    if (!/^\/3\/device\/[0-9a-f]{64}$/.test(r.path)) problems.push(r.path);
    return { status: 200, headers: { 'apns-id': String(r.headers['apns-id']) } };
  });
  const pushes = () =>
    server.requests.map((r) => ({ type: String(r.headers['apns-push-type']), topic: String(r.headers['apns-topic']), token: r.path.slice('/3/device/'.length), body: JSON.parse(r.body) as Record<string, any> }));
  return { server, pushes, problems };
}

async function portier(t: Test, origin: string): Promise<{ server: RunningServer; tcp: number; udp: number }> {
  const dir = t.testdir({});
  writeFileSync(join(dir, 'AuthKey.p8'), keys.ecPem);
  return startPushPortier(t, dir, `{call-timeout: 5, ca: ${certs.paths.caCert}, apns: {key: AuthKey.p8, key-id: ${KEY_ID}, team-id: ${TEAM}, endpoint: "${origin}"}}`);
}

/** Registers over TCP with push parameters, then sleeps (the connection closes and Portier sees it). */
async function sleeper(t: Test, p: { server: RunningServer; tcp: number }, instance: string, push: string): Promise<void> {
  const app = await UA.create({ transport: 'tcp', user: 'alice', domain: 'example.test', proxyPort: p.tcp, instance });
  t.equal((await app.register({ uriParams: push, expires: 3600 })).status, 200, 'the iPhone registered with its tokens');
  await app.close();
  await until(() => p.server.transport.connectionCount('tcp') === 0, 'the connection to close');
}

async function awakePc(t: Test, p: { udp: number }, after: number): Promise<UA> {
  const pc = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: p.udp, t1: 100, t2: 400 });
  t.teardown(() => pc.close());
  pc.onInvite = () => ({ action: 'answer', ring: true, after });
  t.equal((await pc.register()).status, 200);
  return pc;
}

t.test('iOS VoIP: the call is answered on the PC before the iPhone wakes; the iPhone still gets the INVITE, then CANCEL with the reason', async (t) => {
  const a = await apple(t);
  const p = await portier(t, a.server.origin);
  const instance = 'urn:uuid:0f0e0d0c-0000-4000-8000-00000000face';
  await sleeper(t, p, instance, `pn-provider=apns.dev;pn-prid=${VOIP}:voip&${REMOTE}:remote;pn-param=${TEAM}.${BUNDLE}.voip&remote`);
  await awakePc(t, p, 200);
  const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: p.udp, t1: 100, t2: 400 });
  t.teardown(() => door.close());
  const call = door.call('sip:alice@example.test');
  await until(() => a.pushes().length >= 1, 'the VoIP push');
  const voip = a.pushes()[0];
  t.equal(voip.type, 'voip', 'a PushKit push');
  t.equal(voip.topic, `${BUNDLE}.voip`);
  t.equal(voip.token, VOIP, 'to the VoIP token');
  t.equal((await call.final()).status, 200, 'the PC answered');

  // The iPhone, woken by PushKit, registers after the call was answered.
  const phone = await UA.create({ transport: 'tcp', user: 'alice', domain: 'example.test', proxyPort: p.tcp, instance });
  t.teardown(() => phone.close());
  phone.onInvite = () => ({ action: 'ring' });
  t.equal((await phone.register({ uriParams: `pn-provider=apns.dev;pn-prid=${VOIP}:voip&${REMOTE}:remote;pn-param=${TEAM}.${BUNDLE}.voip&remote`, expires: 3600 })).status, 200);
  const inv = await phone.waitIncoming(3000);
  t.equal(inv.request.callId(), call.callId, 'the INVITE of the call it was woken for');
  const cancel = await phone.waitFor({ method: 'CANCEL' }, 3000);
  t.equal(cancel.get('reason'), 'SIP;cause=200;text="Call completed elsewhere"', 'then CANCEL: completed elsewhere');
  const idx = (method: string): number => phone.timeline.findIndex((e) => e.dir === 'in' && e.msg.isRequest && e.msg.method === method && e.msg.callId() === call.callId);
  t.ok(idx('INVITE') >= 0 && idx('INVITE') < idx('CANCEL'), 'the INVITE first, the CANCEL after it');
  t.equal((await call.bye()).status, 200);
  t.same(a.problems, []);
});

t.test('Linhome (alert pushes only): the alert comes again at pn-call-remote-push-interval until the call is answered elsewhere, then a last alert', async (t) => {
  const a = await apple(t);
  const p = await portier(t, a.server.origin);
  await sleeper(t, p, 'urn:uuid:0f0e0d0c-0000-4000-8000-0000000a1e47', `pn-provider=apns;pn-prid=${REMOTE}:remote;pn-param=${TEAM}.org.linhome.remote;pn-call-remote-push-interval=1`);
  await awakePc(t, p, 2500);
  const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: p.udp, t1: 100, t2: 400 });
  t.teardown(() => door.close());
  const call = door.call('sip:alice@example.test');
  t.equal((await call.final(6000)).status, 200, 'answered on the PC after 2.5 s');
  await until(() => a.pushes().some((x) => x.body['end-reason'] !== undefined), 'the last alert', 3000);
  const alerts = a.pushes();
  t.ok(alerts.every((x) => x.type === 'alert' && x.topic === 'org.linhome'), 'all alerts, to the app topic');
  const calls = alerts.filter((x) => x.body['end-reason'] === undefined);
  t.ok(calls.length >= 2, `the first alert and at least one repeat while it rang (${calls.length})`);
  for (const x of calls) {
    t.equal(x.body.aps['mutable-content'], 1, 'mutable-content for the notification extension');
    t.equal(x.body['call-id'], call.callId, 'and the Call-ID');
  }
  const last = alerts[alerts.length - 1];
  t.equal(last.body['end-reason'], 'answered-elsewhere', 'the last alert says it was answered elsewhere');
  t.equal(alerts.filter((x) => x.body['end-reason'] !== undefined).length, 1, 'once');
  await new Promise((r) => setTimeout(r, 1500));
  t.equal(a.pushes().length, alerts.length, 'nothing more once the call is over');
  t.equal((await call.bye()).status, 200);
});

t.test('iOS VoIP: a woken iPhone that answers the owed INVITE at once is hung up by Portier; the door station sees nothing of it', async (t) => {
  const a = await apple(t);
  const p = await portier(t, a.server.origin);
  const instance = 'urn:uuid:0f0e0d0c-0000-4000-8000-0000000ca11c';
  const pn = `pn-provider=apns.dev;pn-prid=${VOIP}:voip&${REMOTE}:remote;pn-param=${TEAM}.${BUNDLE}.voip&remote`;
  await sleeper(t, p, instance, pn);
  await awakePc(t, p, 200);
  const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: p.udp, t1: 100, t2: 400 });
  t.teardown(() => door.close());
  const call = door.call('sip:alice@example.test');
  await until(() => a.pushes().length >= 1, 'the VoIP push');
  t.equal((await call.final()).status, 200, 'the PC answered');
  const phone = await UA.create({ transport: 'tcp', user: 'alice', domain: 'example.test', proxyPort: p.tcp, instance });
  t.teardown(() => phone.close());
  phone.onInvite = () => ({ action: 'answer' }); // CallKit took the call from the push
  t.equal((await phone.register({ uriParams: pn, expires: 3600 })).status, 200);
  await phone.waitIncoming(3000);
  const bye = await phone.waitFor({ method: 'BYE' }, 3000).catch((e: Error) => { t.comment(phone.received.map((m) => m.isRequest ? m.method : String(m.status)).join(' ') + ' errors: ' + phone.errors.map((x) => x.message).join('; ')); throw e; });
  t.equal(bye.callId(), call.callId, 'Portier hangs the owed call up');
  t.ok(phone.filter({ method: 'ACK' }).length >= 1, 'after ACKing its 200');
  t.equal(door.filter((m) => !m.isRequest && m.status === 200 && m.cseq().method === 'INVITE').length, 1, 'the door station got one 200, from the PC');
  t.equal((await call.bye()).status, 200);
});
