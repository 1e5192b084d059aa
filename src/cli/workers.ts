// `workers: N` (N > 1): the process started by `portier --config FILE`
// becomes a node:cluster primary that runs no SIP itself. It forks N
// workers, each running the whole server on the same sockets (UDP shared,
// TCP/TLS/WS connections handed out in turn by the primary), tells each the
// others' relay ports (src/transport/relay.ts), restarts one that dies,
// passes SIGHUP on, stops them on SIGTERM/SIGINT, and serves metrics.listen
// for all of them: /metrics merged with a `worker` label, /healthz and
// /readyz ok when every worker's is, other paths from worker 0.

import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Config } from '../config/index.js';
import type { Logger } from '../log.js';
import { closeHttp, listenHttp, requestPath } from '../http-listen.js';
import { mergeWorkerMetrics } from '../metrics/merge.js';

const ENV = 'PORTIER_WORKER';

/** What a worker learns from its environment. */
export interface WorkerEnv {
  index: number;
  count: number;
  cookie: Buffer;
}

/** This process's seat when it is a worker forked by runPrimary(), else null. */
export function workerFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerEnv | null {
  const raw = env[ENV];
  if (raw === undefined || !cluster.isWorker) return null;
  const v = JSON.parse(raw) as { index: number; count: number; cookie: string };
  return { index: v.index, count: v.count, cookie: Buffer.from(v.cookie, 'hex') };
}

/** A worker's configuration: its metrics on a private port of loopback (the primary serves metrics.listen). */
export function workerConfig(config: Config): Config {
  return config.metrics.listen === null ? config : { ...config, metrics: { listen: { host: '127.0.0.1', port: 0 } } };
}

/** Messages between primary and workers over the cluster's IPC channel. */
type ToPrimary = { type: 'ready'; relay: number; metrics: number | null } | { type: 'users-changed' };
type ToWorker = { type: 'peers'; relay: Array<number | null> };

/** Worker side: tell the primary where this worker is, and hear the others' relay ports. */
export function joinPrimary(server: { transport?: { relayPort: number | null; setRelayPeers(p: Array<number | null>): void }; metricsAddress?(): { port: number } | null }): { usersChanged(): void } {
  const send = (m: ToPrimary) => process.send?.(m);
  process.on('message', (m: ToWorker) => {
    if (m !== null && typeof m === 'object' && m.type === 'peers') server.transport?.setRelayPeers(m.relay);
  });
  send({ type: 'ready', relay: server.transport?.relayPort ?? 0, metrics: server.metricsAddress?.()?.port ?? null });
  return { usersChanged: () => send({ type: 'users-changed' }) };
}

interface Slot {
  worker: Worker | null;
  relay: number | null;
  metrics: number | null;
  /** Restarts in a row without a minute of life between them: the backoff grows with it. */
  failures: number;
  startedAt: number;
}

