// Overload control in the running server, over real UDP and TCP on loopback:
// the stateless 503 with Retry-After for new requests while the level is up,
// calls refused after registrations, requests inside a dialog still answered,
// the metrics, reload, and the real signal: the UDP queue probe, against a loop
// that cannot keep up and one that can.
import t from 'tap';
import dgram from 'node:dgram';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { parseAndValidate, SipParseError, type SipMessage } from '../src/sip/index.js';
import { metric, scrape } from './helpers/tools.js';
import { replyCollector } from './helpers/ua.js';
import { until } from './helpers/wait.js';

const execFileP = promisify(execFile);

const yaml = (overload: string, ...more: string[]): string =>
  [
    'domains: [example.test]',
    'storage: {type: memory}',
    'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
    'log: {level: fatal}',
    'metrics: {listen: "127.0.0.1:0"}',
    `overload: ${overload}`,
    ...more,
  ].join('\n');

// The floods below come from one address, as a stand-in for many devices: the
// per-source rate limit (100/s by default) would drop all but its burst, and a
// flood that limit drops is not overload control's to refuse.
const NO_RATE_LIMIT = 'security: {rate: {per-source: 0}}';

let seq = 0;
function request(method: string, o: { toTag?: string; branch?: string; callId?: string; transport?: string } = {}): string {
  seq++;
  const user = method === 'REGISTER' ? 'alice' : 'bob';
  const ruri = method === 'REGISTER' ? 'sip:example.test' : `sip:${user}@example.test`;
  return (
    [
      `${method} ${ruri} SIP/2.0`,
      `Via: SIP/2.0/${o.transport ?? 'UDP'} 127.0.0.1:9;branch=${o.branch ?? `z9hG4bK-ol-${seq}`};rport`,
      'Max-Forwards: 70',
      `From: <sip:alice@example.test>;tag=f${seq}`,
      `To: <sip:${user}@example.test>${o.toTag === undefined ? '' : ';tag=' + o.toTag}`,
      `Call-ID: ${o.callId ?? `ol-${seq}@test`}`,
      `CSeq: 1 ${method}`,
      ...(method === 'REGISTER' ? ['Contact: <sip:alice@127.0.0.1:9>', 'Expires: 60'] : []),
      'Content-Length: 0',
    ].join('\r\n') + '\r\n\r\n'
  );
}

class Client {
  readonly replies: SipMessage[] = [];
  private constructor(readonly sock: dgram.Socket) {
    sock.on('message', (raw) => {
      const m = parseAndValidate(raw, { transport: 'udp' });
      if (!(m instanceof SipParseError) && !m.isRequest && m.status !== 100) this.replies.push(m);
    });
  }
  static async open(): Promise<Client> {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    return new Client(sock);
  }
  send(text: string, port: number): void {
    this.sock.send(Buffer.from(text, 'latin1'), port, '127.0.0.1');
  }
  /** Sends and waits for the final response with this request's Call-ID. */
  async ask(text: string, port: number): Promise<SipMessage> {
    const callId = /Call-ID: (\S+)/.exec(text)![1];
    this.send(text, port);
    await until(() => this.replies.some((r) => r.callId() === callId), `a reply to ${text.slice(0, text.indexOf(' '))}`);
    return this.replies.filter((r) => r.callId() === callId).at(-1)!;
  }
  close(): void {
    this.sock.close();
  }
}

function portOf(server: RunningServer, protocol: string): number {
  const ep = server.listening().find((e) => e.protocol === protocol);
  if (ep === undefined) throw new Error('no ' + protocol + ' listener');
  return ep.port;
}

/** Holds the server's level at `level` (a multiple of 0.2): its sampler stopped, windows fed by hand. */
function hold(server: RunningServer, level: number): void {
  server.overload.stop();
  while (server.overload.level < level - 1e-9) server.overload.sample(150); // 0.3 x T1: RISE per window
}

