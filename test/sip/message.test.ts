// Unit tests of the SIP message layer: header names and lists, addresses and
// URIs, Via, the parse limits and framing rules, responses and the Via
// stamping of the server transport.
import t from 'tap';
import {
  buildResponseBytes,
  parseAndValidate,
  parseUri,
  parseVias,
  responseAddress,
  responsePort,
  SipMessage,
  SipParseError,
  stampedVia,
  type ParseOptions,
  type Via,
} from '../../src/sip/index.js';

const CRLF = '\r\n';

const BASE = [
  'Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds',
  'Max-Forwards: 70',
  'From: "Alice" <sip:alice@example.com>;tag=1928301774',
  'To: <sip:bob@example.com>',
  'Call-ID: a84b4c76e66710@pc33.example.com',
];

/** A request: start line, the given header lines (BASE and a CSeq unless `bare`), an empty line, the body. */
function request(extra: string[], opts: { method?: string; ruri?: string; body?: string; bare?: boolean; noLength?: boolean; vias?: string[] } = {}): Buffer {
  const method = opts.method ?? 'INVITE';
  const body = opts.body ?? '';
  const base = opts.vias ? [...opts.vias, ...BASE.slice(1)] : BASE;
  const lines = opts.bare ? extra : [...base, `CSeq: 314159 ${method}`, ...extra];
  if (!opts.noLength && !lines.some((l) => /^(content-length|l)\s*:/i.test(l))) lines.push('Content-Length: ' + Buffer.byteLength(body, 'latin1'));
  return Buffer.from(`${method} ${opts.ruri ?? 'sip:bob@example.com'} SIP/2.0${CRLF}${lines.join(CRLF)}${CRLF}${CRLF}${body}`, 'latin1');
}

function response(extra: string[], status = '200 OK'): Buffer {
  const lines = [...BASE.filter((l) => !l.startsWith('Max-Forwards')), 'CSeq: 314159 INVITE', ...extra, 'Content-Length: 0'];
  return Buffer.from(`SIP/2.0 ${status}${CRLF}${lines.join(CRLF)}${CRLF}${CRLF}`, 'latin1');
}

/** The part of a tap Test the helpers use. */
type T = { ok(cond: unknown, msg: string): unknown; fail(msg: string): unknown };

function parseOk(tt: T, buf: Buffer, opts?: ParseOptions): SipMessage {
  const r = parseAndValidate(buf, opts);
  if (r instanceof SipParseError) {
    tt.fail(`expected a valid message, got ${r.code} ${r.reason}`);
    throw new Error('parse failed: ' + r.reason);
  }
  tt.ok(r instanceof SipMessage, 'parses');
  return r;
}

/** The message with one piece of text replaced (which must be there). */
function replaced(buf: Buffer, from: string, to: string): Buffer {
  const s = buf.toString('latin1');
  if (!s.includes(from)) throw new Error('no ' + JSON.stringify(from) + ' in the message');
  return Buffer.from(s.replace(from, to), 'latin1');
}

function parseErr(buf: Buffer, opts?: ParseOptions): SipParseError {
  const r = parseAndValidate(buf, opts);
  if (!(r instanceof SipParseError)) throw new Error('expected a parse error');
  return r;
}

t.test('compact header names map to the full names', async (t) => {
  const withCSeq = [
    'INVITE sip:bob@example.com SIP/2.0',
    'v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds',
    'Max-Forwards: 70',
    'f: "Alice" <sip:alice@example.com>;tag=1928301774',
    't: <sip:bob@example.com>',
    'i: a84b4c76e66710@pc33.example.com',
    'CSeq: 1 INVITE',
    'm: <sip:alice@pc33.example.com>',
    'e: gzip',
    'c: application/sdp',
    's: Lunch',
    'k: 100rel',
    'o: refer',
    'r: <sip:carol@example.com>',
    'b: <sip:alice@example.com>',
    'u: presence',
    'x: 1800;refresher=uac',
    'l: 4',
    '',
    'v=0\n',
  ].join(CRLF);
  const m = parseOk(t, Buffer.from(withCSeq, 'latin1'));
  const expected: Array<[string, string, string]> = [
    ['i', 'Call-ID', 'a84b4c76e66710@pc33.example.com'],
    ['m', 'Contact', '<sip:alice@pc33.example.com>'],
    ['e', 'Content-Encoding', 'gzip'],
    ['l', 'Content-Length', '4'],
    ['c', 'Content-Type', 'application/sdp'],
    ['f', 'From', '"Alice" <sip:alice@example.com>;tag=1928301774'],
    ['s', 'Subject', 'Lunch'],
    ['k', 'Supported', '100rel'],
    ['t', 'To', '<sip:bob@example.com>'],
    ['v', 'Via', 'SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds'],
    ['o', 'Event', 'refer'],
    ['r', 'Refer-To', '<sip:carol@example.com>'],
    ['b', 'Referred-By', '<sip:alice@example.com>'],
    ['u', 'Allow-Events', 'presence'],
    ['x', 'Session-Expires', '1800;refresher=uac'],
  ];
  for (const [compact, full, value] of expected) {
    t.equal(m.get(full), value, `get('${full}') reads the '${compact}' line`);
    t.equal(m.get(full.toUpperCase()), value, `get('${full.toUpperCase()}')`);
    t.equal(m.get(compact), value, `get('${compact}')`);
    t.equal(m.get(compact.toUpperCase()), value, `get('${compact.toUpperCase()}')`);
    t.ok(m.has(full), `has('${full}')`);
    t.equal(m.count(full), 1, `count('${full}')`);
    const f = m.headerFields().find((h) => h.key === full.toLowerCase());
    t.equal(f?.name, compact, `the '${compact}' line keeps its name as written`);
  }
  t.equal(m.callId(), 'a84b4c76e66710@pc33.example.com', 'callId() via i');
  t.equal(m.topVia()?.branch, 'z9hG4bK776asdhds', 'via() via v');
  t.equal(m.from().tag, '1928301774', 'from() via f');
  t.equal(m.contacts()?.[0].uri.raw, 'sip:alice@pc33.example.com', 'contacts() via m');
  t.equal(m.body.toString('latin1'), 'v=0\n', 'body length via l');
  t.ok(m.toBuffer().equals(Buffer.from(withCSeq, 'latin1')), 'serializes unchanged');
  // A written header gets its full canonical name.
  m.setHeader('i', 'new-call-id@x');
  t.match(m.toString(), /\r\nCall-ID: new-call-id@x\r\n/, 'setHeader with a compact name writes the full name');
  t.notMatch(m.toString(), /\r\ni: /, 'the compact line is replaced');
});

