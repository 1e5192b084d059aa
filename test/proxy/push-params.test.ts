// RFC 8599 push parameters never leave Portier: stripped from a Request-URI
// sent to the device and from every Contact passed to the other party.
import t from 'tap';
import { parseAndValidate, scrubContactPush, SipParseError, withoutPushParams, type SipMessage } from '../../src/sip/index.js';

function response(contacts: string[]): SipMessage {
  const text =
    'SIP/2.0 302 Moved Temporarily\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n' +
    contacts.map((c) => `Contact: ${c}\r\n`).join('') +
    'Content-Length: 0\r\n\r\n';
  const m = parseAndValidate(Buffer.from(text), { transport: 'udp' });
  if (m instanceof SipParseError) throw new Error(m.reason);
  return m;
}

t.test('withoutPushParams', async (t) => {
  t.equal(withoutPushParams('sip:alice@10.0.0.7:5060;transport=tcp;pn-provider=fcm;pn-prid=TOK;pn-param=p;app-id=x;ob'), 'sip:alice@10.0.0.7:5060;transport=tcp;ob');
  t.equal(withoutPushParams('sip:alice@10.0.0.7'), 'sip:alice@10.0.0.7', 'nothing to strip: as it was');
  t.equal(withoutPushParams('sips:[2001:db8::1]:5061;pn-prid=a:voip&b:remote?subject=x'), 'sips:[2001:db8::1]:5061?subject=x');
});

t.test('every Contact line loses its push parameters, with or without angle brackets', async (t) => {
  const m = response(['<sip:a@10.0.0.1;pn-provider=fcm;pn-prid=SECRET1>;expires=60', 'sip:b@10.0.0.2;pn-prid=SECRET2;q=0.5', '"Bob" <sip:c@10.0.0.3;transport=tls>']);
  scrubContactPush(m);
  const all = m.getAll('contact').join(', ');
  t.notMatch(all, /SECRET|pn-/, 'no token left anywhere');
  t.equal(m.contacts()?.length, 3, 'all three contacts kept');
  t.match(all, /<sip:a@10\.0\.0\.1>;expires=60/);
  t.match(all, /sip:b@10\.0\.0\.2;q=0\.5/);
  t.match(all, /"Bob" <sip:c@10\.0\.0\.3;transport=tls>/);
});
