// /metrics and /healthz of a running server, over real loopback sockets:
// SIP requests in over UDP, a scrape over HTTP, the counters checked by label.
import t from 'tap';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { parseAndValidate, SipParseError, type SipMessage } from '../../src/sip/index.js';
import { until } from '../helpers/wait.js';

// t1 10 ms: Timer L (64*T1) ends UDP INVITE transactions after 640 ms, when their responses are counted (a non-INVITE's as its final goes).
const config = parseConfig(
  [
    'domains: [example.test, other.test]',
    'storage: {type: memory}',
    'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
    'timers: {t1: 10}',
    'log: {level: fatal}',
    'metrics: {listen: 127.0.0.1:0}',
  ].join('\n'),
  'metrics.yaml',
);

const CALL_ID_MARK = 'secret-call-7f3a';
const USER_MARK = 'alice-user-91';

let server: RunningServer;
let udpPort = 0;
let tcpPort = 0;
let httpPort = 0;

t.before(async () => {
  server = await startServer(config, createLogger('fatal'));
  for (const ep of server.listening()) {
    if (ep.protocol === 'udp') udpPort = ep.port;
    if (ep.protocol === 'tcp') tcpPort = ep.port;
  }
  const m = server.metricsAddress();
  if (m === null) throw new Error('metrics not listening');
  httpPort = m.port;
});
t.teardown(() => server.stop());

let seq = 0;
function request(method: string, ruri: string, opts: { extra?: string[]; cseqMethod?: string; to?: string } = {}): string {
  seq++;
  return (
    [
      `${method} ${ruri} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-metrics-${seq};rport`,
      'Max-Forwards: 70',
      `From: <sip:${USER_MARK}@example.test>;tag=t${seq}`,
      `To: <${opts.to ?? ruri}>`,
      `Call-ID: ${CALL_ID_MARK}-${seq}@192.0.2.77`,
      `CSeq: ${seq} ${opts.cseqMethod ?? method}`,
      ...(opts.extra ?? []),
      'Content-Length: 0',
    ].join('\r\n') + '\r\n\r\n'
  );
}

/** One datagram from a fresh socket; the first final reply, or null after `ms`. */
async function udp(data: string | Buffer, ms = 1000): Promise<SipMessage | null> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sock.close();
      resolve(null);
    }, ms);
    sock.on('message', (raw) => {
      const m = parseAndValidate(raw, { transport: 'udp' });
      if (!(m instanceof SipParseError) && !m.isRequest && m.status < 200) return;
      clearTimeout(timer);
      sock.close();
      resolve(m instanceof SipParseError ? null : m);
    });
    sock.send(typeof data === 'string' ? Buffer.from(data, 'latin1') : data, udpPort, '127.0.0.1');
  });
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function httpRequest(method: string, path: string, port = httpPort): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format, samples only. */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const s = samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v) && Object.keys(x.labels).length === Object.keys(labels).length);
  return s?.value;
}

async function scrape(): Promise<Sample[]> {
  const r = await httpRequest('GET', '/metrics');
  if (r.status !== 200) throw new Error(`scrape: ${r.status}`);
  return parseMetrics(r.body);
}