t.test('commas split list headers only', async (t) => {
  const m = parseOk(
    t,
    request([
      'Date: Sat, 13 Nov 2010 23:29:00 GMT',
      'User-Agent: Foo/1.0 (Linux, armv7), libfoo/2',
      'Subject: lunch, maybe',
      'Contact: "Doe, John <jd>" <sip:jd@example.com;transport=tcp>;q=0.5, <sip:a,b@example.com>,sip:c@example.com;expires=60',
      'Allow: INVITE, ACK ,BYE,CANCEL',
      'Supported: 100rel, Timer',
      'Supported: path',
      'Warning: 399 a.example.com "one, two", 399 b.example.com "three"',
      'X-Custom: a, b, c',
    ]),
  );
  for (const name of ['Date', 'User-Agent', 'Subject', 'X-Custom']) {
    t.same(m.values(name), [m.get(name)], `${name} is not split on its commas`);
  }
  t.equal(m.get('Date'), 'Sat, 13 Nov 2010 23:29:00 GMT', 'Date value whole');
  t.same(
    m.values('Contact'),
    ['"Doe, John <jd>" <sip:jd@example.com;transport=tcp>;q=0.5', '<sip:a,b@example.com>', 'sip:c@example.com;expires=60'],
    'Contact splits outside quotes and <> only',
  );
  const contacts = m.contacts()!;
  t.equal(contacts.length, 3, 'three contacts');
  t.equal(contacts[0].displayText, 'Doe, John <jd>', 'quoted display name with a comma and <>');
  t.equal(contacts[0].uri.raw, 'sip:jd@example.com;transport=tcp', 'first URI');
  t.equal(contacts[0].params.get('q'), '0.5', 'first q');
  t.equal(contacts[1].uri.user, 'a,b', 'comma inside <> stays in the user part');
  t.equal(contacts[2].uri.raw, 'sip:c@example.com', 'addr-spec contact');
  t.equal(contacts[2].params.get('expires'), '60', 'addr-spec contact expires is a header parameter');
  t.same(m.tokens('Allow'), ['invite', 'ack', 'bye', 'cancel'], 'Allow tokens');
  t.same(m.tokens('Supported'), ['100rel', 'timer', 'path'], 'Supported tokens across lines, lower-cased');
  t.equal(m.values('Warning').length, 2, 'Warning is a list; the comma in quotes does not split');

  // Changes of the first element follow the same rule.
  const c = m.clone();
  c.replaceFirstValue('User-Agent', 'Portier');
  t.equal(c.get('User-Agent'), 'Portier', 'replaceFirstValue on a non-list header replaces the whole value');
  t.ok(c.removeFirstValue('Date'), 'removeFirstValue(Date)');
  t.notOk(c.has('Date'), 'removeFirstValue on a non-list header removes the line');
  t.ok(c.removeFirstValue('Contact'), 'removeFirstValue(Contact)');
  t.same(
    c.contacts()!.map((x) => x.uri.raw),
    ['sip:a,b@example.com', 'sip:c@example.com'],
    'removeFirstValue on a list header keeps the rest',
  );
  const again = parseOk(t, c.toBuffer(), { transport: 'tcp' });
  t.equal(again.get('Date'), undefined, 're-parsed: no Date');
  t.equal(again.contacts()!.length, 2, 're-parsed: two contacts');
  t.equal(again.get('User-Agent'), 'Portier', 're-parsed: User-Agent');
});

t.test('Contact: *', async (t) => {
  const m = parseOk(t, request(['Contact: *', 'Expires: 0'], { method: 'REGISTER', ruri: 'sip:example.com' }));
  t.ok(m.isContactStar(), 'isContactStar()');
  t.same(m.contacts(), [], 'contacts() is empty for *');
  t.equal(m.expires(), 0, 'Expires 0');
  const star2 = parseErr(request(['Contact: *', 'Contact: <sip:a@example.com>'], { method: 'REGISTER', ruri: 'sip:example.com' }));
  t.equal(star2.code, 400, '* with another contact is a 400');
  const notStar = parseOk(t, request(['Contact: <sip:a@example.com>'], { method: 'REGISTER', ruri: 'sip:example.com' }));
  t.notOk(notStar.isContactStar(), 'a normal contact is not *');
});

