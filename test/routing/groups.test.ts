// Door-station routing end to end (issue 7): door stations and phones as
// real user agents on loopback UDP, a running Portier with ring groups,
// aliases, a schedule, overflow, a policy and an external route to a fake PBX.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { SipMessage } from '../../src/sip/index.js';
import { UA, type IncomingCall } from '../helpers/ua.js';
import { usersLine } from '../helpers/tools.js';
import { until } from '../helpers/wait.js';

const REALM = 'example.test';
const pw = (user: string) => `${user} has a long password`;
const PHONES = ['alice', 'bob', 'gardien', 'sec', 'carol', 'dave', 'erin', 'frank', 'gina', 'hugo', 'ines', 'jules', 'sec2', 'kim', 'lou', 'max', 'ned'];
const DOORS = ['door1', 'door2', 'door3', 'door4', 'door5', 'door6', 'door7', 'door8'];

const dir = t.testdir({});
writeFileSync(
  join(dir, 'users'),
  [...PHONES.map((u) => usersLine(u, pw(u), { realm: REALM })), ...DOORS.map((u) => usersLine(u, pw(u), { kind: 'door', realm: REALM }))].join('\n') + '\n',
);

// A weekday three days from now: a schedule open only then is closed now,
// whatever the hour this test runs at (no waiting for the clock).
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const notToday = DAYS[(new Date().getUTCDay() + 3) % 7];

let server: RunningServer;
let port = 0;
const logLines: string[] = [];
let pbx: UA;

t.before(async () => {
  pbx = await UA.create({ transport: 'udp', user: 'pbx', domain: 'pbx.test', proxyPort: 9, t1: 100, t2: 400 });
  const config = parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      'listen: [udp:127.0.0.1:0]',
      `auth: {users: users, realm: ${REALM}}`,
      'security: {rate: {per-source: 5000, burst: 5000}}',
      'proxy: {ring-timeout: 3}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: info}',
      'metrics: {listen: off}',
      'groups:',
      '  ecole-jaures: {members: [alice, bob@example.test, "sip:gardien@example.test"], ring-time: 5, overflow: securite}',
      '  securite: {members: [sec]}',
      '  sequence: {members: [carol, dave], strategy: sequential, ring-time: 1}',
      '  nobody: {members: [erin], ring-time: 1, overflow: securite2}',
      '  securite2: {members: [sec2]}',
      `  apres-heures: {members: [frank], schedule: [{days: ${notToday}, from: "08:00", to: "18:00"}], timezone: UTC, overflow: securite2}`,
      '  refus: {members: [gina, hugo], ring-time: 5, overflow: kim}',
      '  vide: {members: [ines, jules], ring-time: 5}',
      '  video: {members: [lou, max, ned], ring-time: 5}',
      'aliases: {"100": ecole-jaures, "200": refus, "300": vide}',
      'policy: {doors-may-call: [groups, aliases]}',
      'routes:',
      `  - {match: "^\\\\+?33", to: "sip:127.0.0.1:${pbx.localPort};transport=udp"}`,
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  server = await startServer(config, createLogger('info', { write: (s: string) => void logLines.push(s) }));
  port = server.listening()[0].port;
});
t.teardown(async () => {
  await pbx.close();
  await server.stop();
});

async function ua(t: Test, user: string): Promise<UA> {
  const u = await UA.create({ transport: 'udp', user, domain: 'example.test', proxyPort: port, t1: 100, t2: 400, password: pw(user) });
  t.teardown(() => u.close());
  return u;
}

async function registered(t: Test, user: string, behaviour?: UA['onInvite']): Promise<UA> {
  const u = await ua(t, user);
  if (behaviour) u.onInvite = behaviour;
  t.equal((await u.register()).status, 200, `${user} registered`);
  return u;
}

const ringOnly: UA['onInvite'] = () => ({ action: 'ring' });

/** The CANCEL a device got for its call, within `ms`. */
function cancelOf(u: UA, ms = 3000): Promise<SipMessage> {
  return u.waitFor({ method: 'CANCEL' }, ms, `CANCEL at ${u.user}`);
}

