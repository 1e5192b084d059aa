// Calls between WebSocket user agents (RFC 7118) and UDP ones through the
// running server, end to end on 127.0.0.1: the WS side is a hand-written UA
// over `ws` (test/helpers/ws-ua.ts) with `.invalid` hosts in Via and
// Contact, as browsers' SIP stacks send; the UDP side is test/helpers/ua.ts.
// Every request to a WS client has to go down its connection: the REGISTER's
// for new requests, the Record-Route flow for requests inside a dialog.
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import type { SipMessage } from '../src/sip/index.js';
import { makeTestCerts, opensslMissing, type TestCerts } from './helpers/certs.js';
import { newBranch, UA } from './helpers/ua.js';
import { until } from './helpers/wait.js';
import { WsUA } from './helpers/ws-ua.js';

const noOpenssl = opensslMissing();
// Requests inside a dialog toward a WS client go down its connection, named
// by the flow token of Portier's Record-Route: its Contact host is `.invalid`.
let certs: TestCerts | null = null;
let server: RunningServer;
const ports = { udp: 0, ws: 0, wss: 0 };

t.before(async () => {
  certs = noOpenssl === null ? makeTestCerts() : null;
  const listen = ['udp:127.0.0.1:0', 'ws:127.0.0.1:0', ...(certs ? ['wss:127.0.0.1:0'] : [])];
  const config = parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      `listen: [${listen.join(', ')}]`,
      ...(certs ? [`tls: {cert: ${certs.paths.serverCert}, key: ${certs.paths.serverKey}}`] : []),
      'websocket: {path: /sip}',
      'proxy: {ring-timeout: 3}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
      'metrics: {listen: "127.0.0.1:0"}',
    ].join('\n'),
    'ws-calls.yaml',
  );
  server = await startServer(config, createLogger('fatal'));
  for (const ep of server.listening()) if (ep.protocol === 'udp' || ep.protocol === 'ws' || ep.protocol === 'wss') ports[ep.protocol] = ep.port;
});
t.teardown(async () => {
  await server.stop();
  certs?.remove();
});

let seq = 0;
const name = (base: string): string => `${base}${++seq}`;

async function udpUa(t: Test, user: string): Promise<UA> {
  const u = await UA.create({ transport: 'udp', user, domain: 'example.test', proxyPort: ports.udp });
  t.teardown(() => u.close());
  return u;
}

async function wsUa(t: Test, user: string, secure = false, binary = false): Promise<WsUA> {
  const url = secure ? `wss://localhost:${ports.wss}/sip` : `ws://127.0.0.1:${ports.ws}/sip`;
  const u = await WsUA.create({ url, user, domain: 'example.test', ca: certs?.caCert, binary });
  t.teardown(() => u.close());
  return u;
}

function noErrors(t: Test, ...uas: Array<UA | WsUA>): void {
  for (const u of uas) t.same(u.errors.map((e) => e.message), [], `${u.user}: the UA met no protocol error`);
}

/** OPTIONS or MESSAGE from a UDP UA, outside any dialog; resolves with the final response. */
function udpRequest(u: UA, method: string, target: string, body?: string): Promise<SipMessage> {
  const { bytes, msg } = u.request({
    method,
    ruri: target,
    branch: newBranch(),
    from: `<${u.aor}>;tag=${randomBytes(4).toString('hex')}`,
    to: `<${target}>`,
    callId: randomBytes(8).toString('hex'),
    cseq: 1,
    body,
    contentType: 'text/plain',
  });
  return u.startClient(bytes, msg, u.proxy).done;
}

const inCall = (callId: string, method: string) => (m: SipMessage) => m.isRequest && m.method === method && m.callId() === callId;

