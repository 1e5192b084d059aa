// Devices by kind, door stations online and offline, /status and /readyz of
// an in-process Portier, over real loopback sockets: REGISTERs in over UDP
// (from a trusted source, so without digest), then scrapes and pages over HTTP.
import t from 'tap';
import dgram from 'node:dgram';
import http from 'node:http';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { parseAndValidate, SipParseError, type SipMessage } from '../../src/sip/index.js';
import { interopPortier, metric, usersLine } from '../helpers/tools.js';
import { until } from '../helpers/wait.js';
import { redisServerMissing, startRedisServer } from '../storage/redis-server.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function get(port: number, path: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.on('error', reject);
    req.end();
  });
}

let seq = 0;
/** A REGISTER of `user@domain` from a fresh UDP socket; its final response. */
async function register(sipPort: number, user: string, o: { ua?: string; expires?: number; domain?: string } = {}): Promise<SipMessage> {
  seq++;
  const domain = o.domain ?? 'example.test';
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const port = sock.address().port;
  const text =
    [
      `REGISTER sip:${domain} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK-ops-${seq};rport`,
      'Max-Forwards: 70',
      `From: <sip:${user}@${domain}>;tag=f${seq}`,
      `To: <sip:${user}@${domain}>`,
      `Call-ID: ops-${user.replace(/[^A-Za-z0-9]/g, "-")}-${domain}`,
      `CSeq: ${seq} REGISTER`,
      // Each REGISTER comes from a new port: removal is by Contact: * (RFC 3261 §10.2.2).
      ...(o.expires === 0 ? ['Contact: *', 'Expires: 0'] : [`Contact: <sip:${user}@127.0.0.1:${port}>;expires=${o.expires ?? 600}`]),
      ...(o.ua === undefined ? [] : [`User-Agent: ${o.ua}`]),
      'Content-Length: 0',
    ].join('\r\n') + '\r\n\r\n';
  try {
    return await new Promise<SipMessage>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to the REGISTER of ${user}`)), 3000);
      sock.on('message', (raw) => {
        const m = parseAndValidate(raw, { transport: 'udp' });
        if (m instanceof SipParseError || m.isRequest || m.status < 200) return;
        clearTimeout(timer);
        resolve(m);
      });
      sock.send(Buffer.from(text, 'latin1'), sipPort, '127.0.0.1');
    });
  } finally {
    sock.close();
  }
}

function ports(server: RunningServer): { sip: number; http: number } {
  const udp = server.listening().find((e) => e.protocol === 'udp');
  const m = server.metricsAddress();
  if (udp === undefined || m === null) throw new Error('not listening');
  return { sip: udp.port, http: m.port };
}

const scrape = async (port: number): Promise<string> => (await get(port, '/metrics')).body;

const DOOR_UA_XSS = '<script>alert("x")</script> Castel';
const ODD_DOOR = "door&'2"; // & and ' are allowed in a SIP user part, and must be escaped on the page

t.test('with accounts: devices by account kind, door stations online and offline, /status', async (t) => {
  const dir = t.testdir({
    users:
      [
        usersLine('gate', 'secret-1', { kind: 'door' }),
        usersLine(ODD_DOOR, 'secret-2', { kind: 'door' }),
        usersLine('alice', 'secret-3', { kind: 'phone' }),
        usersLine('far', 'secret-4', { kind: 'door', domain: 'other.test' }),
      ].join('\n') + '\n',
  });
  const { server } = await interopPortier(t, dir, {
    domains: ['example.test', 'other.test'],
    listen: ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0'],
    auth: ['trusted: [127.0.0.1]'],
  });
  const p = ports(server);

  let text = await scrape(p.http);
  t.match(text, /^# TYPE portier_registered_devices gauge$/m);
  t.match(text, /^# TYPE portier_door_stations gauge$/m);
  for (const domain of ['example.test', 'other.test']) {
    for (const kind of ['door', 'phone']) t.equal(metric(text, 'portier_registered_devices', { domain, kind }), 0, `${domain} ${kind}: 0 before any REGISTER`);
  }
  t.equal(metric(text, 'portier_door_stations', { domain: 'example.test', state: 'offline' }), 2, 'two door accounts, both offline');
  t.equal(metric(text, 'portier_door_stations', { domain: 'example.test', state: 'online' }), 0);
  t.equal(metric(text, 'portier_door_stations', { domain: 'other.test', state: 'offline' }), 1);

  t.equal((await register(p.sip, 'gate', { ua: 'Linhome/1.2 (the account says door)' })).status, 200);
  t.equal((await register(p.sip, ODD_DOOR, { ua: DOOR_UA_XSS })).status, 200);
  t.equal((await register(p.sip, 'alice', { ua: '2N Helios IP Verso (the account says phone)' })).status, 200);
  t.equal((await register(p.sip, 'nobody', { ua: 'Linhome/1.2' })).status, 404, 'no account, no binding');

  text = await scrape(p.http);
  t.equal(metric(text, 'portier_registrations_active', { domain: 'example.test' }), 3);
  t.equal(metric(text, 'portier_registered_devices', { domain: 'example.test', kind: 'door' }), 2, 'kinds from the accounts');
  t.equal(metric(text, 'portier_registered_devices', { domain: 'example.test', kind: 'phone' }), 1);
  t.equal(metric(text, 'portier_door_stations', { domain: 'example.test', state: 'online' }), 2);
  t.equal(metric(text, 'portier_door_stations', { domain: 'example.test', state: 'offline' }), 0);
  t.equal(metric(text, 'portier_door_stations', { domain: 'other.test', state: 'offline' }), 1);
  const labels = [...text.matchAll(/^portier_\w+\{([^}]*)\}/gm)].map((m) => m[1]).join(' ');
  for (const mark of ['@', 'gate', 'alice', 'door&', '127.0.0.1', 'Castel']) t.notOk(labels.includes(mark), `no label value contains ${mark}`);

  let page = await get(p.http, '/status');
  t.equal(page.status, 200);
  t.match(page.headers['content-type'], /^text\/html; charset=utf-8/);
  t.match(page.headers['content-security-policy'], /default-src 'none'/);
  t.equal(page.headers['cache-control'], 'no-store');
  t.equal(page.headers['x-content-type-options'], 'nosniff');
  t.notMatch(page.body, /<script/i, 'no script, and the User-Agent is escaped');
  t.match(page.body, /&lt;script&gt;alert\(&quot;x&quot;\)&lt;\/script&gt; Castel/);
  t.match(page.body, /<h1>Portier 0\.1\.0<\/h1>/);
  t.match(page.body, new RegExp(`<li>udp:127\\.0\\.0\\.1:${p.sip}</li>`));
  t.match(page.body, new RegExp(`<li>tcp:127\\.0\\.0\\.1:`));
  t.match(page.body, /Ready: SIP listeners bound, storage reachable\./);
  t.match(page.body, /<td>example\.test<\/td><td>3<\/td><td>2<\/td><td>1<\/td>/, 'registrations per domain, by kind');
  t.match(page.body, /Door stations: 2 online, 1 offline/);
  t.match(page.body, /<td>door&amp;&#39;2@example\.test<\/td>/, 'the account name, escaped');
  t.match(page.body, /<td>gate@example\.test<\/td><td>example\.test<\/td><td>Linhome\/1\.2 \(the account says door\)<\/td><td>udp<\/td>/);
  t.match(page.body, /<td>far@other\.test<\/td><td>other\.test<\/td><td>not seen since start \(/);
  t.notMatch(page.body, /alice/, 'phones are not listed');
  const head = await get(p.http, '/status', 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.body, '');
  t.equal((await get(p.http, '/status', 'POST')).status, 405);

  // The gate leaves (Expires: 0): offline, with when it was last seen.
  t.equal((await register(p.sip, 'gate', { ua: 'Linhome/1.2', expires: 0 })).status, 200);
  text = await scrape(p.http);
  t.equal(metric(text, 'portier_door_stations', { domain: 'example.test', state: 'online' }), 1);
  t.equal(metric(text, 'portier_door_stations', { domain: 'example.test', state: 'offline' }), 1);
  t.equal(metric(text, 'portier_registered_devices', { domain: 'example.test', kind: 'door' }), 1);
  page = await get(p.http, '/status');
  t.match(page.body, /Door stations: 1 online, 2 offline/);
  t.match(page.body, /<td>gate@example\.test<\/td><td>example\.test<\/td><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ s ago\)<\/td><td>[^<]+, unregistered<\/td>/, 'last seen and offline since');

  const ready = await get(p.http, '/readyz');
  t.equal(ready.status, 200);
  t.match(ready.headers['content-type'], /^application\/json/);
  t.match(JSON.parse(ready.body), { status: 'ready', checks: { listeners: { ok: true }, storage: { ok: true, detail: 'memory store up' } } });
  t.notOk('not_ready' in JSON.parse(ready.body));
  t.equal((await get(p.http, '/readyz', 'HEAD')).status, 200);
});

t.test('without authentication: the User-Agent says which devices are door stations', async (t) => {
  const config = parseConfig(
    ['domains: [example.test]', 'storage: {type: memory}', 'listen: [udp:127.0.0.1:0]', 'log: {level: fatal}', 'metrics: {listen: 127.0.0.1:0}'].join('\n'),
    'ops-noauth.yaml',
  );
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const p = ports(server);
  t.equal((await register(p.sip, 'gate', { ua: '2N Helios IP Verso/2.31.0' })).status, 200);
  t.equal((await register(p.sip, 'bell', { ua: 'DoorBird D2101V/000128' })).status, 200);
  t.equal((await register(p.sip, 'alice', { ua: 'Linhome/1.2 (Pixel 7) LinphoneSDK/5.3.0' })).status, 200);
  t.equal((await register(p.sip, 'bob')).status, 200);
  const text = await scrape(p.http);
  t.equal(metric(text, 'portier_registered_devices', { domain: 'example.test', kind: 'door' }), 2);
  t.equal(metric(text, 'portier_registered_devices', { domain: 'example.test', kind: 'phone' }), 2);
  t.equal(metric(text, 'portier_registrations_active', { domain: 'example.test' }), 4);
  t.equal(metric(text, 'portier_door_stations', { domain: 'example.test', state: 'offline' }), 0, 'no door accounts without auth');
  const page = await get(p.http, '/status');
  t.match(page.body, /Authentication is off/);
  t.match(page.body, /recognised by their User-Agent/);
  t.match(page.body, /<td>bell@example\.test<\/td><td>example\.test<\/td><td>DoorBird D2101V\/000128<\/td>/);
  t.match(page.body, /<td>gate@example\.test<\/td>/);
  t.notMatch(page.body, /alice|bob@/);
});

t.test('/readyz fails while the Redis store is down; /healthz stays 200', { skip: redisServerMissing(), timeout: 60_000 }, async (t) => {
  const redis = await startRedisServer();
  const config = parseConfig(
    [
      'domains: [example.test]',
      `storage: {type: redis, url: ${JSON.stringify(redis.url)}, prefix: "ops${process.pid}:"}`,
      'listen: [udp:127.0.0.1:0]',
      'auth: off',
      'log: {level: fatal}',
      'metrics: {listen: 127.0.0.1:0}',
    ].join('\n'),
    'ops-redis.yaml',
  );
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(async () => {
    await server.stop();
    await redis.close();
  });
  const p = ports(server);
  t.equal((await get(p.http, '/readyz')).status, 200, 'ready with Redis up');
  t.equal((await register(p.sip, 'gate', { ua: 'Castel Xtrem' })).status, 200);
  t.equal(metric(await scrape(p.http), 'portier_registered_devices', { domain: 'example.test', kind: 'door' }), 1);

  await redis.stop();
  let r: Reply = await get(p.http, '/readyz');
  await until(async () => (r = await get(p.http, '/readyz')).status === 503, '/readyz 503', 10_000).catch(() => undefined);
  t.equal(r.status, 503, 'not ready while Redis is down');
  const body = JSON.parse(r.body) as { status: string; not_ready: string[]; checks: Record<string, { ok: boolean; detail: string }> };
  t.equal(body.status, 'not ready');
  t.same(body.not_ready, ['storage']);
  t.equal(body.checks.listeners.ok, true, 'the listeners are fine');
  t.match(body.checks.storage.detail, /^the redis store /);
  t.equal((await get(p.http, '/healthz')).status, 200, 'still alive');
  const text = await scrape(p.http);
  t.equal(metric(text, 'portier_storage_up'), 0);
  t.ok(Number.isNaN(metric(text, 'portier_registered_devices', { domain: 'example.test', kind: 'door' })), 'no device counts while the store does not answer');
  const page = await get(p.http, '/status');
  t.equal(page.status, 200, 'the page still answers');
  t.match(page.body, /Not ready: storage: the redis store/);

  await redis.start();
  await until(async () => (r = await get(p.http, '/readyz')).status === 200, '/readyz 200 again', 15_000).catch(() => undefined);
  t.equal(r.status, 200, 'ready again once Redis is back');
});
