// Debian's sipsak against Portier's registrar: its usrloc mode registers a
// contact and checks the 200 (a client written by others).
import t from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import dgram from 'node:dgram';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';

const sipsak = spawnSync('sipsak', ['--version'], { encoding: 'utf8' });

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

t.test('sipsak usrloc: REGISTER accepted with 200', { skip: sipsak.error ? 'sipsak not installed' : false }, async (t) => {
  const config = parseConfig('domains: [127.0.0.1]\nstorage: {type: memory}\nlisten: [udp:127.0.0.1:0]\nlog: {level: fatal}\n', 'sipsak.yaml');
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const port = server.listening()[0].port;
  const contactPort = await freeUdpPort();
  let out = '';
  let code = 0;
  try {
    const r = await promisify(execFile)(
      'sipsak',
      ['-U', '-i', '-C', `sip:carol@127.0.0.1:${contactPort}`, '-s', `sip:carol@127.0.0.1:${port}`, '-x', '120', '-v'],
      { encoding: 'utf8', timeout: 20_000 },
    );
    out = r.stdout;
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string; message?: string };
    code = typeof e.code === 'number' ? e.code : -1;
    out = (e.stdout ?? '') + (e.stderr ?? '') + (e.message ?? '');
  }
  t.equal(code, 0, 'sipsak exits 0', { output: out.slice(-800) });
  t.match(out, /All usrloc tests completed successful/, 'sipsak reports its usrloc test successful');
  t.ok(server.stats.requests >= 1, 'Portier handled the REGISTER');
});
