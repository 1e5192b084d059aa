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
import { freeUdpPort, usersLine } from '../helpers/tools.js';

t.test('bindings survive a restart; so does a ban', async (t) => {
  // alice and door exist; they call from a trusted address, the guesser does not.
  const dir = t.testdir({
    users: `${usersLine('alice', 'alice secret pw')}\n${usersLine('door', 'never used', { kind: 'door' })}\n`,
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
  // The phone authenticates (127.0.0.5 is not trusted); the door station is trusted.
  const phone = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: port, t1: 100, t2: 400, localHost: '127.0.0.5', password: 'alice secret pw' });
  t.teardown(() => phone.close());
  t.equal((await phone.register({ expires: 600 })).status, 200);
  const guesser = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: port, t1: 50, t2: 400, localHost: '127.0.0.77', password: 'a guess, not the password' });
  t.teardown(() => guesser.close());
  t.equal((await guesser.register()).status, 403);
  t.equal((await guesser.register()).status, 403, 'the second failure starts a ban');
  await t.rejects(guesser.register(), /no final response/, 'banned');
  const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: port, t1: 100, t2: 400 });
  t.teardown(() => door.close());
  const before = door.call('sip:alice@example.test');
  t.equal((await before.final()).status, 200, 'a call is up when Portier restarts');

  await server.stop();
  server = await startServer(config, createLogger('fatal'));

  const answered = phone.incoming[0].dialog!;
  t.equal((await answered.bye()).status, 200, "the phone hangs up through the new process: the dialog's Record-Route token is still valid");
  const call = door.call('sip:alice@example.test');
  t.equal((await call.final()).status, 200, 'the call reached the phone registered before the restart');
  t.equal((await call.bye()).status, 200);
  t.equal(phone.sent.filter((m) => m.method === 'REGISTER').length, 2, 'the phone did not re-register (one REGISTER and its answer to the challenge)');
  await t.rejects(guesser.register(), /no final response/, 'still banned after the restart');
});
