// push.register-wakeup: a silent push before a sleeping app's binding
// expires (injected clock), sent through the FCM stand-in over real TLS.
import t from 'tap';
import { PushService, RegisterWakeup, type PushOutcome, type PushRequest } from '../../src/push/index.js';
import { makeTestCerts, opensslMissing, type TestCerts } from '../helpers/certs.js';
import { until } from '../helpers/wait.js';
import { NO_PUSH, PROJECT, makeKeys, startProvider, writeServiceAccount } from './helpers.js';

const missing = opensslMissing();
if (missing) t.plan(0, missing);
const certs: TestCerts = missing ? (null as unknown as TestCerts) : makeTestCerts();
t.teardown(() => certs?.remove());
const keys = makeKeys();

const binding = (over: Partial<{ expiresAt: number; pushParams: Record<string, string>; key: string }> = {}) => ({
  aor: 'sip:alice@example.test',
  key: over.key ?? 'i:<urn:uuid:1>|',
  contact: 'sip:alice@192.0.2.1:5060;transport=tcp',
  expiresAt: over.expiresAt ?? 3_600_000,
  updatedAt: 0,
  instance: '<urn:uuid:1>',
  pushParams: over.pushParams ?? { 'pn-provider': 'fcm', 'pn-prid': 'TOKEN-1', 'pn-param': 'proj' },
});

t.test('one wake-up per registration, lead time before expiry, halfway when the registration is shorter', async (t) => {
  let now = 0;
  const sent: PushRequest[] = [];
  const w = new RegisterWakeup({ send: async (r: PushRequest): Promise<PushOutcome> => (sent.push(r), { result: 'sent' }) }, 1_800_000, { now: () => now, intervalMs: 0 });
  t.teardown(() => w.close());
  w.registered(binding());
  w.registered(binding({ key: 'short', expiresAt: 600_000 }));
  w.registered(binding({ key: 'no-push', pushParams: {} }));
  t.equal(w.size, 2, 'bindings without push parameters are not woken');
  now = 299_999;
  w.tick();
  t.equal(sent.length, 0);
  now = 300_000;
  w.tick();
  t.same(sent.map((r) => r.binding?.key), ['short'], 'a 10 min registration is woken halfway');
  now = 1_800_000;
  w.tick();
  t.equal(sent.length, 2, 'a 1 h registration 30 min before it expires');
  t.equal(sent[1].kind, 'wakeup');
  t.equal(sent[1].instance, 'urn:uuid:1');
  w.tick();
  t.equal(sent.length, 2, 'once');
  w.registered(binding());
  w.unregistered(binding());
  now = 3_600_000;
  w.tick();
  t.equal(sent.length, 2, 'an unregistered binding is not woken');
});

t.test('the wake-up goes out as an FCM data message', async (t) => {
  const oauth = await startProvider(t, certs, () => ({ status: 200, body: { access_token: 'ya29.w', expires_in: 3599 } }));
  const fcm = await startProvider(t, certs, () => ({ status: 200, body: { name: `projects/${PROJECT}/messages/2` } }));
  const sa = writeServiceAccount(t.testdir({}), keys, `${oauth.origin}/token`);
  const push = new PushService({ ...NO_PUSH, ca: certs.paths.caCert, fcm: { serviceAccount: sa, endpoint: fcm.origin } });
  t.teardown(() => push.close());
  let now = 0;
  const w = new RegisterWakeup(push, 60_000, { now: () => now, intervalMs: 0 });
  t.teardown(() => w.close());
  w.registered(binding({ expiresAt: 120_000 }));
  now = 60_000;
  w.tick();
  await until(() => fcm.requests.length === 1, 'the wake-up push');
  const body = JSON.parse(fcm.requests[0].body) as { message: { token: string; data: Record<string, string>; android: { priority: string } } };
  t.equal(body.message.token, 'TOKEN-1');
  t.equal(fcm.requests[0].path, `/v1/projects/${PROJECT}/messages:send`);
});
