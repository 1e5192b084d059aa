import t from 'tap';
import { TransactionState } from '../../src/transaction/index.js';
import { msg, request, requestOf, response, setup, source } from './helpers.js';

const T1 = 500;
const T2 = 4000;
const T4 = 5000;

function ackFor(inviteBranch: string, toTag = 'srv-tag', extra: { branch?: string } = {}) {
  return request({ method: 'ACK', branch: extra.branch ?? inviteBranch, toTag, cseqMethod: 'ACK' });
}

t.test('INVITE server: 100, 180, 486; retransmitted INVITE gets the last response; Timer G doubles to T2; ACK confirms; Timer I ends it', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const src = source();
  layer.receive(request(), src);
  t.equal(user.requests.length, 1);
  const tx = user.requests[0].tx;
  t.equal(tx.method, 'INVITE');
  t.ok(tx.isInvite);
  t.equal(tx.state, TransactionState.Proceeding);
  t.equal(tx.source, src);
  t.same(layer.stats(), { serverInvite: 1, serverNonInvite: 0, clientInvite: 0, clientNonInvite: 0, retransmissionsSent: 0, retransmissionsAbsorbed: 0 });

  layer.receive(request(), src);
  t.equal(transport.sent.length, 0, 'retransmission before any response: absorbed, nothing to resend');
  t.equal(user.requests.length, 1, 'retransmissions never reach the user');

  t.ok(tx.respond(response(requestOf(tx), 100)));
  layer.receive(request(), src);
  t.same(transport.lines(), ['SIP/2.0 100 Trying', 'SIP/2.0 100 Trying'], 'a 100 is resent: the client stops retransmitting');
  t.equal(tx.state, TransactionState.Proceeding, 'a 100 changes nothing');

  t.ok(tx.respond(response(requestOf(tx), 180)));
  layer.receive(request(), src);
  t.same(transport.lines().slice(2), ['SIP/2.0 180 Ringing', 'SIP/2.0 180 Ringing']);
  t.equal(tx.status, 180);

  transport.clear();
  const start = wheel.now();
  t.ok(tx.respond(response(requestOf(tx), 486)));
  t.equal(tx.state, TransactionState.Completed);
  t.notOk(tx.respond(response(requestOf(tx), 200)), 'no second final');
  t.notOk(tx.respond(response(requestOf(tx), 180)), 'no provisional after the final');
  layer.receive(request(), src);
  t.equal(transport.sent.length, 2, 'retransmitted INVITE: the 486 again');
  transport.clear();

  wheel.advance(20_000);
  const gaps = transport.sent.map((s) => s.at - start);
  t.same(gaps, [500, 1500, 3500, 7500, 11_500, 15_500, 19_500], 'Timer G: T1, 2T1, 4T1, then T2 each time');
  t.ok(transport.lines().every((l) => l === 'SIP/2.0 486 Busy Here'));
  t.equal(transport.sent[0].dest.port, 5062);
  t.equal(transport.sent[0].dest.address, '192.0.2.10');

  layer.receive(ackFor('z9hG4bKclient1'), src);
  t.equal(tx.state, TransactionState.Confirmed);
  t.equal(user.acks.length, 0, 'the ACK for a non-2xx is absorbed');
  transport.clear();
  layer.receive(ackFor('z9hG4bKclient1'), src);
  layer.receive(request(), src);
  t.equal(user.acks.length, 0, 'a retransmitted ACK is absorbed too');
  t.equal(transport.sent.length, 0, 'Confirmed: nothing is sent, not even to a retransmitted INVITE');
  wheel.advance(T2 * 4);
  t.equal(transport.sent.length, 0, 'no more Timer G after the ACK');
  t.equal(tx.state, TransactionState.Terminated, 'Timer I (T4) has fired');
  t.same(user.terminated, [tx]);
  t.same(user.timeouts, []);
  const s = layer.stats();
  t.equal(s.serverInvite, 0, 'removed from the table');
  t.equal(s.retransmissionsAbsorbed, 6, "4 INVITEs, 1 ACK, 1 INVITE while Confirmed");
  t.equal(s.retransmissionsSent, 3 + 7);
});