/** The log line of a call, parsed. */
async function callLog(callId: string): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined;
  await until(() => {
    for (const l of logLines) {
      const o = JSON.parse(l) as { msg?: string; call?: Record<string, unknown> };
      if (o.msg === 'call' && o.call?.callId === callId) found = o.call;
    }
    return found !== undefined;
  }, `the log line of call ${callId}`, 3000);
  return found as Record<string, unknown>;
}

t.test('a door station dialling 100 rings four devices of three members at once; the second answers, the others get CANCEL with the reason', async (t) => {
  const alicePhone = await registered(t, 'alice', ringOnly);
  const aliceTablet = await registered(t, 'alice', ringOnly);
  const bob = await registered(t, 'bob', () => ({ action: 'answer', ring: true, after: 300 }));
  const gardien = await registered(t, 'gardien', ringOnly);
  const door = await ua(t, 'door1');
  const call = door.call('sip:100@example.test', { headers: ['Call-Info: <http://door1.example.test/snapshot.jpg>;purpose=icon', 'Alert-Info: <urn:alert:service:normal>'] });
  const incoming = await Promise.all([alicePhone, aliceTablet, bob, gardien].map((u) => u.waitIncoming()));
  t.equal(incoming.length, 4, 'four devices ring');
  for (const i of incoming) {
    t.equal(i.request.get('call-info'), '<http://door1.example.test/snapshot.jpg>;purpose=icon', 'Call-Info forwarded untouched');
    t.equal(i.request.get('alert-info'), '<urn:alert:service:normal>', 'Alert-Info forwarded untouched');
  }
  const final = await call.final();
  t.equal(final.status, 200, 'answered');
  for (const u of [alicePhone, aliceTablet, gardien]) {
    const cancel = await cancelOf(u);
    t.equal(cancel.get('reason'), 'SIP;cause=200;text="Call completed elsewhere"', `${u.user}: CANCEL says completed elsewhere`);
  }
  t.equal(bob.filter({ method: 'CANCEL' }).length, 0, 'the device that answered is not cancelled');

  // The phone's "open door" key: DTMF by SIP INFO reaches the door station inside the dialog.
  const bobCall = incoming[2] as IncomingCall;
  t.equal((await (bobCall.dialog as NonNullable<IncomingCall['dialog']>).info('Signal=5\r\nDuration=160\r\n')).status, 200, 'INFO answered by the door station');
  const info = await door.waitFor({ method: 'INFO' });
  t.equal(info.body.toString(), 'Signal=5\r\nDuration=160\r\n', 'the digit arrives untouched');
  t.equal(info.get('content-type'), 'application/dtmf-relay');
  const dtmf = await (bobCall.dialog as NonNullable<IncomingCall['dialog']>).info('5', 'application/dtmf');
  t.equal(dtmf.status, 200, 'application/dtmf too');
  t.equal((await call.bye()).status, 200, 'hung up');

  const log = await callLog(call.callId);
  t.match(log.route, /alias 100 → group ecole-jaures/, 'the log line says which group');
  t.equal(log.answeredBy, 'sip:bob@example.test', 'and who answered');
  t.same((log.members as Array<{ member: string; devices: number }>).map((m) => [m.member, m.devices]), [['sip:alice@example.test', 2], ['sip:bob@example.test', 1], ['sip:gardien@example.test', 1]]);
  t.equal(log.overflow, false);
  t.equal(log.result, 'answered');
  t.ok(typeof log.setupMs === 'number' && log.setupMs >= 0, 'setup time');
  t.ok(typeof log.durationMs === 'number' && log.durationMs >= 0, 'and duration, written when the call ended');
  t.equal(log.ended, 'bye');
});

