// bench/store: REGISTER throughput on each location store, side by side, and
// the memory one node needs for many bindings (issue 8).
//
//   npm run build && node --expose-gc dist/bench/store.js [--registers 20000] [--runs 3] [--bindings 100000]
//
// Server: Portier runs in a child process on each store in turn; 64 UDP
// devices register N distinct AORs over loopback, then refresh them all once
// (what a city's devices do after a restart and every few minutes), one
// REGISTER in flight each. Printed: REGISTER/s and Portier's CPU time per
// REGISTER (from /proc). Budgets (exit 1 when missed): SQLite >= 90% and
// Redis >= 50% of the memory store's REGISTER/s.
// Registrar alone (informative): the same REGISTERs, pre-parsed, straight
// into Registrar.register() in this process: the store's own cost, with no
// parsing, transactions or sockets around it.
// Memory: 100,000 bindings in one process must stay under 200 MB RSS.
// Figures are medians of the runs, stores interleaved. Redis runs against a
// redis-server started on a free loopback port (skipped when none is installed).

import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openStore } from '../src/storage/index.js';
import { Registrar } from '../src/registrar/index.js';
import { parseAndValidate, SipParseError, type SipMessage } from '../src/sip/index.js';
import type { StorageConfig } from '../src/config/types.js';
import type { Source } from '../src/transport/types.js';
import { cpuMs, freeUdpPort, startPortier, stopPortier, waitReady } from './portier-process.js';

const { values } = parseArgs({
  options: {
    registers: { type: 'string', default: '20000' },
    runs: { type: 'string', default: '3' },
    bindings: { type: 'string', default: '100000' },
    'rss-only': { type: 'boolean', default: false },
  },
});
const N = Math.max(100, Number(values.registers));
const RUNS = Math.max(1, Number(values.runs));
const BINDINGS = Math.max(1000, Number(values.bindings));
const IN_FLIGHT = 64;
const DOMAIN = 'city.example';