t.test('INVITE server: Timer I is T4 exactly', async (t) => {
  const { wheel, user, layer } = setup();
  layer.receive(request(), source());
  const tx = user.requests[0].tx;
  tx.respond(response(requestOf(tx), 603));
  layer.receive(ackFor('z9hG4bKclient1'), source());
  wheel.advance(T4 - 10);
  t.equal(tx.state, TransactionState.Confirmed);
  wheel.advance(10);
  t.equal(tx.state, TransactionState.Terminated);
});

t.test('INVITE server: Timer H fires without an ACK and the user is told', async (t) => {
  const { wheel, transport, user, layer } = setup();
  layer.receive(request(), source());
  const tx = user.requests[0].tx;
  tx.respond(response(requestOf(tx), 480));
  wheel.advance(64 * T1 - 10);
  t.equal(tx.state, TransactionState.Completed);
  t.same(user.timeouts, []);
  wheel.advance(10);
  t.equal(tx.state, TransactionState.Terminated);
  t.same(user.timeouts, [tx], 'onServerTimeout');
  t.same(user.terminated, [tx], 'then onServerTerminated');
  t.equal(transport.sent.length, 11, 'the final plus 10 Timer G retransmissions in 64*T1');
  wheel.advance(60_000);
  t.equal(transport.sent.length, 11, 'Timer G stops with H');
  t.equal(layer.stats().serverInvite, 0);
  t.equal(wheel.size, 0, 'no timers left behind');
  // A late ACK matches nothing now and goes up as end-to-end.
  layer.receive(ackFor('z9hG4bKclient1'), source());
  t.equal(user.acks.length, 1);
});

t.test('INVITE server: 2xx → Accepted (RFC 6026); retransmitted INVITEs absorbed; more 2xx pass through; ACK goes up; Timer L ends it', async (t) => {
  // Over UDP the layer keeps Accepted as a record: the object ends with the 2xx and still passes further 2xx for whoever holds it.
  const { wheel, transport, user, layer } = setup();
  const src = source();
  layer.receive(request(), src);
  const tx = user.requests[0].tx;
  tx.respond(response(requestOf(tx), 100));
  const ok = response(requestOf(tx), 200);
  t.ok(tx.respond(ok));
  t.equal(tx.state, TransactionState.Terminated, 'ended: Accepted is a record of the layer');
  t.same(user.terminated, [tx], 'the user is told at once');
  t.equal(layer.stats().serverInvite, 1, 'still counted until Timer L');
  transport.clear();
  layer.receive(request(), src);
  t.equal(transport.sent.length, 0, 'retransmitted INVITE absorbed: the 2xx is the TU’s to resend');
  t.equal(user.requests.length, 1, 'not a new transaction');
  t.equal(layer.stats().retransmissionsAbsorbed, 1);
  t.ok(tx.respond(ok), 'a retransmitted 2xx passes through');
  t.ok(tx.respond(response(requestOf(tx), 200, { toTag: 'other-fork' })), 'so does a 2xx of another fork');
  t.notOk(tx.respond(response(requestOf(tx), 486)), 'no non-2xx after a 2xx');
  t.notOk(tx.respond(response(requestOf(tx), 180)), 'no provisional after a 2xx');
  t.equal(transport.sent.length, 2);
  t.equal(transport.sent[0].dest, tx.dest, 'to where the INVITE’s responses go');
  wheel.advance(30_000);
  t.equal(transport.sent.length, 2, 'no Timer G for 2xx');
  // ACK for the 2xx: a new branch (§13.2.2.4), or the INVITE's (a common UA bug): both go up.
  layer.receive(ackFor('z9hG4bKclient1', 'srv-tag', { branch: 'z9hG4bKack2xx' }), src);
  layer.receive(ackFor('z9hG4bKclient1'), src);
  t.equal(user.acks.length, 2);
  // A CANCEL that crossed the 2xx: the INVITE is known, answered; the CANCEL has no effect (§9.2).
  layer.receive(request({ method: 'CANCEL' }), src);
  t.equal(user.cancels.length, 1);
  t.equal(user.cancels[0].inviteTx, null);
  t.equal(user.cancels[0].inviteAnswered, true, 'the user answers 200');
  wheel.advance(64 * T1 - 30_000 - 1);
  layer.receive(request(), src);
  t.equal(user.requests.length, 1, 'absorbed until Timer L');
  wheel.advance(1);
  t.equal(layer.stats().serverInvite, 0, 'Timer L = 64*T1');
  layer.receive(request(), src);
  t.equal(user.requests.length, 2, 'after L the same INVITE is a new transaction');
  layer.receive(request({ method: 'CANCEL', branch: 'z9hG4bKother' }), src);
  t.equal(user.cancels[1].inviteAnswered, false, 'an unknown INVITE: 481');
});