t.test('Contact parameters: expires, q, +sip.instance, reg-id and RFC 8599 push parameters', async (t) => {
  const m = parseOk(
    t,
    request(
      [
        'Contact: <sip:alice@192.0.2.1:5060;transport=tcp;ob>;expires=3600;q=0.7;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1',
        'Contact: <sip:alice@192.0.2.1;pn-provider=apns;pn-param=DEF123GHIJ.com.example.yourapp.voip;pn-prid=00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0>;expires=600',
        'Contact: <sip:alice@[2001:db8::1];pn-provider=fcm;pn-param=my-project;pn-prid=dTN8n_x:APA91bH-xyz_123>',
        'Contact: <sip:linphone@10.0.0.2;pn-provider=apns.dev;pn-prid=ABC:remote&DEF:voip;pn-param=ABCD1234.org.linphone.phone.remote&voip;pn-silent=1>',
      ],
      { method: 'REGISTER', ruri: 'sip:example.com' },
    ),
  );
  const cs = m.contacts()!;
  t.equal(cs.length, 4, 'four contacts');
  const [a, apns, fcm, lin] = cs;
  t.equal(a.params.get('expires'), '3600', 'expires');
  t.equal(a.params.get('q'), '0.7', 'q');
  t.equal(a.params.get('+sip.instance'), '"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"', '+sip.instance keeps its quotes');
  t.equal(a.params.get('reg-id'), '1', 'reg-id');
  t.equal(a.uri.port, 5060, 'port');
  t.equal(a.uri.params.get('transport'), 'tcp', 'URI transport');
  t.equal(a.uri.params.get('ob'), null, 'URI ob (valueless)');
  t.notOk(a.params.has('ob'), 'ob is a URI parameter, not a header parameter');

  t.equal(apns.uri.params.get('pn-provider'), 'apns', 'pn-provider');
  t.equal(apns.uri.params.get('pn-param'), 'DEF123GHIJ.com.example.yourapp.voip', 'pn-param');
  t.equal(apns.uri.params.get('pn-prid'), '00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0', 'pn-prid');
  t.equal(apns.params.get('expires'), '600', 'expires next to push parameters');
  t.notOk(apns.params.has('pn-provider'), 'pn-* are URI parameters (RFC 8599 §4.1)');

  t.equal(fcm.uri.host, '[2001:db8::1]', 'IPv6 contact host');
  t.equal(fcm.uri.params.get('pn-prid'), 'dTN8n_x:APA91bH-xyz_123', 'FCM token with a colon');
  t.equal(lin.uri.params.get('pn-provider'), 'apns.dev', 'pn-provider apns.dev');
  t.equal(lin.uri.params.get('pn-prid'), 'ABC:remote&DEF:voip', 'Linphone-style pn-prid');
  t.equal(lin.uri.params.get('pn-param'), 'ABCD1234.org.linphone.phone.remote&voip', 'Linphone-style pn-param');
  t.equal(lin.uri.params.get('pn-silent'), '1', 'other pn- parameter');

  const bad = parseErr(request(['Contact: <sip:a@example.com>;expires=soon'], { method: 'REGISTER', ruri: 'sip:example.com' }));
  t.equal(bad.code, 400, 'a REGISTER contact with a non-numeric expires is a 400');
  const bad2 = parseErr(request(['Contact: <sip:a@example.com'], { method: 'REGISTER', ruri: 'sip:example.com' }));
  t.equal(bad2.code, 400, 'an unterminated <> in a REGISTER contact is a 400');
});

t.test('sips and tel URIs', async (t) => {
  const s = parseUri('sips:bob@secure.example.com:5061;transport=tcp');
  t.ok(s, 'sips parses');
  t.equal(s!.scheme, 'sips', 'scheme sips');
  t.ok(s!.isSip, 'sips counts as SIP');
  t.equal(s!.user, 'bob', 'user');
  t.equal(s!.port, 5061, 'port');
  t.equal(s!.params.get('transport'), 'tcp', 'transport');
  t.equal(parseUri('SIPS:Bob@Example.COM')!.scheme, 'sips', 'scheme is case-insensitive');
  t.equal(parseUri('SIPS:Bob@Example.COM')!.hostname, 'example.com', 'hostname lower-cased');
  t.equal(parseUri('SIPS:Bob@Example.COM')!.user, 'Bob', 'user keeps its case');

  const tel = parseUri('tel:+1-201-555-0123;phone-context=example.com;ext=42');
  t.ok(tel, 'tel parses');
  t.equal(tel!.scheme, 'tel', 'scheme tel');
  t.notOk(tel!.isSip, 'tel is not SIP');
  t.equal(tel!.user, '+1-201-555-0123', 'tel number');
  t.equal(tel!.params.get('phone-context'), 'example.com', 'phone-context');
  t.equal(tel!.params.get('ext'), '42', 'ext');
  t.equal(tel!.host, '', 'tel has no host');
  t.equal(parseUri('tel:'), null, 'tel without a number');
  t.equal(parseUri('tel:+1 555'), null, 'tel with a space');

  const m = parseOk(t, request([], { ruri: 'tel:+12015550123' }));
  t.equal(m.requestUri?.scheme, 'tel', 'tel Request-URI');
  const sm = parseOk(t, request([], { ruri: 'sips:bob@example.com' }));
  t.equal(sm.requestUri?.scheme, 'sips', 'sips Request-URI');
  const withHeaders = parseErr(request([], { ruri: 'sip:bob@example.com?Subject=x' }));
  t.equal(withHeaders.code, 400, 'a SIP Request-URI with headers is a 400');
  const bad = parseErr(request([], { ruri: 'sip:bob@exa mple.com' }));
  t.equal(bad.code, 400, 'white space in the Request-URI is a 400');
});