t.test('while the level is up: 503 with Retry-After, registrations refused before calls, dialogs and CANCEL answered, all counted', async (t) => {
  const server = await startServer(parseConfig(yaml('{retry-after: 3}'), 'test.yaml'), createLogger('fatal'));
  t.teardown(() => server.stop());
  const udp = portOf(server, 'udp');
  const client = await Client.open();
  t.teardown(() => client.close());

  t.equal((await client.ask(request('REGISTER'), udp)).status, 200, 'not overloaded: REGISTER taken');

  hold(server, 0.4);
  const first = await client.ask(request('REGISTER'), udp);
  t.equal(first.status, 200, 'level 0.4: 80% of REGISTERs refused, spread evenly: the first taken');
  const refused = await client.ask(request('REGISTER'), udp);
  t.equal(refused.status, 503, 'the next one gets 503');
  const after = Number(refused.get('retry-after'));
  t.ok(after >= 3 && after <= 6, `Retry-After ${after} in 3..6`);
  t.match(refused.to().tag, /^ol[0-9a-f]{16}$/, 'with the stateless To tag');
  const invite = await client.ask(request('INVITE'), udp);
  t.not(invite.status, 503, `level 0.4: an INVITE is still routed (${invite.status}: bob is not registered)`);

  hold(server, 1);
  const branch = 'z9hG4bK-ol-call';
  const inv = request('INVITE', { branch, callId: 'refused-call@test' });
  const r1 = await client.ask(inv, udp);
  t.equal(r1.status, 503, 'level 1: a new INVITE gets 503');
  client.replies.length = 0;
  const r2 = await client.ask(inv, udp);
  t.equal(r2.to().tag, r1.to().tag, 'its retransmission gets the same 503, same To tag');
  // The ACK of the 503: no transaction, dropped by the proxy (no Route it signed); nothing comes back.
  const forCall = () => client.replies.filter((r) => r.callId() === 'refused-call@test').length;
  const before = forCall();
  client.send(request('ACK', { branch, callId: 'refused-call@test', toTag: r1.to().tag ?? '' }), udp);
  const bye = await client.ask(request('BYE', { toTag: 'dlg-1' }), udp);
  t.not(bye.status, 503, `a BYE inside a dialog is answered, not refused (${bye.status})`);
  t.equal(forCall(), before, 'the ACK of the 503 got no answer (read before the BYE it was sent ahead of)');
  const cancel = await client.ask(request('CANCEL', { branch: 'z9hG4bK-ol-nothing' }), udp);
  t.equal(cancel.status, 481, 'a CANCEL goes on (481: no such INVITE)');

  // Over TCP too: a new request gets the 503 on its connection.
  const tcp = net.connect(portOf(server, 'tcp'), '127.0.0.1');
  t.teardown(() => tcp.destroy());
  const { replies, framer } = replyCollector('tcp');
  tcp.on('data', (d) => framer.push(d));
  tcp.write(request('OPTIONS', { transport: 'TCP' }));
  await until(() => replies.some((r) => r.status !== 100), 'a reply over TCP');
  t.equal(replies.find((r) => r.status !== 100)?.status, 503, 'an OPTIONS over TCP: 503');

  const text = await scrape(server.metricsAddress()!.port);
  t.equal(metric(text, 'portier_overload_level'), 1);
  t.equal(metric(text, 'portier_overload_refused_total', { method: 'INVITE' }), 2);
  t.equal(metric(text, 'portier_overload_refused_total', { method: 'REGISTER' }), 1);
  t.equal(metric(text, 'portier_overload_refused_total', { method: 'other' }), 1, 'the OPTIONS');
  t.ok(metric(text, 'portier_sip_responses_total', { method: 'INVITE', code_class: '5xx' }) >= 2, 'the 503s count as responses sent');
  t.ok(metric(text, 'portier_event_loop_busy_seconds_total') > 0, 'the loop busy time is exported');

  server.overload.stop();
  t.equal((await client.ask(request('REGISTER'), udp)).status, 200, 'level back to 0: taken again');
});

t.test('reload: overload.enabled off stops the sampler and takes everything; on starts it again', async (t) => {
  const server = await startServer(parseConfig(yaml('{enabled: true}'), 'test.yaml'), createLogger('fatal'));
  t.teardown(() => server.stop());
  hold(server, 1);
  server.reload(parseConfig(yaml('{enabled: false}'), 'test.yaml'));
  t.equal(server.overload.level, 0, 'disabled: level 0');
  const client = await Client.open();
  t.teardown(() => client.close());
  t.equal((await client.ask(request('REGISTER'), portOf(server, 'udp'))).status, 200);
  server.reload(parseConfig(yaml('{enabled: true, retry-after: 10}'), 'test.yaml'));
  hold(server, 1);
  const r = await client.ask(request('REGISTER'), portOf(server, 'udp'));
  t.equal(r.status, 503);
  t.ok(Number(r.get('retry-after')) >= 10 && Number(r.get('retry-after')) <= 20, 'the new retry-after applies');
});