t.test('scrape: default metrics, every portier metric, text format content type', async (t) => {
  const r = await httpRequest('GET', '/metrics');
  t.equal(r.status, 200);
  t.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const samples = parseMetrics(r.body);
  const names = new Set(samples.map((s) => s.name));
  for (const n of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
    t.ok(names.has(n), `default metric ${n}`);
  }
  for (const n of [
    'portier_build_info',
    'portier_sip_requests_total',
    'portier_sip_parse_errors_total',
    'portier_transactions_active',
    'portier_registrations_active',
    'portier_registered_devices',
    'portier_door_stations',
    'portier_calls_active',
    'portier_calls_total',
    'portier_connections_active',
    'portier_transport_dropped_total',
    'portier_retransmissions_total',
    'portier_retransmissions_absorbed_total',
  ]) {
    t.ok(names.has(n), n);
  }
  t.match(r.body, /^# TYPE portier_sip_requests_total counter$/m);
  t.match(r.body, /^# TYPE portier_calls_active gauge$/m);
  t.match(r.body, /^# HELP portier_sip_responses_total .+$/m);
  t.equal(value(samples, 'portier_sip_requests_total', { method: 'INVITE', transport: 'tcp' }), 0, 'series exist before any traffic');
  t.equal(value(samples, 'portier_sip_requests_total', { method: 'INVITE', transport: 'tls' }), undefined, 'only configured transports');
  t.equal(value(samples, 'portier_registrations_active', { domain: 'other.test' }), 0, 'every served domain');
  t.equal(value(samples, 'portier_connections_active', { transport: 'tcp' }), 0);
  t.equal(value(samples, 'portier_connections_active', { transport: 'udp' }), undefined, 'no connections on UDP');
  for (const result of ['answered', 'failed', 'cancelled', 'no_answer']) t.equal(value(samples, 'portier_calls_total', { result }), 0, result);
  t.equal(value(samples, 'portier_calls_active'), 0);
  t.equal(samples.find((s) => s.name === 'portier_build_info')?.labels.version, '0.1.0');
});

t.test('requests, responses, parse errors and registrations move with bounded labels', async (t) => {
  const before = await scrape();
  const req = (method: string, transport: string) => value(before, 'portier_sip_requests_total', { method, transport }) ?? 0;

  t.equal((await udp(request('OPTIONS', 'sip:example.test')))?.status, 200, 'OPTIONS answered');
  t.equal((await udp(request('OPTIONS', 'sip:example.test', { cseqMethod: 'INVITE' })))?.status, 400, 'malformed: 400');
  t.equal(await udp(Buffer.from('hello world\r\n\r\n'), 200), null, 'junk: dropped');
  const reg = await udp(
    request('REGISTER', 'sip:example.test', { to: `sip:${USER_MARK}@example.test`, extra: [`Contact: <sip:${USER_MARK}@192.0.2.77:5062>;expires=600`] }),
  );
  t.equal(reg?.status, 200, 'REGISTER accepted');
  const odd = await udp(request('FROBNICATE', 'sip:example.test'));
  t.ok(odd !== null && odd.status >= 400, 'an unknown method is refused');

  const tcp = net.connect(tcpPort, '127.0.0.1');
  await new Promise<void>((r) => tcp.once('connect', () => r()));
  t.teardown(() => tcp.destroy());

  // Responses are counted when their transactions end (a non-INVITE's as its final goes, an INVITE's after Timer L, 640 ms here).
  let after: Sample[] = [];
  await until(async () => {
    after = await scrape();
    return (value(after, 'portier_sip_responses_total', { code_class: '2xx', method: 'REGISTER' }) ?? 0) >= 1;
  });

  t.equal(value(after, 'portier_sip_requests_total', { method: 'OPTIONS', transport: 'udp' }), req('OPTIONS', 'udp') + 1, 'the OPTIONS (the malformed one never reached it)');
  t.equal(value(after, 'portier_sip_requests_total', { method: 'REGISTER', transport: 'udp' }), req('REGISTER', 'udp') + 1);
  t.equal(value(after, 'portier_sip_requests_total', { method: 'other', transport: 'udp' }), req('other', 'udp') + 1, 'FROBNICATE counts as other');
  t.notOk(after.some((s) => s.labels.method === 'FROBNICATE'), 'no label for an unknown method');

  t.equal(value(after, 'portier_sip_parse_errors_total', { transport: 'udp', reason: '400' }), 1);
  t.equal(value(after, 'portier_sip_parse_errors_total', { transport: 'udp', reason: 'drop' }), 1);
  t.equal(value(after, 'portier_sip_parse_errors_total', { transport: 'tcp', reason: '400' }), 0);
  t.equal(value(after, 'portier_sip_parse_errors_total', { transport: 'udp', reason: 'other' }), undefined, '"other" only once seen');

  t.equal(value(after, 'portier_sip_responses_total', { code_class: '2xx', method: 'REGISTER' }), 1);
  t.equal(value(after, 'portier_sip_responses_total', { code_class: '4xx', method: 'OPTIONS' }), 1, 'the stateless 400');
  // Final responses are counted when their transaction ends: wait for every one of them.
  await until(async () => {
    after = await scrape();
    return value(after, 'portier_transactions_active', { kind: 'server_non_invite' }) === 0;
  }).catch(() => {});
  t.equal(value(after, 'portier_sip_responses_total', { code_class: '2xx', method: 'OPTIONS' }), 1, 'the 200 to OPTIONS counted once its transaction ended');
  t.equal(value(after, 'portier_sip_responses_total', { code_class: '4xx', method: 'other' }), 1, 'the refusal of FROBNICATE');

  t.equal(value(after, 'portier_registrations_active', { domain: 'example.test' }), 1, 'one binding');
  t.equal(value(after, 'portier_registrations_active', { domain: 'other.test' }), 0);
  t.equal(value(after, 'portier_connections_active', { transport: 'tcp' }), 1, 'the open TCP connection');
  t.equal(value(after, 'portier_transactions_active', { kind: 'server_non_invite' }), 0, 'all ended');
  t.ok(value(after, 'portier_transactions_active', { kind: 'client_invite' }) !== undefined);

  const labelValues = after.flatMap((s) => Object.values(s.labels));
  for (const mark of ['127.0.0.1', '192.0.2.77', CALL_ID_MARK, USER_MARK, '@']) {
    t.notOk(labelValues.some((v) => v.includes(mark)), `no label value contains ${mark}`);
  }
});

t.test('/healthz: 200 JSON while serving; HEAD; 404 and 405', async (t) => {
  const r = await httpRequest('GET', '/healthz');
  t.equal(r.status, 200);
  t.match(r.headers['content-type'], /^application\/json/);
  const body = JSON.parse(r.body) as Record<string, unknown>;
  t.equal(body.status, 'ok');
  t.equal(body.version, '0.1.0');
  t.type(body.uptime, 'number');
  t.ok((body.uptime as number) >= 0);
  t.same(body.transports, [`udp:127.0.0.1:${udpPort}`, `tcp:127.0.0.1:${tcpPort}`]);
  t.equal(body.registrations, 1, 'the binding of the previous test');

  const head = await httpRequest('HEAD', '/healthz');
  t.equal(head.status, 200);
  t.equal(head.body, '', 'HEAD has no body');
  t.equal((await httpRequest('GET', '/healthz?probe=1')).status, 200, 'a query string is ignored');

  const missing = await httpRequest('GET', '/nope');
  t.equal(missing.status, 404);
  t.equal((await httpRequest('GET', '/')).status, 404);
  t.equal((await httpRequest('POST', '/nope')).status, 404, 'unknown path first');
  for (const method of ['POST', 'PUT', 'DELETE']) {
    const r = await httpRequest(method, '/metrics');
    t.equal(r.status, 405, `${method} /metrics`);
    t.equal(r.headers.allow, 'GET, HEAD');
  }
  t.equal((await httpRequest('POST', '/healthz')).status, 405);
});

t.test('a busy metrics port: the start fails with a clear error and frees the SIP sockets', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => blocker.close(() => r())));
  const port = (blocker.address() as net.AddressInfo).port;
  const busy = parseConfig(`domains: [example.test]\nstorage: {type: memory}\nlisten: [udp:127.0.0.1:0]\nmetrics: {listen: "127.0.0.1:${port}"}\n`, 'busy.yaml');
  await t.rejects(startServer(busy, createLogger('fatal')), {
    code: 'EADDRINUSE',
    message: `metrics.listen 127.0.0.1:${port}: cannot listen: address already in use (another program holds the port; choose another metrics.listen port or set it to off)`,
  });
  // Left-over UDP sockets would keep this process alive past the test's end.
});

