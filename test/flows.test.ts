// RFC 5626 flows and NAT through the running server, on real loopback
// sockets: an outbound registration over TCP, TLS or WS is bound to its
// connection (the call comes down it, a double-CRLF ping gets its pong, the
// binding goes when the connection closes unless it carries push
// parameters), and a phone that registers a Contact nobody can reach (behind
// NAT) is called at the address its REGISTER really came from.
import t, { type Test } from 'tap';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import type { SipMessage } from '../src/sip/index.js';
import { makeTestCerts, opensslMissing, type TestCerts } from './helpers/certs.js';
import { metric, scrape } from './helpers/tools.js';
import { UA, type UAOptions, type UATransport } from './helpers/ua.js';
import { until } from './helpers/wait.js';
import { WsUA } from './helpers/ws-ua.js';

const noOpenssl = opensslMissing();
const IDLE = 60; // limits.idle-timeout: Flow-Timer 48 (80%)
let certs: TestCerts | null = null;
let server: RunningServer;
const ports: Record<string, number> = {};

t.before(async () => {
  certs = noOpenssl === null ? makeTestCerts() : null;
  const listen = ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0', 'ws:127.0.0.1:0', ...(certs ? ['tls:127.0.0.1:0'] : [])];
  const config = parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      `listen: [${listen.join(', ')}]`,
      ...(certs ? [`tls: {cert: ${certs.paths.serverCert}, key: ${certs.paths.serverKey}}`] : []),
      `limits: {idle-timeout: ${IDLE}}`,
      'proxy: {ring-timeout: 3}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
      'metrics: {listen: "127.0.0.1:0"}',
    ].join('\n'),
    'flows.yaml',
  );
  server = await startServer(config, createLogger('fatal'));
  for (const ep of server.listening()) ports[ep.protocol] = ep.port;
});
t.teardown(async () => {
  await server.stop();
  certs?.remove();
});

let seq = 0;
const name = (base: string): string => `${base}${++seq}`;

async function ua(t: Test, transport: UATransport, user: string, o: Partial<UAOptions> = {}): Promise<UA> {
  const u = await UA.create({ transport, user, domain: 'example.test', proxyPort: ports[transport], t1: 100, t2: 400, tls: certs ? { ca: certs.caCert } : undefined, ...o });
  t.teardown(() => u.close());
  return u;
}

/** Live bindings of example.test, as /metrics says. */
async function bindings(): Promise<number> {
  return metric(await scrape(server.metricsAddress()!.port), 'portier_registrations_active', { domain: 'example.test' });
}

function noErrors(t: Test, ...uas: Array<UA | WsUA>): void {
  for (const u of uas) t.same(u.errors.map((e) => e.message), [], `${u.user}: the UA met no protocol error`);
}

const inCall = (callId: string, method: string) => (m: SipMessage) => m.isRequest && m.method === method && m.callId() === callId;

for (const transport of ['tcp', 'tls'] as const) {
  const skip = transport === 'tls' && noOpenssl !== null ? noOpenssl : false;
  t.test(`outbound over ${transport}: Require and Flow-Timer, the call down the flow, ping/pong, the binding goes with the connection`, { timeout: 20000, skip }, async (t) => {
    const phone = await ua(t, transport, name('phone'));
    const door = await ua(t, 'udp', name('door'));
    const before = await bindings();
    const reg = await phone.register({ contactParams: 'reg-id=1' });
    t.equal(reg.status, 200);
    t.equal(reg.get('require'), 'outbound', 'RFC 5626 §6: Require: outbound');
    const flowTimer = Number(reg.get('flow-timer'));
    t.equal(flowTimer, 48, 'Flow-Timer: 80% of limits.idle-timeout');
    t.ok(flowTimer < IDLE, 'keep-alives at that pace arrive before the idle timeout');
    t.match(reg.get('contact') ?? '', /reg-id=1/, 'the flow binding in the 200');
    t.equal(await bindings(), before + 1);

    await phone.ping();
    t.equal(phone.pongs, 1, 'a double-CRLF ping on the registered flow gets one CRLF pong');

    const call = door.call(phone.aor);
    t.equal((await call.final(5000)).status, 200, 'answered');
    const inv = (await phone.waitIncoming()).request;
    t.equal(inv.topVia()!.transport, transport.toUpperCase(), 'the INVITE came down the registered connection');
    await phone.waitFor(inCall(call.callId, 'ACK'), 3000, 'ACK');
    t.equal((await call.bye()).status, 200);
    await phone.ping();
    t.equal(phone.pongs, 2, 'the flow is still served after a call');
    noErrors(t, phone, door);

    await phone.close();
    await until(async () => (await bindings()) === before, 'the binding removed with its connection');
    const again = door.call(phone.aor);
    t.equal((await again.final(5000)).status, 480, 'a call now finds nobody at once (480), not a dead connection');
  });
}

