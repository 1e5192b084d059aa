// Interop with JsSIP 3.13 (npm `jssip`, the SIP stack of many web phones)
// run in Node 20, `ws` as its global WebSocket, against Portier over ws:
// digest registration, and a MESSAGE round trip with a UDP user agent
// (test/helpers/ua.ts) both ways. No calls: JsSIP's RTCSession needs
// window.RTCPeerConnection (WebRTC), which Node has not; SIP.js covers calls
// over ws (sipjs.test.ts).
//
// JsSIP answers MD5 challenges only, and of several WWW-Authenticate (or
// Proxy-Authenticate) headers it reads the last, as SIP.js does: Portier's
// default order [SHA-256, MD5] is what lets it in. With [MD5, SHA-256] (what
// SIPp 3.6.1 needs, sipp.test.ts: it reads the first) JsSIP sees SHA-256,
// logs "challenge with Digest algorithm different than "MD5", authentication
// aborted" and fails (test (c)); [MD5] alone suits both.
//
// JsSIP logs through `debug` to console.info/warn/error (bound when its
// modules load): those lines are kept here, not printed, and a failing test
// prints their tail (every SIP message JsSIP sent and received is in it) with
// Portier's SIP trace and log (test/interop/clients.ts).

import { join } from 'node:path';
import { format } from 'node:util';
import t, { type Test } from 'tap';
import WebSocket from 'ws';
import type { IncomingMessageEvent, OutgoingMessageEvent, UnRegisteredEvent } from 'jssip/lib/UA.js';
import { metric } from '../helpers/tools.js';
import { clientPortier, portierDiagnostics, udpMessage, udpUa, waitFor, withDiagnostics, type ClientPortier } from './clients.js';

// Node 20 has no WebSocket global; JsSIP's WebSocketInterface uses the browser API, which ws provides.
(globalThis as { WebSocket?: unknown }).WebSocket ??= WebSocket;

/** JsSIP's debug lines, kept instead of printed. */
const jssipLog: string[] = [];
for (const level of ['info', 'warn', 'error'] as const) {
  const original = console[level].bind(console);
  console[level] = (...args: unknown[]) => {
    const line = format(...args);
    if (/\bJsSIP(:|\b)/.test(line.slice(0, 80))) jssipLog.push(line);
    else original(...args);
  };
}
// Loaded after the console is wrapped: JsSIP's loggers bind console's methods as its modules load.
const JsSIP = (await import('jssip')).default;
JsSIP.debug.enable('JsSIP:*');

type JsUA = InstanceType<typeof JsSIP.UA>;

const PASSWORD = 'correct horse 8';
const dir = t.testdir({});
let portiers = 0;

interface Web {
  ua: JsUA;
  user: string;
  events: string[];
  /** Bodies of the MESSAGEs it received. */
  messages: string[];
}

async function withPortier(t: Test, algorithms: string | null, body: (p: ClientPortier) => Promise<void>): Promise<void> {
  const p = await clientPortier(
    t,
    join(dir, `portier-${++portiers}`),
    ['web', 'web2', 'phone', 'phone2'].map((user) => ({ user, password: PASSWORD })),
    { ws: true, ...(algorithms !== null ? { algorithms } : {}) },
  );
  const from = jssipLog.length;
  await withDiagnostics(
    t,
    () => [
      { name: "JsSIP's log (debug: every SIP message it sent and received)", text: jssipLog.slice(from).join('\n').slice(-10_000) || '(empty)' },
      ...portierDiagnostics(p),
    ],
    () => body(p),
  );
}

/** A JsSIP UA over ws, connected (not registered). Stopped on teardown, bounded. */
async function jssip(t: Test, p: ClientPortier, user: string): Promise<Web> {
  const socket = new JsSIP.WebSocketInterface(`ws://127.0.0.1:${p.ports.ws}/sip`);
  const ua = new JsSIP.UA({ sockets: [socket], uri: `sip:${user}@example.test`, password: PASSWORD, register: false, register_expires: 300 });
  const w: Web = { ua, user, events: [], messages: [] };
  ua.on('connected', () => w.events.push('connected'));
  ua.on('disconnected', () => w.events.push('disconnected'));
  ua.on('registered', () => w.events.push('registered'));
  ua.on('unregistered', () => w.events.push('unregistered'));
  ua.on('registrationFailed', (e: UnRegisteredEvent) => w.events.push(`registrationFailed: ${e.cause ?? ''} ${e.response?.status_code ?? ''}`.trim()));
  ua.on('newMessage', (e: IncomingMessageEvent | OutgoingMessageEvent) => {
    if (e.originator === 'remote') w.messages.push(String(e.request.body ?? ''));
  });
  t.teardown(async () => {
    ua.stop();
    await waitFor(() => w.events.includes('disconnected') || !ua.isConnected(), 'JsSIP stopped', 3000).catch(() => {});
  });
  ua.start();
  await waitFor(() => w.events.includes('connected'), `${user}: JsSIP connected over ws`, 5000);
  return w;
}

