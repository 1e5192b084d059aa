// SIGHUP reload over real loopback sockets (issue 9): the configuration file
// is read again through src/cli/reload.ts, as the SIGHUP handler does. Users,
// log level, trusted sources, ring groups and TLS certificates change live;
// a call in progress and an open TLS connection go on; a broken file or
// certificate changes nothing.
import { copyFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { loadConfig, type Config } from '../../src/config/index.js';
import { createLogger, type Logger } from '../../src/log.js';
import { reloadConfig } from '../../src/cli/reload.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { SipMessage } from '../../src/sip/index.js';
import { makeTestCerts, opensslMissing } from '../helpers/certs.js';
import { usersLine } from '../helpers/tools.js';
import { replyCollector, UA, type UAOptions } from '../helpers/ua.js';
import { until } from '../helpers/wait.js';

interface Started {
  server: RunningServer;
  config: Config;
  log: Logger;
  lines: Array<Record<string, unknown>>;
  port(protocol: string): number;
}

async function start(t: Test, file: string, level: 'info' | 'warn' = 'info'): Promise<Started> {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger(level, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const config = loadConfig(file);
  const server = await startServer(config, log);
  t.teardown(() => server.stop());
  const port = (protocol: string) => {
    const e = server.listening().find((x) => x.protocol === protocol);
    if (e === undefined) throw new Error(`no ${protocol} listener`);
    return e.port;
  };
  return { server, config, log, lines, port };
}

function yaml(lines: string[]): string {
  return lines.join('\n') + '\n';
}

t.test('users, log level, trusted sources and ring groups change live; the call in progress goes on', async (t) => {
  const dir = t.testdir({ users: [usersLine('alice', 'alice password 1'), usersLine('bob', 'bob password 22')].join('\n') + '\n' });
  const file = join(dir, 'portier.yaml');
  const base = [
    'domains: [example.test]',
    'storage: {type: memory}',
    'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
    'timers: {t1: 100, t2: 400, t4: 500}',
  ];
  writeFileSync(file, yaml([...base, 'auth: {users: users, realm: example.test}', 'log: {level: warn}']));
  const p = await start(t, file, 'warn');
  const ua = async (user: string, o: Partial<UAOptions> = {}) => {
    const u = await UA.create({ transport: 'tcp', user, domain: 'example.test', proxyPort: p.port('tcp'), t1: 100, t2: 400, ...o });
    t.teardown(() => u.close());
    return u;
  };

  const alice = await ua('alice', { password: 'alice password 1' });
  const bob = await ua('bob', { password: 'bob password 22' });
  const carol = await ua('carol', { password: 'carol password 333' });
  t.equal((await alice.register()).status, 200);
  t.equal((await bob.register()).status, 200);
  t.equal((await carol.register()).status, 403, 'carol is no account yet');
  const call = alice.call('sip:bob@example.test');
  t.equal((await call.final()).status, 200, 'alice calls bob');
  t.equal((await call.info()).status, 200, 'the call works before the reload');
  t.notOk(p.lines.some((l) => l.msg === 'registration'), 'registration lines are info: not shown at warn');

  // A new account, a ring group, a trusted source, the log level; and a key that needs a restart.
  writeFileSync(join(dir, 'users'), [usersLine('alice', 'alice password 1'), usersLine('bob', 'bob password 22'), usersLine('carol', 'carol password 333')].join('\n') + '\n');
  writeFileSync(
    file,
    yaml([
      ...base,
      'auth: {users: users, realm: example.test, trusted: [127.0.0.77/32]}',
      'log: {level: debug}',
      'limits: {connections: 500}',
      'groups: {desk: {members: [carol]}}',
    ]),
  );
  const r = reloadConfig(p.server, p.config, p.log);
  t.ok(r.ok, 'reloaded');
  t.same(r.live.sort(), ['auth.trusted', 'groups', 'log.level']);
  t.same(r.restart, ['limits.connections']);
  t.equal(r.config.limits.connections, 10000, 'the running value stays');
  t.equal(p.log.level, 'debug', 'the logger is at the new level');
  t.ok(p.lines.some((l) => l.level === 'warn' && l.key === 'limits.connections' && /needs a restart/.test(String(l.msg))), 'one warning names limits.connections');

  t.equal((await call.info()).status, 200, 'the call in progress goes on after the reload');
  t.equal((await carol.register()).status, 200, 'carol registers now');
  t.ok(p.lines.some((l) => l.msg === 'registration' && l.aor === 'sip:carol@example.test' && l.change === 'added'), 'and it is logged at info, now shown');
  const desk = alice.call('sip:desk@example.test');
  t.equal((await desk.final()).status, 200, 'the new ring group rings carol');
  t.equal((await desk.bye()).status, 200);
  // A trusted source registers without credentials (accounts only).
  const trusted = await ua('bob', { localHost: '127.0.0.77' });
  t.equal((await trusted.register()).status, 200, 'the new trusted source needs no digest');
  t.equal((await call.bye()).status, 200, 'the call started before the reload ends normally');

  // A file that no longer loads: logged, nothing changes.
  writeFileSync(file, yaml([...base, 'auth: {users: users, realm: example.test}', 'log: {level: bogus}']));
  const bad = reloadConfig(p.server, r.config, p.log);
  t.notOk(bad.ok);
  t.equal(bad.config, r.config, 'the running configuration stays');
  t.equal(p.log.level, 'debug', 'the level too');
  t.ok(p.lines.some((l) => l.level === 'error' && /log\.level: .*everything stays as it was/.test(String(l.msg))));
  t.same(alice.errors, []);
  t.same(bob.errors, []);
});

t.test('security limits change live: a rate limit starts, an exempt source is let through', async (t) => {
  const dir = t.testdir({});
  const file = join(dir, 'portier.yaml');
  const base = ['domains: [example.test]', 'storage: {type: memory}', 'listen: [tcp:127.0.0.1:0]', 'log: {level: warn}'];
  writeFileSync(file, yaml([...base, 'security: {rate: {per-source: 0}}']));
  const p = await start(t, file, 'warn');
  const dev = await UA.create({ transport: 'tcp', user: 'dev', domain: 'example.test', proxyPort: p.port('tcp'), localHost: '127.0.0.31' });
  t.teardown(() => dev.close());
  const burst = async (n: number) => {
    const codes: number[] = [];
    for (let i = 0; i < n; i++) codes.push((await dev.register()).status);
    return codes;
  };
  t.notOk((await burst(6)).includes(503), 'no rate limit at first');

  writeFileSync(file, yaml([...base, 'security: {rate: {per-source: 1, burst: 2}}']));
  let r = reloadConfig(p.server, p.config, p.log);
  t.same(r.live, ['security']);
  t.ok((await burst(6)).includes(503), 'over the new rate: 503 on TCP');

  writeFileSync(file, yaml([...base, 'security: {rate: {per-source: 1, burst: 2}, exempt: [127.0.0.31]}']));
  r = reloadConfig(p.server, r.config, p.log);
  t.ok(r.ok);
  t.notOk((await burst(6)).includes(503), 'the source is exempt now');
});

t.test('a new certificate: new TLS and WSS handshakes see it, an established TLS connection keeps working', { skip: opensslMissing() ?? false }, async (t) => {
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const dir = certs.dir;
  copyFileSync(certs.paths.serverCert, join(dir, 'live.pem'));
  copyFileSync(certs.paths.serverKey, join(dir, 'live.key'));
  const file = join(dir, 'portier.yaml');
  writeFileSync(
    file,
    yaml(['domains: [example.test]', 'storage: {type: memory}', 'listen: [tls:127.0.0.1:0, wss:127.0.0.1:0]', 'tls: {cert: live.pem, key: live.key, ca: ca.pem}', 'log: {level: info}']),
  );
  const p = await start(t, file);
  const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;
  const oldPrint = fingerprint(certs.serverCert);
  const newPrint = fingerprint(certs.otherCert);

  /** A TLS handshake to `port`; resolves with the socket and the fingerprint of the certificate the server showed. */
  const handshake = async (port: number): Promise<{ sock: tls.TLSSocket; print: string }> => {
    // The certificate is what is checked here, not its trust: both are accepted.
    const sock = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
    t.teardown(() => {
      sock.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      sock.once('secureConnect', resolve);
      sock.once('error', reject);
    });
    return { sock, print: sock.getPeerX509Certificate()!.fingerprint256 };
  };

  const a = await handshake(p.port('tls'));
  t.equal(a.print, oldPrint, 'before: the first certificate');
  t.equal((await handshake(p.port('wss'))).print, oldPrint, 'before: wss too');
  const options = sipOverTls(a.sock, p.port('tls'));
  t.equal((await options.ask(1)).status, 200, 'OPTIONS over the first connection');

  // Renewal in place: same paths, new contents (as certbot does).
  writeFileSync(join(dir, 'live.pem'), certs.otherCert);
  writeFileSync(join(dir, 'live.key'), certs.otherKey);
  const r = reloadConfig(p.server, p.config, p.log);
  t.ok(r.ok, 'reloaded');
  t.same(r.live, [], 'no key changed: the files were read again anyway');
  t.ok(p.lines.some((l) => /tls: new certificate loaded/.test(String(l.msg))), 'the new certificate is logged');

  t.equal((await handshake(p.port('tls'))).print, newPrint, 'a new TLS handshake gets the new certificate');
  t.equal((await handshake(p.port('wss'))).print, newPrint, 'a new WSS handshake too');
  t.equal((await options.ask(2)).status, 200, 'the connection opened before the reload still works');

  // A key that is not the certificate's: refused, the certificate in use stays.
  writeFileSync(join(dir, 'live.key'), certs.serverKey);
  const bad = reloadConfig(p.server, r.config, p.log);
  t.notOk(bad.ok, 'refused');
  t.ok(p.lines.some((l) => l.level === 'error' && /everything stays as it was/.test(String(l.msg))), 'logged');
  t.equal((await handshake(p.port('tls'))).print, newPrint, 'handshakes still get the certificate loaded last');
  t.equal((await options.ask(3)).status, 200);
});

/** OPTIONS requests down an open TLS socket, one at a time. */
function sipOverTls(sock: tls.TLSSocket, port: number) {
  const { replies, framer } = replyCollector('tls');
  sock.on('data', (d: Buffer) => framer.push(d));
  return {
    async ask(n: number): Promise<SipMessage> {
      const local = `127.0.0.1:${sock.localPort}`;
      sock.write(
        [
          `OPTIONS sip:127.0.0.1:${port};transport=tls SIP/2.0`,
          `Via: SIP/2.0/TLS ${local};branch=z9hG4bK-reload-${n};rport`,
          'Max-Forwards: 70',
          'From: <sip:tester@example.test>;tag=reload',
          `To: <sip:127.0.0.1:${port}>`,
          'Call-ID: reload-tls@test',
          `CSeq: ${n} OPTIONS`,
          'Content-Length: 0',
          '',
          '',
        ].join('\r\n'),
      );
      await until(() => replies.some((m) => m.cseq().seq === n), `the answer to OPTIONS ${n}`, 5000);
      return replies.find((m) => m.cseq().seq === n)!;
    },
  };
}