/**
 * REGISTERs from another process (so that Portier, not the sender, is what
 * cannot keep up), `perTick` every 10 ms for `ms`, each for a new AOR; the
 * replies are counted by status for 2 s more. Bounded in count and time.
 */
const FLOOD = `
const dgram = require('node:dgram');
const [port, perTick, ms] = process.argv.slice(1).map(Number);
const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
const statuses = {};
let sent = 0;
sock.on('message', (m) => {
  const s = m.toString('latin1', 8, 11);
  statuses[s] = (statuses[s] ?? 0) + 1;
});
sock.bind(0, '127.0.0.1', () => {
  const me = sock.address().port;
  const end = Date.now() + ms;
  const tick = () => {
    if (Date.now() >= end) {
      setTimeout(() => { process.stdout.write(JSON.stringify({ sent, statuses })); sock.close(); }, 2000);
      return;
    }
    for (let i = 0; i < perTick; i++, sent++) {
      sock.send('REGISTER sip:example.test SIP/2.0\\r\\nVia: SIP/2.0/UDP 127.0.0.1:' + me + ';branch=z9hG4bKfl' + sent + ';rport\\r\\nMax-Forwards: 70\\r\\n' +
        'From: <sip:f' + sent + '@example.test>;tag=f\\r\\nTo: <sip:f' + sent + '@example.test>\\r\\nCall-ID: fl' + sent + '\\r\\nCSeq: 1 REGISTER\\r\\n' +
        'Contact: <sip:f' + sent + '@127.0.0.1:' + me + '>\\r\\nExpires: 60\\r\\nContent-Length: 0\\r\\n\\r\\n', port, '127.0.0.1');
    }
    setTimeout(tick, 10);
  };
  tick();
});`;

async function flood(port: number, perTick: number, ms: number): Promise<{ sent: number; statuses: Record<string, number> }> {
  const { stdout } = await execFileP(process.execPath, ['-e', FLOOD, String(port), String(perTick), String(ms)], { timeout: ms + 20_000 });
  return JSON.parse(stdout) as { sent: number; statuses: Record<string, number> };
}

t.test('the real signal: REGISTERs faster than Portier reads them are refused once they wait; a rate it keeps up with is not; disabled, never', async (t) => {
  const server = await startServer(parseConfig(yaml('{}', NO_RATE_LIMIT), 'test.yaml'), createLogger('fatal'));
  t.teardown(() => server.stop());
  const udp = portOf(server, 'udp');

  const calm = await flood(udp, 1, 1500); // 100/s
  t.same(Object.keys(calm.statuses), ['200'], `100 REGISTERs a second: every one taken (${JSON.stringify(calm)})`);
  t.equal(server.overload.level, 0);

  // 100,000/s offered for 1.5 s (the sender reaches what it can): far beyond what any Portier takes.
  const storm = await flood(udp, 1000, 1500);
  t.ok((storm.statuses['503'] ?? 0) > 0, `a flood of REGISTERs: some refused with 503 (${JSON.stringify(storm)})`);
  t.ok((storm.statuses['200'] ?? 0) > 0, 'and some taken');
  const text = await scrape(server.metricsAddress()!.port);
  t.ok(metric(text, 'portier_overload_refused_total', { method: 'REGISTER' }) > 0, 'counted');
  await until(() => server.overload.level === 0, 'the level back to 0', 15000);
  const client = await Client.open();
  t.teardown(() => client.close());
  t.equal((await client.ask(request('REGISTER'), udp)).status, 200, 'drained: taken again');

  const off = await startServer(parseConfig(yaml('{enabled: false}', NO_RATE_LIMIT), 'test.yaml'), createLogger('fatal'));
  t.teardown(() => off.stop());
  const unguarded = await flood(portOf(off, 'udp'), 1000, 1000);
  t.equal(unguarded.statuses['503'] ?? 0, 0, `disabled: nothing refused (${JSON.stringify(unguarded)})`);
  t.equal(off.overload.level, 0);
});
