// Authentication end to end (issue 5): test user agents register and call
// through a running Portier on loopback with digest credentials (SHA-256 and
// MD5), wrong ones, replayed ones, stale nonces, someone else's identity,
// from trusted and untrusted sources, and from a source that guesses.
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { parseAndValidate, SipMessage, SipParseError } from '../../src/sip/index.js';
import { statelessTag } from '../../src/transaction/index.js';
import { challengesOf, newBranch, UA, type UAOptions } from '../helpers/ua.js';
import { until } from '../helpers/wait.js';
import { usersLine } from '../helpers/tools.js';

const REALM = 'example.test';
const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

/** A users-file line written by the test itself, from the password. */
function line(user: string, password: string, kind = 'phone'): string {
  return usersLine(user, password, { kind, realm: REALM });
}

const dir = t.testdir({});
const usersPath = join(dir, 'users');
const ACCOUNTS = [line('alice', 'correct horse battery'), line('bob', 'bob-has-a-long-secret'), line('carol', 'carol password 1'), line('door1', 'door station one', 'door'), line('erin', 'erin never registers')];
writeFileSync(usersPath, '# test accounts\n' + ACCOUNTS.join('\n') + '\n');

function config(extra: string[] = []) {
  return parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
      'auth:',
      '  users: users',
      `  realm: ${REALM}`,
      '  trusted: [127.0.0.2/32]',
      '  nonce-lifetime: 1',
      'security:',
      '  rate: {per-source: 1000, burst: 2000}',
      '  auth-failures: {max: 5, window: 60, ban: 60, max-ban: 600}',
      // Other domains in these tests are servers on this machine.
      '  relay-to-loopback: true',
      'limits: {calls-per-door: 2}',
      'proxy: {ring-timeout: 3}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
      'metrics: {listen: 127.0.0.1:0}',
      ...extra,
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
}

let server: RunningServer;
let udpPort = 0;
let tcpPort = 0;

t.before(async () => {
  server = await startServer(config(), createLogger('fatal'));
  for (const ep of server.listening()) {
    if (ep.protocol === 'udp') udpPort = ep.port;
    if (ep.protocol === 'tcp') tcpPort = ep.port;
  }
});
t.teardown(() => server.stop());

async function ua(t: Test, user: string, o: Partial<UAOptions> = {}): Promise<UA> {
  const transport = o.transport ?? 'udp';
  const u = await UA.create({ transport, user, domain: 'example.test', proxyPort: transport === 'udp' ? udpPort : tcpPort, t1: 100, t2: 400, ...o });
  t.teardown(() => u.close());
  return u;
}

/** What a response says, minus what differs per transaction anyway (tags, nonce, Via, Call-ID, CSeq). */
function shape(res: SipMessage): string[] {
  return res
    .headerFields()
    .filter((f) => !['via', 'call-id', 'cseq', 'from', 'to', 'content-length'].includes(f.key))
    .map((f) => `${f.key}: ${f.value.replace(/nonce="[^"]*"/, 'nonce="…"')}`)
    .concat(`status ${res.status} ${res.reason}`);
}

t.test('REGISTER is challenged with 401, SHA-256 first then MD5, qop=auth; credentials register', async (t) => {
  const plain = await ua(t, 'alice');
  const challenge = await plain.register();
  t.equal(challenge.status, 401);
  const cs = challengesOf(challenge);
  t.same(
    cs.map((c) => c.params.get('algorithm')),
    ['SHA-256', 'MD5'],
  );
  for (const c of cs) {
    t.equal(c.params.get('realm'), REALM);
    t.equal(c.params.get('qop'), 'auth');
    t.notOk(c.params.has('stale'));
  }
  t.equal(cs[0].params.get('nonce'), cs[1].params.get('nonce'), 'one nonce for both challenges');

  const a = await ua(t, 'alice', { password: 'correct horse battery' });
  t.equal((await a.register()).status, 200, 'SHA-256');
  t.match(a.lastCredentials, /algorithm=SHA-256/);
  const b = await ua(t, 'bob', { password: 'bob-has-a-long-secret', algorithms: ['MD5'], transport: 'tcp' });
  t.equal((await b.register()).status, 200, 'MD5 over TCP');
  t.match(b.lastCredentials, /algorithm=MD5/);
});

