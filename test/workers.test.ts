// `workers: 2` end to end: a real `portier` process (src/cli/main.ts in a
// child process) forks two workers on the same UDP and TCP sockets and a
// test-owned redis-server. Calls with many Call-IDs (so both workers own
// some), INVITE retransmissions read by either worker and absorbed by the
// owner, CANCEL, a fork to a UDP and a TCP device (the TCP connection held
// by one worker, the call owned by either), a TCP caller, merged /metrics,
// a worker killed and restarted, SIGTERM; and a worker that cannot start (its
// port taken): the primary exits 1. Everything on 127.0.0.0/8; every wait
// bounded.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { UA } from './helpers/ua.js';
import { until } from './helpers/wait.js';
import { redisServerMissing, startRedisServer } from './storage/redis-server.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const DOMAIN = 'example.test';
const missing = redisServerMissing();
// Three processes load the TypeScript sources (twice more for a restart): slow on a busy machine.
t.setTimeout(300_000);

/** A port free now for both UDP and TCP on 127.0.0.1. */
async function freePort(): Promise<number> {
  for (;;) {
    const s = net.createServer();
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    const u = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      u.once('error', () => resolve(false));
      u.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((r) => (ok ? u.close(() => r()) : r()));
    if (ok) return port;
  }
}

async function get(url: string): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
    return { status: res.status, body: await res.text() };
  } catch {
    return { status: 0, body: '' };
  }
}