/** The primary. Resolves with the exit status once every worker has stopped. */
export async function runPrimary(config: Config, log: Logger, proc: { on(e: string, f: (...a: unknown[]) => void): unknown; off(e: string, f: (...a: unknown[]) => void): unknown }, stopTimeoutMs: number): Promise<number> {
  const count = config.workers;
  const cookie = randomBytes(16).toString('hex');
  const slots: Slot[] = [];
  for (let i = 0; i < count; i++) slots.push({ worker: null, relay: null, metrics: null, failures: 0, startedAt: 0 });
  let stopping = false;
  let allReady: (ok: boolean) => void = () => {};
  const ready = new Promise<boolean>((r) => (allReady = r));
  let started = false;

  const peers = () => {
    const relay = slots.map((s) => s.relay);
    for (const s of slots) if (s.worker !== null && s.relay !== null && s.worker.isConnected()) s.worker.send({ type: 'peers', relay } satisfies ToWorker);
  };
  const fork = (index: number) => {
    const slot = slots[index];
    slot.startedAt = Date.now();
    const w = cluster.fork({ [ENV]: JSON.stringify({ index, count, cookie }) });
    slot.worker = w;
    w.on('message', (m: ToPrimary) => {
      if (m?.type === 'ready') {
        slot.relay = m.relay;
        slot.metrics = m.metrics;
        log.info({ worker: index, pid: w.process.pid }, 'worker ready');
        peers();
        if (!started && slots.every((s) => s.relay !== null)) {
          started = true;
          allReady(true);
        }
      } else if (m?.type === 'users-changed') {
        // A provisioning link changed a password on worker 0: the others read the files again.
        for (const s of slots) if (s !== slot) s.worker?.process.kill('SIGHUP');
      }
    });
    w.on('exit', (code, signal) => {
      slot.worker = null;
      slot.relay = null;
      slot.metrics = null;
      peers();
      if (stopping) return;
      if (!started) {
        log.fatal({ worker: index, code, signal }, 'a worker could not start');
        allReady(false);
        return;
      }
      slot.failures = Date.now() - slot.startedAt > 60_000 ? 1 : slot.failures + 1;
      const delay = Math.min(30_000, 500 * 2 ** (slot.failures - 1));
      log.error({ worker: index, code, signal, restartInMs: delay }, 'worker died; restarting it');
      // Not unref'd: with every worker dead and no metrics listener, it is all that keeps the primary up.
      setTimeout(() => {
        if (!stopping) fork(index);
      }, delay);
    });
  };

  log.info({ workers: count }, 'starting workers');
  for (let i = 0; i < count; i++) fork(i);
  const timeout = setTimeout(() => allReady(false), 60_000);
  const ok = await ready;
  clearTimeout(timeout);

  const live = () => slots.filter((s) => s.worker !== null).map((s) => s.worker as Worker);
  const stopAll = async (): Promise<void> => {
    stopping = true;
    const exits = live().map((w) => new Promise<void>((r) => (w.isDead() ? r() : w.once('exit', () => r()))));
    for (const w of live()) w.process.kill('SIGTERM');
    const deadline = setTimeout(() => {
      for (const w of live()) w.process.kill('SIGKILL');
    }, stopTimeoutMs);
    await Promise.all(exits);
    clearTimeout(deadline);
  };
  if (!ok) {
    await stopAll();
    return 1;
  }

  let metrics: http.Server | null = null;
  if (config.metrics.listen !== null) {
    metrics = http.createServer((req, res) => void serveMerged(req, res, slots));
    try {
      await listenHttp(metrics, config.metrics.listen, 'metrics.listen');
    } catch (err) {
      log.fatal({ err }, 'cannot start');
      await stopAll();
      return 1;
    }
  }
  log.info({ workers: count }, 'portier started');

  return new Promise<number>((resolve) => {
    const onStop = (signal: unknown) => {
      if (stopping) return;
      log.info({ signal }, 'stopping workers');
      proc.off('SIGHUP', onHup);
      stopAll().then(async () => {
        if (metrics !== null) await closeHttp(metrics);
        log.info('stopped');
        resolve(0);
      }, () => resolve(1));
    };
    const onTerm = () => onStop('SIGTERM');
    const onInt = () => onStop('SIGINT');
    const onHup = () => {
      log.info({ signal: 'SIGHUP' }, 'reloading: passed to every worker');
      for (const w of live()) w.process.kill('SIGHUP');
    };
    proc.on('SIGTERM', onTerm);
    proc.on('SIGINT', onInt);
    proc.on('SIGHUP', onHup);
  });
}

/** GET from one worker's private metrics port: status and body; a worker that does not answer gives 503. */
function fetchWorker(port: number | null, path: string): Promise<{ status: number; type: string; body: string }> {
  if (port === null) return Promise.resolve({ status: 503, type: 'text/plain', body: 'worker not running\n' });
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 502, type: res.headers['content-type'] ?? 'text/plain', body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', () => resolve({ status: 502, type: 'text/plain', body: 'worker answer cut\n' }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 503, type: 'text/plain', body: 'worker did not answer\n' }));
  });
}

async function serveMerged(req: http.IncomingMessage, res: http.ServerResponse, slots: readonly Slot[]): Promise<void> {
  const path = requestPath(req.url);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
    return;
  }
  const answers = await Promise.all(slots.map((s) => fetchWorker(s.metrics, req.url ?? '/')));
  let status: number;
  let type: string;
  let body: string;
  if (path === '/metrics' && answers.every((a) => a.status === 200)) {
    status = 200;
    type = answers[0].type;
    body = mergeWorkerMetrics(answers.map((a) => a.body));
  } else {
    // Health and readiness: the first worker that is not fine speaks for all; else worker 0.
    const bad = answers.find((a) => a.status >= 300);
    const pick = bad ?? answers[0];
    status = pick.status;
    type = pick.type;
    body = pick.body;
  }
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
}