t.test('URI with password, IPv6 host and port, escapes and headers', async (t) => {
  const raw = 'sip:al%69ce:se%63ret@[2001:DB8::10]:5070;maddr=[2001:db8::1];lr;Foo=B%61r?Subject=hi%20there&Priority=urgent';
  const u = parseUri(raw);
  t.ok(u, 'parses');
  t.equal(u!.raw, raw, 'raw kept');
  t.equal(String(u), raw, 'toString is the raw text');
  t.equal(u!.scheme, 'sip', 'scheme');
  t.equal(u!.user, 'al%69ce', 'user with its escapes');
  t.equal(u!.password, 'se%63ret', 'password with its escapes');
  t.equal(u!.host, '[2001:DB8::10]', 'IPv6 reference as written');
  t.equal(u!.hostname, '2001:db8::10', 'hostname without brackets, lower-cased');
  t.equal(u!.port, 5070, 'port');
  t.equal(u!.params.get('maddr'), '[2001:db8::1]', 'maddr IPv6');
  t.equal(u!.params.get('lr'), null, 'lr');
  t.equal(u!.params.get('foo'), 'B%61r', 'parameter names lower-cased, values as written');
  t.equal(u!.headers, 'Subject=hi%20there&Priority=urgent', 'headers part');

  const noUser = parseUri('sip:[::1]:5060');
  t.equal(noUser?.user, null, 'no user');
  t.equal(noUser?.hostname, '::1', 'loopback IPv6');
  t.equal(noUser?.port, 5060, 'port after IPv6');
  t.equal(parseUri('sip:alice:@example.com')?.password, '', 'empty password');
  for (const bad of ['sip:bob@[2001:db8::1', 'sip:bob@[]', 'sip:bob@host:99999', 'sip:bob@host:', 'sip:%zz@host', 'sip:bob@host?', 'sip:@host', 'sip:', 'sip:bob@ho st', 'sip:bob@[2001:db8::g]']) {
    t.equal(parseUri(bad), null, `${JSON.stringify(bad)} is not a URI`);
  }
  // In a message: escapes and the IPv6 Request-URI survive a round trip.
  const m = parseOk(t, request(['Contact: <' + raw + '>'], { ruri: 'sip:al%69ce@[2001:db8::10]:5070' }));
  t.equal(m.requestUri?.hostname, '2001:db8::10', 'IPv6 Request-URI');
  t.equal(m.contacts()?.[0].uri.headers, 'Subject=hi%20there&Priority=urgent', 'headers part inside <> in Contact');
  m.setHeader('Max-Forwards', '69');
  const again = parseOk(t, m.toBuffer(), { transport: 'tcp' });
  t.equal(again.uri, 'sip:al%69ce@[2001:db8::10]:5070', 'Request-URI byte-exact after a change');
  t.equal(again.contacts()?.[0].uri.raw, raw, 'Contact URI byte-exact after a change');
});

t.test('Via: received, rport, maddr, ttl, white space, several values', async (t) => {
  const m = parseOk(
    t,
    request([], {
      vias: [
        'Via: SIP/2.0/UDP [2001:db8::9]:5060;rport=5061;received=2001:db8::99;maddr=224.0.0.1;ttl=16;branch=z9hG4bKa',
        'v: SIP / 2.0 / tcp  proxy.example.com : 5070 ; branch = z9hG4bKb ; rport, SIP/2.0/TLS 192.0.2.7;branch=1234',
        'Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKc;received=192.0.2.8;x-ext="a;b"',
      ],
    }),
  );
  const v = m.via();
  t.equal(v.length, 4, 'four Via values over three lines');
  t.same(
    v.map((x) => [x.protocol, x.transport, x.host, x.port, x.branch]),
    [
      ['SIP/2.0', 'UDP', '[2001:db8::9]', 5060, 'z9hG4bKa'],
      ['SIP/2.0', 'TCP', 'proxy.example.com', 5070, 'z9hG4bKb'],
      ['SIP/2.0', 'TLS', '192.0.2.7', null, '1234'],
      ['SIP/2.0', 'WSS', 'df7jal23ls0d.invalid', null, 'z9hG4bKc'],
    ],
    'protocol, transport (upper-cased), sent-by and branch of each',
  );
  t.equal(v[0].rport, 5061, 'rport with a value');
  t.equal(v[0].received, '2001:db8::99', 'received IPv6 without brackets (RFC 3261 grammar)');
  t.equal(v[0].maddr, '224.0.0.1', 'maddr');
  t.equal(v[0].params.get('ttl'), '16', 'ttl');
  t.equal(v[1].rport, null, 'rport without a value');
  t.equal(v[2].rport, undefined, 'no rport');
  t.equal(v[2].received, null, 'no received');
  t.equal(v[3].received, '192.0.2.8', 'received IPv4');
  t.equal(v[3].params.get('x-ext'), '"a;b"', 'quoted parameter value with a ;');
  t.ok(v[0].hasRfc3261Branch, 'magic cookie');
  t.notOk(v[2].hasRfc3261Branch, 'RFC 2543 branch');
  t.equal(m.topVia()?.branch, 'z9hG4bKa', 'topVia');
  t.equal(responseAddress(v[0]), '2001:db8::99', 'response goes to received');
  t.equal(responsePort(v[0], 5060), 5061, 'and to rport');
  t.equal(responseAddress(v[2]), '192.0.2.7', 'else to the sent-by host');
  t.equal(responsePort(v[2], 5061), 5061, 'and the default port');
  t.equal(responseAddress(parseOneVia(t, 'SIP/2.0/UDP [2001:db8::5]')), '2001:db8::5', 'IPv6 sent-by without brackets');

  // removeFirstValue on a comma-joined line rewrites it with the rest.
  t.ok(m.removeFirstValue('Via'), 'removeFirstValue(Via)');
  t.ok(m.removeFirstValue('Via'), 'removeFirstValue(Via) again');
  t.same(
    m.via().map((x) => x.branch),
    ['1234', 'z9hG4bKc'],
    'two Vias left',
  );
  const again = parseOk(t, m.toBuffer(), { transport: 'tcp' });
  t.same(
    again.via().map((x) => x.branch),
    ['1234', 'z9hG4bKc'],
    're-parsed Vias',
  );

  for (const bad of ['SIP/2.0/UDP', 'SIP/2.0/UDPhost', 'SIP/2.0 UDP host', 'SIP/2.0/UDP host:abc', 'SIP/2.0/UDP host;', 'SIP/2.0/UDP host;branch=', 'SIP/2.0/UDP [::1', 'SIP/2.0/UDP host,']) {
    t.notOk(parseVias(bad, []), `${JSON.stringify(bad)} is not a Via`);
  }
  const badMsg = parseErr(request([], { vias: ['Via: SIP/2.0/UDP host:99999;branch=z9hG4bK1'] }));
  t.equal(badMsg.code, 400, 'a request with a malformed Via is a 400');
});

