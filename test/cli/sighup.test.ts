// A real SIGHUP to a real `portier` process (src/cli/main.ts in a child
// node, with the TypeScript loader this test runs under): the configuration
// and the users file are read again, and SIGTERM still stops it cleanly.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { usersLine } from '../helpers/tools.js';
import { UA } from '../helpers/ua.js';
import { until } from '../helpers/wait.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

t.test('SIGHUP: a new account and log level without a restart; SIGTERM exits 0', { timeout: 60_000 }, async (t) => {
  const dir = t.testdir({ users: usersLine('alice', 'alice password 1') + '\n' });
  const file = join(dir, 'portier.yaml');
  const config = (level: string) =>
    ['domains: [example.test]', 'storage: {type: memory}', 'listen: [udp:127.0.0.1:0]', 'auth: {users: users, realm: example.test}', `log: {level: ${level}}`].join('\n') + '\n';
  writeFileSync(file, config('info'));

  const child = spawn(process.execPath, [...process.execArgv, MAIN, '--config', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines: Array<Record<string, unknown>> = [];
  let stderr = '';
  let rest = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    const parts = (rest + d).split('\n');
    rest = parts.pop() ?? '';
    for (const p of parts) if (p.trim() !== '') lines.push(JSON.parse(p) as Record<string, unknown>);
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const line = (msg: string) => lines.find((l) => l.msg === msg);

  await until(() => line('listening') !== undefined || child.exitCode !== null, 'portier listening', 30_000);
  t.ok(line('listening'), `started (${stderr})`);
  const port = Number(/:(\d+)$/.exec((line('listening')!.listen as string[])[0])![1]);

  const carol = await UA.create({ transport: 'udp', user: 'carol', domain: 'example.test', proxyPort: port, password: 'carol password 333', t1: 100, t2: 400 });
  t.teardown(() => carol.close());
  t.equal((await carol.register()).status, 403, 'carol is no account yet');

  writeFileSync(join(dir, 'users'), [usersLine('alice', 'alice password 1'), usersLine('carol', 'carol password 333')].join('\n') + '\n');
  writeFileSync(file, config('debug'));
  child.kill('SIGHUP');
  await until(() => line('configuration reloaded') !== undefined, 'the reload', 10_000);
  t.same(line('configuration reloaded')!.changed, ['log.level']);
  t.ok(lines.some((l) => l.msg === 'users file reloaded' && l.accounts === 2));

  t.equal((await carol.register()).status, 200, 'carol registers after SIGHUP');
  await until(() => lines.some((l) => l.msg === 'registration' && l.aor === 'sip:carol@example.test'), 'the registration line');

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM: exit 0');
  t.ok(line('stopped'));
});
