// Overload control (src/transaction/overload.ts): the level's dynamics from
// window utilizations, the fractions refused by class, what is never refused,
// the stateless 503 itself and the layer's gate in front of new transactions
// (the real signal, the UDP queue probe, is tested in test/overload.test.ts).
import t from 'tap';
import { OverloadControl, statelessTag, TransactionLayer, TimerWheel } from '../../src/transaction/index.js';
import { CONFIRM_WINDOWS, FALL, HIGH_DELAY_T1, IDLE, LOW_DELAY_T1, MIN_MESSAGES, NUDGE, RISE } from '../../src/transaction/overload.js';

// With the default T1 of 500 ms.
const HIGH_DELAY_MS = HIGH_DELAY_T1 * 500;
const LOW_DELAY_MS = LOW_DELAY_T1 * 500;
import { FakeTransport, RecordingUser, parsed, request, source } from './helpers.js';

function control(extra: Partial<ConstructorParameters<typeof OverloadControl>[0]> = {}): OverloadControl {
  return new OverloadControl({ retryAfter: 2, manual: true, ...extra });
}

/** Raises the level to `level` (a multiple of RISE) with saturated windows. */
function raise(o: OverloadControl, level: number): void {
  let n = 0;
  while (o.level < level - 1e-9 && n++ < 100) o.sample(HIGH_DELAY_MS);
}

t.test('the level: two windows with a long queue before it rises, faster the longer; a standing queue nudges it; a short one lets it fall by FALL to exactly 0', async (t) => {
  const changes: boolean[] = [];
  const o = control({ onChange: (on) => changes.push(on) });
  t.equal(CONFIRM_WINDOWS, 2);
  t.equal(HIGH_DELAY_MS, 150, 'the level rises from 0.3 x T1');
  t.equal(LOW_DELAY_MS, 50, 'and falls below 0.1 x T1');
  o.sample(2 * HIGH_DELAY_MS - 1);
  t.equal(o.level, 0, 'one window with a long queue (a burst, a collection) changes nothing');
  o.sample(LOW_DELAY_MS);
  o.sample(2 * HIGH_DELAY_MS - 1);
  t.equal(o.level, 0, 'windows with a long queue that are not consecutive do not add up');
  o.sample(HIGH_DELAY_MS);
  t.equal(o.level, RISE, 'the second in a row raises it, by RISE at the high delay');
  t.same(changes, [true], 'entering overload is reported once');
  o.sample(2 * HIGH_DELAY_MS);
  t.equal(o.level, 3 * RISE, 'twice the delay, twice the rise');
  o.sample(10 * HIGH_DELAY_MS);
  t.equal(o.level, 1, 'at most three times, and it stops at 1');

  const p = control();
  p.sample(10 * HIGH_DELAY_MS);
  t.equal(p.level, 0, 'however long, one window alone changes nothing (a burst that the next window may show for what it is)');

  const q = control();
  raise(q, 0.4);
  q.sample(HIGH_DELAY_MS - 1);
  t.equal(q.level, 0.4, 'below the high delay, a queue shorter than the last window holds it');
  q.sample(HIGH_DELAY_MS - 1);
  t.equal(q.level, 0.4 + NUDGE, 'a standing queue that does not shrink nudges it up, by NUDGE');
  q.sample(LOW_DELAY_MS + 1);
  t.equal(q.level, 0.45, 'a queue shrinking towards the low delay holds it');

  let windows = 0;
  while (o.level > 0 && windows < 1000) {
    o.sample(5, MIN_MESSAGES, 0.8);
    windows++;
  }
  t.equal(o.level, 0, 'it comes back to exactly 0');
  t.equal(windows, Math.round(1 / FALL), 'by FALL per window with a short queue');
  t.same(changes, [true, false], 'and leaving is reported once');
  t.equal(o.delay, 5, 'the last window is kept for the log and metrics');
  t.equal(o.utilization, 0.8);
  for (let i = 0; i < 10; i++) o.sample(1000);
  windows = 0;
  while (o.level > 0 && windows < 1000) {
    o.sample(0, MIN_MESSAGES, IDLE - 0.01);
    windows++;
  }
  t.equal(windows, Math.round(1 / (4 * FALL)), 'four times faster when the loop was also idle most of the window');
});

