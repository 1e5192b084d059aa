// bench/budget: Portier's per-call latency budget (issue 10, item 2).
//
//   npm run build && npm run bench:budget [-- --runs 3 --no-budget --pin]
//
// Runs bench/load (dist/bench/load.js) in child processes (with --pin,
// Portier and every thread of it on CPU 0 and the generator on CPU 1, by
// taskset; by default neither is pinned: Portier has V8's GC helper threads
// on the other core, as on a server of its own), and checks the figures
// against the budget:
//
//   calls     1,000 calls/s over UDP for 20 s (after a warm-up of 5,000 calls
//             at 500/s that must succeed too), phones answering at once,
//             holds 0-100 ms:
//             setup latency p99 <= 5 ms (INVITE sent -> 200 received at the
//             door station), time inside Portier p99 <= 0.5 ms (the
//             portier_proxy_processing_seconds histogram scraped from the
//             child's /metrics: at least 99% of requests in the le=0.0005
//             bucket), zero failed calls.
//   register  REGISTER with SHA-256 digest at 5,000/s for 10 s (after a
//             warm-up of 10,000 at 2,500/s), 10,000 accounts in a users file,
//             p99 <= 5 ms, no failure; twice: nonce reused (the refresh a registered
//             Linphone sends: credentials at once with nc+1) and challenged
//             every time (401, then credentials: two round trips).
//
// Informative, not budgets: Portier's CPU µs per call and per REGISTER, its
// RSS, its GC pauses (issue 10's target: p99 <= 2 ms under this load), and
// the share of CPU time the hypervisor stole during the runs (bench/load).
// With --runs N each scenario runs N times and the medians are checked.
// Exit status 1 when a budget is missed (0 with --no-budget), 2 on a usage
// error. Every run is bounded: bench/load's own --timeout, and a kill here.