/** The value of one sample of /metrics text, or 0. */
function sample(text: string, name: string, labels: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(name + '{') && line.includes(labels)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

if (missing) {
  t.plan(0, missing);
} else {
  await t.test('two workers on one redis', async (t) => {
    const redis = await startRedisServer();
    t.teardown(() => redis.close());
    const dir = t.testdir();
    const port = await freePort();
    const metricsPort = await freePort();
    const file = join(dir, 'portier.yaml');
    writeFileSync(
      file,
      [
        `domains: [${DOMAIN}]`,
        `listen: [udp:127.0.0.1:${port}, tcp:127.0.0.1:${port}]`,
        `metrics: {listen: "127.0.0.1:${metricsPort}"}`,
        `storage: {type: redis, url: ${JSON.stringify(redis.url)}, prefix: "wk${process.pid}:"}`,
        'auth: off',
        'security: {exempt: [127.0.0.0/8]}',
        'timers: {t1: 100, t2: 400, t4: 500}',
        'log: {level: info}',
        'workers: 2',
      ].join('\n') + '\n',
    );
    const child: ChildProcess = spawn(process.execPath, [...process.execArgv, MAIN, '--config', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    t.teardown(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const metrics = `http://127.0.0.1:${metricsPort}`;
    /** Worker pids by index, from the primary's "worker ready" lines (the latest one wins). */
    const workerPids = (): Map<number, number> => {
      const m = new Map<number, number>();
      for (const line of output.split('\n')) {
        if (!line.includes('"worker ready"')) continue;
        try {
          const j = JSON.parse(line) as { worker: number; pid: number };
          m.set(j.worker, j.pid);
        } catch {
          // the line is still being written
        }
      }
      return m;
    };

    await until(async () => (await get(metrics + '/readyz')).status === 200, 'both workers ready', 90_000);
    t.equal(workerPids().size, 2, 'the primary started two workers');

    const uas: UA[] = [];
    t.teardown(() => {
      for (const u of uas) u.close();
    });
    const ua = async (user: string, host: string, transport: 'udp' | 'tcp' = 'udp') => {
      const u = await UA.create({ transport, user, domain: DOMAIN, proxyPort: port, localHost: host, t1: 100, t2: 400 });
      uas.push(u);
      return u;
    };

    const phones = [await ua('p0', '127.0.0.11'), await ua('p1', '127.0.0.12'), await ua('p2', '127.0.0.13')];
    for (const p of phones) t.equal((await p.register({ expires: 600 })).status, 200, `${p.user} registers`);
    const door = await ua('door', '127.0.0.20');
    t.equal((await door.register({ expires: 600 })).status, 200, 'the door station registers');

    await t.test('calls with many Call-IDs: both workers own some, each is set up and torn down once', async (t) => {
      const CALLS = 24;
      let answered = 0;
      let acked = 0;
      let byes = 0;
      for (let i = 0; i < CALLS; i++) {
        const phone = phones[i % phones.length];
        const before = phone.incoming.length;
        const call = door.call(phone.aor);
        const final = await call.final();
        if (final.status !== 200) {
          t.fail(`call ${i}: ${final.status}`);
          continue;
        }
        answered++;
        if (phone.incoming.length === before + 1) {
          const inc = phone.incoming[before];
          await until(() => inc.dialog !== null && inc.dialog.requests.some((r) => r.method === 'ACK'), `ACK of call ${i}`, 3000).then(
            () => acked++,
            () => {},
          );
        }
        if ((await call.bye()).status === 200) byes++;
      }
      t.equal(answered, CALLS, 'every call answered');
      t.equal(acked, CALLS, 'every ACK reached the phone');
      t.equal(byes, CALLS, 'every BYE answered 200');
      t.same(
        phones.map((p) => p.incoming.length),
        phones.map((_, k) => Math.ceil((CALLS - k) / phones.length)),
        'each phone got exactly one INVITE per call',
      );
      const text = (await get(metrics + '/metrics')).body;
      const w0 = sample(text, 'portier_sip_requests_total', 'worker="0",method="INVITE",transport="udp"');
      const w1 = sample(text, 'portier_sip_requests_total', 'worker="1",method="INVITE",transport="udp"');
      t.ok(w0 > 0 && w1 > 0, `both workers handled INVITEs (${w0} and ${w1})`);
      t.ok(w0 + w1 >= CALLS, `every INVITE from the door counted by the worker that took it (${w0 + w1} for ${CALLS} calls)`);
    });

    await t.test('INVITE retransmissions, read by either worker, are absorbed by the owner', async (t) => {
      const phone = phones[0];
      phone.onInvite = () => ({ action: 'answer', ring: true, after: 400 });
      for (let i = 0; i < 6; i++) {
        const before = phone.incoming.length;
        const call = door.call(phone.aor);
        for (let k = 0; k < 5; k++) call.retransmit();
        const final = await call.final();
        t.equal(final.status, 200, `call ${i} answered`);
        t.equal(phone.incoming.length, before + 1, `call ${i}: one INVITE at the phone for six sent`);
        if (final.status === 200) await call.bye();
      }
      phone.onInvite = () => ({ action: 'answer', ring: true, after: 50 });
    });

    await t.test('CANCEL of a ringing call: 487 to the door, the phone cancelled', async (t) => {
      const phone = phones[1];
      phone.onInvite = () => ({ action: 'ring' });
      for (let i = 0; i < 4; i++) {
        const before = phone.incoming.length;
        const call = door.call(phone.aor);
        t.equal((await call.cancel()).status, 200, `call ${i}: CANCEL 200`);
        t.equal((await call.final()).status, 487, `call ${i}: INVITE 487`);
        await until(() => phone.incoming[before]?.cancelled === true, 'the phone cancelled', 3000).catch(() => {});
        t.ok(phone.incoming[before]?.cancelled, `call ${i}: the phone got the CANCEL`);
      }
      phone.onInvite = () => ({ action: 'answer', ring: true, after: 50 });
    });

    await t.test('a fork to a UDP and a TCP device of one AOR; a TCP caller', async (t) => {
      const udpDev = await ua('staff', '127.0.0.31');
      const tcpDev = await ua('staff', '127.0.0.32', 'tcp');
      t.equal((await udpDev.register({ expires: 600 })).status, 200, 'the UDP device registers');
      t.equal((await tcpDev.register({ expires: 600 })).status, 200, 'the TCP device registers');
      udpDev.onInvite = () => ({ action: 'ring' });
      tcpDev.onInvite = () => ({ action: 'answer', ring: true, after: 100 });
      for (let i = 0; i < 8; i++) {
        const u0 = udpDev.incoming.length;
        const t0 = tcpDev.incoming.length;
        const call = door.call(`sip:staff@${DOMAIN}`);
        const final = await call.final();
        t.equal(final.status, 200, `call ${i}: answered by the TCP device`);
        t.equal(tcpDev.incoming.length, t0 + 1, `call ${i}: one INVITE at the TCP device`);
        t.equal(udpDev.incoming.length, u0 + 1, `call ${i}: one INVITE at the UDP device`);
        await until(() => udpDev.incoming[u0]?.cancelled === true, 'the UDP device cancelled', 3000).catch(() => {});
        t.ok(udpDev.incoming[u0]?.cancelled, `call ${i}: the UDP device got the CANCEL`);
        if (final.status === 200) t.equal((await call.bye()).status, 200, `call ${i}: BYE 200`);
      }
      // The TCP device calls a UDP phone: its requests come on the connection one worker holds, whoever owns the call.
      for (let i = 0; i < 6; i++) {
        const call = tcpDev.call(phones[2].aor);
        const final = await call.final();
        t.equal(final.status, 200, `TCP caller ${i}: answered`);
        if (final.status === 200) t.equal((await call.bye()).status, 200, `TCP caller ${i}: BYE 200`);
      }
      for (const u of [udpDev, tcpDev]) t.same(u.errors, [], `${u.user}@${u.localHost}: no UA errors`);
    });

    await t.test('/metrics merged: every sample labelled with its worker, each family once', async (t) => {
      const m = await get(metrics + '/metrics');
      t.equal(m.status, 200);
      const types = m.body.split('\n').filter((l) => l.startsWith('# TYPE '));
      t.equal(new Set(types).size, types.length, 'each TYPE line once');
      const samples = m.body.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
      t.ok(samples.length > 50, `${samples.length} samples`);
      t.ok(
        samples.every((l) => /\{worker="[01]"/.test(l)),
        'every sample has a worker label',
      );
      t.equal((await get(metrics + '/healthz')).status, 200, '/healthz 200');
      // The relay carried messages both ways and sends down the TCP device's connection; it lost none.
      const relay = (kind: string) => sample(m.body, 'portier_worker_relay_total', `worker="0",kind="${kind}"`) + sample(m.body, 'portier_worker_relay_total', `worker="1",kind="${kind}"`);
      t.ok(relay('forwarded') > 0, `messages handed to their owner: ${relay('forwarded')}`);
      t.equal(relay('received'), relay('forwarded'), 'each one received by its owner');
      t.ok(relay('sends') > 0, `sends down a connection the other worker holds: ${relay('sends')}`);
      t.equal(relay('dropped'), 0, 'no frame lost');
    });

    await t.test('a worker killed is restarted, and calls go on', async (t) => {
      const before = workerPids();
      const victim = before.get(1) as number;
      process.kill(victim, 'SIGKILL');
      await until(() => workerPids().get(1) !== victim, 'worker 1 restarted', 90_000);
      t.not(workerPids().get(1), victim, 'worker 1 has a new process');
      await until(async () => (await get(metrics + '/readyz')).status === 200, 'ready again', 90_000);
      let ok = 0;
      for (let i = 0; i < 10; i++) {
        const call = door.call(phones[i % 3].aor);
        const final = await call.final();
        if (final.status === 200) {
          ok++;
          await call.bye();
        }
      }
      t.equal(ok, 10, 'ten calls after the restart, all answered');
    });

    await t.test('SIGTERM stops the primary and its workers', async (t) => {
      const pids = [...workerPids().values()];
      child.kill('SIGTERM');
      t.equal(await exited, 0, 'exit status 0');
      for (const pid of pids) {
        let alive = true;
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
        t.notOk(alive, `worker ${pid} is gone`);
      }
    });
  });

  await t.test('a worker that cannot start: the primary stops and exits 1, saying why', async (t) => {
    const redis = await startRedisServer();
    t.teardown(() => redis.close());
    const dir = t.testdir();
    const taken = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => taken.bind({ port: 0, address: '127.0.0.1', exclusive: true }, resolve));
    t.teardown(() => taken.close());
    const file = join(dir, 'portier.yaml');
    writeFileSync(
      file,
      [`domains: [${DOMAIN}]`, `listen: [udp:127.0.0.1:${taken.address().port}]`, `storage: {type: redis, url: ${JSON.stringify(redis.url)}}`, 'auth: off', 'workers: 2'].join('\n') + '\n',
    );
    const child = spawn(process.execPath, [...process.execArgv, MAIN, '--config', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    t.teardown(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    t.equal(code, 1, 'exit status 1');
    t.match(output, /address already in use/, 'the reason is printed');
    t.match(output, /a worker could not start/, 'the primary says a worker could not start');
  });
}