t.test('a busy loop with a short queue is not overload: a client that keeps many requests in flight is served as fast as can be', async (t) => {
  const o = control();
  for (let i = 0; i < 50; i++) o.sample(HIGH_DELAY_MS - 1, 1000, 1);
  t.equal(o.level, 0, `no idle time, 1,000 messages a window, a ${HIGH_DELAY_MS - 1} ms queue: nothing refused`);
  const slow = control({ t1: 2000 });
  for (let i = 0; i < 5; i++) slow.sample(500);
  t.equal(slow.level, 0, 'with T1 = 2 s (a high-latency link), 500 ms of queue is still short');
  for (let i = 0; i < 5; i++) slow.sample(700);
  t.ok(slow.level > 0, 'and 700 ms is not');
  const lan = control({ t1: 100 });
  for (let i = 0; i < 5; i++) lan.sample(60);
  t.equal(lan.level, 0, 'with T1 = 100 ms, a 60 ms queue is still short: the high delay is never below 100 ms');
  for (let i = 0; i < 5; i++) lan.sample(100);
  t.ok(lan.level > 0, 'and 100 ms is not');
});

t.test('a long queue with fewer than MIN_MESSAGES per window is not overload: refusing SIP would relieve nothing', async (t) => {
  const o = control();
  t.equal(MIN_MESSAGES, 20, '200 messages/s');
  for (let i = 0; i < 10; i++) o.sample(1000, MIN_MESSAGES - 1);
  t.equal(o.level, 0, 'ten windows with a 1 s queue and 19 messages each: nothing');
  o.sample(HIGH_DELAY_MS, MIN_MESSAGES);
  o.sample(HIGH_DELAY_MS, 1000);
  t.equal(o.level, RISE, 'with the messages, it rises');
  o.sample(1000, 0, 0.6);
  t.equal(o.level, 0.15, 'a long queue without SIP lowers it, by FALL: refusing SIP cannot shorten it');

  const f = control();
  for (let i = 0; i < 10; i++) f.sample(1000, 400, 1, 1000);
  t.equal(f.level, 0, 'a long queue filled mostly by what the per-source limits drop (400 of 1,000 passed): the rate limit\'s job, nothing refused');
  for (let i = 0; i < 2; i++) f.sample(HIGH_DELAY_MS, 500, 1, 1000);
  t.equal(f.level, RISE, 'half of it passing the limits: refusing can help');
});

t.test('fractions refused: other requests at min(1, 2L), INVITEs at max(0, 2L - 1), exactly; nothing at level 0', async (t) => {
  const count = (o: OverloadControl, method: string, n: number): number => {
    let refused = 0;
    for (let i = 0; i < n; i++) if (o.refuses(request({ method, branch: `z9hG4bK${method}${i}`, callId: `c${i}` }))) refused++;
    return refused;
  };
  const o = control();
  t.equal(count(o, 'REGISTER', 100) + count(o, 'INVITE', 100), 0, 'level 0: every request is taken');
  raise(o, 0.2);
  t.equal(o.level, 0.2);
  t.equal(count(o, 'REGISTER', 100), 40, 'L = 0.2: 40% of REGISTERs');
  t.equal(count(o, 'OPTIONS', 100), 40, 'and of any other method');
  t.equal(count(o, 'INVITE', 100), 0, 'and no INVITE: calls come first');
  raise(o, 0.6);
  t.equal(count(o, 'INVITE', 100), 20, 'L = 0.6: 20% of INVITEs');
  t.equal(count(o, 'REGISTER', 100), 100, 'every other new request');
  raise(o, 1);
  t.equal(count(o, 'INVITE', 50), 50, 'L = 1: every new INVITE');
  t.same(o.refused, { INVITE: 70, REGISTER: 140, other: 40 }, 'counted by class');
});

t.test('never refused: requests inside a dialog (To tag), whatever the level', async (t) => {
  const o = control();
  raise(o, 1);
  for (const method of ['BYE', 'INFO', 'INVITE', 'UPDATE', 'REGISTER']) {
    t.notOk(o.refuses(request({ method, toTag: 'dlg1' })), `${method} with a To tag goes on`);
  }
  t.same(o.refused, { INVITE: 0, REGISTER: 0, other: 0 });
});

