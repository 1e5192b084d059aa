// Registrations that survive a restart, end to end (issue 8): a phone
// registers, Portier stops and starts again on the same SQLite file and
// ports, and a door station's call reaches the phone without it
// re-registering. A ban survives the restart too.
import { join } from 'node:path';
import t from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { UA } from '../helpers/ua.js';
import { freeUdpPort } from '../helpers/tools.js';

t.test('bindings survive a restart; so does a ban', async (t) => {
  // alice and door exist; they call from a trusted address, the guesser does not.
  const dir = t.testdir({
    users: ['alice', 'door'].map((u) => `${u}@example.test kind=phone realm=example.test md5=${'0'.repeat(32)} sha256=${'0'.repeat(64)}`).join('\n') + '\n',
  });
  const port = await freeUdpPort();
  const config = parseConfig(
    [
      'domains: [example.test]',
      `listen: [udp:127.0.0.1:${port}]`,
      `storage: {type: sqlite, path: ${JSON.stringify(join(dir, 'data', 'portier.db'))}, flush-interval: 20}`,
      'security: {auth-failures: {max: 2, window: 60, ban: 600, max-ban: 600}}',
      'auth: {users: users, trusted: [127.0.0.1/32]}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  let server: RunningServer = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const phone = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: port, t1: 100, t2: 400 });
  t.teardown(() => phone.close());
  t.equal((await phone.register({ expires: 600 })).status, 200);
  const guesser = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: port, t1: 50, t2: 400, localHost: '127.0.0.77', password: 'a guess, not the password' });
  t.teardown(() => guesser.close());
  t.equal((await guesser.register()).status, 403);
  t.equal((await guesser.register()).status, 403, 'the second failure starts a ban');
  await t.rejects(guesser.register(), /no final response/, 'banned');

  await server.stop();
  server = await startServer(config, createLogger('fatal'));

  const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: port, t1: 100, t2: 400 });
  t.teardown(() => door.close());
  const call = door.call('sip:alice@example.test');
  t.equal((await call.final()).status, 200, 'the call reached the phone registered before the restart');
  t.equal((await call.bye()).status, 200);
  t.equal(phone.sent.filter((m) => m.method === 'REGISTER').length, 1, 'the phone did not re-register');
  await t.rejects(guesser.register(), /no final response/, 'still banned after the restart');
});