t.test('INVITE server over TCP: Accepted stays an object until Timer L; then no more 2xx pass', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const src = source('tcp', '192.0.2.10', 5062, 7);
  layer.receive(request({ transport: 'TCP' }), src);
  const tx = user.requests[0].tx;
  const ok = response(requestOf(tx), 200);
  t.ok(tx.respond(ok));
  t.equal(tx.state, TransactionState.Accepted);
  t.same(user.terminated, []);
  layer.receive(request({ method: 'CANCEL', transport: 'TCP' }), src);
  t.equal(user.cancels[0].inviteTx, tx, 'a CANCEL finds the object');
  t.ok(tx.respond(ok));
  wheel.advance(64 * T1);
  t.equal(tx.state, TransactionState.Terminated, 'Timer L = 64*T1 on streams too (RFC 6026)');
  t.same(user.terminated.filter((x) => x === tx), [tx]);
  transport.clear();
  t.notOk(tx.respond(ok), 'nothing passes after Timer L');
  t.equal(transport.sent.length, 0);
});

t.test('non-INVITE server: Trying absorbs silently, Proceeding/Completed resend the last response, Timer J ends it', async (t) => {
  // Over UDP, Completed is kept by the layer as a record (finished.ts): the transaction object ends with its final.
  const { wheel, transport, user, layer } = setup();
  const src = source();
  const opts = { method: 'REGISTER', uri: 'sip:example.com', branch: 'z9hG4bKreg1' };
  layer.receive(request(opts), src);
  const tx = user.requests[0].tx;
  t.equal(tx.state, TransactionState.Trying);
  t.notOk(tx.isInvite);
  t.equal(layer.stats().serverNonInvite, 1);
  layer.receive(request(opts), src);
  t.equal(transport.sent.length, 0, 'Trying: nothing to resend');
  t.ok(tx.respond(response(requestOf(tx), 100)));
  t.equal(tx.state, TransactionState.Proceeding);
  layer.receive(request(opts), src);
  t.same(transport.lines(), ['SIP/2.0 100 Trying', 'SIP/2.0 100 Trying']);
  transport.clear();
  t.ok(tx.respond(response(requestOf(tx), 200)));
  t.equal(tx.state, TransactionState.Terminated, 'the object is done: the layer keeps the final');
  t.same(user.terminated, [tx], 'and the user is told at once');
  t.notOk(tx.respond(response(requestOf(tx), 200)));
  t.equal(layer.stats().serverNonInvite, 1, 'still a live transaction until Timer J');
  layer.receive(request(opts), src);
  t.same(transport.lines(), ['SIP/2.0 200 OK', 'SIP/2.0 200 OK']);
  t.equal(transport.sent[1].dest, transport.sent[0].dest, 'resent where the first went');
  t.equal(user.requests.length, 1);
  wheel.advance(64 * T1 - 10);
  t.equal(transport.sent.length, 2, 'no retransmissions of its own');
  layer.receive(request(opts), src);
  t.equal(transport.sent.length, 3, 'Completed until Timer J');
  t.equal(user.requests.length, 1);
  t.equal(layer.stats().serverNonInvite, 1);
  wheel.advance(10);
  t.equal(layer.stats().serverNonInvite, 0, 'Timer J = 64*T1');
  t.equal(wheel.size, 0);
  t.equal(layer.stats().retransmissionsAbsorbed, 4);
  layer.receive(request(opts), src);
  t.equal(user.requests.length, 2, 'after Timer J the same request is a new transaction');
  t.equal(transport.sent.length, 3);
});