t.test('a plain TCP registration (no outbound) goes with its connection too', { timeout: 15000 }, async (t) => {
  const phone = await ua(t, 'tcp', name('plain'));
  const door = await ua(t, 'udp', name('door'));
  const before = await bindings();
  const reg = await phone.register({ instance: false });
  t.equal(reg.status, 200);
  t.equal(reg.has('require'), false, 'no reg-id: no Require: outbound');
  t.equal(reg.has('flow-timer'), false);
  await phone.close();
  await until(async () => (await bindings()) === before, 'the binding removed with its connection');
  t.equal((await door.call(phone.aor).final(5000)).status, 480, 'the caller hears 480 at once');
});

t.test('a ws registration goes with its connection', { timeout: 15000 }, async (t) => {
  const web = await WsUA.create({ url: `ws://127.0.0.1:${ports.ws}/`, user: name('web'), domain: 'example.test' });
  t.teardown(() => web.close());
  const door = await ua(t, 'udp', name('door'));
  const before = await bindings();
  t.equal((await web.register()).status, 200);
  t.equal(await bindings(), before + 1);
  await web.close();
  await until(async () => (await bindings()) === before, 'the binding removed');
  t.equal((await door.call(web.aor).final(5000)).status, 480);
});

t.test('a binding with push parameters outlives its connection, for a push to wake the app', { timeout: 15000 }, async (t) => {
  const app = await ua(t, 'tcp', name('app'));
  const before = await bindings();
  const reg = await app.register({ contactParams: 'reg-id=1', uriParams: 'pn-provider=fcm;pn-prid=TOKEN;pn-param=PROJECT', expires: 3600 });
  t.equal(reg.status, 200);
  t.match(reg.get('contact') ?? '', /expires=3600/, 'not cut to the idle timeout: it is meant to sleep');
  await app.close();
  await until(() => server.transport.connectionCount('tcp') === 0, 'the connection closed');
  // The close has been handled (the registrar's removal is one store update away): still there.
  await new Promise((r) => setTimeout(r, 100));
  t.equal(await bindings(), before + 1, 'still registered');
});

t.test('NAT over UDP: a Contact on another port than the source is called at the source; the 200 gives the Contact as registered', { timeout: 15000 }, async (t) => {
  // The phone sends from 127.0.0.5:<its port> but claims port 5060, as a
  // phone behind a NAT that rewrote its port does. (A private address like
  // 192.168.1.20 is used over TCP below: over UDP an ACK to the Contact would
  // leave loopback.)
  const claimed = 'sip:phone@127.0.0.5:5060';
  const phone = await ua(t, 'udp', name('nat'), { localHost: '127.0.0.5', contact: claimed });
  const door = await ua(t, 'udp', name('door'));
  t.not(phone.localPort, 5060, 'the real port differs from the Contact');
  const reg = await phone.register({ instance: false });
  t.equal(reg.status, 200);
  t.match(reg.get('contact') ?? '', new RegExp(`^<${claimed}>;expires=\\d+$`), 'the Contact returned as given');

  const call = door.call(phone.aor);
  t.equal((await call.final(5000)).status, 200, 'the phone answered: its INVITE reached the real source');
  const inv = (await phone.waitIncoming()).request;
  t.equal(inv.uri, claimed, 'the Request-URI is the Contact as registered');
  const bye = await phone.incoming[0].dialog!.bye();
  t.equal(bye.status, 200, 'BYE from the phone answered by the door');
  await door.waitFor(inCall(call.callId, 'BYE'), 3000, 'BYE at the door');
});

