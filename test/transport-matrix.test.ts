// A call over every pair of transports among UDP, TCP, TLS, WS and WSS
// (caller on one, callee on the other: all 25 pairs, since the same
// transport on both sides and each direction take different paths: one
// Record-Route entry with both flow tokens, or two with one each), each answered
// twice: hung up once by the callee, once by the caller, so that an
// in-dialog request crosses Portier both ways over both transports. Then
// the stream listener protections end to end: a TLS listener with
// `verify-clients: required` refuses a client without a certificate, and a
// connection that sends half a header and stalls is closed after
// `limits.first-message-timeout`.
import net from 'node:net';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import type { SipMessage } from '../src/sip/index.js';
import { makeTestCerts, opensslMissing, type TestCerts } from './helpers/certs.js';
import { UA } from './helpers/ua.js';
import { until } from './helpers/wait.js';
import { WsUA } from './helpers/ws-ua.js';

const noOpenssl = opensslMissing();
if (noOpenssl !== null) t.plan(0, noOpenssl);
const certs: TestCerts = noOpenssl === null ? makeTestCerts() : (null as unknown as TestCerts);
t.teardown(() => certs?.remove());

type Proto = 'udp' | 'tcp' | 'tls' | 'ws' | 'wss';
const PROTOS: Proto[] = ['udp', 'tcp', 'tls', 'ws', 'wss'];

async function portier(t: Test, lines: string[]): Promise<{ server: RunningServer; ports: Record<string, number> }> {
  const config = parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      'proxy: {ring-timeout: 5}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
      ...lines,
    ].join('\n'),
    'matrix.yaml',
  );
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const ports: Record<string, number> = {};
  for (const ep of server.listening()) ports[ep.protocol] = ep.port;
  return { server, ports };
}

/** One side of a call, whatever its transport. */
interface Party {
  readonly user: string;
  readonly aor: string;
  register(): Promise<number>;
  /** Calls `target`; resolves with the final status and, when answered, a way to hang up. */
  call(target: string): Promise<{ status: number; callId: string; rr: number; bye: () => Promise<number> }>;
  /** The next call this party received (answered automatically), once its ACK came. */
  answered(callId: string): Promise<{ invite: SipMessage; bye: () => Promise<number> }>;
  /** A BYE of that call reached this party. */
  gotBye(callId: string): Promise<boolean>;
  errors(): string[];
}

const isReq = (callId: string, method: string) => (m: SipMessage) => m.isRequest && m.method === method && m.callId() === callId;

let seq = 0;

async function party(t: Test, proto: Proto, ports: Record<string, number>, role: string): Promise<Party> {
  const user = `${role}-${proto}-${++seq}`;
  if (proto === 'ws' || proto === 'wss') {
    const url = proto === 'wss' ? `wss://localhost:${ports.wss}/` : `ws://127.0.0.1:${ports.ws}/`;
    const u = await WsUA.create({ url, user, domain: 'example.test', ca: certs.caCert });
    t.teardown(() => u.close());
    return {
      user,
      aor: u.aor,
      register: async () => (await u.register()).status,
      call: async (target) => {
        const r = await u.call(target);
        return { status: r.final.status, callId: r.final.callId(), rr: (r.final.recordRoutes() ?? []).length, bye: async () => (await r.dialog!.bye()).status };
      },
      answered: async (callId) => {
        await u.waitFor(isReq(callId, 'ACK'), 5000, 'ACK');
        const inc = u.incoming.find((i) => i.request.callId() === callId)!;
        return { invite: inc.request, bye: async () => (await inc.dialog.bye()).status };
      },
      gotBye: async (callId) => (await u.waitFor(isReq(callId, 'BYE'), 5000, 'BYE')) !== undefined,
      errors: () => u.errors.map((e) => e.message),
    };
  }
  const u = await UA.create({ transport: proto, user, domain: 'example.test', proxyPort: ports[proto], t1: 100, t2: 400, tls: { ca: certs.caCert } });
  t.teardown(() => u.close());
  u.onInvite = () => ({ action: 'answer', ring: true, after: 10 });
  return {
    user,
    aor: u.aor,
    register: async () => (await u.register()).status,
    call: async (target) => {
      const c = u.call(target);
      const final = await c.final(6000);
      return { status: final.status, callId: c.callId, rr: (final.recordRoutes() ?? []).length, bye: async () => (await c.bye()).status };
    },
    answered: async (callId) => {
      await u.waitFor(isReq(callId, 'ACK'), 5000, 'ACK');
      const inc = u.incoming.find((i) => i.request.callId() === callId)!;
      return { invite: inc.request, bye: async () => (await inc.dialog!.bye()).status };
    },
    gotBye: async (callId) => (await u.waitFor(isReq(callId, 'BYE'), 5000, 'BYE')) !== undefined,
    errors: () => u.errors.map((e) => e.message),
  };
}

