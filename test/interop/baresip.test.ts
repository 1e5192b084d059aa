// baresip (Debian baresip-core 1.0, on libre) as the door station, calling
// a linphonec phone through Portier on loopback (issue 11, item 2), driven
// through baresip's command interface (the ctrl_tcp module: JSON commands
// and events over TCP), over UDP and over TLS: the door (a kind=door account)
// registers with digest, dials the phone, the phone answers automatically,
// both see the call established, the phone sends the door-opening digit as
// SIP INFO and the door receives it (CALL_DTMF_START), the door hangs up.
//
// Helpers are in ./clients.ts.

import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Baresip, binaryMissing, callsActive, clientPortier, Linphonec, portierDiagnostics, waitFor, withDiagnostics, type Account, type Transport } from './clients.js';

const missing = binaryMissing('baresip', ['-h']) || binaryMissing('linphonec', ['-v']);

const door: Account = { user: 'gate', password: 'gate-Baresip-Pw3', kind: 'door' };
const phone: Account = { user: 'carol', password: 'carol-Linphone-Pw4' };

const dir = t.testdir({});

/**
 * Why a request toward the door over TLS fails (the assertions marked todo):
 * what Portier does wrong, as this test shows it.
 */

async function scenario(t: Test, doorTransport: Transport, phoneTransport: Transport, hangup: 'door' | 'phone'): Promise<void> {
  const base = join(dir, `${doorTransport}-${phoneTransport}-${hangup}`);
  const p = await clientPortier(t, base, [door, phone], { algorithms: '[MD5]' });
  const c = new Linphonec(t, 'carol', base, { account: phone, transport: phoneTransport, portier: p, autoAnswer: true });
  const g = await Baresip.start(t, 'gate', base, { account: door, transport: doorTransport, portier: p });

  await withDiagnostics(t, () => [{ name: 'gate', text: g.diagnostics() }, { name: 'carol', text: c.diagnostics() }, ...portierDiagnostics(p)], async () => {
    // ---- registration
    await Promise.all([g.registered(), c.registered()]);
    t.pass('the door (baresip) and the phone (linphonec) are registered');
    const regs = p.find({ dir: 'in', first: 'REGISTER', text: /^From:[^\r\n]*sip:gate@/im });
    t.ok(regs.every((m) => m.peer.startsWith(`${doorTransport}:127.0.0.1:`)), `the door registered over ${doorTransport}`);
    t.notMatch(regs[0]?.text, /^Authorization:/im, 'its first REGISTER has no credentials');
    const credentials = regs.map((m) => /^Authorization:\s*Digest ([^\r\n]*)/im.exec(m.text)?.[1]).find((x) => x !== undefined) ?? '';
    t.match(credentials, /username="gate"/, 'then it answered the 401 with credentials');
    t.notMatch(credentials, /algorithm=(?!MD5\b)/i, 'MD5 (baresip 1.0 knows no other)');

    // ---- the door calls the phone
    const c0 = c.mark();
    const e0 = g.events.length;
    const dial = await g.command('dial', 'sip:carol@example.test');
    t.ok(dial.ok, 'baresip accepted the dial command');
    await c.expect(/Receiving new incoming call from [^\n]*sip:gate@example\.test/, 'the incoming call', 15_000, c0);
    await g.event('CALL_ESTABLISHED', 15_000, () => true, e0);
    await c.expect(/Call \d+ with [^\n]*sip:gate@example\.test[^\n]* connected\./, 'the call connected', 15_000, c0);
    t.pass('the door and the phone both see the call established');
    await waitFor(async () => (await callsActive(p)) === 1, 'portier_calls_active 1', 5000);
    t.pass('Portier counts one active call');
    const invites = p.find({ dir: 'in', first: 'INVITE', text: /^From:[^\r\n]*sip:gate@/im });
    t.ok(invites.some((m) => /^Proxy-Authorization:\s*Digest [^\r\n]*username="gate"/im.test(m.text)), 'the door answered the 407 with credentials');
    t.ok(invites.every((m) => m.peer.startsWith(`${doorTransport}:`)), `the INVITE came over ${doorTransport}`);
    const out = p.find({ dir: 'out', first: 'INVITE' });
    t.equal(out.length, 1, 'Portier sent the phone one INVITE');
    t.match(out[0]?.peer, new RegExp(`^${phoneTransport}:127\\.0\\.0\\.1:`), `over ${phoneTransport}`);

    // ---- the phone opens the door: DTMF by INFO
    const e1 = g.events.length;
    c.send('#');
    // The digit reaches the door, or Portier answers the INFO itself (a final response it did not relay).
    await waitFor(
      () => g.events.slice(e1).some((e) => e.type === 'CALL_DTMF_START') || p.find({ dir: 'out', cseq: /INFO/, text: /^SIP\/2\.0 [3-6]\d\d /m }).length > 0,
      'the door to receive the digit, or Portier to refuse the INFO',
      10_000,
    );
    t.equal(p.find({ dir: 'in', first: 'INFO', text: /^Signal=#/m }).length, 1, 'the phone sent one INFO through Portier');
    const dtmf = await g.event('CALL_DTMF_START', 2000, () => true, e1).catch(() => null);
    t.equal(dtmf?.param, '#', 'the door received the digit #');
    if (dtmf === null) t.comment(`Portier answered the INFO: ${p.find({ dir: 'out', cseq: /INFO/ }).map((m) => `${m.first} to ${m.peer}`).join(', ')}`);
    // The INFO transaction is over for the phone before it hangs up (else liblinphone sends its BYE twice).
    await waitFor(() => p.find({ dir: 'out', cseq: /INFO/, text: /^SIP\/2\.0 [2-6]\d\d /m }).some((m) => m.peer.startsWith(`${phoneTransport}:`)), 'the final response to the INFO sent to the phone', 5000);

    if (hangup === 'door') {
      // ---- the door hangs up
      const c1 = c.mark();
      const e2 = g.events.length;
      t.ok((await g.command('hangup')).ok, 'baresip accepted the hangup command');
      await g.event('CALL_CLOSED', 10_000, () => true, e2);
      await c.expect(/Call \d+ with [^\n]*sip:gate@example\.test[^\n]* ended/, 'the call ended', 10_000, c1);
      t.pass('both see the call ended');
      await waitFor(async () => (await callsActive(p)) === 0, 'portier_calls_active 0', 5000);
      t.pass('Portier counts no active call');
      t.ok(p.find({ dir: 'out', first: 'BYE' }).length >= 1 && p.find({ dir: 'out', first: '200', cseq: /BYE/ }).length >= 1, 'BYE and its 200 went through Portier');
    } else {
      // ---- the phone hangs up: a BYE toward the door
      const c1 = c.mark();
      const e2 = g.events.length;
      c.send('terminate');
      await c.expect(/Call \d+ with [^\n]*sip:gate@example\.test[^\n]* ended/, 'the call ended', 10_000, c1);
      await waitFor(
        () => g.events.slice(e2).some((e) => e.type === 'CALL_CLOSED') || p.find({ dir: 'out', cseq: /BYE/, text: /^SIP\/2\.0 [3-6]\d\d /m }).length > 0,
        'the door to see the call closed, or Portier to refuse the BYE',
        10_000,
      );
      t.ok(p.find({ dir: 'in', first: 'BYE', text: /^From:[^\r\n]*sip:carol@/im }).length >= 1, 'the phone sent its BYE through Portier');
      const closed = await g.event('CALL_CLOSED', 2000, () => true, e2).catch(() => null);
      t.ok(closed !== null, 'the door saw the call closed by the phone');
      if (closed !== null) {
        await waitFor(async () => (await callsActive(p)) === 0, 'portier_calls_active 0', 5000);
        t.pass('Portier counts no active call');
      } else {
        t.comment(`Portier answered the BYE: ${p.find({ dir: 'out', cseq: /BYE/ }).map((m) => `${m.first} to ${m.peer}`).join(', ')}; portier_calls_active ${await callsActive(p)}`);
        // The door, still in the call, hangs up itself; the phone has no such dialog any more: 481.
        const e3 = g.events.length;
        t.ok((await g.command('hangup')).ok, 'the door hangs up in its turn');
        await g.event('CALL_CLOSED', 10_000, () => true, e3);
        t.ok(p.find({ dir: 'in', cseq: /BYE/, text: /^SIP\/2\.0 481 /m }).length >= 1, "the phone answered the door's BYE 481 (it had ended the call)");
        const active = await waitFor(async () => (await callsActive(p)) === 0, 'portier_calls_active 0', 3000).then(
          () => 0,
          () => callsActive(p),
        );
        t.equal(active, 0, 'Portier counts no active call (a BYE answered 481 ends it too)');
      }
    }

    await Promise.all([g.quit(), c.quit()]);
    t.notOk(g.running || c.running, 'both clients quit');
  });
}

t.test('baresip door over UDP calls linphonec over UDP; the door hangs up', { skip: missing, timeout: 90_000 }, (t) => scenario(t, 'udp', 'udp', 'door'));
t.test('baresip door over UDP calls linphonec over TCP; the phone hangs up', { skip: missing, timeout: 90_000 }, (t) => scenario(t, 'udp', 'tcp', 'phone'));
t.test('baresip door over TLS calls linphonec over TLS; the door hangs up', { skip: missing, timeout: 90_000 }, (t) => scenario(t, 'tls', 'tls', 'door'));
t.test('baresip door over TLS calls linphonec over UDP; the phone hangs up', { skip: missing, timeout: 90_000 }, (t) => scenario(t, 'tls', 'udp', 'phone'));

// baresip 1.0 on libre 1.1 computes MD5 digests only, and gives up on the
// whole challenge as soon as one WWW-Authenticate names another algorithm,
// wherever it is in the list: a site with such door stations needs
// auth.algorithms: [MD5] (the tests above use it).
for (const algorithms of [null, '[MD5, SHA-256]']) {
  t.test(`baresip 1.0 cannot answer a 401 that offers SHA-256 (algorithms: ${algorithms ?? 'the default [SHA-256, MD5]'})`, { skip: missing, timeout: 60_000 }, async (t) => {
    const base = join(dir, `algorithms-${algorithms === null ? 'default' : 'md5-first'}`);
    const p = await clientPortier(t, base, [door], algorithms === null ? {} : { algorithms });
    const g = await Baresip.start(t, 'gate', base, { account: door, transport: 'udp', portier: p });
    await withDiagnostics(t, () => [{ name: 'gate', text: g.diagnostics() }, ...portierDiagnostics(p)], async () => {
      await waitFor(() => /Register: Function not implemented/.test(g.output), 'baresip to give up on the challenge', 15_000);
      t.pass('baresip: "Register: Function not implemented"');
      const challenge = p.find({ dir: 'out', first: '401' })[0]?.text ?? '';
      t.match(challenge, /^WWW-Authenticate: Digest [^\r\n]*algorithm=SHA-256/im, 'the 401 offered SHA-256');
      t.match(challenge, /^WWW-Authenticate: Digest [^\r\n]*algorithm=MD5/im, 'and MD5');
      t.equal(p.find({ dir: 'in', first: 'REGISTER', text: /^Authorization:/im }).length, 0, 'baresip sent no credentials');
      await g.quit();
    });
  });
}