t.test('sequential: members ring one after the other, ring-time each, in order', async (t) => {
  const carol = await registered(t, 'carol', ringOnly);
  const dave = await registered(t, 'dave', () => ({ action: 'answer', ring: true, after: 100 }));
  const door = await ua(t, 'door2');
  const call = door.call('sip:sequence@example.test');
  const first = await carol.waitIncoming();
  t.equal(dave.filter({ method: 'INVITE' }).length, 0, 'dave does not ring while carol does');
  const carolCancel = await cancelOf(carol, 3000);
  t.notOk(carolCancel.has('reason'), 'carol rang out (no "completed elsewhere")');
  await dave.waitIncoming();
  t.equal((await call.final()).status, 200, 'dave answers');
  const at = (u: UA, dir: 'in' | 'out', method: string): number => u.timeline.find((e) => e.dir === dir && e.msg.isRequest && e.msg.method === method)!.at;
  const carolInvited = at(carol, 'in', 'INVITE');
  const carolCancelled = at(carol, 'in', 'CANCEL');
  const daveInvited = at(dave, 'in', 'INVITE');
  t.ok(carolCancelled - carolInvited >= 900, `carol rings for her ring-time (1 s): ${carolCancelled - carolInvited} ms`);
  t.ok(daveInvited >= carolCancelled, `carol first, then dave: dave's INVITE ${daveInvited - carolCancelled} ms after carol's CANCEL`);
  t.notOk(first.request.has('reason'));
  t.equal((await call.bye()).status, 200);
});

t.test('nobody answers within ring-time: the overflow group rings', async (t) => {
  const erin = await registered(t, 'erin', ringOnly);
  const sec = await registered(t, 'sec2', () => ({ action: 'answer', ring: true, after: 100 }));
  const door = await ua(t, 'door3');
  const call = door.call('sip:nobody@example.test');
  await erin.waitIncoming();
  const cancel = await cancelOf(erin);
  t.notOk(cancel.has('reason'), 'rang out: no "completed elsewhere" (a missed call is right)');
  await sec.waitIncoming();
  t.equal((await call.final()).status, 200, 'the security desk answers');
  t.equal((await call.bye()).status, 200);
  const log = await callLog(call.callId);
  t.equal(log.overflow, true, 'overflow taken, says the log');
  t.same(log.stages, ['nobody', 'securite2']);
});

t.test('outside the schedule the call goes straight to the overflow', async (t) => {
  const frank = await registered(t, 'frank');
  const sec = await registered(t, 'sec2', () => ({ action: 'answer', after: 50 }));
  const door = await ua(t, 'door4');
  const call = door.call('sip:apres-heures@example.test');
  t.equal((await call.final()).status, 200, 'answered by the overflow');
  t.equal(frank.filter({ method: 'INVITE' }).length, 0, 'the closed group does not ring');
  t.equal(sec.filter({ method: 'INVITE' }).length, 1);
  t.equal((await call.bye()).status, 200);
  const log = await callLog(call.callId);
  t.match(log.route, /apres-heures closed/, 'the log says it was closed');
});

t.test('one member declining stops their own devices only; when everyone declines the overflow rings', async (t) => {
  const ginaPhone = await registered(t, 'gina', () => ({ action: 'reject', code: 603, ring: true, after: 100 }));
  const ginaTablet = await registered(t, 'gina', ringOnly);
  const hugo = await registered(t, 'hugo', () => ({ action: 'reject', code: 486, ring: true, after: 500 }));
  const kim = await registered(t, 'kim', () => ({ action: 'answer', ring: true, after: 100 }));
  const door = await ua(t, 'door5');
  const call = door.call('sip:200@example.test');
  const cancel = await cancelOf(ginaTablet);
  t.match(cancel.get('reason'), /^SIP;cause=603/, "gina's tablet stops: she declined");
  t.equal(hugo.filter({ method: 'INVITE' }).length, 1, 'hugo was rung');
  t.equal(hugo.filter({ method: 'CANCEL' }).length, 0, 'hugo still rings');
  await kim.waitIncoming(3000);
  t.equal((await call.final()).status, 200, 'everyone declined: the overflow (an account) answered');
  t.equal(ginaPhone.filter({ method: 'CANCEL' }).length, 0);
  const hugoDeclined = hugo.timeline.find((e) => e.dir === 'out' && !e.msg.isRequest && e.msg.status === 486)!.at;
  const kimInvited = kim.timeline.find((e) => e.dir === 'in' && e.msg.isRequest && e.msg.method === 'INVITE')!.at;
  t.ok(kimInvited >= hugoDeclined, 'the overflow rings only once everyone declined (after hugo\'s 486)');
  t.equal((await call.bye()).status, 200);
});

