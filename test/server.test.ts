// The running server over real loopback sockets: OPTIONS to itself over UDP
// and TCP (also from Debian's sipsak when installed), the SIP errors for what
// it cannot route yet, and bad input answered or dropped while it carries on.
import t from 'tap';
import dgram from 'node:dgram';
import net from 'node:net';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { parseAndValidate, SipMessage, SipParseError } from '../src/sip/index.js';
import { replyCollector } from './helpers/ua.js';
import { until } from './helpers/wait.js';

const config = parseConfig(
  ['domains: [example.test]', 'storage: {type: memory}', 'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0, "udp:[::1]:0"]', 'log: {level: fatal}'].join('\n'),
  'test.yaml',
);

let server: RunningServer;
let udpPort = 0;
let tcpPort = 0;
let udp6Port = 0;

t.before(async () => {
  server = await startServer(config, createLogger('fatal'));
  for (const ep of server.listening()) {
    if (ep.protocol === 'udp' && ep.address === '127.0.0.1') udpPort = ep.port;
    if (ep.protocol === 'udp' && ep.address === '::1') udp6Port = ep.port;
    if (ep.protocol === 'tcp') tcpPort = ep.port;
  }
});
t.teardown(() => server.stop());

let seq = 0;
function request(method: string, ruri: string, opts: { extra?: string[]; via?: string; cseqMethod?: string; maxForwards?: number } = {}): string {
  seq++;
  const lines = [
    `${method} ${ruri} SIP/2.0`,
    opts.via ?? `Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-test-${seq};rport`,
    `Max-Forwards: ${opts.maxForwards ?? 70}`,
    `From: <sip:tester@example.test>;tag=t${seq}`,
    `To: <${ruri}>`,
    `Call-ID: call-${seq}@test`,
    `CSeq: ${seq} ${opts.cseqMethod ?? method}`,
    ...(opts.extra ?? []),
    'Content-Length: 0',
  ];
  return lines.join('\r\n') + '\r\n\r\n';
}

/** Sends one datagram from a fresh socket and returns the first reply (or null after `ms`). */
async function udpExchange(data: string | Buffer, port = udpPort, family: 4 | 6 = 4, ms = 1500): Promise<{ msg: SipMessage | null; raw: Buffer | null; localPort: number }> {
  const sock = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
  await new Promise<void>((resolve) => sock.bind(0, family === 4 ? '127.0.0.1' : '::1', resolve));
  const localPort = sock.address().port;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sock.close();
      resolve({ msg: null, raw: null, localPort });
    }, ms);
    sock.on('message', (raw) => {
      const m = parseAndValidate(raw, { transport: 'udp' });
      // 100 Trying is hop by hop; the test wants the final answer.
      if (!(m instanceof SipParseError) && !m.isRequest && m.status === 100) return;
      clearTimeout(timer);
      sock.close();
      resolve({ msg: m instanceof SipParseError ? null : m, raw, localPort });
    });
    sock.send(typeof data === 'string' ? Buffer.from(data, 'latin1') : data, port, family === 4 ? '127.0.0.1' : '::1');
  });
}

async function udpReply(data: string | Buffer): Promise<SipMessage> {
  const r = await udpExchange(data);
  if (r.msg === null) throw new Error('no parseable reply');
  return r.msg;
}

t.test('OPTIONS to the server itself over UDP: 200 with Allow, Accept, Supported', async (t) => {
  const { msg, localPort } = await udpExchange(request('OPTIONS', 'sip:127.0.0.1'));
  t.ok(msg, 'a reply');
  if (!msg) return;
  t.equal(msg.status, 200);
  t.match(msg.get('allow'), /OPTIONS/, 'Allow lists OPTIONS');
  t.match(msg.get('allow'), /INVITE/, 'and INVITE');
  t.equal(msg.get('accept'), 'application/sdp');
  t.ok(msg.has('supported'), 'Supported present');
  t.ok(msg.to().tag, 'To tag added');
  const via = msg.topVia()!;
  t.equal(via.received, '127.0.0.1', 'received filled in (sent-by differs from the source)');
  t.equal(via.rport, localPort, 'rport is the source port (RFC 3581)');
  t.equal(msg.cseq().method, 'OPTIONS');
});

t.test('OPTIONS to a served domain and over IPv6', async (t) => {
  t.equal((await udpReply(request('OPTIONS', 'sip:example.test'))).status, 200, 'domain without user part');
  const v6 = await udpExchange(request('OPTIONS', 'sip:[::1]', { via: `Via: SIP/2.0/UDP [::1]:9;branch=z9hG4bK-v6;rport` }), udp6Port, 6);
  t.equal(v6.msg?.status, 200, 'over udp6 to the IPv6 listen address');
  t.equal(v6.msg?.topVia()?.rport, v6.localPort, 'rport over IPv6');
});

