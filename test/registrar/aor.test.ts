// Canonical forms: AORs (RFC 3261 §10.3 step 5), Contact comparison keys
// (§19.1.4, simplified), instance keys (RFC 5626), GRUU Request-URIs
// (RFC 5627), q-values and push parameters.
import t from 'tap';
import { parseUri, type Uri } from '../../src/sip/index.js';
import { aorOf, contactKey, gruuRefOf, instanceKey, parseQ, pubGruuUri, pushParamsOf, tempGruuUri } from '../../src/registrar/index.js';

const u = (s: string): Uri => {
  const uri = parseUri(s);
  if (uri === null) throw new Error('bad test URI ' + s);
  return uri;
};

t.test('aorOf', async (t) => {
  const cases: Array<[string, string]> = [
    ['sip:alice@intercom.test', 'sip:alice@intercom.test'],
    ['sip:Alice@INTERCOM.Test:5080;transport=tcp;user=phone', 'sip:Alice@intercom.test'],
    ['sips:alice@intercom.test', 'sip:alice@intercom.test'],
    ['sip:%61lice@intercom.test', 'sip:alice@intercom.test'],
    ['sip:a%2cb@intercom.test', 'sip:a,b@intercom.test'],
    ['sip:a%40b@intercom.test', 'sip:a%40b@intercom.test'],
    ['sip:a%3fb@intercom.test', 'sip:a?b@intercom.test'],
    ['sip:a%20b@intercom.test', 'sip:a%20b@intercom.test'],
    ['sip:bob@[2001:DB8:0:0::1]:5060', 'sip:bob@[2001:db8::1]'],
    ['sip:intercom.test', 'sip:intercom.test'],
    ['tel:+15551234567', 'tel:+15551234567'],
  ];
  for (const [input, want] of cases) t.equal(aorOf(u(input)), want, input);
});

t.test('contactKey: same binding or not', async (t) => {
  const same: Array<[string, string]> = [
    ['sip:alice@HOST.example:5060', 'sip:alice@host.example:5060'],
    ['sip:alice@host.example;transport=TCP', 'sip:alice@host.example;transport=tcp'],
    ['sip:%61lice@host.example', 'sip:alice@host.example'],
    ['sip:alice@host.example;pn-prid=1;ob', 'sip:alice@host.example;pn-prid=2'],
    ['sip:alice@[2001:db8::1]', 'sip:alice@[2001:DB8:0::1]'],
  ];
  for (const [a, b] of same) t.equal(contactKey(u(a)), contactKey(u(b)), `${a} = ${b}`);
  const differ: Array<[string, string]> = [
    ['sip:alice@host.example', 'sip:Alice@host.example'],
    ['sip:alice@host.example', 'sip:alice@host.example:5060'],
    ['sip:alice@host.example', 'sips:alice@host.example'],
    ['sip:alice@host.example', 'sip:alice@host.example;transport=udp'],
    ['sip:alice@host.example;maddr=239.0.0.1', 'sip:alice@host.example;maddr=239.0.0.2'],
    ['sip:alice@host.example;method=INVITE', 'sip:alice@host.example;method=invite'],
    ['sip:alice@host.example', 'sip:host.example'],
  ];
  for (const [a, b] of differ) t.not(contactKey(u(a)), contactKey(u(b)), `${a} ≠ ${b}`);
});

t.test('instanceKey', async (t) => {
  t.equal(instanceKey('<urn:uuid:875B1C75-EE1A-002D-A874-F3FA9496CE1F>'), 'urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f');
  t.equal(instanceKey('urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f'), 'urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f');
  t.equal(instanceKey('<urn:gsma:imei:35209900-176148-1>'), 'urn:gsma:imei:35209900-176148-1');
  t.not(instanceKey('<urn:example:ABC>'), instanceKey('<urn:example:abc>'), 'other URNs as written');
});

t.test('GRUU URIs and what a Request-URI names', async (t) => {
  const pub = pubGruuUri('sip', 'sip:door@intercom.test', 'urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f');
  t.equal(pub, 'sip:door@intercom.test;gr=urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f');
  t.equal(pubGruuUri('sips', 'sip:door@intercom.test', 'urn:x y;z'), 'sips:door@intercom.test;gr=urn:x%20y%3Bz', 'escaped where needed');
  t.equal(tempGruuUri('sip', '2001:db8::1', 'abc'), 'sip:tgruu.abc@[2001:db8::1];gr');

  t.same(gruuRefOf(u(pub)), { kind: 'pub', aor: 'sip:door@intercom.test', instance: 'urn:uuid:875b1c75-ee1a-002d-a874-f3fa9496ce1f' });
  t.same(gruuRefOf(u('sip:door@intercom.test;gr=urn%3Auuid%3Aab')), { kind: 'pub', aor: 'sip:door@intercom.test', instance: 'urn:uuid:ab' });
  t.same(gruuRefOf(u('sip:tgruu.0af3@intercom.test;gr')), { kind: 'temp', token: '0af3' });
  t.equal(gruuRefOf(u('sip:door@intercom.test')), null, 'no gr');
  t.equal(gruuRefOf(u('sip:door@intercom.test;gr')), null, 'valueless gr, not a temp-gruu user');
  t.equal(gruuRefOf(u('sip:tgruu.@intercom.test;gr')), null, 'empty token');
  t.equal(gruuRefOf(u('tel:+1555;gr=x')), null);
});

t.test('parseQ', async (t) => {
  for (const [v, q] of [
    ['0', 0],
    ['0.', 0],
    ['0.5', 0.5],
    ['0.123', 0.123],
    ['1', 1],
    ['1.0', 1],
    ['1.000', 1],
  ] as const)
    t.equal(parseQ(v), q, v);
  for (const v of ['', '1.1', '2', '0.1234', '.5', '-0', '0,5', '1e0', ' 1']) t.equal(parseQ(v), null, JSON.stringify(v));
});

t.test('pushParamsOf', async (t) => {
  t.same(pushParamsOf(u('sip:a@192.0.2.1;transport=tcp;pn-provider=fcm;pn-prid=tok;pn-param=proj;pn-silent;app-id=org.linphone.phone;ob')), {
    'pn-provider': 'fcm',
    'pn-prid': 'tok',
    'pn-param': 'proj',
    'pn-silent': '',
    'app-id': 'org.linphone.phone',
  });
  t.same(pushParamsOf(u('sip:a@192.0.2.1')), {});
});
