// SIPp 3.6.1 (Debian's sip-tester) against Portier on loopback (issues 11
// and 13), with SIPp's built-in digest authentication ([authentication]
// after a <recv auth="true">, -au/-ap). Scenarios are in test/interop/sipp/:
//
// - register.xml: REGISTER, 401, REGISTER with credentials, 200.
// - uac-invite.xml + uas.xml: alice calls bob (407, ACK, INVITE with
//   credentials, 180/200, ACK along the Record-Route, BYE/200).
// - uac-cancel.xml + uas-cancel.xml (twice): bob has two devices; both ring,
//   alice CANCELs, each device gets Portier's CANCEL and answers 487, alice
//   gets one 487 and ACKs it.
// - uac-reinvite.xml + uas-reinvite.xml: a re-INVITE from each side inside
//   the established call, then BYE.
// - uac-slow-ack.xml + uas.xml: alice holds her ACK back 2 s; bob's 200 is
//   retransmitted meanwhile, Portier forwards every copy, the ACK reaches bob.
//
// The algorithms are those a site sets for such clients, [MD5] or
// [MD5, SHA-256]: with the default [SHA-256, MD5] SIPp 3.6.1 reads only the
// first challenge and gives up on SHA-256 (test (c)).
//
// bob's SIPp UASes answer on the ports bob registered from: Portier sends
// requests for a UDP binding back to the address its REGISTER came from
// (src/proxy: "the flow the device registered on"), so each registration is
// run from its UAS's port just before the UAS takes that port over.
//
// Portier is clientPortier (test/interop/clients.ts): every SIP message it
// receives and sends is recorded; a failing test prints that trace, Portier's
// debug log and each SIPp run's exit code, errors and messages.
//
// SIPp exit codes: 0 every call successful, 1 a call failed, 97 exit on an
// internal command, 99 normal exit without calls, 255 (-1) fatal error.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { until } from '../helpers/wait.js';
import { freeUdpPort, killTools, metric, runTool, toolMissing, udpPortBound, type ToolRun } from '../helpers/tools.js';
import { clientPortier, portierDiagnostics, withDiagnostics, type ClientPortier, type TracedMessage } from './clients.js';

const missing = toolMissing('sipp', ['-v']);
const SCENARIOS = join(dirname(fileURLToPath(import.meta.url)), 'sipp');

const REALM = 'example.test';
const PASSWORDS = { alice: 'alice-sipp-Pw1', bob: 'bob-sipp-Pw2' };
const dir = t.testdir({});
t.teardown(killTools);

interface SippRun extends ToolRun {
  name: string;
  /** Cumulative "Successful call" and "Failed call" of SIPp's final statistics screen. */
  successful: number;
  failed: number;
  /** -trace_err: unexpected messages and the events SIPp logged. */
  errors: string;
  /** -trace_msg: every message sent and received. */
  messages: string;
  /** -trace_screen: the final statistics screen. */
  screen: string;
}

interface Portier {
  client: ClientPortier;
  target: string;
  metrics(): Promise<string>;
  /** The SIPp runs of this test, finished, for the diagnostics. */
  runs: SippRun[];
  /** Those still running. */
  running: Set<string>;
}

let portiers = 0;

/**
 * A Portier for one test, with alice and bob; on failure of `body` the
 * diagnostics: SIPp runs, Portier's SIP trace and log.
 */
async function withPortier(t: Test, algorithms: string | null, body: (p: Portier) => Promise<void>): Promise<void> {
  const client = await clientPortier(
    t,
    join(dir, `portier-${++portiers}`),
    Object.entries(PASSWORDS).map(([user, password]) => ({ user, password })),
    algorithms !== null ? { algorithms } : {},
  );
  const p: Portier = { client, target: `127.0.0.1:${client.ports.udp}`, metrics: client.metrics, runs: [], running: new Set() };
  t.teardown(killTools);
  await withDiagnostics(t, () => [...p.runs.map(sippDiagnostics), ...[...p.running].map((name) => ({ name: `SIPp ${name}`, text: '(still running)' })), ...portierDiagnostics(client)], () => body(p));
}

