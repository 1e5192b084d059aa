// Overload control in the running server, over real UDP and TCP on loopback:
// the stateless 503 with Retry-After for new requests while the level is up,
// calls refused after registrations, requests inside a dialog still answered,
// the metrics, reload, and the real event-loop sampler against a loop kept busy.
import t from 'tap';
import dgram from 'node:dgram';
import net from 'node:net';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer, type RunningServer } from '../src/server.js';
import { parseAndValidate, SipParseError, type SipMessage } from '../src/sip/index.js';
import { metric, scrape } from './helpers/tools.js';
import { replyCollector } from './helpers/ua.js';
import { until } from './helpers/wait.js';

const yaml = (overload: string): string =>
  [
    'domains: [example.test]',
    'storage: {type: memory}',
    'listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0]',
    'log: {level: fatal}',
    'metrics: {listen: "127.0.0.1:0"}',
    `overload: ${overload}`,
  ].join('\n');

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
  while (server.overload.level < level - 1e-9) server.overload.sample(1);
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
  client.send(request('ACK', { branch, callId: 'refused-call@test', toTag: r1.to().tag ?? '' }).replace('CSeq: 1 ACK', 'CSeq: 1 ACK'), udp);
  const bye = await client.ask(request('BYE', { toTag: 'dlg-1' }), udp);
  t.not(bye.status, 503, `a BYE inside a dialog is answered, not refused (${bye.status})`);
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

/** Keeps the loop busy in slices of 20 ms, each handed back to the loop (as SIP work would be), until `done()` or `ms`. */
async function busy(ms: number, done: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) {
    const slice = Date.now() + 20;
    while (Date.now() < slice);
    await new Promise((r) => setImmediate(r));
  }
}

t.test('the real sampler: a saturated loop gets REGISTERs refused, an idle one takes them again; disabled, never', async (t) => {
  const server = await startServer(parseConfig(yaml('{}'), 'test.yaml'), createLogger('fatal'));
  t.teardown(() => server.stop());
  const udp = portOf(server, 'udp');
  const client = await Client.open();
  t.teardown(() => client.close());
  let sent = 0;
  await busy(6000, () => {
    // A REGISTER every slice; stop once one was refused.
    if (client.replies.some((r) => r.status === 503)) return true;
    // Ten per slice: ~400 messages/s with the answers, above the 200/s overload needs to blame SIP.
    for (let i = 0; i < 10; i++) client.send(request('REGISTER'), udp);
    sent += 10;
    return false;
  });
  t.ok(
    client.replies.some((r) => r.status === 503),
    `refused while the loop had no idle time (${sent} REGISTERs, utilization ${server.overload.utilization.toFixed(3)})`,
  );
  await until(() => server.overload.level === 0, 'the level back to 0', 8000);
  t.equal((await client.ask(request('REGISTER'), udp)).status, 200, 'idle again: taken');

  const off = await startServer(parseConfig(yaml('{enabled: false}'), 'test.yaml'), createLogger('fatal'));
  t.teardown(() => off.stop());
  const offPort = portOf(off, 'udp');
  await busy(1500, () => {
    for (let i = 0; i < 10; i++) client.send(request('REGISTER'), offPort);
    return false;
  });
  t.equal(off.overload.level, 0, 'disabled: a saturated loop refuses nothing');
});
