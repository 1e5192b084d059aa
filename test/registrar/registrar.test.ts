// The registrar (RFC 3261 §10.3) driven with the REGISTERs linphonec really
// sent (test/fixtures/traces 01, 02, 04) and with REGISTERs built to probe
// each rule: bindings, expiry, ordering, GRUUs, Path, push parameters.
import t from 'tap';
import { buildResponse, parseAndValidate, parseUri, SipParseError, type SipMessage } from '../../src/sip/index.js';
import {
  buildRegisterResponse,
  MemoryLocationStore,
  Registrar,
  type Binding,
  type RegistrarConfig,
  type UnbindCause,
} from '../../src/registrar/index.js';
import type { Source } from '../../src/transport/types.js';
import { Clock, DOMAIN, register, registerText, tcpSource, trace, traceBytes, udpSource, unq } from './helpers.js';

const DOOR_INSTANCE = '<urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f>';
const DOOR_AOR = 'sip:door@intercom.test';
const LINPHONE_SOURCE: Source = udpSource('127.0.0.1', 40158);

function setup(config: Partial<RegistrarConfig> = {}) {
  const clock = new Clock();
  const store = new MemoryLocationStore();
  const registrar = new Registrar({ domains: [DOMAIN], sweepIntervalMs: 0, ...config }, { store, now: clock.now });
  const events: Array<{ type: 'registered' | 'unregistered'; binding: Binding; previous?: Binding | null; cause?: UnbindCause }> = [];
  registrar.on('registered', (binding, previous) => events.push({ type: 'registered', binding, previous }));
  registrar.on('unregistered', (binding, cause) => events.push({ type: 'unregistered', binding, cause }));
  return { clock, store, registrar, events };
}

/** Registers and returns the result and the response as a parsed message. */
async function send(registrar: Registrar, req: SipMessage, source: Source = udpSource()) {
  const result = await registrar.register(req, source);
  const response = buildRegisterResponse(req, result);
  return { result, response, contacts: response.contacts() ?? [] };
}

t.test('linphonec REGISTER (trace 01): 200 with its binding, expiry and GRUUs', async (t) => {
  const { registrar, clock, events } = setup();
  const req = trace('01-register-udp-initial.sip');
  const { result, response, contacts } = await send(registrar, req, LINPHONE_SOURCE);

  t.equal(result.status, 200);
  t.equal(result.outcome, 'registered');
  t.equal(result.aor, DOOR_AOR);
  t.equal(response.status, 200);
  t.equal(response.callId(), 'LpuPHHmFfx');
  t.equal(response.cseq().seq, 20);
  t.ok(response.to().tag, 'the 200 has a To tag');

  // The stored binding.
  const [b] = await registrar.lookup(DOOR_AOR);
  t.equal(b.aor, DOOR_AOR);
  t.equal(b.contact, 'sip:door@127.0.0.1:40158;transport=udp');
  t.equal(b.instance, DOOR_INSTANCE, '+sip.instance unquoted, kept as written');
  t.equal(b.key, 'i:urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f|');
  t.equal(b.regId, null);
  t.equal(b.q, 1);
  t.equal(b.callId, 'LpuPHHmFfx');
  t.equal(b.cseq, 20);
  t.equal(b.expiresAt, clock.t + 600_000, 'Expires: 600 granted');
  t.equal(b.registeredAt, clock.t);
  t.equal(b.userAgent, 'Linphonec/5.1.65');
  t.same(b.source, LINPHONE_SOURCE);
  t.same(b.path, []);
  t.same(b.pushParams, {});
  t.equal(b.gruu?.pub, 'urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f');
  t.equal(b.gruu?.temp.length, 1);
  t.equal(b.instance, DOOR_INSTANCE);
  t.same(b.contactParams, {}, '+sip.instance has its own field; no other Contact parameter');

  // The response Contact: as a registrar answered linphonec in trace 03.
  t.equal(contacts.length, 1);
  const c = contacts[0];
  t.equal(c.uriText, 'sip:door@127.0.0.1:40158;transport=udp');
  t.equal(c.param('expires'), '600');
  t.equal(unq(c.param('+sip.instance')), DOOR_INSTANCE);
  const ref = trace('03-register-200-from-registrar.sip').contacts()![0];
  t.equal(c.param('pub-gruu'), ref.param('pub-gruu'), 'the same pub-gruu the reference registrar gave');
  t.match(unq(c.param('temp-gruu')), /^sip:tgruu\.[0-9a-f]{32}@intercom\.test;gr$/);
  t.equal(unq(c.param('temp-gruu')), `sip:tgruu.${b.gruu?.temp[0]}@intercom.test;gr`);
  t.ok(response.tokens('supported').includes('gruu'));
  t.ok(response.tokens('supported').includes('path'));
  const date = response.get('date');
  t.equal(date, new Date(clock.t).toUTCString());
  t.match(date, /^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/, 'RFC 1123 date (RFC 3261 §20.17)');

  t.equal(events.length, 1);
  t.equal(events[0].type, 'registered');
  t.equal(events[0].previous, null);
  t.same(registrar.stats.registrations, { [DOMAIN]: 1 });
  t.same(await registrar.bindingCounts(), { aors: 1, bindings: 1, byDomain: { [DOMAIN]: 1 } });
});

t.test('trace 02 refreshes the binding of trace 01: one binding, a second temp-gruu, both valid', async (t) => {
  const { registrar, clock, events } = setup();
  await send(registrar, trace('01-register-udp-initial.sip'), LINPHONE_SOURCE);
  const [first] = await registrar.lookup(DOOR_AOR);
  clock.advance(540);
  const { result, contacts } = await send(registrar, trace('02-register-udp-with-digest.sip'), LINPHONE_SOURCE);
  t.equal(result.status, 200);

  const bindings = await registrar.lookup(DOOR_AOR);
  t.equal(bindings.length, 1);
  const b = bindings[0];
  t.equal(b.cseq, 21);
  t.equal(b.expiresAt, clock.t + 600_000, 'the expiry restarts');
  t.equal(b.registeredAt, first.registeredAt, 'registeredAt survives the refresh');
  t.equal(b.updatedAt, clock.t);
  t.equal(b.gruu?.temp.length, 2);
  t.equal(b.gruu?.temp[0], first.gruu?.temp[0], 'the earlier temp-gruu is kept');
  t.equal(unq(contacts[0].param('temp-gruu')), `sip:tgruu.${b.gruu?.temp[1]}@intercom.test;gr`, 'the 200 gives the new one');
  for (const token of b.gruu!.temp) {
    const r = await registrar.resolveGruu(parseUri(`sip:tgruu.${token}@intercom.test;gr`)!);
    t.equal(typeof r === 'object' && r !== null ? r.key : r, b.key, 'temp-gruu resolves');
  }
  t.equal(events[1].type, 'registered');
  t.equal(events[1].previous?.cseq, 20);
  t.equal(registrar.stats.bindingsAdded, 1);
  t.equal(registrar.stats.bindingsRefreshed, 1);
});