import { spawn, execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const USAGE = `Usage: node dist/bench/budget.js [--runs N] [--no-budget] [--pin] [--only calls|register]
  --runs N      runs of each scenario; the medians are checked (default 1)
  --no-budget   print the figures, exit 0 even when a budget is missed
  --pin         pin Portier (all its threads) to CPU 0 and the generator to CPU 1
  --only S      calls or register: that scenario only`;

let parsed;
try {
  parsed = parseArgs({
    options: {
      runs: { type: 'string', default: '1' },
      'no-budget': { type: 'boolean', default: false },
      pin: { type: 'boolean', default: false },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (err) {
  process.stderr.write(`bench/budget: ${(err as Error).message.split('\n')[0]}\n${USAGE}\n`);
  process.exit(2);
}
const opt = parsed.values;
if (opt.help) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}
const RUNS = Number(opt.runs);
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 9) {
  process.stderr.write(`bench/budget: --runs must be 1..9\n${USAGE}\n`);
  process.exit(2);
}
if (opt.only !== undefined && opt.only !== 'calls' && opt.only !== 'register') {
  process.stderr.write(`bench/budget: --only must be calls or register\n${USAGE}\n`);
  process.exit(2);
}

const here = dirname(fileURLToPath(import.meta.url));
const LOAD = join(here, 'load.js');

function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const PIN = opt.pin && availableParallelism() >= 2 && hasTaskset();

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

interface Scenario {
  name: string;
  args: string[];
  /** Seconds before the run is killed (bench/load's --timeout is below it). */
  limit: number;
}

const CALLS: Scenario = {
  name: 'calls',
  // 25,000 calls: 5,000 at 500/s to warm up (10 s), then 20,000 at 1,000/s measured. The budget is
  // about a warm server: sent 1,000/s from its first second, a cold Portier (JIT still compiling)
  // fell behind, and on a slow day never caught up, its retransmissions feeding its socket queue
  // (bench/README.md, "Cold start").
  args: ['--calls', '25000', '--warmup', '5000', '--warmup-rate', '500', '--rate', '1000', '--answer', '0', '--hold', '0-100', '--metrics', '--gc', '--timeout', '150'],
  limit: 170,
};
const REGISTER = (nonce: 'reuse' | 'fresh'): Scenario => ({
  name: `register (${nonce === 'reuse' ? 'nonce reused' : 'challenged every time'})`,
  args: [
    '--scenario', 'register', '--digest', 'sha256', '--nonce', nonce,
    '--registers', '60000', '--warmup', '10000', '--warmup-rate', '2500', '--aors', '10000', '--rate', '5000', '--gc', '--timeout', '100',
  ],
  limit: 120,
});

/** One bench/load run: its final JSON line, or an error with the output's tail. */
function runLoad(s: Scenario): Promise<Json> {
  const args = [...s.args, ...(PIN ? ['--server-cpu', '0'] : [])];
  const [file, argv] = PIN ? ['taskset', ['-c', '1', process.execPath, LOAD, ...args]] : [process.execPath, [LOAD, ...args]];
  process.stdout.write(`\n$ ${PIN ? 'taskset -c 1 ' : ''}node dist/bench/load.js ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'ignore'] });
    let text = '';
    child.stdout.on('data', (d: Buffer) => {
      text += d.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGTERM'), s.limit * 1000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', () => {
      clearTimeout(timer);
      const lines = text.trimEnd().split('\n');
      for (const l of lines.filter((x) => !x.startsWith('{'))) process.stdout.write(`  ${l}\n`);
      const last = lines[lines.length - 1] ?? '';
      try {
        resolve(JSON.parse(last) as Json);
      } catch {
        reject(new Error(`bench/load printed no JSON line (killed after ${s.limit} s?):\n${lines.slice(-10).join('\n')}`));
      }
    });
  });
}

function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 === 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const num = (x: unknown): number => (typeof x === 'number' ? x : NaN);

interface Row {
  what: string;
  value: number;
  unit: string;
  /** The value must be <= limit (or >= when `atLeast`); null: informative. */
  limit: number | null;
  atLeast?: boolean;
  target?: string;
}

function fmt(x: number, unit: string): string {
  if (!Number.isFinite(x)) return 'n/a';
  const d = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : Math.abs(x) >= 1 ? 2 : 3;
  return `${x.toFixed(d)} ${unit}`.trim();
}

async function main(): Promise<number> {
  const t0 = performance.now();
  process.stdout.write(
    `portier budget: ${RUNS} run(s) of each scenario, Node ${process.version}, ${availableParallelism()} CPUs, ` +
      `${PIN ? 'Portier on CPU 0, generator on CPU 1' : 'not pinned'}\n`,
  );
  const rows: Row[] = [];
  const errors: string[] = [];
  const collect = async (s: Scenario): Promise<Json[]> => {
    const out: Json[] = [];
    for (let i = 0; i < RUNS; i++) {
      try {
        out.push(await runLoad(s));
      } catch (err) {
        errors.push(`${s.name}: ${(err as Error).message}`);
      }
    }
    return out;
  };
  if (opt.only !== 'register') {
    const runs = await collect(CALLS);
    const m = (f: (j: Json) => unknown): number => median(runs.map((j) => num(f(j))));
    const failedCalls = runs.length === RUNS ? Math.max(...runs.map((j) => num(j.failed) + (num(j.calls) - num(j.attempted)))) : NaN;
    rows.push(
      { what: 'calls: failed (worst run)', value: failedCalls, unit: '', limit: 0 },
      { what: 'calls: achieved rate', value: m((j) => j.achieved), unit: 'calls/s', limit: null },
      { what: 'calls: setup latency p50', value: m((j) => j.latencyMs?.p50), unit: 'ms', limit: null },
      { what: 'calls: setup latency p99', value: m((j) => j.latencyMs?.p99), unit: 'ms', limit: 5 },
      { what: 'calls: setup latency p99.9', value: m((j) => j.latencyMs?.p999), unit: 'ms', limit: null },
      { what: 'calls: inside Portier p99 (histogram)', value: m((j) => j.processing?.p99Ms), unit: 'ms', limit: 0.5 },
      { what: 'calls: inside Portier, share <= 0.5 ms', value: m((j) => num(j.processing?.fractionLe0_5ms) * 100), unit: '%', limit: 99, atLeast: true },
      { what: 'calls: Portier CPU per call', value: m((j) => j.serverCpuUsPerOp), unit: 'µs', limit: null },
      { what: 'calls: Portier RSS at the end', value: m((j) => j.rssMiB), unit: 'MiB', limit: null },
      { what: 'calls: GC pause p99', value: m((j) => j.gc?.p99Ms), unit: 'ms', limit: null, target: '<= 2 ms (issue 10 target)' },
      { what: 'calls: GC pause max', value: m((j) => j.gc?.maxMs), unit: 'ms', limit: null },
      { what: 'calls: GC time share', value: m((j) => j.gc?.pctOfPhase), unit: '%', limit: null },
      { what: 'calls: CPU time stolen (hypervisor)', value: m((j) => j.machine?.stealPct), unit: '%', limit: null },
    );
  }
  if (opt.only !== 'calls') {
    for (const nonce of ['reuse', 'fresh'] as const) {
      const s = REGISTER(nonce);
      const runs = await collect(s);
      const m = (f: (j: Json) => unknown): number => median(runs.map((j) => num(f(j))));
      const failedRegs = runs.length === RUNS ? Math.max(...runs.map((j) => num(j.failed))) : NaN;
      const tag = nonce === 'reuse' ? 'register, nonce reused' : 'register, challenged';
      rows.push(
        { what: `${tag}: failed (worst run)`, value: failedRegs, unit: '', limit: 0 },
        { what: `${tag}: achieved rate`, value: m((j) => j.achieved), unit: '/s', limit: null },
        { what: `${tag}: latency p50`, value: m((j) => j.latencyMs?.p50), unit: 'ms', limit: null },
        { what: `${tag}: latency p99`, value: m((j) => j.latencyMs?.p99), unit: 'ms', limit: 5 },
        { what: `${tag}: Portier CPU per REGISTER`, value: m((j) => j.serverCpuUsPerOp), unit: 'µs', limit: null },
        { what: `${tag}: GC pause p99`, value: m((j) => j.gc?.p99Ms), unit: 'ms', limit: null },
        { what: `${tag}: CPU time stolen (hypervisor)`, value: m((j) => j.machine?.stealPct), unit: '%', limit: null },
      );
    }
  }

  process.stdout.write(`\nbudget (${RUNS === 1 ? 'one run' : `medians of ${RUNS} runs`}):\n`);
  let missed = 0;
  const width = Math.max(...rows.map((r) => r.what.length));
  for (const r of rows) {
    let verdict = 'info';
    if (r.limit !== null) {
      const ok = Number.isFinite(r.value) && (r.atLeast ? r.value >= r.limit : r.value <= r.limit);
      verdict = ok ? 'ok' : 'MISSED';
      if (!ok) missed++;
    }
    const limit = r.limit === null ? (r.target ?? '') : `${r.atLeast ? '>=' : '<='} ${fmt(r.limit, r.unit)}`;
    process.stdout.write(`  ${r.what.padEnd(width)} ${fmt(r.value, r.unit).padStart(14)}  ${limit.padEnd(26)} ${verdict}\n`);
  }
  for (const e of errors) process.stdout.write(`error: ${e}\n`);
  if (errors.length > 0) missed++;
  const verdict = missed === 0 ? 'PASS' : `FAIL (${missed} budget${missed > 1 ? 's' : ''} missed)`;
  process.stdout.write(`result  ${verdict} in ${((performance.now() - t0) / 1000).toFixed(0)} s${missed > 0 && opt['no-budget'] ? ' (--no-budget: exit 0)' : ''}\n`);
  return missed > 0 && !opt['no-budget'] ? 1 : 0;
}

main().then(
  (code) => process.stdout.write('', () => process.exit(code)),
  (err: unknown) => {
    process.stderr.write(`bench/budget: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