t.test('without rport the reply goes to the Via sent-by port (RFC 3261 §18.2.2)', async (t) => {
  const listener = dgram.createSocket('udp4');
  await new Promise<void>((r) => listener.bind(0, '127.0.0.1', r));
  const viaPort = listener.address().port;
  const got = new Promise<Buffer>((resolve) => listener.once('message', resolve));
  const r = await udpExchange(request('OPTIONS', 'sip:127.0.0.1', { via: `Via: SIP/2.0/UDP 127.0.0.1:${viaPort};branch=z9hG4bK-norport` }), udpPort, 4, 300);
  t.equal(r.msg, null, 'nothing back to the sending port');
  const raw = await got;
  const m = parseAndValidate(raw) as SipMessage;
  t.equal(m.status, 200, 'the 200 reached the sent-by port');
  t.equal(m.topVia()?.received, null, 'no received: sent-by equals the source address');
  listener.close();
});

t.test('OPTIONS over TCP, two requests on one connection, a CRLF ping answered', async (t) => {
  const sock = net.connect(tcpPort, '127.0.0.1');
  await new Promise<void>((r) => sock.once('connect', () => r()));
  const { replies, framer } = replyCollector('tcp');
  let pongs = 0;
  sock.on('data', (d) => {
    if (d.equals(Buffer.from('\r\n'))) pongs++;
    else framer.push(d);
  });
  sock.write(request('OPTIONS', 'sip:127.0.0.1', { via: 'Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-tcp1' }) + request('OPTIONS', 'sip:example.test', { via: 'Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-tcp2' }));
  await until(() => replies.length >= 2);
  sock.write('\r\n\r\n');
  await until(() => pongs >= 1);
  t.same(
    replies.map((r) => r.status),
    [200, 200],
    'both answered in order',
  );
  t.equal(replies[0].topVia()?.branch, 'z9hG4bK-tcp1');
  t.equal(pongs, 1, 'double-CRLF ping got a single CRLF pong');
  sock.destroy();
});


t.test('requests it cannot route get a SIP error, never silence', async (t) => {
  t.equal((await udpReply(request('INVITE', 'sip:alice@example.test'))).status, 480, 'INVITE to a user of a served domain: 480');
  t.equal((await udpReply(request('MESSAGE', 'sip:bob@other.example'))).status, 403, 'foreign domain: 403 (no relaying)');
  const fetch = await udpReply(request('REGISTER', 'sip:example.test').replace('To: <sip:example.test>', 'To: <sip:alice@example.test>'));
  t.equal(fetch.status, 200, 'REGISTER without Contact: 200 (a fetch of the bindings, none)');
  t.equal(fetch.count('contact'), 0, 'no bindings listed');
  const unknown = await udpReply(request('FROBNICATE', 'sip:alice@example.test'));
  t.equal(unknown.status, 480, 'unknown method: routed like any other request (a proxy does not need to know it), 480 here');
  t.equal((await udpReply(request('CANCEL', 'sip:alice@example.test'))).status, 481, 'CANCEL without a transaction: 481');
  t.equal((await udpReply(request('INVITE', 'sip:alice@example.test', { maxForwards: 0 }))).status, 483, 'Max-Forwards 0: 483');
  const ext = await udpReply(request('INVITE', 'sip:alice@example.test', { extra: ['Proxy-Require: frobs'] }));
  t.equal(ext.status, 420, 'Proxy-Require: 420');
  t.equal(ext.get('unsupported'), 'frobs', 'Unsupported names the extension');
  t.equal((await udpReply(request('OPTIONS', 'mailto:alice@example.test'))).status, 416, 'unknown URI scheme: 416');
  t.equal((await udpReply(request('OPTIONS', 'sip:alice@example.test', { maxForwards: 0 }))).status, 483, 'OPTIONS to a user with Max-Forwards 0: 483');
  t.equal((await udpReply(request('OPTIONS', 'sip:127.0.0.1', { maxForwards: 0 }))).status, 200, 'OPTIONS to the server itself with Max-Forwards 0: 200 (it is the target)');
  const ack = await udpExchange(request('ACK', 'sip:alice@example.test'), udpPort, 4, 300);
  t.equal(ack.msg, null, 'ACK is never answered');
});

