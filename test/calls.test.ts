// Calls through the running server, end to end: test user agents
// (test/helpers/ua.ts) register over UDP and TCP and call each other through
// Portier on 127.0.0.1. Timers are short (T1 100 ms, ring timeout 3 s) so
// the failure paths run fast; every wait is bounded.
import t, { type Test } from 'tap';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import type { SipMessage } from '../src/sip/index.js';
import { defaultSdp, UA, type UATransport } from './helpers/ua.js';

const config = parseConfig(
  [
    'domains: [example.test]',
    'storage: {type: memory}',
    'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
    'proxy: {ring-timeout: 3}',
    'timers: {t1: 100, t2: 400, t4: 500}',
    'log: {level: fatal}',
  ].join('\n'),
  'calls.yaml',
);

let server: RunningServer;
let udpPort = 0;
let tcpPort = 0;

t.before(async () => {
  server = await startServer(config, createLogger('fatal'));
  for (const ep of server.listening()) {
    if (ep.protocol === 'udp') udpPort = ep.port;
    if (ep.protocol === 'tcp') tcpPort = ep.port;
  }
});
t.teardown(() => server.stop());

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let seq = 0;

/** A fresh user name per test, so that no binding of an earlier test takes part. */
function name(base: string): string {
  return `${base}${++seq}`;
}

async function ua(t: Test, transport: UATransport, user: string): Promise<UA> {
  const u = await UA.create({ transport, user, domain: 'example.test', proxyPort: transport === 'udp' ? udpPort : tcpPort });
  t.teardown(() => u.close());
  return u;
}

/** Registers and checks the 200. */
async function registered(t: Test, u: UA, opts: Parameters<UA['register']>[0] = {}): Promise<SipMessage> {
  const res = await u.register(opts);
  t.equal(res.status, 200, `${u.user} (${u.transport}) registered`);
  return res;
}

/** A door station and alice's device, both over UDP, both registered. */
async function doorAndAlice(t: Test): Promise<{ door: UA; alice: UA }> {
  const door = await ua(t, 'udp', name('door'));
  const alice = await ua(t, 'udp', name('alice'));
  await registered(t, door);
  await registered(t, alice);
  return { door, alice };
}

function noErrors(t: Test, ...uas: UA[]): void {
  for (const u of uas) t.same(u.errors.map((e) => e.message), [], `${u.user}: the UA met no protocol error`);
}

const inCall = (callId: string, method: string) => (m: SipMessage) => m.isRequest && m.method === method && m.callId() === callId;
/** The Vias, top first, as host:port strings. */
const viaHops = (m: SipMessage): string[] => m.via().map((v) => `${v.transport} ${v.host}:${v.port}`);