t.test('non-INVITE server, respondStateless (a challenge): sent once, the transaction ends at once, a retransmission is a new request', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const src = source();
  const opts = { method: 'REGISTER', uri: 'sip:example.com', branch: 'z9hG4bKchal1' };
  layer.receive(request(opts), src);
  const tx = user.requests[0].tx;
  t.throws(() => tx.respondStateless(response(requestOf(tx), 100)), 'a final response only');
  t.ok(tx.respondStateless(response(requestOf(tx), 401)));
  t.same(transport.lines(), ['SIP/2.0 401 Unauthorized']);
  t.equal(tx.state, TransactionState.Terminated, 'terminated');
  t.equal(tx.status, 401);
  t.same(user.terminated, [tx], 'the user is told');
  t.equal(layer.stats().serverNonInvite, 0, 'no transaction left: no record for Timer J');
  t.equal(wheel.size, 0, 'and no timer');
  t.notOk(tx.respondStateless(response(requestOf(tx), 401)), 'one final');
  t.notOk(tx.respond(response(requestOf(tx), 200)), 'of any kind');
  layer.receive(request(opts), src);
  t.equal(user.requests.length, 2, 'the retransmission is handed up as a new request');
  t.equal(transport.sent.length, 1, 'nothing resent by the layer');
  t.equal(layer.stats().retransmissionsAbsorbed, 0);
  const again = user.requests[1].tx;
  t.not(again, tx, 'in a transaction of its own');
  t.ok(again.respondStateless(response(requestOf(again), 401)));
  t.equal(layer.stats().serverNonInvite, 0);
});

t.test('INVITE server, respondStateless: the same as respond (the ACK of a 4xx must be absorbed)', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const src = source();
  layer.receive(request({ branch: 'z9hG4bKchal2' }), src);
  const tx = user.requests[0].tx;
  t.ok(tx.isInvite);
  t.ok(tx.respondStateless(response(requestOf(tx), 407, { toTag: 'srv-tag' })));
  t.equal(tx.state, TransactionState.Completed, 'Completed');
  wheel.advance(T1);
  t.same(transport.lines(), ['SIP/2.0 407 Proxy Authentication Required', 'SIP/2.0 407 Proxy Authentication Required'], 'Timer G retransmits it');
  layer.receive(ackFor('z9hG4bKchal2'), src);
  t.equal(tx.state, TransactionState.Confirmed, 'the ACK is absorbed');
  t.equal(user.acks.length, 0, 'not handed up');
});

t.test('reliable transport: no retransmissions, I and J are zero, H still applies', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const src = source('tcp', '192.0.2.20', 50_123, 7);
  layer.receive(request({ transport: 'TCP', branch: 'z9hG4bKt1' }), src);
  const tx = user.requests[0].tx;
  t.ok(tx.reliable);
  tx.respond(response(requestOf(tx), 486));
  t.same(transport.sent[0].dest, { protocol: 'tcp', address: '192.0.2.20', port: 50_123, connectionId: 7 }, 'back down the same connection');
  wheel.advance(20_000);
  t.equal(transport.sent.length, 1, 'no Timer G on a stream');
  layer.receive(request({ method: 'ACK', transport: 'TCP', branch: 'z9hG4bKt1', toTag: 'srv-tag' }), src);
  t.equal(tx.state, TransactionState.Terminated, 'Timer I is zero');
  t.equal(user.acks.length, 0);

  layer.receive(request({ transport: 'TCP', branch: 'z9hG4bKt2' }), src);
  const noAck = user.requests[1].tx;
  noAck.respond(response(requestOf(noAck), 486));
  wheel.advance(64 * T1);
  t.same(user.timeouts, [noAck], 'Timer H applies on streams too');

  layer.receive(request({ method: 'OPTIONS', transport: 'TCP', branch: 'z9hG4bKt3' }), src);
  const opt = user.requests[2].tx;
  opt.respond(response(requestOf(opt), 200));
  t.equal(opt.state, TransactionState.Terminated, 'Timer J is zero');
  t.same(layer.stats(), { serverInvite: 0, serverNonInvite: 0, clientInvite: 0, clientNonInvite: 0, retransmissionsSent: 0, retransmissionsAbsorbed: 0 });
});