t.test('a group whose members have no live device, and no overflow: 480 at once, not a ring timeout', async (t) => {
  const door = await ua(t, 'door6');
  const res = await door.call('sip:300@example.test').final(2000);
  t.equal(res.status, 480);
});

t.test('policy: a door station dialling a phone directly, another door or a PBX number gets 403', async (t) => {
  await registered(t, 'carol');
  const door = await ua(t, 'door7');
  const other = await ua(t, 'door8');
  t.equal((await other.register()).status, 200);
  for (const target of ['sip:carol@example.test', 'sip:door8@example.test', 'sip:+33123456789@example.test']) {
    const res = await door.call(target).final();
    t.equal(res.status, 403, `${target}: 403`);
  }
  const refused = door.call('sip:carol@example.test');
  t.equal((await refused.final()).status, 403);
  const log = await callLog(refused.callId);
  t.equal(log.result, 'refused', 'the refusal is in the log');
  t.match(log.route, /policy: doors may not call phones/, 'with the rule that refused it');
});

t.test('an external route: a phone dials a number of the PBX; it goes there with a Route, Request-URI unchanged', async (t) => {
  pbx.onInvite = () => ({ action: 'answer', ring: true, after: 50 });
  const alice = await ua(t, 'alice');
  const call = alice.call('sip:+33123456789@example.test');
  t.equal((await call.final()).status, 200, 'the PBX answered');
  const inv = await pbx.waitIncoming();
  t.equal(inv.request.uri, 'sip:+33123456789@example.test', 'Request-URI as dialled');
  t.match(inv.request.getAll('route')[0] ?? '', new RegExp(`^<sip:127\\.0\\.0\\.1:${pbx.localPort};transport=udp;lr>$`), 'Route to the PBX');
  t.notOk(inv.request.has('proxy-authorization'), 'credentials for Portier are not forwarded to the PBX');
  t.equal((await call.bye()).status, 200);
});

t.test('policy: a door station cannot call out through another domain or a preloaded Route', async (t) => {
  const door = await ua(t, 'door7');
  const foreign = await door.call('sip:+33999@pbx.elsewhere.test', { preloadedRoute: false }).final();
  t.equal(foreign.status, 403, 'another domain: 403');
  const routed = await door.call(`sip:+33999@example.test`, { headers: [`Route: <sip:127.0.0.1:${pbx.localPort};lr>`] }).final();
  t.equal(routed.status, 403, 'a Route to another server: 403');
  t.equal(pbx.filter({ method: 'INVITE' }).filter((m) => m.from().uri.user === 'door7').length, 0, 'nothing reached the PBX');
});

t.test('several early dialogs: three devices send 183 with early video, each reaches the door station; one 200, the others CANCEL', async (t) => {
  const early = (after?: number): UA['onInvite'] => (inv) => {
    inv.earlyMedia();
    if (after !== undefined) return { action: 'answer', after };
  };
  const lou = await registered(t, 'lou', early());
  const max = await registered(t, 'max', early(400));
  const ned = await registered(t, 'ned', early());
  const door = await ua(t, 'door8');
  const call = door.call('sip:video@example.test');
  const final = await call.final();
  t.equal(final.status, 200, 'answered');
  const early183 = call.responses.filter((r) => r.status === 183);
  t.equal(new Set(early183.map((r) => r.to().tag)).size, 3, 'three early dialogs, one To tag each');
  t.ok(early183.every((r) => r.body.length > 0 && r.get('content-type') === 'application/sdp'), 'each with its SDP, forwarded untouched');
  t.equal(call.responses.filter((r) => r.status === 200).length, 1, 'one 200');
  for (const u of [lou, ned]) t.equal((await u.waitFor({ method: 'CANCEL' })).get('reason'), 'SIP;cause=200;text="Call completed elsewhere"', `${u.user}: CANCEL`);
  t.equal(max.filter({ method: 'CANCEL' }).length, 0);
  t.equal((await call.bye()).status, 200);
});
