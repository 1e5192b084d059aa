import t from 'tap';
import { buildAck, buildCancel, newBranch, responseDestination, isReliable } from '../../src/transaction/index.js';
import { msg, response, source } from './helpers.js';

const INVITE = msg(`INVITE sip:bob@192.0.2.30:5070;transport=udp SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1;rport, SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKua
Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKfirst
Max-Forwards: 69
Route: <sip:edge.example.com;lr>, <sip:core.example.com;lr>
Record-Route: <sip:192.0.2.1;lr>
From: "Door" <sip:door@example.com>;tag=ft1
To: <sip:bob@example.com>
Call-ID: cid-77@192.0.2.10
CSeq: 4711 INVITE
Contact: <sip:door@192.0.2.10:5062>
Content-Type: application/sdp
Content-Length: 4

v=0
`);

t.test('buildCancel (§9.1)', async (t) => {
  const c = buildCancel(INVITE);
  t.equal(c.method, 'CANCEL');
  t.equal(c.uri, INVITE.uri, 'same Request-URI');
  t.same(c.getAll('via'), ['SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1;rport'], 'only the top Via value');
  t.equal(c.topVia()!.branch, 'z9hG4bKp1');
  t.same(c.values('route'), ['<sip:edge.example.com;lr>', '<sip:core.example.com;lr>'], 'the Route values');
  t.equal(c.get('from'), INVITE.get('from'));
  t.equal(c.get('to'), INVITE.get('to'));
  t.equal(c.callId(), 'cid-77@192.0.2.10');
  t.same(c.cseq(), { seq: 4711, method: 'CANCEL' });
  t.equal(c.maxForwards(), 69);
  t.equal(c.bodyLength, 0, 'no body');
  t.notOk(c.has('contact'));
  t.notOk(c.has('record-route'));
  t.throws(() => buildCancel(response(INVITE, 200)), /not a request/);
});

t.test('buildAck for a non-2xx (§17.1.1.3)', async (t) => {
  const busy = response(INVITE, 486, { toTag: 'callee-9' });
  const a = buildAck(INVITE, busy);
  t.equal(a.method, 'ACK');
  t.equal(a.uri, INVITE.uri);
  t.same(a.getAll('via'), ['SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1;rport']);
  t.same(a.values('route'), ['<sip:edge.example.com;lr>', '<sip:core.example.com;lr>']);
  t.equal(a.to().tag, 'callee-9', 'To from the response, with its tag');
  t.equal(a.from().tag, 'ft1');
  t.same(a.cseq(), { seq: 4711, method: 'ACK' });
  t.equal(a.bodyLength, 0);
});

t.test('newBranch: the magic cookie and enough randomness', async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const b = newBranch();
    if (!/^z9hG4bK[0-9a-f]{16}$/.test(b)) t.fail('bad branch ' + b);
    seen.add(b);
  }
  t.equal(seen.size, 1000);
});

t.test('responseDestination and isReliable', async (t) => {
  t.same(responseDestination(INVITE, source('tls', '192.0.2.5', 40_001, 12)), { protocol: 'tls', address: '192.0.2.5', port: 40_001, connectionId: 12 });
  t.equal(responseDestination(INVITE, source('udp', '192.0.2.5', 40_001)).port, 5060, 'rport without a value: the sent-by port');
  t.ok(isReliable('tcp') && isReliable('tls') && isReliable('ws') && isReliable('wss'));
  t.notOk(isReliable('udp'));
});
