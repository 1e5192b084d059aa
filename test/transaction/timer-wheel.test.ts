import t from 'tap';
import { TimerWheel, type TimerTarget } from '../../src/transaction/timer-wheel.js';

/** Records (kind, time) of every firing. */
class Recorder implements TimerTarget {
  readonly fired: Array<[number, number]> = [];
  constructor(private readonly wheel: TimerWheel) {}
  onTimer(kind: number): void {
    this.fired.push([kind, this.wheel.now()]);
  }
}

t.test('timers fire in deadline order, never early, within one tick', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  wheel.schedule(r, 3, 1500);
  wheel.schedule(r, 1, 500);
  wheel.schedule(r, 2, 505); // rounded up to the next 10 ms tick
  wheel.schedule(r, 4, 32_000);
  t.equal(wheel.size, 4);
  wheel.advance(499);
  t.same(r.fired, [], 'nothing before its deadline');
  wheel.advance(1);
  t.same(r.fired, [[1, 500]]);
  wheel.advance(100);
  t.same(r.fired, [[1, 500], [2, 510]]);
  wheel.advance(40_000);
  t.same(r.fired, [[1, 500], [2, 510], [3, 1500], [4, 32_000]]);
  t.equal(wheel.size, 0);
});

t.test('same-tick timers fire in the order scheduled; zero and negative delays fire on the next tick', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  for (let k = 0; k < 5; k++) wheel.schedule(r, k, 100);
  wheel.schedule(r, 10, 0);
  wheel.schedule(r, 11, -5);
  wheel.schedule(r, 12, Number.NaN);
  wheel.advance(10);
  t.same(r.fired.map(([k]) => k), [10, 11, 12]);
  wheel.advance(90);
  t.same(r.fired.slice(3).map(([k]) => k), [0, 1, 2, 3, 4]);
});

t.test('cancel is O(1), idempotent, and works from inside a firing target', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  const a = wheel.schedule(r, 1, 100);
  const b = wheel.schedule(r, 2, 100);
  const c = wheel.schedule(r, 3, 100);
  t.ok(b.active);
  b.cancel();
  b.cancel();
  wheel.cancel(b);
  t.notOk(b.active);
  t.equal(wheel.size, 2);
  // A target that cancels a timer due in the same tick, still waiting to fire.
  const canceller: TimerTarget = { onTimer: () => c.cancel() };
  const d = wheel.schedule(canceller, 9, 50);
  wheel.advance(50);
  t.notOk(d.active, 'fired timers are inactive');
  wheel.advance(50);
  t.same(r.fired, [[1, 100]], 'b cancelled before, c from a target');
  t.notOk(a.active);
  a.cancel(); // after firing: a no-op
  t.equal(wheel.size, 0);

  const w2 = new TimerWheel({ manual: true });
  const r2 = new Recorder(w2);
  let victim = w2.schedule(r2, 2, 10);
  w2.schedule({ onTimer: () => victim.cancel() }, 1, 10);
  victim = w2.schedule(r2, 3, 10); // the one scheduled after the canceller
  w2.advance(10);
  t.same(r2.fired, [[2, 10]], 'a target cancels a timer later in the same slot');
});

t.test('a target may schedule more timers, seeing the time of its tick', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const times: number[] = [];
  let interval = 500;
  const doubling: TimerTarget = {
    onTimer: () => {
      times.push(wheel.now());
      interval = Math.min(interval * 2, 4000);
      if (times.length < 7) wheel.schedule(doubling, 0, interval);
    },
  };
  wheel.schedule(doubling, 0, interval);
  wheel.advance(60_000); // one big step still fires every timer at its own time
  t.same(times, [500, 1500, 3500, 7500, 11_500, 15_500, 19_500]);
});