t.test(
  'NAT over UDP: a request inside the dialog toward the phone reaches its source',
  { timeout: 15000 },
  async (t) => {
    const phone = await ua(t, 'udp', name('nat'), { localHost: '127.0.0.5', contact: 'sip:phone@127.0.0.5:5060' });
    const door = await ua(t, 'udp', name('door'));
    await phone.register({ instance: false });
    const call = door.call(phone.aor);
    t.equal((await call.final(5000)).status, 200);
    const bye = call.bye();
    t.ok(await phone.waitFor(inCall(call.callId, 'BYE'), 1500, 'BYE at the phone').catch(() => null), 'the BYE reached the phone');
    t.equal((await bye).status, 200, "and the phone's 200 came back to the door");
  },
);

t.test('NAT over TCP: a private Contact; calls and in-dialog requests both ways go down the connection', { timeout: 15000 }, async (t) => {
  const claimed = 'sip:phone@192.168.1.20:5060;transport=tcp';
  const phone = await ua(t, 'tcp', name('nat'), { localHost: '127.0.0.6', contact: claimed });
  const door = await ua(t, 'udp', name('door'));
  const reg = await phone.register({ instance: false });
  t.match(reg.get('contact') ?? '', new RegExp(`^<${claimed.replace(/[.;]/g, '\\$&')}>;expires=\\d+$`), 'the Contact returned as given');

  const first = door.call(phone.aor);
  t.equal((await first.final(5000)).status, 200, 'the call reached the phone down its connection');
  t.equal((await phone.waitIncoming()).request.uri, claimed);
  await phone.waitFor(inCall(first.callId, 'ACK'), 3000, 'ACK down the connection');
  t.equal((await first.bye()).status, 200, "BYE from the door reached the phone (Record-Route's flow token)");

  const second = door.call(phone.aor);
  t.equal((await second.final(5000)).status, 200);
  await phone.waitIncoming();
  await phone.waitFor(inCall(second.callId, 'ACK'), 3000, 'second ACK');
  t.equal((await phone.incoming[1].dialog!.bye()).status, 200, 'BYE from the phone answered');
  noErrors(t, phone, door);
});

t.test('RFC 5626 §5.3: a device registered over two flows (reg-id 1 and 2) is rung once, on its latest flow', async (t) => {
  const user = name('twoflows');
  const instance = 'urn:uuid:00000000-0000-4000-8000-00000000f10f';
  const wifi = await ua(t, 'tcp', user, { instance });
  t.equal((await wifi.register({ contactParams: 'reg-id=1' })).status, 200, 'flow 1 (TCP)');
  const mobile = await ua(t, 'udp', user, { instance });
  t.equal((await mobile.register({ contactParams: 'reg-id=2' })).status, 200, 'flow 2 (UDP), refreshed last');
  const door = await ua(t, 'udp', name('door'));
  const call = door.call(`sip:${user}@example.test`);
  t.equal((await call.final()).status, 200, 'answered');
  t.equal(mobile.filter({ method: 'INVITE' }).length, 1, 'the latest flow rings');
  t.equal(wifi.filter({ method: 'INVITE' }).length, 0, 'the other flow of the same device does not');
  t.equal((await call.bye()).status, 200);
});
