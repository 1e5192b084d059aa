// RFC 3263 against a DNS server of the test's own on loopback (NAPTR, SRV,
// A, AAAA in DNS wire format), and end to end: a phone whose Contact is a
// GRUU of another domain (stock Linhome behind its vendor's gateway) is
// reached through that domain's SRV records, the dead first server failed
// over to the next.
import dgram from 'node:dgram';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { orderSrv, SipResolver } from '../../src/proxy/resolve.js';
import { startServer } from '../../src/server.js';
import { parseUri, type Uri } from '../../src/sip/index.js';
import { UA } from '../helpers/ua.js';
import { usersLine } from '../helpers/tools.js';
import { until } from '../helpers/wait.js';

type Rr = { type: 'A'; address: string } | { type: 'SRV'; priority: number; weight: number; port: number; target: string } | { type: 'NAPTR'; order: number; preference: number; flags: string; service: string; replacement: string };

const TYPES: Record<string, number> = { A: 1, AAAA: 28, SRV: 33, NAPTR: 35 };

function encodeName(name: string): Buffer {
  const parts = name.replace(/\.$/, '').split('.').filter((p) => p !== '');
  return Buffer.concat([...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p)])), Buffer.from([0])]);
}

function rdata(r: Rr): Buffer {
  if (r.type === 'A') return Buffer.from(r.address.split('.').map(Number));
  if (r.type === 'SRV') {
    const b = Buffer.alloc(6);
    b.writeUInt16BE(r.priority, 0);
    b.writeUInt16BE(r.weight, 2);
    b.writeUInt16BE(r.port, 4);
    return Buffer.concat([b, encodeName(r.target)]);
  }
  const head = Buffer.alloc(4);
  head.writeUInt16BE(r.order, 0);
  head.writeUInt16BE(r.preference, 2);
  const str = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s)]);
  return Buffer.concat([head, str(r.flags), str(r.service), str(''), encodeName(r.replacement)]);
}