function sippDiagnostics(r: SippRun): { name: string; text: string } {
  const tail = (s: string, n: number) => (s.length > n ? '…' + s.slice(-n) : s);
  const name = `SIPp ${r.name}: exit ${r.code}${r.timedOut ? ' (killed at its time bound)' : ''}, ${r.successful} successful, ${r.failed} failed`;
  if (r.code === 0 && r.successful === 1) return { name, text: '(ok)' };
  return {
    name,
    text: [`errors (-trace_err):\n${tail(r.errors, 3000) || '(none)'}`, `output:\n${tail(r.output, 1500)}`, `messages (-trace_msg):\n${tail(r.messages, 6000)}`].join('\n'),
  };
}

let runs = 0;

/** One SIPp instance in the foreground: one call (-m 1), 15 s at most (-timeout_error), every trace in the test dir. */
async function sipp(p: Portier, name: string, scenario: string, args: string[], target: string | null): Promise<SippRun> {
  const id = `${++runs}-${name.replace(/\W+/g, '-')}`;
  const file = (kind: string) => join(dir, `${id}-${kind}.log`);
  p.running.add(name);
  const r = await runTool(
    'sipp',
    [
      '-sf', join(SCENARIOS, scenario),
      '-i', '127.0.0.1',
      '-m', '1',
      '-timeout', '15s', '-timeout_error',
      '-nostdin',
      '-trace_err', '-error_file', file('errors'),
      '-trace_msg', '-message_file', file('messages'),
      '-trace_screen', '-screen_file', file('screen'),
      ...args,
      ...(target === null ? [] : [target]),
    ],
    { timeoutMs: 25_000, cwd: dir },
  );
  p.running.delete(name);
  const read = (kind: string) => (existsSync(file(kind)) ? readFileSync(file(kind), 'utf8') : '');
  const screen = read('screen') || r.stdout;
  const stat = (label: string) => {
    const m = new RegExp(`${label}\\s*\\|\\s*(\\d+)\\s*\\|\\s*(\\d+)`).exec(screen);
    return m === null ? NaN : Number(m[2]);
  };
  const run = { ...r, name, successful: stat('Successful call'), failed: stat('Failed call'), errors: read('errors'), messages: read('messages'), screen };
  p.runs.push(run);
  return run;
}

function succeeded(t: Test, r: SippRun): void {
  t.notOk(r.timedOut, `${r.name}: SIPp finished on its own (${r.ms} ms)`);
  t.equal(r.code, 0, `${r.name}: SIPp exits 0`);
  t.equal(r.successful, 1, `${r.name}: 1 successful call`);
  t.equal(r.failed, 0, `${r.name}: no failed call`);
}

/** REGISTER as `user`, the binding's Contact at 127.0.0.1:`port` (SIPp's own port). */
function register(p: Portier, user: 'alice' | 'bob', port: number, name = `register ${user}`): Promise<SippRun> {
  return sipp(p, name, 'register.xml', ['-s', user, '-au', user, '-ap', PASSWORDS[user], '-p', String(port), '-key', 'contact_port', String(port)], p.target);
}

interface Device {
  port: number;
  /** `udp:127.0.0.1:PORT`, as Portier's trace names it. */
  peer: string;
  done: Promise<SippRun>;
}

/** One of bob's devices: registers from a free port, then a UAS runs `scenario` there; resolves once it listens. */
async function bobDevice(t: Test, p: Portier, scenario: string, name = 'bob UAS'): Promise<Device> {
  const port = await freeUdpPort();
  const reg = await register(p, 'bob', port, `register ${name}`);
  succeeded(t, reg);
  const since = Date.now();
  let exited: SippRun | null = null;
  const done = sipp(p, name, scenario, ['-s', 'bob', '-p', String(port)], null).then((r) => (exited = r));
  await until(() => {
    if (exited !== null) throw new Error(`${name} exited (${exited.code}) before listening: ${(exited.errors || exited.output).trim().slice(-500)}`);
    return udpPortBound(port, since);
  }, `${name} listening`, 5000);
  return { port, peer: `udp:127.0.0.1:${port}`, done };
}

/** alice calls bob through Portier with `scenario`. */
async function aliceCalls(p: Portier, scenario = 'uac-invite.xml'): Promise<SippRun & { peer: string }> {
  const port = await freeUdpPort();
  const r = await sipp(p, 'alice UAC', scenario, ['-s', 'bob', '-key', 'caller', 'alice', '-au', 'alice', '-ap', PASSWORDS.alice, '-p', String(port)], p.target);
  return { ...r, peer: `udp:127.0.0.1:${port}` };
}

