// A redis-server owned by a test: started on a free loopback port with no
// persistence of its own (`--save "" --appendonly no`), in a fresh
// directory; waited for until it answers PING; stopped (and the directory
// removed) on close. For fault tests it can be stopped and started again on
// the same port, keeping its data through an explicit snapshot
// (SHUTDOWN SAVE, loaded again at start), or frozen with SIGSTOP, which is
// what a hung or partitioned server looks like from a client: connections
// stay open, nothing answers.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Why redis-server cannot be used here (for `{ skip }`), or false when it runs. */
export function redisServerMissing(): string | false {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return r.error !== undefined || r.status !== 0 ? 'redis-server is not installed' : false;
}

export interface RedisServer {
  readonly port: number;
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  /** The data directory (dump.rdb of stop({ save: true })). */
  readonly dir: string;
  /** Whether the process is running (and not stopped by stop()). */
  readonly running: boolean;
  /** One command on a connection of its own; resolves with the reply as RESP text decoded (strings, numbers, arrays). */
  command(...args: (string | number)[]): Promise<unknown>;
  /** Stops the server: SHUTDOWN SAVE (a snapshot that start() loads again) or SHUTDOWN NOSAVE. Resolves once the process has exited. */
  stop(opts?: { save?: boolean }): Promise<void>;
  /** Starts the server again on the same port (after stop()), waits until it answers PING. */
  start(): Promise<void>;
  /** SIGSTOP: the process stays, its sockets stay open, nothing is answered. */
  freeze(): void;
  /** SIGCONT after freeze(). */
  thaw(): void;
  /** Stops it for good (SIGKILL if SIGTERM is not enough within 2 s) and removes its directory. */
  close(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** A TCP port free on 127.0.0.1 now (bound to 0, read, released). */
export async function freeTcpPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', resolve);
  });
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function startRedisServer(): Promise<RedisServer> {
  const port = await freeTcpPort();
  const dir = mkdtempSync(join(tmpdir(), 'portier-redis-'));
  let child: ChildProcess | null = null;
  let frozen = false;
  let output = '';

  const launch = async (): Promise<void> => {
    output = '';
    const c = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--dbfilename', 'dump.rdb', '--protected-mode', 'yes'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = c;
    live.add(c);
    c.stdout!.setEncoding('utf8').on('data', (d: string) => (output = (output + d).slice(-4000)));
    c.stderr!.setEncoding('utf8').on('data', (d: string) => (output = (output + d).slice(-4000)));
    let exited = false;
    c.once('exit', () => {
      exited = true;
      live.delete(c);
    });
    const end = Date.now() + 10_000;
    for (;;) {
      if (exited) throw new Error(`redis-server exited at start:\n${output}`);
      if (await answersPing(port)) return;
      if (Date.now() > end) {
        c.kill('SIGKILL');
        throw new Error(`redis-server did not answer PING within 10 s:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  const waitExit = (c: ChildProcess, ms: number): Promise<boolean> =>
    new Promise((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve(true);
      const t = setTimeout(() => resolve(false), ms);
      c.once('exit', () => {
        clearTimeout(t);
        resolve(true);
      });
    });

  await launch();

  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    get running() {
      return child !== null && child.exitCode === null && child.signalCode === null;
    },
    command: (...args) => resp(port, args.map(String)),
    async stop(opts = {}) {
      const c = child;
      if (c === null) return;
      if (frozen) server.thaw();
      await resp(port, ['SHUTDOWN', opts.save === true ? 'SAVE' : 'NOSAVE']).catch(() => undefined);
      if (!(await waitExit(c, 5000))) {
        c.kill('SIGKILL');
        await waitExit(c, 2000);
      }
      child = null;
    },
    async start() {
      if (server.running) throw new Error('redis-server is running already');
      await launch();
    },
    freeze() {
      if (child === null) throw new Error('redis-server is not running');
      child.kill('SIGSTOP');
      frozen = true;
    },
    thaw() {
      if (child !== null && frozen) child.kill('SIGCONT');
      frozen = false;
    },
    async close() {
      const c = child;
      if (c !== null) {
        if (frozen) server.thaw();
        c.kill('SIGTERM');
        if (!(await waitExit(c, 2000))) {
          c.kill('SIGKILL');
          await waitExit(c, 2000);
        }
        child = null;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

async function answersPing(port: number): Promise<boolean> {
  try {
    return (await resp(port, ['PING'], 500)) === 'PONG';
  } catch {
    return false;
  }
}

/**
 * Sends one command in RESP on a fresh connection and decodes the reply
 * (enough of RESP2 for tests: simple strings, errors, integers, bulk
 * strings, arrays). Rejects on a Redis error, a closed connection without a
 * reply, or after `ms`.
 */
export function resp(port: number, args: string[], ms = 3000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no reply to ${args[0]} within ${ms} ms`));
    }, ms);
    const done = (err: Error | null, v?: unknown) => {
      clearTimeout(timer);
      sock.destroy();
      if (err !== null) reject(err);
      else resolve(v);
    };
    sock.on('connect', () => {
      let out = `*${args.length}\r\n`;
      for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
      sock.write(out);
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      try {
        const r = decode(buf, 0);
        if (r === null) return; // more to come
        if (r.value instanceof Error) done(r.value);
        else done(null, r.value);
      } catch (err) {
        done(err as Error);
      }
    });
    sock.on('error', (err) => done(err));
    sock.on('close', () => done(new Error(`connection closed without a reply to ${args[0]}`)));
  });
}

function decode(buf: Buffer, at: number): { value: unknown; end: number } | null {
  const eol = buf.indexOf('\r\n', at);
  if (eol === -1) return null;
  const line = buf.toString('utf8', at + 1, eol);
  switch (String.fromCharCode(buf[at])) {
    case '+':
      return { value: line, end: eol + 2 };
    case '-':
      return { value: new Error(line), end: eol + 2 };
    case ':':
      return { value: Number(line), end: eol + 2 };
    case '$': {
      const n = Number(line);
      if (n === -1) return { value: null, end: eol + 2 };
      if (buf.length < eol + 2 + n + 2) return null;
      return { value: buf.toString('utf8', eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n === -1) return { value: null, end: eol + 2 };
      const out: unknown[] = [];
      let pos = eol + 2;
      for (let i = 0; i < n; i++) {
        const r = decode(buf, pos);
        if (r === null) return null;
        out.push(r.value);
        pos = r.end;
      }
      return { value: out, end: pos };
    }
    default:
      throw new Error(`unexpected RESP reply: ${line}`);
  }
}
