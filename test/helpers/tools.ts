// Running external SIP tools (sipvicious, SIPp, sipsak...) from tests:
// bounded in time, every child killed on teardown, loopback only.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';

/** Why `cmd` cannot be used here (for `{ skip }`), or false when it runs. */
export function toolMissing(cmd: string, args: string[] = ['--version']): string | false {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  return r.error !== undefined ? `${cmd} is not installed` : false;
}

export interface ToolRun {
  /** Exit code; null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Killed because it outlived `timeoutMs`. */
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** stdout then stderr. */
  output: string;
  ms: number;
}

export interface ToolOptions {
  /** Killed (SIGKILL) after this long. */
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

const live = new Set<ChildProcess>();

/** Runs `cmd args` to completion (or its time limit); never rejects on a non-zero exit. */
export function runTool(cmd: string, args: string[], o: ToolOptions): Promise<ToolRun> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: o.env ?? process.env, cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, o.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      live.delete(child);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, signal, timedOut, stdout, stderr, output: stdout + stderr, ms: Date.now() - started });
    });
  });
}

/** Kills the children runTool started that are still running (each by its own handle). */
export function killTools(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

/** A UDP port free on `host` now (bound to 0, read, released). */
export async function freeUdpPort(host = '127.0.0.1'): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, host, r));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/**
 * Whether some process has bound UDP `port` (IPv4, any address), read from
 * /proc/net/udp so that asking never takes the port from the process that is
 * about to bind it. Without /proc (not Linux): true after half a second.
 */
export async function udpPortBound(port: number, since = Date.now()): Promise<boolean> {
  let table: string;
  try {
    table = await readFile('/proc/net/udp', 'utf8');
  } catch {
    return Date.now() - since > 500;
  }
  const hex = ':' + port.toString(16).toUpperCase().padStart(4, '0');
  return table.split('\n').some((l) => l.trim().split(/\s+/)[1]?.endsWith(hex) === true);
}

/**
 * One sample of Prometheus text: `metric(text, 'portier_bans_total')`,
 * `metric(text, 'portier_auth_failures_total', { reason: 'wrong_password' })`.
 * Labels not named are not compared; NaN when no line matches.
 */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(l[1], l[2]);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return NaN;
}

/** The Prometheus text a scraper reads from `http://127.0.0.1:PORT/metrics`. */
export async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
  return res.text();
}
