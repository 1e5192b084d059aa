// bench/compare: Portier and Kamailio side by side, same generator, same machine.
//
//   npm run build && npm run bench:compare [-- --runs 3 --servers portier,kamailio --quick]
//
// Kamailio is Debian's `kamailio` package (apt-get install kamailio) with
// bench/kamailio/kamailio.cfg: registrar + stateful proxy, usrloc in memory,
// one UDP worker. Portier runs with its memory store (the same footing as
// usrloc in memory). Each server is pinned to CPU 0 and bench/load, the
// generator, to CPU 1 (taskset), on 127.0.0.1 only. For each server:
//
//   fixed rate    1,000 calls/s for 10 s (after 2,000 warm-up calls) and
//                 5,000 REGISTER/s for 10 s over 10,000 AORs (after 10,000):
//                 the server's CPU µs per call and per REGISTER (utime +
//                 stime of its processes from /proc), setup p99
//   calls/s       the highest rate sustained with < 0.1% failed calls and
//                 setup p99 < 50 ms: steps of 4 s (after 3 s of warm-up at
//                 up to 1,000 calls/s) at rising rates, then a
//                 bisection between the last pass and the first miss; a
//                 fresh server for each step; at most 10 steps
//   REGISTER/s    100,000 new AORs registered with 200 REGISTERs in flight
//                 (closed loop: the highest rate)
//   bindings      the same server, 36 s later (REGISTER transactions gone):
//                 memory (PSS: Kamailio's shared memory counted once over its
//                 processes) over what it used before, per 100,000 bindings
//
// Where the generator itself runs out of CPU (it costs about as much per
// call as the server), the figure is a floor of the server's ("gen-bound").
// With --runs N the fixed-rate, REGISTER/s and memory figures are the
// medians of N runs; the step search runs once. It prints a Markdown table
// and one JSON line. Exit 0 unless a server could not be run at all.

import { spawn, execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freeUdpPort, processTree, startPortier, stopPortier, treeCpuMs, waitReady, type Portier } from './portier-process.js';

const USAGE = `Usage: node dist/bench/compare.js [options]
  --servers LIST   portier,kamailio (default both)
  --runs N         runs of the fixed-rate and REGISTER figures; medians (default 1)
  --quick          shorter: no step search past 3 steps, 50,000 bindings
  --max-rate R     highest calls/s the step search tries (default 12000)
  --kamailio PATH  the kamailio binary (default: kamailio on PATH)
  --sipp           also drive each server with SIPp (Debian's sip-tester,
                   bench/sipp/*.xml): 1,000 calls/s for 10 s, and a step
                   search of its own
  --no-load        skip the bench/load figures (with --sipp: SIPp only)`;

