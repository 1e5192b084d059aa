// linphonec (Debian linphone-cli: liblinphone 5.1 and belle-sip, the stack
// under Linhome) against Portier on loopback (issue 11, item 1), over UDP,
// TCP and TLS: two instances, alice and bob (bob answers automatically, -a),
// each with its own rc file and HOME, register with digest; alice calls bob,
// the call is established on both sides and in Portier's metrics; bob sends a
// DTMF digit (the door-opening key) as SIP INFO and alice receives it; alice
// hangs up; bob unregisters and a call to him gets 480 from Portier at once.
//
// Helpers and what was learnt about driving linphonec are in ./clients.ts.
// linphonec prints no registration event: `status register` is polled. A line
// of digits typed during a call is sent as DTMF (INFO, with use_info=1), and
// the receiver prints "Receiving tone D from ...".

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { binaryMissing, callsActive, clientPortier, Linphonec, portierDiagnostics, waitFor, withDiagnostics, type Account, type ClientPortier, type Transport } from './clients.js';

const missing = binaryMissing('linphonec', ['-v']);

const alice: Account = { user: 'alice', password: 'alice-Linphone-Pw1' };
const bob: Account = { user: 'bob', password: 'bob-Linphone-Pw2' };

const dir = t.testdir({});

/** The messages of one user's REGISTER transactions that Portier received, in order. */
function registers(p: ClientPortier, user: string) {
  return p.find({ dir: 'in', first: 'REGISTER', text: new RegExp(`^From:[^\\r\\n]*sip:${user}@`, 'im') });
}

