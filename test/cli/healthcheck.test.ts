import { createSocket, type Socket } from 'node:dgram';
import t from 'tap';
import { optionsRequest, sipPing } from '../../src/cli/healthcheck.js';

/** A UDP responder on 127.0.0.1: `answer` returns the reply for a request (or null to stay silent). */
async function responder(answer: (request: string, count: number) => string | null): Promise<{ port: number; socket: Socket; requests: string[] }> {
  const socket = createSocket('udp4');
  const requests: string[] = [];
  socket.on('message', (msg, rinfo) => {
    const request = msg.toString('latin1');
    requests.push(request);
    const reply = answer(request, requests.length);
    if (reply !== null) socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  return { port: socket.address().port, socket, requests };
}

function header(request: string, name: string): string {
  const m = new RegExp(`^${name}:\\s*(.*)$`, 'im').exec(request);
  return m ? m[1].trim() : '';
}

function reply(request: string, status: string): string {
  return [
    `SIP/2.0 ${status}`,
    `Via: ${header(request, 'Via')}`,
    `From: ${header(request, 'From')}`,
    `To: ${header(request, 'To')};tag=srv`,
    `Call-ID: ${header(request, 'Call-ID')}`,
    `CSeq: ${header(request, 'CSeq')}`,
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
}

t.test('the OPTIONS request is well formed', async (t) => {
  const r = optionsRequest('127.0.0.1', 5060, '127.0.0.1', 40000, 'id@x');
  t.match(r, /^OPTIONS sip:127\.0\.0\.1:5060 SIP\/2\.0\r\n/);
  for (const h of ['Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK', 'Max-Forwards: 70', 'Call-ID: id@x', 'CSeq: 1 OPTIONS', 'Content-Length: 0']) {
    t.match(r, `\r\n${h}`);
  }
  t.match(r, /\r\nFrom: <sip:healthcheck@127\.0\.0\.1>;tag=[0-9a-f]+\r\n/);
  t.ok(r.endsWith('\r\n\r\n'));
  t.match(optionsRequest('::1', 5060, '::1', 1, 'i'), /^OPTIONS sip:\[::1\]:5060 SIP\/2\.0\r\nVia: SIP\/2\.0\/UDP \[::1\]:1;/);
});

t.test('healthy on SIP/2.0 200 with our Call-ID', async (t) => {
  const srv = await responder((req) => reply(req, '200 OK'));
  t.teardown(() => srv.socket.close());
  const r = await sipPing({ port: srv.port });
  t.same(r, { ok: true, detail: 'SIP/2.0 200 OK' });
  t.equal(srv.requests.length, 1);
});

t.test('provisional answers are waited through; strangers are ignored', async (t) => {
  const srv = await responder((req) => reply(req, '100 Trying'));
  t.teardown(() => srv.socket.close());
  srv.socket.on('message', (msg, rinfo) => {
    const req = msg.toString('latin1');
    srv.socket.send(reply(req.replace(/^Call-ID:.*$/im, 'Call-ID: someone-else'), '200 OK'), rinfo.port, rinfo.address);
    setTimeout(() => srv.socket.send(reply(req, '200 OK'), rinfo.port, rinfo.address), 20);
  });
  t.same(await sipPing({ port: srv.port }), { ok: true, detail: 'SIP/2.0 200 OK' });
});

t.test('unhealthy on an error status', async (t) => {
  const srv = await responder((req) => reply(req, '503 Service Unavailable'));
  t.teardown(() => srv.socket.close());
  t.same(await sipPing({ port: srv.port }), { ok: false, detail: 'SIP/2.0 503 Service Unavailable' });
});

t.test('unhealthy without an answer in time; retransmits meanwhile', async (t) => {
  const srv = await responder(() => null);
  t.teardown(() => srv.socket.close());
  const started = Date.now();
  const r = await sipPing({ port: srv.port, timeoutMs: 700 });
  t.equal(r.ok, false);
  t.equal(r.detail, `no answer from 127.0.0.1:${srv.port} within 700 ms`);
  t.ok(Date.now() - started >= 650);
  t.equal(srv.requests.length, 2, 'sent at 0 and 500 ms');
});

t.test('answers to a retransmission count', async (t) => {
  const srv = await responder((req, n) => (n === 2 ? reply(req, '200 OK') : null));
  t.teardown(() => srv.socket.close());
  t.same(await sipPing({ port: srv.port }), { ok: true, detail: 'SIP/2.0 200 OK' });
});
