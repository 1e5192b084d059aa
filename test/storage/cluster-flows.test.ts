// Several nodes, one Redis (issue 8, item 3): a device's flow (its TCP
// connection, or the NAT binding of its UDP packets) belongs to the node it
// registered through. A call that reaches another node goes through that
// one (the Path entry it put in the binding, RFC 3327) and down the flow;
// in-dialog requests follow Record-Route both ways. A device asleep behind
// a node is woken by push from the node the call reached, and its call
// completes when it registers again through any node (Redis pub/sub).
// Real sockets on 127.0.0.0/8, a test-owned redis-server, a local FCM.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { makeTestCerts, opensslMissing, type TestCerts } from '../helpers/certs.js';
import { UA } from '../helpers/ua.js';
import { until } from '../helpers/wait.js';
import { makeKeys, PROJECT, startProvider, writeServiceAccount } from '../push/helpers.js';
import { redisServerMissing, startRedisServer } from './redis-server.js';

const missing = redisServerMissing() || opensslMissing();
let prefixes = 0;

interface Node {
  server: RunningServer;
  udp: number;
  tcp: number;
}

async function startNode(t: Test, url: string, prefix: string, push: string | null): Promise<Node> {
  const dir = t.testdir();
  const config = parseConfig(
    [
      'domains: [example.test]',
      'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
      `storage: {type: redis, url: ${JSON.stringify(url)}, prefix: ${JSON.stringify(prefix)}}`,
      'auth: off',
      'security: {exempt: [127.0.0.0/8]}',
      'proxy: {ring-timeout: 10}',
      'timers: {t1: 100, t2: 400, t4: 500}',
      'log: {level: fatal}',
      ...(push === null ? [] : [push]),
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const ep = server.listening();
  return { server, udp: ep.find((e) => e.protocol === 'udp')!.port, tcp: ep.find((e) => e.protocol === 'tcp')!.port };
}

if (missing) {
  t.plan(0, missing);
} else {
  const redis = await startRedisServer();
  t.teardown(() => redis.close());
  const certs: TestCerts = makeTestCerts();
  t.teardown(() => certs.remove());

  await t.test('a phone connected to node B over TCP is called through node A: the INVITE comes down its own connection', async (t) => {
    const prefix = `ptcl${process.pid}-${++prefixes}:`;
    const a = await startNode(t, redis.url, prefix, null);
    const b = await startNode(t, redis.url, prefix, null);
    const phone = await UA.create({ transport: 'tcp', user: 'alice', domain: 'example.test', proxyPort: b.tcp });
    t.teardown(() => phone.close());
    t.equal((await phone.register({ expires: 600 })).status, 200, 'alice registers over TCP through B');
    const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: a.udp, t1: 100, t2: 400 });
    t.teardown(() => door.close());

    const call = door.call('sip:alice@example.test');
    t.equal((await call.final()).status, 200, 'answered');
    const inc = phone.incoming[0];
    t.ok(inc, 'the phone got the INVITE on the connection it registered on (it has no other)');
    const rr = inc.request.getAll('record-route').join(' ');
    t.match(rr, new RegExp(`127\\.0\\.0\\.1:${b.tcp};transport=tcp`), 'B record-routed');
    t.match(rr, new RegExp(`127\\.0\\.0\\.1:${a.udp}`), 'and A too');
    t.notMatch(inc.request.getAll('route').join(' '), /pfn=/, "B's Path entry is consumed, not sent to the phone");
    await until(() => inc.dialog !== null && inc.dialog.requests.some((r) => r.method === 'ACK'), 'the ACK at the phone', 3000);
    t.pass('the ACK went door → A → B → phone');
    t.equal((await (inc.dialog as NonNullable<typeof inc.dialog>).info()).status, 200, 'an INFO from the phone reaches the door (phone → B → A → door)');
    t.equal((await call.bye()).status, 200, 'BYE from the door reaches the phone down its connection');
    t.ok(inc.dialog?.terminated);
    t.same(phone.errors, []);
    t.same(door.errors, []);
  });

  await t.test("a phone asleep behind node B is woken by node A's push and gets its call when it registers again through node C", async (t) => {
    const keys = makeKeys();
    const oauth = await startProvider(t, certs, () => ({ status: 200, body: { access_token: 'ya29.c', expires_in: 3599 } }));
    const fcm = await startProvider(t, certs, () => ({ status: 200, body: { name: `projects/${PROJECT}/messages/3` } }));
    // Not t.testdir(): each node's config takes that one over.
    const saDir = mkdtempSync(join(tmpdir(), 'portier-sa-'));
    t.teardown(() => rmSync(saDir, { recursive: true, force: true }));
    const sa = writeServiceAccount(saDir, keys, `${oauth.origin}/token`);
    const push = `push: {call-timeout: 5, ca: ${certs.paths.caCert}, fcm: {service-account: ${sa}, endpoint: "${fcm.origin}"}}`;
    const prefix = `ptcl${process.pid}-${++prefixes}:`;
    const a = await startNode(t, redis.url, prefix, push);
    const b = await startNode(t, redis.url, prefix, push);
    const c = await startNode(t, redis.url, prefix, push);
    const instance = 'urn:uuid:00000000-0000-4000-8000-0000c1057e55';
    const pn = 'pn-provider=fcm;pn-prid=CLUSTER-TOKEN;pn-param=portier-test-1234';

    const sleeping = await UA.create({ transport: 'tcp', user: 'alice', domain: 'example.test', proxyPort: b.tcp, instance });
    t.equal((await sleeping.register({ uriParams: pn, expires: 3600 })).status, 200, 'the app registers through B with its push token');
    await sleeping.close();
    await until(() => b.server.transport.connectionCount('tcp') === 0, 'B to see the app go to sleep');

    const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: a.udp, t1: 100, t2: 400 });
    t.teardown(() => door.close());
    const call = door.call('sip:alice@example.test');
    await until(() => fcm.requests.length >= 1, 'the push');
    t.equal((JSON.parse(fcm.requests[0].body) as { message: { data: Record<string, string> } }).message.data['call-id'], call.callId, 'pushed with the call');

    const woken = await UA.create({ transport: 'tcp', user: 'alice', domain: 'example.test', proxyPort: c.tcp, instance });
    t.teardown(() => woken.close());
    t.equal((await woken.register({ uriParams: pn, expires: 3600 })).status, 200, 'the woken app registers through C');
    const inc = await woken.waitIncoming(5000);
    t.equal(inc.request.callId(), call.callId, 'A heard of it through Redis and sent the call through C');
    t.equal((await call.final()).status, 200, 'answered');
    t.equal((await call.bye()).status, 200);
  });
}