t.test('a call over each of the 25 pairs of transports, BYE from each end', { timeout: 120000 }, async (t) => {
  const { ports } = await portier(t, [
    'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0, tls:127.0.0.1:0, ws:127.0.0.1:0, wss:127.0.0.1:0]',
    `tls: {cert: ${certs.paths.serverCert}, key: ${certs.paths.serverKey}}`,
  ]);
  for (const from of PROTOS) {
    for (const to of PROTOS) {
      await t.test(`${from} → ${to}`, async (t) => {
        const caller = await party(t, from, ports, 'caller');
        const callee = await party(t, to, ports, 'callee');
        t.equal(await caller.register(), 200, `caller registered over ${from}`);
        t.equal(await callee.register(), 200, `callee registered over ${to}`);
        // RFC 5658: two entries when the call changes transport, each naming its
        // own side's flow; one on the same transport, carrying both flows.
        const rr = from === to ? 1 : 2;

        // Hung up by the callee: its BYE crosses back to the caller's transport.
        const one = await caller.call(callee.aor);
        t.equal(one.status, 200, 'answered');
        t.equal(one.rr, rr, `${rr} Record-Route entr${rr === 1 ? 'y' : 'ies'} in the 200`);
        const atCallee = await callee.answered(one.callId);
        t.equal(atCallee.invite.topVia()!.transport, to.toUpperCase(), `Portier's INVITE reached the callee over ${to}`);
        t.equal(await atCallee.bye(), 200, 'BYE from the callee answered by the caller');
        t.ok(await caller.gotBye(one.callId), `the caller got it over ${from}`);

        // Hung up by the caller.
        const two = await caller.call(callee.aor);
        t.equal(two.status, 200, 'answered again');
        await callee.answered(two.callId);
        t.equal(await two.bye(), 200, 'BYE from the caller answered by the callee');
        t.ok(await callee.gotBye(two.callId), `the callee got it over ${to}`);

        t.same([...caller.errors(), ...callee.errors()], [], 'no protocol error at either end');
      });
    }
  }
});

/** Resolves when `s` closes; false if it is still open after `ms`. */
function closed(s: net.Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve(true);
    const timer = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

const OPTIONS = (port: number, proto: string) =>
  [
    `OPTIONS sip:127.0.0.1:${port};transport=${proto} SIP/2.0`,
    `Via: SIP/2.0/${proto.toUpperCase()} 127.0.0.1:9;branch=z9hG4bK-m${++seq};rport`,
    'Max-Forwards: 70',
    'From: <sip:door@example.test>;tag=m1',
    `To: <sip:127.0.0.1:${port}>`,
    `Call-ID: matrix-${seq}@test`,
    'CSeq: 1 OPTIONS',
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');

t.test('verify-clients: required, and the first-message timeout, through the running server', { timeout: 30000 }, async (t) => {
  const { server, ports } = await portier(t, [
    'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0, tls:127.0.0.1:0]',
    `tls: {cert: ${certs.paths.serverCert}, key: ${certs.paths.serverKey}, ca: ${certs.paths.caCert}, verify-clients: required}`,
    'limits: {first-message-timeout: 0.5}',
  ]);

  await t.test('a door station without a client certificate is refused', async (t) => {
    const before = server.transport.stats.dropped['tls-handshake'];
    const s = tls.connect({ host: '127.0.0.1', port: ports.tls, ca: certs.caCert, servername: 'localhost' });
    s.on('error', () => {}); // the refusal
    const replies: Buffer[] = [];
    s.on('data', (d: Buffer) => replies.push(d));
    // With TLS 1.3 the client finishes its handshake before the server has
    // checked it: write at once, the server must still answer nothing.
    s.once('secureConnect', () => s.write(OPTIONS(ports.tls, 'tls')));
    t.ok(await closed(s, 5000), 'the connection is closed');
    t.same(replies, [], 'never answered');
    await until(() => server.transport.stats.dropped['tls-handshake'] > before, 'the refusal counted');
  });

  await t.test('a door station with its certificate is served', async (t) => {
    const ua = await UA.create({ transport: 'tls', user: 'door-cert', domain: 'example.test', proxyPort: ports.tls, tls: { ca: certs.caCert, cert: certs.clientCert, key: certs.clientKey } });
    t.teardown(() => ua.close());
    t.equal((await ua.register()).status, 200, 'REGISTER over TLS with a client certificate');
  });

  for (const proto of ['tcp', 'tls'] as const) {
    await t.test(`${proto}: half a header, then silence: closed after the first-message timeout`, async (t) => {
      const s =
        proto === 'tls'
          ? tls.connect({ host: '127.0.0.1', port: ports.tls, ca: certs.caCert, servername: 'localhost', cert: certs.clientCert, key: certs.clientKey })
          : net.connect({ host: '127.0.0.1', port: ports.tcp });
      s.on('error', () => {});
      const replies: Buffer[] = [];
      s.on('data', (d: Buffer) => replies.push(d));
      await new Promise<void>((resolve) => s.once(proto === 'tls' ? 'secureConnect' : 'connect', () => resolve()));
      const before = server.transport.stats.dropped.timeout;
      s.write(OPTIONS(ports[proto], proto).slice(0, 90)); // stops inside the Via line
      t.ok(await closed(s, 10000), 'closed by Portier');
      t.same(replies, [], 'nothing answered');
      t.ok(server.transport.stats.dropped.timeout > before, 'counted as a timeout');
    });
  }

  await t.test('a connection that sends its message in time stays open', async (t) => {
    const s = net.connect({ host: '127.0.0.1', port: ports.tcp });
    t.teardown(() => s.destroy());
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    await new Promise<void>((resolve) => s.once('connect', () => resolve()));
    s.write(OPTIONS(ports.tcp, 'tcp'));
    await until(() => Buffer.concat(got).includes('SIP/2.0 200'), 'the 200');
    t.notOk(await closed(s, 1000), 'still open past the first-message timeout');
  });
});