t.test('basic call over UDP: 100/180/200, ACK and BYE through Portier, SDP untouched', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'answer', ring: true, after: 200 });

  // An SDP as linphonec sends it (CRLF, a=rtcp-xr with spaces and commas).
  const sdp = defaultSdp('door') + 'a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n';
  const call = door.call(alice.aor, { sdp });
  const ok = await call.final(5000);
  t.equal(ok.status, 200, 'door got the 200');
  const statuses = call.responses.map((r) => r.status);
  t.same([...new Set(statuses)], [100, 180, 200], 'door saw 100, 180, 200 in that order');

  const inc = await alice.waitIncoming();
  const inv = inc.request;
  t.ok(inv.body.equals(Buffer.from(sdp, 'utf8')), 'the SDP alice got is byte for byte what door sent');
  t.equal(inv.get('content-type'), 'application/sdp');
  t.equal(inv.maxForwards(), 69, 'Max-Forwards decremented once (§16.6 step 3)');
  t.equal(inv.via().length, 2, "Portier's Via on top of door's");
  t.equal(inv.via()[0].port, udpPort, 'top Via is Portier');
  t.equal(inv.uri, alice.contactUri, 'Request-URI retargeted to the registered Contact');
  t.equal(inv.getAll('route').length, 0, "door's preloaded Route to Portier was consumed (§16.4)");
  const rr = inv.recordRoutes() ?? [];
  t.equal(rr.length, 1, 'one Record-Route (UDP in, UDP out)');
  t.equal(rr[0]?.uri.port, udpPort, 'Record-Route names Portier');
  t.ok(rr[0]?.uri.hasParam('lr'), 'loose router');
  t.equal((ok.recordRoutes() ?? []).length, 1, 'the 200 carries the Record-Route back to door');
  t.equal(ok.get('contact'), `<${alice.contactUri}>`, "the 200 carries alice's Contact");

  const ack = await alice.waitFor(inCall(call.callId, 'ACK'), 2000, 'ACK');
  t.equal(ack.uri, alice.contactUri, 'the ACK is addressed to the remote target');
  t.equal(ack.via().length, 2, 'the ACK came through Portier');
  t.equal(ack.via()[0].port, udpPort);
  t.not(ack.via()[1].branch, inv.via()[1].branch, 'the 2xx ACK is a new transaction (§13.2.2.4)');
  t.equal(ack.to().tag, inc.localTag);
  t.equal(ack.cseq().seq, inv.cseq().seq, 'CSeq number of the INVITE');
  t.equal(ack.getAll('route').length, 0, "Portier removed its own Route (§16.4)");

  const bye = await call.bye();
  t.equal(bye.status, 200, 'BYE answered 200');
  const byeAtAlice = await alice.waitFor(inCall(call.callId, 'BYE'), 2000, 'BYE');
  t.equal(byeAtAlice.via().length, 2, 'the BYE came through Portier');
  t.equal(alice.sentMatching((m) => m.status === 200 && m.cseq().method === 'BYE').length, 1, 'alice answered the BYE with 200');
  t.equal(bye.to().tag, inc.localTag, 'the 200 to BYE is from alice');
  await sleep(300);
  t.equal(alice.sentMatching((m) => m.status === 200 && m.cseq().method === 'INVITE').length, 1, "alice's 200 was never retransmitted: the ACK came in time");
  noErrors(t, door, alice);
});

t.test('rejected call: 486 reaches door; its ACK is hop by hop on both sides', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'reject', code: 486, ring: true, after: 100 });
  const call = door.call(alice.aor);
  const res = await call.final(5000);
  t.equal(res.status, 486, 'door got 486 Busy Here');
  const inc = await alice.waitIncoming();

  const doorAcks = door.sentMatching(inCall(call.callId, 'ACK'));
  t.equal(doorAcks.length, 1, 'door ACKed the 486');
  t.equal(doorAcks[0]?.topVia()?.branch, call.invite.topVia()?.branch, "door's ACK has its INVITE's branch (§17.1.1.3)");

  const ack = await alice.waitFor(inCall(call.callId, 'ACK'), 2000, 'ACK for the 486');
  t.equal(ack.topVia()?.branch, inc.request.topVia()?.branch, "Portier's ACK has the branch of the INVITE alice got: it belongs to her INVITE transaction");
  t.equal(ack.via().length, 1, "Portier generated it (door's own ACK ends at Portier)");
  t.equal(ack.to().tag, inc.localTag, 'To tag of the 486');
  t.equal(ack.uri, inc.request.uri, 'Request-URI of the INVITE alice got');
  await sleep(400);
  t.equal(alice.filter(inCall(call.callId, 'ACK')).length, 1, "door's ACK was absorbed by Portier, not forwarded");
  t.equal(alice.sentMatching({ status: 486 }).length, 1, "alice's 486 was not retransmitted: the ACK stopped Timer G");
  noErrors(t, door, alice);
});