t.test('a call with digest: 407 then the INVITE with credentials goes through, and the credentials are not forwarded', async (t) => {
  const callee = await ua(t, 'carol', { password: 'carol password 1' });
  t.equal((await callee.register()).status, 200);
  const caller = await ua(t, 'alice', { password: 'correct horse battery', algorithms: ['MD5'] });
  const call = caller.call('sip:carol@example.test');
  t.equal((await call.response(407)).status, 407);
  const final = await call.final();
  t.equal(final.status, 200, 'answered');
  const incoming = await callee.waitIncoming();
  t.notOk(incoming.request.has('proxy-authorization'), "Portier's own credentials are consumed (RFC 3261 §22.3)");
  t.notOk(incoming.request.has('authorization'));
  t.equal((await call.bye()).status, 200, 'BYE inside the dialog needs no credentials');

  // Somebody who saw that Record-Route (the callee, say) reuses its Call-ID
  // and Route for a new call: a new call is no request inside the dialog.
  const rr = incoming.request.getAll('record-route')[0];
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const got = new Promise<SipMessage>((resolve) => sock.on('message', (b) => { const m = parse(b); if (m.status >= 200) resolve(m); }));
  sock.send(
    `INVITE sip:carol@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${sock.address().port};branch=${newBranch()};rport\r\nMax-Forwards: 70\r\n` +
      `From: <sip:alice@example.test>;tag=spoof\r\nTo: <sip:carol@example.test>\r\nCall-ID: ${incoming.request.callId()}\r\nCSeq: 9 INVITE\r\n` +
      `Route: ${rr}\r\nContact: <sip:x@127.0.0.1:${sock.address().port}>\r\nContent-Length: 0\r\n\r\n`,
    udpPort,
    '127.0.0.1',
  );
  t.equal((await got).status, 407, 'a replayed Record-Route does not skip authentication');
});

t.test('wrong password and unknown user: the same 401, then the same 403', async (t) => {
  const wrong = await ua(t, 'alice', { password: 'not the password', localHost: '127.0.0.10' });
  const unknown = await ua(t, 'mallory', { password: 'whatever it is', localHost: '127.0.0.11' });
  const plainKnown = await ua(t, 'alice', { localHost: '127.0.0.10' });
  const plainUnknown = await ua(t, 'mallory', { localHost: '127.0.0.11' });
  const c1 = await plainKnown.register();
  const c2 = await plainUnknown.register();
  t.equal(c1.status, 401);
  t.same(shape(c1), shape(c2), 'challenges differ only in nonce');
  const r1 = await wrong.register();
  const r2 = await unknown.register();
  t.equal(r1.status, 403);
  t.same(shape(r1), shape(r2), 'refusals are identical');
  // Also for calls (407, then 403).
  const i1 = wrong.call('sip:bob@example.test');
  const i2 = unknown.call('sip:bob@example.test');
  const f1 = await i1.final();
  const f2 = await i2.final();
  t.equal(f1.status, 403);
  t.same(shape(f1), shape(f2));
});

