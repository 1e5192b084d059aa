// bench/timers: the transaction layer's timer wheel against one Node timer
// per transaction timer.
//
//   npm run build && node --expose-gc dist/bench/timers.js [-- --runs 5 --sizes 100000,500000]
//
// For each size N it measures, on one core:
//   schedule       N timers with delays spread over 0.5 s .. 32 s (SIP's range)
//   cancel         all N again (transactions cancel nearly every timer they set)
//   churn          with N live, cancel one and schedule one, N times: the
//                  steady state of a proxy with N transactions in flight
//   fire           (wheel only, manual clock) N timers firing over 32 s
//   memory         heap per live timer (needs --expose-gc to be meaningful)
// against setTimeout/clearTimeout doing the same work. Each figure is the
// median of several runs. No budget: this is for comparison, not CI.

import { parseArgs } from 'node:util';
import { TimerWheel, type TimerHandle, type TimerTarget } from '../src/transaction/timer-wheel.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    sizes: { type: 'string', default: '100000,500000' },
  },
});
const RUNS = Math.max(1, Number(values.runs));
const SIZES = values.sizes.split(',').map(Number).filter((n) => n > 0);

const gc = (globalThis as { gc?: () => void }).gc;

class Target implements TimerTarget {
  fired = 0;
  onTimer(kind: number): void {
    this.fired += kind;
  }
}

/** Deterministic delays over SIP's range, so both sides do the same work. */
function delays(n: number): Float64Array {
  const d = new Float64Array(n);
  let x = 0x2545f491;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    d[i] = 500 + ((x >>> 0) % 31_500);
  }
  return d;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[s.length >> 1];
}

function time(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

function heapUsed(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

interface Figures {
  schedule: number;
  cancel: number;
  churn: number;
  bytesPerTimer: number;
}

function benchWheel(n: number, d: Float64Array): Figures {
  const target = new Target();
  const wheel = new TimerWheel();
  const handles = new Array<TimerHandle>(n);
  const before = heapUsed();
  const schedule = time(() => {
    for (let i = 0; i < n; i++) handles[i] = wheel.schedule(target, 1, d[i]);
  });
  const bytes = (heapUsed() - before) / n;
  const churn = time(() => {
    for (let i = 0; i < n; i++) {
      const j = (i * 7919) % n;
      handles[j].cancel();
      handles[j] = wheel.schedule(target, 1, d[i]);
    }
  });
  const cancel = time(() => {
    for (let i = 0; i < n; i++) handles[i].cancel();
  });
  wheel.stop();
  return { schedule, cancel, churn, bytesPerTimer: bytes };
}

function benchSetTimeout(n: number, d: Float64Array): Figures {
  const target = new Target();
  const handles = new Array<NodeJS.Timeout>(n);
  const before = heapUsed();
  // What a transaction would have to write with Node timers: a closure each.
  const schedule = time(() => {
    for (let i = 0; i < n; i++) handles[i] = setTimeout(() => target.onTimer(1), d[i]).unref();
  });
  const bytes = (heapUsed() - before) / n;
  const churn = time(() => {
    for (let i = 0; i < n; i++) {
      const j = (i * 7919) % n;
      clearTimeout(handles[j]);
      handles[j] = setTimeout(() => target.onTimer(1), d[i]).unref();
    }
  });
  const cancel = time(() => {
    for (let i = 0; i < n; i++) clearTimeout(handles[i]);
  });
  return { schedule, cancel, churn, bytesPerTimer: bytes };
}

function benchFire(n: number, d: Float64Array): number {
  const target = new Target();
  const wheel = new TimerWheel({ manual: true });
  for (let i = 0; i < n; i++) wheel.schedule(target, 1, d[i]);
  const ms = time(() => wheel.advance(32_000));
  if (target.fired !== n) throw new Error(`fired ${target.fired} of ${n}`);
  return ms;
}

function opsPerSec(n: number, ms: number): string {
  return Math.round((n / ms) * 1000).toLocaleString('en-US').padStart(13);
}

console.log(`node ${process.version}, ${RUNS} runs per figure (median)${gc ? '' : '; run with --expose-gc for memory figures'}`);
for (const n of SIZES) {
  const d = delays(n);
  const wheel: Figures[] = [];
  const node: Figures[] = [];
  const fire: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    wheel.push(benchWheel(n, d));
    node.push(benchSetTimeout(n, d));
    fire.push(benchFire(n, d));
  }
  const pick = (fs: Figures[], k: keyof Figures) => median(fs.map((f) => f[k]));
  console.log(`\n${n.toLocaleString('en-US')} timers                 wheel ops/s   setTimeout ops/s   ratio`);
  for (const k of ['schedule', 'cancel', 'churn'] as const) {
    const w = pick(wheel, k);
    const s = pick(node, k);
    console.log(`  ${k.padEnd(24)}${opsPerSec(n, w)}      ${opsPerSec(n, s)}   ${(s / w).toFixed(1).padStart(5)}x`);
  }
  console.log(`  ${'fire (manual clock)'.padEnd(24)}${opsPerSec(n, median(fire))}`);
  if (gc) {
    console.log(`  ${'bytes per live timer'.padEnd(24)}${pick(wheel, 'bytesPerTimer').toFixed(0).padStart(13)}      ${pick(node, 'bytesPerTimer').toFixed(0).padStart(13)}`);
  }
}