async function registered(t: Test, p: ClientPortier, user: string): Promise<Web> {
  const w = await jssip(t, p, user);
  w.ua.register();
  await waitFor(() => w.events.find((e) => e === 'registered' || e.startsWith('registrationFailed')), `${user}: JsSIP registered`, 5000);
  t.same(w.events, ['connected', 'registered'], `${user}: JsSIP registered over ws`);
  return w;
}

const wsIn = (p: ClientPortier, first: string) => p.trace.filter((m) => m.dir === 'in' && m.peer.startsWith('ws:') && m.first === first);

t.test('(a) JsSIP registers over ws with digest (MD5, the last challenge), and unregisters', { timeout: 30_000 }, (t) =>
  withPortier(t, null, async (p) => {
    const w = await registered(t, p, 'web');
    const regs = wsIn(p, 'REGISTER');
    t.equal(regs.length, 2, 'two REGISTERs over ws: without, then with credentials');
    t.match(regs[1]?.text ?? '', /^Authorization: Digest [^\r\n]*algorithm=MD5/im, 'the second answers the MD5 challenge');
    t.match(regs[1]?.text ?? '', /^Contact: <sip:[^@>]+@[^>;]+\.invalid;transport=ws>/im, 'with a .invalid Contact (RFC 7118)');
    t.equal(metric(await p.metrics(), 'portier_registrations_active', { domain: 'example.test' }), 1, 'Portier holds the binding');
    t.equal(p.server.transport.connectionCount('ws'), 1, 'on one ws connection');
    w.ua.unregister();
    await waitFor(() => w.events.includes('unregistered'), 'JsSIP unregistered', 5000);
    await waitFor(async () => metric(await p.metrics(), 'portier_registrations_active', { domain: 'example.test' }) === 0, 'the binding gone', 3000);
    t.pass('unregistered: the binding is gone');
  }),
);

t.test('(b) MESSAGE round trips between JsSIP over ws and a UDP UA, both ways', { timeout: 30_000 }, (t) =>
  withPortier(t, null, async (p) => {
    const w = await registered(t, p, 'web');
    const phone = await udpUa(t, p.ports.udp, 'phone', PASSWORD);

    const res = await udpMessage(phone, 'sip:web@example.test', 'door opened');
    t.equal(res.status, 200, 'JsSIP accepted the MESSAGE from UDP (200 back to the UDP UA)');
    t.same(w.messages, ['door opened'], 'JsSIP got its body');

    const got = phone.waitFor({ method: 'MESSAGE' }, 5000, 'MESSAGE from JsSIP');
    let answer = 0;
    w.ua.sendMessage(phone.aor, 'ring ring', {
      contentType: 'text/plain',
      eventHandlers: {
        succeeded: (e) => (answer = e.response.status_code),
        failed: (e) => (answer = e.response?.status_code ?? -1),
      },
    });
    const m = await got;
    t.equal(m.body.toString('utf8'), 'ring ring', 'the MESSAGE from JsSIP reached the UDP UA');
    t.match(wsIn(p, 'MESSAGE').at(-1)?.text ?? '', /^Proxy-Authorization: Digest [^\r\n]*algorithm=MD5/im, 'after JsSIP answered the 407');
    // The test UA takes no MESSAGE: its 405 coming back to JsSIP closes the round trip.
    await waitFor(() => answer !== 0, "the UDP UA's answer at JsSIP", 5000);
    t.equal(answer, 405, "the UDP UA's 405 reached JsSIP");
    t.same(phone.errors.map((e) => e.message), [], 'the UDP UA saw nothing wrong');
  }),
);

t.test('(c) with algorithms [MD5, SHA-256] JsSIP gives up on the last challenge (SHA-256)', { timeout: 30_000 }, (t) =>
  withPortier(t, '[MD5, SHA-256]', async (p) => {
    const from = jssipLog.length;
    const w = await jssip(t, p, 'web2');
    w.ua.register();
    await waitFor(() => w.events.find((e) => e.startsWith('registrationFailed') || e === 'registered'), 'JsSIP registration result', 5000);
    t.same(w.events, ['connected', 'registrationFailed: Authentication Error 401'], 'JsSIP reports the 401 as its failure');
    t.equal(wsIn(p, 'REGISTER').length, 1, 'and sent no second REGISTER');
    t.match(p.trace.find((m) => m.dir === 'out' && m.first === '401')?.text ?? '', /WWW-Authenticate: Digest [^\r\n]*algorithm=MD5[^\r\n]*\r\nWWW-Authenticate: Digest [^\r\n]*algorithm=SHA-256/, 'the 401 offered MD5 first, SHA-256 last');
    t.match(jssipLog.slice(from).join('\n'), /challenge with Digest algorithm different than "MD5", authentication aborted/, 'JsSIP looked at the SHA-256 challenge only');
    t.equal(metric(await p.metrics(), 'portier_registrations_active', { domain: 'example.test' }), 0, 'not registered');
  }),
);