t.test('same Call-ID with a CSeq not higher: 500, nothing changes (§10.3 step 7)', async (t) => {
  const { registrar } = setup();
  await send(registrar, trace('02-register-udp-with-digest.sip'), LINPHONE_SOURCE);
  const before = await registrar.lookup(DOOR_AOR);

  // A delayed copy of the older REGISTER (CSeq 20) after CSeq 21.
  const late = await send(registrar, trace('01-register-udp-initial.sip'), LINPHONE_SOURCE);
  t.equal(late.result.status, 500);
  t.equal(late.result.outcome, 'stale');
  t.equal(late.response.status, 500);
  t.match(late.response.get('warning'), /^399 portier "CSeq 20 not higher than 21/);
  t.equal(late.contacts.length, 0);
  // The same CSeq again (a retransmission the transaction layer let through).
  const again = await send(registrar, trace('02-register-udp-with-digest.sip'), LINPHONE_SOURCE);
  t.equal(again.result.status, 500);
  t.same(await registrar.lookup(DOOR_AOR), before, 'the binding is untouched');

  // Removing with a stale CSeq fails too, and removes nothing.
  const rm = await send(registrar, register({ user: 'door', callId: 'LpuPHHmFfx', cseq: 21, contacts: [`<sip:door@127.0.0.1:40158;transport=udp>;+sip.instance="${DOOR_INSTANCE}"`], expires: 0 }));
  t.equal(rm.result.status, 500);
  const star = await send(registrar, register({ user: 'door', callId: 'LpuPHHmFfx', cseq: 5, contacts: ['*'], expires: 0 }));
  t.equal(star.result.status, 500, 'so does * (§10.3 step 6)');
  t.equal((await registrar.lookup(DOOR_AOR)).length, 1);

  // Another Call-ID has no ordering against this one.
  const other = await send(registrar, register({ user: 'door', callId: 'other', cseq: 1, contacts: [`<sip:door@127.0.0.1:40158;transport=udp>;+sip.instance="${DOOR_INSTANCE}"`] }));
  t.equal(other.result.status, 200);
});

t.test('linphonec over TCP (trace 04): the binding keeps its flow', async (t) => {
  const { registrar } = setup();
  const source = tcpSource('127.0.0.1', 47388, 42);
  const { result } = await send(registrar, trace('04-register-tcp-with-digest.sip', 'tcp'), source);
  t.equal(result.status, 200);
  const [b] = await registrar.lookup('sip:alice@intercom.test');
  t.equal(b.contact, 'sip:alice@127.0.0.1:47388;transport=tcp');
  t.equal(b.source.protocol, 'tcp');
  t.equal(b.source.connectionId, 42);
  t.equal(b.source.port, 47388);
  t.equal(b.source, source, 'the Source object itself is kept');
});

t.test('same +sip.instance from a new address (NAT rebinding, restart) replaces the binding', async (t) => {
  const { registrar, events } = setup();
  await send(registrar, trace('01-register-udp-initial.sip'), LINPHONE_SOURCE);
  const [old] = await registrar.lookup(DOOR_AOR);
  const oldTemp = parseUri(`sip:tgruu.${old.gruu!.temp[0]}@intercom.test;gr`)!;

  const moved = register({
    user: 'door',
    callId: 'after-reboot',
    cseq: 1,
    contacts: [`"door" <sip:door@198.51.100.7:61000;transport=udp>;+sip.instance="${DOOR_INSTANCE}"`],
    expires: 600,
  });
  const { result, contacts } = await send(registrar, moved, udpSource('198.51.100.7', 61000));
  t.equal(result.status, 200);
  t.equal(contacts.length, 1, 'still one binding');
  t.equal(contacts[0].uriText, 'sip:door@198.51.100.7:61000;transport=udp');
  const bindings = await registrar.lookup(DOOR_AOR);
  t.equal(bindings.length, 1);
  t.equal(bindings[0].key, old.key);
  t.equal(bindings[0].source.address, '198.51.100.7');
  t.equal(bindings[0].registeredAt, old.registeredAt);
  t.equal((await registrar.bindingCounts()).bindings, 1);
  t.equal(events.at(-1)?.type, 'registered');
  t.equal(events.at(-1)?.previous?.contact, old.contact);
  // A new Call-ID invalidates the temp-gruus issued under the old one (RFC 5627).
  t.equal(await registrar.resolveGruu(oldTemp), 'expired');
  t.equal(bindings[0].gruu?.temp.length, 1);
  t.not(bindings[0].gruu?.temp[0], old.gruu?.temp[0]);
});

t.test('a device that registered without an instance is taken over when it names itself', async (t) => {
  const { registrar, events } = setup();
  await send(registrar, register({ callId: 'c1', contacts: ['<sip:alice@192.0.2.1:5060;transport=udp>'] }));
  const r = await send(registrar, register({ callId: 'c1', cseq: 2, contacts: ['<sip:alice@192.0.2.1:5060;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-0000-0000-00000000000a>"'] }));
  t.equal(r.contacts.length, 1);
  const [b] = await registrar.lookup('sip:alice@intercom.test');
  t.equal(b.instance, '<urn:uuid:00000000-0000-0000-0000-00000000000a>');
  t.same(
    events.filter((e) => e.type === 'unregistered').map((e) => e.cause),
    ['replaced'],
  );
});

t.test('three devices of one AOR: three bindings, highest q first; expires=0 removes one', async (t) => {
  const { registrar, events } = setup();
  const devices = [
    { callId: 'desk', contact: '<sip:alice@192.0.2.10:5060>;q=0.5' },
    { callId: 'phone', contact: '<sip:alice@192.0.2.11:5060;transport=tcp>' },
    { callId: 'tablet', contact: '<sip:alice@192.0.2.12:5062>;q=0.8' },
  ];
  for (const d of devices) {
    const r = await send(registrar, register({ callId: d.callId, contacts: [d.contact] }));
    t.equal(r.result.status, 200);
  }
  const bindings = await registrar.lookup('sip:alice@intercom.test');
  t.same(
    bindings.map((b) => [b.contact, b.q]),
    [
      ['sip:alice@192.0.2.11:5060;transport=tcp', 1],
      ['sip:alice@192.0.2.12:5062', 0.8],
      ['sip:alice@192.0.2.10:5060', 0.5],
    ],
  );
  // The last 200 lists all three, with their q.
  const fetch = await send(registrar, register({ callId: 'query', contacts: [] }));
  t.equal(fetch.result.outcome, 'fetched');
  t.same(
    fetch.contacts.map((c) => [c.uriText, c.param('q') ?? null, c.param('expires')]),
    [
      ['sip:alice@192.0.2.11:5060;transport=tcp', null, '600'],
      ['sip:alice@192.0.2.12:5062', '0.8', '600'],
      ['sip:alice@192.0.2.10:5060', '0.5', '600'],
    ],
  );

  // The tablet leaves.
  const bye = await send(registrar, register({ callId: 'tablet', cseq: 2, contacts: ['<sip:alice@192.0.2.12:5062>;expires=0'] }));
  t.equal(bye.result.status, 200);
  t.same(
    bye.contacts.map((c) => c.uriText),
    ['sip:alice@192.0.2.11:5060;transport=tcp', 'sip:alice@192.0.2.10:5060'],
  );
  t.equal((await registrar.lookup('sip:alice@intercom.test')).length, 2);
  const last = events.at(-1)!;
  t.equal(last.type, 'unregistered');
  t.equal(last.cause, 'unregistered');
  t.equal(last.binding.contact, 'sip:alice@192.0.2.12:5062');

  // Removing an address never bound changes nothing and still succeeds.
  const none = await send(registrar, register({ callId: 'x', contacts: ['<sip:alice@192.0.2.99>'], expires: 0 }));
  t.equal(none.result.status, 200);
  t.equal(none.contacts.length, 2);
});

t.test('Contact URIs are compared per RFC 3261 §19.1.4 (simplified)', async (t) => {
  const { registrar } = setup();
  await send(registrar, register({ callId: 'a', contacts: ['<sip:alice@Host.Example:5060;transport=UDP;pn-prid=old>'] }));
  // Host case, transport case and pn-* parameters do not matter: a refresh.
  await send(registrar, register({ callId: 'b', contacts: ['<sip:alice@host.example:5060;transport=udp;pn-prid=new>'] }));
  let bindings = await registrar.lookup('sip:alice@intercom.test');
  t.equal(bindings.length, 1);
  t.equal(bindings[0].pushParams['pn-prid'], 'new', 'the refresh updated the push token');
  // No port differs from an explicit 5060; another user part differs.
  await send(registrar, register({ callId: 'c', contacts: ['<sip:alice@host.example;transport=udp>'] }));
  await send(registrar, register({ callId: 'd', contacts: ['<sip:Alice@host.example:5060;transport=udp>'] }));
  bindings = await registrar.lookup('sip:alice@intercom.test');
  t.equal(bindings.length, 3);
});

t.test('Contact: * with Expires: 0 removes every binding; otherwise 400', async (t) => {
  const { registrar, events } = setup();
  for (const [i, d] of ['a', 'b', 'c'].entries()) await send(registrar, register({ callId: d, contacts: [`<sip:alice@192.0.2.${i + 1}>`] }));
  t.equal((await registrar.lookup('sip:alice@intercom.test')).length, 3);

  const bad = await send(registrar, register({ callId: 'z', contacts: ['*'], expires: 3600 }));
  t.equal(bad.result.status, 400);
  t.equal(bad.result.outcome, 'bad-request');
  t.match(bad.response.get('warning'), /Expires: 0/);
  const noExpires = await send(registrar, register({ callId: 'z', contacts: ['*'] }));
  t.equal(noExpires.result.status, 400, '* without Expires asks for the default expiry: invalid');
  // * with another Contact: the parser refuses it; the registrar does too if handed the partial message.
  const mixed = parseAndValidate(Buffer.from(registerText({ callId: 'z', contacts: ['*', '<sip:alice@192.0.2.9>'], expires: 0 }), 'latin1'));
  t.ok(mixed instanceof SipParseError);
  if (mixed instanceof SipParseError) {
    t.equal(mixed.code, 400);
    t.equal((await registrar.register(mixed.message!, udpSource())).status, 400);
  }
  const mixed2 = parseAndValidate(Buffer.from(registerText({ callId: 'z', contacts: ['<sip:alice@192.0.2.9>', '*'], expires: 0 }), 'latin1'));
  const m2 = mixed2 instanceof SipParseError ? mixed2.message! : mixed2;
  t.equal((await registrar.register(m2, udpSource())).status, 400, '* after another Contact');
  t.equal((await registrar.lookup('sip:alice@intercom.test')).length, 3, 'the bad requests removed nothing');

  const all = await send(registrar, register({ callId: 'z', contacts: ['*'], expires: 0 }));
  t.equal(all.result.status, 200);
  t.equal(all.contacts.length, 0);
  t.same(await registrar.lookup('sip:alice@intercom.test'), []);
  t.same(await registrar.bindingCounts(), { aors: 0, bindings: 0, byDomain: {} });
  t.equal(events.filter((e) => e.type === 'unregistered').length, 3);
});

t.test('expiry: contact parameter, Expires header, default; 423 below the minimum; clamped above the maximum', async (t) => {
  const { registrar, clock } = setup();
  const expiresOf = async (callId: string) => {
    const b = (await registrar.lookup('sip:alice@intercom.test')).find((x) => x.callId === callId)!;
    return (b.expiresAt - clock.t) / 1000;
  };

  await send(registrar, register({ callId: 'default', contacts: ['<sip:alice@192.0.2.1>'] }));
  t.equal(await expiresOf('default'), 600, 'neither: the default');
  await send(registrar, register({ callId: 'header', contacts: ['<sip:alice@192.0.2.2>'], expires: 120 }));
  t.equal(await expiresOf('header'), 120, 'Expires header');
  await send(registrar, register({ callId: 'param', contacts: ['<sip:alice@192.0.2.3>;expires=300'], expires: 0 }));
  t.equal(await expiresOf('param'), 300, 'the contact parameter wins over Expires: 0');

  const long = await send(registrar, register({ callId: 'long', contacts: ['<sip:alice@192.0.2.4>;expires=86400'] }));
  t.equal(long.result.status, 200);
  t.equal(await expiresOf('long'), 3600, 'cut to maxExpires');
  t.equal(long.contacts.find((c) => c.uriText === 'sip:alice@192.0.2.4')?.param('expires'), '3600', 'and the 200 says so');

  const brief = await send(registrar, register({ callId: 'brief', contacts: ['<sip:alice@192.0.2.5>;expires=30'] }));
  t.equal(brief.result.status, 423);
  t.equal(brief.result.outcome, 'interval-too-brief');
  t.equal(brief.response.get('min-expires'), '60');
  t.equal(brief.response.reason, 'Interval Too Brief');
  const brief2 = await send(registrar, register({ callId: 'brief', contacts: ['<sip:alice@192.0.2.5>', '<sip:alice@192.0.2.6>;expires=600'], expires: 59 }));
  t.equal(brief2.result.status, 423, 'one Contact too brief fails the whole request');
  t.equal((await registrar.lookup('sip:alice@intercom.test')).length, 4, 'nothing was bound by the 423s');

  const min = await send(registrar, register({ callId: 'min', contacts: ['<sip:alice@192.0.2.7>'], expires: 60 }));
  t.equal(min.result.status, 200, 'exactly minExpires is fine');
});

t.test('a long minimum: 423 only for intervals under an hour (§10.3 step 7)', async (t) => {
  const { registrar } = setup({ minExpires: 7200, defaultExpires: 7200, maxExpires: 86400 });
  t.equal((await registrar.register(register({ expires: 3599 }), udpSource())).status, 423);
  const r = await registrar.register(register({ expires: 3600 }), udpSource());
  t.equal(r.status, 200);
  t.equal(r.bindings[0].expiresAt - Date.UTC(2025, 0, 15, 9, 0, 0), 3600_000);
});

t.test('stream contacts get maxStreamExpires when set', async (t) => {
  const { registrar, clock } = setup({ maxStreamExpires: 300 });
  await registrar.register(trace('04-register-tcp-with-digest.sip', 'tcp'), tcpSource());
  await registrar.register(register({ user: 'bob' }), udpSource());
  t.equal((await registrar.lookup('sip:alice@intercom.test'))[0].expiresAt, clock.t + 300_000, 'TCP: capped');
  t.equal((await registrar.lookup('sip:bob@intercom.test'))[0].expiresAt, clock.t + 600_000, 'UDP: not');
});

t.test('Contact parameters named like Object.prototype members are kept as written', async (t) => {
  const { registrar, store, clock } = setup();
  const r = await send(registrar, register({ contacts: ['<sip:alice@192.0.2.9>;__proto__;constructor=1;toString=x;foo=1'] }));
  t.equal(r.result.status, 200);
  const [b] = await registrar.lookup('sip:alice@' + DOMAIN);
  t.same(Object.keys(b.contactParams), ['__proto__', 'constructor', 'tostring', 'foo'], 'own parameters, none lost');
  t.equal(Object.getPrototypeOf(b.contactParams), Object.prototype, 'the record keeps its prototype');
  t.equal(b.contactParams['__proto__'], null);
  t.equal(b.contactParams['constructor'], '1');
  t.equal(JSON.stringify(b.contactParams), '{"__proto__":null,"constructor":"1","tostring":"x","foo":"1"}');
  t.same(JSON.parse(JSON.stringify(b.contactParams)), b.contactParams, 'what a store writes and reads back');
  // With a value the setter ignored it: the parameter was lost all the same.
  const valued = await send(registrar, register({ user: 'bob', contacts: ['<sip:bob@192.0.2.9>;__proto__=x'] }));
  t.equal(valued.result.status, 200);
  const [bob] = await registrar.lookup('sip:bob@' + DOMAIN);
  t.same(Object.entries(bob.contactParams), [['__proto__', 'x']]);
  // The memory store's own frozen copy, as a refresh reads it back.
  const again = await send(registrar, register({ cseq: 2, contacts: ['<sip:alice@192.0.2.9>;__proto__;constructor=1;toString=x;foo=1'] }));
  t.equal(again.result.status, 200);
  const [b2] = await store.get('sip:alice@' + DOMAIN, clock.now());
  t.same(Object.keys(b2.contactParams), ['__proto__', 'constructor', 'tostring', 'foo']);
});

t.test('bad Contact parameters: 400, nothing bound', async (t) => {
  const { registrar } = setup();
  for (const q of ['1.5', 'abc', '0.1234', '-0.1', '1.001', '.5']) {
    const r = await send(registrar, register({ contacts: [`<sip:alice@192.0.2.1>;q=${q}`] }));
    t.equal(r.result.status, 400, `q=${q}`);
    t.match(r.response.get('warning'), /qvalue/);
  }
  for (const q of ['0', '0.', '0.123', '1', '1.000']) {
    const r = await registrar.register(register({ callId: 'q' + q, contacts: [`<sip:alice@192.0.2.2>;q=${q}`] }), udpSource());
    t.equal(r.status, 200, `q=${q} is a qvalue`);
  }
  const regId = await send(registrar, register({ contacts: ['<sip:alice@192.0.2.3>;+sip.instance="<urn:uuid:1>";reg-id=0'] }));
  t.equal(regId.result.status, 400, 'reg-id 0');
  const inst = await send(registrar, register({ contacts: ['<sip:alice@192.0.2.3>;+sip.instance=""'] }));
  t.equal(inst.result.status, 400, 'empty +sip.instance');
  const tel = await send(registrar, register({ contacts: ['<tel:+15551234567>'] }));
  t.equal(tel.result.status, 400, 'a tel Contact');

  // A bad expires parameter: the parser answers 400 already; handed the
  // partial message anyway, the registrar refuses it too.
  for (const ex of ['abc', '', '99999999999']) {
    const text = registerText({ contacts: [`<sip:alice@192.0.2.4>;expires${ex === '' ? '' : '=' + ex}`] });
    const parsed = parseAndValidate(Buffer.from(text, 'latin1'));
    t.ok(parsed instanceof SipParseError, `parser refuses expires=${ex}`);
    if (parsed instanceof SipParseError) {
      t.equal(parsed.code, 400);
      const r = await registrar.register(parsed.message!, udpSource());
      t.equal(r.status, 400);
      t.equal(r.detail, 'malformed expires parameter');
    }
  }
  const badHeader = parseAndValidate(Buffer.from(registerText({ callId: 'h', contacts: ['<sip:alice@192.0.2.5>'], expires: 'soon' }), 'latin1'));
  t.ok(badHeader instanceof SipParseError);
  if (badHeader instanceof SipParseError) t.equal((await registrar.register(badHeader.message!, udpSource())).status, 400, 'malformed Expires header');

  const bindings = await registrar.lookup('sip:alice@intercom.test');
  t.same(
    bindings.map((b) => b.contact),
    ['sip:alice@192.0.2.2'],
    'only the valid q registrations bound (one binding, refreshed)',
  );
});

t.test('domains: 404 for an AOR not served, 403 for a foreign Request-URI, 416 for another scheme', async (t) => {
  const { registrar } = setup({ domains: [DOMAIN, 'Other.Test'] });
  const foreignTo = await send(registrar, register({ domain: 'elsewhere.test', ruri: 'sip:intercom.test' }));
  t.equal(foreignTo.result.status, 404);
  t.equal(foreignTo.result.outcome, 'not-found');
  t.equal(foreignTo.response.reason, 'Not Found');

  const foreignRuri = await send(registrar, register({ domain: 'elsewhere.test' }));
  t.equal(foreignRuri.result.status, 403);
  t.equal(foreignRuri.result.outcome, 'foreign-domain');
  t.equal(registrar.servesDomain('elsewhere.test'), false);
  t.equal(registrar.servesDomain('OTHER.test'), true);

  const mismatch = await send(registrar, register({ domain: 'other.test', ruri: 'sip:intercom.test' }));
  t.equal(mismatch.result.status, 404, 'To must be of the Request-URI domain');

  const byIp = await send(registrar, register({ ruri: 'sip:127.0.0.1:5080' }));
  t.equal(byIp.result.status, 200, 'a Request-URI naming the address the request came to is accepted');

  const other = await send(registrar, register({ domain: 'other.test' }));
  t.equal(other.result.status, 200, 'a second served domain');

  const noUser = parseAndValidate(Buffer.from(registerText().replace('To: <sip:alice@intercom.test>', 'To: <sip:intercom.test>'), 'latin1'));
  t.equal((await registrar.register(noUser as SipMessage, udpSource())).status, 404, 'To without a user part');

  const telTo = parseAndValidate(Buffer.from(registerText().replace('To: <sip:alice@intercom.test>', 'To: <tel:+15551234567>'), 'latin1'));
  t.equal((await registrar.register(telTo as SipMessage, udpSource())).status, 404, 'a tel To');

  const telRuri = parseAndValidate(Buffer.from(registerText({ ruri: 'tel:+15551234567' }), 'latin1'));
  t.equal((await registrar.register(telRuri as SipMessage, udpSource())).status, 416);

  t.same(registrar.stats.registrations, { [DOMAIN]: 1, 'other.test': 1 });
  t.same((await registrar.bindingCounts()).byDomain, { [DOMAIN]: 1, 'other.test': 1 });
  t.equal(registrar.stats.responses['404'], 4);
});

t.test('the AOR is canonical: host case, sips, port, escapes, parameters', async (t) => {
  const { registrar } = setup();
  const req = parseAndValidate(
    Buffer.from(registerText().replace('To: <sip:alice@intercom.test>', 'To: <sips:%61lice@INTERCOM.test:5061;user=phone>'), 'latin1'),
  ) as SipMessage;
  const r = await registrar.register(req, udpSource());
  t.equal(r.status, 200);
  t.equal(r.aor, 'sip:alice@intercom.test');
  t.equal((await registrar.lookup(parseUri('sip:alice@intercom.test')!)).length, 1);
  t.equal((await registrar.lookup('sips:alice@Intercom.Test')).length, 1, 'lookup canonicalises too');
  t.equal((await registrar.lookup('sip:Alice@intercom.test')).length, 0, 'the user part is case-sensitive');
  t.same(await registrar.lookup('not a uri'), []);
});

t.test('expiry: gone from lookups at once, removed by the sweep', async (t) => {
  const { registrar, clock, store, events } = setup();
  await send(registrar, register({ callId: 'short', contacts: ['<sip:alice@192.0.2.1>;expires=60'] }));
  await send(registrar, register({ callId: 'long', contacts: ['<sip:alice@192.0.2.2>;expires=600'] }));

  clock.advance(59);
  t.equal((await registrar.lookup('sip:alice@intercom.test')).length, 2);
  const fetched = await send(registrar, register({ callId: 'q', contacts: [] }));
  t.same(
    fetched.contacts.map((c) => c.param('expires')).sort(),
    ['1', '541'],
    'the 200 gives the seconds left',
  );
  clock.advance(1);
  const live = await registrar.lookup('sip:alice@intercom.test');
  t.same(
    live.map((b) => b.callId),
    ['long'],
    'expired at expiresAt, before any sweep',
  );
  t.same(await store.get('sip:alice@intercom.test', clock.t), live, 'the store never returns it either');
  t.equal((await registrar.bindingCounts()).bindings, 1);
  t.equal(events.filter((e) => e.type === 'unregistered').length, 0, 'no event before the sweep');

  const swept = await registrar.sweep();
  t.same(
    swept.map((b) => b.callId),
    ['short'],
    'the sweep finds it still stored, and removes it',
  );
  t.same(await registrar.sweep(), [], 'once');
  const ev = events.filter((e) => e.type === 'unregistered');
  t.equal(ev.length, 1);
  t.equal(ev[0].cause, 'expired');
  t.equal(registrar.stats.bindingsExpired, 1);

  clock.advance(600);
  t.same(await registrar.lookup('sip:alice@intercom.test'), []);
  // A REGISTER meeting an expired, unswept binding drops it and reports it.
  await send(registrar, register({ user: 'alice', callId: 'new', contacts: ['<sip:alice@192.0.2.3>'] }));
  t.equal(events.filter((e) => e.type === 'unregistered' && e.cause === 'expired').length, 2);
  t.same(await registrar.sweep(), []);
});

t.test('the sweep timer runs unref’d and stops on close', async (t) => {
  const clock = new Clock();
  const registrar = new Registrar({ domains: [DOMAIN], sweepIntervalMs: 10 }, { now: clock.now });
  const timer = (registrar as unknown as { timer: NodeJS.Timeout }).timer;
  t.equal(timer.hasRef(), false, 'does not keep the process alive');
  await registrar.register(register({ contacts: ['<sip:alice@192.0.2.1>;expires=60'] }), udpSource());
  const seen: Binding[] = [];
  registrar.on('unregistered', (b) => seen.push(b));
  clock.advance(61);
  // The timer is unref'd: a ref'd wait keeps the loop alive meanwhile.
  for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  t.same(
    seen.map((b) => b.contact),
    ['sip:alice@192.0.2.1'],
  );
  t.equal(registrar.stats.bindingsExpired, 1);
  await registrar.close();
  t.equal((registrar as unknown as { timer: NodeJS.Timeout | null }).timer, null);
});

t.test('a failing store sweep is counted, and the timer carries on', async (t) => {
  class FailingStore extends MemoryLocationStore {
    override async sweep(): Promise<Binding[]> {
      throw new Error('store down');
    }
  }
  const registrar = new Registrar({ domains: [DOMAIN], sweepIntervalMs: 5 }, { store: new FailingStore() });
  for (let i = 0; i < 100 && registrar.stats.sweepErrors < 2; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  t.ok(registrar.stats.sweepErrors >= 2);
  await registrar.close();
});

t.test('GRUU resolution: pub-gruu and temp-gruu, after expiry, unknown', async (t) => {
  const { registrar, clock } = setup({ domains: [DOMAIN, 'other.test'] });
  const { contacts } = await send(registrar, trace('01-register-udp-initial.sip'), LINPHONE_SOURCE);
  const pub = parseUri(unq(contacts[0].param('pub-gruu'))!)!;
  const temp = parseUri(unq(contacts[0].param('temp-gruu'))!)!;
  t.equal(pub.raw, 'sip:door@intercom.test;gr=urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f');

  const viaPub = await registrar.resolveGruu(pub);
  const viaTemp = await registrar.resolveGruu(temp);
  t.ok(viaPub !== null && viaPub !== 'expired');
  t.equal(viaPub, viaTemp, 'both reach the one binding');
  if (viaPub !== null && viaPub !== 'expired') t.equal(viaPub.contact, 'sip:door@127.0.0.1:40158;transport=udp');

  // Case of the UUID and escapes do not matter; a pub-gruu is the AOR + instance.
  t.not(await registrar.resolveGruu(parseUri('sip:door@INTERCOM.TEST;gr=urn%3Auuid%3A875B1C75-EE1A-002D-A874-F3FA9496CE1F')!), null);
  // Unknown: another instance (the GRUU of trace 09 was never registered here), another domain, no gr.
  const ack = trace('09-ack-to-gruu.sip');
  t.equal(await registrar.resolveGruu(ack.requestUri!), null, 'never issued: 404');
  t.equal(await registrar.resolveGruu(parseUri('sip:door@elsewhere.test;gr=urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f')!), null);
  t.equal(await registrar.resolveGruu(parseUri('sip:tgruu.0123@intercom.test;gr')!), null, 'unknown token');
  t.equal(await registrar.resolveGruu(parseUri(temp.raw.replace('intercom.test', 'other.test'))!), null, 'a token is valid in its own domain only');
  t.equal(await registrar.resolveGruu(parseUri('sip:door@intercom.test')!), null, 'not a GRUU');
  t.equal(await registrar.resolveGruu(parseUri('sip:door@intercom.test;gr')!), null, 'valueless gr without a temp-gruu user');

  // The binding expires: both GRUUs now name a device that is not there (480).
  clock.advance(601);
  t.equal(await registrar.resolveGruu(pub), 'expired');
  t.equal(await registrar.resolveGruu(temp), 'expired');
  await registrar.sweep();
  t.equal(await registrar.resolveGruu(pub), 'expired', 'still after the sweep');
  t.equal(await registrar.resolveGruu(temp), 'expired');

  // The device comes back: the pub-gruu is stable, the old temp-gruu is not.
  const back = await send(registrar, trace('01-register-udp-initial.sip'), LINPHONE_SOURCE);
  t.equal(back.contacts[0].param('pub-gruu'), contacts[0].param('pub-gruu'));
  t.not(back.contacts[0].param('temp-gruu'), contacts[0].param('temp-gruu'));
  t.not(await registrar.resolveGruu(pub), 'expired');
  t.equal(await registrar.resolveGruu(temp), 'expired');
});

t.test('GRUUs only with Supported: gruu and an instance; a GRUU cannot be a Contact', async (t) => {
  const { registrar } = setup();
  const noSupport = await send(registrar, register({ supported: null, contacts: ['<sip:alice@192.0.2.1>;+sip.instance="<urn:uuid:a1>"'] }));
  t.equal(noSupport.result.status, 200);
  t.equal(noSupport.contacts[0].param('pub-gruu'), undefined);
  t.equal(noSupport.contacts[0].param('temp-gruu'), undefined);
  t.same(noSupport.result.bindings[0].gruu, { pub: 'urn:uuid:a1', temp: [] });

  const noInstance = await send(registrar, register({ user: 'bob', contacts: ['<sip:bob@192.0.2.2>'] }));
  t.equal(noInstance.contacts[0].param('pub-gruu'), undefined);
  t.equal(noInstance.result.bindings[0].gruu, null);

  const sips = await send(registrar, register({ user: 'carol', toScheme: 'sips', contacts: ['<sips:carol@192.0.2.3;transport=tcp>;+sip.instance="<urn:uuid:c3>"'] }));
  t.equal(unq(sips.contacts[0].param('pub-gruu')), 'sips:carol@intercom.test;gr=urn:uuid:c3', 'a SIPS AOR gets SIPS GRUUs');
  t.match(unq(sips.contacts[0].param('temp-gruu')), /^sips:tgruu\./);

  const gruuContact = await send(registrar, register({ user: 'dave', contacts: ['<sip:alice@intercom.test;gr=urn:uuid:a1>'] }));
  t.equal(gruuContact.result.status, 403);
  t.equal(gruuContact.result.outcome, 'forbidden');
});

t.test('instance with reg-id: one binding per flow (RFC 5626); the pub-gruu reaches the newest', async (t) => {
  const { registrar, clock } = setup();
  const inst = '+sip.instance="<urn:uuid:00000000-0000-0000-0000-0000000000b1>"';
  await send(registrar, register({ callId: 'flows', cseq: 1, contacts: [`<sip:alice@192.0.2.1:5060;transport=tcp;ob>;${inst};reg-id=1`] }), tcpSource('192.0.2.1', 5060, 1));
  clock.advance(10);
  const r = await send(registrar, register({ callId: 'flows', cseq: 2, contacts: [`<sip:alice@192.0.2.1:5062;transport=tcp;ob>;${inst};reg-id=2`] }), tcpSource('192.0.2.1', 5062, 2));
  t.equal(r.contacts.length, 2);
  t.same(r.contacts.map((c) => c.param('reg-id')).sort(), ['1', '2']);
  const g = await registrar.resolveGruu(parseUri('sip:alice@intercom.test;gr=urn:uuid:00000000-0000-0000-0000-0000000000b1')!);
  t.equal(typeof g === 'object' && g !== null ? g.regId : g, 2);
  // Flow 1 again, from a new port: replaces flow 1 only.
  await send(registrar, register({ callId: 'flows', cseq: 3, contacts: [`<sip:alice@192.0.2.1:6000;transport=tcp;ob>;${inst};reg-id=1`] }), tcpSource('192.0.2.1', 6000, 3));
  const bindings = await registrar.lookup('sip:alice@intercom.test');
  t.same(bindings.map((b) => [b.regId, b.source.connectionId]).sort(), [
    [1, 3],
    [2, 2],
  ]);
  // A reg-id without an instance means nothing (bound by its URI).
  const plain = await registrar.register(register({ user: 'bob', contacts: ['<sip:bob@192.0.2.9>;reg-id=1'] }), udpSource());
  t.equal(plain.bindings[0].regId, null);
  t.equal(plain.bindings[0].key, 'u:sip:bob@192.0.2.9:');
});

t.test('push parameters (RFC 8599, as Linphone sends them) are stored', async (t) => {
  const { registrar } = setup();
  const contact =
    '<sip:alice@192.0.2.1:5060;transport=tcp;pn-provider=apns.dev;pn-param=ABCD1234.org.linphone.phone.voip;pn-prid=00fc13adff78512;pn-silent=1>;+sip.instance="<urn:uuid:3e0a7c4a-1f7c-4a7e-8d8c-000000000001>"';
  const { result, contacts } = await send(registrar, register({ contacts: [contact] }), tcpSource('192.0.2.1', 5060));
  t.equal(result.status, 200);
  const [b] = await registrar.lookup('sip:alice@intercom.test');
  t.same(b.pushParams, {
    'pn-provider': 'apns.dev',
    'pn-param': 'ABCD1234.org.linphone.phone.voip',
    'pn-prid': '00fc13adff78512',
    'pn-silent': '1',
  });
  t.equal(b.contact, 'sip:alice@192.0.2.1:5060;transport=tcp;pn-provider=apns.dev;pn-param=ABCD1234.org.linphone.phone.voip;pn-prid=00fc13adff78512;pn-silent=1');
  t.equal(contacts[0].uriText, b.contact, 'the 200 gives the Contact back as registered');

  // Older Linphone: app-id, pn-type, pn-tok.
  const legacy = await registrar.register(
    register({ user: 'bob', contacts: ['<sip:bob@192.0.2.2;app-id=org.linphone.phone;pn-type=firebase;pn-tok=tok123;pn-msg-str=IM_MSG>'] }),
    udpSource(),
  );
  t.same(legacy.bindings[0].pushParams, { 'app-id': 'org.linphone.phone', 'pn-type': 'firebase', 'pn-tok': 'tok123', 'pn-msg-str': 'IM_MSG' });
});

t.test('Path (RFC 3327): stored; echoed with Supported: path', async (t) => {
  const { registrar } = setup();
  const path = ['Path: <sip:edge1.intercom.test;lr>', 'Path: <sip:edge2.intercom.test;lr;ob>'];
  const withPath = await send(registrar, register({ supported: 'path, gruu', extra: path }));
  t.same(withPath.result.bindings[0].path, ['<sip:edge1.intercom.test;lr>', '<sip:edge2.intercom.test;lr;ob>']);
  t.equal(withPath.response.get('path'), '<sip:edge1.intercom.test;lr>, <sip:edge2.intercom.test;lr;ob>');
  const noEcho = await send(registrar, register({ user: 'bob', supported: 'gruu', extra: path }));
  t.equal(noEcho.result.bindings[0].path.length, 2, 'stored');
  t.equal(noEcho.response.has('path'), false, 'not echoed without Supported: path');
  const bad = parseAndValidate(Buffer.from(registerText({ user: 'carol', extra: ['Path: <sip:edge1'] }), 'latin1'));
  t.equal((await registrar.register(bad as SipMessage, udpSource())).status, 400, 'malformed Path');
});

t.test('Require: what the registrar supports passes, anything else is 420', async (t) => {
  const { registrar } = setup();
  const r = await send(registrar, register({ extra: ['Require: foo, path'] }));
  t.equal(r.result.status, 420);
  t.equal(r.response.get('unsupported'), 'foo');
  t.equal((await registrar.register(register({ user: 'bob', extra: ['Require: gruu, path'] }), udpSource())).status, 200);
  // RFC 5626 is supported (test/registrar/outbound.test.ts); without a reg-id the 200 requires nothing back.
  const ob = await send(registrar, register({ user: 'carol', extra: ['Require: outbound'] }));
  t.equal(ob.result.status, 200, 'Require: outbound is understood');
  t.equal(ob.response.has('require'), false, 'no reg-id: no flow, no Require: outbound');
});

t.test('too many bindings: the least recently refreshed make room', async (t) => {
  const { registrar, clock, events } = setup({ maxBindingsPerAor: 2 });
  for (const n of [1, 2, 3]) {
    await registrar.register(register({ callId: 'd' + n, contacts: [`<sip:alice@192.0.2.${n}>`] }), udpSource());
    clock.advance(1);
  }
  t.same(
    (await registrar.lookup('sip:alice@intercom.test')).map((b) => b.callId),
    ['d3', 'd2'],
  );
  t.equal(events.find((e) => e.type === 'unregistered')?.cause, 'evicted');
  const r = await registrar.register(register({ callId: 'many', contacts: ['<sip:alice@192.0.2.7>', '<sip:alice@192.0.2.8>', '<sip:alice@192.0.2.9>'] }), udpSource());
  t.equal(r.status, 403, 'one request with more Contacts than allowed');
  t.equal((await registrar.lookup('sip:alice@intercom.test')).length, 2);
});

t.test('removeBinding: for the proxy when a flow is dead', async (t) => {
  const { registrar, events } = setup();
  await registrar.register(trace('04-register-tcp-with-digest.sip', 'tcp'), tcpSource());
  const [b] = await registrar.lookup('sip:alice@intercom.test');
  t.equal((await registrar.removeBinding(b.aor, b.key))?.key, b.key);
  t.equal(await registrar.removeBinding(b.aor, b.key), null);
  t.same(await registrar.lookup('sip:alice@intercom.test'), []);
  t.equal(events.at(-1)?.cause, 'removed');
  t.equal(registrar.stats.bindingsRemoved, 1);
});

t.test('bindings handed out are frozen', async (t) => {
  const { registrar } = setup();
  await registrar.register(trace('01-register-udp-initial.sip'), LINPHONE_SOURCE);
  const [b] = await registrar.lookup(DOOR_AOR);
  t.ok(Object.isFrozen(b));
  t.ok(Object.isFrozen(b.gruu?.temp));
  t.throws(() => {
    (b as { q: number }).q = 0;
  });
});

t.test('configuration is checked', async (t) => {
  t.throws(() => new Registrar({ domains: [] }), RangeError);
  t.throws(() => new Registrar({ domains: [DOMAIN], minExpires: 600, maxExpires: 60 }), RangeError);
  t.throws(() => new Registrar({ domains: [DOMAIN], defaultExpires: 30 }), RangeError);
  t.throws(() => new Registrar({ domains: [DOMAIN], maxStreamExpires: 10 }), RangeError);
  t.throws(() => new Registrar({ domains: [DOMAIN], minExpires: 1.5 }), RangeError);
  const r = new Registrar({ domains: ['[2001:DB8::1]'], sweepIntervalMs: 0 });
  t.equal(r.config.minExpires, 60);
  t.equal(r.config.maxExpires, 3600);
  t.equal(r.config.defaultExpires, 600);
  t.ok(r.servesDomain('2001:db8:0::1'));
  await r.close();
  await t.rejects(r.register(trace('07-180-from-phone.sip'), udpSource()), TypeError, 'not a REGISTER');
});

t.test('the trace bytes are what the registrar was given', async (t) => {
  // Guard: the fixtures are the raw captures (CRLF), so the tests above use real linphonec octets.
  t.match(traceBytes('01-register-udp-initial.sip').toString('latin1'), /^REGISTER sip:intercom\.test SIP\/2\.0\r\n/);
});

t.test('a store that cannot be written: 503 with Retry-After, and other errors still surface', async (t) => {
  const unavailable = Object.assign(new Error('Redis down'), { code: 'STORAGE_UNAVAILABLE' });
  // A store that waits (as Redis): no updateNow, its update() rejects.
  {
    const { store, registrar } = setup();
    (store as { updateNow?: unknown }).updateNow = undefined;
    store.update = async () => {
      throw unavailable;
    };
    const { result, response } = await send(registrar, register({ user: 'carol' }));
    t.equal(result.status, 503);
    t.equal(result.outcome, 'unavailable');
    t.equal(response.get('retry-after'), '5');
    store.update = async () => {
      throw new Error('a bug');
    };
    await t.rejects(registrar.register(register({ user: 'carol' }), udpSource()), /a bug/, 'not every error is an outage');
  }
  // A store that answers at once throws instead: the same answers, and registerNow() throws the bug.
  {
    const { store, registrar } = setup();
    store.updateNow = () => {
      throw unavailable;
    };
    const r = registrar.registerNow(register({ user: 'carol' }), udpSource());
    t.notOk(r instanceof Promise, 'answered in the same task');
    const sync = r as Awaited<typeof r>;
    t.equal(sync.status, 503);
    t.equal(sync.outcome, 'unavailable');
    t.same(sync.headers.find(([k]) => k === 'Retry-After'), ['Retry-After', '5']);
    store.updateNow = () => {
      throw new Error('a bug');
    };
    t.throws(() => registrar.registerNow(register({ user: 'carol' }), udpSource()), /a bug/);
    await t.rejects(registrar.register(register({ user: 'carol' }), udpSource()), /a bug/, 'register() rejects with it');
  }
});

t.test('a memory store answers a REGISTER in the same task; a store that waits, later: the same 200', async (t) => {
  const sync = setup();
  const now = sync.registrar.registerNow(register({ user: 'dave' }), udpSource());
  t.notOk(now instanceof Promise);
  const waiting = setup();
  const inner = waiting.store;
  const updateNow = inner.updateNow.bind(inner);
  (inner as { updateNow?: unknown }).updateNow = undefined;
  inner.update = (aor, at, fn) => new Promise((resolve) => setImmediate(() => resolve(updateNow(aor, at, fn))));
  const later = waiting.registrar.registerNow(register({ user: 'dave' }), udpSource());
  t.ok(later instanceof Promise);
  const a = now as Awaited<typeof later>;
  const b = await later;
  t.equal(a.status, 200);
  t.equal(b.status, 200);
  t.same(b.headers.map(([k]) => k), a.headers.map(([k]) => k));
  t.equal(b.bindings.length, 1);
  t.same(sync.registrar.stats.responses, waiting.registrar.stats.responses, 'both counted');
});

/** What a parser makes of a message's octets, in words that compare. */
function shape(m: SipMessage) {
  return {
    status: m.status,
    reason: m.reason,
    version: m.version,
    fields: m.headerFields().map((f) => [f.key, f.name, f.value, f.fromSource]),
    body: m.body.toString('latin1'),
    to: m.to().tag,
    via: m.via().map((v) => v.branch),
    contacts: (m.contacts() ?? []).map((c) => c.uriText),
    modified: m.isModified,
  };
}

t.test('the responses the registrar gives are the messages their own octets parse to', async (t) => {
  const { registrar, clock } = setup({ minExpires: 120 });
  const cases: Array<[string, SipMessage]> = [
    ['linphonec with GRUU', trace('01-register-udp-initial.sip')],
    ['two contacts, Path, Supported: path', register({ contacts: ['<sip:a@192.0.2.1:5060>;expires=600', '<sip:a@192.0.2.2:5060>;q=0.5'], supported: 'path, gruu', extra: ['Path: <sip:edge.test;lr>'] })],
    ['423 with Min-Expires and a Warning', register({ user: 'bob', expires: 60 })],
    ['fetch', register({ user: 'alice', contacts: [] })],
    ['404', register({ domain: 'elsewhere.test', ruri: `sip:${DOMAIN}` })],
  ];
  for (const [name, req] of cases) {
    clock.advance(0.7);
    const result = await registrar.register(req, udpSource());
    if (result.status === 200) t.equal(result.headers.find(([n]) => n === 'Date')?.[1], new Date(clock.now()).toUTCString(), `${name}: Date of this second`);
    const built = buildRegisterResponse(req, result, { toTag: 'fixed' });
    const reparsed = parseAndValidate(built.toBuffer(), { transport: 'tcp' });
    if (reparsed instanceof SipParseError) throw new Error(reparsed.reason);
    t.same(shape(built), shape(reparsed), `${name}: ${result.status}`);
    t.ok(built.toBuffer().equals(reparsed.toBuffer()));
  }
  // A header added afterwards (Feature-Caps) is written as the parser's message would write it.
  const req = register({ user: 'carol' });
  const built = buildRegisterResponse(req, await registrar.register(req, udpSource()), { toTag: 'fixed' });
  const reparsed = parseAndValidate(built.toBuffer(), { transport: 'tcp' }) as SipMessage;
  built.appendHeader('Feature-Caps', '*;+sip.pns="apns"');
  reparsed.appendHeader('Feature-Caps', '*;+sip.pns="apns"');
  t.equal(built.toString(), reparsed.toString());
});

t.test('buildResponse: CR and LF in a reason or a value become spaces; chars beyond latin1 read as the octet sent', async (t) => {
  const req = register();
  const r = buildResponse(req, 403, { reason: 'No\r\nWay', headers: [['Warning', '399 portier "\u20ac\nx"'], ['x-extra', 'a\rb']], toTag: 't' });
  const back = parseAndValidate(r.toBuffer(), { transport: 'tcp' }) as SipMessage;
  t.equal(r.reason, 'No  Way');
  t.same(shape(r), shape(back));
  t.equal(r.get('x-extra'), 'a b');
  t.equal(r.get('warning'), back.get('warning'));
  t.throws(() => buildResponse(req, 99), /invalid response/);
  t.throws(() => buildResponse(req, 200, { headers: [['Bad Name', 'x']] }), /invalid response/);
});