t.test('metrics off: no HTTP listener', async (t) => {
  const off = parseConfig('domains: [example.test]\nstorage: {type: memory}\nlisten: [udp:127.0.0.1:0]\nmetrics: {listen: off}\n', 'off.yaml');
  const s = await startServer(off, createLogger('fatal'));
  t.equal(s.metricsAddress(), null);
  await s.stop();
  const none = await startServer(parseConfig('domains: [example.test]\nstorage: {type: memory}\nlisten: [udp:127.0.0.1:0]\n', 'none.yaml'), createLogger('fatal'));
  t.equal(none.metricsAddress(), null, 'no metrics section: off');
  await none.stop();
});

t.test('over IPv6', async (t) => {
  const v6 = parseConfig('domains: [example.test]\nstorage: {type: memory}\nlisten: ["udp:[::1]:0"]\nmetrics: {listen: "[::1]:0"}\n', 'v6.yaml');
  const s = await startServer(v6, createLogger('fatal'));
  t.teardown(() => s.stop());
  const a = s.metricsAddress();
  t.equal(a?.address, '::1');
  const r = await new Promise<number>((resolve, reject) => {
    http.get({ host: '::1', port: a?.port, path: '/healthz', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject);
  });
  t.equal(r, 200);
});

// Last: stops the shared server.
t.test('after stop the metrics port is closed', async (t) => {
  const keepAlive = new http.Agent({ keepAlive: true });
  const open = await new Promise<http.IncomingMessage>((resolve) => http.get({ host: '127.0.0.1', port: httpPort, path: '/healthz', agent: keepAlive }, resolve));
  open.resume();
  await server.stop();
  t.equal(server.metricsAddress(), null);
  await t.rejects(httpRequest('GET', '/healthz'), { code: 'ECONNREFUSED' });
  keepAlive.destroy();
  await server.stop(); // idempotent (teardown calls it again too)
});
