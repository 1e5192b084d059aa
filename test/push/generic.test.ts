// The generic HTTP gateway (ntfy, UnifiedPush, a city's relay) against local
// servers: URL template substitution and encoding, body templates, status
// mapping; and the service's queue, provider choice and counters.

import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PushService, type PushOutcome, type PushRequest, type UnregisteredEvent } from '../../src/push/index.js';
import { substitute } from '../../src/push/generic.js';
import type { GenericPushConfig, PushConfig } from '../../src/config/types.js';
import { makeTestCerts, opensslMissing, type TestCerts } from '../helpers/certs.js';
import { until } from '../helpers/wait.js';
import { CALL, FastClock, NO_PUSH, startProvider, target, type FakeProvider, type Handler, type Reply } from './helpers.js';

const missing = opensslMissing();
if (missing) t.plan(0, missing);

const certs: TestCerts = missing ? (null as unknown as TestCerts) : makeTestCerts();
t.teardown(() => certs?.remove());

const android = target({ provider: 'fcm', token: 'tok/with:odd chars&more', param: '929724111839', appId: '929724111839' });
const iphone = target({ provider: 'apns', token: 'r'.repeat(64), voipToken: 'v'.repeat(64), param: 'TEAM.org.linhome.app.voip&remote', appId: 'org.linhome.app', teamId: 'TEAM' });
const req = (tg = android, over: Partial<PushRequest> = {}): PushRequest => ({ ...CALL, target: tg, kind: 'call', ...over });

async function gateway(t: Test, reply?: Handler): Promise<FakeProvider> {
  return startProvider(t, certs, reply ?? (() => ({ status: 200, body: '{"id":"x"}' })));
}

function service(t: Test, generic: GenericPushConfig, over: Partial<PushConfig> = {}, opts: ConstructorParameters<typeof PushService>[1] = {}) {
  const s = new PushService({ ...NO_PUSH, ca: certs.paths.caCert, generic, ...over }, { clock: new FastClock(), requestTimeoutMs: 3000, ...opts });
  t.teardown(() => s.close());
  return s;
}

t.test('URL placeholders are percent-encoded; a JSON body gets JSON-escaped values', async (t) => {
  const g = await gateway(t);
  const url = `${g.origin}/up/$token?from=$from-uri&name=$from-name&to=$to-uri&cid=$call-id&event=$event&app=$app-id&uid=$uid&type=$type`;
  const body = '{"title": "$from-name", "call": "$call-id", "event": "$event"}';
  const s = service(t, { url, method: 'POST', body });
  t.same(await s.send(req()), { result: 'sent', status: 200, provider: 'generic' });
  const r = g.requests[0];
  t.equal(r.method, 'POST');
  t.equal(r.httpVersion, '1.1');
  const u = new URL(r.path, g.origin);
  t.equal(u.pathname, `/up/${encodeURIComponent(android.token!)}`, 'the token, encoded as one path segment');
  t.same(Object.fromEntries(u.searchParams), {
    from: CALL.fromUri,
    name: CALL.fromName,
    to: CALL.toUri,
    cid: CALL.callId,
    event: 'call',
    app: '929724111839',
    uid: 'urn:uuid:0a1b2c3d-1111-2222-3333-444455556666',
    type: 'firebase',
  });
  t.match(r.path, /name=Gate%20%22North%22%20%C3%A9&/, 'quotes, spaces and UTF-8 encoded');
  t.equal(r.headers['content-type'], 'application/json');
  t.same(JSON.parse(r.body), { title: CALL.fromName, call: CALL.callId, event: 'call' }, 'the quotes in the name do not break the JSON');
});

t.test('a text body gets raw values; GET sends none; an APNs device gets its token for the kind', async (t) => {
  const g = await gateway(t);
  const s = service(t, { url: `${g.origin}/$type/$event/$token`, method: 'PUT', body: 'Call from $from-name ($from-uri)' });
  t.equal((await s.send(req(iphone))).result, 'sent');
  t.equal((await s.send(req(iphone, { kind: 'message' }))).result, 'sent');
  t.equal(g.requests[0].path, `/apple/call/${'v'.repeat(64)}`, 'the VoIP token for a call');
  t.equal(g.requests[1].path, `/apple/message/${'r'.repeat(64)}`, 'the remote token for a message');
  t.equal(g.requests[0].method, 'PUT');
  t.equal(g.requests[0].headers['content-type'], 'text/plain; charset=utf-8');
  t.equal(g.requests[0].body, `Call from ${CALL.fromName} (${CALL.fromUri})`);

  const g2 = await gateway(t);
  const s2 = service(t, { url: `${g2.origin}/wake?t=$token`, method: 'GET', body: 'ignored' });
  t.equal((await s2.send(req())).result, 'sent');
  t.equal(g2.requests[0].method, 'GET');
  t.equal(g2.requests[0].body, '');
});

