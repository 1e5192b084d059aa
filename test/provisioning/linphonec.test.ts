// linphonec (Debian linphone-cli, liblinphone 5.1: the stack under Linhome)
// configured only by Portier's provisioning link: its rc names nothing but
// the trusted CA and `[misc] config-uri`, a link made by `portier provision`.
// It fetches the XML over HTTPS, registers over TLS with the password the XML
// carried, and answers a call; with TURN, a restarted linphonec fetches the
// refresh URL with HTTP digest. Skipped without linphonec.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { opensslMissing } from '../helpers/certs.js';
import { UA } from '../helpers/ua.js';
import { provisioningRc, startProvisionedPortier, waitFor } from './liblinphone.js';

const missing = spawnSync('linphonec', ['-v'], { encoding: 'utf8', timeout: 10_000 }).error !== undefined ? 'linphonec is not installed (Debian: linphone-cli)' : (opensslMissing() ?? false);

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

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

t.test('linphonec set up by the provisioning link alone registers over TLS and answers a call', { skip: missing, timeout: 90_000 }, async (t) => {
  const s = await startProvisionedPortier(t, { turn: false });
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
  t.match(saved, /\[app\][^[]*auto_create_push_gateway_account=0/, 'no push gateway account for Linhome');
  t.match(saved, new RegExp(`\\[assistant\\][^[]*xmlrpc_url=${escape(s.baseUrl)}/xmlrpc`), "and Portier's account-manager URLs");
  t.match(saved, new RegExp(`\\[account_creator\\][^[]*url=${escape(s.baseUrl)}/api/`));
});

t.test('with TURN: a restarted linphonec fetches fresh credentials from the refresh URL, with digest', { skip: missing, timeout: 90_000 }, async (t) => {
  const s = await startProvisionedPortier(t, { turn: true });
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