t.test('matching: branch, sent-by and method (§17.2.3)', async (t) => {
  const { user, layer } = setup();
  layer.receive(request({ branch: 'z9hG4bKsame' }), source());
  layer.receive(request({ branch: 'z9hG4bKsame', viaHost: '192.0.2.99:5062' }), source('udp', '192.0.2.99'));
  layer.receive(request({ branch: 'z9hG4bKsame', method: 'OPTIONS' }), source());
  layer.receive(request({ branch: 'z9hG4bKsame', viaHost: '192.0.2.10' }), source());
  layer.receive(request({ branch: 'z9hG4bKother' }), source());
  t.equal(user.requests.length, 5, 'another sent-by, method, port or branch is another transaction');
  layer.receive(request({ branch: 'z9hG4bKsame', viaHost: '192.0.2.10:5062', callId: 'changed-call-id' }), source());
  t.equal(user.requests.length, 5, 'with the cookie only branch, sent-by and method count');
  t.equal(layer.stats().serverInvite, 4);
  t.equal(layer.stats().serverNonInvite, 1);
});

t.test('RFC 2543 matching: no magic cookie', async (t) => {
  const { transport, user, layer } = setup();
  const src = source();
  const opts = { branch: '1a2b3c' }; // RFC 2543 branch
  layer.receive(request(opts), src);
  const tx = user.requests[0].tx;
  layer.receive(request(opts), src);
  t.equal(user.requests.length, 1, 'a retransmission by Request-URI, tags, Call-ID, CSeq, top Via');
  layer.receive(request({ ...opts, cseq: 2 }), src);
  layer.receive(request({ ...opts, fromTag: 'ft2' }), src);
  layer.receive(request({ ...opts, uri: 'sip:carol@example.com' }), src);
  layer.receive(request({ ...opts, callId: 'other' }), src);
  layer.receive(request({ ...opts, viaHost: '192.0.2.10:5064' }), src);
  t.equal(user.requests.length, 6, 'any identifying field changed: a new transaction');
  tx.respond(response(requestOf(tx), 486, { toTag: 'legacy-tag' }));
  transport.clear();
  layer.receive(request(opts), src);
  t.same(transport.lines(), ['SIP/2.0 486 Busy Here'], 'the 486 resent');

  layer.receive(request({ ...opts, method: 'ACK', cseqMethod: 'ACK', toTag: 'wrong-tag' }), src);
  t.equal(tx.state, TransactionState.Completed, 'an ACK with another To tag does not match');
  t.equal(user.acks.length, 1);
  layer.receive(request({ ...opts, method: 'ACK', cseqMethod: 'ACK', toTag: 'legacy-tag' }), src);
  t.equal(tx.state, TransactionState.Confirmed, 'the ACK with the tag of the 486 matches');
  t.equal(user.acks.length, 1);

  // Without any branch at all, inside a dialog (the INVITE has a To tag).
  layer.receive(msg(`INVITE sip:bob@192.0.2.30 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5062
Max-Forwards: 70
From: <sip:door@example.com>;tag=ft9
To: <sip:bob@example.com>;tag=dlg
Call-ID: reinvite
CSeq: 7 INVITE
Content-Length: 0

`), src);
  const re = user.requests[6].tx;
  re.respond(response(requestOf(re), 488));
  layer.receive(msg(`ACK sip:bob@192.0.2.30 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5062
Max-Forwards: 70
From: <sip:door@example.com>;tag=ft9
To: <sip:bob@example.com>;tag=dlg
Call-ID: reinvite
CSeq: 7 ACK
Content-Length: 0

`), src);
  t.equal(re.state, TransactionState.Confirmed, 're-INVITE without branch: ACK matched');
  t.equal(user.acks.length, 1);
});