function parseOneVia(t: T, s: string): Via {
  const out: Via[] = [];
  t.ok(parseVias(s, out), `${s} parses`);
  return out[0];
}

t.test('Route, Record-Route and Path lists', async (t) => {
  const m = parseOk(
    t,
    request([
      'Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr;transport=tcp>',
      'Record-Route: <sip:rr2.example.com;lr>',
      'Route: "Edge, west" <sip:[2001:db8::7]:5080;lr>',
      'Record-Route: <sip:rr1.example.com;lr;ftag=abc>,<sip:rr0.example.com;lr>',
      'Path: <sip:edge.example.com;lr;ob>, <sip:core.example.com;lr>',
    ]),
  );
  t.same(
    m.routes()!.map((r) => r.uri.raw),
    ['sip:p1.example.com;lr', 'sip:p2.example.com;lr;transport=tcp', 'sip:[2001:db8::7]:5080;lr'],
    'Route values in order across lines',
  );
  t.equal(m.routes()![2].displayText, 'Edge, west', 'display name in a Route');
  t.equal(m.routes()![2].uri.port, 5080, 'Route port');
  t.ok(m.routes()!.every((r) => r.uri.params.has('lr')), 'all loose routes');
  t.same(
    m.recordRoutes()!.map((r) => r.uri.hostname),
    ['rr2.example.com', 'rr1.example.com', 'rr0.example.com'],
    'Record-Route values in order',
  );
  t.equal(m.recordRoutes()![1].uri.params.get('ftag'), 'abc', 'Record-Route URI parameter');
  const path = m.addresses('Path')!;
  t.same(
    path.map((p) => p.uri.hostname),
    ['edge.example.com', 'core.example.com'],
    'Path values',
  );
  t.equal(path[0].uri.params.get('ob'), null, 'Path ob');

  // A proxy consuming the top Route.
  m.removeFirstValue('Route');
  t.same(
    m.routes()!.map((r) => r.uri.hostname),
    ['p2.example.com', '2001:db8::7'],
    'top Route removed',
  );
  m.prependHeader('Record-Route', '<sip:portier.example.com;lr>');
  const again = parseOk(t, m.toBuffer(), { transport: 'tcp' });
  t.same(
    again.recordRoutes()!.map((r) => r.uri.hostname),
    ['portier.example.com', 'rr2.example.com', 'rr1.example.com', 'rr0.example.com'],
    'pushed Record-Route on top',
  );
  t.equal(again.routes()!.length, 2, 'two Routes after the re-parse');

  const bad = parseAndValidate(request(['Route: <sip:p1.example.com;lr']));
  t.ok(bad instanceof SipMessage, 'a malformed Route does not fail validation');
  t.equal((bad as SipMessage).routes(), null, 'but routes() says it is malformed');
});

t.test('authentication headers read whole through get()', async (t) => {
  const authz =
    'Digest username="bob", realm="biloxi.example.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.example.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"';
  const m = parseOk(t, request(['Authorization: ' + authz, 'proxy-authorization: Digest username="alice", realm="a, b",\r\n  nonce="n", uri="sip:x", response="r"']));
  t.equal(m.get('Authorization'), authz, 'Authorization');
  t.equal(m.get('authorization'), authz, 'Authorization, any case');
  t.same(m.values('Authorization'), [authz], 'Authorization is not split on its commas');
  t.equal(m.get('Proxy-Authorization'), 'Digest username="alice", realm="a, b", nonce="n", uri="sip:x", response="r"', 'Proxy-Authorization, unfolded');

  const challenge = 'Digest realm="atlanta.example.com", qop="auth,auth-int", nonce="ea9c8e88df84f1cec4341ae6cbe5a359", opaque="", stale=FALSE, algorithm=MD5';
  const r = parseOk(t, response(['WWW-Authenticate: ' + challenge, 'Proxy-Authenticate: ' + challenge.replace('atlanta', 'proxy')], '401 Unauthorized'));
  t.equal(r.status, 401, 'status');
  t.equal(r.reason, 'Unauthorized', 'reason');
  t.equal(r.get('WWW-Authenticate'), challenge, 'WWW-Authenticate');
  t.equal(r.get('www-authenticate'), challenge, 'WWW-Authenticate, any case');
  t.equal(r.get('Proxy-Authenticate'), challenge.replace('atlanta', 'proxy'), 'Proxy-Authenticate');
  t.same(r.values('WWW-Authenticate'), [challenge], 'WWW-Authenticate is not split');
  t.equal(r.count('Proxy-Authenticate'), 1, 'one Proxy-Authenticate');
});

t.test('limits', async (t) => {
  const req = request([], { body: 'x'.repeat(100) });
  t.ok(parseAndValidate(req, { limits: { maxMessageSize: req.length } }) instanceof SipMessage, 'a message of exactly maxMessageSize is fine');
  const big = parseErr(req, { limits: { maxMessageSize: req.length - 1 } });
  t.equal(big.code, 413, 'a request over maxMessageSize is a 413');
  t.ok(big.message?.isRequest, '413 comes with the request to answer');
  t.equal(big.message?.callId(), 'a84b4c76e66710@pc33.example.com', 'partial request has its Call-ID');
  const resp = response([]);
  const bigResp = parseErr(resp, { limits: { maxMessageSize: resp.length - 1 } });
  t.equal(bigResp.code, 0, 'a response over maxMessageSize is dropped');
  const tooBigNoLength = parseErr(request([], { body: 'y'.repeat(200), noLength: true }), { limits: { maxMessageSize: 300 } });
  t.equal(tooBigNoLength.code, 413, 'a datagram without Content-Length over the limit is a 413');

  const lines = [...BASE, 'CSeq: 1 INVITE', 'Content-Length: 0'];
  const seven = request(lines, { bare: true });
  t.ok(parseAndValidate(seven, { limits: { maxHeaders: 7 } }) instanceof SipMessage, 'seven header lines with maxHeaders 7');
  const many = parseErr(seven, { limits: { maxHeaders: 6 } });
  t.equal(many.code, 400, 'more header lines than maxHeaders is a 400');
  t.ok(many.message !== undefined, 'with the partial message');
  const folded = request([...BASE, 'CSeq: 1\r\n INVITE', 'Content-Length: 0'], { bare: true });
  t.ok(parseAndValidate(folded, { limits: { maxHeaders: 7 } }) instanceof SipMessage, 'a folded field counts once');

  const long = 'X-Long: ' + 'a'.repeat(200);
  const withLong = request([long]);
  t.ok(parseAndValidate(withLong, { limits: { maxLineLength: long.length } }) instanceof SipMessage, 'a line of exactly maxLineLength is fine');
  const tooLong = parseErr(withLong, { limits: { maxLineLength: long.length - 1 } });
  t.equal(tooLong.code, 400, 'a header line longer than maxLineLength is a 400');
  const foldedLong = request(['X-Long: ' + 'a'.repeat(100) + '\r\n ' + 'b'.repeat(100)]);
  t.equal(parseErr(foldedLong, { limits: { maxLineLength: 150 } }).code, 400, 'the lines of a folded field count together');
  const longStart = request([], { ruri: 'sip:' + 'u'.repeat(300) + '@example.com' });
  t.equal(parseErr(longStart, { limits: { maxLineLength: 100 } }).code, 0, 'a start line longer than maxLineLength is dropped');
});