async function scenario(t: Test, transport: Transport): Promise<void> {
  const base = join(dir, transport);
  const p = await clientPortier(t, base, [alice, bob]);
  const a = new Linphonec(t, 'alice', base, { account: alice, transport, portier: p });
  const b = new Linphonec(t, 'bob', base, { account: bob, transport, portier: p, autoAnswer: true });

  await withDiagnostics(t, () => [{ name: 'alice', text: a.diagnostics() }, { name: 'bob', text: b.diagnostics() }, ...portierDiagnostics(p)], async () => {
    // ---- registration with digest
    await Promise.all([a.registered(), b.registered()]);
    t.pass('alice and bob say they are registered');
    for (const user of ['alice', 'bob']) {
      const regs = registers(p, user);
      t.ok(regs.length >= 2, `${user}: REGISTER, challenged, then again with credentials`);
      t.ok(regs.every((m) => m.peer.startsWith(`${transport}:127.0.0.1:`)), `${user} registered over ${transport}`);
      t.match(regs[0].text, /^Contact:[^\r\n]*transport=/im);
      t.notMatch(regs[0].text, /^Authorization:/im, `${user}: the first REGISTER has no credentials`);
      t.ok(p.find({ dir: 'out', first: '401', cseq: /REGISTER/, text: new RegExp(`^To:[^\\r\\n]*sip:${user}@`, 'im') }).length >= 1, `${user}: Portier challenged with 401`);
      const authorized = regs.find((m) => /^Authorization:/im.test(m.text));
      const credentials = /^Authorization:\s*Digest ([^\r\n]*)/im.exec(authorized?.text ?? '')?.[1] ?? '';
      t.match(credentials, new RegExp(`username="${user}"`), `${user} answered with credentials for ${user}`);
      t.match(credentials, /algorithm=SHA-256/, `${user} answered the first challenge, SHA-256`);
      t.ok(p.find({ dir: 'out', first: '200', cseq: /REGISTER/, text: new RegExp(`^To:[^\\r\\n]*sip:${user}@`, 'im') }).length >= 1, `${user}: 200 OK`);
    }

    // ---- alice calls bob; bob answers at once
    const a0 = a.mark();
    const b0 = b.mark();
    a.send(`call sip:bob@example.test`);
    await b.expect(/Receiving new incoming call from [^\n]*sip:alice@example\.test/, 'the incoming call', 15_000, b0);
    await a.expect(/Call \d+ with sip:bob@example\.test connected\./, 'the call connected', 15_000, a0);
    await b.expect(/Call \d+ with [^\n]*sip:alice@example\.test[^\n]* connected\./, 'the call connected', 15_000, b0);
    await a.expect(/Media streams established with sip:bob@example\.test/, 'media (null audio) running', 10_000, a0);
    t.pass('alice and bob both see the call connected');
    await waitFor(async () => (await callsActive(p)) === 1, 'portier_calls_active 1', 5000);
    t.pass('Portier counts one active call');
    const invites = p.find({ dir: 'in', first: 'INVITE', text: /^From:[^\r\n]*sip:alice@/im });
    t.ok(invites.some((m) => !/^Proxy-Authorization:/im.test(m.text)) && invites.some((m) => /^Proxy-Authorization:\s*Digest [^\r\n]*username="alice"/im.test(m.text)), 'alice was challenged (407) and sent the INVITE again with credentials');
    const toBob = p.find({ dir: 'out', first: 'INVITE' });
    t.equal(toBob.length, 1, 'Portier sent bob one INVITE');
    t.match(toBob[0]?.peer, new RegExp(`^${transport}:127\\.0\\.0\\.1:`), `over ${transport}`);
    t.notMatch(toBob[0]?.text, /^Proxy-Authorization:/im, "without alice's credentials");
    t.ok(p.find({ dir: 'in', first: 'ACK', text: /^From:[^\r\n]*sip:alice@/im }).length >= 1 && p.find({ dir: 'out', first: 'ACK' }).length >= 1, 'the 2xx ACK went through Portier (Record-Route) to bob');

    // ---- bob sends DTMF (the door-opening key) as INFO; alice receives it
    const a1 = a.mark();
    b.send('5');
    await a.expect(/Receiving tone 5 from sip:bob@example\.test/, 'the DTMF digit', 10_000, a1);
    t.pass('alice received the digit 5');
    const info = p.find({ dir: 'in', first: 'INFO', text: /^From:[^\r\n]*sip:bob@/im });
    t.equal(info.length, 1, 'bob sent one INFO through Portier');
    t.match(info[0]?.text, /^Content-Type:\s*application\/dtmf-relay/im);
    t.match(info[0]?.text, /^Signal=5\b/m);
    const infoOut = p.find({ dir: 'out', first: 'INFO' });
    t.equal(infoOut.length, 1, 'Portier forwarded it to alice');
    await waitFor(() => p.find({ dir: 'out', first: '200', cseq: /INFO/ }).length >= 1, "Portier to relay alice's 200 to bob", 5000);
    t.pass("and relayed alice's 200 to bob");

    // ---- alice hangs up
    const b2 = b.mark();
    a.send('terminate');
    await a.expect(/Call \d+ with sip:bob@example\.test ended/, 'the call ended', 10_000, a1);
    await b.expect(/Call \d+ with [^\n]*sip:alice@example\.test[^\n]* ended/, 'the call ended', 10_000, b2);
    t.pass('both see the call ended');
    await waitFor(async () => (await callsActive(p)) === 0, 'portier_calls_active 0', 5000);
    t.pass('Portier counts no active call');
    t.ok(p.find({ dir: 'out', first: 'BYE' }).length >= 1 && p.find({ dir: 'out', first: '200', cseq: /BYE/ }).length >= 1, 'BYE and its 200 went through Portier');

    // ---- bob unregisters; a call to him gets 480 at once
    b.send('unregister');
    await b.ask('status register', /^registered=0$/m, 'unregistered', 10_000);
    const unreg = registers(p, 'bob').at(-1);
    t.match(unreg?.text, /(^Expires:\s*0\s*$)|(;expires=0\b)/im, 'bob sent REGISTER with expires 0');
    t.ok(p.find({ dir: 'out', first: '200', cseq: /REGISTER/, text: /^To:[^\r\n]*sip:bob@/im }).at(-1)?.text.match(/^Contact:/im) === null, 'the 200 lists no binding of bob any more');
    const invitesBefore = p.find({ dir: 'out', first: 'INVITE' }).length;
    const a3 = a.mark();
    a.send('call sip:bob@example.test');
    await a.expect(/Call \d+ with sip:bob@example\.test error\./, 'the call to be refused', 10_000, a3);
    const refused = p.find({ dir: 'out', first: '480', cseq: /INVITE/ });
    t.equal(refused.length, 1, 'Portier answered 480 to the call to unregistered bob');
    t.match(refused[0]?.text, /^SIP\/2\.0 480 /);
    t.match(a.log(), /^SIP\/2\.0 480 /m, 'alice received it');
    t.equal(p.find({ dir: 'out', first: 'INVITE' }).length, invitesBefore, 'and sent nothing to bob');
    await waitFor(async () => (await callsActive(p)) === 0, 'portier_calls_active 0', 5000);

    await Promise.all([a.quit(), b.quit()]);
    t.notOk(a.running || b.running, 'both linphonec instances quit');
  });
}