t.test('caller cancels while ringing: 200 for the CANCEL, 487 for the INVITE, alice gets CANCEL', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'ring' });
  const call = door.call(alice.aor);
  await call.response(180, 3000);
  const c = await call.cancel();
  t.equal(c.status, 200, '200 for the CANCEL');
  t.equal(c.cseq().method, 'CANCEL');
  const res = await call.final(3000);
  t.equal(res.status, 487, '487 Request Terminated for the INVITE');
  const inc = await alice.waitIncoming();
  const cancel = await alice.waitFor(inCall(call.callId, 'CANCEL'), 2000, 'CANCEL');
  t.equal(cancel.topVia()?.branch, inc.request.topVia()?.branch, "the CANCEL alice got matches her INVITE's branch (§9.1)");
  t.equal(cancel.uri, inc.request.uri, 'and its Request-URI');
  t.ok(inc.cancelled, 'alice treated it as a cancellation');
  t.equal(inc.finalStatus, 487, 'alice answered her INVITE 487');
  await alice.waitFor(inCall(call.callId, 'ACK'), 2000, "Portier's ACK for alice's 487");
  await sleep(alice.t1 + 200);
  t.equal(alice.sentMatching((m) => m.status === 487).length, 1, "alice's 487 was ACKed before Timer G fired: sent once");
  t.equal(door.sentMatching(inCall(call.callId, 'ACK')).length, 1, 'door ACKed the 487');
  noErrors(t, door, alice);
});

t.test('a CANCEL that crosses the 200: 200 for the CANCEL, no effect; the call goes on', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'answer', ring: true, after: 50 });
  const call = door.call(alice.aor);
  t.equal((await call.final(5000)).status, 200);
  // Over UDP Portier's INVITE transaction is by now a record of its Accepted state (Timer L): the CANCEL still matches it (§9.2).
  const c = await call.cancel();
  t.equal(c.status, 200, '200 for the CANCEL, not 481');
  await sleep(200);
  t.equal(alice.filter(inCall(call.callId, 'CANCEL')).length, 0, 'alice got no CANCEL');
  t.equal((await call.bye()).status, 200, 'the call is up: BYE answered');
  noErrors(t, door, alice);
});

t.test('nobody answers: after the 3 s ring timeout door gets 408 and alice a CANCEL', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'ring' });
  const started = Date.now();
  const call = door.call(alice.aor);
  const res = await call.final(8000);
  const elapsed = Date.now() - started;
  t.equal(res.status, 408, 'door got 408 Request Timeout');
  t.ok(elapsed >= 2800 && elapsed < 6000, `after about the ring timeout (${elapsed} ms)`);
  await alice.waitFor(inCall(call.callId, 'CANCEL'), 2000, 'CANCEL');
  const inc = await alice.waitIncoming();
  t.equal(inc.finalStatus, 487, 'alice ended her INVITE with 487');
  await alice.waitFor(inCall(call.callId, 'ACK'), 2000, 'ACK for the 487');
  await sleep(alice.t1 + 200);
  t.equal(alice.sentMatching((m) => m.status === 487).length, 1, "alice's 487 was ACKed before Timer G fired: sent once");
  t.equal(door.filter((m) => m.status >= 200 && m.callId() === call.callId).length, 1, 'door got one final response only');
  noErrors(t, door, alice);
});

t.test('forking to three devices: the second answers, the others are cancelled, ACK and BYE reach the winner only', { timeout: 15000 }, async (t) => {
  const door = await ua(t, 'udp', name('door'));
  const user = name('alice');
  const devs = [await ua(t, 'udp', user), await ua(t, 'udp', user), await ua(t, 'udp', user)];
  await registered(t, door);
  let last: SipMessage | null = null;
  for (const d of devs) last = await registered(t, d);
  t.equal(last?.contacts()?.length, 3, 'the third 200 lists three bindings');
  devs[0].onInvite = () => ({ action: 'ring' });
  devs[1].onInvite = () => ({ action: 'answer', ring: true, after: 300 });
  devs[2].onInvite = () => ({ action: 'ring' });

  const call = door.call(devs[0].aor);
  const ok = await call.final(5000);
  t.equal(ok.status, 200);
  const incs = await Promise.all(devs.map((d) => d.waitIncoming()));
  t.equal(ok.to().tag, incs[1].localTag, "door's 200 is the second device's");
  for (const [i, d] of devs.entries()) t.equal(d.filter(inCall(call.callId, 'INVITE')).length, 1, `device ${i + 1} got the INVITE once`);

  for (const i of [0, 2]) {
    await devs[i].waitFor(inCall(call.callId, 'CANCEL'), 2000, `CANCEL at device ${i + 1}`);
    t.equal(incs[i].finalStatus, 487, `device ${i + 1} was cancelled (487)`);
    await devs[i].waitFor(inCall(call.callId, 'ACK'), 2000, `ACK for the 487 of device ${i + 1}`);
  }
  await devs[1].waitFor(inCall(call.callId, 'ACK'), 2000, 'ACK at the winner');
  t.equal((await call.bye()).status, 200, 'BYE answered');
  await devs[1].waitFor(inCall(call.callId, 'BYE'), 2000, 'BYE at the winner');
  await sleep(devs[0].t1 + 200);
  for (const i of [0, 2]) {
    t.equal(devs[i].sentMatching((m) => m.status === 487).length, 1, `device ${i + 1}: its 487 was ACKed at once (sent once)`);
    const acks = devs[i].filter(inCall(call.callId, 'ACK'));
    t.ok(acks.every((a) => a.to().tag === incs[i].localTag && a.topVia()?.branch === incs[i].request.topVia()?.branch), `device ${i + 1} got only the hop-by-hop ACK of its own 487`);
    t.equal(devs[i].filter(inCall(call.callId, 'BYE')).length, 0, `device ${i + 1} got no BYE`);
  }
  t.equal(devs[1].filter(inCall(call.callId, 'CANCEL')).length, 0, 'the winner got no CANCEL');
  t.equal(call.responses.filter((r) => r.status >= 300).length, 0, "the losers' 487 never reached door");
  noErrors(t, door, ...devs);
});

