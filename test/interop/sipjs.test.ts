// Interop with SIP.js (the SIP stack of many web softphones) run in Node,
// `ws` as its global WebSocket, against Portier over ws: with digest
// accounts. A UDP user agent (test/helpers/ua.ts) is the other party:
// register, MESSAGE both ways, and calls both ways with a media-less
// session description handler (a fixed SDP: media is out of reach in Node).
// SIP.js answers MD5 challenges only, and of several WWW-Authenticate
// headers it reads the last: Portier's default order (SHA-256, then MD5)
// is what lets it in.
import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import {
  Invitation,
  Inviter,
  Messager,
  Registerer,
  RegistererState,
  SessionState,
  UserAgent,
  type Message,
  type Session,
  type SessionDescriptionHandler,
} from 'sip.js';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { defaultSdp } from '../helpers/ua.js';
import { usersLine } from '../helpers/tools.js';
import { until } from '../helpers/wait.js';
import { udpMessage, udpUa } from './clients.js';

// Node 20 has no WebSocket global; SIP.js uses the browser API, which ws provides.
(globalThis as { WebSocket?: unknown }).WebSocket ??= WebSocket;

// A BYE toward a WS client goes down its connection, named by the flow token of Portier's Record-Route (its Contact is `.invalid`).
const PASSWORD = 'correct horse 7';
let server: RunningServer;
const ports = { udp: 0, ws: 0 };

t.before(async () => {
  const dir = t.testdir({});
  const users = ['web', 'web2', 'phone', 'phone2', 'phone3'].map((u) => usersLine(u, PASSWORD)).join('\n') + '\n';
  writeFileSync(join(dir, 'users'), users);
  const config = parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      'listen: [udp:127.0.0.1:0, ws:127.0.0.1:0]',
      'websocket: {path: /sip}',
      'auth: {users: users, realm: example.test}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  server = await startServer(config, createLogger('fatal'));
  for (const ep of server.listening()) if (ep.protocol === 'udp' || ep.protocol === 'ws') ports[ep.protocol] = ep.port;
});
t.teardown(() => server.stop());

/** No media in Node: a fixed offer or answer, whatever the other side sent. */
class NoMediaHandler implements SessionDescriptionHandler {
  readonly received: string[] = [];
  constructor(private readonly user: string) {}
  close(): void {}
  getDescription() {
    return Promise.resolve({ body: defaultSdp(this.user), contentType: 'application/sdp' });
  }
  hasDescription(contentType: string): boolean {
    return contentType === 'application/sdp';
  }
  setDescription(sdp: string): Promise<void> {
    this.received.push(sdp);
    return Promise.resolve();
  }
  sendDtmf(): boolean {
    return false;
  }
}

interface WebPhone {
  ua: UserAgent;
  registerer: Registerer;
  messages: Message[];
  invitations: Invitation[];
  warnings: string[];
}

async function webPhone(t: Test, user: string): Promise<WebPhone> {
  const w: WebPhone = { ua: null as unknown as UserAgent, registerer: null as unknown as Registerer, messages: [], invitations: [], warnings: [] };
  w.ua = new UserAgent({
    uri: UserAgent.makeURI(`sip:${user}@example.test`),
    transportOptions: { server: `ws://127.0.0.1:${ports.ws}/sip`, connectionTimeout: 5 },
    authorizationUsername: user,
    authorizationPassword: PASSWORD,
    logBuiltinEnabled: false,
    logConnector: (level, category, _label, content) => {
      if (level === 'error' || level === 'warn') w.warnings.push(`${category}: ${content}`);
    },
    sessionDescriptionHandlerFactory: () => new NoMediaHandler(user),
    delegate: {
      onMessage: (m) => {
        w.messages.push(m);
        void m.accept();
      },
      onInvite: (inv) => {
        w.invitations.push(inv);
      },
    },
  });
  // stop() unregisters and ends sessions, each answered: bounded all the same.
  t.teardown(() => Promise.race([w.ua.stop().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]));
  await w.ua.start();
  w.registerer = new Registerer(w.ua, { expires: 300 });
  await w.registerer.register();
  await until(() => w.registerer.state === RegistererState.Registered, `${user} registered`, 5000);
  return w;
}

function established(s: Session): Promise<void> {
  return until(() => s.state === SessionState.Established, 'session established', 5000);
}

t.test('SIP.js registers over ws with digest, with a .invalid Contact on its connection', { timeout: 20000 }, async (t) => {
  const w = await webPhone(t, 'web');
  t.equal(w.registerer.state, RegistererState.Registered, 'Registered');
  t.equal(server.transport.connectionCount('ws'), 1, 'one ws connection');
  t.same(w.warnings, [], 'SIP.js logged no warning or error');
  await w.registerer.unregister();
  await until(() => w.registerer.state === RegistererState.Unregistered, 'unregistered', 5000);
});

