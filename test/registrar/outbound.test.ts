// RFC 5626 in the registrar: Require: outbound and Flow-Timer in the 200,
// 439 through an edge proxy without outbound, and bindings tied to the
// stream connection they came on (removed when it closes, unless they carry
// push parameters). End to end over real sockets: test/flows.test.ts.
import t from 'tap';
import type { SipMessage } from '../../src/sip/index.js';
import { buildRegisterResponse, flowTimerFor, MemoryLocationStore, Registrar, type Binding, type RegistrarConfig, type UnbindCause } from '../../src/registrar/index.js';
import type { Source } from '../../src/transport/types.js';
import { Clock, DOMAIN, register, tcpSource, udpSource } from './helpers.js';

const INSTANCE = '"<urn:uuid:00000000-0000-4000-8000-0000000000a1>"';
const OUTBOUND = `<sip:alice@192.0.2.1:5060;transport=tcp;ob>;+sip.instance=${INSTANCE};reg-id=1`;
const PUSH = 'pn-provider=fcm;pn-prid=TOKEN;pn-param=PROJECT';

function setup(config: Partial<RegistrarConfig> = {}) {
  const clock = new Clock();
  const registrar = new Registrar({ domains: [DOMAIN], sweepIntervalMs: 0, flowTimer: 96, ...config }, { store: new MemoryLocationStore(), now: clock.now });
  const ended: Array<{ binding: Binding; cause: UnbindCause }> = [];
  registrar.on('unregistered', (binding, cause) => ended.push({ binding, cause }));
  return { clock, registrar, ended };
}

async function send(registrar: Registrar, req: SipMessage, source: Source) {
  const result = await registrar.register(req, source);
  return { result, response: buildRegisterResponse(req, result) };
}

t.test('flowTimerFor: 80% of the idle timeout, 120 s at most, 1 s at least', async (t) => {
  t.equal(flowTimerFor(600), 120, 'the default idle timeout: the RFC default');
  t.equal(flowTimerFor(60), 48);
  t.equal(flowTimerFor(10), 8);
  t.equal(flowTimerFor(0.5), 1);
});

t.test('outbound over TCP straight to Portier: Require: outbound and Flow-Timer', async (t) => {
  const { registrar } = setup();
  const { result, response } = await send(registrar, register({ contacts: [OUTBOUND] }), tcpSource());
  t.equal(result.status, 200);
  t.equal(response.get('require'), 'outbound', 'RFC 5626 §6: the flow is in use');
  t.equal(response.get('flow-timer'), '96', 'the configured Flow-Timer');
  t.ok(response.tokens('supported').includes('outbound'), 'outbound in Supported');
  const [b] = await registrar.lookup('sip:alice@' + DOMAIN);
  t.equal(b.regId, 1);
  t.equal(b.source.connectionId, 7, 'bound to its connection');

  const off = await send(registrar, register({ contacts: [OUTBOUND], expires: 0, cseq: 2 }), tcpSource());
  t.equal(off.response.get('require'), 'outbound', 'also when the flow is unregistered');
});

t.test('outbound over UDP: Require: outbound, no Flow-Timer (the UA keeps its own UDP keep-alive pace)', async (t) => {
  const { registrar } = setup();
  const { response } = await send(registrar, register({ contacts: [OUTBOUND.replace('transport=tcp', 'transport=udp')] }), udpSource());
  t.equal(response.get('require'), 'outbound');
  t.equal(response.has('flow-timer'), false);
});

t.test('no outbound: without Supported: outbound, without reg-id, or without +sip.instance', async (t) => {
  const { registrar } = setup();
  for (const [what, req] of [
    ['no Supported: outbound', register({ contacts: [OUTBOUND], supported: 'path, gruu' })],
    ['no reg-id', register({ user: 'bob', contacts: [`<sip:bob@192.0.2.1;transport=tcp>;+sip.instance=${INSTANCE}`] })],
    ['reg-id without +sip.instance', register({ user: 'carol', contacts: ['<sip:carol@192.0.2.1;transport=tcp>;reg-id=1'] })],
  ] as const) {
    const { result, response } = await send(registrar, req, tcpSource());
    t.equal(result.status, 200, what);
    t.equal(response.has('require'), false, `${what}: no Require`);
    t.equal(response.has('flow-timer'), false, `${what}: no Flow-Timer`);
  }
});

t.test('through an edge proxy: its `ob` in Path makes outbound; without it, Require: outbound gets 439', async (t) => {
  const { registrar } = setup();
  const withOb = await send(registrar, register({ contacts: [OUTBOUND], extra: ['Path: <sip:edge.example.test;lr;ob>'] }), tcpSource());
  t.equal(withOb.response.get('require'), 'outbound', 'the edge proxy handles the flow');
  t.equal(withOb.response.has('flow-timer'), false, 'its keep-alives are the edge proxy’s business');

  const noOb = await send(registrar, register({ user: 'bob', contacts: [OUTBOUND.replace('alice', 'bob')], extra: ['Path: <sip:edge.example.test;lr>'] }), tcpSource());
  t.equal(noOb.result.status, 200, 'Supported: outbound only: registered the RFC 3261 way');
  t.equal(noOb.response.has('require'), false);

  const required = await send(registrar, register({ user: 'dan', contacts: [OUTBOUND.replace('alice', 'dan')], extra: ['Path: <sip:edge.example.test;lr>', 'Require: outbound'] }), tcpSource());
  t.equal(required.result.status, 439);
  t.equal(required.response.reason, 'First Hop Lacks Outbound Support');
});