t.test('CANCEL is its own transaction, matched to the INVITE it cancels (§9.2)', async (t) => {
  const { transport, user, layer } = setup();
  const src = source();
  layer.receive(request({ branch: 'z9hG4bKinv' }), src);
  const invite = user.requests[0].tx;
  invite.respond(response(requestOf(invite), 180));
  layer.receive(request({ method: 'CANCEL', branch: 'z9hG4bKinv' }), src);
  t.equal(user.requests.length, 1, 'CANCEL does not go to onRequest');
  t.equal(user.cancels.length, 1);
  const { cancelTx, inviteTx, req } = user.cancels[0];
  t.equal(inviteTx, invite);
  t.not(cancelTx, invite);
  t.equal(cancelTx.method, 'CANCEL');
  t.equal(req.method, 'CANCEL');
  t.equal(cancelTx.state, TransactionState.Trying);
  t.equal(layer.stats().serverNonInvite, 1);
  cancelTx.respond(response(req, 200));
  transport.clear();
  layer.receive(request({ method: 'CANCEL', branch: 'z9hG4bKinv' }), src);
  t.same(transport.lines(), ['SIP/2.0 200 OK'], 'a retransmitted CANCEL gets its 200 again');
  t.equal(user.cancels.length, 1);
  t.equal(invite.state, TransactionState.Proceeding, 'the INVITE transaction is the user’s to answer 487');

  layer.receive(request({ method: 'CANCEL', branch: 'z9hG4bKnothing' }), src);
  t.equal(user.cancels.length, 2);
  t.equal(user.cancels[1].inviteTx, null, 'nothing to cancel: the user answers 481');

  layer.receive(request({ branch: 'legacyinv', callId: 'legacy' }), src);
  layer.receive(request({ method: 'CANCEL', branch: 'legacyinv', callId: 'legacy' }), src);
  t.equal(user.cancels[2].inviteTx, user.requests[1].tx, 'RFC 2543 CANCEL matched by its fields');
});

t.test('an ACK that matches nothing goes to the user; responses that match nothing are strays', async (t) => {
  const { user, layer } = setup();
  const src = source();
  const ack = ackFor('z9hG4bKnone');
  layer.receive(ack, src);
  t.equal(user.acks.length, 1);
  t.equal(user.acks[0].req, ack);
  t.equal(user.acks[0].source, src);
  const res = msg(`SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnotours
Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKclient
From: <sip:door@example.com>;tag=a
To: <sip:bob@example.com>;tag=b
Call-ID: stray
CSeq: 1 INVITE
Content-Length: 0

`);
  layer.receive(res, src);
  t.equal(user.strays.length, 1);
  t.equal(user.strays[0].res, res);
  t.same(layer.stats(), { serverInvite: 0, serverNonInvite: 0, clientInvite: 0, clientNonInvite: 0, retransmissionsSent: 0, retransmissionsAbsorbed: 0 });
});

t.test('UDP responses go to the source address, at rport when asked, else at the Via port', async (t) => {
  const { transport, user, layer } = setup();
  const withRport = msg(`OPTIONS sip:example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKnat;rport=40000;received=203.0.113.9
Max-Forwards: 70
From: <sip:door@example.com>;tag=a
To: <sip:example.com>
Call-ID: nat
CSeq: 1 OPTIONS
Content-Length: 0

`);
  const natted = source('udp', '203.0.113.9', 40_000);
  layer.receive(withRport, natted);
  user.requests[0].tx.respond(response(withRport, 200));
  const noRport = msg(`OPTIONS sip:example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKplain;received=203.0.113.9
Max-Forwards: 70
From: <sip:door@example.com>;tag=a
To: <sip:example.com>
Call-ID: plain
CSeq: 1 OPTIONS
Content-Length: 0

`);
  layer.receive(noRport, source('udp', '203.0.113.9', 40_000));
  user.requests[1].tx.respond(response(noRport, 200));
  t.match(transport.sent[0].dest, { protocol: 'udp', address: '203.0.113.9', port: 40_000, local: { protocol: 'udp', address: '192.0.2.1', port: 5060 } });
  t.equal(transport.sent[0].dest, natted, 'at the source port: the source itself, no copy kept');
  t.same(transport.sent[1].dest.port, 5070);
  t.same(transport.sent[1].dest.address, '203.0.113.9');
});

t.test('respond() refuses a request', async (t) => {
  const { user, layer } = setup();
  layer.receive(request(), source());
  layer.receive(request({ method: 'OPTIONS' }), source());
  t.throws(() => user.requests[0].tx.respond(request()), /needs a response/);
  t.throws(() => user.requests[1].tx.respond(request()), /needs a response/);
});

