// Debian's coturn (turnserver), started by the test on loopback from
// conf/coturn.conf (ports, realm, secret and logging replaced; no daemon),
// accepts the TURN credentials Portier puts in a provisioning XML and refuses
// expired ones and ones made with another secret. The Allocate client is
// ./stun-client.ts. Skipped without turnserver (Debian package coturn).

import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runCli } from '../../src/cli/run.js';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { turnCredentials } from '../../src/provisioning/turn.js';
import { startServer } from '../../src/server.js';
import { freeUdpPort } from '../helpers/tools.js';
import { freeTcpPort, get, parseLpConfig, recorder, writeProvisioningConfig } from './helpers.js';
import { ALLOCATE_ERROR, ALLOCATE_SUCCESS, allocate, binding } from './stun-client.js';

const missing = spawnSync('turnserver', ['--version'], { encoding: 'utf8', timeout: 10_000 }).error !== undefined ? 'turnserver is not installed (Debian: coturn)' : false;

const SECRET = 'north-gate-shared-secret';

/** conf/coturn.conf with what a test on loopback must change. */
function testCoturnConf(dir: string, port: number, relayBase: number): string {
  const replaced: Record<string, string> = {
    'listening-port': String(port),
    'listening-ip': '127.0.0.1',
    'min-port': String(relayBase),
    'max-port': String(relayBase + 99),
    realm: 'turn.example.test',
    'static-auth-secret': SECRET,
    'log-file': 'stdout',
  };
  const lines = readFileSync(new URL('../../conf/coturn.conf', import.meta.url), 'utf8').split('\n');
  const out = lines.map((l) => {
    const key = /^([a-z0-9-]+)=/.exec(l)?.[1];
    return key !== undefined && key in replaced ? `${key}=${replaced[key]}` : l;
  });
  for (const key of Object.keys(replaced)) if (!out.some((l) => l.startsWith(`${key}=`))) throw new Error(`conf/coturn.conf has no ${key}= line`);
  out.push('relay-ip=127.0.0.1', `pidfile=${join(dir, 'turnserver.pid')}`, `db=${join(dir, 'turndb')}`, 'no-tls', 'no-dtls');
  const path = join(dir, 'turnserver.conf');
  writeFileSync(path, out.join('\n') + '\n');
  return path;
}

t.test("coturn accepts Portier's TURN credentials and refuses expired ones", { skip: missing, timeout: 60_000 }, async (t) => {
  const dir = t.testdir();
  const port = await freeUdpPort();
  const relayBase = 40000 + Math.floor(Math.random() * 200) * 100;
  const conf = testCoturnConf(dir, port, relayBase);
  const child = spawn('turnserver', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  t.teardown(async () => {
    if (child.exitCode === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await exited;
    }
  });
  // Ready when it answers a STUN binding request (at most 15 s).
  let mapped: string | null = null;
  for (const end = Date.now() + 15_000; mapped === null && Date.now() < end && child.exitCode === null; ) mapped = await binding('127.0.0.1', port);
  t.ok(mapped, `turnserver answers STUN on 127.0.0.1:${port}`) || t.comment(output.slice(-4000));
  if (mapped === null) return;

  // Portier, configured with that TURN server, provisions an account: the credentials come out of the XML it serves.
  const hp = await freeTcpPort();
  const sp = writeProvisioningConfig(join(dir, 'portier'), { baseUrl: `http://127.0.0.1:${hp}`, listen: `127.0.0.1:${hp}`, turn: `turn:127.0.0.1:${port}?transport=udp` });
  const server = await startServer(loadConfig(sp), createLogger('fatal'));
  t.teardown(() => server.stop());
  const r = recorder();
  t.equal(await runCli(['provision', 'gardien@example.test', '--config', sp], r.io), 0, r.err());
  const url = /^(http:\/\/\S+\/p\/\S+)$/m.exec(r.out())![1];
  const xml = parseLpConfig((await get(url)).body);
  t.equal(xml.nat_policy_0.stun_server, `127.0.0.1:${port}`);
  const username = xml.nat_policy_0.stun_server_username;
  const password = xml.auth_info_1.passwd;

  const ok = await allocate('127.0.0.1', port, username, password);
  t.equal(ok.realm, 'turn.example.test', "coturn's 401 names its realm");
  t.equal(ok.type, ALLOCATE_SUCCESS, `allocation with the provisioned credentials succeeds (error ${ok.error})`) || t.comment(output.slice(-4000));
  t.match(ok.relayed, /^127\.0\.0\.1:\d+$/, 'a relayed address');
  const relayPort = Number(ok.relayed?.split(':')[1]);
  t.ok(relayPort >= relayBase && relayPort < relayBase + 100, 'from the configured relay range');

  const expired = turnCredentials(SECRET, 'gardien@example.test', -60);
  const refused = await allocate('127.0.0.1', port, expired.username, expired.password);
  t.equal(refused.type, ALLOCATE_ERROR, 'an expired credential is refused');
  t.equal(refused.error, 401);

  const other = turnCredentials('another-secret', 'gardien@example.test', 3600);
  const wrong = await allocate('127.0.0.1', port, other.username, other.password);
  t.equal(wrong.type, ALLOCATE_ERROR, 'a credential made with another secret is refused');
  t.equal(wrong.error, 401);
});
