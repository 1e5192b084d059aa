// bench/load: Portier under call load, end to end over UDP on 127.0.0.1.
//
//   npm run build && npm run bench:load [-- --calls 10000 --rate 500 --phones 500 --doors 50 --hold 0-100]
//
// A load generator of the project's own, not a timed test. It writes a
// temporary configuration, starts Portier as a separate process
// (dist/src/cli/main.js) on a free UDP port, waits until it answers
// OPTIONS, then plays every user agent itself over real sockets, one UDP
// socket per UA (receive buffer 4 MiB, or what the OS allows):
//
//   registration  every phone and door station REGISTERs (expires 3600);
//                 by default each phone is its own address-of-record
//                 phone-N@example.test (--devices 2: two phones per AOR,
//                 so that every call is forked to both)
//   calls         the doors call the AORs round-robin at a fixed rate
//                 (default 500 calls/s, 10,000 calls), each INVITE with an
//                 SDP body like the baresip door's in test/fixtures/traces.
//                 A phone answers 180 then 200 (SDP, Contact, the request's
//                 Via/From/To/Call-ID/CSeq/Record-Route, a To tag). The door
//                 ACKs the 200 (to the phone's Contact, along the reversed
//                 Record-Route, i.e. through Portier), holds the call
//                 0-100 ms, sends BYE; the phone answers it 200.
//                 Forked calls: a device that gets CANCEL answers 200 and
//                 487 (and waits for the ACK); a second 2xx is ACKed and
//                 BYEd by the door (RFC 3261 §13.2.2.4).
//
// Over UDP the UAs retransmit as RFC 3261 says: INVITE on Timer A (T1,
// doubling) until a provisional, BYE and REGISTER on Timer E (T1 doubling
// to T2), the phone's 2xx until its ACK (§13.3.1.4), 487 until its ACK
// (Timer G); a retransmitted request is answered with the last response
// again. Retransmissions are counted on both sides (what the generator
// sent again, and duplicates it received). A call succeeds when the door
// got the 200 to its INVITE and to its BYE and every device the call
// reached got its ACK (and the BYE, or CANCEL); it fails on any error
// response or when a step does not complete within 64*T1 = 32 s.
//
// Printed: registrations/s; calls attempted, completed, failed; offered and
// achieved calls/s; setup latency (first INVITE sent -> first 200 received)
// p50/p90/p99/max; retransmissions; Portier's CPU time (utime + stime from
// /proc/PID/stat over the call phase) per call and its RSS; the
// generator's own CPU. Exit status 1 when any call failed, any
// registration failed, or the run hit its global timeout (--timeout,
// default 170 s: the whole run ends within ~3 minutes even if Portier
// hangs). Failed calls are written, message by message, to --trace-file.
//
// Also (issue 10): --scenario register (REGISTERs only, open loop at --rate
// or closed loop with --window, optional SHA-256/MD5 digest answered with
// node:crypto here, nonce reused with nc+1 or challenged every time),
// --warmup N (operations left out of the figures), --metrics (the
// portier_proxy_processing_seconds histogram of the measured phase), --gc
// (Portier's GC pauses from --trace-gc), --settle S (memory once the
// transactions are gone), --server-cpu N (taskset), and --target H:P
// --server-pid PID to load another server on loopback (bench/compare:
// Kamailio), whose CPU and PSS are summed over its processes. A progress
// line per second goes to stderr; the last line on stdout is one JSON
// object with every figure (bench/budget and bench/compare read it).
//
// The generator parses what it receives with its own reader, bench/wire.ts
// (written from RFC 3261, nothing from src/): a bug in Portier's parser or
// serializer cannot hide itself by being read back with the same code
// (issue 10). The digest it computes does not use src/ either.

import dgram from 'node:dgram';
import net from 'node:net';
import { execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { readWire, type WireMessage } from './wire.js';
import { freeUdpPort, memory, processTree, startPortier, stopPortier, treeCpuMs, treeMemory, waitReady, type Portier } from './portier-process.js';

// ---------------------------------------------------------------- options

const USAGE = `Usage: node dist/bench/load.js [options]
  --calls N         calls to make (default 10000)
  --rate R          calls per second, paced (default 500)
  --phones P        phones that register and answer (default 500)
  --doors D         door stations that register and call (default 50)
  --devices K       phones per address-of-record: K > 1 forks every call (default 1)
  --hold MS|A-B     how long a door holds an answered call before BYE, uniform (default 0-100)
  --answer MS|A-B   how long a phone rings before it answers, uniform (default 0)
  --t1 MS           T1 of Portier and of the UAs (default 500; 64*T1 is the step deadline)
  --timeout S       global bound of the whole run, seconds (default 170)
  --node-args ARGS  extra node options for the Portier process, space-separated
                    (with =, e.g. --node-args=--max-old-space-size=128)
  --seed N          seed of the hold/answer randomness (default 1)
  --trace-file F    where failed calls are written message by message
                    (default: $TMPDIR/portier-load-failures-PID.txt, only when some fail)
  --max-traces N    failed calls written to it (default 20)
  --metrics         serve metrics (metrics.listen on a free loopback port) and
                    scrape /metrics every second during the calls (from a
                    worker thread); the
                    portier_proxy_processing_seconds histogram of the call
                    phase is printed (time inside Portier per request)
  --gc              run Portier with --trace-gc and print its GC pauses
                    during the measured phase (count, total, p50/p99/max)
  --store S         Portier's location store: sqlite (default), memory, or
                    redis (a redis-server of its own on a free loopback port,
                    counted in the server's CPU and memory)
  --workers N       Portier's config \`workers\`: N processes on the same
                    sockets (N > 1 needs --store redis); the server's CPU and
                    memory are the primary's and every worker's (default 1)
  --overload M      on (default, Portier's default) or off: Portier's overload
                    control (503 to new requests while its loop is saturated)
  --settle S        after the measured phase, wait S seconds (transactions
                    expire: 64*T1) and measure the server's memory again:
                    what the bindings themselves hold (default 0)
  --server-cpu N    pin Portier (every thread) to CPU N once started
                    (taskset); run the generator itself under taskset -c M
  --warmup N        the first N calls (or REGISTERs) warm the server up (JIT):
                    they must succeed but are left out of the latency
                    percentiles, the CPU time, the GC pauses and the
                    processing histogram (default 0)
  --warmup-rate R   send those N at R calls (or REGISTERs) per second, then
                    the rest at --rate: a fresh server is warmed at a rate it
                    can take cold (default: --rate)

 Register scenario (--scenario register): no calls; REGISTERs only
  --scenario S      call (default) or register
  --registers N     REGISTER requests to complete (default 20000)
  --aors N          distinct addresses-of-record reg-0..reg-N-1 (default: as
                    many as --registers; fewer: the same AORs refreshed, one
                    REGISTER per AOR in flight at most)
  --sockets N       UDP sockets the AORs are spread over (default 64)
  --window N        closed loop: N REGISTERs in flight (the highest rate);
                    without it, open loop at --rate (default 500/s)
  --digest A        off (default), sha256 or md5: Portier with auth on and a
                    users file of the AORs (HA1s written here); a 401 is
                    answered with credentials for its nonce
  --nonce M         reuse (default): later REGISTERs of an AOR send
                    credentials for the last nonce with nc+1, as Linphone
                    does, and only the first one is challenged; fresh: every
                    REGISTER goes unauthenticated first and is challenged

 Another server (bench/compare: Kamailio) instead of Portier
  --target H:P      send to this UDP server, on loopback only; Portier is not
                    started (--digest and --metrics need Portier)
  --server-pid PID  with --target: whose CPU time and memory (with its child
                    processes) are measured

Output: a progress line per second (stderr), the report, then one JSON line.`;

function options() {
  return parseArgs({
  options: {
    calls: { type: 'string', default: '10000' },
    rate: { type: 'string', default: '500' },
    phones: { type: 'string', default: '500' },
    doors: { type: 'string', default: '50' },
    devices: { type: 'string', default: '1' },
    hold: { type: 'string', default: '0-100' },
    answer: { type: 'string', default: '0' },
    t1: { type: 'string', default: '500' },
    timeout: { type: 'string', default: '170' },
    seed: { type: 'string', default: '1' },
    'node-args': { type: 'string', default: '' },
    'trace-file': { type: 'string' },
    'max-traces': { type: 'string', default: '20' },
    metrics: { type: 'boolean', default: false },
    gc: { type: 'boolean', default: false },
    store: { type: 'string', default: 'sqlite' },
    workers: { type: 'string', default: '1' },
    overload: { type: 'string', default: 'on' },
    warmup: { type: 'string', default: '0' },
    'warmup-rate': { type: 'string' },
    'server-cpu': { type: 'string' },
    settle: { type: 'string', default: '0' },
    scenario: { type: 'string', default: 'call' },
    registers: { type: 'string', default: '20000' },
    aors: { type: 'string' },
    sockets: { type: 'string', default: '64' },
    window: { type: 'string' },
    digest: { type: 'string', default: 'off' },
    nonce: { type: 'string', default: 'reuse' },
    target: { type: 'string' },
    'server-pid': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  });
}
let parsed: ReturnType<typeof options>;
try {
  parsed = options();
} catch (err) {
  process.stderr.write(`bench/load: ${(err as Error).message.split('\n')[0]}\n${USAGE}\n`);
  process.exit(2);
}
const opt = parsed.values;
if (opt.help) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}

// The generator measures latency on its own event loop, so its own
// collections are part of every figure it reports, for any server. Its live
// set is the calls in flight (a few hundred KB), all short-lived: with V8's
// default young generation (up to 16 MB per semi-space, reached gradually)
// it collected every ~0.5 s at 1,000 calls/s, promoted ~0.8 MB each time and
// ran a full collection every ~1.5 s. Kamailio's setup p99 under it was
// 7.2-7.9 ms (three runs); with a fixed 64 MB young generation, 3.0-3.9 ms.
// So bench/load runs itself again with one, whatever command started it.
const GENERATOR_HEAP = ['--min-semi-space-size=64', '--max-semi-space-size=64'];
if (process.env.PORTIER_LOAD_GENERATOR !== '1') {
  const child = spawn(process.execPath, [...GENERATOR_HEAP, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, PORTIER_LOAD_GENERATOR: '1' },
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
  const code = await new Promise<number>((resolve) => child.once('close', (c, sig) => resolve(c ?? 128 + (sig === null ? 0 : (constants.signals[sig] ?? 0)))));
  process.exit(code);
}

function usage(msg: string): never {
  process.stderr.write(`bench/load: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function int(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer in ${min}..${max}, not ${v}`);
  return n;
}

function range(name: string, v: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(v);
  if (m === null) usage(`--${name} must be MS or MIN-MAX, not ${v}`);
  const a = Number(m[1]);
  const b = m[2] === undefined ? a : Number(m[2]);
  if (b < a) usage(`--${name}: MAX below MIN`);
  return [a, b];
}

const CALLS = int('calls', opt.calls, 1, 10_000_000);
const RATE = Number(opt.rate);
if (!(RATE > 0) || RATE > 100_000) usage(`--rate must be a number in (0, 100000], not ${opt.rate}`);
const PHONES = int('phones', opt.phones, 1, 20_000);
const DOORS = int('doors', opt.doors, 1, 20_000);
const DEVICES = int('devices', opt.devices, 1, 16);
if (PHONES % DEVICES !== 0) usage('--phones must be a multiple of --devices');
const AORS = PHONES / DEVICES;
const HOLD = range('hold', opt.hold);
const ANSWER = range('answer', opt.answer);
const T1 = int('t1', opt.t1, 10, 5000);
const T2 = Math.max(4000, T1);
const STEP_MS = 64 * T1; // Timer B / F / H: a step that takes longer fails
const TIMEOUT_MS = int('timeout', opt.timeout, 10, 3600) * 1000;
const MAX_TRACES = int('max-traces', opt['max-traces'], 0, 10_000);
const METRICS = opt.metrics;
const TRACE_FILE = opt['trace-file'] ?? join(tmpdir(), `portier-load-failures-${process.pid}.txt`);
const NODE_ARGS = opt['node-args'].split(' ').filter((a) => a !== '');
const RECV_BUFFER = 4 * 1024 * 1024;
const DOMAIN = 'example.test';
const HOST = '127.0.0.1';
const GC = opt.gc;
const WARMUP = int('warmup', opt.warmup, 0, 10_000_000);
const WARMUP_RATE = opt['warmup-rate'] === undefined ? RATE : Number(opt['warmup-rate']);
if (!(WARMUP_RATE > 0) || WARMUP_RATE > 100_000) usage(`--warmup-rate must be a number in (0, 100000], not ${opt['warmup-rate']}`);
/** How long the warm-up takes at WARMUP_RATE. */
const WARMUP_MS = (WARMUP * 1000) / WARMUP_RATE;
/** Operations due `ms` after the first was sent: the warm-up at WARMUP_RATE, then RATE. */
function dueAt(ms: number): number {
  if (ms < WARMUP_MS) return Math.min(WARMUP, Math.floor((ms * WARMUP_RATE) / 1000) + 1);
  return WARMUP + Math.floor(((ms - WARMUP_MS) * RATE) / 1000) + 1;
}
const SETTLE_MS = int('settle', opt.settle, 0, 600) * 1000;
const SERVER_CPU = opt['server-cpu'] === undefined ? -1 : int('server-cpu', opt['server-cpu'], 0, 1023);
const STORE = opt.store;
if (STORE !== 'sqlite' && STORE !== 'memory' && STORE !== 'redis') usage(`--store must be sqlite, memory or redis, not ${STORE}`);
const WORKERS = int('workers', opt.workers, 1, 64);
if (WORKERS > 1 && STORE !== 'redis') usage('--workers above 1 needs --store redis');
const OVERLOAD = opt.overload;
if (OVERLOAD !== 'on' && OVERLOAD !== 'off') usage(`--overload must be on or off, not ${OVERLOAD}`);
const SCENARIO = opt.scenario;
if (SCENARIO !== 'call' && SCENARIO !== 'register') usage(`--scenario must be call or register, not ${SCENARIO}`);
const REGISTERS = int('registers', opt.registers, 1, 10_000_000);
const REG_AORS = opt.aors === undefined ? REGISTERS : int('aors', opt.aors, 1, 10_000_000);
const SOCKETS = int('sockets', opt.sockets, 1, 20_000);
const WINDOW = opt.window === undefined ? 0 : int('window', opt.window, 1, 100_000);
const DIGEST = opt.digest;
if (DIGEST !== 'off' && DIGEST !== 'sha256' && DIGEST !== 'md5') usage(`--digest must be off, sha256 or md5, not ${DIGEST}`);
const DIGEST_ALG = DIGEST === 'md5' ? 'MD5' : 'SHA-256';
const NONCE = opt.nonce;
if (NONCE !== 'reuse' && NONCE !== 'fresh') usage(`--nonce must be reuse or fresh, not ${NONCE}`);
let TARGET: { host: string; port: number } | null = null;
if (opt.target !== undefined) {
  const m = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}):(\d{1,5})$/.exec(opt.target);
  // Load goes to this machine only.
  if (m === null || net.isIPv4(m[1]) === false) usage(`--target must be 127.x.y.z:PORT (loopback only), not ${opt.target}`);
  TARGET = { host: m[1], port: int('target', m[2], 1, 65535) };
  if (DIGEST !== 'off') usage('--digest needs Portier (not --target)');
  if (METRICS) usage('--metrics needs Portier (not --target)');
  if (GC) usage('--gc needs Portier (not --target)');
}
if (WARMUP >= (SCENARIO === 'call' ? CALLS : REGISTERS)) usage('--warmup must be below --calls (--registers)');
if (WINDOW > REG_AORS) usage('--window must not exceed --aors (one REGISTER per AOR in flight)');
const SERVER_PID = opt['server-pid'] === undefined ? 0 : int('server-pid', opt['server-pid'], 1, 2 ** 31);
if (SERVER_PID !== 0 && TARGET === null) usage('--server-pid goes with --target');
/** The server's host: Portier's on HOST, or --target's. */
const SERVER_HOST = TARGET?.host ?? HOST;