t.test('framing: Content-Length, bare LF, leading CRLFs', async (t) => {
  const noLength = request([], { body: 'v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n', noLength: true });
  const tcp = parseErr(noLength, { transport: 'tcp' });
  t.equal(tcp.code, 400, 'no Content-Length on TCP is a 400');
  t.ok(tcp.message, 'with the partial message');
  t.equal(parseErr(noLength, { transport: 'tls' }).code, 400, 'nor on TLS');
  // RFC 7118 §5.2: one SIP message per WebSocket message, so ws/wss frame like UDP.
  for (const transport of ['udp', 'ws', 'wss', undefined]) {
    const m = parseOk(t, noLength, { transport });
    t.equal(m.body.toString('latin1'), 'v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n', `${transport ?? 'default'}: the body is the rest of the datagram`);
    t.ok(m.toBuffer().equals(noLength), `${transport ?? 'default'}: serializes unchanged`);
    const c = m.clone();
    c.setHeader('Max-Forwards', '69');
    const back = parseOk(t, c.toBuffer(), { transport: 'tcp' });
    t.equal(back.get('Content-Length'), String(m.body.length), 'a changed message gains a Content-Length');
    t.ok(back.body.equals(m.body), 'with the same body');
  }
  const extra = Buffer.concat([request([], { body: 'abc' }), Buffer.from('trailing junk')]);
  const cut = parseOk(t, extra);
  t.equal(cut.body.toString(), 'abc', 'octets past Content-Length are not body');
  t.equal(cut.toBuffer().length, extra.length - 'trailing junk'.length, 'nor part of the message');
  t.equal(parseErr(request(['Content-Length: 10'], { body: 'abc' })).code, 400, 'Content-Length larger than the datagram is a 400');
  t.equal(parseErr(request(['Content-Length: 3', 'l: 4'], { body: 'abcd' })).code, 400, 'conflicting Content-Lengths are a 400');
  t.equal(parseErr(request(['Content-Length: -1'])).code, 400, 'a negative Content-Length is a 400');
  t.equal(parseErr(response(['Content-Length: x'])).code, 0, 'a bad response is dropped');

  const lf = replaced(request(['Subject: hello']), 'Subject: hello\r\n', 'Subject: hel\nlo\r\n');
  const lfErr = parseErr(lf);
  t.equal(lfErr.code, 400, 'a bare LF inside a header is a 400');
  t.ok(lfErr.message, 'with the partial message');
  const cr = replaced(request(['Subject: hello']), 'Subject: hello\r\n', 'Subject: hel\rlo\r\n');
  t.equal(parseErr(cr).code, 400, 'a bare CR inside a header is a 400');
  const lfEnd = replaced(request(['Subject: hello']), 'Subject: hello\r\n', 'Subject: hello\n');
  t.equal(parseErr(lfEnd).code, 400, 'a header line ending in a bare LF is a 400');

  const plain = request([], { body: 'body' });
  const lead = Buffer.concat([Buffer.from('\r\n\r\n\r\n'), plain]);
  const m = parseOk(t, lead, { transport: 'tcp' });
  t.equal(m.method, 'INVITE', 'CRLFs before the start line are ignored');
  t.equal(m.body.toString(), 'body', 'body found');
  t.ok(m.toBuffer().equals(plain), 'the message starts at its start line');
  t.equal(parseErr(Buffer.from('\r\n\r\n')).code, 0, 'CRLFs only: dropped');
  t.equal(parseErr(Buffer.alloc(0)).code, 0, 'nothing: dropped');
  t.equal(parseErr(Buffer.from(' INVITE sip:a@b SIP/2.0\r\n\r\n')).code, 0, 'white space before the start line: dropped');

  const noBlank = Buffer.from(request([]).toString('latin1').replace(/\r\n\r\n$/, '\r\n'), 'latin1');
  const nb = parseErr(noBlank);
  t.equal(nb.code, 400, 'no empty line after the headers: 400');
  t.equal(nb.message?.callId(), 'a84b4c76e66710@pc33.example.com', 'with the headers read');
});