t.test('a challenge to a REGISTER is stateless (RFC 3261 §26.3.2.4); to an INVITE, in its transaction', async (t) => {
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const port = sock.address().port;
  const received: Buffer[] = [];
  sock.on('message', (b) => received.push(b));
  const next = async (n: number): Promise<Buffer> => {
    await until(() => received.length >= n, `answer ${n}`);
    return received[n - 1];
  };
  // One datagram each, sent twice as it is: the second is a retransmission.
  const datagram = (method: string, ruri: string, to: string, tag: string): string =>
    [
      `${method} ${ruri} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=${newBranch()};rport`,
      `From: <sip:carol@example.test>;tag=${tag}`,
      `To: <${to}>`,
      `Call-ID: ${tag}@127.0.0.1`,
      `CSeq: 1 ${method}`,
      'Max-Forwards: 70',
      `Contact: <sip:carol@127.0.0.1:${port}>`,
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n');
  const register = datagram('REGISTER', 'sip:example.test', 'sip:carol@example.test', 'stateless1');
  sock.send(register, udpPort, '127.0.0.1');
  const first = parse(await next(1));
  sock.send(register, udpPort, '127.0.0.1');
  const second = parse(await next(2));
  t.equal(first.status, 401, '401');
  t.equal(second.status, 401, 'the retransmission is challenged too');
  const sent = parseAndValidate(Buffer.from(register, 'latin1'));
  t.ok(sent instanceof SipMessage);
  t.equal(first.to().tag, statelessTag(sent as SipMessage), "the To tag is the stateless one, the overload 503's (§8.2.7)");
  t.equal(second.to().tag, first.to().tag, 'the same To tag: made from the request (§8.2.7)');
  const nonce = (m: SipMessage) => challengesOf(m)[0].params.get('nonce');
  t.not(nonce(second), nonce(first), 'but a fresh nonce: handled as a new request, not resent from a record');

  const invite = datagram('INVITE', 'sip:bob@example.test', 'sip:bob@example.test', 'stateless2');
  sock.send(invite, udpPort, '127.0.0.1');
  const firstFinal = async (from: number): Promise<{ at: number; m: SipMessage }> => {
    for (let n = from; ; n++) {
      const m = parse(await next(n));
      if (m.status >= 200) return { at: n, m };
    }
  };
  const c1 = await firstFinal(3);
  sock.send(invite, udpPort, '127.0.0.1');
  const c2 = await firstFinal(c1.at + 1);
  t.equal(c1.m.status, 407, '407 to the INVITE');
  t.ok(c2.m.toBuffer().equals(c1.m.toBuffer()), 'its retransmission gets the same 407, octet for octet: stateful');
});

t.test('a replayed Authorization is refused; a new transaction needs a fresh nonce-count', async (t) => {
  const a = await ua(t, 'alice', { password: 'correct horse battery' });
  t.equal((await a.register()).status, 200);
  const replayed = a.lastCredentials!;
  // The same credentials in a new REGISTER transaction (what an eavesdropper would send).
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const port = sock.address().port;
  const got = new Promise<SipMessage>((resolve) => sock.once('message', (b) => resolve(parse(b))));
  const req = [
    'REGISTER sip:example.test SIP/2.0',
    `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=${newBranch()};rport`,
    'From: <sip:alice@example.test>;tag=evil1',
    'To: <sip:alice@example.test>',
    'Call-ID: replay-1@127.0.0.1',
    'CSeq: 99 REGISTER',
    'Max-Forwards: 70',
    `Contact: <sip:alice@127.0.0.1:${port}>`,
    replayed,
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  sock.send(req, udpPort, '127.0.0.1');
  const res = await got;
  t.equal(res.status, 401, 'challenged again, not registered');
  t.ok(challengesOf(res).every((c) => c.params.get('stale') === 'true'), 'stale=true: a real client retries silently');
});

t.test('an expired nonce gets stale=true and the retry succeeds', async (t) => {
  const a = await ua(t, 'bob', { password: 'bob-has-a-long-secret' });
  t.equal((await a.register()).status, 200);
  await new Promise((r) => setTimeout(r, 1300)); // nonce-lifetime: 1
  const old = a.lastCredentials!;
  const res = await a.register();
  t.equal(res.status, 200, 'a client re-registering after expiry gets through (401 then 200)');
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const port = sock.address().port;
  const nonce = /nonce="([^"]*)"/.exec(old)![1];
  const nc = '00000002';
  const cnonce = 'abcdef12';
  const ha1 = sha256(`bob:${REALM}:bob-has-a-long-secret`);
  const ha2 = sha256('REGISTER:sip:example.test');
  const response = sha256(`${ha1}:${nonce}:${nc}:${cnonce}:auth:${ha2}`);
  const got = new Promise<SipMessage>((resolve) => sock.once('message', (b) => resolve(parse(b))));
  sock.send(
    [
      'REGISTER sip:example.test SIP/2.0',
      `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=${newBranch()};rport`,
      'From: <sip:bob@example.test>;tag=s1',
      'To: <sip:bob@example.test>',
      'Call-ID: stale-1@127.0.0.1',
      'CSeq: 5 REGISTER',
      `Contact: <sip:bob@127.0.0.1:${port}>`,
      `Authorization: Digest username="bob", realm="${REALM}", nonce="${nonce}", uri="sip:example.test", response="${response}", algorithm=SHA-256, cnonce="${cnonce}", qop=auth, nc=${nc}`,
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n'),
    udpPort,
    '127.0.0.1',
  );
  const stale = await got;
  t.equal(stale.status, 401, 'right password, expired nonce: challenged again');
  t.ok(challengesOf(stale).every((ch) => ch.params.get('stale') === 'true'), 'stale=true');
});

t.test('nobody registers or calls as somebody else', async (t) => {
  // alice's own credentials, bob's address in To.
  const a = await ua(t, 'bob', { password: 'correct horse battery', authUser: 'alice', localHost: '127.0.0.12' });
  t.equal((await a.register()).status, 403, 'REGISTER for bob with alice credentials');
  // alice's credentials, From bob.
  const b = await ua(t, 'bob', { password: 'correct horse battery', authUser: 'alice', localHost: '127.0.0.12' });
  t.equal((await b.call('sip:carol@example.test').final()).status, 403, 'INVITE From bob with alice credentials');
});

t.test('a trusted source calls and registers without credentials; an untrusted one cannot', async (t) => {
  const callee = await ua(t, 'carol', { password: 'carol password 1' });
  t.equal((await callee.register()).status, 200);
  const door = await ua(t, 'door1', { localHost: '127.0.0.2' });
  t.equal((await door.register()).status, 200, 'trusted REGISTER');
  const call = door.call('sip:carol@example.test');
  t.equal((await call.final()).status, 200, 'trusted INVITE');
  await call.bye();
  const stranger = await ua(t, 'door1', { localHost: '127.0.0.13' });
  t.equal((await stranger.call('sip:carol@example.test').final()).status, 407, 'untrusted INVITE without credentials');
  // Even a trusted source registers only accounts.
  const ghost = await ua(t, 'ghost', { localHost: '127.0.0.2' });
  t.equal((await ghost.register()).status, 404, 'no account, no binding');
});

t.test('a door station has at most limits.calls-per-door calls at once', async (t) => {
  const callee = await ua(t, 'carol', { password: 'carol password 1' });
  callee.onInvite = () => ({ action: 'ring' });
  t.equal((await callee.register()).status, 200);
  const door = await ua(t, 'door1', { localHost: '127.0.0.2' });
  const first = door.call('sip:carol@example.test');
  const second = door.call('sip:carol@example.test');
  await first.response(180);
  await second.response(180);
  const third = await door.call('sip:carol@example.test').final();
  t.equal(third.status, 403);
  t.equal(third.reason, 'Too Many Calls');
  t.equal((await first.cancel()).status, 200);
  t.equal((await first.final(2000)).status, 487, 'cancelled at once, though earlier bindings of carol never answered');
  const fourth = door.call('sip:carol@example.test');
  t.equal((await fourth.response(180)).status, 180, 'a slot is free again once a call ended');
  // A phone is not limited this way.
  const phone = await ua(t, 'alice', { password: 'correct horse battery' });
  const calls = [1, 2, 3].map(() => phone.call('sip:carol@example.test'));
  for (const c of calls) t.equal((await c.response(180)).status, 180);
  for (const c of [second, fourth, ...calls]) await c.cancel();
});

t.test('only accounts exist: an authenticated call to another AOR of the domain gets 404, an unregistered account 480', async (t) => {
  const a = await ua(t, 'alice', { password: 'correct horse battery' });
  t.equal((await a.call('sip:nobody@example.test').final()).status, 404);
  t.equal((await a.call('sip:erin@example.test').final()).status, 480);
});

t.test('an authenticated user may reach another domain; Portier is no open relay for others', async (t) => {
  const remote = dgram.createSocket('udp4');
  t.teardown(() => remote.close());
  await new Promise<void>((r) => remote.bind(0, '127.0.0.20', r));
  const rport = remote.address().port;
  const seen: SipMessage[] = [];
  remote.on('message', (b) => seen.push(parse(b)));
  const stranger = await ua(t, 'x', { localHost: '127.0.0.14', domain: 'elsewhere.test' });
  t.equal((await stranger.call(`sip:pbx@127.0.0.20:${rport}`).final()).status, 407, 'unauthenticated: challenged');
  const a = await ua(t, 'alice', { password: 'correct horse battery' });
  const call = a.call(`sip:pbx@127.0.0.20:${rport}`);
  await until(() => seen.some((m) => m.method === 'INVITE'), 'the INVITE reached the other server', 3000);
  const inv = seen.find((m) => m.method === 'INVITE')!;
  t.notOk(inv.has('proxy-authorization'));
  t.equal(inv.from().uri.user, 'alice');
  void call;
});

t.test('drop-scanners: an OPTIONS from friendly-scanner gets no answer, the same OPTIONS from a phone does', async (t) => {
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.15', r));
  const port = sock.address().port;
  const answers: SipMessage[] = [];
  sock.on('message', (b) => answers.push(parse(b)));
  const options = (ua: string, id: string) =>
    [
      'OPTIONS sip:example.test SIP/2.0',
      `Via: SIP/2.0/UDP 127.0.0.15:${port};branch=${newBranch()};rport`,
      'From: <sip:100@example.test>;tag=' + id,
      'To: <sip:100@example.test>',
      `Call-ID: ${id}@127.0.0.15`,
      'CSeq: 1 OPTIONS',
      'Max-Forwards: 70',
      `User-Agent: ${ua}`,
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n');
  sock.send(options('friendly-scanner', 'scan1'), udpPort, '127.0.0.1');
  sock.send(options('Linphone-Desktop/5.2.6 (belle-sip/5.3.0)', 'phone1'), udpPort, '127.0.0.1');
  await until(() => answers.some((m) => m.callId() === 'phone1@127.0.0.15'), 'the phone got its answer', 3000);
  await new Promise((r) => setTimeout(r, 200));
  t.same(
    answers.map((m) => m.callId()),
    ['phone1@127.0.0.15'],
    'only the phone was answered',
  );
});

t.test('a guessing source is banned after max failures; another source is not affected', async (t) => {
  const guesser = await ua(t, 'alice', { localHost: '127.0.0.30', t1: 50 });
  for (let i = 0; i < 5; i++) {
    const g = await ua(t, 'alice', { password: `guess-number-${i}`, localHost: '127.0.0.30' });
    t.equal((await g.register()).status, 403, `guess ${i + 1} refused`);
  }
  // Banned now: not even a challenge comes back.
  await t.rejects(guesser.register(), /no final response/, 'the banned source is ignored');
  const honest = await ua(t, 'alice', { password: 'correct horse battery', localHost: '127.0.0.31' });
  t.equal((await honest.register()).status, 200, 'another address registers');
  t.match(await metrics(), /portier_bans_active 1/);
});

t.test('broken credentials, or a nonce given to another address, spend no failure budget (no banning by forged sources)', async (t) => {
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.33', r));
  const port = sock.address().port;
  const answers: SipMessage[] = [];
  sock.on('message', (b) => answers.push(parse(b)));
  // A nonce the attacker got for itself (127.0.0.1), used from the victim's address.
  const own = await ua(t, 'alice');
  const nonce = challengesOf(await own.register())[0].params.get('nonce')!;
  const send = (i: number, auth: string) =>
    sock.send(
      `REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.33:${port};branch=${newBranch()};rport\r\nFrom: <sip:alice@example.test>;tag=m${i}\r\n` +
        `To: <sip:alice@example.test>\r\nCall-ID: forged-${i}\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nAuthorization: ${auth}\r\nContent-Length: 0\r\n\r\n`,
      udpPort,
      '127.0.0.1',
    );
  for (let i = 0; i < 12; i++) {
    send(i, i % 2 === 0 ? `Digest realm="${REALM}"` : `Digest username="alice", realm="${REALM}", nonce="${nonce}", uri="sip:example.test", response="${'0'.repeat(64)}", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="x"`);
  }
  await until(() => answers.length >= 12, 'an answer to each', 3000);
  t.same([...new Set(answers.map((m) => m.status))].sort(), [401, 403], 'a 403 for broken credentials, a fresh challenge for a foreign nonce');
  const honest = await ua(t, 'alice', { password: 'correct horse battery', localHost: '127.0.0.33' });
  t.equal((await honest.register()).status, 200, 'the address is not banned');
});

t.test('a flood of 50,000 OPTIONS from one source does not stop a call from another', async (t) => {
  // The rate limit's work alone: with this file's burst of 2,000, the flood's first 2,000 pass the
  // limit and fill the queue like real traffic, and overload control would shed load for a second
  // (test/overload.test.ts covers it).
  server.reload(config(['overload: {enabled: false}']));
  t.teardown(() => server.reload(config()));
  const callee = await ua(t, 'carol', { password: 'carol password 1' });
  t.equal((await callee.register()).status, 200);
  const flood = dgram.createSocket('udp4');
  t.teardown(() => flood.close());
  await new Promise<void>((r) => flood.bind(0, '127.0.0.40', r));
  const fport = flood.address().port;
  let answered = 0;
  flood.on('message', () => answered++);
  const TOTAL = 50_000;
  let sent = 0;
  const deadline = Date.now() + 20_000;
  // Paced at about 10,000/s (100 every 10 ms): a flood 100 times the rate
  // limit, without starving the other test files that run alongside.
  const pump = async () => {
    while (sent < TOTAL && Date.now() < deadline) {
      for (let i = 0; i < 100 && sent < TOTAL; i++, sent++) {
        const msg = `OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.40:${fport};branch=z9hG4bKf${sent}\r\nFrom: <sip:f@example.test>;tag=f\r\nTo: <sip:example.test>\r\nCall-ID: flood${sent}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`;
        flood.send(msg, udpPort, '127.0.0.1');
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const flooding = pump();
  const caller = await ua(t, 'alice', { password: 'correct horse battery', localHost: '127.0.0.41' });
  const call = caller.call('sip:carol@example.test');
  t.equal((await call.final(10_000)).status, 200, 'the call from another source is answered during the flood');
  await call.bye();
  await flooding;
  t.equal(sent, TOTAL, 'the whole flood was sent');
  await new Promise((r) => setTimeout(r, 300));
  t.ok(answered < TOTAL / 2, `most of the flood went unanswered (${answered} answers)`);
  t.match(await metrics(), /portier_requests_refused_total\{reason="rate_limit"\} [1-9]/);
});

t.test('the users file is read again on reload (SIGHUP)', async (t) => {
  const dave = await ua(t, 'dave', { password: 'dave is new here' });
  t.equal((await dave.register()).status, 403, 'no account yet: a refusal like any wrong password');
  writeFileSync(usersPath, '# test accounts\n' + [...ACCOUNTS, 'this line is broken', line('dave', 'dave is new here')].join('\n') + '\n');
  server.reload();
  t.equal((await dave.register()).status, 200, 'the new account registers; the broken line did not stop the rest');
  writeFileSync(usersPath, '# test accounts\n' + ACCOUNTS.join('\n') + '\n');
  server.reload();
  t.equal((await dave.register()).status, 403, 'removed again');
});

function parse(b: Buffer): SipMessage {
  const m = parseAndValidate(b, { transport: 'udp' });
  if (m instanceof SipParseError) throw new Error(m.reason);
  return m;
}

/** The Prometheus text, over HTTP as a scraper reads it. */
async function metrics(): Promise<string> {
  const m = server.metricsAddress()!;
  return (await fetch(`http://127.0.0.1:${m.port}/metrics`)).text();
}

t.test('security.rate applies per source, never to an exempt one; over TCP the answer is 503 with Retry-After', async (t) => {
  const limited = await startServer(
    parseConfig(
      [
        'domains: [example.test]',
        'storage: {type: memory}',
        'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
        'auth: off',
        'security: {rate: {per-source: 1, burst: 5}, exempt: [127.0.0.60]}',
        'log: {level: fatal}',
      ].join('\n'),
      join(dir, 'limited.yaml'),
    ),
    createLogger('fatal'),
  );
  t.teardown(() => limited.stop());
  const port = (p: string) => limited.listening().find((e) => e.protocol === p)!.port;
  const answersFrom = async (host: string): Promise<number> => {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, host, r));
    let n = 0;
    s.on('message', () => n++);
    for (let i = 0; i < 20; i++) {
      s.send(
        `OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP ${host}:${s.address().port};branch=z9hG4bKr${i}${host}\r\nFrom: <sip:m@example.test>;tag=r\r\nTo: <sip:example.test>\r\nCall-ID: rate-${host}-${i}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`,
        port('udp'),
        '127.0.0.1',
      );
    }
    await new Promise((r) => setTimeout(r, 400));
    s.close();
    return n;
  };
  const plain = await answersFrom('127.0.0.61');
  t.ok(plain >= 5 && plain <= 6, `a burst of 5 is answered, the rest dropped over UDP (${plain} of 20)`);
  t.equal(await answersFrom('127.0.0.62'), plain, 'another source has its own budget');
  t.equal(await answersFrom('127.0.0.60'), 20, 'an exempt source is never limited');
  // Over TCP: 503 with Retry-After for the requests over the rate.
  const tcp = await UA.create({ transport: 'tcp', user: 'x', domain: 'example.test', proxyPort: port('tcp'), localHost: '127.0.0.63' });
  t.teardown(() => tcp.close());
  const codes: number[] = [];
  for (let i = 0; i < 8; i++) codes.push((await tcp.register()).status);
  t.ok(codes.includes(503), `503 once over the rate (${codes.join(' ')})`);
  const refused = tcp.received.find((m) => !m.isRequest && m.status === 503)!;
  t.equal(refused.get('retry-after'), '1');
});
