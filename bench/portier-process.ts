// A Portier server in a child process, for the benchmarks: start it on a
// config file, wait until it answers OPTIONS, read its CPU time and memory
// from /proc, stop it.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readWire } from './wire.js';

const HOST = '127.0.0.1';
const RUN = Math.floor(Math.random() * 0xffffff).toString(16);
const now = (): number => performance.now();
// Works from bench/ (ts) and from dist/bench/ (compiled); Portier runs from dist either way.
const here = dirname(fileURLToPath(import.meta.url));
const root = here.endsWith(join('dist', 'bench')) ? join(here, '..', '..') : join(here, '..');
const PORTIER_MAIN = join(root, 'dist', 'src', 'cli', 'main.js');

/** The node options of the portier executable's shebang (`#!/usr/bin/env -S node OPTIONS`): what the systemd unit runs. */
function executableNodeOptions(): string[] {
  const first = readFileSync(PORTIER_MAIN, 'utf8').split('\n', 1)[0];
  const words = first.startsWith('#!') ? first.slice(2).trim().split(/\s+/) : [];
  const at = words.indexOf('node');
  return at < 0 ? [] : words.slice(at + 1);
}

export interface Portier {
  child: ChildProcess;
  pid: number;
  exited: Promise<number | null>;
  output: string[];
  exitCode: number | null | undefined;
}


export async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, HOST, resolve);
  });
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(resolve));
  return port;
}

/**
 * Starts Portier on a config file. `onLine`, when given, sees every line the
 * process prints (stdout and stderr: e.g. --trace-gc lines); the first 200
 * are kept in `output` either way. `command`/`args` start another server
 * instead (bench/compare: Kamailio), with the same bookkeeping.
 */
export function startPortier(
  configPath: string,
  nodeArgs: readonly string[] = [],
  onLine?: (line: string) => void,
  command?: { file: string; args: readonly string[] },
): Portier {
  // Node as the portier executable starts it (its first line), with nodeArgs after: theirs win.
  const [file, args] = command === undefined ? [process.execPath, [...executableNodeOptions(), ...nodeArgs, PORTIER_MAIN, '--config', configPath]] : [command.file, [...command.args]];
  // As the systemd unit and the Docker image run it (glibc gives freed
  // retransmission buffers back); MALLOC_MMAP_THRESHOLD_= (empty) runs it with glibc's own.
  // Another server (Kamailio) runs in the environment as it is.
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (command === undefined) env.MALLOC_MMAP_THRESHOLD_ ??= '131072';
  if (env.MALLOC_MMAP_THRESHOLD_ === '') delete env.MALLOC_MMAP_THRESHOLD_;
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const p: Portier = { child, pid: child.pid ?? 0, exited: Promise.resolve(null), output: [], exitCode: undefined };
  const keeper = (): ((chunk: Buffer | null) => void) => {
    let partial = '';
    return (chunk) => {
      const lines = (partial + (chunk === null ? '\n' : chunk.toString('utf8'))).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (onLine !== undefined) onLine(line);
        // GC trace lines ([pid:0x...] ...) go to onLine only.
        if (line.trim() !== '' && p.output.length < 200 && !(onLine !== undefined && line.startsWith('['))) p.output.push(line);
      }
    };
  };
  for (const stream of [child.stdout!, child.stderr!]) {
    const keep = keeper();
    stream.on('data', keep);
    stream.once('end', () => keep(null));
  }
  p.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      p.exitCode = code ?? (signal ? -1 : null);
      resolve(code);
    });
    child.once('error', (err) => {
      p.output.push(`spawn error: ${err.message}`);
      p.exitCode = -1;
      resolve(null);
    });
  });
  return p;
}

/** OPTIONS to the server itself, every 100 ms, until it answers. */
export async function waitReady(p: Portier, port: number, ms: number, domain = 'example.test'): Promise<void> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, HOST, resolve));
  const local = s.address().port;
  let answered = false;
  s.on('message', (msg) => {
    const m = readWire(msg);
    if (m !== null && !m.isRequest && m.cseqMethod === 'OPTIONS' && m.status === 200) answered = true;
  });
  s.on('error', () => {});
  const t0 = now();
  try {
    for (let n = 1; !answered; n++) {
      if (p.exitCode !== undefined) throw new Error(`Portier exited (${p.exitCode}) before answering OPTIONS:\n  ${p.output.join('\n  ')}`);
      if (now() - t0 > ms) throw new Error(`Portier did not answer OPTIONS within ${ms} ms:\n  ${p.output.join('\n  ')}`);
      s.send(
        `OPTIONS sip:${domain} SIP/2.0\r\nVia: SIP/2.0/UDP ${HOST}:${local};branch=z9hG4bK${RUN}o${n};rport\r\nMax-Forwards: 70\r\n` +
          `From: <sip:bench@${domain}>;tag=${RUN}o\r\nTo: <sip:${domain}>\r\nCall-ID: options-${RUN}@${HOST}\r\nCSeq: ${n} OPTIONS\r\n` +
          'Accept: application/sdp\r\nContent-Length: 0\r\n\r\n',
        port,
        HOST,
      );
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    s.close();
  }
}

export async function stopPortier(p: Portier): Promise<string> {
  if (p.exitCode !== undefined) return `had already exited (${p.exitCode})`;
  const t0 = now();
  p.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const gone = await Promise.race([p.exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 5000)))]);
  clearTimeout(timer);
  if (gone) return `stopped on SIGTERM in ${(now() - t0).toFixed(0)} ms, exit status ${p.exitCode}`;
  p.child.kill('SIGKILL');
  await Promise.race([p.exited, new Promise((r) => setTimeout(r, 2000))]);
  return 'did not stop within 5 s of SIGTERM: killed (SIGKILL)';
}

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  /* Linux default */
}

/** utime + stime of a process, ms. */
export function cpuMs(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // After the comm field: state is field 3, utime 14, stime 15.
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

/** The process and its descendants (a Kamailio main process and its workers), from /proc. */
export function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = readFileSync(`/proc/${name}/stat`, 'latin1');
      parent.set(Number(name), Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone */
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) for (const [child, ppid] of parent) if (ppid === tree[i]) tree.push(child);
  return tree;
}

/** utime + stime of a process and of its descendants alive now, ms (pass the pids of processTree: workers live as long as the server). */
export function treeCpuMs(pids: readonly number[]): number {
  let ms = 0;
  for (const pid of pids) {
    try {
      ms += cpuMs(pid);
    } catch {
      /* gone */
    }
  }
  return ms;
}

/**
 * Memory of a set of processes, MiB: the sum of their RSS, and the sum of
 * their PSS (proportional set size, /proc/PID/smaps_rollup): shared memory
 * counted once across the processes, which is what several processes sharing
 * one segment (Kamailio's shm) really use. For one process PSS is about RSS.
 */
export function treeMemory(pids: readonly number[]): { rss: number; pss: number } {
  let rss = 0;
  let pss = 0;
  for (const pid of pids) {
    try {
      rss += memory(pid).rss;
      const s = readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1');
      pss += Number(/^Pss:\s+(\d+)/m.exec(s)?.[1] ?? NaN) / 1024;
    } catch {
      /* gone */
    }
  }
  return { rss, pss };
}

/** VmRSS and VmHWM, MiB. */
export function memory(pid: number): { rss: number; peak: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'latin1');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