function register(i: number, cseq: number): SipMessage {
  const text = [
    `REGISTER sip:${DOMAIN} SIP/2.0`,
    `Via: SIP/2.0/UDP 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:5060;branch=z9hG4bK-b${i}-${cseq};rport`,
    'Max-Forwards: 70',
    `From: <sip:u${i}@${DOMAIN}>;tag=t${i}`,
    `To: <sip:u${i}@${DOMAIN}>`,
    `Call-ID: reg-${i}`,
    `CSeq: ${cseq} REGISTER`,
    `Contact: <sip:u${i}@10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:5060;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}>";reg-id=1`,
    'Expires: 600',
    'User-Agent: LinphoneAndroid/5.2.5 (bench) LinphoneSDK/5.3.0',
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  const m = parseAndValidate(Buffer.from(text, 'latin1'), { transport: 'udp' });
  if (m instanceof SipParseError) throw new Error(m.reason);
  return m;
}

// One local endpoint shared by every Source, as the UDP listener does.
const LOCAL = Object.freeze({ protocol: 'udp', address: '127.0.0.1', port: 5060 } as const);

function source(i: number): Source {
  return { protocol: 'udp', address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 5060, family: 4, connectionId: 0, local: LOCAL };
}

async function drive(registrar: Registrar, msgs: SipMessage[]): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < msgs.length) {
      const i = next++;
      const r = await registrar.register(msgs[i], source(i));
      if (r.status !== 200) throw new Error(`REGISTER ${i}: ${r.status}`);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

function storageConfig(type: StorageConfig['type'], dir: string, redisPort: number, run: number): StorageConfig {
  return { type, path: join(dir, `run${run}.db`), flushInterval: 50, url: `redis://127.0.0.1:${redisPort}`, prefix: `bench${run}:`, nodeAddress: null };
}

/** REGISTERs per second: N new bindings, then N refreshes. */
async function measure(type: StorageConfig['type'], dir: string, redisPort: number, run: number): Promise<number> {
  const { store } = await openStore(storageConfig(type, dir, redisPort, run));
  const registrar = new Registrar({ domains: [DOMAIN], sweepIntervalMs: 0, maxBindingsPerAor: 10 }, { store });
  const first = Array.from({ length: N }, (_, i) => register(i, 1));
  const second = Array.from({ length: N }, (_, i) => register(i, 2));
  const t0 = performance.now();
  await drive(registrar, first);
  await drive(registrar, second);
  const ms = performance.now() - t0;
  await registrar.close();
  await store.close();
  return (2 * N * 1000) / ms;
}

/** Through a Portier process over UDP: REGISTER/s and Portier CPU µs per REGISTER. */
async function measureServer(type: StorageConfig['type'], dir: string, redisPort: number, run: number): Promise<{ rate: number; cpu: number }> {
  const port = await freeUdpPort();
  const config = join(dir, `server-${type}-${run}.yaml`);
  writeFileSync(
    config,
    [
      `domains: [${DOMAIN}]`,
      `listen: [udp:127.0.0.1:${port}]`,
      'log: {level: warn}',
      'registrar: {max-bindings: 10}',
      // Every simulated device sends from this one address: a load generator is what security.exempt is for.
      'security: {exempt: [127.0.0.1]}',
      `storage: {type: ${type}, path: ${JSON.stringify(join(dir, `server-${run}.db`))}, url: "redis://127.0.0.1:${redisPort}", prefix: "srv${run}:"}`,
      '',
    ].join('\n'),
  );
  const p = startPortier(config);
  try {
    await waitReady(p, port, 10_000, DOMAIN);
    const socks = await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        const s = dgram.createSocket('udp4');
        await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
        return s;
      }),
    );
    const cpu0 = cpuMs(p.pid);
    const t0 = performance.now();
    for (const cseq of [1, 2]) {
      let next = 0;
      await Promise.all(
        socks.map(async (s) => {
          const lp = s.address().port;
          while (next < N) {
            const i = next++;
            const text =
              `REGISTER sip:${DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${lp};branch=z9hG4bK-s${run}-${i}-${cseq};rport\r\nMax-Forwards: 70\r\n` +
              `From: <sip:u${i}@${DOMAIN}>;tag=t${i}\r\nTo: <sip:u${i}@${DOMAIN}>\r\nCall-ID: reg-${run}-${i}\r\nCSeq: ${cseq} REGISTER\r\n` +
              `Contact: <sip:u${i}@127.0.0.1:${lp};transport=udp>;+sip.instance="<urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}>";reg-id=1\r\n` +
              'Expires: 600\r\nUser-Agent: LinphoneAndroid/5.2.5 (bench) LinphoneSDK/5.3.0\r\nContent-Length: 0\r\n\r\n';
            const answered = new Promise<string>((resolve, reject) => {
              const timer = setTimeout(() => reject(new Error(`no answer to REGISTER ${i} from Portier on ${type}`)), 5000);
              s.once('message', (b: Buffer) => {
                clearTimeout(timer);
                resolve(b.toString('latin1', 0, 12));
              });
            });
            s.send(text, port, '127.0.0.1');
            const status = await answered;
            if (status !== 'SIP/2.0 200 ') throw new Error(`REGISTER ${i}: ${status}`);
          }
        }),
      );
    }
    const ms = performance.now() - t0;
    const cpu = cpuMs(p.pid) - cpu0;
    for (const s of socks) s.close();
    return { rate: (2 * N * 1000) / ms, cpu: (cpu * 1000) / (2 * N) };
  } finally {
    await stopPortier(p);
  }
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[s.length >> 1];
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function startRedis(): Promise<{ port: number; proc: ChildProcess } | null> {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const ok = await new Promise<boolean>((resolve) => {
    proc.once('error', () => resolve(false));
    const deadline = Date.now() + 5000;
    const probe = () => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => (Date.now() > deadline ? resolve(false) : setTimeout(probe, 50)));
    };
    probe();
  });
  return ok ? { port, proc } : null;
}