/** A DNS server answering from `zone` (name → records), counting the queries it got. */
async function dnsServer(zone: Record<string, Rr[]>): Promise<{ port: number; queries: string[]; close(): void }> {
  const sock = dgram.createSocket('udp4');
  const queries: string[] = [];
  sock.on('message', (msg, rinfo) => {
    // Question: name labels from byte 12, then type and class.
    let i = 12;
    const labels: string[] = [];
    while (msg[i] !== 0) {
      labels.push(msg.subarray(i + 1, i + 1 + msg[i]).toString());
      i += msg[i] + 1;
    }
    const qtype = msg.readUInt16BE(i + 1);
    const name = labels.join('.').toLowerCase();
    queries.push(`${Object.keys(TYPES).find((k) => TYPES[k] === qtype) ?? qtype} ${name}`);
    const answers = (zone[name] ?? []).filter((r) => TYPES[r.type] === qtype);
    const question = msg.subarray(12, i + 5);
    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2);
    header.writeUInt16BE(0x8180 | (zone[name] === undefined ? 3 : 0), 2); // response, RD+RA, NXDOMAIN when unknown
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    const rrs = answers.map((r) => {
      const d = rdata(r);
      const fixed = Buffer.alloc(10);
      fixed.writeUInt16BE(TYPES[r.type], 0);
      fixed.writeUInt16BE(1, 2);
      fixed.writeUInt32BE(30, 4);
      fixed.writeUInt16BE(d.length, 8);
      return Buffer.concat([encodeName(name), fixed, d]);
    });
    sock.send(Buffer.concat([header, question, ...rrs]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  return { port: sock.address().port, queries, close: () => sock.close() };
}

const uri = (s: string) => parseUri(s) as Uri;

t.test('NAPTR, then SRV by priority, then A; SRV per transport without NAPTR; A alone; a port means no SRV', async (t) => {
  const dns = await dnsServer({
    'pbx.test': [
      { type: 'NAPTR', order: 10, preference: 10, flags: 's', service: 'SIP+D2T', replacement: '_sip._tcp.pbx.test' },
      { type: 'NAPTR', order: 20, preference: 10, flags: 's', service: 'SIP+D2U', replacement: '_sip._udp.pbx.test' },
      { type: 'NAPTR', order: 5, preference: 10, flags: 's', service: 'SIP+D2W', replacement: '_sip._ws.pbx.test' },
    ],
    '_sip._tcp.pbx.test': [
      { type: 'SRV', priority: 20, weight: 0, port: 5080, target: 'b.pbx.test' },
      { type: 'SRV', priority: 10, weight: 0, port: 5070, target: 'a.pbx.test' },
    ],
    '_sip._udp.pbx.test': [{ type: 'SRV', priority: 10, weight: 0, port: 5090, target: 'a.pbx.test' }],
    'a.pbx.test': [{ type: 'A', address: '127.0.0.11' }],
    'b.pbx.test': [{ type: 'A', address: '127.0.0.12' }],
    '_sip._udp.nonaptr.test': [{ type: 'SRV', priority: 0, weight: 0, port: 5099, target: 'a.pbx.test' }],
    'nonaptr.test': [],
    'plain.test': [{ type: 'A', address: '127.0.0.13' }],
  });
  t.teardown(() => dns.close());
  const r = new SipResolver({ servers: [`127.0.0.1:${dns.port}`] });
  t.same(await r.resolve(uri('sip:+3312@pbx.test')), [
    { protocol: 'tcp', address: '127.0.0.11', port: 5070 },
    { protocol: 'tcp', address: '127.0.0.12', port: 5080 },
    { protocol: 'udp', address: '127.0.0.11', port: 5090 },
  ], 'NAPTR order (ws skipped: Portier does not dial WebSocket), SRV priority, then the next transport as failover');
  t.same(await r.resolve(uri('sip:x@nonaptr.test')), [{ protocol: 'udp', address: '127.0.0.11', port: 5099 }], 'no NAPTR: SRV per transport');
  t.same(await r.resolve(uri('sip:x@plain.test')), [{ protocol: 'udp', address: '127.0.0.13', port: 5060 }], 'A alone: UDP 5060');
  t.same(await r.resolve(uri('sips:x@plain.test')), [{ protocol: 'tls', address: '127.0.0.13', port: 5061 }], 'sips: TLS 5061');
  t.same(await r.resolve(uri('sip:x@plain.test:5077;transport=tcp')), [{ protocol: 'tcp', address: '127.0.0.13', port: 5077 }], 'a port: A only');
  t.same(await r.resolve(uri('sip:x@nowhere.test')), [], 'nothing resolves: empty');
  const before = dns.queries.length;
  await r.resolve(uri('sip:+3312@pbx.test'));
  t.equal(dns.queries.length, before, 'answers are cached');
});

t.test('SRV weights (RFC 2782): a weighted draw within a priority', async (t) => {
  const recs = [
    { name: 'a', port: 1, priority: 10, weight: 0 },
    { name: 'b', port: 2, priority: 10, weight: 10 },
    { name: 'c', port: 3, priority: 10, weight: 90 },
    { name: 'z', port: 9, priority: 5, weight: 0 },
  ];
  t.same(orderSrv(recs, () => 0.5).map((r) => r.name), ['z', 'c', 'b', 'a'], 'lower priority first; a draw in the middle picks the heavy one');
  t.same(orderSrv(recs, () => 0.05).map((r) => r.name), ['z', 'b', 'c', 'a'], 'a low draw picks the light one');
});

t.test('a Contact that is a GRUU at another domain is called through that domain: dead first server, failover to the next', async (t) => {
  const callee = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: 9, t1: 100, t2: 400, contact: 'sip:alice@gw.test;gr=urn:uuid:6f2e1c3a-8d4b-4e5f-9a6b-7c8d9e0f1a2b' });
  t.teardown(() => callee.close());
  // A TCP port nobody listens on: connection refused, at once.
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const deadPort = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const dns = await dnsServer({
    'gw.test': [
      { type: 'NAPTR', order: 10, preference: 10, flags: 's', service: 'SIP+D2T', replacement: '_sip._tcp.gw.test' },
      { type: 'NAPTR', order: 20, preference: 10, flags: 's', service: 'SIP+D2U', replacement: '_sip._udp.gw.test' },
    ],
    '_sip._tcp.gw.test': [{ type: 'SRV', priority: 10, weight: 0, port: deadPort, target: 'gw1.gw.test' }],
    '_sip._udp.gw.test': [{ type: 'SRV', priority: 10, weight: 0, port: callee.localPort, target: 'gw1.gw.test' }],
    'gw1.gw.test': [{ type: 'A', address: '127.0.0.1' }],
  });
  t.teardown(() => dns.close());
  const dir = t.testdir({});
  const server = await startServer(
    parseConfig(
      ['domains: [example.test]', 'storage: {type: memory}', 'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]', 'timers: {t1: 100, t2: 400, t4: 500}', 'log: {level: fatal}', 'security: {relay-to-loopback: true}', `resolver: ["127.0.0.1:${dns.port}"]`].join('\n'),
      join(dir, 'portier.yaml'),
    ),
    createLogger('fatal'),
  );
  t.teardown(() => server.stop());
  const udp = server.listening().find((e) => e.protocol === 'udp')!.port;
  // The phone registers through Portier, its Contact the gateway's GRUU.
  const phone = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: udp, t1: 100, t2: 400, contact: 'sip:alice@gw.test;gr=urn:uuid:6f2e1c3a-8d4b-4e5f-9a6b-7c8d9e0f1a2b' });
  t.teardown(() => phone.close());
  t.equal((await phone.register({ instance: false })).status, 200);
  const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: udp, t1: 100, t2: 400 });
  t.teardown(() => door.close());
  const call = door.call('sip:alice@example.test');
  t.equal((await call.final(5000)).status, 200, 'answered by the server the SRV records name');
  const inv = await callee.waitIncoming();
  t.equal(inv.request.uri, 'sip:alice@gw.test;gr=urn:uuid:6f2e1c3a-8d4b-4e5f-9a6b-7c8d9e0f1a2b', 'the GRUU as Request-URI');
  t.equal(phone.filter({ method: 'INVITE' }).length, 0, 'not sent down the connection the REGISTER came on');
  t.ok(dns.queries.includes('NAPTR gw.test') && dns.queries.includes('SRV _sip._udp.gw.test'), 'located by NAPTR and SRV');
  t.equal((await call.bye()).status, 200);
});

