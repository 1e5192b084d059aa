import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parseConfig, type Config } from '../../src/config/index.js';
import type { Logger } from '../../src/log.js';
import { DEMO_WARNING, HELP, runCli, version, type CliIo, type RunningServer, type StartServer } from '../../src/cli/run.js';
import { until } from '../helpers/wait.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

class FakeProcess extends EventEmitter {
  exits: number[] = [];
  exit(code: number): void {
    this.exits.push(code);
  }
}

interface Harness {
  io: CliIo;
  out: () => string;
  err: () => string;
  logs: Array<Record<string, unknown>>;
  proc: FakeProcess;
}

function harness(extra: Partial<CliIo> = {}): Harness {
  let out = '';
  let err = '';
  const logs: Array<Record<string, unknown>> = [];
  const proc = new FakeProcess();
  const io: CliIo = {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    process: proc,
    logDestination: { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) },
    ...extra,
  };
  return { io, out: () => out, err: () => err, logs, proc };
}

const dir = mkdtempSync(join(tmpdir(), 'portier-cli-'));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}
const GOOD = 'domains: [school.example.test]\nlisten: [udp:127.0.0.1:0, tcp:127.0.0.1:0]\nlog: {level: debug}\n';

/** Wait until `cond` holds (the CLI reacts to events asynchronously). */

/** A startServer that records its calls; `stop` behaves as told. */
function fakeServer(stop: () => Promise<void> = async () => {}) {
  const calls: Array<{ config: Config; log: Logger }> = [];
  const reloaded: Array<Config | undefined> = [];
  let stops = 0;
  let reloads = 0;
  const start: StartServer = async (config, log) => {
    calls.push({ config, log });
    const server: RunningServer = {
      stop: () => {
        stops++;
        return stop();
      },
      reload: (next?: Config) => {
        reloads++;
        reloaded.push(next);
      },
    };
    return server;
  };
  return { start, calls, reloaded, stops: () => stops, reloads: () => reloads };
}

t.test('--help and --version', async (t) => {
  for (const flag of ['--help', '-h']) {
    const h = harness();
    t.equal(await runCli([flag], h.io), 0);
    t.equal(h.out(), HELP);
    t.equal(h.err(), '');
  }
  t.match(HELP, /portier \[--config FILE\]/);
  t.match(HELP, /portier check --config FILE/);
  for (const flag of ['--version', '-v']) {
    const h = harness();
    t.equal(await runCli([flag], h.io), 0);
    t.equal(h.out(), `portier ${pkg.version}\n`);
  }
  t.equal(version(), pkg.version);
});

t.test('usage errors exit 2 with a hint', async (t) => {
  const cases: Array<[string[], string]> = [
    [['--bogus'], "portier: unknown option '--bogus'\nTry 'portier --help'.\n"],
    [['frobnicate'], 'portier: unknown command "frobnicate"\nTry \'portier --help\'.\n'],
    [['check'], "portier: check needs --config FILE\nTry 'portier --help'.\n"],
    [['check', 'extra', '-c', 'x'], 'portier: unexpected argument "extra"\nTry \'portier --help\'.\n'],
    [['--config', ''], "portier: --config needs a FILE\nTry 'portier --help'.\n"],
  ];
  for (const [argv, message] of cases) {
    const h = harness();
    t.equal(await runCli(argv, h.io), 2, argv.join(' '));
    t.equal(h.err(), message);
    t.equal(h.out(), '');
  }
  const h = harness();
  t.equal(await runCli(['--config'], h.io), 2);
  t.match(h.err(), /^portier: .*--config.*\nTry 'portier --help'\.\n$/);
});