let parsed;
try {
  parsed = parseArgs({
    options: {
      servers: { type: 'string', default: 'portier,kamailio' },
      runs: { type: 'string', default: '1' },
      quick: { type: 'boolean', default: false },
      'max-rate': { type: 'string', default: '12000' },
      kamailio: { type: 'string', default: 'kamailio' },
      sipp: { type: 'boolean', default: false },
      'no-load': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (err) {
  process.stderr.write(`bench/compare: ${(err as Error).message.split('\n')[0]}\n${USAGE}\n`);
  process.exit(2);
}
const opt = parsed.values;
if (opt.help) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}
const SERVERS = opt.servers.split(',').map((s) => s.trim());
if (SERVERS.length === 0 || SERVERS.some((s) => s !== 'portier' && s !== 'kamailio')) {
  process.stderr.write(`bench/compare: --servers takes portier and/or kamailio\n${USAGE}\n`);
  process.exit(2);
}
const RUNS = Number(opt.runs);
const MAX_RATE = Number(opt['max-rate']);
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 9 || !(MAX_RATE >= 500 && MAX_RATE <= 50_000)) {
  process.stderr.write(`bench/compare: --runs 1..9, --max-rate 500..50000\n${USAGE}\n`);
  process.exit(2);
}
const QUICK = opt.quick;
const SIPP = opt.sipp;
const LOADGEN = !opt['no-load'];
const BINDINGS = QUICK ? 50_000 : 100_000;

const here = dirname(fileURLToPath(import.meta.url));
const root = here.endsWith(join('dist', 'bench')) ? join(here, '..', '..') : join(here, '..');
const LOAD = join(here, 'load.js');
const KAMAILIO_CFG = join(root, 'bench', 'kamailio', 'kamailio.cfg');
const SIPP_UAC = join(root, 'bench', 'sipp', 'uac.xml');
const SIPP_UAS = join(root, 'bench', 'sipp', 'uas.xml');
const HOST = '127.0.0.1';

/** Whether `cmd` can be run at all (its exit status aside: `sipp -v` exits 99). */
function have(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT' && typeof (err as { status?: unknown }).status === 'number';
  }
}
const PIN = availableParallelism() >= 2 && have('taskset', ['-V']);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

// ---------------------------------------------------------------- servers

interface Target {
  /** bench/load arguments that point it at the server. */
  args: string[];
  port: number;
  pid: number;
  stop: () => Promise<void>;
}

/** Kamailio on a free loopback port, pinned to CPU 0, in the foreground (-DD -E), until stop(). */
async function startKamailio(): Promise<Target> {
  for (let attempt = 1; ; attempt++) {
    const port = await freeUdpPort();
    const dir = mkdtempSync(join(tmpdir(), 'portier-compare-kamailio-'));
    // 1 GiB of shared memory: tm keeps each transaction there until its wait timer, and at 2,000 calls/s
    // 256 MiB runs out (new_t(): out of mem, 500 to the INVITE). Only the pages used count in its PSS.
    const args = ['-DD', '-E', '-f', KAMAILIO_CFG, '-l', `udp:${HOST}:${port}`, '-m', '1024', '-M', '16', '-w', dir, '-Y', dir];
    const command = PIN ? { file: 'taskset', args: ['-c', '0', opt.kamailio, ...args] } : { file: opt.kamailio, args };
    const k: Portier = startPortier('', [], undefined, command);
    try {
      await waitReady(k, port, 10_000);
    } catch (err) {
      await stopPortier(k);
      rmSync(dir, { recursive: true, force: true });
      if (attempt >= 3) throw err;
      continue;
    }
    return {
      args: ['--target', `${HOST}:${port}`, '--server-pid', String(k.pid)],
      port,
      pid: k.pid,
      stop: async () => {
        await stopPortier(k);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
}

/** Portier as bench/load starts it (memory store), for SIPp; pinned to CPU 0. */
async function startPortierServer(): Promise<Target> {
  for (let attempt = 1; ; attempt++) {
    const port = await freeUdpPort();
    const dir = mkdtempSync(join(tmpdir(), 'portier-compare-'));
    const config = join(dir, 'portier.yaml');
    writeFileSync(
      config,
      [
        'domains: [example.test]',
        `listen: [udp:${HOST}:${port}]`,
        'log: {level: warn}',
        'timers: {t1: 500, t2: 4000, t4: 5000}',
        'proxy: {ring-timeout: 30}',
        'registrar: {min-expires: 60, max-expires: 3600, default-expires: 600}',
        `security: {exempt: ["${HOST}"]}`,
        'storage: {type: memory}',
        '',
      ].join('\n'),
    );
    const p = startPortier(config);
    try {
      await waitReady(p, port, 10_000);
    } catch (err) {
      await stopPortier(p);
      rmSync(dir, { recursive: true, force: true });
      if (attempt >= 3) throw err;
      continue;
    }
    if (PIN) execFileSync('taskset', ['-a', '-p', '-c', '0', String(p.pid)], { stdio: 'ignore' });
    return {
      args: [],
      port,
      pid: p.pid,
      stop: async () => {
        await stopPortier(p);
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
}

/** Portier is started by bench/load itself: only the arguments. */
function portierArgs(): string[] {
  return ['--store', 'memory', ...(PIN ? ['--server-cpu', '0'] : [])];
}

/** One bench/load run against `server`; its JSON line. */
async function load(server: string, args: string[], limitS: number): Promise<Json> {
  let target: Target | null = null;
  try {
    let full: string[];
    if (server === 'kamailio') {
      target = await startKamailio();
      full = [...args, ...target.args];
    } else full = [...args, ...portierArgs()];
    const [file, argv] = PIN ? ['taskset', ['-c', '1', process.execPath, LOAD, ...full]] : [process.execPath, [LOAD, ...full]];
    process.stderr.write(`  ${server}: node dist/bench/load.js ${full.join(' ')}\n`);
    const text = await new Promise<string>((resolve, reject) => {
      const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'ignore'] });
      let s = '';
      child.stdout.on('data', (d: Buffer) => (s += d.toString('utf8')));
      const timer = setTimeout(() => child.kill('SIGTERM'), limitS * 1000);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.once('close', () => {
        clearTimeout(timer);
        resolve(s);
      });
    });
    const lines = text.trimEnd().split('\n');
    const last = lines[lines.length - 1] ?? '';
    try {
      return JSON.parse(last) as Json;
    } catch {
      throw new Error(`bench/load printed no JSON line; its last lines:\n    ${lines.slice(-8).join('\n    ')}`);
    }
  } finally {
    if (target !== null) await target.stop();
  }
}

// ---------------------------------------------------------------- measurements

const num = (x: unknown): number => (typeof x === 'number' ? x : NaN);
function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 === 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

interface Figures {
  callCpuUs: number;
  callP99: number;
  callGenCpuUs: number;
  regCpuUs: number;
  regP99: number;
  regPerS: number;
  regGenPct: number;
  bindingsMiB: number;
  bindingsTotalMiB: number;
  maxCalls: number;
  maxCallsGenBound: boolean;
  maxCallsGenPct: number;
  steps: string[];
}

const CALL_FIXED = ['--calls', '12000', '--warmup', '2000', '--rate', '1000', '--hold', '0-100', '--timeout', '100'];
const REG_FIXED = ['--scenario', 'register', '--registers', '60000', '--warmup', '10000', '--warmup-rate', '2500', '--aors', '10000', '--rate', '5000', '--timeout', '100'];
const REG_MAX = ['--scenario', 'register', '--registers', String(BINDINGS), '--aors', String(BINDINGS), '--window', '200', '--settle', '36', '--timeout', '150'];

/** A step of the search: calls at `rate` for 4 s; sustained when < 0.1% failed and p99 < 50 ms. */
async function step(server: string, rate: number): Promise<{ ok: boolean; line: string; genPct: number; j: Json | null }> {
  // A fresh server is warmed for 3 s at up to 1,000 calls/s (the JIT, the young generation's
  // size, the sockets), then measured for 4 s at `rate`; every call must succeed all the same.
  // Sustained means warm: started cold at 2,500/s, Portier answered 26-232 calls in its first
  // second (interpreted code, and the compiler's thread on the same pinned core), fell behind by
  // more than T1 and never caught up within the step. Kamailio, compiled, gets the same warm-up.
  const warmRate = Math.min(rate, 1000);
  const calls = 3 * warmRate + 4 * rate;
  let j: Json;
  try {
    j = await load(server, ['--calls', String(calls), '--warmup', String(3 * warmRate), '--warmup-rate', String(warmRate), '--rate', String(rate), '--hold', '0-100', '--timeout', '90'], 110);
  } catch (err) {
    return { ok: false, line: `${rate}/s: no result (${(err as Error).message.split('\n')[0]})`, genPct: NaN, j: null };
  }
  const failedShare = (num(j.failed) + (num(j.calls) - num(j.attempted))) / num(j.calls);
  const p99 = num(j.latencyMs?.p99);
  const ok = failedShare < 0.001 && p99 < 50;
  const genPct = num(j.generatorCpuPctCore);
  const line =
    `${rate}/s: ${ok ? 'sustained' : 'not sustained'} (achieved ${num(j.achievedMeasured ?? j.achieved).toFixed(0)}/s, failed ${(failedShare * 100).toFixed(2)}%, ` +
    `p99 ${p99.toFixed(1)} ms, ${num(j.retransmissions)} retransmissions, ${num(j.drops?.server)} datagrams dropped at the server's socket, ` +
    `server ${num(j.serverCpuPctCore).toFixed(0)}% of a core, generator ${genPct.toFixed(0)}%)`;
  return { ok, line, genPct, j };
}

/** A step search of the highest sustained rate: up the ladder until a step fails, then a bisection to 10%. */
async function searchRate(run: (rate: number) => Promise<{ ok: boolean; line: string; genPct: number }>): Promise<{ rate: number; genBound: boolean; genPct: number; steps: string[] }> {
  const steps: string[] = [];
  const ladder = [1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 16000, 20000].filter((r) => r <= MAX_RATE);
  let pass = 0;
  let passGen = NaN;
  let fail = 0;
  let n = 0;
  const maxSteps = QUICK ? 3 : 10;
  const tryRate = async (rate: number): Promise<boolean> => {
    n++;
    const s = await run(rate);
    steps.push(s.line);
    process.stderr.write(`    ${s.line}\n`);
    if (s.ok) {
      pass = rate;
      passGen = s.genPct;
    } else fail = rate;
    return s.ok;
  };
  for (const r of ladder) {
    if (n >= maxSteps || !(await tryRate(r))) break;
  }
  // Bisect between the last sustained rate and the first that was not, to 10% of it.
  while (fail > 0 && n < maxSteps && fail - pass > Math.max(250, pass * 0.1)) await tryRate(Math.round((pass + fail) / 2 / 50) * 50);
  // The generator near a full core at the best rate: the server may do more.
  return { rate: pass, genBound: passGen >= 85 || (fail === 0 && pass > 0), genPct: passGen, steps };
}

function searchMaxCalls(server: string): Promise<{ rate: number; genBound: boolean; genPct: number; steps: string[] }> {
  return searchRate((rate) => step(server, rate));
}

async function measure(server: string): Promise<Figures> {
  process.stderr.write(`\n${server}\n`);
  const callRuns: Json[] = [];
  const regRuns: Json[] = [];
  const maxRuns: Json[] = [];
  for (let i = 0; i < RUNS; i++) {
    callRuns.push(await load(server, CALL_FIXED, 130));
    regRuns.push(await load(server, REG_FIXED, 130));
    maxRuns.push(await load(server, REG_MAX, 200));
  }
  const m = (runs: Json[], f: (j: Json) => unknown): number => median(runs.map((j) => num(f(j))));
  const search = await searchMaxCalls(server);
  return {
    callCpuUs: m(callRuns, (j) => j.serverCpuUsPerOp),
    callP99: m(callRuns, (j) => j.latencyMs?.p99),
    callGenCpuUs: m(callRuns, (j) => j.generatorCpuUsPerOp),
    regCpuUs: m(regRuns, (j) => j.serverCpuUsPerOp),
    regP99: m(regRuns, (j) => j.latencyMs?.p99),
    regPerS: m(maxRuns, (j) => j.achieved),
    regGenPct: m(maxRuns, (j) => j.generatorCpuPctCore),
    bindingsMiB: m(maxRuns, (j) => ((num(j.pssSettledMiB) - num(j.pssBeforeMiB)) * 100_000) / BINDINGS),
    bindingsTotalMiB: m(maxRuns, (j) => j.pssSettledMiB),
    maxCalls: search.rate,
    maxCallsGenBound: search.genBound,
    maxCallsGenPct: search.genPct,
    steps: search.steps,
  };
}

// ---------------------------------------------------------------- SIPp

interface SippResult {
  ok: boolean;
  rate: number;
  calls: number;
  successful: number;
  failed: number;
  p99: number;
  serverCpuUs: number;
  sippCpuPct: number;
  line: string;
}

/**
 * Registers sip:sipp@example.test at the SIPp UAS's address, from that very
 * address (before SIPp binds it): Portier sends to the flow a REGISTER came
 * from, not to the Contact, so it has to be the UAS's own port.
 */
async function registerSipp(serverPort: number, uasPort: number): Promise<void> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(uasPort, HOST, () => r()));
  const local = sock.address().port;
  try {
    await new Promise<void>((resolve, reject) => {
      let n = 0;
      const send = (): void => {
        if (++n > 10) return reject(new Error('the SIPp UAS could not be registered (no 200 to REGISTER)'));
        sock.send(
          `REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP ${HOST}:${local};branch=z9hG4bKsipp${n}${process.pid};rport\r\n` +
            `Max-Forwards: 70\r\nFrom: <sip:sipp@example.test>;tag=s${process.pid}\r\nTo: <sip:sipp@example.test>\r\n` +
            `Call-ID: sipp-${process.pid}-${uasPort}@${HOST}\r\nCSeq: ${n} REGISTER\r\nContact: <sip:sipp@${HOST}:${uasPort}>;expires=3600\r\n` +
            'Content-Length: 0\r\n\r\n',
          serverPort,
          HOST,
        );
        timer = setTimeout(send, 500);
      };
      let timer: NodeJS.Timeout | undefined;
      sock.on('message', (m) => {
        if (/^SIP\/2\.0 200 /.test(m.toString('latin1'))) {
          clearTimeout(timer);
          resolve();
        }
      });
      send();
    });
  } finally {
    sock.close();
  }
}

function spawnSipp(args: string[], cwd: string): ReturnType<typeof spawn> {
  const [file, argv] = PIN ? ['taskset', ['-c', '1', 'sipp', ...args]] : ['sipp', args];
  return spawn(file, argv, { cwd, stdio: ['ignore', 'ignore', 'ignore'] });
}

/** SIPp's UAC at `rate` for `seconds` (the first second out of the percentiles), against a fresh server warmed for 3 s. */
async function sippRun(server: string, rate: number, seconds: number): Promise<SippResult> {
  const target = server === 'kamailio' ? await startKamailio() : await startPortierServer();
  const dir = mkdtempSync(join(tmpdir(), 'portier-compare-sipp-'));
  const calls = Math.round(rate * seconds);
  try {
    const uasPort = await freeUdpPort();
    await registerSipp(target.port, uasPort);
    const uas = spawnSipp(['-sf', SIPP_UAS, '-i', HOST, '-p', String(uasPort), '-nostdin', '-timeout', `${seconds + 70}s`], dir);
    try {
      await new Promise((r) => setTimeout(r, 300));
      // As in step(): the fresh server is warmed for 3 s at up to 1,000 calls/s first, by a SIPp of its own.
      const warmRate = Math.min(rate, 1000);
      const uacArgs = async (r: number, n: number): Promise<string[]> =>
        ['-sf', SIPP_UAC, '-s', 'sipp', `${HOST}:${target.port}`, '-i', HOST, '-p', String(await freeUdpPort()), '-r', String(r), '-m', String(n),
          '-l', String(Math.max(1000, r * 2)), '-nostdin'];
      const warm = spawnSipp([...(await uacArgs(warmRate, 3 * warmRate)), '-timeout', '15s'], dir);
      await new Promise((r) => warm.once('close', r));
      const pids = processTree(target.pid);
      const cpu0 = treeCpuMs(pids);
      const args = await uacArgs(rate, calls);
      const t0 = performance.now();
      const uac = spawnSipp([...args, '-trace_rtt', '-rtt_freq', '1', '-trace_stat', '-fd', '1', '-timeout', `${seconds + 40}s`], dir);
      const killer = setTimeout(() => uac.kill('SIGTERM'), (seconds + 50) * 1000);
      const uacPid = uac.pid ?? 0;
      let sippCpu = 0;
      // The UAS's time during the warm-up is not this run's.
      const uasCpu0 = treeCpuMs([uas.pid ?? 0]);
      const sampler = setInterval(() => {
        sippCpu = treeCpuMs([uacPid, uas.pid ?? 0]) - uasCpu0;
      }, 200);
      await new Promise((r) => uac.once('close', r));
      clearTimeout(killer);
      clearInterval(sampler);
      const elapsed = performance.now() - t0;
      const cpu = treeCpuMs(pids) - cpu0;
      const files = readdirSync(dir);
      const stat = files.find((f) => f.endsWith('_.csv'));
      const rtt = files.find((f) => f.endsWith('_rtt.csv'));
      let successful = NaN;
      let failed = NaN;
      if (stat !== undefined) {
        const lines = readFileSync(join(dir, stat), 'latin1').trim().split('\n');
        const head = lines[0].split(';');
        const last = lines[lines.length - 1].split(';');
        successful = Number(last[head.indexOf('SuccessfulCall(C)')]);
        failed = Number(last[head.indexOf('FailedCall(C)')]);
      }
      const lat: number[] = [];
      if (rtt !== undefined) {
        for (const l of readFileSync(join(dir, rtt), 'latin1').split('\n').slice(1)) {
          const [t, ms] = l.split(';');
          if (ms !== undefined && Number(t) >= 1000) lat.push(Number(ms));
        }
      }
      lat.sort((a, b) => a - b);
      const p99 = lat.length === 0 ? NaN : lat[Math.min(lat.length - 1, Math.ceil(0.99 * lat.length) - 1)];
      const failedShare = (calls - (Number.isFinite(successful) ? successful : 0)) / calls;
      const ok = failedShare < 0.001 && p99 < 50;
      const sippCpuPct = (sippCpu / elapsed) * 100;
      return {
        ok,
        rate,
        calls,
        successful,
        failed,
        p99,
        serverCpuUs: (cpu * 1000) / calls,
        sippCpuPct,
        line:
          `${rate}/s: ${ok ? 'sustained' : 'not sustained'} (SIPp: ${successful} of ${calls} calls successful, ${failed} failed, ` +
          `p99 ${p99} ms (1 ms resolution), server ${((cpu / elapsed) * 100).toFixed(0)}% of a core = ${((cpu * 1000) / calls).toFixed(0)} µs/call, SIPp ${sippCpuPct.toFixed(0)}%)`,
      };
    } finally {
      uas.kill('SIGTERM');
    }
  } finally {
    await target.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function sippFigures(server: string): Promise<{ fixed: SippResult; max: number; genBound: boolean; steps: string[] }> {
  process.stderr.write(`\n${server} with SIPp\n`);
  const fixed = await sippRun(server, 1000, 10);
  process.stderr.write(`    fixed ${fixed.line}\n`);
  const found = await searchRate(async (rate) => {
    const r = await sippRun(server, rate, 5);
    return { ok: r.ok, line: r.line, genPct: r.sippCpuPct };
  });
  return { fixed, max: found.rate, genBound: found.genBound, steps: found.steps };
}

// ---------------------------------------------------------------- report

function fmt(x: number, d = 0): string {
  return Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : 'n/a';
}

async function main(): Promise<number> {
  const t0 = performance.now();
  if (SERVERS.includes('kamailio') && !have(opt.kamailio, ['-v'])) {
    process.stderr.write(`bench/compare: no ${opt.kamailio} (apt-get install -y kamailio), or use --servers portier\n`);
    return 1;
  }
  process.stdout.write(
    `portier compare: ${SERVERS.join(' vs ')}, ${RUNS} run(s), Node ${process.version}, ${availableParallelism()} CPUs, ` +
      `${PIN ? 'server on CPU 0, generator (bench/load) on CPU 1' : 'not pinned (taskset missing or one CPU)'}\n`,
  );
  if (SIPP && !have('sipp', ['-v'])) {
    process.stderr.write('bench/compare: --sipp needs sipp (apt-get install -y sip-tester)\n');
    return 1;
  }
  const res = new Map<string, Figures>();
  const sipp = new Map<string, Awaited<ReturnType<typeof sippFigures>>>();
  for (const s of SERVERS) {
    try {
      if (LOADGEN) res.set(s, await measure(s));
      if (SIPP) sipp.set(s, await sippFigures(s));
    } catch (err) {
      process.stdout.write(`${s}: ${(err as Error).message}\n`);
    }
  }
  if (res.size === 0 && sipp.size === 0) return 1;
  if (sipp.size > 0) {
    const sp = sipp.get('portier');
    const sk = sipp.get('kamailio');
    const r = (a: number | undefined, b: number | undefined): string =>
      a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? (a / b).toFixed(2) : '';
    process.stdout.write(`\nSIPp (sip-tester ${SIPP_UAC.includes('bench') ? 'with bench/sipp/uac.xml and uas.xml' : ''}) as the generator:\n\n`);
    process.stdout.write(`| figure (SIPp) | Portier | Kamailio | Portier / Kamailio |\n|---|---:|---:|---:|\n`);
    const show = (x: { max: number; genBound: boolean } | undefined): string => (x === undefined ? '' : `${fmt(x.max)}${x.genBound ? ' (gen-bound)' : ''}`);
    process.stdout.write(`| highest sustained calls/s (< 0.1% failed, p99 < 50 ms) | ${show(sp)} | ${show(sk)} | ${r(sp?.max, sk?.max)} (higher is better) |\n`);
    process.stdout.write(`| CPU µs per call at 1,000 calls/s | ${fmt(sp?.fixed.serverCpuUs ?? NaN)} | ${fmt(sk?.fixed.serverCpuUs ?? NaN)} | ${r(sp?.fixed.serverCpuUs, sk?.fixed.serverCpuUs)} (lower is better) |\n`);
    process.stdout.write(`| setup p99 at 1,000 calls/s, ms (1 ms resolution) | ${fmt(sp?.fixed.p99 ?? NaN)} | ${fmt(sk?.fixed.p99 ?? NaN)} | ${r(sp?.fixed.p99, sk?.fixed.p99)} (lower is better) |\n`);
    for (const [s, f] of sipp) {
      process.stdout.write(`\nSIPp step search, ${s}:\n`);
      for (const l of f.steps) process.stdout.write(`  ${l}\n`);
    }
  }
  if (res.size === 0) {
    process.stdout.write(`\ncompare done in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
    process.stdout.write(JSON.stringify({ runs: RUNS, node: process.version, pinned: PIN, sipp: Object.fromEntries(sipp) }) + '\n');
    return 0;
  }
  const p = res.get('portier');
  const k = res.get('kamailio');
  const ratio = (a: number | undefined, b: number | undefined, d = 2): string =>
    a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(d)}` : '';
  const rows: Array<[string, (f: Figures) => string, (f: Figures) => number, string]> = [
    ['highest sustained calls/s (< 0.1% failed, p99 < 50 ms)', (f) => `${fmt(f.maxCalls)}${f.maxCallsGenBound ? ' (gen-bound)' : ''}`, (f) => f.maxCalls, 'higher is better'],
    [`REGISTER/s (${fmt(BINDINGS)} new AORs, 200 in flight)`, (f) => `${fmt(f.regPerS)}${f.regGenPct >= 85 ? ' (gen-bound)' : ''}`, (f) => f.regPerS, 'higher is better'],
    ['CPU µs per call at 1,000 calls/s', (f) => fmt(f.callCpuUs), (f) => f.callCpuUs, 'lower is better'],
    ['CPU µs per REGISTER at 5,000/s', (f) => fmt(f.regCpuUs, 1), (f) => f.regCpuUs, 'lower is better'],
    ['setup p99 at 1,000 calls/s, ms', (f) => fmt(f.callP99, 2), (f) => f.callP99, 'lower is better'],
    ['REGISTER p99 at 5,000/s, ms', (f) => fmt(f.regP99, 2), (f) => f.regP99, 'lower is better'],
    ['memory per 100k bindings, MiB (PSS growth)', (f) => fmt(f.bindingsMiB, 1), (f) => f.bindingsMiB, 'lower is better'],
    [`memory in all with ${fmt(BINDINGS)} bindings, MiB (PSS)`, (f) => fmt(f.bindingsTotalMiB, 1), (f) => f.bindingsTotalMiB, 'lower is better'],
  ];
  process.stdout.write(`\n| figure | Portier | Kamailio | Portier / Kamailio |\n|---|---:|---:|---:|\n`);
  for (const [name, show, value, better] of rows) {
    process.stdout.write(`| ${name} | ${p ? show(p) : ''} | ${k ? show(k) : ''} | ${ratio(p && value(p), k && value(k))} (${better}) |\n`);
  }
  if (p !== undefined)
    process.stdout.write(`\ngenerator: ${fmt(p.callGenCpuUs)} µs of CPU per call (bench/load at 1,000 calls/s against Portier)${k ? `, ${fmt(k.callGenCpuUs)} against Kamailio` : ''}\n`);
  for (const [s, f] of res) {
    process.stdout.write(`\nstep search, ${s}:\n`);
    for (const l of f.steps) process.stdout.write(`  ${l}\n`);
  }
  process.stdout.write(`\ncompare done in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  process.stdout.write(JSON.stringify({ runs: RUNS, node: process.version, pinned: PIN, servers: Object.fromEntries(res), sipp: Object.fromEntries(sipp) }) + '\n');
  return 0;
}

main().then(
  (code) => process.stdout.write('', () => process.exit(code)),
  (err: unknown) => {
    process.stderr.write(`bench/compare: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