t.test('start line', async (t) => {
  const v3 = replaced(request([]), 'SIP/2.0\r\n', 'SIP/3.0\r\n');
  t.equal(parseErr(v3).code, 505, 'SIP/3.0 request: 505');
  const rv3 = replaced(response([]), 'SIP/2.0 200', 'SIP/3.0 200');
  t.equal(parseErr(rv3).code, 0, 'SIP/3.0 response: dropped');
  const twoSp = replaced(request([]), 'INVITE sip', 'INVITE  sip');
  t.equal(parseErr(twoSp).code, 400, 'two SPs in the request line: 400');
  const mismatch = replaced(request([]), 'CSeq: 314159 INVITE', 'CSeq: 314159 BYE');
  t.equal(parseErr(mismatch).code, 400, 'CSeq method differs from the request method: 400');
  const r = parseOk(t, response([], '183 Session Progress'));
  t.equal(r.status, 183, 'status');
  t.equal(r.reason, 'Session Progress', 'reason with a space');
  t.equal(r.requestUri, null, 'no Request-URI');
  t.equal(parseErr(response([], '99 Odd')).code, 0, 'two-digit status: dropped');
  t.equal(parseErr(response([], '700 Odd')).code, 0, 'status over 699: dropped');
});

// ---------------------------------------------------------------------------

function incoming(t: T): SipMessage {
  return parseOk(
    t,
    request([], {
      vias: ['Via: SIP/2.0/UDP pc33.example.com:5060;rport;branch=z9hG4bKtop, SIP/2.0/TCP proxy.example.net;branch=z9hG4bKmid', 'Via: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bKlast'],
    }),
  );
}

t.test('buildResponseBytes', async (t) => {
  const req = incoming(t);
  const bytes = buildResponseBytes(req, 486, { toTag: 'abc123' });
  const r = parseOk(t, bytes, { transport: 'tcp' });
  t.notOk(r.isRequest, 'a response');
  t.equal(r.status, 486, 'status');
  t.equal(r.reason, 'Busy Here', 'default reason phrase');
  t.same(r.via().map(String), req.via().map(String), 'every Via copied in order');
  t.equal(r.count('Via'), req.count('Via'), 'as many Via lines');
  t.equal(r.get('From'), req.get('From'), 'From copied');
  t.equal(r.from().tag, '1928301774', 'From tag');
  t.equal(r.to().uri.raw, 'sip:bob@example.com', 'To URI copied');
  t.equal(r.to().tag, 'abc123', 'To tag added');
  t.equal(r.callId(), req.callId(), 'Call-ID copied');
  t.same(r.cseq(), req.cseq(), 'CSeq copied');
  t.equal(r.get('Content-Length'), '0', 'Content-Length 0');
  t.notOk(r.has('Max-Forwards'), 'Max-Forwards not copied');
  t.ok(r.toBuffer().equals(bytes), 'the octets are those parsed');

  const trying = parseOk(t, buildResponseBytes(req, 100), { transport: 'tcp' });
  t.equal(trying.status, 100, '100');
  t.equal(trying.reason, 'Trying', '100 Trying');
  t.equal(trying.to().tag, null, 'no To tag on a 100');

  const random = parseOk(t, buildResponseBytes(req, 200), { transport: 'tcp' });
  t.match(random.to().tag, /^[0-9a-f]{16}$/, 'a fresh To tag when none is given');
  const other = parseOk(t, buildResponseBytes(req, 200), { transport: 'tcp' });
  t.not(other.to().tag, random.to().tag, 'fresh each time');

  const tagged = parseOk(t, replaced(request([]), 'To: <sip:bob@example.com>', 'To: <sip:bob@example.com>;tag=existing'));
  const kept = parseOk(t, buildResponseBytes(tagged, 180), { transport: 'tcp' });
  t.equal(kept.to().tag, 'existing', 'an existing To tag is kept');
  t.equal(kept.count('To'), 1, 'one To');
  t.equal(kept.get('To'), '<sip:bob@example.com>;tag=existing', 'To unchanged');

  const withBody = parseOk(
    t,
    buildResponseBytes(req, 200, { reason: 'Fine\r\nInjected: x', headers: [['contact', '<sip:portier@192.0.2.1>'], ['Subject', 'hi\r\nX-Evil: 1']], body: 'hello', contentType: 'text/plain' }),
    { transport: 'tcp' },
  );
  t.equal(withBody.reason, 'Fine  Injected: x', 'CR and LF in the reason cannot start a header');
  t.equal(withBody.get('Contact'), '<sip:portier@192.0.2.1>', 'extra header, canonical name');
  t.equal(withBody.headerFields().find((f) => f.key === 'contact')?.name, 'Contact', 'written as Contact');
  t.notOk(withBody.has('X-Evil'), 'CR and LF in an extra header value cannot start a header');
  t.equal(withBody.get('Subject'), 'hi  X-Evil: 1', 'they become spaces');
  t.equal(withBody.get('Content-Type'), 'text/plain', 'Content-Type');
  t.equal(withBody.body.toString(), 'hello', 'body');
  t.equal(withBody.get('Content-Length'), '5', 'Content-Length of the body');

  // Short values are copied in JavaScript, long ones written natively: the same octets either way
  // (latin1 as is, a char beyond it as its low octet, as Buffer.from(s, 'latin1') writes it).
  for (const value of ['Müller \u0141', 'Müller \u0141 '.repeat(20)]) {
    const out = buildResponseBytes(req, 200, { headers: [['Organization', value]] });
    const line = Buffer.from('Organization: ' + value + '\r\n', 'latin1');
    t.ok(out.includes(line), `a ${value.length}-char value goes out as Buffer.from(s, 'latin1') writes it`);
  }

  // The 400 for a bad request is built from the partial message.
  const bad = parseErr(replaced(request([]), 'Max-Forwards: 70', 'Max-Forwards: many'));
  t.equal(bad.code, 400, 'a bad Max-Forwards is a 400');
  const r400 = parseOk(t, buildResponseBytes(bad.message!, 400, { reason: bad.reason }), { transport: 'tcp' });
  t.equal(r400.status, 400, 'the 400 parses');
  t.equal(r400.reason, bad.reason, 'with the reason');
  t.equal(r400.topVia()?.branch, 'z9hG4bK776asdhds', 'to the right transaction');
});