t.test('wraparound: timers longer than a revolution wait for their own revolution', async (t) => {
  const wheel = new TimerWheel({ manual: true, slots: 8, resolutionMs: 10 }); // 80 ms per revolution
  const r = new Recorder(wheel);
  wheel.schedule(r, 1, 30);
  wheel.schedule(r, 2, 110); // same slot as 30 (tick 11 & 7 = 3)
  wheel.schedule(r, 3, 350); // several revolutions ahead
  wheel.schedule(r, 4, 80); // the slot of "now"
  wheel.advance(30);
  t.same(r.fired, [[1, 30]], 'the later-revolution timer in the same slot stays');
  wheel.advance(1000);
  t.same(r.fired, [[1, 30], [4, 80], [2, 110], [3, 350]]);
  // Keep going round many times with timers spread across all slots.
  const w = new TimerWheel({ manual: true, slots: 16 });
  const rr = new Recorder(w);
  for (let i = 0; i < 1000; i++) w.schedule(rr, i, (i * 37) % 2000);
  w.advance(2000);
  t.equal(rr.fired.length, 1000);
  for (let i = 1; i < rr.fired.length; i++) {
    if (rr.fired[i][1] < rr.fired[i - 1][1]) t.fail('out of order at ' + i);
  }
  for (const [k, at] of rr.fired) {
    const due = (k * 37) % 2000;
    if (at < due || at >= due + 10 + (due === 0 ? 10 : 0)) t.fail(`timer ${k} due ${due} fired at ${at}`);
  }
});

t.test('many timers: 100,000 scheduled, half cancelled, the rest fire once', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  let count = 0;
  const target: TimerTarget = { onTimer: (k) => void (count += k) };
  const handles = [];
  for (let i = 0; i < 100_000; i++) handles.push(wheel.schedule(target, 1, 500 + (i % 31_500)));
  for (let i = 0; i < handles.length; i += 2) handles[i].cancel();
  t.equal(wheel.size, 50_000);
  wheel.advance(32_000);
  t.equal(count, 50_000);
  t.equal(wheel.size, 0);
});

t.test('an injected clock drives tick()', async (t) => {
  let now = 1_000_000.5;
  const wheel = new TimerWheel({ manual: true, now: () => now });
  const r = new Recorder(wheel);
  wheel.schedule(r, 1, 500);
  now += 499;
  wheel.tick();
  t.same(r.fired, []);
  now += 10; // 509.5 ms: the deadline rounds up to the tick at 510
  wheel.tick();
  t.same(r.fired, []);
  now += 1;
  wheel.tick();
  t.equal(r.fired.length, 1);
  t.throws(() => wheel.advance(10), /manual wheel without an injected clock/);
  now -= 5000; // a clock going back fires nothing
  wheel.schedule(r, 2, 10);
  wheel.tick();
  t.equal(r.fired.length, 1);
});

t.test('a throwing target does not stop the others; the error surfaces after the tick', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  wheel.schedule({ onTimer: () => { throw new Error('boom'); } }, 1, 10);
  wheel.schedule(r, 2, 10);
  t.throws(() => wheel.advance(10), /boom/);
  t.same(r.fired, [[2, 10]]);
  t.equal(wheel.size, 0);
});

t.test('stop() drops everything; later timers never fire', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  wheel.schedule(r, 1, 10);
  wheel.schedule(r, 2, 20);
  wheel.schedule({ onTimer: () => wheel.stop() }, 0, 10); // stop from inside a tick
  wheel.advance(10);
  t.same(r.fired, [[1, 10]]);
  const h = wheel.schedule(r, 3, 10);
  t.notOk(h.active);
  wheel.advance(100);
  t.same(r.fired, [[1, 10]]);
  t.equal(wheel.size, 0);
});

t.test('the Node timer drives a real wheel and goes idle when empty', async (t) => {
  const wheel = new TimerWheel();
  // The wheel's interval is unref'd: something must keep the test process alive.
  const keepAlive = setInterval(() => {}, 1000);
  t.teardown(() => {
    wheel.stop();
    clearInterval(keepAlive);
  });
  const start = wheel.now();
  const at = await new Promise<number>((resolve) => {
    wheel.schedule({ onTimer: () => resolve(wheel.now()) }, 0, 30);
  });
  t.ok(at - start >= 30, 'not early');
  await new Promise((r) => setTimeout(r, 30));
  t.equal((wheel as unknown as { interval: unknown }).interval, null, 'interval cleared once idle');
  const late = await new Promise<number>((resolve) => {
    const s = wheel.now();
    wheel.schedule({ onTimer: () => resolve(wheel.now() - s) }, 0, 20);
  });
  t.ok(late >= 20, 'restarts after idling');
});

