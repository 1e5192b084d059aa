// sips: (RFC 3261 §26.2, RFC 5630) through the running server: a sips
// request travels over TLS or WSS on every hop. It rings only the devices
// registered over TLS or WSS (480 when there is none), its dialog's
// Record-Route entries are sips URIs, it is refused when it arrives over a
// plain transport or names a plain next hop (403), and a sips URI with
// transport=tcp is reached over TLS.
import net from 'node:net';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import type { SipMessage } from '../src/sip/index.js';
import { makeTestCerts, opensslMissing, type TestCerts } from './helpers/certs.js';
import { UA, type UAOptions, type UATransport } from './helpers/ua.js';
import { until } from './helpers/wait.js';
import { WsUA } from './helpers/ws-ua.js';

const noOpenssl = opensslMissing();
if (noOpenssl !== null) t.plan(0, noOpenssl);
const certs: TestCerts = noOpenssl === null ? makeTestCerts() : (null as unknown as TestCerts);
t.teardown(() => certs?.remove());

async function portier(t: Test, extra: string[] = []): Promise<{ server: RunningServer; ports: Record<string, number> }> {
  const config = parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0, tls:127.0.0.1:0, wss:127.0.0.1:0]',
      `tls: {cert: ${certs.paths.serverCert}, key: ${certs.paths.serverKey}}`,
      'proxy: {ring-timeout: 5}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
      // The other server of these tests is on this machine.
      'security: {relay-to-loopback: true}',
      ...extra,
    ].join('\n'),
    join(certs.dir, 'sips.yaml'),
  );
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const ports: Record<string, number> = {};
  for (const ep of server.listening()) ports[ep.protocol] = ep.port;
  return { server, ports };
}

let seq = 0;
async function ua(t: Test, ports: Record<string, number>, transport: UATransport, user: string, o: Partial<UAOptions> = {}): Promise<UA> {
  const u = await UA.create({ transport, user, domain: 'example.test', proxyPort: ports[transport], t1: 100, t2: 400, tls: { ca: certs.caCert }, ...o });
  t.teardown(() => u.close());
  u.onInvite = () => ({ action: 'answer', ring: true, after: 10 });
  return u;
}
const sipsAor = (u: { user: string }) => `sips:${u.user}@example.test`;
const inCall = (callId: string, method: string) => (m: SipMessage) => m.isRequest && m.method === method && m.callId() === callId;

/** Portier's Record-Route entries are sips URIs, TLS implied (no transport=tls). */
function sipsRecordRoutes(t: Test, m: SipMessage, what: string): void {
  const rr = m.getAll('record-route');
  t.ok(rr.length > 0, `${what}: Record-Route present`);
  for (const v of rr) {
    t.match(v, /^<sips:/, `${what}: ${v.slice(0, 40)}… is a sips URI`);
    t.notMatch(v, /transport=tls/, `${what}: no transport=tls`);
  }
}

