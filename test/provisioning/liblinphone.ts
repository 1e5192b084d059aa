// Shared by the tests that run liblinphone itself against Portier (Debian's
// linphone-cli, and the small client of ./liblinphone-client.c): Portier with
// TLS and HTTPS provisioning on loopback, a link for directrice, and an rc
// holding nothing but the test CA and that link.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { runCli } from '../../src/cli/run.js';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { makeTestCerts } from '../helpers/certs.js';
import { usersLine } from '../helpers/tools.js';
import { freeTcpPort, recorder, writeProvisioningConfig } from './helpers.js';

export interface ProvisionedPortier {
  server: RunningServer;
  logs: string[];
  /** The one-time link made for directrice@example.test. */
  url: string;
  /** The provisioning listener's base URL. */
  baseUrl: string;
  caCert: string;
  dir: string;
}

/** Portier with tls and provisioning (HTTPS) on pre-chosen loopback ports, and a link for directrice. */
export async function startProvisionedPortier(t: Test, o: { turn: boolean }): Promise<ProvisionedPortier> {
  const dir = t.testdir();
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  // belle-sip's mbedTLS compares only dNSName entries with the host it connected to (see test/interop/clients.ts).
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: certs.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  writeFileSync(join(certs.dir, 'lp.ext'), 'subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'lp.key', '-out', 'lp.csr', '-subj', '/CN=localhost');
  ssl('x509', '-req', '-in', 'lp.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'lp.pem', '-days', '2', '-extfile', 'lp.ext');
  const [tlsPort, httpsPort, turnPort] = [await freeTcpPort(), await freeTcpPort(), await freeTcpPort()];
  const baseUrl = `https://127.0.0.1:${httpsPort}`;
  const path = writeProvisioningConfig(join(dir, 'portier'), {
    baseUrl,
    listen: `127.0.0.1:${httpsPort}`,
    tls: { cert: join(certs.dir, 'lp.pem'), key: join(certs.dir, 'lp.key') },
    sipListen: ['udp:127.0.0.1:0', `tls:127.0.0.1:${tlsPort}`],
    // A TURN server nobody answers on: the refresh is what is tested, not the relay.
    turn: o.turn ? `turn:127.0.0.1:${turnPort}?transport=udp` : null,
  });
  // The apps' server is this test's TLS listener (sip-server belongs to the provisioning: section the helper wrote).
  writeFileSync(path, readFileSync(path, 'utf8').replace('  token-ttl: 1h\n', `  token-ttl: 1h\n  sip-server: 127.0.0.1:${tlsPort}\n`));
  writeFileSync(join(dir, 'portier', 'users'), usersLine('portail-jaures', 'door-password-1', { realm: 'example.test', domain: 'example.test', kind: 'door' }) + '\n');
  const logs: string[] = [];
  const server = await startServer(loadConfig(path), createLogger('info', { write: (s: string) => void logs.push(s) }));
  t.teardown(() => server.stop());
  const r = recorder();
  t.equal(await runCli(['provision', 'directrice@example.test', '--config', path], r.io), 0, r.err());
  return { server, logs, url: /^(https:\/\/\S+\/p\/\S+)$/m.exec(r.out())![1], baseUrl, caCert: certs.paths.caCert, dir };
}

/** An rc in `dir/name` with nothing but the trusted CA, no sound card, and the provisioning link. */
export function provisioningRc(dir: string, caCert: string, url: string, name = 'linphonec'): { home: string; rc: string } {
  const home = join(dir, name);
  mkdirSync(join(home, '.local', 'share', 'linphone'), { recursive: true });
  const rc = join(home, 'linphonerc');
  writeFileSync(
    rc,
    [
      '[sip]',
      'sip_port=-1',
      'sip_tcp_port=-2',
      'sip_tls_port=-2',
      'use_ipv6=0',
      'register_only_when_network_is_up=0',
      'auto_net_state_mon=0',
      'ping_with_options=0',
      `root_ca=${caCert}`,
      'verify_server_certs=1',
      'verify_server_cn=1',
      '[rtp]',
      'audio_rtp_port=-1',
      'video_rtp_port=-1',
      '[video]',
      'capture=0',
      'display=0',
      '[misc]',
      `config-uri=${url}`,
      '',
    ].join('\n'),
  );
  return { home, rc };
}

/** Polls `cond` every 100 ms until it gives a value, or throws after `ms`. */
export async function waitFor<T>(what: string, ms: number, cond: () => T | null | undefined | false): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