t.test('check prints the effective config and exits 0', async (t) => {
  const path = file('good.yaml', GOOD);
  for (const argv of [['check', '--config', path], ['check', '-c', path], ['-c', path, 'check'], [`--config=${path}`, 'check']]) {
    const h = harness();
    t.equal(await runCli(argv, h.io), 0, argv.join(' '));
    t.equal(h.err(), '');
    t.match(h.out(), /^# Effective Portier configuration from /);
    t.match(h.out(), /message-size: 65535/, 'defaults shown');
    t.same(parseConfig(h.out(), path), parseConfig(GOOD, path), 'the output is the same config');
  }
});

t.test('check refuses a bad config: every problem on stderr, exit 1', async (t) => {
  const path = file('bad.yaml', 'domains: [a.test]\nlisten: [sctp:127.0.0.1, udp:127.0.0.1]\nlimits: {message-size: 12}\n');
  const h = harness();
  t.equal(await runCli(['check', '--config', path], h.io), 1);
  t.equal(h.out(), '');
  t.equal(
    h.err(),
    `${path}: listen[0]: unknown transport "sctp" (expected udp, tcp, tls, ws or wss)\n` +
      `${path}: limits.message-size: must be an integer between 1024 and 1048576\n`,
  );
  const missing = harness();
  t.equal(await runCli(['check', '-c', join(dir, 'nope.yaml')], missing.io), 1);
  t.equal(missing.err(), `${join(dir, 'nope.yaml')}: cannot read the configuration: no such file\n`);
  const syntax = harness();
  const s = file('syntax.yaml', 'domains: [a.test\n');
  t.equal(await runCli(['check', '-c', s], syntax.io), 1);
  t.match(syntax.err(), new RegExp(`^${s.replace(/[.]/g, '\\.')}:\\d+:\\d+: `));
});

t.test('a config error at start: one line on stderr, exit 1, nothing started', async (t) => {
  const server = fakeServer();
  const one = file('one.yaml', 'domains: [a.test]\nlisten: [udp:127.0.0.1:99999]\n');
  const h = harness({ startServer: server.start });
  t.equal(await runCli(['--config', one], h.io), 1);
  t.equal(h.err(), `portier: ${one}: listen[0]: port "99999" in "udp:127.0.0.1:99999" must be an integer between 0 and 65535\n`);
  t.equal(h.err().split('\n').length, 2, 'one line');
  t.notMatch(h.err(), /\bat .*:\d+:\d+\)/, 'no stack trace');
  t.equal(server.calls.length, 0);

  const many = file('many.yaml', 'domains: []\nlisten: []\n');
  const m = harness({ startServer: server.start });
  t.equal(await runCli(['-c', many], m.io), 1);
  t.equal(m.err(), `portier: ${many}: domains: must not be empty (and 1 more; see: portier check --config ${many})\n`);
  t.equal(m.proc.listenerCount('SIGTERM'), 0);
});

t.test('serving: SIGTERM awaits stop() and exits 0; SIGHUP reloads', async (t) => {
  const server = fakeServer();
  const path = file('serve.yaml', GOOD);
  const h = harness({ startServer: server.start });
  const done = runCli(['--config', path], h.io);
  await until(() => h.proc.listenerCount('SIGTERM') === 1);
  t.equal(server.calls.length, 1);
  t.same(server.calls[0].config, parseConfig(GOOD, path), 'the loaded config is handed over');
  t.equal(server.calls[0].log.level, 'debug', 'the logger uses log.level');
  t.notOk(h.logs.some((l) => l.msg === DEMO_WARNING), 'no demo warning with --config');
  t.ok(h.logs.some((l) => l.msg === 'portier started' && l.config === path && l.name === 'portier'));

  h.proc.emit('SIGHUP');
  t.equal(server.reloads(), 1, 'SIGHUP asks the server to reload');
  t.ok(h.logs.some((l) => l.level === 'info' && l.signal === 'SIGHUP' && /reloading the configuration/.test(String(l.msg))));

  h.proc.emit('SIGTERM');
  t.equal(await done, 0);
  t.equal(server.stops(), 1);
  t.same(h.proc.exits, []);
  t.ok(h.logs.some((l) => l.msg === 'stopping' && l.signal === 'SIGTERM'));
  t.ok(h.logs.some((l) => l.msg === 'stopped'));
  for (const event of ['SIGTERM', 'SIGINT', 'SIGHUP', 'uncaughtException', 'unhandledRejection']) {
    t.equal(h.proc.listenerCount(event), 0, `${event} handler removed`);
  }
});