t.test('a destination a user chose never points Portier at this machine: loopback refused unless security.relay-to-loopback', async (t) => {
  const dns = await dnsServer({ 'evil.test': [{ type: 'A', address: '127.0.0.1' }] });
  t.teardown(() => dns.close());
  // A local service on TCP that records what reaches it (a stand-in for a Redis on 127.0.0.1).
  const got: Buffer[] = [];
  const svc = net.createServer((c) => c.on('data', (d: Buffer) => got.push(d)));
  await new Promise<void>((r) => svc.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => svc.close(() => r())));
  const port = (svc.address() as net.AddressInfo).port;
  const targets = [`sip:x@evil.test:${port};transport=tcp`, `sip:x@127.0.0.1:${port};transport=tcp`];
  const dir = t.testdir({ users: usersLine('alice', 'alice long password') + '\n' });
  const serve = async (relayToLoopback: boolean): Promise<UA> => {
    const lines = ['domains: [example.test]', 'storage: {type: memory}', 'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]', 'auth: {users: users, realm: example.test}', 'timers: {t1: 100, t2: 400, t4: 500}', 'log: {level: fatal}', `resolver: ["127.0.0.1:${dns.port}"]`];
    if (relayToLoopback) lines.push('security: {relay-to-loopback: true}');
    const s = await startServer(parseConfig(lines.join('\n'), join(dir, 'portier.yaml')), createLogger('fatal'));
    t.teardown(() => s.stop());
    const udp = s.listening().find((e) => e.protocol === 'udp')!.port;
    const alice = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: udp, t1: 100, t2: 400, password: 'alice long password' });
    t.teardown(() => alice.close());
    return alice;
  };
  const alice = await serve(false);
  for (const target of targets) {
    const res = await alice.call(target, { sdp: 'FLUSHALL\r\n' }).final(5000);
    t.ok(res.status >= 400, `${target}: refused (${res.status})`);
  }
  t.equal(got.length, 0, 'nothing reached the local service');
  // Positive control: the same requests with security.relay-to-loopback do reach it,
  // so the silence above is the refusal, not a service that could not be reached.
  const relayed = await serve(true);
  for (const target of targets) {
    const before = Buffer.concat(got).toString().split('FLUSHALL').length;
    void relayed.call(target, { sdp: 'FLUSHALL\r\n' }).final(5000).catch(() => undefined);
    await until(() => Buffer.concat(got).toString().split('FLUSHALL').length > before, `${target} relayed to the local service`, 4000);
    t.pass(`${target}: reaches the local service with relay-to-loopback: true`);
  }
});
