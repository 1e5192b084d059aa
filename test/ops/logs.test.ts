// Logs (issue 9): at log level debug, a full call with digest authentication
// (REGISTER 401, INVITE 407, a wrong password, answer, INFO, BYE) leaves no
// password, nonce, response= value or Authorization / Proxy-Authorization
// value in any line; every registration change is one info line naming the
// AOR, the contact (without its push token), the expiry, the transport and
// the User-Agent.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger, safeContact } from '../../src/log.js';
import { startServer } from '../../src/server.js';
import { usersLine } from '../helpers/tools.js';
import { challengesOf, UA, type UAOptions } from '../helpers/ua.js';
import { until } from '../helpers/wait.js';

const PASSWORDS = { alice: 'alice secret passphrase', bob: 'bob secret passphrase', door: 'door station secret' };
const PUSH_TOKEN = 'fcm-token-0123456789abcdef';

t.test('a full call with digest at debug: registration lines, a call line, and no credential anywhere', async (t) => {
  const dir = t.testdir({});
  writeFileSync(
    join(dir, 'users'),
    [usersLine('alice', PASSWORDS.alice), usersLine('bob', PASSWORDS.bob), usersLine('door', PASSWORDS.door, { kind: 'door' })].join('\n') + '\n',
  );
  const raw: string[] = [];
  const log = createLogger('debug', { write: (s: string) => void raw.push(s) });
  const config = parseConfig(
    [
      'domains: [example.test]',
      'storage: {type: memory}',
      'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
      'auth: {users: users, realm: example.test}',
      'registrar: {min-expires: 1}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: debug}',
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  const server = await startServer(config, log);
  t.teardown(() => server.stop());
  const port = (p: string) => server.listening().find((e) => e.protocol === p)!.port;
  const ua = async (user: string, o: Partial<UAOptions> = {}) => {
    const transport = o.transport ?? 'udp';
    const u = await UA.create({ transport, user, domain: 'example.test', proxyPort: port(transport), t1: 100, t2: 400, ...o });
    t.teardown(() => u.close());
    return u;
  };

  const bob = await ua('bob', { password: PASSWORDS.bob, transport: 'tcp' });
  t.equal((await bob.register({ uriParams: `pn-provider=fcm;pn-prid=${PUSH_TOKEN};pn-param=project-1` })).status, 200);
  const door = await ua('door', { password: PASSWORDS.door, algorithms: ['MD5'] });
  t.equal((await door.register()).status, 200);
  t.equal((await door.register()).status, 200, 'a refresh');
  const wrong = await ua('alice', { password: 'not the password', localHost: '127.0.0.21' });
  t.equal((await wrong.register()).status, 403, 'a wrong password');
  const alice = await ua('alice', { password: PASSWORDS.alice });
  const shortLived = await ua('alice', { password: PASSWORDS.alice });
  t.equal((await shortLived.register({ expires: 1 })).status, 200);

  const call = door.call('sip:bob@example.test');
  t.equal((await call.response(407)).status, 407, 'the INVITE is challenged');
  t.equal((await call.final()).status, 200, 'answered');
  t.equal((await call.info()).status, 200, 'DTMF by INFO');
  t.equal((await call.bye()).status, 200);
  t.equal((await bob.unregister()).status, 200);
  // The short registration ends; the next REGISTER of the AOR finds it expired.
  await new Promise((r) => setTimeout(r, 1200));
  t.equal((await alice.register()).status, 200);
  await until(() => raw.some((l) => l.includes('"msg":"call"')), 'the call line');

  const lines = raw.map((l) => JSON.parse(l) as Record<string, unknown>);
  const regs = lines.filter((l) => l.msg === 'registration');
  for (const r of regs) t.equal(r.level, 'info', 'registration lines are info');
  const bobAdded = regs.find((r) => r.aor === 'sip:bob@example.test' && r.change === 'added');
  t.ok(bobAdded, 'bob added');
  t.equal(bobAdded?.transport, 'tcp');
  t.equal(bobAdded?.userAgent, 'PortierTestUA/1.0');
  t.equal(bobAdded?.push, true, 'says the device can be pushed');
  t.match(bobAdded?.expires, Number);
  t.ok((bobAdded?.expires as number) > 500 && (bobAdded?.expires as number) <= 600, 'seconds left');
  t.match(String(bobAdded?.contact), /^sip:bob@127\.0\.0\.1:\d+/);
  t.notMatch(String(bobAdded?.contact), /pn-/, 'the contact without its push parameters');
  t.ok(regs.some((r) => r.aor === 'sip:door@example.test' && r.change === 'refreshed'), 'door refreshed');
  t.ok(regs.some((r) => r.aor === 'sip:bob@example.test' && r.change === 'removed' && r.cause === 'unregistered' && r.expires === 0), 'bob removed');
  t.ok(regs.some((r) => r.aor === 'sip:alice@example.test' && r.change === 'expired'), 'the short registration expired');
  const callLine = lines.find((l) => l.msg === 'call');
  t.equal(callLine?.level, 'info');
  t.notMatch(String((callLine?.call as { answeredBy?: string })?.answeredBy), /pn-/, 'the device that answered, without its push token');
  t.ok(lines.some((l) => l.level === 'debug' && l.msg === 'sip request in' && l.method === 'INVITE'), 'per-message lines at debug');

  // Every secret the exchange carried, as the clients saw it.
  const secrets = new Set<string>([...Object.values(PASSWORDS), 'not the password', PUSH_TOKEN]);
  for (const u of [bob, door, wrong, alice, shortLived]) {
    for (const m of u.received) for (const c of challengesOf(m)) secrets.add(c.params.get('nonce')!);
    for (const m of u.sent) {
      for (const h of [...m.getAll('authorization'), ...m.getAll('proxy-authorization')]) {
        secrets.add(h);
        for (const p of h.matchAll(/(?:response|cnonce|nonce)="([^"]+)"/g)) secrets.add(p[1]);
      }
    }
  }
  t.ok(secrets.size > 10, `nonces and responses collected (${secrets.size})`);
  const text = raw.join('');
  for (const s of secrets) t.notOk(text.includes(s), `never logged: ${s.slice(0, 24)}…`);
  t.notMatch(text, /response=/i, 'no response= anywhere');
  t.notMatch(text, /Digest /, 'no credentials header value');
});

t.test('safeContact drops passwords, push parameters and URI headers', async (t) => {
  t.equal(safeContact('sip:bob@192.0.2.1:5060;transport=tcp'), 'sip:bob@192.0.2.1:5060;transport=tcp');
  t.equal(safeContact('sip:bob:hunter2@192.0.2.1;ob'), 'sip:bob@192.0.2.1;ob');
  t.equal(safeContact('sip:bob@h;pn-provider=apns;pn-prid=abc:def;pn-param=T.b.voip;app-id=x;transport=tls'), 'sip:bob@h;transport=tls');
  t.equal(safeContact('sip:bob@h?X-Secret=1'), 'sip:bob@h');
  t.equal(safeContact('sip:[::1]:5060;PN-TOK=zz'), 'sip:[::1]:5060');
});