/** --store redis: the redis-server this run started, and its port. */
let redis: ReturnType<typeof spawn> | null = null;
let redisPort = 0;

/** Resolves once something accepts TCP connections on HOST:port (a redis-server starting). */
async function waitTcp(port: number, ms: number): Promise<void> {
  const until = performance.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: HOST, port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (performance.now() > until) throw new Error(`nothing listens on ${HOST}:${port} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A TCP port free on HOST now (bound to 0, read, released), for metrics.listen. */
async function freeTcpPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, HOST, resolve);
  });
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

// mulberry32: reproducible hold and answer times.
let seed = int('seed', opt.seed, 0, 2 ** 31) >>> 0;
function random(): number {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (r: [number, number]): number => (r[0] === r[1] ? r[0] : r[0] + random() * (r[1] - r[0]));


const now = (): number => performance.now();
const RUN = Math.floor(Math.random() * 0xffffff).toString(16); // keeps Call-IDs and branches of two runs apart

// ---------------------------------------------------------------- counters

const stats = {
  tx: 0,
  rx: 0,
  // Retransmissions the generator sent, by kind.
  rtx: { invite: 0, bye: 0, register: 0, ok2xx: 0, err487: 0, ackAgain: 0, responseAgain: 0 } as Record<string, number>,
  // Duplicates the generator received (Portier's retransmissions, or ours relayed).
  dup: { invite: 0, bye: 0, ack: 0, ok2xxInvite: 0, ok2xxBye: 0, cancel: 0 } as Record<string, number>,
  unparseable: 0,
  stray: 0,
  socketErrors: 0,
  misrouted: 0,
  byeBeforeAck: 0,
  extraDialogs: 0,
  cancelled: 0,
  cancelAfterAnswer: 0,
  /** Registrations refused with 503 and Retry-After, sent again. */
  registerRetries: 0,
};

// ---------------------------------------------------------------- user agents

interface Ua {
  door: boolean;
  index: number;
  /** Address-of-record user: door-N or phone-N. */
  aorUser: string;
  aor: number;
  /** Contact user part: one per device. */
  user: string;
  sock: dgram.Socket;
  port: number;
  uri: string;
  legs: Map<string, Leg>;
  reg: Registration | null;
}

interface Registration {
  buf: Buffer;
  callId: string;
  t0: number;
  timer: NodeJS.Timeout | null;
  interval: number;
  /** REGISTERs sent after a 503 with Retry-After. */
  attempt: number;
  /** Sends the REGISTER again as a new transaction. */
  again: () => void;
  done: (err: Error | null) => void;
}

/** A registration refused with 503 is sent again after its Retry-After (a cold server may shed load), this many times at most. */
const MAX_REGISTER_RETRIES = 5;

/** A door's view of one dialog the call created (one per answering device). */
interface Dialog {
  toTag: string;
  ack: Buffer;
  bye: Buffer | null;
  byeT0: number;
  byeTimer: NodeJS.Timeout | null;
  byeInterval: number;
  byeDone: boolean;
}

/** A phone's view of one INVITE it received. */
interface Leg {
  ph: Ua;
  call: Call | undefined;
  toTag: string;
  /** Via...CSeq of the INVITE's responses, To tag included. */
  head: string;
  recordRoute: string;
  last: Buffer | null;
  final: number;
  timer: NodeJS.Timeout | null;
  answerTimer: NodeJS.Timeout | null;
  interval: number;
  tFinal: number;
  acked: boolean;
  bye: boolean;
  cancel: boolean;
  done: boolean;
}

const enum State {
  Inviting,
  Answered,
  Done,
  Failed,
}

interface Call {
  i: number;
  callId: string;
  door: Ua;
  aor: number;
  fromTag: string;
  invite: Buffer;
  t0: number;
  timerA: NodeJS.Timeout | null;
  intervalA: number;
  provisional: boolean;
  status: number;
  nonAck: Buffer | null;
  dialogs: Dialog[];
  dialogsOpen: number;
  legs: Leg[];
  legsOpen: number;
  state: State;
  deadline: number;
  holdTimer: NodeJS.Timeout | null;
  /** Messages sent and received, for the trace of a failed call; dropped when the call completes. */
  trace: Array<[number, string, Buffer]> | null;
  reason: string;
}

const doors: Ua[] = [];
const phones: Ua[] = [];
const calls = new Map<string, Call>();
const active = new Set<Call>();
const failures = new Map<string, number>();
const failedCalls: Call[] = [];
let attempted = 0;
let completed = 0;
let failed = 0;
let latencies = new Float64Array(0);
let nLatencies = 0;
let lastCompletion = 0;
let settledResolve: (() => void) | null = null;
let serverPort = 0;

let closing = false;

function send(ua: Ua, buf: Buffer, call?: Call): void {
  if (closing) return; // a timer firing after the sockets were closed
  stats.tx++;
  if (call?.trace) call.trace.push([now(), `${ua.user} ->`, buf]);
  ua.sock.send(buf);
}

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

function parse(buf: Buffer): WireMessage | null {
  const m = readWire(buf);
  if (m === null) stats.unparseable++;
  return m;
}

function onMessage(ua: Ua, buf: Buffer): void {
  stats.rx++;
  const m = parse(buf);
  if (m === null) return;
  if (m.isRequest) {
    if (ua.door) {
      stats.stray++;
      return;
    }
    switch (m.method) {
      case 'INVITE':
        return phoneInvite(ua, m, buf);
      case 'ACK':
        return phoneAck(ua, m, buf);
      case 'BYE':
        return phoneBye(ua, m, buf);
      case 'CANCEL':
        return phoneCancel(ua, m, buf);
      default:
        stats.stray++;
        send(ua, b(`SIP/2.0 405 Method Not Allowed\r\n${responseHead(m, null)}Allow: INVITE, ACK, BYE, CANCEL\r\nContent-Length: 0\r\n\r\n`));
        return;
    }
  }
  const method = m.cseqMethod;
  if (method === 'REGISTER') return SCENARIO === 'register' ? onRegScenarioResponse(ua, m) : onRegisterResponse(ua, m);
  const call = calls.get(m.callId);
  if (call === undefined || call.door !== ua) {
    stats.stray++;
    return;
  }
  if (call.trace) call.trace.push([now(), `${ua.user} <-`, buf]);
  if (method === 'INVITE') onInviteResponse(call, m);
  else if (method === 'BYE') onByeResponse(call, m);
  else stats.stray++;
}

async function createUa(door: boolean, index: number): Promise<Ua> {
  const aor = door ? index : Math.floor(index / DEVICES);
  const aorUser = door ? `door-${index}` : `phone-${aor}`;
  const user = door ? aorUser : DEVICES === 1 ? aorUser : `${aorUser}.${index % DEVICES}`;
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: RECV_BUFFER });
  const ua: Ua = { door, index, aorUser, aor, user, sock, port: 0, uri: '', legs: new Map(), reg: null };
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, HOST, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  ua.port = sock.address().port;
  ua.uri = `sip:${user}@${HOST}:${ua.port}`;
  // Every message of this UA goes to or comes from Portier: a connected
  // socket sends without a lookup per datagram.
  await new Promise<void>((resolve) => sock.connect(serverPort, SERVER_HOST, resolve));
  sock.on('error', () => {
    stats.socketErrors++;
  });
  sock.on('message', (msg) => onMessage(ua, msg));
  return ua;
}

/** Via...CSeq of a response to `m`, with a To tag added when given and absent. */
function responseHead(m: WireMessage, toTag: string | null): string {
  let s = '';
  for (const v of m.vias()) s += 'Via: ' + v + '\r\n';
  s += 'From: ' + m.from + '\r\n';
  s += 'To: ' + (toTag !== null && m.toTag === null ? `${m.to};tag=${toTag}` : m.to) + '\r\n';
  s += 'Call-ID: ' + m.callId + '\r\nCSeq: ' + m.get('cseq') + '\r\n';
  return s;
}

// ---------------------------------------------------------------- registration

function registerBytes(ua: Ua, callId: string, attempt: number): Buffer {
  // A REGISTER sent again after a 503 is a new transaction: new branch, CSeq one up (§10.2.4).
  return b(
    `REGISTER sip:${DOMAIN} SIP/2.0\r\n` +
      `Via: SIP/2.0/UDP ${HOST}:${ua.port};branch=z9hG4bK${RUN}r${ua.door ? 'd' : 'p'}${ua.index}x${attempt};rport\r\n` +
      'Max-Forwards: 70\r\n' +
      `From: <sip:${ua.aorUser}@${DOMAIN}>;tag=r${RUN}${ua.index}\r\n` +
      `To: <sip:${ua.aorUser}@${DOMAIN}>\r\n` +
      `Call-ID: ${callId}\r\n` +
      `CSeq: ${attempt + 1} REGISTER\r\n` +
      `Contact: <${ua.uri}>;expires=3600\r\n` +
      'Expires: 3600\r\n' +
      'User-Agent: portier-bench-load\r\n' +
      'Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n' +
      'Content-Length: 0\r\n\r\n',
  );
}

function register(ua: Ua): Promise<void> {
  return new Promise((resolve, reject) => {
    const callId = `reg-${RUN}-${ua.user}@${HOST}`;
    const reg: Registration = {
      buf: registerBytes(ua, callId, 0),
      callId,
      t0: now(),
      timer: null,
      interval: T1,
      attempt: 0,
      again: () => {
        reg.attempt++;
        reg.buf = registerBytes(ua, callId, reg.attempt);
        reg.t0 = now();
        reg.interval = T1;
        send(ua, reg.buf);
        reg.timer = setTimeout(retransmit, reg.interval);
      },
      done: (err) => {
        if (reg.timer) clearTimeout(reg.timer);
        ua.reg = null;
        if (err) reject(err);
        else resolve();
      },
    };
    ua.reg = reg;
    const retransmit = (): void => {
      if (now() - reg.t0 >= STEP_MS) return reg.done(new Error(`REGISTER of ${ua.user}: no response within ${STEP_MS} ms`));
      stats.rtx.register++;
      send(ua, reg.buf);
      reg.interval = Math.min(reg.interval * 2, T2);
      reg.timer = setTimeout(retransmit, reg.interval);
    };
    send(ua, reg.buf);
    reg.timer = setTimeout(retransmit, reg.interval);
  });
}

function onRegisterResponse(ua: Ua, m: WireMessage): void {
  const reg = ua.reg;
  if (reg === null || m.callId !== reg.callId) {
    stats.stray++;
    return;
  }
  if (m.status < 200) return;
  if (m.cseq !== reg.attempt + 1) return; // a late answer to an earlier attempt
  const retryAfter = m.status === 503 ? Number.parseInt(m.get('retry-after') ?? '', 10) : NaN;
  if (retryAfter >= 0 && reg.attempt < MAX_REGISTER_RETRIES) {
    // §21.5.4: unavailable for now; a UA tries again after Retry-After.
    stats.registerRetries++;
    if (reg.timer) clearTimeout(reg.timer);
    reg.timer = setTimeout(reg.again, Math.min(retryAfter, 30) * 1000);
    return;
  }
  if (m.status >= 300) return reg.done(new Error(`REGISTER of ${ua.user}: ${m.status} ${m.reason}`));
  const bound = (m.contactUris() ?? []).includes(ua.uri);
  if (!bound) return reg.done(new Error(`REGISTER of ${ua.user}: 200 without the Contact ${ua.uri}`));
  reg.done(null);
}

async function registerAll(uas: Ua[], window: number): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < uas.length) await register(uas[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(window, uas.length) }, worker));
}

// ---------------------------------------------------------------- register scenario
//
// REGISTERs only, spread over --aors AORs reg-0..reg-N-1 on --sockets
// sockets: open loop at --rate, or closed loop with --window in flight. One
// Call-ID per AOR and CSeq + 1 per request, as a phone refreshing its
// registration. With --digest, a 401 is answered once with credentials
// (RFC 8760 SHA-256 or MD5, qop=auth), computed here with node:crypto;
// with --nonce reuse the next REGISTER of the AOR sends credentials for the
// same nonce with nc + 1 (no challenge). Latency: first transmission of the
// request to its 200, the challenge round trip included where there was one.

interface RegAor {
  i: number;
  user: string;
  sock: Ua;
  uri: string;
  callId: string;
  cseq: number;
  nonce: string | null;
  nc: number;
  /** HA1 of the account, computed at its first challenge. */
  ha1?: string;
  pending: RegOp | null;
}

interface RegOp {
  aor: RegAor;
  t0: number;
  tSend: number;
  buf: Buffer;
  timer: NodeJS.Timeout | null;
  interval: number;
  challenges: number;
  /** Index of the REGISTER in the run: below --warmup, not in the percentiles. */
  k: number;
}

const regAors: RegAor[] = [];
const regSockets: Ua[] = [];
const regByCallId = new Map<string, RegAor>();
const regStats = { attempted: 0, completed: 0, failed: 0, challenged: 0, cold: 0, warm: 0, stale: 0 };
let regLatCold = new Float64Array(0);
let regLatWarm = new Float64Array(0);
let regLastCompletion = 0;
let regSettled: (() => void) | null = null;
let regNext: (() => void) | null = null;
const PASSWORD = (i: number): string => `bench-${i}-secret`;

// One-shot hashing (Node >= 20.12) where there is one: each Hash object is
// a native object behind a weak handle, which the next scavenge has to
// process (~1 µs each): with three per REGISTER at 5,000/s they made the
// generator's scavenges 15-30 ms long, and those pauses were in every
// latency it measured.
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;

function digestHash(text: string): string {
  const name = DIGEST_ALG === 'MD5' ? 'md5' : 'sha256';
  // Every text hashed here is ASCII (one-shot hashing reads UTF-8).
  return oneShotHash !== undefined ? oneShotHash(name, text, 'hex') : crypto.createHash(name).update(text, 'latin1').digest('hex');
}

/** The users file Portier reads for --digest: HA1s of reg-0..reg-N-1 (RFC 7616 §3.4.2), mode 0600. */
function writeUsersFile(path: string): void {
  const lines = ['# bench/load: accounts of the register scenario'];
  for (let i = 0; i < REG_AORS; i++) {
    const u = `reg-${i}`;
    const md5 = crypto.createHash('md5').update(`${u}:${DOMAIN}:${PASSWORD(i)}`).digest('hex');
    const sha = crypto.createHash('sha256').update(`${u}:${DOMAIN}:${PASSWORD(i)}`).digest('hex');
    lines.push(`${u}@${DOMAIN} kind=phone realm=${DOMAIN} md5=${md5} sha256=${sha}`);
  }
  writeFileSync(path, lines.join('\n') + '\n', { mode: 0o600 });
}

/** The parameters of one Digest challenge (WWW-Authenticate value). */
function challengeParams(value: string): Map<string, string> {
  const m = new Map<string, string>();
  const re = /([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))/g;
  for (let x = re.exec(value); x !== null; x = re.exec(value)) m.set(x[1].toLowerCase(), x[2] ?? x[3]);
  return m;
}

/** HA2 of every REGISTER (same method and URI). */
let REGISTER_HA2: string | undefined;

function authorization(a: RegAor): string {
  const uri = `sip:${DOMAIN}`;
  const nc = (++a.nc).toString(16).padStart(8, '0');
  const cnonce = `${RUN}c${a.i}n${a.nc}`;
  const ha1 = (a.ha1 ??= digestHash(`${a.user}:${DOMAIN}:${PASSWORD(a.i)}`));
  const ha2 = (REGISTER_HA2 ??= digestHash(`REGISTER:${uri}`));
  const response = digestHash(`${ha1}:${a.nonce}:${nc}:${cnonce}:auth:${ha2}`);
  return (
    `Authorization: Digest username="${a.user}", realm="${DOMAIN}", nonce="${a.nonce}", uri="${uri}", ` +
    `response="${response}", algorithm=${DIGEST_ALG}, cnonce="${cnonce}", qop=auth, nc=${nc}\r\n`
  );
}

function regRequest(a: RegAor): Buffer {
  a.cseq++;
  return b(
    `REGISTER sip:${DOMAIN} SIP/2.0\r\n` +
      `Via: SIP/2.0/UDP ${HOST}:${a.sock.port};branch=z9hG4bK${RUN}R${a.i}c${a.cseq};rport\r\n` +
      'Max-Forwards: 70\r\n' +
      `From: <sip:${a.user}@${DOMAIN}>;tag=r${RUN}${a.i}\r\n` +
      `To: <sip:${a.user}@${DOMAIN}>\r\n` +
      `Call-ID: ${a.callId}\r\n` +
      `CSeq: ${a.cseq} REGISTER\r\n` +
      `Contact: <${a.uri}>;expires=3600\r\n` +
      'Expires: 3600\r\n' +
      (DIGEST !== 'off' && a.nonce !== null ? authorization(a) : '') +
      'User-Agent: portier-bench-load\r\n' +
      'Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n' +
      'Content-Length: 0\r\n\r\n',
  );
}

function regSend(op: RegOp): void {
  op.buf = regRequest(op.aor);
  op.tSend = now();
  op.interval = T1;
  send(op.aor.sock, op.buf);
  if (op.timer) clearTimeout(op.timer);
  op.timer = setTimeout(() => regTimerE(op), T1);
}

function regTimerE(op: RegOp): void {
  op.timer = null;
  if (op.aor.pending !== op) return;
  if (now() - op.tSend >= STEP_MS) return regFail(op, 'REGISTER: no final response within 64*T1 (Timer F)');
  stats.rtx.register++;
  send(op.aor.sock, op.buf);
  op.interval = Math.min(op.interval * 2, T2);
  op.timer = setTimeout(() => regTimerE(op), op.interval);
}

function regStart(k: number): void {
  const a = regAors[k % REG_AORS];
  regStats.attempted++;
  if (a.pending !== null) {
    regStats.failed++;
    failures.set('REGISTER due while the previous one of its AOR was still pending', (failures.get('REGISTER due while the previous one of its AOR was still pending') ?? 0) + 1);
    regDone();
    return;
  }
  const op: RegOp = { aor: a, t0: now(), tSend: 0, buf: Buffer.alloc(0), timer: null, interval: T1, challenges: 0, k };
  a.pending = op;
  regSend(op);
}

/**
 * The REGISTER of `op` is over, answered or failed: its AOR is free. A fresh
 * nonce serves one REGISTER and dies with it: kept until the AOR's next
 * REGISTER (2 s at 5,000/s over 10,000 AORs), each one was promoted, 4,000
 * per scavenge, and the generator's scavenges took 1.6-5 ms, pauses inside
 * the latencies it measures.
 */
function regEnd(op: RegOp): void {
  if (op.timer) clearTimeout(op.timer);
  op.aor.pending = null;
  if (NONCE === 'fresh') op.aor.nonce = null;
}

function regFail(op: RegOp, reason: string): void {
  regEnd(op);
  regStats.failed++;
  failures.set(reason, (failures.get(reason) ?? 0) + 1);
  regDone();
}

function regDone(): void {
  if (regNext !== null) regNext();
  if (regSettled !== null && regStats.attempted === REGISTERS && regStats.completed + regStats.failed === REGISTERS) regSettled();
}

function onRegScenarioResponse(ua: Ua, m: WireMessage): void {
  const a = regByCallId.get(m.callId);
  const op = a?.pending;
  if (a === undefined || op === null || op === undefined || m.cseq !== a.cseq || ua !== a.sock) {
    stats.stray++;
    return;
  }
  if (m.status < 200) return;
  if (m.status === 401 && DIGEST !== 'off') {
    const offers = m.getAll('www-authenticate').map(challengeParams);
    const offer = offers.find((p) => (p.get('algorithm') ?? 'MD5').toUpperCase() === DIGEST_ALG);
    if (offer === undefined || offer.get('nonce') === undefined) return regFail(op, `401 without a ${DIGEST_ALG} challenge`);
    if (++op.challenges > 2) return regFail(op, 'REGISTER: challenged again after answering twice');
    if (op.challenges === 1) regStats.challenged++;
    if (offer.get('stale')?.toLowerCase() === 'true') regStats.stale++;
    // A copy, not the match: a substring can keep the whole datagram's text
    // alive (V8 sliced strings), ~600 B per account until its next REGISTER,
    // which the generator's scavenges then copied and promoted.
    a.nonce = Buffer.from(offer.get('nonce')!, 'latin1').toString('latin1');
    a.nc = 0;
    regSend(op);
    return;
  }
  if (m.status >= 300) {
    if (a.nonce !== null && m.status === 401) a.nonce = null;
    return regFail(op, `REGISTER answered ${m.status} ${m.reason}`);
  }
  if (!(m.contactUris() ?? []).includes(a.uri)) return regFail(op, 'REGISTER: 200 without the Contact');
  regEnd(op);
  const t = now();
  if (op.k < WARMUP) {
    // warm-up: not measured
  } else if (op.challenges > 0) regLatCold[regStats.cold++] = t - op.t0;
  else regLatWarm[regStats.warm++] = t - op.t0;
  regStats.completed++;
  regLastCompletion = t;
  regDone();
}

async function createRegScenario(): Promise<void> {
  for (let i = 0; i < SOCKETS; i++) {
    const ua = await createUa(false, i);
    ua.user = `reg-socket-${i}`;
    regSockets.push(ua);
  }
  for (let i = 0; i < REG_AORS; i++) {
    const sock = regSockets[i % SOCKETS];
    const user = `reg-${i}`;
    const a: RegAor = { i, user, sock, uri: `sip:${user}@${HOST}:${sock.port}`, callId: `reg-${RUN}-${i}@${HOST}`, cseq: 0, nonce: null, nc: 0, pending: null };
    regAors.push(a);
    regByCallId.set(a.callId, a);
  }
  regLatCold = new Float64Array(REGISTERS);
  regLatWarm = new Float64Array(REGISTERS);
}

/** Runs the REGISTERs: paced at RATE, or WINDOW in flight. Resolves when all completed or failed. */
function runRegisters(onPacer: (t: NodeJS.Timeout | undefined) => void, onWarm: () => void): Promise<void> {
  const all = new Promise<void>((resolve) => (regSettled = resolve));
  const t0 = now();
  let sent = 0;
  if (WINDOW > 0) {
    regNext = () => {
      if (sent === WARMUP && WARMUP > 0) onWarm();
      if (sent < REGISTERS) regStart(sent++);
    };
    for (let i = 0; i < Math.min(WINDOW, REGISTERS); i++) regStart(sent++);
  } else {
    const pace = (): void => {
      onPacer(undefined);
      const due = Math.min(REGISTERS, dueAt(now() - t0));
      while (sent < due) {
        if (sent === WARMUP && WARMUP > 0) onWarm();
        regStart(sent++);
      }
      if (sent < REGISTERS) onPacer(setTimeout(pace, 1));
    };
    pace();
  }
  return all;
}

// ---------------------------------------------------------------- the door (UAC)

const DOOR_SDP = (port: number, i: number): string =>
  'v=0\r\n' +
  `o=- ${869701281 + i} ${858248381 + i} IN IP4 ${HOST}\r\n` +
  's=-\r\n' +
  `c=IN IP4 ${HOST}\r\n` +
  't=0 0\r\n' +
  'a=tool:baresip 1.0.0\r\n' +
  `m=audio ${port} RTP/AVP 0 8 101\r\n` +
  'a=rtpmap:0 PCMU/8000\r\n' +
  'a=rtpmap:8 PCMA/8000\r\n' +
  'a=rtpmap:101 telephone-event/8000\r\n' +
  'a=fmtp:101 0-15\r\n' +
  'a=sendrecv\r\n' +
  'a=label:1\r\n' +
  'a=rtcp-rsize\r\n' +
  `a=ssrc:${3890122829 + i} cname:sip:door@${DOMAIN}\r\n` +
  'a=minptime:20\r\n' +
  'a=ptime:20\r\n';

function inviteBytes(call: Call): Buffer {
  const d = call.door;
  const sdp = DOOR_SDP(20000 + (call.i % 40000), call.i);
  return b(
    `INVITE sip:phone-${call.aor}@${DOMAIN} SIP/2.0\r\n` +
      `Via: SIP/2.0/UDP ${HOST}:${d.port};branch=z9hG4bK${RUN}i${call.i};rport\r\n` +
      `Contact: <${d.uri}>\r\n` +
      'Max-Forwards: 70\r\n' +
      // Portier as outbound proxy, as baresip sends it (pre-loaded Route).
      `Route: <sip:${SERVER_HOST}:${serverPort};lr>\r\n` +
      `To: <sip:phone-${call.aor}@${DOMAIN}>\r\n` +
      `From: <sip:${d.aorUser}@${DOMAIN}>;tag=${call.fromTag}\r\n` +
      `Call-ID: ${call.callId}\r\n` +
      'CSeq: 1 INVITE\r\n' +
      'User-Agent: baresip v1.0.0 (x86_64/linux) portier-bench-load\r\n' +
      'Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,REFER\r\n' +
      'Supported: gruu\r\n' +
      'Content-Type: application/sdp\r\n' +
      `Content-Length: ${sdp.length}\r\n\r\n` +
      sdp,
  );
}

function startCall(i: number): void {
  const door = doors[i % DOORS];
  const call: Call = {
    i,
    callId: `${RUN}${i.toString(16).padStart(8, '0')}@${HOST}`,
    door,
    aor: i % AORS,
    fromTag: `${RUN}f${i}`,
    invite: Buffer.alloc(0),
    t0: 0,
    timerA: null,
    intervalA: T1,
    provisional: false,
    status: 0,
    nonAck: null,
    dialogs: [],
    dialogsOpen: 0,
    legs: [],
    legsOpen: 0,
    state: State.Inviting,
    deadline: 0,
    holdTimer: null,
    trace: MAX_TRACES > 0 ? [] : null,
    reason: '',
  };
  call.invite = inviteBytes(call);
  calls.set(call.callId, call);
  active.add(call);
  attempted++;
  call.t0 = now();
  call.deadline = call.t0 + STEP_MS;
  send(door, call.invite, call);
  call.timerA = setTimeout(() => timerA(call), T1);
}

/** Timer A until a provisional; Timer B (64*T1) ends the call. */
function timerA(call: Call): void {
  call.timerA = null;
  if (call.state !== State.Inviting || call.provisional || call.status !== 0) return;
  if (now() - call.t0 >= STEP_MS) return fail(call, 'INVITE: no response at all within 64*T1 (Timer B)');
  stats.rtx.invite++;
  send(call.door, call.invite, call);
  call.intervalA *= 2;
  call.timerA = setTimeout(() => timerA(call), call.intervalA);
}

function onInviteResponse(call: Call, m: WireMessage): void {
  const status = m.status;
  if (status < 200) {
    if (!call.provisional) {
      call.provisional = true;
      if (call.timerA) clearTimeout(call.timerA);
      call.timerA = null;
    }
    return;
  }
  if (status >= 300) {
    if (call.nonAck !== null) {
      stats.rtx.ackAgain++;
      send(call.door, call.nonAck, call);
      return;
    }
    // §17.1.1.3: ACK in the INVITE transaction, with the response's To.
    call.nonAck = b(
      `ACK sip:phone-${call.aor}@${DOMAIN} SIP/2.0\r\n` +
        `Via: SIP/2.0/UDP ${HOST}:${call.door.port};branch=z9hG4bK${RUN}i${call.i};rport\r\n` +
        'Max-Forwards: 70\r\n' +
        `Route: <sip:${SERVER_HOST}:${serverPort};lr>\r\n` +
        `From: <sip:${call.door.aorUser}@${DOMAIN}>;tag=${call.fromTag}\r\n` +
        `To: ${m.to}\r\n` +
        `Call-ID: ${call.callId}\r\n` +
        'CSeq: 1 ACK\r\n' +
        'Content-Length: 0\r\n\r\n',
    );
    send(call.door, call.nonAck, call);
    if (call.status === 0) call.status = status;
    if (call.dialogs.length === 0) fail(call, `INVITE answered ${status} ${m.reason}`);
    return;
  }
  const tag = m.toTag ?? '';
  for (const d of call.dialogs) {
    if (d.toTag === tag) {
      // The phone's 2xx again (our ACK lost, or late): ACK again (§13.2.2.4).
      stats.dup.ok2xxInvite++;
      stats.rtx.ackAgain++;
      send(call.door, d.ack, call);
      return;
    }
  }
  if (call.state === State.Done || call.state === State.Failed) {
    stats.stray++;
    return;
  }
  if (call.timerA) clearTimeout(call.timerA);
  call.timerA = null;
  const target = m.contactUris()?.[0];
  const rr = m.recordRoutes();
  if (target === undefined) return fail(call, '200 to INVITE without a Contact');
  if (rr === null || rr.length === 0) return fail(call, '200 to INVITE without Record-Route: Portier would not stay in the dialog');
  const route = 'Route: ' + rr.reverse().join(', ') + '\r\n';
  const dlgHead =
    `From: <sip:${call.door.aorUser}@${DOMAIN}>;tag=${call.fromTag}\r\n` + `To: ${m.to}\r\n` + `Call-ID: ${call.callId}\r\n`;
  const n = call.dialogs.length;
  const d: Dialog = {
    toTag: tag,
    ack: b(
      `ACK ${target} SIP/2.0\r\n` +
        `Via: SIP/2.0/UDP ${HOST}:${call.door.port};branch=z9hG4bK${RUN}a${call.i}d${n};rport\r\n` +
        'Max-Forwards: 70\r\n' +
        route +
        dlgHead +
        'CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n',
    ),
    bye: null,
    byeT0: 0,
    byeTimer: null,
    byeInterval: T1,
    byeDone: false,
  };
  const bye =
    `BYE ${target} SIP/2.0\r\n` +
    `Via: SIP/2.0/UDP ${HOST}:${call.door.port};branch=z9hG4bK${RUN}b${call.i}d${n};rport\r\n` +
    'Max-Forwards: 70\r\n' +
    route +
    dlgHead +
    'CSeq: 2 BYE\r\nUser-Agent: baresip v1.0.0 (x86_64/linux) portier-bench-load\r\nContent-Length: 0\r\n\r\n';
  call.dialogs.push(d);
  call.dialogsOpen++;
  send(call.door, d.ack, call);
  if (n === 0) {
    const t = now();
    call.status = status;
    call.state = State.Answered;
    if (call.i >= WARMUP) latencies[nLatencies++] = t - call.t0;
    const hold = pick(HOLD);
    call.deadline = t + hold + STEP_MS;
    call.holdTimer = setTimeout(() => sendBye(call, d, bye), hold);
  } else {
    // A second device answered too (forking): end that dialog at once.
    stats.extraDialogs++;
    sendBye(call, d, bye);
  }
}

function sendBye(call: Call, d: Dialog, bye: string): void {
  if (d === call.dialogs[0]) call.holdTimer = null;
  if (call.state === State.Failed) return;
  d.bye = b(bye);
  d.byeT0 = now();
  call.deadline = Math.max(call.deadline, d.byeT0 + STEP_MS + 1000);
  send(call.door, d.bye, call);
  d.byeTimer = setTimeout(() => timerE(call, d), T1);
}

/** Timer E until a final response; Timer F (64*T1) ends the call. */
function timerE(call: Call, d: Dialog): void {
  d.byeTimer = null;
  if (d.byeDone || call.state === State.Failed || d.bye === null) return;
  if (now() - d.byeT0 >= STEP_MS) return fail(call, 'BYE: no final response within 64*T1 (Timer F)');
  stats.rtx.bye++;
  send(call.door, d.bye, call);
  d.byeInterval = Math.min(d.byeInterval * 2, T2);
  d.byeTimer = setTimeout(() => timerE(call, d), d.byeInterval);
}

function onByeResponse(call: Call, m: WireMessage): void {
  if (m.status < 200) return;
  const tag = m.toTag;
  const d = call.dialogs.find((x) => x.toTag === tag);
  if (d === undefined) {
    stats.stray++;
    return;
  }
  if (d.byeDone) {
    stats.dup.ok2xxBye++;
    return;
  }
  if (m.status >= 300) return fail(call, `BYE answered ${m.status} ${m.reason}`);
  d.byeDone = true;
  if (d.byeTimer) clearTimeout(d.byeTimer);
  d.byeTimer = null;
  call.dialogsOpen--;
  maybeComplete(call);
}

// ---------------------------------------------------------------- the phone (UAS)

const PHONE_SDP = (port: number, i: number): string =>
  'v=0\r\n' +
  `o=- ${1000 + i} ${2000 + i} IN IP4 ${HOST}\r\n` +
  's=Talk\r\n' +
  `c=IN IP4 ${HOST}\r\n` +
  't=0 0\r\n' +
  `m=audio ${port} RTP/AVP 0 101\r\n` +
  'a=rtpmap:0 PCMU/8000\r\n' +
  'a=rtpmap:101 telephone-event/8000\r\n' +
  'a=fmtp:101 0-15\r\n' +
  'a=sendrecv\r\n' +
  'a=ptime:20\r\n';

let legSeq = 0;

function phoneInvite(ph: Ua, m: WireMessage, buf: Buffer): void {
  const callId = m.callId;
  const call = calls.get(callId);
  if (call?.trace) call.trace.push([now(), `${ph.user} <-`, buf]);
  const known = ph.legs.get(callId);
  if (known !== undefined) {
    stats.dup.invite++;
    if (known.last !== null) {
      stats.rtx.responseAgain++;
      send(ph, known.last, call);
    }
    return;
  }
  const leg: Leg = {
    ph,
    call,
    toTag: `${RUN}t${++legSeq}`,
    head: '',
    recordRoute: '',
    last: null,
    final: 0,
    timer: null,
    answerTimer: null,
    interval: T1,
    tFinal: 0,
    acked: false,
    bye: false,
    cancel: false,
    done: false,
  };
  leg.head = responseHead(m, leg.toTag);
  for (const r of m.getAll('record-route')) leg.recordRoute += 'Record-Route: ' + r + '\r\n';
  ph.legs.set(callId, leg);
  if (call !== undefined) {
    call.legs.push(leg);
    call.legsOpen++;
    if (call.aor !== ph.aor || m.uri !== ph.uri) {
      stats.misrouted++;
      fail(call, 'INVITE delivered to a device not bound to its AOR', `to ${ph.user}, Request-URI ${m.uri}`);
    }
  } else stats.stray++;
  const ringing = b(`SIP/2.0 180 Ringing\r\n${leg.head}${leg.recordRoute}Contact: <${ph.uri}>\r\nContent-Length: 0\r\n\r\n`);
  leg.last = ringing;
  send(ph, ringing, call);
  const delay = pick(ANSWER);
  if (delay <= 0) answer(leg);
  else leg.answerTimer = setTimeout(() => answer(leg), delay);
}

function answer(leg: Leg): void {
  leg.answerTimer = null;
  if (leg.final !== 0 || leg.call?.state === State.Failed) return;
  const sdp = PHONE_SDP(30000 + (leg.ph.index % 30000), leg.ph.index);
  const ok = b(
    `SIP/2.0 200 OK\r\n${leg.head}${leg.recordRoute}Contact: <${leg.ph.uri}>\r\n` +
      'User-Agent: Linhome portier-bench-load\r\n' +
      'Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n' +
      'Content-Type: application/sdp\r\n' +
      `Content-Length: ${sdp.length}\r\n\r\n${sdp}`,
  );
  sendFinal(leg, 200, ok);
}

/** Sends a final response to the INVITE and retransmits it until the ACK (§13.3.1.4 for 2xx, Timer G for 487). */
function sendFinal(leg: Leg, status: number, bytes: Buffer): void {
  leg.final = status;
  leg.last = bytes;
  leg.tFinal = now();
  leg.interval = T1;
  send(leg.ph, bytes, leg.call);
  leg.timer = setTimeout(() => retransmitFinal(leg), T1);
}

function retransmitFinal(leg: Leg): void {
  leg.timer = null;
  if (leg.acked || leg.last === null || leg.call?.state === State.Failed) return;
  if (now() - leg.tFinal >= STEP_MS) {
    if (leg.call) fail(leg.call, `phone: no ACK for its ${leg.final} within 64*T1`, leg.ph.user);
    return;
  }
  if (leg.final === 200) stats.rtx.ok2xx++;
  else stats.rtx.err487++;
  send(leg.ph, leg.last, leg.call);
  leg.interval = Math.min(leg.interval * 2, T2);
  leg.timer = setTimeout(() => retransmitFinal(leg), leg.interval);
}

function legDone(leg: Leg): void {
  if (leg.done || !leg.acked || (leg.final === 200 && !leg.bye)) return;
  leg.done = true;
  const call = leg.call;
  if (call === undefined) return;
  call.legsOpen--;
  maybeComplete(call);
}

function phoneAck(ph: Ua, m: WireMessage, buf: Buffer): void {
  const leg = ph.legs.get(m.callId);
  if (leg?.call?.trace) leg.call.trace.push([now(), `${ph.user} <-`, buf]);
  if (leg === undefined || m.toTag !== leg.toTag) {
    stats.stray++;
    return;
  }
  if (leg.acked) {
    stats.dup.ack++;
    return;
  }
  if (leg.final === 0) {
    stats.stray++;
    return;
  }
  leg.acked = true;
  if (leg.timer) clearTimeout(leg.timer);
  leg.timer = null;
  legDone(leg);
}

function phoneBye(ph: Ua, m: WireMessage, buf: Buffer): void {
  const leg = ph.legs.get(m.callId);
  if (leg?.call?.trace) leg.call.trace.push([now(), `${ph.user} <-`, buf]);
  if (leg === undefined || m.toTag !== leg.toTag || leg.final !== 200) {
    stats.stray++;
    send(ph, b(`SIP/2.0 481 Call/Transaction Does Not Exist\r\n${responseHead(m, null)}Content-Length: 0\r\n\r\n`), leg?.call);
    return;
  }
  if (leg.bye) {
    stats.dup.bye++;
    stats.rtx.responseAgain++;
  }
  send(ph, b(`SIP/2.0 200 OK\r\n${responseHead(m, null)}Content-Length: 0\r\n\r\n`), leg.call);
  if (leg.bye) return;
  leg.bye = true;
  if (!leg.acked) stats.byeBeforeAck++;
  legDone(leg);
}

function phoneCancel(ph: Ua, m: WireMessage, buf: Buffer): void {
  const leg = ph.legs.get(m.callId);
  if (leg?.call?.trace) leg.call.trace.push([now(), `${ph.user} <-`, buf]);
  // §9.2: 200 to the CANCEL whatever the INVITE's state; 487 if it was still ringing.
  send(ph, b(`SIP/2.0 200 OK\r\n${responseHead(m, leg?.toTag ?? null)}Content-Length: 0\r\n\r\n`), leg?.call);
  if (leg === undefined) {
    stats.stray++;
    return;
  }
  if (leg.cancel) {
    stats.dup.cancel++;
    return;
  }
  leg.cancel = true;
  if (leg.final !== 0) {
    // Portier cancels the other forks when one answers; this one had answered too.
    stats.cancelAfterAnswer++;
    return;
  }
  stats.cancelled++;
  if (leg.answerTimer) clearTimeout(leg.answerTimer);
  leg.answerTimer = null;
  sendFinal(leg, 487, b(`SIP/2.0 487 Request Terminated\r\n${leg.head}Content-Length: 0\r\n\r\n`));
}

// ---------------------------------------------------------------- call outcome

function maybeComplete(call: Call): void {
  if (call.state !== State.Answered) return;
  if (call.dialogsOpen > 0 || call.legsOpen > 0 || call.legs.length < DEVICES) {
    // The door is done but a device is not (or not reached yet): it has 64*T1 more.
    if (call.dialogsOpen === 0) call.deadline = Math.max(call.deadline, now() + STEP_MS);
    return;
  }
  call.state = State.Done;
  call.trace = null;
  completed++;
  lastCompletion = now();
  active.delete(call);
  forget(call);
  settled();
}

/**
 * A completed call leaves the tables at once: every transaction of it has ended on both sides, and
 * what would still come (a retransmission Portier had no reason to send) is counted as stray. Kept,
 * 25,000 calls' objects would each survive the scavenges and promote: the generator's own GC pauses
 * (8-12 ms) were then the tail of the setup latency it measures, for Kamailio as for Portier.
 */
function forget(call: Call): void {
  calls.delete(call.callId);
  for (const leg of call.legs) if (leg.ph.legs.get(call.callId) === leg) leg.ph.legs.delete(call.callId);
}

/** `reason` is the failure's kind, counted; `detail` (which device...) goes to the trace only. */
function fail(call: Call, reason: string, detail = ''): void {
  if (call.state === State.Done || call.state === State.Failed) return;
  call.state = State.Failed;
  call.reason = detail === '' ? reason : `${reason} (${detail})`;
  failed++;
  failures.set(reason, (failures.get(reason) ?? 0) + 1);
  if (call.timerA) clearTimeout(call.timerA);
  if (call.holdTimer) clearTimeout(call.holdTimer);
  for (const d of call.dialogs) if (d.byeTimer) clearTimeout(d.byeTimer);
  for (const l of call.legs) {
    if (l.timer) clearTimeout(l.timer);
    if (l.answerTimer) clearTimeout(l.answerTimer);
  }
  if (failedCalls.length < MAX_TRACES) failedCalls.push(call);
  else call.trace = null;
  active.delete(call);
  settled();
}

/** Why a call is stuck: when it ran out of time (`late`), or when the run ended under it. */
function stall(call: Call, late = true): string {
  const within = late ? 'within 64*T1' : 'yet';
  if (call.status === 0) {
    const reached = call.legs.length > 0 ? 'the phone got the INVITE' : 'no phone got the INVITE';
    return call.provisional ? `INVITE: 1xx but no final response ${within} (${reached})` : `INVITE: no response ${within} (${reached})`;
  }
  if (call.dialogsOpen > 0) {
    const open = call.dialogs.find((d) => !d.byeDone)!;
    const leg = call.legs.find((l) => l.toTag === open.toTag);
    if (open.bye === null) return 'answered, in hold (BYE not sent yet)';
    return `BYE: no 200 ${within} (${leg?.bye ? 'the phone got the BYE and answered 200' : 'the phone never got the BYE'})`;
  }
  if (call.legs.length < DEVICES) return `fork: only ${call.legs.length} of ${DEVICES} devices got the INVITE`;
  const l = call.legs.find((x) => !x.done);
  if (l === undefined) return 'stuck (no open step found)';
  if (!l.acked) return l.final === 0 ? 'phone: rang, never got CANCEL nor answered' : `phone: no ACK for its ${l.final} ${within}`;
  return `phone: no BYE ${within}`;
}

function settled(): void {
  if (settledResolve !== null && attempted === CALLS && completed + failed === CALLS) settledResolve();
}

// ---------------------------------------------------------------- Portier process

let portier: Portier | null = null;

/**
 * The machine's CPU time by kind, from /proc/stat (clock ticks, all CPUs):
 * steal is time the hypervisor gave this VM's CPUs to someone else, during
 * which whatever ran on them stood still. Null where there is no /proc/stat.
 */
function machineTicks(): { busy: number; idle: number; steal: number } | null {
  try {
    const f = readFileSync('/proc/stat', 'latin1');
    const v = f.slice(0, f.indexOf('\n')).trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    return { busy: v[0] + v[1] + v[2] + v[5] + v[6], idle: v[3] + v[4], steal: v[7] ?? 0 };
  } catch {
    return null;
  }
}

/** Datagrams the kernel dropped per local UDP port (the drops column of /proc/net/udp): a full receive buffer. */
function udpDrops(): Map<number, number> {
  const m = new Map<number, number>();
  try {
    const lines = readFileSync('/proc/net/udp', 'latin1').split('\n');
    for (let i = 1; i < lines.length; i++) {
      const f = lines[i].trim().split(/\s+/);
      if (f.length < 13) continue;
      const port = parseInt(f[1].slice(f[1].indexOf(':') + 1), 16);
      m.set(port, (m.get(port) ?? 0) + Number(f[f.length - 1]));
    }
  } catch {
    /* not Linux */
  }
  return m;
}

// ---------------------------------------------------------------- report

function pct(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const out = (s: string): void => {
  process.stdout.write(s + '\n');
};

function sipText(buf: Buffer): string {
  return buf.toString('latin1').replace(/\r\n/g, '\n').trimEnd();
}

function writeTraces(): void {
  if (failedCalls.length === 0) return;
  let s = '';
  for (const c of failedCalls) {
    s += `==== call ${c.i} ${c.callId}: ${c.door.user} -> phone-${c.aor}: FAILED: ${c.reason}\n`;
    for (const [t, who, buf] of c.trace ?? []) s += `---- +${(t - c.t0).toFixed(1)} ms ${who}\n${sipText(buf)}\n`;
    s += '\n';
  }
  writeFileSync(TRACE_FILE, s);
  out(`traces            ${failedCalls.length} failed call(s) written message by message to ${TRACE_FILE}`);
}

// ---------------------------------------------------------------- metrics and GC of the Portier process

/** One Prometheus histogram from a /metrics text: [upper bound, cumulative count] with +Inf last. */
interface Hist {
  buckets: Array<[number, number]>;
  count: number;
  sum: number;
}

function parseHist(text: string, name: string): Hist | null {
  const buckets: Array<[number, number]> = [];
  let count = NaN;
  let sum = NaN;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    const bm = /^_bucket\{(?:[^}]*,)?le="([^"]+)"[^}]*\} ([\d.eE+-]+)$/.exec(rest);
    if (bm !== null) buckets.push([bm[1] === '+Inf' ? Infinity : Number(bm[1]), Number(bm[2])]);
    else if (rest.startsWith('_count')) count = Number(rest.split(' ').pop());
    else if (rest.startsWith('_sum')) sum = Number(rest.split(' ').pop());
  }
  if (buckets.length === 0) return null;
  buckets.sort((x, y) => x[0] - y[0]);
  return { buckets, count, sum };
}

function histDelta(after: Hist, before: Hist | null): Hist {
  if (before === null) return after;
  return {
    buckets: after.buckets.map(([le, n], i) => [le, n - (before.buckets[i]?.[1] ?? 0)] as [number, number]),
    count: after.count - before.count,
    sum: after.sum - before.sum,
  };
}

/** As Prometheus' histogram_quantile: linear within the bucket that holds the quantile. */
function histQuantile(h: Hist, q: number): number {
  if (!(h.count > 0)) return NaN;
  const rank = q * h.count;
  let prevLe = 0;
  let prevN = 0;
  for (const [le, n] of h.buckets) {
    if (n >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevN)) / Math.max(1, n - prevN);
    }
    prevLe = le;
    prevN = n;
  }
  return prevLe;
}

function histFractionLe(h: Hist, le: number): number {
  const b = h.buckets.find((x) => Math.abs(x[0] - le) < 1e-12);
  return b === undefined || !(h.count > 0) ? NaN : b[1] / h.count;
}

/**
 * The once-a-second scrape during the calls runs in a worker thread: fetching and reading ~13 KB
 * on the thread that timestamps SIP messages would add its own stall to the latencies measured.
 */
const SCRAPER = `
const { parentPort, workerData } = require('node:worker_threads');
let ok = 0, failed = 0;
const timer = setInterval(async () => {
  try {
    const r = await fetch(workerData.url, { signal: AbortSignal.timeout(5000) });
    await r.text();
    ok++;
  } catch {
    failed++;
  }
  parentPort.postMessage({ ok, failed });
}, 1000);
`;

function startScraper(port: number, counts: (ok: number, failed: number) => void): Worker {
  const w = new Worker(SCRAPER, { eval: true, workerData: { url: `http://${HOST}:${port}/metrics` } });
  w.on('message', (m: { ok: number; failed: number }) => counts(m.ok, m.failed));
  w.unref();
  return w;
}

async function scrapeMetrics(port: number): Promise<string | null> {
  try {
    const r = await fetch(`http://${HOST}:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
    return await r.text();
  } catch {
    return null;
  }
}

/** GC pauses of Portier from --trace-gc, during the measured phase only. */
const gc = { measuring: false, pauses: [] as number[], steps: [] as number[], totalMs: 0, byKind: new Map<string, { n: number; ms: number }>() };
const GC_LINE = /ms: (Scavenge|Minor Mark-Compact|Minor Mark-Sweep|Mark-Compact(?: \(reduce\))?|Mark-Sweep(?: \(reduce\))?)[^,]* MB, ([\d.]+) \/ [\d.]+ ms(?:\s+\(\+ ([\d.]+) ms in \d+ steps since start of marking, biggest step ([\d.]+) ms)?/;

function onPortierLine(line: string): void {
  if (!gc.measuring || !line.startsWith('[')) return;
  const m = GC_LINE.exec(line);
  if (m === null) return;
  const pause = Number(m[2]);
  gc.pauses.push(pause);
  const incremental = m[3] === undefined ? 0 : Number(m[3]);
  if (m[4] !== undefined) gc.steps.push(Number(m[4]));
  gc.totalMs += pause + incremental;
  const k = gc.byKind.get(m[1]) ?? { n: 0, ms: 0 };
  k.n++;
  k.ms += pause + incremental;
  gc.byKind.set(m[1], k);
}

// ---------------------------------------------------------------- main

const fx = (x: number, d = 2): number | null => (Number.isFinite(x) ? Number(x.toFixed(d)) : null);

async function main(): Promise<number> {
  const tRun = now();
  let exitCode = 0;
  let timedOut = false;
  let globalTimer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    globalTimer = setTimeout(() => {
      timedOut = true;
      reject(new Error(`global timeout: the run took longer than ${TIMEOUT_MS / 1000} s`));
    }, TIMEOUT_MS);
  });
  deadline.catch(() => {});
  // Once Portier is up, its exit ends the run at once rather than after every call's 32 s.
  let died: Promise<never> = new Promise<never>(() => {});
  const bounded = <T>(p: Promise<T>): Promise<T> => Promise.race([p, deadline, died]);
  const dir = mkdtempSync(join(tmpdir(), 'portier-load-'));
  let sweeper: NodeJS.Timeout | undefined;
  let scraper: Worker | undefined;
  let progress: NodeJS.Timeout | undefined;
  let metricsPort = 0;
  let scrapes = 0;
  let scrapeErrors = 0;
  let pacer: NodeJS.Timeout | undefined;
  let cpuBefore = 0;
  let genCpuBefore = process.cpuUsage();
  let ticksBefore: ReturnType<typeof machineTicks> = null;
  let ticksAfter: ReturnType<typeof machineTicks> = null;
  let tCalls = 0;
  let tLastInvite = 0;
  let tSettled = 0;
  let regMs = 0;
  let regRtx = 0;
  let serverCpuMs = NaN;
  let mem = { rss: NaN, peak: NaN, pss: NaN };
  let memBefore = { rss: NaN, pss: NaN };
  let genCpuMs = NaN;
  let abortReason = '';
  let drops = { server: NaN, generator: NaN };
  let histBefore: Hist | null = null;
  let genCpuSettle = NaN;
  let cpuSettle = NaN;
  let memSettle0 = { rss: NaN, pss: NaN };
  let memSettled = { rss: NaN, pss: NaN };
  let histReady: Promise<void> = Promise.resolve();
  let tMeasure = 0;
  let processing: Hist | null = null;
  let serverPids: number[] = [];
  const rssTimeline: string[] = [];
  let rssSampler: NodeJS.Timeout | undefined;
  const serverName = TARGET === null ? 'portier' : 'server';
  const opsDone = (): number => (SCENARIO === 'call' ? completed + failed : regStats.completed + regStats.failed);
  const opsAttempted = (): number => (SCENARIO === 'call' ? attempted : regStats.attempted);

  if (SCENARIO === 'call') {
    out(
      `portier load: ${CALLS} calls at ${RATE}/s over UDP, ${DOORS} door stations, ${PHONES} phones ` +
        `(${AORS} AORs x ${DEVICES} device${DEVICES > 1 ? 's: every call forked' : ''}), hold ${HOLD[0]}-${HOLD[1]} ms, ` +
        `answer after ${ANSWER[0]}-${ANSWER[1]} ms, T1 ${T1} ms${TARGET !== null ? `, against ${TARGET.host}:${TARGET.port}` : ''}`,
    );
  } else {
    out(
      `portier load: ${REGISTERS} REGISTERs ${WINDOW > 0 ? `${WINDOW} in flight (closed loop)` : `at ${RATE}/s`} over UDP, ${REG_AORS} AORs on ${SOCKETS} sockets, ` +
        `digest ${DIGEST}${DIGEST !== 'off' ? ` (nonce ${NONCE})` : ''}, T1 ${T1} ms${TARGET !== null ? `, against ${TARGET.host}:${TARGET.port}` : ''}`,
    );
  }
  try {
    if (TARGET !== null) {
      serverPort = TARGET.port;
      if (SERVER_PID !== 0) serverPids = processTree(SERVER_PID);
      out(`server            ${TARGET.host}:${TARGET.port}${SERVER_PID !== 0 ? `, pids ${serverPids.join(' ')}` : ' (no --server-pid: CPU and memory not measured)'}`);
    } else {
      if (STORE === 'redis') {
        redisPort = await freeTcpPort();
        redis = spawn('redis-server', ['--port', String(redisPort), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
        await waitTcp(redisPort, 10_000);
      }
      // Portier on a free port (another process may grab it between probe and bind: try again).
      for (let attempt = 1; ; attempt++) {
        serverPort = await freeUdpPort();
        if (METRICS) metricsPort = await freeTcpPort();
        const configPath = join(dir, 'portier.yaml');
        if (DIGEST !== 'off') writeUsersFile(join(dir, 'users'));
        writeFileSync(
          configPath,
          [
            `domains: [${DOMAIN}]`,
            `listen: [udp:${HOST}:${serverPort}]`,
            'log: {level: warn}',
            `timers: {t1: ${T1}, t2: ${T2}, t4: 5000}`,
            'proxy: {ring-timeout: 30}',
            'registrar: {min-expires: 60, max-expires: 3600, default-expires: 600}',
            // Every simulated device sends from this one address: a load generator is what security.exempt is for.
            `security: {exempt: ["${HOST}"]}`,
            ...(DIGEST !== 'off' ? [`auth: {users: users, realm: ${DOMAIN}, algorithms: [SHA-256, MD5], nonce-lifetime: 300}`] : []),
            STORE === 'memory'
              ? 'storage: {type: memory}'
              : STORE === 'redis'
                ? `storage: {type: redis, url: "redis://${HOST}:${redisPort}", prefix: "load:"}`
                : `storage: {type: sqlite, path: ${JSON.stringify(join(dir, 'portier.db'))}}`,
            ...(WORKERS > 1 ? [`workers: ${WORKERS}`] : []),
            ...(METRICS ? [`metrics: {listen: "${HOST}:${metricsPort}"}`] : []),
            ...(OVERLOAD === 'off' ? ['overload: {enabled: false}'] : []),
            '',
          ].join('\n'),
        );
        portier = startPortier(configPath, GC ? ['--trace-gc', ...NODE_ARGS] : NODE_ARGS, GC ? onPortierLine : undefined);
        try {
          await bounded(waitReady(portier, serverPort, 10_000));
          break;
        } catch (err) {
          if (timedOut || attempt >= 3) throw err;
          await stopPortier(portier);
        }
      }
      const running = portier;
      // With workers: the primary and its children; with redis: its server too.
      serverPids = [...(WORKERS > 1 ? processTree(running.pid) : [running.pid]), ...(redis?.pid !== undefined ? [redis.pid] : [])];
      died = running.exited.then(() => {
        throw new Error(`Portier exited during the run (status ${running.exitCode})`);
      });
      died.catch(() => {});
      if (SERVER_CPU >= 0) execFileSync('taskset', ['-a', '-p', '-c', String(SERVER_CPU), String(portier.pid)], { stdio: 'ignore' });
      out(
        `portier           pid ${portier.pid}, udp:${HOST}:${serverPort}, store ${STORE}${WORKERS > 1 ? `, ${WORKERS} workers (pids ${serverPids.join(" ")})` : ""}, ready after ${(now() - tRun).toFixed(0)} ms` +
          `${SERVER_CPU >= 0 ? `, pinned to CPU ${SERVER_CPU}` : ''}`,
      );
    }

    if (SCENARIO === 'call') {
      for (let i = 0; i < DOORS; i++) doors.push(await createUa(true, i));
      for (let i = 0; i < PHONES; i++) phones.push(await createUa(false, i));
      const rcvbuf = phones[0].sock.getRecvBufferSize();

      // Registration.
      const tReg = now();
      const regRtx0 = stats.rtx.register;
      await bounded(registerAll([...phones, ...doors], 50));
      regMs = now() - tReg;
      regRtx = stats.rtx.register - regRtx0;
      out(
        `registrations     ${PHONES + DOORS} in ${regMs.toFixed(0)} ms = ${(((PHONES + DOORS) * 1000) / regMs).toFixed(0)}/s, ` +
          `50 in flight, ${regRtx} retransmissions, ${stats.registerRetries} sent again after a 503 (generator sockets: ${PHONES + DOORS}, SO_RCVBUF ${(rcvbuf / 1048576).toFixed(1)} MiB as the kernel reports it)`,
      );
    } else {
      await createRegScenario();
    }

    // The measured phase.
    if (METRICS) {
      // What Prometheus does, more often than it would (every 15 s is usual): the scrape's cost is in Portier's CPU time.
      scraper = startScraper(metricsPort, (ok, failed) => {
        scrapes = ok;
        scrapeErrors = failed;
      });
    }
    if (SCENARIO === 'call') {
      latencies = new Float64Array(CALLS);
      sweeper = setInterval(() => {
        const t = now();
        for (const c of active) if (t > c.deadline) fail(c, stall(c));
      }, 200);
    }
    /** Where the measured phase starts: now, or after --warmup operations. */
    const beginMeasure = (): void => {
      memBefore = treeMemory(serverPids);
      cpuBefore = treeCpuMs(serverPids);
      genCpuBefore = process.cpuUsage();
      ticksBefore = machineTicks();
      gc.measuring = true;
      tMeasure = now();
      if (METRICS) {
        const pending = scrapeMetrics(metricsPort).then((text) => {
          histBefore = text === null ? null : parseHist(text, 'portier_proxy_processing_seconds');
        });
        histReady = pending;
      }
    };
    if (WARMUP === 0) beginMeasure();
    tCalls = now();
    rssSampler = setInterval(() => {
      rssTimeline.push(`${((now() - tCalls) / 1000).toFixed(0)}s ${treeMemory(serverPids).rss.toFixed(0)}`);
    }, 5000);
    let lastDone = 0;
    let lastCpu = treeCpuMs(serverPids);
    progress = setInterval(() => {
      const done = opsDone();
      const cpu = treeCpuMs(serverPids);
      process.stderr.write(
        `  +${((now() - tCalls) / 1000).toFixed(0)}s ${SCENARIO === 'call' ? 'calls' : 'registers'} ${opsAttempted()} sent, ${done} done (${done - lastDone}/s), ` +
          `${SCENARIO === 'call' ? failed : regStats.failed} failed${serverPids.length > 0 ? `, ${serverName} ${((cpu - lastCpu) / 10).toFixed(0)}% cpu` : ''}\n`,
      );
      lastDone = done;
      lastCpu = cpu;
    }, 1000);
    if (SCENARIO === 'call') {
      const allSettled = new Promise<void>((resolve) => (settledResolve = resolve));
      let sent = 0;
      const pace = (): void => {
        pacer = undefined;
        const due = Math.min(CALLS, dueAt(now() - tCalls));
        while (sent < due) {
          if (sent === WARMUP && WARMUP > 0) beginMeasure();
          startCall(sent++);
        }
        if (sent < CALLS) pacer = setTimeout(pace, 1);
        else tLastInvite = now();
      };
      pace();
      await bounded(allSettled);
    } else {
      await bounded(runRegisters((t) => (pacer = t), beginMeasure));
    }
    tSettled = now();
    ticksAfter = machineTicks();
    if (SETTLE_MS > 0) {
      if (progress) clearInterval(progress);
      const g0 = process.cpuUsage(genCpuBefore);
      genCpuSettle = (g0.user + g0.system) / 1000;
      cpuSettle = treeCpuMs(serverPids) - cpuBefore;
      memSettle0 = treeMemory(serverPids);
      await bounded(new Promise((r) => setTimeout(r, SETTLE_MS)));
      memSettled = treeMemory(serverPids);
    }
  } catch (err) {
    exitCode = 1;
    abortReason = (err as Error).message;
    process.stderr.write(`bench/load: ${abortReason}\n`);
    if (tCalls > 0 && SCENARIO === 'call') {
      for (const c of [...active]) fail(c, `unfinished when the run ${timedOut ? 'timed out' : 'aborted'}: ${stall(c, false)}`);
    }
    if (tCalls > 0 && SCENARIO === 'register') {
      for (const a of regAors) if (a.pending !== null) regFail(a.pending, `unfinished when the run ${timedOut ? 'timed out' : 'aborted'}`);
      regStats.failed += REGISTERS - regStats.attempted;
    }
    if (tCalls > 0) tSettled = now();
  } finally {
    gc.measuring = false;
    clearTimeout(globalTimer);
    if (pacer) clearTimeout(pacer);
    if (sweeper) clearInterval(sweeper);
    if (scraper) void scraper.terminate();
    if (rssSampler) clearInterval(rssSampler);
    if (progress) clearInterval(progress);
    const sockets = [...doors, ...phones, ...regSockets];
    const dropMap = udpDrops();
    if (dropMap.size > 0) {
      drops = { server: dropMap.get(serverPort) ?? 0, generator: sockets.reduce((a, u) => a + (dropMap.get(u.port) ?? 0), 0) };
    }
    const alive = serverPids.length > 0 && (portier === null || portier.exitCode === undefined);
    if (alive && tMeasure > 0) {
      serverCpuMs = SETTLE_MS > 0 && Number.isFinite(cpuSettle) ? cpuSettle : treeCpuMs(serverPids) - cpuBefore;
      const t = treeMemory(serverPids);
      mem = { rss: t.rss, pss: t.pss, peak: portier !== null ? memory(portier.pid).peak : NaN };
    }
    const g = process.cpuUsage(genCpuBefore);
    genCpuMs = SETTLE_MS > 0 && Number.isFinite(genCpuSettle) ? genCpuSettle : (g.user + g.system) / 1000;
    if (METRICS && tMeasure > 0 && portier !== null && portier.exitCode === undefined) {
      await histReady;
      const text = await scrapeMetrics(metricsPort);
      const after = text === null ? null : parseHist(text, 'portier_proxy_processing_seconds');
      processing = after === null ? null : histDelta(after, histBefore);
    }
    const portierExit = portier !== null && portier.exitCode !== undefined ? portier.exitCode : undefined;
    const stopped = portier === null ? 'never started' : await stopPortier(portier);
    redis?.kill('SIGKILL');
    closing = true;
    for (const u of sockets) {
      try {
        u.sock.close();
      } catch {
        /* closed */
      }
    }
    rmSync(dir, { recursive: true, force: true });

    const ops = opsAttempted() - WARMUP;
    /** The measured phase, ms: from the end of the warm-up to the last completion. */
    let mspan = NaN;
    const json: Record<string, unknown> = {
      scenario: SCENARIO,
      server: TARGET === null ? 'portier' : `${TARGET.host}:${TARGET.port}`,
      rate: WINDOW > 0 && SCENARIO === 'register' ? null : RATE,
      window: SCENARIO === 'register' && WINDOW > 0 ? WINDOW : null,
    };
    let span = NaN;
    if (tCalls > 0 && SCENARIO === 'call') {
      const sorted = latencies.slice(0, nLatencies).sort();
      const sendSpan = (tLastInvite || tSettled) - tCalls;
      span = (lastCompletion || tSettled) - tCalls;
      mspan = (lastCompletion || tSettled) - tMeasure;
      if (METRICS) out(`metrics           /metrics scraped ${scrapes} times during the calls (every 1 s)${scrapeErrors > 0 ? `, ${scrapeErrors} failed` : ''}`);
      out(`calls             attempted ${attempted}, completed ${completed}, failed ${failed}${attempted < CALLS ? `, never attempted ${CALLS - attempted}` : ''}`);
      const achieved = (completed * 1000) / span;
      // After a warm-up at another rate, the whole run's rate mixes the two: the measured phase's own.
      const achievedMeasured = tMeasure > 0 ? (nLatencies * 1000) / mspan : NaN;
      out(
        `call rate         offered ${((attempted * 1000) / (sendSpan + 1000 / RATE)).toFixed(1)}/s (INVITEs over ${(sendSpan / 1000).toFixed(2)} s), ` +
          `achieved ${achieved.toFixed(1)} completed calls/s (first INVITE to last BYE 200, ${(span / 1000).toFixed(2)} s)` +
          (WARMUP_RATE !== RATE ? `; warm-up at ${WARMUP_RATE}/s, measured phase ${achievedMeasured.toFixed(1)} answered calls/s` : ''),
      );
      out(
        `setup latency     p50 ${pct(sorted, 0.5).toFixed(2)} ms, p90 ${pct(sorted, 0.9).toFixed(2)} ms, p99 ${pct(sorted, 0.99).toFixed(2)} ms, ` +
          `p99.9 ${pct(sorted, 0.999).toFixed(2)} ms, max ${pct(sorted, 1).toFixed(2)} ms (INVITE sent -> 200 received, ${nLatencies} calls${WARMUP > 0 ? ` after ${WARMUP} warm-up calls` : ''})`,
      );
      const r = stats.rtx;
      const d = stats.dup;
      const rtxTotal = Object.values(r).reduce((a, x) => a + x, 0);
      const dupTotal = Object.values(d).reduce((a, x) => a + x, 0);
      out(
        `retransmissions   generator sent ${rtxTotal} (doors: INVITE ${r.invite}, BYE ${r.bye}, ACK again ${r.ackAgain}; ` +
          `phones: 200 to INVITE ${r.ok2xx}, 487 ${r.err487}, response to a repeated request ${r.responseAgain}; REGISTER ${regRtx})`,
      );
      out(
        `                  generator received ${dupTotal} duplicates (phones: INVITE ${d.invite}, BYE ${d.bye}, ACK ${d.ack}, CANCEL ${d.cancel}; ` +
          `doors: 200 to INVITE ${d.ok2xxInvite}, 200 to BYE ${d.ok2xxBye})`,
      );
      Object.assign(json, {
        calls: CALLS,
        attempted,
        completed,
        failed,
        achieved: fx(achieved, 1),
        achievedMeasured: fx(achievedMeasured, 1),
        warmupRate: WARMUP_RATE,
        latencyMs: { p50: fx(pct(sorted, 0.5), 3), p90: fx(pct(sorted, 0.9), 3), p99: fx(pct(sorted, 0.99), 3), p999: fx(pct(sorted, 0.999), 3), max: fx(pct(sorted, 1), 3) },
        retransmissions: rtxTotal,
        duplicates: dupTotal,
      });
    }
    if (tCalls > 0 && SCENARIO === 'register') {
      span = (regLastCompletion || tSettled) - tCalls;
      mspan = (regLastCompletion || tSettled) - tMeasure;
      const cold = regLatCold.slice(0, regStats.cold).sort();
      const warm = regLatWarm.slice(0, regStats.warm).sort();
      const all = new Float64Array(regStats.cold + regStats.warm);
      all.set(cold);
      all.set(warm, cold.length);
      all.sort();
      const achieved = (regStats.completed * 1000) / span;
      const line = (xs: Float64Array): string =>
        `p50 ${pct(xs, 0.5).toFixed(2)} ms, p90 ${pct(xs, 0.9).toFixed(2)} ms, p99 ${pct(xs, 0.99).toFixed(2)} ms, p99.9 ${pct(xs, 0.999).toFixed(2)} ms, max ${pct(xs, 1).toFixed(2)} ms`;
      out(`registers         attempted ${regStats.attempted}, completed ${regStats.completed}, failed ${regStats.failed}; ${achieved.toFixed(0)} REGISTER/s completed over ${(span / 1000).toFixed(2)} s`);
      out(`register latency  ${line(all)} (first transmission -> 200, ${all.length} REGISTERs${WARMUP > 0 ? ` after ${WARMUP} warm-up REGISTERs` : ''})`);
      if (DIGEST !== 'off') {
        out(`  challenged      ${regStats.cold} (401 then credentials): ${line(cold)}`);
        out(`  nonce reused    ${regStats.warm} (credentials at once, nc + 1): ${line(warm)}`);
        out(`  digest          ${DIGEST_ALG}, ${regStats.challenged} challenged${regStats.stale > 0 ? `, ${regStats.stale} stale` : ''}`);
      }
      out(`retransmissions   generator sent ${stats.rtx.register} REGISTERs again`);
      Object.assign(json, {
        registers: REGISTERS,
        aors: REG_AORS,
        digest: DIGEST,
        attempted: regStats.attempted,
        completed: regStats.completed,
        failed: regStats.failed,
        challenged: regStats.challenged,
        achieved: fx(achieved, 1),
        latencyMs: { p50: fx(pct(all, 0.5), 3), p90: fx(pct(all, 0.9), 3), p99: fx(pct(all, 0.99), 3), p999: fx(pct(all, 0.999), 3), max: fx(pct(all, 1), 3) },
        challengedLatencyMs: { p50: fx(pct(cold, 0.5), 3), p99: fx(pct(cold, 0.99), 3) },
        reusedLatencyMs: { p50: fx(pct(warm, 0.5), 3), p99: fx(pct(warm, 0.99), 3) },
        retransmissions: stats.rtx.register,
      });
    }
    if (tCalls > 0) {
      if (failures.size > 0) {
        out('failures');
        const kinds = [...failures.entries()].sort((a, b2) => b2[1] - a[1]);
        for (const [why, n] of kinds.slice(0, 20)) out(`  ${String(n).padStart(6)}  ${why}`);
        if (kinds.length > 20) out(`          and ${kinds.length - 20} more kinds`);
      }
      const other = [
        stats.extraDialogs ? `${stats.extraDialogs} extra 2xx dialogs (forks) ACKed and BYEd` : '',
        stats.cancelled ? `${stats.cancelled} forks cancelled while ringing (200 + 487)` : '',
        stats.cancelAfterAnswer ? `${stats.cancelAfterAnswer} CANCELs to forks that had answered already` : '',
        stats.byeBeforeAck ? `${stats.byeBeforeAck} BYEs before their ACK at the phone` : '',
        stats.misrouted ? `${stats.misrouted} INVITEs to the wrong phone` : '',
        stats.stray ? `${stats.stray} stray messages` : '',
        stats.unparseable ? `${stats.unparseable} unparseable datagrams` : '',
        stats.socketErrors ? `${stats.socketErrors} socket errors` : '',
      ].filter((x) => x !== '');
      if (other.length > 0) out(`notes             ${other.join(', ')}`);
      const unit = SCENARIO === 'call' ? 'call' : 'REGISTER';
      const cpuPerOp = (serverCpuMs * 1000) / Math.max(1, ops);
      if (Number.isNaN(serverCpuMs)) out(`${serverName.padEnd(18)}cpu and RSS not measured${serverPids.length === 0 ? '' : ': the process was gone'}`);
      else
        out(
          `${serverName.padEnd(18)}cpu ${serverCpuMs.toFixed(0)} ms over the measured phase${WARMUP > 0 ? ' (after the warm-up)' : ''} (${((serverCpuMs / mspan) * 100).toFixed(0)}% of a core) = ` +
            `${cpuPerOp.toFixed(1)} µs/${unit}; RSS ${mem.rss.toFixed(1)} MiB at the end${Number.isFinite(mem.peak) ? ` (peak ${mem.peak.toFixed(1)} MiB)` : ''}, ` +
            `PSS ${mem.pss.toFixed(1)} MiB (${(mem.pss - memBefore.pss).toFixed(1)} MiB more than before the phase)${serverPids.length > 1 ? `, ${serverPids.length} processes` : ''}`,
        );
      if (SETTLE_MS > 0) {
        out(
          `${serverName.padEnd(18)}memory after ${SETTLE_MS / 1000} s more: RSS ${memSettled.rss.toFixed(1)} MiB, PSS ${memSettled.pss.toFixed(1)} MiB ` +
            `(${(memSettled.pss - memBefore.pss).toFixed(1)} MiB more than before the phase; at its end ${(memSettle0.pss - memBefore.pss).toFixed(1)} MiB more)`,
        );
      }
      if (rssTimeline.length > 0) out(`${serverName} RSS MiB`.padEnd(18) + rssTimeline.join(', '));
      let proc: Record<string, unknown> | null = null;
      if (processing !== null && processing.count > 0) {
        const le500 = histFractionLe(processing, 0.0005);
        proc = {
          count: processing.count,
          meanMs: fx((processing.sum / processing.count) * 1000, 4),
          p50Ms: fx(histQuantile(processing, 0.5) * 1000, 4),
          p99Ms: fx(histQuantile(processing, 0.99) * 1000, 4),
          p999Ms: fx(histQuantile(processing, 0.999) * 1000, 4),
          fractionLe0_5ms: fx(le500, 5),
        };
        out(
          `inside portier    portier_proxy_processing_seconds over the phase: ${processing.count} requests, mean ${((processing.sum / processing.count) * 1000).toFixed(3)} ms, ` +
            `p50 ~${(histQuantile(processing, 0.5) * 1000).toFixed(3)} ms, p99 ~${(histQuantile(processing, 0.99) * 1000).toFixed(3)} ms, ` +
            `p99.9 ~${(histQuantile(processing, 0.999) * 1000).toFixed(3)} ms (interpolated in buckets); ${(le500 * 100).toFixed(2)}% within 0.5 ms`,
        );
      } else if (METRICS && SCENARIO === 'call') out('inside portier    portier_proxy_processing_seconds: not scraped');
      let gcj: Record<string, unknown> | null = null;
      if (GC) {
        const p = Float64Array.from(gc.pauses).sort();
        const kinds = [...gc.byKind.entries()].map(([k, v]) => `${k} ${v.n} (${v.ms.toFixed(0)} ms)`).join(', ');
        const biggestStep = gc.steps.reduce((a, x) => Math.max(a, x), 0);
        gcj = { pauses: p.length, totalMs: fx(gc.totalMs, 1), p50Ms: fx(pct(p, 0.5), 3), p99Ms: fx(pct(p, 0.99), 3), maxMs: fx(pct(p, 1), 3), biggestIncrementalStepMs: fx(biggestStep, 2), pctOfPhase: fx((gc.totalMs / mspan) * 100, 2) };
        out(
          `portier gc        ${p.length} pauses, p50 ${pct(p, 0.5).toFixed(2)} ms, p99 ${pct(p, 0.99).toFixed(2)} ms, max ${pct(p, 1).toFixed(2)} ms` +
            `${gc.steps.length > 0 ? `, biggest incremental marking step ${biggestStep.toFixed(2)} ms` : ''}; GC time ${gc.totalMs.toFixed(0)} ms = ` +
            `${((gc.totalMs / mspan) * 100).toFixed(1)}% of the phase (${kinds || 'none'})`,
        );
      }
      out(`udp drops         ${drops.server} at the server's socket, ${drops.generator} at the generator's (kernel: receive buffer full)`);
      let machine: Record<string, number | null> | null = null;
      if (ticksBefore !== null && ticksAfter !== null) {
        const busy = ticksAfter.busy - ticksBefore.busy;
        const idle = ticksAfter.idle - ticksBefore.idle;
        const steal = ticksAfter.steal - ticksBefore.steal;
        const all = Math.max(1, busy + idle + steal);
        const m = { busyPct: fx((busy / all) * 100, 1), idlePct: fx((idle / all) * 100, 1), stealPct: fx((steal / all) * 100, 2) };
        machine = m;
        out(
          `machine           over the measured phase, all CPUs: ${m.busyPct}% busy, ${m.idlePct}% idle, ${m.stealPct}% stolen by the hypervisor ` +
            `(a stolen slice stalls whatever ran on that CPU for its length)`,
        );
      }
      json.machine = machine;
      out(
        `generator         cpu ${genCpuMs.toFixed(0)} ms (${((genCpuMs / mspan) * 100).toFixed(0)}% of a core) = ${((genCpuMs * 1000) / Math.max(1, ops)).toFixed(0)} µs/${unit}; ` +
          `${stats.tx} datagrams sent, ${stats.rx} received`,
      );
      Object.assign(json, {
        durationS: fx(span / 1000, 3),
        warmup: WARMUP,
        measuredS: fx(mspan / 1000, 3),
        serverCpuMs: fx(serverCpuMs, 0),
        serverCpuUsPerOp: fx(cpuPerOp, 1),
        serverCpuPctCore: fx((serverCpuMs / mspan) * 100, 1),
        rssMiB: fx(mem.rss, 1),
        peakMiB: fx(mem.peak, 1),
        pssMiB: fx(mem.pss, 1),
        pssBeforeMiB: fx(memBefore.pss, 1),
        rssBeforeMiB: fx(memBefore.rss, 1),
        settleS: SETTLE_MS / 1000,
        rssSettledMiB: fx(memSettled.rss, 1),
        pssSettledMiB: fx(memSettled.pss, 1),
        serverProcesses: serverPids.length,
        generatorCpuUsPerOp: fx((genCpuMs * 1000) / Math.max(1, ops), 1),
        generatorCpuPctCore: fx((genCpuMs / mspan) * 100, 1),
        drops,
        failures: Object.fromEntries(failures),
        processing: proc,
        gc: gcj,
      });
    }
    if (portier !== null) {
      out(`portier exit      ${portierExit !== undefined ? `exited by itself during the run (${portierExit})` : stopped}`);
      const logs = portier.output.filter((l) => l.trim() !== '');
      if (logs.length > 0) {
        out(`portier output    ${logs.length}${logs.length >= 200 ? '+' : ''} line(s), first ones:`);
        for (const l of logs.slice(0, 10)) out('  ' + l.slice(0, 300));
      }
    }
    if (abortReason !== '') out(`aborted           ${abortReason}`);
    writeTraces();
    const failedOps = SCENARIO === 'call' ? failed + (CALLS - attempted) : regStats.failed;
    if (failedOps > 0 || portierExit !== undefined) exitCode = 1;
    out(`result            ${exitCode === 0 ? 'PASS' : 'FAIL'} in ${((now() - tRun) / 1000).toFixed(1)} s`);
    Object.assign(json, { aborted: abortReason === '' ? null : abortReason, pass: exitCode === 0 });
    out(JSON.stringify(json));
  }
  return exitCode;
}

// Never leave Portier running behind us.
process.on('exit', () => {
  if (portier !== null && portier.exitCode === undefined) portier.child.kill('SIGKILL');
  redis?.kill('SIGKILL');
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    const p = portier;
    void (p !== null ? stopPortier(p) : Promise.resolve('')).finally(() => process.exit(130));
  });
}

main().then(
  (code) => process.stdout.write('', () => process.exit(code)),
  (err: unknown) => {
    process.stderr.write(`bench/load: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
