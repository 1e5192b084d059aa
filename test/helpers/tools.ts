// Running external SIP tools (sipvicious, SIPp, sipsak...) from tests:
// bounded in time, every child killed on teardown, loopback only.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Test } from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';

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

/** A users-file line for `user@realm`, its HA1 hashes computed here from the password (independently of src/auth). */
export function usersLine(user: string, password: string, o: { kind?: string; realm?: string; domain?: string } = {}): string {
  const realm = o.realm ?? 'example.test';
  const ha1 = (alg: string) => createHash(alg).update(`${user}:${realm}:${password}`, 'utf8').digest('hex');
  return `${user}@${o.domain ?? realm} kind=${o.kind ?? 'phone'} realm=${realm} md5=${ha1('md5')} sha256=${ha1('sha256')}`;
}

export interface InteropPortier {
  server: RunningServer;
  /** The UDP listener's port. */
  port: number;
  metrics(): Promise<string>;
}

/**
 * Portier on 127.0.0.1 (UDP, port chosen by the kernel) for a tool to probe:
 * digest accounts from `dir/users` in realm example.test, metrics on, nothing
 * kept between runs (a ban or binding in a file would leak into the next test).
 * `extra` adds YAML lines (`auth:` children indented by two spaces go right after it).
 * `domains` and `listen` replace `[example.test]` and `[udp:127.0.0.1:0]`
 * (UDP first, so that `port` stays the UDP listener's).
 */
export async function interopPortier(
  t: Test,
  dir: string,
  o: { auth?: string[]; extra?: string[]; domains?: string[]; listen?: string[] } = {},
): Promise<InteropPortier> {
  const config = parseConfig(
    [
      `domains: [${(o.domains ?? ['example.test']).join(', ')}]`,
      'storage: {type: memory}',
      `listen: [${(o.listen ?? ['udp:127.0.0.1:0']).join(', ')}]`,
      'auth:',
      '  users: users',
      '  realm: example.test',
      ...(o.auth ?? []).map((l) => '  ' + l),
      ...(o.extra ?? []),
      'log: {level: fatal}',
      'metrics: {listen: 127.0.0.1:0}',
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const m = server.metricsAddress()!;
  return { server, port: server.listening()[0].port, metrics: () => scrape(m.port) };
}