t.test('SIGHUP reads the file again: live keys applied, one warning per key that needs a restart, a bad file changes nothing', async (t) => {
  const server = fakeServer();
  const path = file('reload.yaml', GOOD);
  const h = harness({ startServer: server.start });
  const done = runCli(['--config', path], h.io);
  await until(() => h.proc.listenerCount('SIGHUP') === 1);

  writeFileSync(path, 'domains: [other.example.test]\nlisten: [udp:127.0.0.1:0]\nlog: {level: warn}\nproxy: {ring-timeout: 12}\nlimits: {connections: 50}\n');
  h.proc.emit('SIGHUP');
  t.equal(server.reloads(), 1);
  const applied = server.reloaded[0]!;
  t.equal(applied.log.level, 'warn', 'log.level applies live');
  t.equal(applied.proxy.ringTimeout, 12, 'proxy.ring-timeout applies live');
  t.same(applied.domains, ['school.example.test'], 'domains keep their running value');
  t.same(applied.listen, server.calls[0].config.listen, 'listen keeps its running value');
  t.equal(applied.limits.connections, 10000, 'limits.connections keeps its running value');
  t.ok(Object.isFrozen(applied.limits), 'the applied config is frozen like a loaded one');
  const warned = h.logs.filter((l) => l.level === 'warn' && typeof l.key === 'string').map((l) => l.key);
  t.same(warned.sort(), ['domains', 'limits.connections', 'listen'], 'one warning per key that needs a restart');
  const done1 = h.logs.find((l) => l.msg === 'configuration reloaded');
  t.same(done1?.changed, ['log.level', 'proxy.ring-timeout']);

  // A file that no longer loads: logged, nothing handed to the server.
  writeFileSync(path, 'domains: [school.example.test]\nlisten: [sctp:127.0.0.1:0]\n');
  h.proc.emit('SIGHUP');
  t.equal(server.reloads(), 1, 'the server is not asked to reload');
  const err = h.logs.find((l) => l.level === 'error' && /cannot reload the configuration/.test(String(l.msg)));
  t.match(String(err?.msg), /listen\[0\]: unknown transport "sctp".*everything stays as it was/);

  // Back to a good file: compared with what runs (warn, ring-timeout 12), not with the start.
  writeFileSync(path, 'domains: [school.example.test]\nlisten: [udp:127.0.0.1:0]\nlog: {level: warn}\nproxy: {ring-timeout: 12}\n');
  const before = h.logs.length;
  h.proc.emit('SIGHUP');
  t.equal(server.reloads(), 2);
  t.same(h.logs.slice(before).find((l) => l.msg === 'configuration reloaded')?.changed, []);

  h.proc.emit('SIGTERM');
  t.equal(await done, 0);
});

t.test('a server whose reload throws: logged, the running configuration stays', async (t) => {
  let attempts = 0;
  const start: StartServer = async () => ({
    stop: async () => {},
    reload: () => {
      attempts++;
      throw new Error('tls.cert: cannot read /nowhere/cert.pem');
    },
  });
  const path = file('reload-fail.yaml', GOOD);
  const h = harness({ startServer: start });
  const done = runCli(['--config', path], h.io);
  await until(() => h.proc.listenerCount('SIGHUP') === 1);
  h.proc.emit('SIGHUP');
  t.equal(attempts, 1);
  t.ok(h.logs.some((l) => l.level === 'error' && l.err === 'tls.cert: cannot read /nowhere/cert.pem' && /everything stays as it was/.test(String(l.msg))));
  t.notOk(h.logs.some((l) => l.msg === 'configuration reloaded'));
  h.proc.emit('SIGTERM');
  t.equal(await done, 0);
});