t.test('stop() drops every transaction and its timers', async (t) => {
  const { wheel, user, layer } = setup();
  layer.receive(request(), source());
  layer.receive(request({ method: 'OPTIONS' }), source());
  user.requests[0].tx.respond(response(requestOf(user.requests[0].tx), 486));
  user.requests[1].tx.respond(response(requestOf(user.requests[1].tx), 200));
  t.ok(wheel.size > 0);
  layer.stop();
  t.equal(wheel.size, 0);
  t.equal(layer.stats().serverInvite, 0);
  t.equal(user.requests[0].tx.state, TransactionState.Terminated);
  t.same(user.terminated, [user.requests[1].tx], 'nobody is told on shutdown (the OPTIONS was told at its final)');
  t.equal(layer.stats().serverNonInvite, 0);
});

t.test('non-INVITE server: a user that never answers does not leak the transaction', async (t) => {
  const { wheel, transport, user, layer } = setup();
  layer.receive(request({ method: 'MESSAGE', branch: 'z9hG4bKmute' }), source());
  const tx = user.requests[0].tx;
  wheel.advance(64 * T1);
  t.equal(tx.state, TransactionState.Trying, 'still there when the client’s Timer F fires');
  t.ok(tx.respond(response(requestOf(tx), 100)));
  wheel.advance(64 * T1);
  t.equal(tx.state, TransactionState.Terminated, 'dropped after 128*T1 without a final');
  t.same(user.terminated, [tx]);
  t.equal(layer.stats().serverNonInvite, 0);
  t.notOk(tx.respond(response(requestOf(tx), 200)), 'too late');
  t.equal(transport.sent.length, 1);
  t.equal(wheel.size, 0);
});

t.test('a finished server transaction keeps only what it resends: no request, the final as sent', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const src = source();
  layer.receive(request({ method: 'OPTIONS', branch: 'z9hG4bKopt', cseqMethod: 'OPTIONS' }), src);
  const opt = user.requests[0].tx;
  t.equal(opt.request, user.requests[0].req, 'the request is there until the final');
  t.ok(opt.respond(response(requestOf(opt), 100)));
  t.equal(opt.request, user.requests[0].req, 'a provisional keeps it');
  const final = response(requestOf(opt), 200);
  t.ok(opt.respond(final));
  t.equal(opt.request, null, 'gone with the final');
  t.equal(opt.method, 'OPTIONS', 'the method stays');
  transport.clear();
  layer.receive(request({ method: 'OPTIONS', branch: 'z9hG4bKopt', cseqMethod: 'OPTIONS' }), src);
  t.equal(transport.sent.length, 1, 'a retransmitted request still gets the final');
  t.ok(transport.sent[0].data.equals(final.toBuffer()), 'kept for Timer J, octet for octet');

  layer.receive(request({ branch: 'z9hG4bKinv' }), src);
  const inv = user.requests[1].tx;
  // Octets beyond ASCII (UTF-8, a NUL, 0xff) in the body: what is resent must be the same octets.
  const busy = response(requestOf(inv), 486, { body: Buffer.from([0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xff, 0x00, 0x0a]), contentType: 'application/octet-stream' });
  inv.respond(busy);
  t.equal(inv.request, null, 'a non-2xx final lets go of the INVITE');
  transport.clear();
  wheel.advance(T1);
  t.equal(transport.sent.length, 1, 'Timer G still resends the 486');
  t.ok(transport.sent[0].data.equals(busy.toBuffer()), 'the same octets, body included');

  layer.receive(request({ branch: 'z9hG4bKok' }), src);
  const ok = user.requests[2].tx;
  ok.respond(response(requestOf(ok), 200));
  t.equal(ok.request, null, 'so does a 2xx');
  transport.clear();
  layer.receive(request({ branch: 'z9hG4bKok' }), src);
  t.equal(transport.sent.length, 0, 'Accepted resends nothing for a retransmitted INVITE (the 2xx is the TU\'s to resend)');
  t.equal(ok.state, TransactionState.Terminated, 'over UDP, Accepted is a record');
  t.equal(user.requests.length, 3, 'the retransmission absorbed');
});