t.test('the 503: Retry-After between retryAfter and twice it, the To tag the same for a retransmission and different for another request', async (t) => {
  const draws = [0, 0.999, 0.5];
  let calls = 0;
  const o = new OverloadControl({ retryAfter: 5, manual: true, random: () => draws[calls++ % draws.length], onRefused: (m) => t.equal(m, 'REGISTER') });
  const req = request({ method: 'REGISTER' });
  const got = draws.map(() => parsed({ text: o.refusal(req).toString('latin1'), data: Buffer.alloc(0), dest: source(), at: 0 }));
  t.same(
    got.map((m) => m.get('retry-after')),
    ['5', '10', '8'],
    'uniform over 5..10 whole seconds',
  );
  const r = got[0];
  t.equal(r.status, 503);
  t.equal(r.reason, 'Service Unavailable');
  t.equal(r.callId(), req.callId());
  t.equal(r.cseq().method, 'REGISTER');
  t.equal(r.topVia()?.branch, req.topVia()?.branch, 'the Via copied: the client matches it to its transaction');
  t.equal(r.to().tag, statelessTag(req), 'To tag: the stateless one');
  t.equal(got[1].to().tag, r.to().tag, 'the same for the same request (§8.2.7)');
  t.match(r.to().tag, /^ol[0-9a-f]{16}$/);
  t.not(statelessTag(request({ method: 'REGISTER', branch: 'z9hG4bKother' })), r.to().tag, 'another branch, another tag');
  t.not(statelessTag(request({ method: 'REGISTER', callId: 'other@x' })), r.to().tag, 'another Call-ID, another tag');
  t.throws(() => new OverloadControl({ retryAfter: 0, manual: true }), /retryAfter/);
  t.throws(() => o.setRetryAfter(1.5), /retryAfter/);
});

t.test('the layer: a refused request gets the 503 and no transaction; retransmissions, ACK, CANCEL and dialogs go on', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const transport = new FakeTransport();
  const user = new RecordingUser();
  const overload = control();
  const layer = new TransactionLayer({ transport, user, wheel, overload });
  const src = source();

  // An INVITE taken before the overload: its retransmission is absorbed, not refused.
  layer.receive(request({ branch: 'z9hG4bKearly' }), src);
  t.equal(user.requests.length, 1);
  raise(overload, 1);
  layer.receive(request({ branch: 'z9hG4bKearly' }), src);
  t.equal(user.requests.length, 1, 'the retransmission matched its transaction');
  t.equal(transport.sent.length, 0, 'and nothing was refused');

  layer.receive(request({ branch: 'z9hG4bKnew', callId: 'new@x' }), src);
  t.equal(user.requests.length, 1, 'a new INVITE never reaches the proxy');
  t.equal(layer.stats().serverInvite, 1, 'nor becomes a transaction');
  t.equal(transport.sent.length, 1);
  const refusal = parsed(transport.sent[0]);
  t.equal(refusal.status, 503);
  t.same(transport.sent[0].dest, src, 'sent where a response goes (§18.2.2, rport)');

  layer.receive(request({ method: 'CANCEL', branch: 'z9hG4bKearly', cseqMethod: 'CANCEL' }), src);
  t.equal(user.cancels.length, 1, 'CANCEL of the call under way goes on');
  t.equal(user.cancels[0].inviteTx, user.requests[0].tx);

  layer.receive(request({ method: 'ACK', branch: 'z9hG4bKnew', callId: 'new@x', toTag: refusal.to().tag ?? '', cseqMethod: 'ACK' }), src);
  t.equal(user.acks.length, 1, 'the ACK of the 503 is no transaction: passed up as any stray ACK (the proxy drops it)');

  layer.receive(request({ method: 'BYE', branch: 'z9hG4bKbye', toTag: 'dlg', cseq: 2 }), src);
  t.equal(user.requests.length, 2, 'a BYE inside a dialog goes on');
  t.equal(transport.sent.length, 1, 'no refusal for it');

  overload.stop();
  layer.receive(request({ method: 'REGISTER', branch: 'z9hG4bKreg' }), src);
  t.equal(user.requests.length, 3, 'once the level is 0 again, new requests are taken');
  layer.stop();
});