t.test('MESSAGE round trips between SIP.js over ws and a UDP UA', { timeout: 20000 }, async (t) => {
  const w = await webPhone(t, 'web');
  const phone = await udpUa(t, ports.udp, 'phone', PASSWORD);
  const res = await udpMessage(phone, 'sip:web@example.test', 'door opened');
  t.equal(res.status, 200, 'SIP.js accepted the MESSAGE from UDP');
  t.equal(w.messages.length, 1);
  t.equal(w.messages[0].request.body, 'door opened');

  const got = phone.waitFor({ method: 'MESSAGE' }, 5000, 'MESSAGE from SIP.js');
  let answer = 0;
  await new Messager(w.ua, UserAgent.makeURI(phone.aor)!, 'ring ring').message({
    requestDelegate: { onAccept: (r) => (answer = r.message.statusCode ?? 0), onReject: (r) => (answer = r.message.statusCode ?? 0) },
  });
  const m = await got;
  t.equal(m.body.toString('utf8'), 'ring ring', 'the MESSAGE from SIP.js reached the UDP UA (after SIP.js answered the 407)');
  // The test UA takes no MESSAGE: its 405 coming back to SIP.js closes the round trip.
  await until(() => answer !== 0, "the UDP UA's answer at SIP.js", 5000);
  t.equal(answer, 405);
  t.same(w.warnings, []);
});

// Without the flow token the ACK never reaches SIP.js, which then holds its
// BYE back (RFC 3261 §15) and its shutdown with it: the whole call waits for it.
t.test('a UDP UA calls SIP.js: INVITE, 200; ACK, then BYE from either end', { timeout: 20000 }, async (t) => {
  const w = await webPhone(t, 'web2');
  const phone = await udpUa(t, ports.udp, 'phone2', PASSWORD);
  const call = phone.call('sip:web2@example.test');
  await until(() => w.invitations.length === 1, 'INVITE at SIP.js', 5000);
  const inv = w.invitations[0];
  t.equal(inv.request.getHeader('via')?.split(' ')[0], 'SIP/2.0/WS', "Portier's Via toward SIP.js says WS");
  await inv.accept();
  const ok = await call.final(5000);
  t.equal(ok.status, 200, 'the UDP caller got the 200 from SIP.js');
  t.same(phone.errors.map((e) => e.message), []);

  // SIP.js sends no BYE before the ACK of its 2xx has come (RFC 3261 §15).
  await t.test('the ACK reaches SIP.js; BYE from SIP.js; a BYE from the UDP caller reaches SIP.js', async (t) => {
    await established(inv);
    await until(() => phone.sent.some((m) => m.method === 'ACK' && m.callId() === call.callId), 'ACK sent', 5000);
    await inv.bye();
    await phone.waitFor((m) => m.isRequest && m.method === 'BYE' && m.callId() === call.callId, 5000, 'BYE from SIP.js');
    await until(() => inv.state === SessionState.Terminated, 'terminated', 5000);
    t.pass('BYE from SIP.js after the ACK reached it');

    const again = phone.call('sip:web2@example.test');
    await until(() => w.invitations.length === 2, 'second INVITE at SIP.js', 5000);
    await w.invitations[1].accept();
    t.equal((await again.final(5000)).status, 200);
    await established(w.invitations[1]);
    t.equal((await again.bye()).status, 200, 'SIP.js answered the BYE');
    t.equal(w.invitations[1].state, SessionState.Terminated);
  });
});

t.test('SIP.js calls a UDP UA: INVITE with digest, 200, ACK; BYE from SIP.js', { timeout: 20000 }, async (t) => {
  const w = await webPhone(t, 'web');
  const phone = await udpUa(t, ports.udp, 'phone3', PASSWORD);
  phone.onInvite = () => ({ action: 'answer', ring: true, after: 20 });
  const inviter = new Inviter(w.ua, UserAgent.makeURI(phone.aor)!);
  await inviter.invite();
  await established(inviter);
  const incoming = await phone.waitIncoming(5000);
  t.match(incoming.request.body.toString('utf8'), /^v=0/m, "SIP.js's offer reached the UDP UA");
  await phone.waitFor((m) => m.isRequest && m.method === 'ACK' && m.callId() === incoming.request.callId(), 5000, 'ACK from SIP.js');
  await inviter.bye();
  await phone.waitFor((m) => m.isRequest && m.method === 'BYE' && m.callId() === incoming.request.callId(), 5000, 'BYE from SIP.js');
  await until(() => inviter.state === SessionState.Terminated, 'terminated', 5000);
  t.ok(incoming.dialog?.terminated, 'the UDP UA got the BYE');
  t.same(phone.errors.map((e) => e.message), []);
  t.same(w.warnings, []);

  await t.test('a BYE from the UDP callee reaches SIP.js', async (t) => {
    const second = new Inviter(w.ua, UserAgent.makeURI(phone.aor)!);
    await second.invite();
    await established(second);
    const inc = await phone.waitIncoming(5000);
    await phone.waitFor((m) => m.isRequest && m.method === 'ACK' && m.callId() === inc.request.callId(), 5000, 'second ACK');
    t.equal((await inc.dialog!.bye()).status, 200, 'SIP.js answered the BYE');
    t.equal(second.state, SessionState.Terminated);
  });
});
