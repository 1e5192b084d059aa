// linphonec (Debian linphone-cli, liblinphone 5.1: the stack under Linhome)
// configured only by Portier's provisioning link: its rc names nothing but
// the trusted CA and `[misc] config-uri`, a link made by `portier provision`.
// It fetches the XML over HTTPS, registers over TLS with the password the XML
// carried, and answers a call; with TURN, a restarted linphonec fetches the
// refresh URL with HTTP digest. Skipped without linphonec.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { runCli } from '../../src/cli/run.js';
import { loadConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { makeTestCerts, opensslMissing } from '../helpers/certs.js';
import { usersLine } from '../helpers/tools.js';
import { UA } from '../helpers/ua.js';
import { freeTcpPort, recorder, writeProvisioningConfig } from './helpers.js';

const missing = spawnSync('linphonec', ['-v'], { encoding: 'utf8', timeout: 10_000 }).error !== undefined ? 'linphonec is not installed (Debian: linphone-cli)' : (opensslMissing() ?? false);

async function waitFor<T>(what: string, ms: number, cond: () => T | null | undefined | false): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = cond();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Setup {
  server: RunningServer;
  logs: string[];
  url: string;
  caCert: string;
  dir: string;
}

/** Portier with tls and provisioning (HTTPS) on pre-chosen loopback ports, and a link for directrice. */
async function setup(t: Test, o: { turn: boolean }): Promise<Setup> {
  const dir = t.testdir();
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  // belle-sip's mbedTLS compares only dNSName entries with the host it connected to (see test/interop/clients.ts).
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: certs.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  writeFileSync(join(certs.dir, 'lp.ext'), 'subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'lp.key', '-out', 'lp.csr', '-subj', '/CN=localhost');
  ssl('x509', '-req', '-in', 'lp.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'lp.pem', '-days', '2', '-extfile', 'lp.ext');
  const [tlsPort, httpsPort, turnPort] = [await freeTcpPort(), await freeTcpPort(), await freeTcpPort()];
  const path = writeProvisioningConfig(join(dir, 'portier'), {
    baseUrl: `https://127.0.0.1:${httpsPort}`,
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
  return { server, logs, url: /^(https:\/\/\S+\/p\/\S+)$/m.exec(r.out())![1], caCert: certs.paths.caCert, dir };
}

/** linphonec on `rc` (answering calls, -a), in its own process group, killed on teardown. */
class Linphonec {
  output = '';
  private readonly child;
  private readonly exited: Promise<void>;

  constructor(t: Test, readonly home: string, readonly rc: string) {
    this.child = spawn('stdbuf', ['-oL', '-eL', 'linphonec', '-c', rc, '-d', '6', '-l', join(home, 'linphonec.log'), '-a'], { cwd: home, env: { ...process.env, HOME: home, LANG: 'C' }, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8').on('data', (d: string) => (this.output += d));
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => (this.output += d));
    this.child.stdin.on('error', () => {});
    this.exited = new Promise<void>((res) => this.child.on('exit', () => res()));
    t.teardown(() => this.kill());
    this.send('soundcard use files');
  }

  send(line: string): void {
    this.child.stdin.write(line + '\n');
  }

  /** linphonec prints no registration event: `status register` is polled. */
  registered(ms: number): Promise<true> {
    return waitFor('linphonec registered', ms, () => {
      if (this.child.exitCode !== null) throw new Error(`linphonec exited (${this.child.exitCode})`);
      this.send('status register');
      return /^registered, identity="directrice" <sip:directrice@example\.test>/m.test(this.output);
    });
  }

  async quit(): Promise<void> {
    this.send('quit');
    await Promise.race([this.exited, new Promise((res) => setTimeout(res, 5000))]);
    await this.kill();
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.pid !== undefined) {
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await this.exited;
    }
  }

  diagnostics(logs: string[]): string {
    const file = join(this.home, 'linphonec.log');
    const log = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => !/ (mediastreamer|ortp)-/.test(l)).join('\n') : '';
    return `linphonec output:\n${this.output.slice(-3000)}\nlinphonec.log:\n${log.slice(-8000)}\nPortier:\n${logs.join('').slice(-3000)}`;
  }
}

/** An rc with nothing but the trusted CA, no sound card, and the provisioning link. */
function provisioningRc(dir: string, caCert: string, url: string): { home: string; rc: string } {
  const home = join(dir, 'linphonec');
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

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

t.test('linphonec set up by the provisioning link alone registers over TLS and answers a call', { skip: missing, timeout: 90_000 }, async (t) => {
  const s = await setup(t, { turn: false });
  const { home, rc } = provisioningRc(s.dir, s.caCert, s.url);
  const lp = new Linphonec(t, home, rc);
  try {
    await waitFor('the provisioning link to be used', 30_000, () => s.logs.some((l) => l.includes('provisioning link used')));
    await lp.registered(30_000);
    t.pass('registered with the provisioned account');
    t.match(lp.output, /registered, identity="directrice" <sip:directrice@example\.test> duration=3600/, 'reg_expires from provisioning (3600)');
    // A door station calls her: linphonec (-a) answers, through Portier.
    const sipPort = s.server.listening().find((e) => e.protocol === 'udp')!.port;
    const door = await UA.create({ transport: 'udp', user: 'portail-jaures', domain: 'example.test', proxyPort: sipPort, password: 'door-password-1' });
    t.teardown(() => door.close());
    const call = door.call('sip:directrice@example.test');
    t.equal((await call.final(20_000)).status, 200, 'the provisioned app answers a call from the door station');
    t.equal((await call.bye()).status, 200, 'and hangs up');
  } catch (err) {
    t.comment(lp.diagnostics(s.logs));
    throw err;
  }
  await lp.quit();
  const saved = readFileSync(rc, 'utf8');
  t.match(saved, /\[proxy_0\][^[]*reg_proxy=<sip:127\.0\.0\.1:\d+;transport=tls>/, 'linphonec kept the provisioned account');
  t.notMatch(saved, new RegExp(escape(s.url)), 'and forgot the one-time link (transient provisioning)');
});

t.test('with TURN: a restarted linphonec fetches fresh credentials from the refresh URL, with digest', { skip: missing, timeout: 90_000 }, async (t) => {
  const s = await setup(t, { turn: true });
  const { home, rc } = provisioningRc(s.dir, s.caCert, s.url);
  let lp = new Linphonec(t, home, rc);
  try {
    await lp.registered(30_000);
    await lp.quit();
    const saved = readFileSync(rc, 'utf8');
    t.match(saved, /config-uri=https:\/\/127\.0\.0\.1:\d+\/config/, 'the link was replaced by the refresh URL');
    const before = /stun_server_username=(\S+)/.exec(saved)?.[1];
    t.match(before, /^\d+:directrice@example\.test$/, 'a TURN username in the NAT policy');
    lp = new Linphonec(t, home, rc);
    await waitFor('the refresh', 30_000, () => s.logs.some((l) => l.includes('provisioning refreshed')));
    t.pass('the restarted app authenticated (HTTP digest) and got its configuration again');
    await lp.registered(30_000);
    t.pass('and registered, with the password it kept');
  } catch (err) {
    t.comment(lp.diagnostics(s.logs));
    throw err;
  }
  await lp.quit();
});