t.test('plain http to a loopback relay', async (t) => {
  const got: Array<{ url: string; body: string }> = [];
  const server = http.createServer((rq, rs) => {
    let body = '';
    rq.on('data', (c: Buffer) => (body += c.toString()));
    rq.on('end', () => {
      got.push({ url: rq.url ?? '', body });
      rs.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as AddressInfo).port;
  const s = service(t, { url: `http://127.0.0.1:${port}/ntfy-topic`, method: 'POST', body: '$from-name is at the door' });
  t.equal((await s.send(req())).result, 'sent');
  t.same(got, [{ url: '/ntfy-topic', body: `${CALL.fromName} is at the door` }]);
});

t.test('410 and 404: unregistered; 503: retried; untrusted certificate: failed', async (t) => {
  const answers: Reply[] = [{ status: 410 }, { status: 404 }, { status: 503 }, { status: 204 }];
  const g = await gateway(t, () => answers.shift() ?? { status: 200 });
  const events: UnregisteredEvent[] = [];
  const s = service(t, { url: `${g.origin}/$token`, method: 'POST', body: null }, {}, { clock: new FastClock(), onUnregistered: (e) => events.push(e) });
  t.match(await s.send(req()), { result: 'unregistered', reason: 'gone', status: 410 });
  t.match(await s.send(req()), { result: 'unregistered', reason: 'gone', status: 404 });
  t.match(await s.send(req()), { result: 'sent', status: 204 });
  t.equal(g.requests.length, 4);
  t.equal(events.length, 2);
  t.equal(events[0].provider, 'generic');

  const s2 = service(t, { url: `${g.origin}/$token`, method: 'POST', body: null }, { ca: null });
  t.match(await s2.send(req()), { result: 'failed', reason: 'tls' });
  t.equal(g.requests.length, 4, 'the untrusted server got nothing');
});

t.test('queue: at most maxInFlight at once, maxQueued waiting, the rest refused', async (t) => {
  const release: Array<() => void> = [];
  const g = await gateway(t, () => new Promise<Reply>((resolve) => release.push(() => resolve({ status: 200 }))));
  const s = service(t, { url: `${g.origin}/$call-id`, method: 'POST', body: null }, {}, { maxInFlight: 1, maxQueued: 1 });
  const a = s.send(req(android, { callId: 'a' }));
  const b = s.send(req(android, { callId: 'b' }));
  const c = await s.send(req(android, { callId: 'c' }));
  t.match(c, { result: 'failed', reason: 'queue-full' });
  t.match(s.stats(), { inFlight: 1, queued: 1 });
  await until(() => release.length === 1, 'the first request at the gateway');
  release.shift()!();
  t.equal((await a).result, 'sent');
  await until(() => release.length === 1, 'the queued one sent next');
  release.shift()!();
  t.equal((await b).result, 'sent');
  t.same(g.requests.map((r) => r.path), ['/a', '/b']);
  t.same(
    s.stats().outcomes.map((o) => `${o.provider} ${o.result} ${o.reason} ${o.count}`).sort(),
    ['generic failed queue-full 1', 'generic sent  2'],
  );
});

t.test('close(): queued pushes end as closed, later ones at once', async (t) => {
  const release: Array<() => void> = [];
  const g = await gateway(t, () => new Promise<Reply>((resolve) => release.push(() => resolve({ status: 200 }))));
  const s = service(t, { url: `${g.origin}/$call-id`, method: 'POST', body: null }, {}, { maxInFlight: 1 });
  const a = s.send(req());
  const b = s.send(req());
  await until(() => release.length === 1, 'the first request at the gateway');
  s.close();
  t.match(await b, { result: 'failed', reason: 'closed' });
  const outA: PushOutcome = await a;
  t.equal(outA.result, 'failed', 'the session was ended under it');
  t.match(await s.send(req()), { result: 'failed', reason: 'closed' });
});

t.test('no provider for the target: not-configured at once, counted under its provider', async (t) => {
  const s = new PushService(NO_PUSH);
  t.teardown(() => s.close());
  t.match(await s.send(req(android)), { result: 'failed', reason: 'not-configured' });
  t.match(await s.send(req(iphone)), { result: 'failed', reason: 'not-configured' });
  t.match(await s.send(req(target({ provider: 'wp10', token: 'x' }))), { result: 'failed', reason: 'not-configured' });
  t.notOk(s.canPush(android));
  const r = s.ring(iphone, CALL);
  t.equal(r.mode, 'none');
  t.match(await r.first, { result: 'failed', reason: 'not-configured' });
  t.equal(await r.stop('missed'), null);
  t.same(
    s.stats().outcomes.map((o) => `${o.provider} ${o.result} ${o.reason} ${o.count}`).sort(),
    ['apns failed not-configured 2', 'fcm failed not-configured 1', 'other failed not-configured 1'],
  );
});

t.test('substitute: every placeholder, unknown $words kept, no double substitution', async (t) => {
  const values = { token: '$call-id', 'call-id': 'C' };
  t.equal(substitute('/$token/$call-id/$price/$tokenx', values, (v) => v), '/$call-id/C/$price/$call-idx');
});

t.test('a gateway that never answers: failed with reason timeout', async (t) => {
  const g = await gateway(t, () => new Promise<Reply>(() => {}));
  const s = service(t, { url: `${g.origin}/$token`, method: 'POST', body: null }, {}, { requestTimeoutMs: 150 });
  t.match(await s.send(req()), { result: 'failed', reason: 'timeout' });
});