t.test('a closed connection removes the bindings registered over it, outbound or not; push bindings stay', async (t) => {
  const { registrar, ended } = setup();
  await send(registrar, register({ contacts: [OUTBOUND] }), tcpSource('127.0.0.1', 40001, 7));
  await send(registrar, register({ user: 'bob', contacts: ['<sip:bob@192.168.1.20:5060;transport=tcp>'] }), tcpSource('127.0.0.1', 40001, 7));
  await send(registrar, register({ user: 'app', contacts: [`<sip:app@192.168.1.21;transport=tcp;${PUSH}>;+sip.instance=${INSTANCE}`] }), tcpSource('127.0.0.1', 40001, 7));
  await send(registrar, register({ user: 'door', contacts: ['<sip:door@192.0.2.9;transport=udp>'] }), udpSource());

  t.same(await registrar.connectionClosed(99), [], 'another connection: nothing');
  const removed = await registrar.connectionClosed(7);
  t.same(removed.map((b) => b.aor).sort(), [`sip:alice@${DOMAIN}`, `sip:bob@${DOMAIN}`], 'the outbound flow and the plain TCP binding');
  t.same(ended.map((e) => e.cause), ['connection-closed', 'connection-closed'], 'told as connection-closed');
  t.equal((await registrar.lookup(`sip:app@${DOMAIN}`)).length, 1, 'the app with push parameters stays, to be woken');
  t.equal((await registrar.lookup(`sip:door@${DOMAIN}`)).length, 1, 'UDP is untouched');
  t.same(await registrar.connectionClosed(7), [], 'once');
});

t.test('a binding refreshed over a new connection is not removed when the old one closes', async (t) => {
  const { registrar } = setup();
  await send(registrar, register({ contacts: [OUTBOUND] }), tcpSource('127.0.0.1', 40001, 7));
  await send(registrar, register({ contacts: [OUTBOUND], cseq: 2 }), tcpSource('127.0.0.1', 40002, 8));
  t.same(await registrar.connectionClosed(7), [], 'the binding moved to connection 8');
  t.equal((await registrar.connectionClosed(8)).length, 1, 'and goes with connection 8');
});

t.test('not tied to the connection: registered through a proxy (Path, or a second Via), or after close()', async (t) => {
  const { registrar } = setup();
  await send(registrar, register({ contacts: [OUTBOUND], extra: ['Path: <sip:edge.example.test;lr;ob>'] }), tcpSource('127.0.0.1', 40001, 7));
  await send(registrar, register({ user: 'bob', contacts: ['<sip:bob@192.0.2.1;transport=tcp>'], extra: ['Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK-ua'] }), tcpSource('127.0.0.1', 40001, 7));
  t.same(await registrar.connectionClosed(7), [], "the proxy's connection is not the device's");

  const other = setup();
  await send(other.registrar, register({ contacts: [OUTBOUND] }), tcpSource('127.0.0.1', 40001, 7));
  await other.registrar.close();
  t.same(await other.registrar.connectionClosed(7), [], 'a stopping server closes every connection: the devices did not leave');
});

t.test('unregistering or expiry drops the flow entry', async (t) => {
  const { registrar, clock } = setup();
  await send(registrar, register({ contacts: [OUTBOUND] }), tcpSource());
  await send(registrar, register({ contacts: [OUTBOUND], expires: 0, cseq: 2 }), tcpSource());
  await send(registrar, register({ user: 'bob', contacts: ['<sip:bob@192.0.2.1;transport=tcp>'], expires: 60 }), tcpSource());
  clock.advance(61);
  t.equal((await registrar.sweep()).length, 1);
  t.same(await registrar.connectionClosed(7), [], 'nothing left to remove');
});

t.test('the stream cap spares bindings with push parameters', async (t) => {
  const { registrar } = setup({ maxStreamExpires: 120 });
  const plain = await send(registrar, register({ contacts: ['<sip:alice@192.0.2.1;transport=tcp>'], expires: 3600 }), tcpSource());
  t.match(plain.response.get('contact') ?? '', /expires=120/, 'a plain TCP binding refreshes within the idle timeout');
  const push = await send(registrar, register({ user: 'app', contacts: [`<sip:app@192.0.2.1;transport=tcp;${PUSH}>`], expires: 3600 }), tcpSource());
  t.match(push.response.get('contact') ?? '', /expires=3600/, 'a push binding outlives its connection on purpose');
});