t.test('without --config: the demo config and exactly one warning line', async (t) => {
  const server = fakeServer();
  const h = harness({ startServer: server.start });
  const done = runCli([], h.io);
  await until(() => h.proc.listenerCount('SIGINT') === 1);
  const config = server.calls[0].config;
  t.equal(config.demo, true);
  t.same(config.domains, ['localhost']);
  t.same(config.listen, [
    { protocol: 'udp', host: '127.0.0.1', port: 5060 },
    { protocol: 'tcp', host: '127.0.0.1', port: 5060 },
  ]);
  const warnings = h.logs.filter((l) => l.level === 'warn');
  t.equal(warnings.length, 1, 'one warning');
  t.equal(warnings[0].msg, DEMO_WARNING);
  t.match(DEMO_WARNING, /127\.0\.0\.1 only/);
  t.match(DEMO_WARNING, /domain localhost/);
  t.match(DEMO_WARNING, /no authentication/);
  t.match(DEMO_WARNING, /trying Portier on one machine/);
  t.notMatch(DEMO_WARNING, /\n/);
  t.equal(h.err(), '');
  h.proc.emit('SIGINT');
  t.equal(await done, 0);
});

t.test('a second signal exits at once', async (t) => {
  const server = fakeServer(() => new Promise<void>(() => {})); // never finishes
  const h = harness({ startServer: server.start, stopTimeoutMs: 200 });
  const done = runCli(['-c', file('second.yaml', GOOD)], h.io);
  await until(() => h.proc.listenerCount('SIGINT') === 1);
  h.proc.emit('SIGINT');
  h.proc.emit('SIGINT');
  t.same(h.proc.exits, [130], '128 + SIGINT');
  h.proc.emit('SIGTERM');
  t.same(h.proc.exits, [130, 143], '128 + SIGTERM');
  t.ok(h.logs.some((l) => l.msg === 'second signal during shutdown; exiting now'));
  // (The fake exit returns; then the stop deadline passes.)
  t.equal(await done, 1, 'a stop that outlives its deadline exits 1');
  t.ok(h.logs.some((l) => l.level === 'error' && /did not finish in time/.test(String(l.msg))));
});

t.test('a failing stop() exits 1 and is logged', async (t) => {
  const server = fakeServer(() => Promise.reject(new Error('socket jammed')));
  const h = harness({ startServer: server.start });
  const done = runCli(['-c', file('failstop.yaml', GOOD)], h.io);
  await until(() => h.proc.listenerCount('SIGTERM') === 1);
  h.proc.emit('SIGTERM');
  t.equal(await done, 1);
  const line = h.logs.find((l) => l.msg === 'error while stopping');
  t.match(line, { level: 'error', err: { message: 'socket jammed' } });
});

t.test('a server that cannot start: one line on stderr, fatal log, exit 1', async (t) => {
  const h = harness({
    startServer: async () => {
      throw Object.assign(new Error('listen EADDRINUSE: address already in use 127.0.0.1:5060\n    at somewhere'), {
        code: 'EADDRINUSE',
      });
    },
  });
  t.equal(await runCli(['-c', file('busy.yaml', GOOD)], h.io), 1);
  t.equal(h.err(), 'portier: cannot start: listen EADDRINUSE: address already in use 127.0.0.1:5060\n');
  t.ok(h.logs.some((l) => l.level === 'fatal' && l.msg === 'cannot start'));
  t.equal(h.proc.listenerCount('uncaughtException'), 0);
});

t.test('unhandled errors are logged, then exit 1', async (t) => {
  const server = fakeServer();
  const h = harness({ startServer: server.start });
  const done = runCli(['-c', file('crash.yaml', GOOD)], h.io);
  await until(() => h.proc.listenerCount('SIGTERM') === 1);
  h.proc.emit('uncaughtException', new Error('boom'));
  h.proc.emit('unhandledRejection', new Error('rejected'));
  t.same(h.proc.exits, [1, 1]);
  t.match(
    h.logs.filter((l) => l.level === 'fatal'),
    [
      { msg: 'uncaught exception; exiting', err: { message: 'boom' } },
      { msg: 'unhandled promise rejection; exiting', err: { message: 'rejected' } },
    ],
  );
  h.proc.emit('SIGTERM');
  t.equal(await done, 0);
});