t.test('bad input: answered with the RFC response or dropped and counted; the server carries on', async (t) => {
  const before = { ...server.stats.parseErrors };
  const version = await udpReply(request('OPTIONS', 'sip:127.0.0.1').replace('SIP/2.0\r\n', 'SIP/7.0\r\n'));
  t.equal(version.status, 505, 'SIP/7.0: 505');
  const mismatch = await udpReply(request('OPTIONS', 'sip:127.0.0.1', { cseqMethod: 'INVITE' }));
  t.equal(mismatch.status, 400, 'CSeq method mismatch: 400');
  t.match(mismatch.get('warning'), /CSeq method/, 'the Warning says why');
  const noCallId = await udpExchange(request('OPTIONS', 'sip:127.0.0.1').replace(/Call-ID: [^\r]*\r\n/, ''), udpPort, 4, 200);
  t.equal(noCallId.raw, null, 'missing Call-ID: dropped (no response could be matched without it)');
  const noMaxForwards = await udpReply(request('OPTIONS', 'sip:127.0.0.1').replace(/Max-Forwards: [^\r]*\r\n/, '').replace('Content-Length: 0', 'Content-Length: x'));
  t.equal(noMaxForwards.status, 400, 'bad Content-Length: 400');
  const longLength = await udpReply(request('OPTIONS', 'sip:127.0.0.1').replace('Content-Length: 0', 'Content-Length: 500'));
  t.equal(longLength.status, 400, 'Content-Length beyond the datagram: 400');

  for (const junk of [Buffer.from('hello world\r\n\r\n'), Buffer.from([0, 1, 2, 3, 255, 254]), Buffer.from('SIP/2.0 200 OK\r\nVia: x\r\n\r\n'), Buffer.from('INVITE sip:a@b SIP/2.0\r\nVia: ;;;\r\n\r\n')]) {
    const r = await udpExchange(junk, udpPort, 4, 200);
    t.equal(r.raw, null, `no reply to ${JSON.stringify(junk.toString('latin1').slice(0, 20))}`);
  }
  const s = server.stats.parseErrors;
  t.ok((s['400'] ?? 0) - (before['400'] ?? 0) >= 3, '400s counted');
  t.ok((s['505'] ?? 0) - (before['505'] ?? 0) >= 1, '505 counted');
  t.ok((s.drop ?? 0) - (before.drop ?? 0) >= 4, 'drops counted');

  // A stray response (no transaction) is dropped and counted.
  const stray = server.stats.strayResponses;
  await udpExchange('SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n', udpPort, 4, 200);
  t.equal(server.stats.strayResponses, stray + 1, 'stray response counted');

  // Over TCP a message without Content-Length closes the connection (no framing possible).
  const sock = net.connect(tcpPort, '127.0.0.1');
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  sock.on('error', () => {});
  sock.write('OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKnl\r\n\r\n');
  await closed;
  t.pass('connection closed on a framing error');

  t.equal((await udpReply(request('OPTIONS', 'sip:127.0.0.1'))).status, 200, 'still answering afterwards');
});

async function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string }> {
  try {
    const { stdout } = await promisify(execFile)(cmd, args, { encoding: 'utf8', timeout: 10_000 });
    return { code: 0, stdout };
  } catch (err) {
    const e = err as { code?: number; stdout?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '' };
  }
}

const sipsak = spawnSync('sipsak', ['--version'], { encoding: 'utf8' });
t.test('sipsak -s sip:127.0.0.1 gets its 200 (UDP and TCP)', { skip: sipsak.error ? 'sipsak not installed (apt-get install sipsak)' : false }, async (t) => {
  for (const transport of ['udp', 'tcp']) {
    // Asynchronously: the server runs in this process and must keep answering.
    const r = await run('sipsak', ['-s', `sip:127.0.0.1:${transport === 'udp' ? udpPort : tcpPort}`, '-E', transport, '-vv']);
    t.equal(r.code, 0, `sipsak over ${transport} exits 0 (a 200 came back)`);
    t.match(r.stdout, /SIP\/2\.0 200 OK/, `sipsak over ${transport} printed the 200`);
  }
});

t.test('no open relay: a forged Route to Portier does not get a request forwarded', async (t) => {
  const victim = dgram.createSocket('udp4');
  await new Promise<void>((r) => victim.bind(0, '127.0.0.1', r));
  let reached = 0;
  victim.on('message', () => reached++);
  const vport = victim.address().port;
  for (const [method, extra] of [
    ['INVITE', [`Route: <sip:127.0.0.1:${udpPort};lr>`]],
    ['MESSAGE', [`Route: <sip:127.0.0.1:${udpPort};lr;pt=AAAAAAAAAAAAAAAA>`]],
    ['BYE', [`Route: <sip:127.0.0.1:${udpPort};lr>`]],
  ] as const) {
    const r = await udpReply(request(method, `sip:victim@127.0.0.1:${vport}`, { extra: [...extra] }));
    t.equal(r.status, 403, `${method} with a forged Route: 403`);
  }
  const ack = await udpExchange(request('ACK', `sip:victim@127.0.0.1:${vport}`, { extra: [`Route: <sip:127.0.0.1:${udpPort};lr>`] }), udpPort, 4, 300);
  t.equal(ack.raw, null, 'a forged ACK gets no answer');
  t.equal(reached, 0, 'nothing reached the third party');
  victim.close();
});
