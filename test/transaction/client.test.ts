import t from 'tap';
import type { SipMessage } from '../../src/sip/index.js';
import type { Destination } from '../../src/transport/index.js';
import { buildCancel, newBranch, TransactionState } from '../../src/transaction/index.js';
import { parsed, RecordingOwner, request, response, setup, source } from './helpers.js';

const T1 = 500;
const T4 = 5000;

const UDP_DEST: Destination = { protocol: 'udp', address: '192.0.2.30', port: 5060 };
const TCP_DEST: Destination = { protocol: 'tcp', address: '192.0.2.30', port: 5060 };
const DOWNSTREAM = source('udp', '192.0.2.30', 5060);

/** A request as the proxy forwards it: its own Via on top of the UA's, two Routes. */
function outgoing(method = 'INVITE', branch = 'z9hG4bKproxy1', transport = 'UDP'): SipMessage {
  return request({
    method,
    branch,
    transport,
    viaHost: '192.0.2.1:5060',
    extraVia: 'SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKua;rport=5062;received=192.0.2.10',
    headers: ['Route: <sip:edge.example.com;lr>', 'Route: <sip:core.example.com;lr>'],
  });
}

function sendTimes(sent: Array<{ at: number }>, from = 0): number[] {
  return sent.map((s) => s.at - from);
}

t.test('INVITE client: Timer A doubles until Timer B times out', async (t) => {
  const { wheel, transport, layer } = setup();
  const owner = new RecordingOwner();
  const tx = layer.sendRequest(outgoing(), UDP_DEST, owner);
  t.equal(tx.state, TransactionState.Calling);
  t.ok(tx.isInvite);
  t.equal(tx.branch, 'z9hG4bKproxy1');
  t.equal(tx.owner, owner);
  t.equal(transport.sent.length, 1, 'sent at once');
  t.equal(transport.sent[0].dest, UDP_DEST);
  t.equal(layer.stats().clientInvite, 1);
  wheel.advance(64 * T1 - 10);
  t.same(sendTimes(transport.sent), [0, 500, 1500, 3500, 7500, 15_500, 31_500], 'A: T1, 2T1, 4T1 ... no cap');
  t.equal(owner.timeouts, 0);
  wheel.advance(10);
  t.same(owner.events, ['timeout', 'terminated'], 'Timer B = 64*T1');
  t.equal(tx.state, TransactionState.Terminated);
  t.equal(layer.stats().clientInvite, 0);
  t.equal(layer.stats().retransmissionsSent, 6);
  wheel.advance(100_000);
  t.equal(transport.sent.length, 7);
  t.equal(wheel.size, 0);
});