for (const secure of [false, true]) {
  const proto = secure ? 'wss' : 'ws';
  const skip = secure && noOpenssl !== null ? noOpenssl : false;

  t.test(`UDP caller → ${proto} callee registered with a .invalid Contact: INVITE, ACK, BYE from each end`, { timeout: 20000, skip }, async (t) => {
    const web = await wsUa(t, name('web'), secure);
    const door = await udpUa(t, name('door'));
    const reg = await web.register();
    t.equal(reg.status, 200, 'registered over ' + proto);
    t.match(reg.get('contact') ?? '', /\.invalid;transport=/, 'the Contact as given');
    await door.register();

    // BYE from the WS callee.
    const call = door.call(web.aor);
    const ok = await call.final(5000);
    t.equal(ok.status, 200, 'UDP caller got the 200 from the WS callee');
    const inv = web.incoming[0].request;
    const top = inv.topVia()!;
    t.equal(top.transport, proto.toUpperCase(), `Portier's Via on the ${proto} branch says ${proto.toUpperCase()}`);
    t.equal(top.host, '127.0.0.1', 'with a host, not .invalid');
    t.equal(top.port, ports[proto]);
    const rr = inv.getAll('record-route');
    t.equal(rr.length, 2, 'double Record-Route across transports (RFC 5658)');
    t.match(rr[0], new RegExp(`transport=${proto}`), 'the top entry on the WS side');
    const bye = await web.incoming[0].dialog.bye();
    t.equal(bye.status, 200, 'BYE from the WS callee answered by the UDP caller');
    await door.waitFor(inCall(call.callId, 'BYE'), 3000, 'BYE at the UDP caller');

    noErrors(t, web, door);

    await t.test('ACK and BYE from the UDP caller reach the ws callee down its flow', async (t) => {
      t.ok(await web.waitFor(inCall(call.callId, 'ACK'), 3000, 'ACK of the 2xx'), 'ACK of the first call');
      const call2 = door.call(web.aor);
      t.equal((await call2.final(5000)).status, 200, 'second call answered');
      const d2 = web.incoming[1].dialog;
      t.ok(await web.waitFor(inCall(call2.callId, 'ACK'), 3000, 'ACK of the second call'), 'ACK of the second call');
      t.equal((await call2.bye()).status, 200, 'BYE from the UDP caller answered by the WS callee');
      t.ok(d2.terminated, 'the WS callee got the BYE');
      noErrors(t, web, door);
    });
  });

  t.test(`${proto} caller → UDP callee: INVITE, ACK, BYE from each end`, { timeout: 20000, skip }, async (t) => {
    const web = await wsUa(t, name('web'), secure);
    const phone = await udpUa(t, name('phone'));
    t.equal((await web.register()).status, 200);
    await phone.register();
    phone.onInvite = () => ({ action: 'answer', ring: true, after: 20 });

    const first = await web.call(phone.aor);
    t.equal(first.final.status, 200, 'WS caller got the 200 over its connection');
    t.ok(first.final.topVia()!.host.endsWith('.invalid'), "the response carries the client's own Via: it went back down its connection");
    const incoming = await phone.waitIncoming();
    await phone.waitFor(inCall(first.final.callId(), 'ACK'), 3000, 'ACK at the UDP callee');
    t.equal(incoming.request.topVia()!.transport, 'UDP');
    t.equal((await first.dialog!.bye()).status, 200, 'BYE from the WS caller answered');

    noErrors(t, web, phone);

    await t.test('BYE from the UDP callee reaches the ws caller down its flow', async (t) => {
      const second = await web.call(phone.aor);
      t.equal(second.final.status, 200);
      const inc2 = await phone.waitIncoming();
      await phone.waitFor(inCall(second.final.callId(), 'ACK'), 3000, 'second ACK');
      t.equal((await inc2.dialog!.bye()).status, 200, 'BYE from the UDP callee answered by the WS caller');
      t.ok(second.dialog!.terminated, 'the WS caller got the BYE down its connection');
      noErrors(t, web, phone);
    });
  });
}

t.test('OPTIONS and MESSAGE round trips, text and binary WebSocket messages', { timeout: 15000 }, async (t) => {
  const web = await wsUa(t, name('web'));
  const bin = await wsUa(t, name('bin'), false, true);
  const phone = await udpUa(t, name('phone'));
  t.equal((await web.register()).status, 200);
  t.equal((await bin.register()).status, 200, 'REGISTER in a binary message');
  await phone.register();

  const ping = await web.request('OPTIONS', 'sip:example.test');
  t.equal(ping.status, 200, 'OPTIONS to Portier itself over ws');
  t.match(ping.get('allow') ?? '', /MESSAGE/);

  const toPhone = await web.request('MESSAGE', phone.aor, { body: 'door opened', contentType: 'text/plain' });
  const got = await phone.waitFor({ method: 'MESSAGE' });
  t.equal(got.body.toString('utf8'), 'door opened', 'MESSAGE from ws reached the udp phone');
  // The test UA takes no MESSAGE (405): what matters is that its answer came back over ws.
  t.equal(toPhone.status, 405, "the phone's answer reached the ws client");

  t.equal((await udpRequest(phone, 'OPTIONS', web.aor)).status, 200, 'OPTIONS from udp to the ws client, down its flow');
  t.equal((await udpRequest(phone, 'MESSAGE', bin.aor, 'ring ring')).status, 200, 'MESSAGE from udp to a binary ws client');
  const atBin = await bin.waitFor({ method: 'MESSAGE' });
  t.equal(atBin.body.toString('utf8'), 'ring ring');
  t.equal(atBin.topVia()!.transport, 'WS');
  t.equal(server.transport.connectionCount('ws'), 2, 'two ws connections counted under ws');
  const m = server.metricsAddress()!;
  const text = await (await fetch(`http://${m.address}:${m.port}/metrics`)).text();
  t.match(text, /^portier_connections_active\{transport="ws"\} 2$/m, 'portier_connections_active{transport="ws"}');
  t.match(text, /^portier_connections_active\{transport="wss"\} 0$/m, 'and wss');
  noErrors(t, web, bin, phone);
});

t.test('a ws client whose connection is gone cannot be reached: its binding went with it (480 at once), nothing dialled', { timeout: 15000 }, async (t) => {
  const web = await wsUa(t, name('web'));
  const door = await udpUa(t, name('door'));
  t.equal((await web.register()).status, 200);
  const before = server.transport.stats.connectionsOutbound;
  await web.close();
  await until(() => server.transport.connectionCount('ws') === 0, 'connection gone');
  // The registrar removes a binding with its connection (test/flows.test.ts);
  // the removal is one store update after the close.
  await new Promise((r) => setTimeout(r, 50));
  const call = door.call(web.aor);
  const started = Date.now();
  const res = await call.final(5000);
  t.equal(res.status, 480, 'the caller hears that nobody is registered');
  t.ok(Date.now() - started < 1000, `at once, not a timeout (${Date.now() - started} ms)`);
  const msg = await udpRequest(door, 'MESSAGE', web.aor, 'anyone?');
  t.equal(msg.status, 480, 'a MESSAGE too');
  t.equal(server.transport.stats.connectionsOutbound, before, 'Portier never dials out WebSocket');
});