t.test('linphonec over UDP: digest registration, call, DTMF by INFO, hang-up, 480 after unregistering', { skip: missing, timeout: 90_000 }, (t) => scenario(t, 'udp'));
t.test('linphonec over TCP: the same', { skip: missing, timeout: 90_000 }, (t) => scenario(t, 'tcp'));
t.test('linphonec over TLS (trusting the test CA, name checked): the same', { skip: missing, timeout: 90_000 }, (t) => scenario(t, 'tls'));

t.test('linphonec over TLS refuses Portier when it does not trust its CA', { skip: missing, timeout: 60_000 }, async (t) => {
  const base = join(dir, 'tls-untrusted');
  const p = await clientPortier(t, base, [alice]);
  const other = join(base, 'other-ca.pem');
  writeFileSync(other, p.certs.otherCert);
  const a = new Linphonec(t, 'alice', base, { account: alice, transport: 'tls', portier: p, rootCa: other });
  await withDiagnostics(t, () => [{ name: 'alice', text: a.diagnostics() }, ...portierDiagnostics(p)], async () => {
    await waitFor(() => /SSL handshake failed/.test(a.log()), 'alice: the TLS handshake to fail', 15_000);
    t.pass('the handshake failed on the certificate');
    t.match(a.log(), /Certificate verification failed|X509/, 'alice could not verify it');
    t.equal(p.find({ dir: 'in', first: 'REGISTER' }).length, 0, 'Portier received no REGISTER');
    t.equal((await a.ask('status register', /^registered[^\n]*$/m, 'status')).at(0), 'registered=-1', 'alice is not registered');
    await a.quit();
  });
});

// A Linhome app names its outbound proxy by host name (over TLS it must: see
// clients.ts), e.g. sip.school.example.org for the domain school.example.org.
// Here that name is localhost, which resolves to Portier's TLS listener but is
// not one of its domains nor an address it listens on.
t.test('linphonec over TLS with the proxy named by host name (localhost) in reg_proxy and reg_route', { skip: missing, timeout: 60_000 }, async (t) => {
  const base = join(dir, 'tls-hostname');
  const p = await clientPortier(t, base, [alice, bob]);
  const a = new Linphonec(t, 'alice', base, { account: alice, transport: 'tls', portier: p, proxyHost: 'localhost' });
  const b = new Linphonec(t, 'bob', base, { account: bob, transport: 'tls', portier: p, proxyHost: 'localhost', autoAnswer: true });
  await withDiagnostics(t, () => [{ name: 'alice', text: a.diagnostics() }, { name: 'bob', text: b.diagnostics() }, ...portierDiagnostics(p)], async () => {
    await Promise.all([a.registered(), b.registered()]);
    t.pass('both register through localhost (the certificate names it)');
    const a0 = a.mark();
    a.send('call sip:bob@example.test');
    const end = await a.expect(/Call \d+ with sip:bob@example\.test (connected|error)\./, 'the call to connect or fail', 15_000, a0);
    const invite = p.find({ dir: 'in', first: 'INVITE' }).at(-1);
    t.match(invite?.text, /^Route: <sip:localhost:\d+;transport=tls;lr>/im, "alice's INVITE has a Route naming Portier as localhost");
    t.equal(end[1], 'connected', 'the call connects: Portier takes the Route naming it localhost (its own TLS listener) as its own');
    if (end[1] === 'error') t.comment('Portier answered: ' + (p.find({ dir: 'out', cseq: /INVITE/ }).map((m) => m.first).join(', ')) + '; its log: ' + p.log.filter((l) => /send failed|handshake/.test(l)).map((l) => (JSON.parse(l) as { msg: string }).msg).join('; '));
    await Promise.all([a.quit(), b.quit()]);
  });
});