async function rssWithBindings(): Promise<number> {
  const { store } = await openStore({ type: 'memory', path: '', flushInterval: 50, url: '', prefix: '', nodeAddress: null });
  const registrar = new Registrar({ domains: [DOMAIN], sweepIntervalMs: 0 }, { store });
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage().rss;
  // Messages are made as they are sent, as a real node receives them: no
  // batch of parsed REGISTERs inflates the figure.
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < BINDINGS) {
        const i = next++;
        await registrar.register(register(i, 1), source(i));
      }
    }),
  );
  // A node at rest: V8 hands freed pages back after a few idle seconds.
  await new Promise((r) => setTimeout(r, 5000));
  gc?.();
  await new Promise((r) => setTimeout(r, 1000));
  const counts = await registrar.bindingCounts();
  if (counts.bindings !== BINDINGS) throw new Error(`expected ${BINDINGS} bindings, have ${counts.bindings}`);
  const rss = process.memoryUsage().rss;
  console.log(`memory            heap used ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB after GC`);
  console.log(`memory            ${BINDINGS} bindings: RSS ${(rss / 1e6).toFixed(0)} MB (process total; ${((rss - before) / BINDINGS).toFixed(0)} B per binding over the start)`);
  await registrar.close();
  return rss;
}

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'portier-bench-store-'));
  const redis = await startRedis();
  console.log(`portier store bench: ${N} new + ${N} refreshed REGISTERs per run, ${IN_FLIGHT} in flight, ${RUNS} runs, median`);
  let failed = false;
  try {
    const types: Array<StorageConfig['type']> = ['memory', 'sqlite', ...(redis ? (['redis'] as const) : [])];
    const server: Record<string, Array<{ rate: number; cpu: number }>> = {};
    const alone: Record<string, number[]> = {};
    for (let run = 0; run < RUNS; run++) {
      // Interleaved, so that machine noise falls on every store alike.
      for (const type of types) (server[type] ??= []).push(await measureServer(type, dir, redis?.port ?? 0, run));
      for (const type of types) (alone[type] ??= []).push(await measure(type, dir, redis?.port ?? 0, run));
    }
    console.log('server (UDP, Portier in its own process):');
    const memRate = median(server.memory.map((r) => r.rate));
    for (const type of types) {
      const rate = median(server[type].map((r) => r.rate));
      const cpu = median(server[type].map((r) => r.cpu));
      const ratio = rate / memRate;
      const budget = type === 'sqlite' ? 0.9 : type === 'redis' ? 0.5 : 0;
      const verdict = budget === 0 ? '' : ratio >= budget ? `  (>= ${budget * 100}%: ok)` : `  (below ${budget * 100}%: FAIL)`;
      if (ratio < budget) failed = true;
      console.log(
        `  ${type.padEnd(8)} ${rate.toFixed(0).padStart(7)} REGISTER/s ${(ratio * 100).toFixed(0).padStart(4)}% of memory, Portier CPU ${cpu.toFixed(1)} µs/REGISTER  runs ${server[type].map((r) => r.rate.toFixed(0)).join(', ')}${verdict}`,
      );
    }
    console.log('registrar alone (in process, informative):');
    const memAlone = median(alone.memory);
    for (const type of types) {
      const m = median(alone[type]);
      console.log(`  ${type.padEnd(8)} ${m.toFixed(0).padStart(7)} REGISTER/s ${((m / memAlone) * 100).toFixed(0).padStart(4)}% of memory  runs ${alone[type].map((r) => r.toFixed(0)).join(', ')}`);
    }
    if (!redis) console.log('redis             skipped: no redis-server on PATH');
    // In a fresh process: the runs above leave the heap grown.
    const rss = await new Promise<number>((resolve, reject) => {
      const child = spawn(process.execPath, [...process.execArgv, process.argv[1], '--rss-only', '--bindings', String(BINDINGS)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.once('exit', (code) => {
        process.stdout.write(out.replace(/^rss \d+\n/m, ''));
        const m = /^rss (\d+)$/m.exec(out);
        if (code === 0 && m) resolve(Number(m[1]));
        else reject(new Error(`the RSS run failed (status ${code})`));
      });
    });
    if (rss >= 200e6) {
      console.log('memory            over the 200 MB budget: FAIL');
      failed = true;
    }
  } finally {
    redis?.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`result            ${failed ? 'FAIL' : 'PASS'}`);
  return failed ? 1 : 0;
}

const entry = values['rss-only'] ? rssWithBindings().then((rss) => (console.log(`rss ${rss}`), 0)) : main();
entry.then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