t.test('two devices answering at once: both 2xx reach door (§16.7), the extra dialog is ACKed and BYEd', { timeout: 15000 }, async (t) => {
  const door = await ua(t, 'udp', name('door'));
  const user = name('alice');
  const devs = [await ua(t, 'udp', user), await ua(t, 'udp', user)];
  await registered(t, door);
  for (const d of devs) await registered(t, d);
  for (const d of devs) d.onInvite = () => ({ action: 'answer' });

  const call = door.call(devs[0].aor);
  t.equal((await call.final(5000)).status, 200);
  const tags = (): Set<string> => new Set(call.responses.filter((r) => r.status === 200).map((r) => r.to().tag ?? ''));
  await door.waitFor(() => tags().size === 2, 3000, 'a second 2xx').catch(() => {});
  t.equal(tags().size, 2, 'door got both 2xx, one per device');
  t.equal(call.dialogs.length, 1, 'one dialog kept');
  t.equal(call.extraDialogs.length, 1, 'one extra dialog');
  const incs = await Promise.all(devs.map((d) => d.waitIncoming()));
  for (const [i, d] of devs.entries()) {
    const ack = await d.waitFor((m) => inCall(call.callId, 'ACK')(m) && m.to().tag === incs[i].localTag, 2000, `ACK at device ${i + 1}`).catch(() => null);
    t.ok(ack, `device ${i + 1} got the ACK for its 2xx`);
  }
  const extra = call.extraDialogs[0];
  const extraDev = devs.findIndex((_, i) => incs[i].localTag === extra?.remoteTag);
  t.ok(extraDev >= 0, 'the extra dialog is one of the devices');
  const kept = 1 - extraDev;
  if (extraDev >= 0) {
    await devs[extraDev].waitFor(inCall(call.callId, 'BYE'), 2000, 'BYE at the extra device');
    t.pass('the extra device got a BYE');
    const byeOk = await door.waitFor((m) => m.status === 200 && m.cseq().method === 'BYE' && m.to().tag === extra.remoteTag, 2000, '200 to the extra BYE').catch(() => null);
    t.ok(byeOk, 'and answered it 200 back through Portier');
    t.equal(devs[kept].filter(inCall(call.callId, 'BYE')).length, 0, 'the kept device got no BYE meanwhile');
  }
  t.equal((await call.bye()).status, 200, 'BYE of the kept dialog answered');
  if (extraDev >= 0) await devs[kept].waitFor(inCall(call.callId, 'BYE'), 2000, 'BYE at the kept device');
  const byes = door.sentMatching(inCall(call.callId, 'BYE'));
  t.equal(new Set(byes.map((b) => b.to().tag)).size, 2, 'door sent one BYE per dialog');
  noErrors(t, door, ...devs);
});