t.test('INVITE client: 180 stops retransmissions and B; 486 is ACKed by the transaction; a retransmitted 486 is ACKed again, not passed up', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const owner = new RecordingOwner();
  const invite = outgoing();
  const tx = layer.sendRequest(invite, UDP_DEST, owner);
  wheel.advance(600);
  t.equal(transport.sent.length, 2);
  layer.receive(response(invite, 180, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(tx.state, TransactionState.Proceeding);
  t.same(owner.events, ['response 180']);
  wheel.advance(60_000);
  t.equal(transport.sent.length, 2, 'no Timer A in Proceeding');
  t.equal(owner.timeouts, 0, 'no Timer B in Proceeding: Timer C is the proxy’s');
  layer.receive(response(invite, 180, { toTag: 'callee' }), DOWNSTREAM);
  t.same(owner.events, ['response 180', 'response 180'], 'provisionals keep going up');

  transport.clear();
  const busy = response(invite, 486, { toTag: 'callee' });
  layer.receive(busy, DOWNSTREAM);
  t.equal(tx.state, TransactionState.Terminated, 'over UDP the layer keeps Completed as a record, for Timer D');
  t.same(owner.events, ['response 180', 'response 180', 'response 486', 'terminated']);
  t.equal(layer.stats().clientInvite, 1, 'still counted until Timer D');
  t.equal(transport.sent.length, 1, 'the ACK');
  t.equal(transport.sent[0].dest, UDP_DEST, 'to where the INVITE went');
  const ack = parsed(transport.sent[0]);
  t.equal(ack.method, 'ACK');
  t.equal(ack.uri, invite.uri, 'Request-URI of the INVITE');
  t.same(ack.getAll('via'), ['SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy1;rport'], 'only the top Via, same branch');
  t.same(ack.getAll('route'), ['<sip:edge.example.com;lr>', '<sip:core.example.com;lr>'], 'the INVITE’s Routes');
  t.equal(ack.get('from'), invite.get('from'));
  t.equal(ack.get('to'), busy.get('to'), 'To of the response, with its tag');
  t.equal(ack.to().tag, 'callee');
  t.equal(ack.callId(), invite.callId());
  t.same(ack.cseq(), { seq: 1, method: 'ACK' });
  t.equal(ack.maxForwards(), 70);
  t.equal(ack.bodyLength, 0);

  layer.receive(response(invite, 486, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(transport.sent.length, 2, 'ACK resent');
  t.equal(transport.sent[1].text, transport.sent[0].text);
  t.equal(transport.sent[1].dest, UDP_DEST);
  t.equal(owner.responses.length, 3, 'not passed up twice');
  layer.receive(response(invite, 183, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(owner.responses.length, 3, 'late provisional absorbed');
  t.equal(user.strays.length, 0);
  const s = layer.stats();
  t.equal(s.retransmissionsAbsorbed, 2);
  t.equal(s.retransmissionsSent, 2, 'one Timer A, one ACK');
  const late = response(invite, 200, { toTag: 'fork-2' });
  layer.receive(late, DOWNSTREAM);
  t.equal(user.strays.length, 1, 'a 2xx after the 486 (a misbehaving fork) goes on, as a 2xx without a transaction');
  t.equal(user.strays[0].res, late);
  t.equal(user.strays[0].upstream, undefined);

  wheel.advance(32_000 - 10);
  layer.receive(response(invite, 486, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(transport.sent.length, 3, 'ACK resent until Timer D');
  t.equal(layer.stats().clientInvite, 1);
  wheel.advance(10);
  t.equal(layer.stats().clientInvite, 0, 'Timer D: 32 s on UDP');
  layer.receive(response(invite, 486, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(transport.sent.length, 3, 'no ACK after Timer D');
  t.equal(user.strays.length, 2, 'a stray then');
  t.same(owner.events.slice(-1), ['terminated']);
  t.equal(owner.responses.length, 3);
});

t.test('INVITE client: 200 → Accepted; each retransmitted 200 passed up again (RFC 6026); Timer M ends it', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const owner = new RecordingOwner();
  const invite = outgoing();
  const tx = layer.sendRequest(invite, UDP_DEST, owner);
  const ok = response(invite, 200, { toTag: 'callee' });
  layer.receive(ok, DOWNSTREAM);
  t.equal(tx.state, TransactionState.Accepted);
  t.equal(transport.sent.length, 1, 'no ACK for a 2xx: that is end to end');
  layer.receive(response(invite, 200, { toTag: 'callee' }), DOWNSTREAM);
  layer.receive(response(invite, 200, { toTag: 'fork-2' }), DOWNSTREAM);
  t.same(owner.events, ['response 200', 'response 200', 'response 200'], 'every 2xx goes up');
  layer.receive(response(invite, 180, { toTag: 'callee' }), DOWNSTREAM);
  layer.receive(response(invite, 486, { toTag: 'fork-3' }), DOWNSTREAM);
  t.equal(owner.responses.length, 3, 'non-2xx after a 2xx absorbed');
  wheel.advance(10_000);
  t.equal(transport.sent.length, 1, 'no retransmission after a response');
  wheel.advance(64 * T1 - 10_000);
  t.equal(tx.state, TransactionState.Terminated, 'Timer M = 64*T1');
  t.equal(owner.timeouts, 0);
  t.equal(layer.stats().clientInvite, 0);
  layer.receive(response(invite, 200, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(user.strays.length, 1, 'after M a 2xx is a stray, forwarded statelessly by the proxy');
});

t.test('INVITE client: 2xx straight from Calling after retransmissions', async (t) => {
  const { wheel, transport, layer } = setup();
  const owner = new RecordingOwner();
  const invite = outgoing();
  layer.sendRequest(invite, UDP_DEST, owner);
  wheel.advance(1600);
  t.equal(transport.sent.length, 3);
  layer.receive(response(invite, 200), DOWNSTREAM);
  wheel.advance(31_000);
  t.equal(transport.sent.length, 3, 'A stopped');
  t.equal(owner.timeouts, 0, 'B stopped');
});

t.test('non-INVITE client: Timer E doubles up to T2, Timer F times out', async (t) => {
  const { wheel, transport, layer } = setup();
  const owner = new RecordingOwner();
  const tx = layer.sendRequest(outgoing('OPTIONS'), UDP_DEST, owner);
  t.equal(tx.state, TransactionState.Trying);
  t.notOk(tx.isInvite);
  t.equal(layer.stats().clientNonInvite, 1);
  wheel.advance(64 * T1);
  t.same(
    sendTimes(transport.sent),
    [0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500],
    'E: T1, 2T1, 4T1, then T2 each time',
  );
  t.same(owner.events, ['timeout', 'terminated'], 'Timer F = 64*T1');
  t.equal(tx.state, TransactionState.Terminated);
  t.equal(layer.stats().clientNonInvite, 0);
});

t.test('non-INVITE client: Proceeding retransmits every T2; the final goes up once; Timer K absorbs the rest', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const owner = new RecordingOwner();
  const req = outgoing('REGISTER');
  const tx = layer.sendRequest(req, UDP_DEST, owner);
  wheel.advance(600); // one retransmission at 500; the next is due at 1500
  layer.receive(response(req, 100), DOWNSTREAM);
  t.equal(tx.state, TransactionState.Proceeding);
  wheel.advance(10_000 - 600);
  t.same(sendTimes(transport.sent), [0, 500, 1500, 5500, 9500], 'then every T2');
  layer.receive(response(req, 200), DOWNSTREAM);
  // Over UDP, Completed is kept by the layer as a record (finished.ts): the object ends with the final, as on a stream.
  t.equal(tx.state, TransactionState.Terminated);
  t.same(owner.events, ['response 100', 'response 200', 'terminated'], 'the owner is told at once');
  t.equal(layer.stats().clientNonInvite, 1, 'still a live transaction until Timer K');
  const absorbed = layer.stats().retransmissionsAbsorbed;
  layer.receive(response(req, 200), DOWNSTREAM);
  layer.receive(response(req, 100), DOWNSTREAM);
  t.same(owner.events, ['response 100', 'response 200', 'terminated'], 'retransmitted final absorbed');
  t.equal(layer.stats().retransmissionsAbsorbed, absorbed + 2);
  t.equal(user.strays.length, 0, 'not strays');
  wheel.advance(T4 - 10);
  layer.receive(response(req, 200), DOWNSTREAM);
  t.equal(user.strays.length, 0, 'Completed until Timer K');
  t.equal(transport.sent.length, 5, 'no retransmission once Completed');
  wheel.advance(10);
  t.equal(layer.stats().clientNonInvite, 0, 'Timer K = T4');
  t.equal(wheel.size, 0);
  layer.receive(response(req, 200), DOWNSTREAM);
  t.equal(user.strays.length, 1, 'after Timer K a response is a stray');
  t.equal(owner.timeouts, 0);
});

t.test('reliable transport: no retransmissions; B and F still apply; D and K are zero', async (t) => {
  const { wheel, transport, layer } = setup();
  const inviteOwner = new RecordingOwner();
  const optionsOwner = new RecordingOwner();
  layer.sendRequest(outgoing('INVITE', 'z9hG4bKtcp1', 'TCP'), TCP_DEST, inviteOwner);
  layer.sendRequest(outgoing('OPTIONS', 'z9hG4bKtcp2', 'TCP'), TCP_DEST, optionsOwner);
  wheel.advance(64 * T1);
  t.equal(transport.sent.length, 2, 'each request sent once only');
  t.same(inviteOwner.events, ['timeout', 'terminated'], 'Timer B');
  t.same(optionsOwner.events, ['timeout', 'terminated'], 'Timer F');

  transport.clear();
  const invite = outgoing('INVITE', 'z9hG4bKtcp3', 'TCP');
  const tx = layer.sendRequest(invite, TCP_DEST, inviteOwner);
  t.ok(tx.reliable);
  layer.receive(response(invite, 603), source('tcp', '192.0.2.30', 5060, 3));
  t.same(transport.lines(), ['INVITE sip:bob@example.com SIP/2.0', 'ACK sip:bob@example.com SIP/2.0'], 'ACK still sent');
  t.equal(tx.state, TransactionState.Terminated, 'Timer D is zero');
  const reg = outgoing('REGISTER', 'z9hG4bKtcp4', 'TCP');
  const regTx = layer.sendRequest(reg, TCP_DEST, optionsOwner);
  layer.receive(response(reg, 200), source('tcp', '192.0.2.30', 5060, 3));
  t.equal(regTx.state, TransactionState.Terminated, 'Timer K is zero');
  t.same(optionsOwner.events.slice(-2), ['response 200', 'terminated']);
  t.same(layer.stats(), { serverInvite: 0, serverNonInvite: 0, clientInvite: 0, clientNonInvite: 0, retransmissionsSent: 0, retransmissionsAbsorbed: 0 });
  t.equal(wheel.size, 0);
});

t.test('responses match by top Via branch and CSeq method: CANCEL and INVITE share a branch (§17.1.3)', async (t) => {
  const { transport, layer } = setup();
  const inviteOwner = new RecordingOwner();
  const cancelOwner = new RecordingOwner();
  const invite = outgoing();
  const inviteTx = layer.sendRequest(invite, UDP_DEST, inviteOwner);
  layer.receive(response(invite, 180, { toTag: 'callee' }), DOWNSTREAM);
  const cancel = buildCancel(invite);
  const cancelTx = layer.sendRequest(cancel, UDP_DEST, cancelOwner);
  t.equal(cancelTx.branch, inviteTx.branch);
  t.same(layer.stats().clientNonInvite, 1);
  t.equal(transport.sent[1].text, cancel.toString());
  layer.receive(response(cancel, 200, { toTag: 'callee' }), DOWNSTREAM);
  layer.receive(response(invite, 487, { toTag: 'callee' }), DOWNSTREAM);
  t.same(cancelOwner.events, ['response 200', 'terminated']);
  t.same(inviteOwner.events, ['response 180', 'response 487', 'terminated']);
  t.equal(inviteTx.state, TransactionState.Terminated, 'its Completed state a record of the layer');
  t.equal(transport.sent.length, 3, 'the ACK for the 487');
  layer.receive(response(cancel, 200, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(transport.sent.length, 3, 'a retransmitted 200 to the CANCEL does not match the INVITE record');
  layer.receive(response(invite, 487, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(transport.sent.length, 4, 'a retransmitted 487 to the INVITE does: its ACK again');
});

t.test('transport errors end the transactions waiting on that endpoint', async (t) => {
  const { wheel, layer } = setup();
  const a = new RecordingOwner();
  const b = new RecordingOwner();
  const c = new RecordingOwner();
  const txA = layer.sendRequest(outgoing('INVITE', newBranch(), 'TCP'), TCP_DEST, a);
  const txB = layer.sendRequest(outgoing('OPTIONS', newBranch(), 'TCP'), { ...TCP_DEST }, b);
  const txC = layer.sendRequest(outgoing('OPTIONS', newBranch()), UDP_DEST, c);
  const err = new Error('connect ECONNREFUSED');
  layer.transportError({ protocol: 'tcp', address: '192.0.2.30', port: 5060 }, err);
  t.same(a.events, ['error', 'terminated']);
  t.same(b.events, ['error', 'terminated']);
  t.equal(a.errors[0], err);
  t.equal(txA.state, TransactionState.Terminated);
  t.equal(txB.state, TransactionState.Terminated);
  t.equal(txC.state, TransactionState.Trying, 'another endpoint is unaffected');
  t.equal(layer.stats().clientNonInvite, 1);
  layer.receive(response(txC.request!, 200), DOWNSTREAM);
  layer.transportError(UDP_DEST, err);
  t.same(c.events, ['response 200', 'terminated'], 'ignored once a final came');
  wheel.advance(64 * T1);
  t.equal(a.timeouts + b.timeouts, 0, 'no Timer B/F after the error');
});

t.test('a transport that fails synchronously inside sendRequest()', async (t) => {
  const { wheel, transport, layer } = setup();
  const owner = new RecordingOwner();
  transport.send = (_data, dest) => layer.transportError(dest, new Error('no UDP socket for IPv6'));
  const tx = layer.sendRequest(outgoing('OPTIONS'), { protocol: 'udp', address: '2001:db8::1', port: 5060 }, owner);
  t.same(owner.events, ['error', 'terminated']);
  t.equal(tx.state, TransactionState.Terminated);
  t.equal(layer.stats().clientNonInvite, 0);
  t.equal(wheel.size, 0, 'its timers are gone');
});

t.test('sendRequest() refuses ACK, branches without the cookie, and duplicates', async (t) => {
  const { layer } = setup();
  const owner = new RecordingOwner();
  t.throws(() => layer.sendRequest(outgoing('ACK'), UDP_DEST, owner), /ACK/);
  t.throws(() => layer.sendRequest(outgoing('INVITE', '1234'), UDP_DEST, owner), /z9hG4bK/);
  t.throws(() => layer.sendRequest(response(outgoing(), 200), UDP_DEST, owner), /needs a request/);
  layer.sendRequest(outgoing('INVITE', 'z9hG4bKdup'), UDP_DEST, owner);
  t.throws(() => layer.sendRequest(outgoing('INVITE', 'z9hG4bKdup'), UDP_DEST, owner), /exists/);
  t.equal(layer.stats().clientInvite, 1);
  layer.stop();
  t.equal(layer.stats().clientInvite, 0);
});

t.test('terminate(): the user ends an INVITE stuck in Proceeding (Timer C, §16.8)', async (t) => {
  const { wheel, user, layer } = setup();
  const owner = new RecordingOwner();
  const invite = outgoing();
  const tx = layer.sendRequest(invite, UDP_DEST, owner);
  layer.receive(response(invite, 180, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(wheel.size, 0, 'Proceeding: no timer of the transaction’s own');
  tx.terminate();
  tx.terminate();
  t.same(owner.events, ['response 180', 'terminated']);
  t.equal(layer.stats().clientInvite, 0);
  layer.receive(response(invite, 487, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(user.strays.length, 1, 'a late final is a stray');
});

t.test('a client transaction lets go of its request at the final; handOver() moves what it still passes up', async (t) => {
  const { wheel, transport, layer } = setup();
  const first = new RecordingOwner();
  const invite = outgoing('INVITE', newBranch());
  const tx = layer.sendRequest(invite, UDP_DEST, first);
  layer.receive(response(invite, 180, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(tx.request, invite, 'kept while it may still be cancelled');
  wheel.advance(4 * T1);
  t.equal(transport.sent.length, 1, 'no retransmission after the provisional');
  layer.receive(response(invite, 200, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(tx.request, null, 'gone with the final');
  t.equal(tx.method, 'INVITE');
  const late = new RecordingOwner();
  tx.handOver(late);
  t.equal(tx.owner, late);
  layer.receive(response(invite, 200, { toTag: 'callee' }), DOWNSTREAM);
  layer.receive(response(invite, 200, { toTag: 'other-fork' }), DOWNSTREAM);
  t.same(first.events, ['response 180', 'response 200'], 'the first owner heard nothing more');
  t.same(late.events, ['response 200', 'response 200'], 'the new one gets each 2xx (RFC 6026)');
  wheel.advance(64 * T1);
  t.equal(tx.state, TransactionState.Terminated);
  t.same(late.events.at(-1), 'terminated', 'and the end of Timer M');

  const owner = new RecordingOwner();
  const second = outgoing('INVITE', newBranch());
  const tx2 = layer.sendRequest(second, UDP_DEST, owner);
  transport.clear();
  layer.receive(response(second, 487, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(tx2.request, null, 'a non-2xx final too, once the ACK is built');
  t.match(transport.sent[0].text, /^ACK /);
  layer.receive(response(second, 487, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(transport.sent.length, 2, 'a retransmitted 487 gets the ACK again');
  t.ok(transport.sent[1].data.equals(transport.sent[0].data), 'the ACK kept for Timer D, octet for octet');

  const options = outgoing('OPTIONS', newBranch());
  const tx3 = layer.sendRequest(options, UDP_DEST, owner);
  layer.receive(response(options, 200), DOWNSTREAM);
  t.equal(tx3.request, null, 'non-INVITE: gone at the final as well');
});

t.test('release(): an accepted INVITE becomes a record; each 2xx goes on to the upstream named; the rest is absorbed until Timer M', async (t) => {
  const { wheel, transport, user, layer } = setup();
  const owner = new RecordingOwner();
  const upstream: Destination = { protocol: 'udp', address: '192.0.2.99', port: 5070 };
  const invite = outgoing('INVITE', newBranch());
  const tx = layer.sendRequest(invite, UDP_DEST, owner);
  layer.receive(response(invite, 180, { toTag: 'callee' }), DOWNSTREAM);
  t.notOk(tx.release(upstream), 'not before a 2xx');
  t.equal(tx.state, TransactionState.Proceeding);
  layer.receive(response(invite, 200, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(tx.state, TransactionState.Accepted);
  t.ok(tx.release(upstream));
  t.equal(tx.state, TransactionState.Terminated);
  t.same(owner.events, ['response 180', 'response 200', 'terminated'], 'the owner hears the end at once');
  t.equal(layer.stats().clientInvite, 1, 'still counted until Timer M');
  t.notOk(tx.release(upstream), 'once');

  const again = response(invite, 200, { toTag: 'callee' });
  layer.receive(again, DOWNSTREAM);
  const other = response(invite, 200, { toTag: 'other-fork' });
  layer.receive(other, DOWNSTREAM);
  t.equal(user.strays.length, 2, 'each 2xx goes to the user');
  t.equal(user.strays[0].res, again);
  t.equal(user.strays[0].upstream, upstream, 'with where the owner said it goes');
  t.equal(user.strays[1].res, other);
  t.equal(user.strays[1].upstream, upstream);
  layer.receive(response(invite, 183, { toTag: 'callee' }), DOWNSTREAM);
  layer.receive(response(invite, 486, { toTag: 'fork-3' }), DOWNSTREAM);
  t.equal(user.strays.length, 2, 'non-2xx absorbed');
  t.equal(layer.stats().retransmissionsAbsorbed, 2);
  t.equal(owner.responses.length, 2, 'the owner hears nothing more');
  t.equal(transport.sent.length, 1, 'nothing sent: no ACK for a 2xx');

  wheel.advance(64 * T1 - 1);
  t.equal(layer.stats().clientInvite, 1);
  wheel.advance(1);
  t.equal(layer.stats().clientInvite, 0, 'Timer M = 64*T1');
  layer.receive(response(invite, 200, { toTag: 'callee' }), DOWNSTREAM);
  t.equal(user.strays.length, 3);
  t.equal(user.strays[2].upstream, undefined, 'after M, a stray');

  // Over TCP too: Timer M applies to every transport (RFC 6026).
  const overTcp = outgoing('INVITE', newBranch(), 'TCP');
  const tcpTx = layer.sendRequest(overTcp, TCP_DEST, owner);
  layer.receive(response(overTcp, 200, { toTag: 'callee' }), source('tcp', '192.0.2.30', 5060, 3));
  t.ok(tcpTx.release(upstream));
  layer.receive(response(overTcp, 200, { toTag: 'callee' }), source('tcp', '192.0.2.30', 5060, 3));
  t.equal(user.strays.at(-1)!.upstream, upstream);
  wheel.advance(64 * T1);
  t.same(layer.stats().clientInvite, 0);
  t.equal(wheel.size, 0, 'no timer left');

  const opt = outgoing('OPTIONS', newBranch());
  const optTx = layer.sendRequest(opt, UDP_DEST, owner);
  t.notOk(optTx.release(upstream), 'a non-INVITE is never accepted');
});