async function call(t: Test, p: Portier): Promise<void> {
  const bob = await bobDevice(t, p, 'uas.xml');
  const uac = await aliceCalls(p);
  succeeded(t, uac);
  succeeded(t, await bob.done);
  t.match(uac.messages, /Proxy-Authorization: Digest username="alice",realm="example\.test",.*algorithm=MD5/, 'alice answered the 407 with MD5 credentials');
  t.match(uac.messages, /^ACK sip:bob@127\.0\.0\.1:\d+;transport=UDP SIP\/2\.0$/m, 'the 2xx ACK went to bob, along the Record-Route');
  t.match(uac.messages, /^BYE sip:bob@127\.0\.0\.1:\d+;transport=UDP SIP\/2\.0$/m);
  await until(async () => metric(await p.metrics(), 'portier_calls_total', { result: 'answered' }) === 1, 'Portier counted the answered call', 3000);
  await until(async () => metric(await p.metrics(), 'portier_calls_active') === 0, 'Portier saw the BYE', 3000);
  t.pass('Portier counted the call answered, and ended by the BYE');
}

const registrations = async (p: Portier) => metric(await p.metrics(), 'portier_registrations_active', { domain: REALM });

/** Portier's traced messages: `dir`, first line (method or status), CSeq, peer. */
function traced(p: Portier, q: { dir: 'in' | 'out'; first: string; cseq: string; peer?: string }): TracedMessage[] {
  return p.client.trace.filter((m) => m.dir === q.dir && m.first === q.first && m.cseq === q.cseq && (q.peer === undefined || m.peer === q.peer));
}