t.test('sips on one server', async (t) => {
  const { ports } = await portier(t);

  await t.test('a sips call rings only the TLS device; Record-Route is sips; BYE from each end', async (t) => {
    const alice = await ua(t, ports, 'tls', `alice${++seq}`, { sipsContact: true });
    const bobTls = await ua(t, ports, 'tls', `bob${++seq}`, { sipsContact: true });
    const bobUdp = await ua(t, ports, 'udp', bobTls.user);
    t.equal((await alice.register()).status, 200);
    t.equal((await bobTls.register()).status, 200);
    t.equal((await bobUdp.register()).status, 200, 'the same account on UDP as well');

    const call = alice.call(sipsAor(bobTls));
    const ok = await call.final(5000);
    t.equal(ok.status, 200, 'answered by the TLS device');
    const inv = (await bobTls.waitIncoming()).request;
    sipsRecordRoutes(t, inv, 'INVITE at the callee');
    sipsRecordRoutes(t, ok, '200 at the caller');
    t.equal(bobUdp.filter({ method: 'INVITE' }).length, 0, 'the UDP device was never sent the sips request');
    await bobTls.waitFor(inCall(call.callId, 'ACK'), 3000, 'ACK');
    t.equal((await bobTls.incoming[0].dialog!.bye()).status, 200, 'BYE from the callee, over TLS both hops');

    const again = alice.call(sipsAor(bobTls));
    t.equal((await again.final(5000)).status, 200);
    await bobTls.waitFor(inCall(again.callId, 'ACK'), 3000, 'second ACK');
    t.equal((await again.bye()).status, 200, 'BYE from the caller');
    t.same([...alice.errors, ...bobTls.errors, ...bobUdp.errors].map((e) => e.message), []);
  });

  await t.test('a sips call to devices on UDP and TCP only: 480, and neither is sent anything', async (t) => {
    const alice = await ua(t, ports, 'tls', `alice${++seq}`, { sipsContact: true });
    const udp = await ua(t, ports, 'udp', `carol${++seq}`);
    const tcp = await ua(t, ports, 'tcp', udp.user);
    await alice.register();
    await udp.register();
    await tcp.register();
    t.equal((await alice.call(sipsAor(udp)).final(5000)).status, 480, 'no TLS path to any of them (RFC 5630)');
    t.equal(udp.filter({ method: 'INVITE' }).length + tcp.filter({ method: 'INVITE' }).length, 0, 'never forwarded over UDP or TCP');
    t.same([...udp.received, ...tcp.received].filter((m) => m.isRequest).map((m) => m.method), [], 'neither is sent any request');
    t.equal((await alice.call(`sip:${udp.user}@example.test`).final(5000)).status, 200, 'the same account by sip: is reached');
  });

  await t.test('a sips call to a WSS device: the WSS side of the Record-Route is sips:...;transport=ws', async (t) => {
    const alice = await ua(t, ports, 'tls', `alice${++seq}`, { sipsContact: true });
    const web = await WsUA.create({ url: `wss://localhost:${ports.wss}/`, user: `web${++seq}`, domain: 'example.test', ca: certs.caCert });
    t.teardown(() => web.close());
    await alice.register();
    t.equal((await web.register()).status, 200);
    const call = alice.call(sipsAor(web));
    t.equal((await call.final(5000)).status, 200);
    const inv = web.incoming[0].request;
    sipsRecordRoutes(t, inv, 'INVITE at the WSS callee');
    t.match(inv.getAll('record-route')[0], /^<sips:[^>]*;transport=ws;/, 'RFC 7118: WSS is sips with transport=ws');
    await web.waitFor(inCall(call.callId, 'ACK'), 3000, 'ACK over WSS');
    t.equal((await web.incoming[0].dialog.bye()).status, 200, 'BYE from the WSS callee');
    t.same([...alice.errors.map((e) => e.message), ...web.errors.map((e) => e.message)], []);
  });

  await t.test('a sips request arriving over UDP or TCP: 403', async (t) => {
    const bob = await ua(t, ports, 'tls', `bob${++seq}`, { sipsContact: true });
    await bob.register();
    for (const transport of ['udp', 'tcp'] as const) {
      const door = await ua(t, ports, transport, `door${++seq}`);
      const res = await door.call(sipsAor(bob)).final(5000);
      t.equal(res.status, 403, `over ${transport}`);
      t.equal(res.reason, 'TLS Required');
    }
    t.equal(bob.filter({ method: 'INVITE' }).length, 0, 'the callee never rang');
  });
});

t.test('sips toward another server (trusted caller): transport=udp refused, transport=tcp means TLS', async (t) => {
  writeFileSync(join(certs.dir, 'users'), '');
  const { ports } = await portier(t, ['auth: {users: users, trusted: [127.0.0.9]}']);
  // A plain TCP socket standing in for the other server: it tells a TLS ClientHello (0x16) from SIP text.
  const firstBytes: number[] = [];
  const pbx = net.createServer((s) => {
    s.once('data', (d: Buffer) => {
      firstBytes.push(d[0]);
      s.destroy(); // seen enough: the handshake fails at once
    });
    s.on('error', () => {});
  });
  await new Promise<void>((resolve) => pbx.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => pbx.close(() => resolve())));
  const pbxPort = (pbx.address() as net.AddressInfo).port;

  const door = await ua(t, ports, 'tls', 'door', { localHost: '127.0.0.9', sipsContact: true });
  const refused = await door.call(`sips:100@127.0.0.1:${pbxPort};transport=udp`).final(5000);
  t.equal(refused.status, 403, 'a sips target over UDP: refused');
  t.equal(refused.reason, 'TLS Required');

  const viaTls = door.call(`sips:100@127.0.0.1:${pbxPort};transport=tcp`);
  await until(() => firstBytes.length > 0, 'a connection to the other server');
  t.equal(firstBytes[0], 0x16, 'sips with transport=tcp is TLS over TCP: a ClientHello, not SIP in clear');
  t.equal((await viaTls.final(5000)).status, 500, 'and the failed handshake ends the call (503, forwarded as 500)');
});