t.test('a retransmitted INVITE is absorbed by Portier: alice sees it once', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'answer', ring: true, after: 400 });
  const call = door.call(alice.aor);
  call.retransmit(); // the same datagram again, at once
  await call.response(100, 2000);
  call.retransmit(); // and once the transaction is known to exist
  t.equal((await call.final(5000)).status, 200);
  await sleep(300);
  const copies = door.sentMatching(inCall(call.callId, 'INVITE'));
  t.equal(copies.length, 3, 'door sent the INVITE three times');
  t.equal(new Set(copies.map((m) => m.topVia()?.branch)).size, 1, 'all with the same branch');
  t.equal(alice.filter(inCall(call.callId, 'INVITE')).length, 1, 'alice received the INVITE once');
  t.equal(alice.incoming.length, 1, 'one incoming call');
  t.equal((await call.bye()).status, 200);
  noErrors(t, door, alice);
});

t.test('a lost 200 is retransmitted end to end by alice until door ACKs it', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'answer', ring: true, after: 100 });
  door.dropIncoming((m) => m.status === 200 && m.cseq().method === 'INVITE', 1);
  const strays = server.stats.strayResponses;
  const call = door.call(alice.aor);
  const ok = await call.final(5000);
  t.equal(ok.status, 200, 'door got a 200: the retransmission');
  // The call ended for the proxy at the first 200: the retransmission matched the record its client transaction left (RFC 6026, Timer M).
  t.equal(server.stats.strayResponses, strays, 'not a stray');
  t.equal(door.dropped.filter((m) => m.status === 200).length, 1, 'the first copy was lost');
  const ack = await alice.waitFor(inCall(call.callId, 'ACK'), 2000, 'ACK');
  const ackAt = Date.now();
  t.equal(ack.to().tag, ok.to().tag);
  const sendsAtAck = alice.timeline.filter((e) => e.dir === 'out' && e.msg.status === 200 && e.msg.cseq().method === 'INVITE');
  t.ok(sendsAtAck.length >= 2, `alice sent her 200 ${sendsAtAck.length} times`);
  if (sendsAtAck.length >= 2) {
    const gap = sendsAtAck[1].at - sendsAtAck[0].at;
    t.ok(gap >= alice.t1 * 0.8 && gap <= alice.t1 * 2, `first retransmission after T1 (${gap} ms, T1 ${alice.t1} ms)`);
  }
  await sleep(2 * alice.t1 + 600);
  const sends = alice.timeline.filter((e) => e.dir === 'out' && e.msg.status === 200 && e.msg.cseq().method === 'INVITE');
  t.equal(sends.length, sendsAtAck.length, 'no retransmission after the ACK');
  t.ok(sends.every((e) => e.at <= ackAt), 'the ACK stopped them');
  t.equal(door.sentMatching(inCall(call.callId, 'ACK')).length, door.filter((m) => m.status === 200 && m.cseq().method === 'INVITE').length, 'door ACKed every 200 it got');
  t.equal((await call.bye()).status, 200);
  noErrors(t, door, alice);
});