t.test('wait(): no handle, fires once at its deadline, in order per delay, after the tick’s timers', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  t.equal(wheel.wait(r, 7, 32_000), undefined, 'nothing to cancel');
  wheel.schedule(r, 1, 32_000);
  wheel.wait(r, 8, 5_000);
  wheel.advance(1_000);
  wheel.wait(r, 9, 32_000); // same lane as 7, due later
  wheel.wait(r, 10, 4_995); // the 5 s lane: rounded up to the tick of kind 8's
  t.equal(wheel.size, 5);
  wheel.advance(3_999);
  t.same(r.fired, [], 'never early');
  wheel.advance(1);
  t.same(r.fired, [[8, 5_000]]);
  wheel.advance(1_000);
  t.same(r.fired, [[8, 5_000], [10, 6_000]]);
  wheel.advance(26_000);
  t.same(r.fired.slice(2), [[1, 32_000], [7, 32_000]], 'the schedule()d timer of the tick first');
  wheel.advance(1_000);
  t.same(r.fired.slice(4), [[9, 33_000]]);
  t.equal(wheel.size, 0);
});

t.test('wait(): a lane grows past its ring and wraps around, keeping the order', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  // Fill, drain half, refill beyond the first capacity (64): the ring wraps, then grows.
  for (let k = 0; k < 50; k++) wheel.wait(r, k, 100);
  wheel.advance(100);
  t.equal(r.fired.length, 50);
  for (let k = 0; k < 200; k++) {
    wheel.wait(r, k % 256, 1000);
    if (k % 40 === 39) wheel.advance(10);
  }
  t.equal(wheel.size, 200);
  wheel.advance(2_000);
  t.same(
    r.fired.slice(50).map(([k]) => k),
    Array.from({ length: 200 }, (_, k) => k),
    'every wait once, in the order given',
  );
  t.equal(wheel.size, 0);
});

t.test('wait(): a target may wait again from its firing; a thrown error surfaces after the tick', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  let again = 3;
  const chain: TimerTarget = {
    onTimer: (kind) => {
      r.onTimer(kind);
      if (--again > 0) wheel.wait(chain, kind + 1, 100);
    },
  };
  wheel.wait(chain, 1, 100);
  wheel.advance(1_000);
  t.same(r.fired, [[1, 100], [2, 200], [3, 300]]);
  const bad: TimerTarget = {
    onTimer: () => {
      throw new Error('boom');
    },
  };
  wheel.wait(bad, 1, 100);
  wheel.wait(r, 4, 100);
  t.throws(() => wheel.advance(100), /boom/);
  t.same(r.fired.at(-1), [4, 1_100], 'the next wait still fired');
  t.equal(wheel.size, 0);
});

t.test('wait(): stop() and dropWaits() drop pending waits', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  const other = new Recorder(wheel);
  wheel.wait(r, 1, 100);
  wheel.wait(other, 2, 100);
  wheel.wait(r, 3, 200);
  wheel.dropWaits((target) => target === r);
  t.equal(wheel.size, 1);
  wheel.advance(1_000);
  t.same(r.fired, [], 'dropped');
  t.same(other.fired, [[2, 100]]);
  wheel.wait(r, 4, 100);
  wheel.stop();
  t.equal(wheel.size, 0);
  wheel.wait(r, 5, 100);
  t.equal(wheel.size, 0, 'a stopped wheel takes no waits');
  t.throws(() => wheel.wait(r, 256, 100), RangeError, 'kinds are kept in a byte');
});

t.test('wait(): zero, negative and NaN delays fire on the next tick, from one lane', async (t) => {
  const wheel = new TimerWheel({ manual: true });
  const r = new Recorder(wheel);
  wheel.wait(r, 1, 0);
  wheel.wait(r, 2, -5);
  wheel.wait(r, 3, Number.NaN);
  wheel.advance(10);
  t.same(r.fired, [[1, 10], [2, 10], [3, 10]]);
});

t.test('wait(): an injected clock that steps back does not make a lane fire out of order', async (t) => {
  let now = 10_000;
  const wheel = new TimerWheel({ manual: true, now: () => now });
  const r = new Recorder(wheel);
  wheel.wait(r, 1, 1_000);
  now = 9_000; // stepped back
  wheel.wait(r, 2, 1_000);
  now = 11_000;
  wheel.tick();
  t.same(r.fired.map(([k]) => k), [1, 2], 'the second not before the first');
});
