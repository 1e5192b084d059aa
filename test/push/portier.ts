// The in-process Portier the late-forking tests call through: UDP and TCP on
// 127.0.0.1, auth off, fast timers, and the push settings under test.
import { join } from 'node:path';
import type { Test } from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';

/** Starts Portier with `push` (a YAML flow mapping) and `metrics` listen, config in `dir`; stopped at teardown. */
export async function startPushPortier(t: Test, dir: string, push: string, metrics = 'off'): Promise<{ server: RunningServer; tcp: number; udp: number }> {
  const config = parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
      'auth: off',
      'proxy: {ring-timeout: 10}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
      `metrics: {listen: ${metrics}}`,
      `push: ${push}`,
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  const server = await startServer(config, createLogger(process.env.LF_DEBUG ? 'debug' : 'fatal'));
  t.teardown(() => server.stop());
  const ep = server.listening();
  return { server, tcp: ep.find((e) => e.protocol === 'tcp')!.port, udp: ep.find((e) => e.protocol === 'udp')!.port };
}