t.test('re-INVITE and INFO both ways in the dialog, BYE from the callee', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'answer', ring: true, after: 50 });
  const call = door.call(alice.aor);
  t.equal((await call.final(5000)).status, 200);
  const inc = await alice.waitIncoming();
  await alice.waitFor(inCall(call.callId, 'ACK'), 2000, 'ACK');
  const aliceDialog = inc.dialog!;
  t.ok(aliceDialog, 'alice has a dialog');

  // door → alice: INFO (DTMF), then re-INVITE
  const dtmf = 'Signal=1\r\nDuration=250\r\n';
  t.equal((await call.info(dtmf)).status, 200, 'INFO door → alice: 200');
  const info = aliceDialog.requests.find((m) => m.method === 'INFO');
  t.equal(info?.body.toString(), dtmf, 'the DTMF body arrived intact');
  t.equal(info?.get('content-type'), 'application/dtmf-relay');
  t.equal(info?.via().length, 2, 'through Portier');
  const offer = defaultSdp('door-reoffer');
  t.equal((await call.reinvite(offer)).status, 200, 're-INVITE door → alice: 200');
  const reinv = aliceDialog.requests.find((m) => m.method === 'INVITE');
  t.ok(reinv?.body.equals(Buffer.from(offer)), 'the new offer arrived intact');
  await alice.waitFor((m) => inCall(call.callId, 'ACK')(m) && m.cseq().seq === reinv?.cseq().seq, 2000, 'ACK of the re-INVITE');

  // alice → door
  t.equal((await aliceDialog.info('Signal=#\r\nDuration=100\r\n')).status, 200, 'INFO alice → door: 200');
  t.equal(call.dialog.requests.find((m) => m.method === 'INFO')?.body.toString(), 'Signal=#\r\nDuration=100\r\n', 'door got it');
  t.equal((await aliceDialog.reinvite()).status, 200, 're-INVITE alice → door: 200');
  await door.waitFor((m) => inCall(call.callId, 'ACK')(m) && m.from().tag === inc.localTag, 2000, "ACK of alice's re-INVITE");
  t.ok(call.dialog.requests.some((m) => m.method === 'INVITE'), "door got alice's re-INVITE");

  const bye = await aliceDialog.bye();
  t.equal(bye.status, 200, 'BYE alice → door: 200');
  const byeAtDoor = await door.waitFor(inCall(call.callId, 'BYE'), 2000, 'BYE at door');
  t.equal(byeAtDoor.uri, door.contactUri, "addressed to door's Contact");
  t.equal(byeAtDoor.via().length, 2, 'through Portier');
  t.ok(call.dialog.terminated, "door's dialog ended");
  const cseqs = aliceDialog.requests.length > 0 ? door.filter((m) => m.isRequest && m.callId() === call.callId && m.from().tag === inc.localTag && m.method !== 'ACK').map((m) => m.cseq().seq) : [];
  t.ok(cseqs.every((s, i) => i === 0 || s > cseqs[i - 1]), `alice's CSeq numbers increase (${cseqs.join(', ')})`);
  noErrors(t, door, alice);
});

t.test('Max-Forwards 0, unregistered and unregistered-again users', { timeout: 15000 }, async (t) => {
  const { door, alice } = await doorAndAlice(t);
  alice.onInvite = () => ({ action: 'answer' });

  const loop = door.call(alice.aor, { maxForwards: 0 });
  t.equal((await loop.final(3000)).status, 483, 'Max-Forwards 0: 483 Too Many Hops');
  t.equal(alice.filter({ method: 'INVITE' }).length, 0, 'not forwarded');

  const bob = door.call('sip:bob@example.test');
  t.equal((await bob.final(3000)).status, 480, 'unregistered user: 480 Temporarily Unavailable');

  const un = await alice.unregister();
  t.equal(un.status, 200, 'unregister (Expires: 0) answered 200');
  t.notOk((un.contacts() ?? []).some((c) => c.uriText === alice.contactUri), 'the binding is gone from the 200');
  const after = door.call(alice.aor);
  t.equal((await after.final(3000)).status, 480, 'after unregistering: 480');
  t.equal(alice.filter({ method: 'INVITE' }).length, 0, 'alice was never called');
  noErrors(t, door, alice);
});

