// Overload control (src/transaction/overload.ts): the level's dynamics from
// window utilizations, the fractions refused by class, what is never refused,
// the stateless 503 itself, the layer's gate in front of new transactions, and
// the real event-loop sampler against a loop kept busy.
import t from 'tap';
import { OverloadControl, statelessTag, TransactionLayer, TimerWheel } from '../../src/transaction/index.js';
import { CONFIRM_WINDOWS, FALL, MIN_MESSAGES, RELAXED, RISE, SATURATED } from '../../src/transaction/overload.js';
import { FakeTransport, RecordingUser, parsed, request, source } from './helpers.js';

function control(extra: Partial<ConstructorParameters<typeof OverloadControl>[0]> = {}): OverloadControl {
  return new OverloadControl({ retryAfter: 2, manual: true, ...extra });
}

/** Raises the level to `level` (a multiple of RISE) with saturated windows. */
function raise(o: OverloadControl, level: number): void {
  let n = 0;
  while (o.level < level - 1e-9 && n++ < 100) o.sample(1);
}

t.test('the level: two saturated windows before it rises, RISE per window, holds between RELAXED and SATURATED, falls by FALL to exactly 0', async (t) => {
  const changes: boolean[] = [];
  const o = control({ onChange: (on) => changes.push(on) });
  t.equal(CONFIRM_WINDOWS, 2);
  o.sample(1);
  t.equal(o.level, 0, 'one saturated window (a burst, a collection) changes nothing');
  o.sample(0.5);
  o.sample(1);
  t.equal(o.level, 0, 'saturated windows that are not consecutive do not add up');
  o.sample(SATURATED);
  t.equal(o.level, RISE, 'the second saturated window in a row raises it');
  t.same(changes, [true], 'entering overload is reported once');
  o.sample(0.99);
  t.equal(o.level, 2 * RISE);
  o.sample((RELAXED + SATURATED) / 2);
  o.sample(RELAXED);
  t.equal(o.level, 2 * RISE, 'between RELAXED and SATURATED it holds');
  for (let i = 0; i < 10; i++) o.sample(1);
  t.equal(o.level, 1, 'it stops at 1');
  let windows = 0;
  while (o.level > 0 && windows < 1000) {
    o.sample(0.6);
    windows++;
  }
  t.equal(o.level, 0, 'it comes back to exactly 0');
  t.equal(windows, Math.round(1 / FALL), 'by FALL per relaxed window');
  t.same(changes, [true, false], 'and leaving is reported once');
  t.equal(o.utilization, 0.6, 'the last window is kept for the log and metrics');
  for (let i = 0; i < 10; i++) o.sample(1);
  windows = 0;
  while (o.level > 0 && windows < 1000) {
    o.sample(RELAXED / 2 - 0.01);
    windows++;
  }
  t.equal(windows, Math.round(1 / (4 * FALL)), 'four times faster when the loop was idle most of the window');
});

t.test('a loop full of something else than SIP (fewer than MIN_MESSAGES per window) is not overload: refusing SIP would relieve nothing', async (t) => {
  const o = control();
  t.equal(MIN_MESSAGES, 20, '200 messages/s');
  for (let i = 0; i < 10; i++) o.sample(1, MIN_MESSAGES - 1);
  t.equal(o.level, 0, 'ten saturated windows with 19 messages each: nothing');
  o.sample(1, MIN_MESSAGES);
  o.sample(1, 1000);
  t.equal(o.level, RISE, 'with the messages, it rises');
  o.sample(1, 0);
  t.equal(o.level, RISE, 'a saturated window without SIP holds it (neither rises nor falls)');
  o.sample(0.6, 0);
  t.equal(o.level, 0.15, 'a relaxed one lowers it, by FALL');
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

t.test('the real sampler: a loop kept busy raises the level, an idle one lets it fall back to 0', async (t) => {
  const changes: boolean[] = [];
  const o = new OverloadControl({ retryAfter: 2, onChange: (on) => changes.push(on) });
  o.start();
  t.teardown(() => o.stop());
  // Busy in slices of ~20 ms, each handed back to the loop (as SIP work would be): no idle time, timers still run.
  const until = Date.now() + 5000;
  while (o.level === 0 && Date.now() < until) {
    const end = Date.now() + 20;
    while (Date.now() < end);
    for (let i = 0; i < 10; i++) o.received(); // 500 messages/s arrived meanwhile
    await new Promise((r) => setImmediate(r));
  }
  t.ok(o.level > 0, `a saturated loop raised the level (utilization ${o.utilization.toFixed(3)})`);
  t.ok(o.utilization >= SATURATED);
  const idleUntil = Date.now() + 8000;
  while (o.level > 0 && Date.now() < idleUntil) await new Promise((r) => setTimeout(r, 50));
  t.equal(o.level, 0, 'idle again: back to 0');
  t.same(changes, [true, false]);

  // The same busy loop without messages: not overload.
  o.stop();
  o.start();
  const end = Date.now() + 1000;
  while (Date.now() < end) {
    const slice = Date.now() + 20;
    while (Date.now() < slice);
    await new Promise((r) => setImmediate(r));
  }
  t.equal(o.level, 0, `busy with no SIP for 1 s (utilization ${o.utilization.toFixed(3)}): level still 0`);
});
