// A Portier server in a child process, for the benchmarks: start it on a
// config file, wait until it answers OPTIONS, read its CPU time and memory
// from /proc, stop it.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAndValidate, SipParseError } from '../src/sip/index.js';

const HOST = '127.0.0.1';
const RUN = Math.floor(Math.random() * 0xffffff).toString(16);
const now = (): number => performance.now();
// Works from bench/ (ts) and from dist/bench/ (compiled); Portier runs from dist either way.
const here = dirname(fileURLToPath(import.meta.url));
const root = here.endsWith(join('dist', 'bench')) ? join(here, '..', '..') : join(here, '..');
const PORTIER_MAIN = join(root, 'dist', 'src', 'cli', 'main.js');

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

export function startPortier(configPath: string, nodeArgs: readonly string[] = []): Portier {
  const child = spawn(process.execPath, [...nodeArgs, PORTIER_MAIN, '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const p: Portier = { child, pid: child.pid ?? 0, exited: Promise.resolve(null), output: [], exitCode: undefined };
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '' && p.output.length < 200) p.output.push(line);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
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
    const m = parseAndValidate(msg);
    if (!(m instanceof SipParseError) && !m.isRequest && m.cseq().method === 'OPTIONS' && m.status === 200) answered = true;
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

/** VmRSS and VmHWM, MiB. */
export function memory(pid: number): { rss: number; peak: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'latin1');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