t.test('GRUU: pub-gruu and temp-gruu granted, calls to them ring one device, in-dialog requests to the GRUU reach it', { timeout: 15000 }, async (t) => {
  const door = await ua(t, 'udp', name('door'));
  const user = name('alice');
  const phone = await ua(t, 'udp', user);
  const tablet = await ua(t, 'udp', user);
  await registered(t, door);
  const res = await registered(t, phone, { gruu: true });
  await registered(t, tablet);
  t.equal(phone.pubGruu, `${phone.aor};gr=${phone.instance}`, 'pub-gruu is the AOR with gr=<instance-id> (RFC 5627 §3.1.2)');
  t.match(phone.tempGruu ?? '', /^sip:.+@example\.test;gr$/, 'temp-gruu granted');
  const mine = (res.contacts() ?? []).find((c) => c.uriText === phone.contactUri);
  t.ok(mine?.param('+sip.instance'), 'the 200 echoes +sip.instance');
  for (const d of [phone, tablet]) d.onInvite = () => ({ action: 'answer', ring: true, after: 100 });

  const call = door.call(phone.pubGruu ?? phone.aor);
  const ok = await call.final(5000);
  t.equal(ok.status, 200, 'call to the pub-gruu answered');
  const inc = await phone.waitIncoming();
  t.equal(ok.to().tag, inc.localTag, 'by the phone');
  t.equal(ok.get('contact'), `<${phone.pubGruu}>`, 'the phone uses its GRUU as Contact (as liblinphone does)');
  const ack = await phone.waitFor(inCall(call.callId, 'ACK'), 2000, 'ACK at the phone');
  t.equal(door.sentMatching(inCall(call.callId, 'ACK'))[0]?.uri, phone.pubGruu, "door's ACK is addressed to the GRUU");
  t.equal(ack.uri, phone.contactUri, 'and Portier delivered it to the registered contact');
  t.equal((await call.info()).status, 200, 'INFO to the GRUU answered');
  t.ok(inc.dialog?.requests.some((m) => m.method === 'INFO'), 'the phone got the INFO');
  t.equal((await call.bye()).status, 200, 'BYE to the GRUU answered');
  t.ok(inc.dialog?.terminated, 'the phone got the BYE');

  if (phone.tempGruu !== null) {
    phone.onInvite = () => ({ action: 'reject', code: 486 });
    const tmp = door.call(phone.tempGruu);
    t.equal((await tmp.final(5000)).status, 486, 'call to the temp-gruu: the phone answered it (486)');
    t.equal(phone.filter(inCall(tmp.callId, 'INVITE')).length, 1, 'the phone got that INVITE');
  }
  await sleep(200);
  t.equal(tablet.filter((m) => m.isRequest).length, 0, 'the other device of the AOR got nothing at all');
  noErrors(t, door, phone, tablet);
});

for (const [callerTransport, calleeTransport] of [
  ['udp', 'tcp'],
  ['tcp', 'udp'],
] as const) {
  t.test(`${callerTransport.toUpperCase()} caller, ${calleeTransport.toUpperCase()} callee: double Record-Route (RFC 5658), whole call`, { timeout: 15000 }, async (t) => {
    const caller = await ua(t, callerTransport, name(callerTransport === 'udp' ? 'door' : 'alice'));
    const callee = await ua(t, calleeTransport, name(calleeTransport === 'udp' ? 'door' : 'alice'));
    await registered(t, caller);
    await registered(t, callee);
    callee.onInvite = () => ({ action: 'answer', ring: true, after: 100 });
    const call = caller.call(callee.aor);
    const ok = await call.final(5000);
    t.equal(ok.status, 200, 'answered');
    const inc = await callee.waitIncoming();
    const portPer = { udp: udpPort, tcp: tcpPort };
    const rr = inc.request.recordRoutes() ?? [];
    t.equal(rr.length, 2, 'two Record-Route entries');
    const transportOf = (i: number): string => String(rr[i]?.uri.param('transport') ?? 'udp').toLowerCase();
    t.equal(transportOf(0), calleeTransport, "top entry: Portier's callee side");
    t.equal(rr[0]?.uri.port, portPer[calleeTransport]);
    t.equal(transportOf(1), callerTransport, "second entry: Portier's caller side");
    t.equal(rr[1]?.uri.port, portPer[callerTransport]);
    t.equal((ok.recordRoutes() ?? []).length, 2, 'both in the 200');
    t.same(viaHops(inc.request)[0], `${calleeTransport.toUpperCase()} 127.0.0.1:${portPer[calleeTransport]}`, 'Portier forwarded on the callee transport');

    const ack = await callee.waitFor(inCall(call.callId, 'ACK'), 2000, 'ACK');
    t.equal(ack.getAll('route').length, 0, 'both of Portier’s Route entries removed');
    t.equal((await call.info()).status, 200, 'INFO caller → callee');
    t.equal((await inc.dialog!.info()).status, 200, 'INFO callee → caller');
    t.ok(call.dialog.requests.some((m) => m.method === 'INFO'), 'caller got the INFO');
    t.equal((await call.bye()).status, 200, 'BYE');
    t.ok(inc.dialog?.terminated, 'callee got the BYE');
    noErrors(t, caller, callee);
  });
}