t.test('algorithms: [MD5]', { skip: missing, timeout: 60_000 }, (t) =>
  withPortier(t, '[MD5]', async (p) => {
    await t.test('(a) SIPp registers: 401, REGISTER with [authentication], 200', async (t) => {
      const r = await register(p, 'alice', await freeUdpPort());
      succeeded(t, r);
      t.match(r.messages, /WWW-Authenticate: Digest realm="example\.test", nonce="[^"]+", algorithm=MD5, qop="auth"/);
      t.match(r.messages, /Authorization: Digest username="alice",realm="example\.test",cnonce="[^"]+",nc=00000001,qop=auth,uri="[^"]+",nonce="[^"]+",response="[0-9a-f]{32}",algorithm=MD5/);
      t.equal(await registrations(p), 1, 'Portier holds the binding');
      // SIPp's digest uri is remote_ip:remote_port (-auth_uri changes it), not the Request-URI sip:example.test.
      t.comment('SIPp sent: ' + (/^Authorization: .*$/m.exec(r.messages)?.[0] ?? '(none)').replace(/(?<=[ ,])nonce="[^"]*"/, 'nonce="…"'));
    });

    await t.test('(b) alice calls bob with SIPp on both sides: established (ACK), then BYE/200', (t) => call(t, p));
  }),
);

t.test('(c) the default algorithms [SHA-256, MD5]: SIPp 3.6.1 fails on the first challenge (SHA-256)', { skip: missing, timeout: 60_000 }, (t) =>
  withPortier(t, null, async (p) => {
    const r = await register(p, 'alice', await freeUdpPort());
    t.comment(`SIPp REGISTER: exit ${r.code}; ${r.errors.trim().split('\n').pop()}`);
    t.notOk(r.timedOut, 'SIPp stops at once');
    t.equal(r.code, 255, 'SIPp exits with a fatal error (-1)');
    t.match(r.messages, /WWW-Authenticate: Digest [^\n]*algorithm=SHA-256[^\n]*\n\s*WWW-Authenticate: Digest [^\n]*algorithm=MD5/, 'the 401 offered SHA-256 first and MD5 second');
    t.match(r.errors + r.output, /createAuthHeader: authentication must use MD5 or AKAv1-MD5/, 'SIPp looked only at the SHA-256 challenge');
    t.notMatch(r.messages, /^Authorization:/m, 'and sent no credentials');
    t.equal(await registrations(p), 0, 'not registered');

    const c = await aliceCalls(p);
    t.comment(`SIPp INVITE: exit ${c.code}; ${c.errors.trim().split('\n').pop()}`);
    t.equal(c.code, 255, 'a call fails the same way on the 407');
    t.match(c.errors + c.output, /createAuthHeader: authentication must use MD5 or AKAv1-MD5/);
    t.notMatch(c.messages, /^Proxy-Authorization:/m);

    const m = await p.metrics();
    for (const reason of ['wrong_password', 'unknown_user', 'malformed']) {
      t.equal(metric(m, 'portier_auth_failures_total', { reason }), 0, `no ${reason} counted: SIPp never answered a challenge`);
    }
  }),
);

t.test('(d) algorithms: [MD5, SHA-256]: SIPp answers the first challenge, MD5', { skip: missing, timeout: 60_000 }, (t) =>
  withPortier(t, '[MD5, SHA-256]', async (p) => {
    const r = await register(p, 'alice', await freeUdpPort());
    succeeded(t, r);
    t.match(r.messages, /WWW-Authenticate: Digest [^\n]*algorithm=MD5[^\n]*\n\s*WWW-Authenticate: Digest [^\n]*algorithm=SHA-256/, 'MD5 offered first, SHA-256 second');
    t.match(r.messages, /^Authorization: Digest [^\n]*algorithm=MD5/m);
    t.equal(await registrations(p), 1);
    await t.test('and a call goes through', (t) => call(t, p));
  }),
);

t.test('(e) a forked call cancelled: bob has two SIPp devices, both ring, alice CANCELs, each device gets CANCEL and answers 487', { skip: missing, timeout: 60_000 }, (t) =>
  withPortier(t, '[MD5, SHA-256]', async (p) => {
    const one = await bobDevice(t, p, 'uas-cancel.xml', 'bob UAS 1');
    const two = await bobDevice(t, p, 'uas-cancel.xml', 'bob UAS 2');
    t.equal(await registrations(p), 2, "Portier holds both of bob's bindings");
    const uac = await aliceCalls(p, 'uac-cancel.xml');
    succeeded(t, uac);
    succeeded(t, await one.done);
    succeeded(t, await two.done);

    for (const [n, d] of [[1, one], [2, two]] as const) {
      t.equal(traced(p, { dir: 'out', first: 'INVITE', cseq: '2 INVITE', peer: d.peer }).length, 1, `Portier forked the INVITE to device ${n}`);
      t.equal(traced(p, { dir: 'out', first: 'CANCEL', cseq: '2 CANCEL', peer: d.peer }).length, 1, `Portier sent CANCEL to device ${n}`);
      t.ok(traced(p, { dir: 'in', first: '487', cseq: '2 INVITE', peer: d.peer }).length >= 1, `device ${n} answered 487`);
      t.ok(traced(p, { dir: 'out', first: 'ACK', cseq: '2 ACK', peer: d.peer }).length >= 1, `Portier ACKed device ${n}'s 487`);
    }
    const to180 = traced(p, { dir: 'out', first: '180', cseq: '2 INVITE', peer: uac.peer });
    t.equal(new Set(to180.map((m) => /^To:.*;tag=([^;\s]+)/im.exec(m.text)?.[1])).size, 2, 'alice got both 180s, each with its own To tag');
    const to487 = traced(p, { dir: 'out', first: '487', cseq: '2 INVITE', peer: uac.peer });
    t.ok(to487.length >= 1, 'alice got a 487');
    const last487 = Math.max(...[one, two].map((d) => p.client.trace.findIndex((m) => m.dir === 'in' && m.first === '487' && m.peer === d.peer)));
    t.ok(p.client.trace.indexOf(to487[0]) > last487, "the 487 to alice came after both devices' 487s (the best final response, RFC 3261 16.7)");
    t.notOk(p.client.trace.some((m) => m.dir === 'out' && m.peer === uac.peer && m.first === '200' && m.cseq === '2 INVITE'), 'no 200 to the INVITE');
    await until(async () => metric(await p.metrics(), 'portier_calls_total', { result: 'cancelled' }) === 1, 'Portier counted the call cancelled', 3000);
    t.equal(metric(await p.metrics(), 'portier_calls_active'), 0, 'no call left');
  }),
);

t.test('(f) re-INVITEs inside an established call, from the caller and from the callee', { skip: missing, timeout: 60_000 }, (t) =>
  withPortier(t, '[MD5, SHA-256]', async (p) => {
    const bob = await bobDevice(t, p, 'uas-reinvite.xml');
    const uac = await aliceCalls(p, 'uac-reinvite.xml');
    succeeded(t, uac);
    succeeded(t, await bob.done);

    const fromAlice = traced(p, { dir: 'out', first: 'INVITE', cseq: '3 INVITE', peer: bob.peer });
    t.equal(fromAlice.length, 1, "alice's re-INVITE (CSeq 3) reached bob");
    t.match(fromAlice[0]?.text ?? '', /^o=alice 53655765 2 /m, 'with its new SDP version');
    t.equal(traced(p, { dir: 'out', first: '200', cseq: '3 INVITE', peer: uac.peer }).length >= 1, true, "bob's 200 reached alice");
    t.equal(traced(p, { dir: 'out', first: 'ACK', cseq: '3 ACK', peer: bob.peer }).length, 1, "alice's ACK of it reached bob");
    const fromBob = traced(p, { dir: 'out', first: 'INVITE', cseq: '1 INVITE', peer: uac.peer });
    t.equal(fromBob.length, 1, "bob's re-INVITE reached alice through Portier's Record-Route");
    t.match(fromBob[0]?.text ?? '', /^INVITE sip:alice@127\.0\.0\.1:\d+;transport=UDP SIP\/2\.0\r\n/, "to alice's Contact");
    t.equal(traced(p, { dir: 'out', first: 'ACK', cseq: '1 ACK', peer: uac.peer }).length, 1, "bob's ACK reached alice");
    t.notOk(p.client.trace.some((m) => m.dir === 'out' && (m.first === '407' || m.first === '401') && !/^1 INVITE$/.test(m.cseq) && m.peer === uac.peer), 'no challenge inside the dialog');
    await until(async () => metric(await p.metrics(), 'portier_calls_active') === 0, 'Portier saw the BYE', 3000);
    t.equal(p.client.log.filter((l) => l.includes('"msg":"call"')).length, 1, 'one call log line');
    // A re-INVITE is no new call: one call in portier_calls_total whatever its re-INVITEs.
    t.equal(metric(await p.metrics(), 'portier_calls_total', { result: 'answered' }), 1, 'one answered call in portier_calls_total');
  }),
);

t.test('(g) a 200 retransmitted until ACKed: Portier forwards each copy, and the late ACK reaches the callee', { skip: missing, timeout: 60_000 }, (t) =>
  withPortier(t, '[MD5, SHA-256]', async (p) => {
    const bob = await bobDevice(t, p, 'uas.xml');
    const uac = await aliceCalls(p, 'uac-slow-ack.xml');
    succeeded(t, uac);
    const uas = await bob.done;
    succeeded(t, uas);

    const fromBob = traced(p, { dir: 'in', first: '200', cseq: '2 INVITE', peer: bob.peer });
    const toAlice = traced(p, { dir: 'out', first: '200', cseq: '2 INVITE', peer: uac.peer });
    t.comment(`bob sent his 200 ${fromBob.length} times; Portier forwarded it ${toAlice.length} times`);
    t.ok(fromBob.length >= 2, 'bob retransmitted his 200 while no ACK came');
    t.equal(toAlice.length, fromBob.length, 'Portier forwarded every copy to alice');
    t.equal(new Set(toAlice.map((m) => m.text)).size, 1, 'the same bytes each time');
    const received = (uac.messages.match(/^SIP\/2\.0 200 OK\r?\n(?:.+\r?\n)*?CSeq: 2 INVITE/gm) ?? []).length;
    t.equal(received, toAlice.length, 'alice (SIPp) received each copy');
    const ack = traced(p, { dir: 'out', first: 'ACK', cseq: '2 ACK', peer: bob.peer });
    t.equal(ack.length, 1, "alice's ACK reached bob");
    t.ok(p.client.trace.indexOf(ack[0]) > p.client.trace.indexOf(toAlice[toAlice.length - 1]), 'after the retransmissions');
  }),
);