t.test('stampedVia (RFC 3261 §18.2.1, RFC 3581)', async (t) => {
  const v = (s: string): Via => parseOneVia(t, s);

  t.equal(stampedVia(v('SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK1'), '192.0.2.4', 5060), null, 'sent-by is the source: nothing to add');
  t.equal(
    stampedVia(v('SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK1'), '198.51.100.7', 5060),
    'SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK1;received=198.51.100.7',
    'another source address: received',
  );
  t.equal(
    stampedVia(v('SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1'), '192.0.2.4', 5060),
    'SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1;received=192.0.2.4',
    'a host name in sent-by: received',
  );
  t.equal(
    stampedVia(v('SIP/2.0/UDP 192.0.2.4:5060;rport;branch=z9hG4bK1'), '192.0.2.4', 40001),
    'SIP/2.0/UDP 192.0.2.4:5060;rport=40001;branch=z9hG4bK1;received=192.0.2.4',
    'rport asked: rport filled and received added even when the address matches (RFC 3581 §4)',
  );
  t.equal(
    stampedVia(v('SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;rport'), '203.0.113.9', 1024),
    'SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;rport=1024;received=203.0.113.9',
    'behind a NAT',
  );
  t.equal(
    stampedVia(v('SIP/2.0/UDP 10.0.0.2;received=1.2.3.4;branch=z9hG4bK1'), '203.0.113.9', 5060),
    'SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1;received=203.0.113.9',
    'a received already there is replaced',
  );

  // IPv6
  t.equal(stampedVia(v('SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK1'), '2001:db8::9', 5060), null, 'IPv6 sent-by is the source');
  t.equal(stampedVia(v('SIP/2.0/UDP [2001:DB8::9]:5060;branch=z9hG4bK1'), '2001:db8::9', 5060), null, 'IPv6 compared without case');
  const six = stampedVia(v('SIP/2.0/TCP [2001:db8::9]:5060;rport;branch=z9hG4bK1'), '2001:db8::9', 40000);
  t.equal(six, 'SIP/2.0/TCP [2001:db8::9]:5060;rport=40000;branch=z9hG4bK1;received=2001:db8::9', 'IPv6 with rport');
  const nat6 = stampedVia(v('SIP/2.0/UDP [fd00::2];branch=z9hG4bK1'), '2001:db8::77', 5060);
  t.equal(nat6, 'SIP/2.0/UDP [fd00::2];branch=z9hG4bK1;received=2001:db8::77', 'IPv6 source differs');

  // The stamped value is a Via that says the same.
  for (const s of [six!, nat6!]) {
    const back = v(s);
    t.equal(back.branch, 'z9hG4bK1', 'branch kept');
    t.equal(responseAddress(back), back.received, 'response goes to received');
  }
  const back = v(six!);
  t.equal(back.rport, 40000, 'rport reads back');
  t.equal(back.received, '2001:db8::9', 'received reads back');
  t.equal(responsePort(back, 5060), 40000, 'response port is rport');

  // On a message: the top Via replaced, the others untouched.
  const req = incoming(t);
  const stamped = stampedVia(req.topVia()!, '203.0.113.5', 61000);
  t.equal(stamped, 'SIP/2.0/UDP pc33.example.com:5060;rport=61000;branch=z9hG4bKtop;received=203.0.113.5', 'top Via stamped');
  req.replaceFirstValue('Via', stamped!);
  const again = parseOk(t, req.toBuffer(), { transport: 'tcp' });
  t.same(
    again.via().map((x) => x.branch),
    ['z9hG4bKtop', 'z9hG4bKmid', 'z9hG4bKlast'],
    'Via list intact',
  );
  t.equal(again.topVia()?.received, '203.0.113.5', 'received on the top Via');
  t.equal(again.topVia()?.rport, 61000, 'rport on the top Via');
  t.match(again.toString(), /\r\nVia: SIP\/2\.0\/UDP \[2001:db8::1\];branch=z9hG4bKlast\r\n/, 'the second Via line is copied byte-exact');
});

t.test('names that are Object.prototype properties are ordinary tokens', async (t) => {
  const m = parseOk(
    t,
    request(['Constructor: a', '__proto__: b', 'toString: c', 'hasOwnProperty: d'], {
      vias: ['Via: SIP/2.0/__proto__ a.example.com;branch=z9hG4bK1, SIP/2.0/constructor b.example.com;branch=z9hG4bK2, SIP/2.0/toString c.example.com;branch=z9hG4bK3'],
    }),
  );
  t.same(
    m.via().map((v) => v.transport),
    ['__PROTO__', 'CONSTRUCTOR', 'TOSTRING'],
    'extension transports upper-cased as strings',
  );
  for (const v of m.via()) t.type(v.transport, 'string', `transport ${v.transport} is a string`);
  const stamped = stampedVia(m.topVia()!, '192.0.2.1', 5060);
  t.equal(stamped, 'SIP/2.0/__PROTO__ a.example.com;branch=z9hG4bK1;received=192.0.2.1', 'stampedVia writes the transport token');
  t.equal(m.get('constructor'), 'a', 'get(constructor)');
  t.equal(m.get('Constructor'), 'a', 'get(Constructor)');
  t.equal(m.get('__proto__'), 'b', 'get(__proto__)');
  t.equal(m.get('toString'), 'c', 'get(toString)');
  t.equal(m.get('hasOwnProperty'), 'd', 'get(hasOwnProperty)');
  t.ok(m.has('constructor'), 'has(constructor)');
  for (const name of ['constructor', '__proto__', 'toString', 'valueOf']) {
    const c = m.clone();
    c.appendHeader(name, 'x');
    c.setHeader(name, 'y');
    const out = c.toString();
    t.notMatch(out, /function|\[object/, `${name}: no Object.prototype text in the output`);
    const back = parseOk(t, c.toBuffer(), { transport: 'tcp' });
    t.equal(back.get(name), 'y', `${name} written and read back`);
    t.equal(back.count(name), 1, `${name}: one line`);
  }
});
