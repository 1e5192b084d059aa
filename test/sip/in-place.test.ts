// What the message layer now reads or writes in place, without the
// intermediate objects it made before, must give exactly what they gave:
//  - Via and name-addr parameters are read in place until someone asks for
//    their Map (a name given twice, any case, keeps its first place and its
//    last value), checked against the Map of a fresh parse;
//  - stampedVia copies what it does not change from the source text,
//    checked against the Map-based writing it replaced;
//  - the Vias a message keeps across changes are those a new parse finds;
//  - responses are written as octets into a scratch Buffer, checked against
//    the string-built head they replaced;
//  - list lines lose or change their first element without a split and a
//    join when they hold one, and lines go in place.
import t from 'tap';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import {
  buildResponse,
  buildResponseBytes,
  headerDisplayName,
  headerKey,
  LIST_HEADERS,
  parseAndValidate,
  parseNameAddr,
  parseVias,
  reasonPhrase,
  SipMessage,
  SipParseError,
  splitList,
  stampedVia,
  stripBrackets,
  type ResponseOptions,
  type Via,
} from '../../src/sip/index.js';

const sws = fc.constantFrom('', '', '', ' ', '\t', '  ');
const token = fc.stringMatching(/^[A-Za-z0-9\-.!%*_+`'~]{1,8}$/);
const names = fc.constantFrom('branch', 'Branch', 'rport', 'RPORT', 'rport', 'received', 'Received', 'maddr', 'ttl', 'tag', 'TAG', 'x', 'X-y', 'expires', 'lr');
const value = fc.oneof(
  { weight: 4, arbitrary: token },
  { weight: 1, arbitrary: fc.ipV4() },
  { weight: 1, arbitrary: fc.ipV6().map((a) => '[' + a + ']') },
  { weight: 1, arbitrary: fc.stringMatching(/^[a-z ,;=]{0,6}$/).map((q) => '"' + q + '"') },
);
const param = fc.tuple(sws, sws, names, fc.option(fc.tuple(sws, sws, value), { nil: null, freq: 3 }));
const paramsText = fc.array(param, { maxLength: 6 }).map((ps) =>
  ps.map(([a, b, n, v]) => a + ';' + b + n + (v === null ? '' : v[0] + '=' + v[1] + v[2])).join(''),
);
const host = fc.oneof(fc.ipV4(), fc.constantFrom('pc33.Example.com', 'example.com', 'a'), fc.ipV6().map((a) => '[' + a.toUpperCase() + ']'));
const viaText = fc
  .record({
    head: fc.constantFrom('SIP/2.0/UDP ', 'SIP/2.0/TCP ', 'SIP/2.0/TLS  ', 'sip/2.0/udp ', 'SIP / 2.0 / WSS ', 'SIP/2.0/SCTP\t', 'SIP/2.0/x-foo '),
    host,
    port: fc.option(fc.tuple(fc.constantFrom(':', ':', ' : ', ':0'), fc.integer({ min: 0, max: 65535 })), { nil: null }),
    gap: sws,
    params: paramsText,
  })
  .map((r) => r.head + r.host + (r.port === null ? '' : r.port[0] + r.port[1]) + r.gap + r.params);

function via(text: string): Via {
  const out: Via[] = [];
  if (!parseVias(text, out) || out.length !== 1) throw new Error('generated Via does not parse: ' + text);
  return out[0];
}

/** stampedVia as it was written before, from the Map. */
function stampedFromMap(v: Via, sourceAddress: string, sourcePort: number): string | null {
  const wantsRport = v.params.has('rport');
  const sentBy = stripBrackets(v.host).toLowerCase();
  const needReceived = wantsRport || sentBy !== sourceAddress.toLowerCase();
  if (!needReceived && !wantsRport) return null;
  let out = 'SIP/2.0/' + v.transport + ' ' + v.host + (v.port !== null ? ':' + v.port : '');
  for (const [k, val] of v.params) {
    if (k === 'received') continue;
    if (k === 'rport') out += ';rport=' + sourcePort;
    else out += val === null ? ';' + k : ';' + k + '=' + val;
  }
  if (needReceived) out += ';received=' + sourceAddress;
  return out;
}

const LOOKED_UP = ['branch', 'rport', 'received', 'maddr', 'ttl', 'tag', 'x', 'x-y', 'expires', 'lr', 'Branch', 'nope'];

t.test('Via parameters read in place are those of the Map', async () => {
  fc.assert(
    fc.property(viaText, (text) => {
      const map = via(text).params;
      const lazy = via(text);
      assert.equal(lazy.branch, map.get('branch') ?? null, 'branch');
      assert.equal(lazy.received, map.get('received') ?? null, 'received');
      assert.equal(lazy.maddr, map.get('maddr') ?? null, 'maddr');
      const rp = map.get('rport');
      const n = typeof rp === 'string' ? Number(rp) : -1;
      assert.equal(lazy.rport, rp === undefined ? undefined : rp === null || !/^\d+$/.test(rp) || n > 65535 ? null : n, 'rport');
      for (const name of LOOKED_UP) assert.equal(lazy.param(name), map.get(name), name);
      assert.deepEqual([...lazy.params], [...map], 'the Map made later is the same');
      assert.equal(lazy.branch, map.get('branch') ?? null, 'branch once the Map is made');
    }),
    { numRuns: 2000 },
  );
});

t.test('stampedVia writes what the Map-based writing wrote', async () => {
  const source = fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('PC33.example.com', 'example.com', 'A', '127.0.0.1'));
  fc.assert(
    fc.property(viaText, source, fc.integer({ min: 1, max: 65535 }), fc.boolean(), (text, address, port, same) => {
      const v = via(text);
      const addr = same ? stripBrackets(v.host).toUpperCase() : address;
      assert.equal(stampedVia(v, addr, port), stampedFromMap(via(text), addr, port), text);
      // Once the Map is made (by anyone), from the Map: the same again.
      void v.params;
      assert.equal(stampedVia(v, addr, port), stampedFromMap(via(text), addr, port), text + ' (Map made)');
    }),
    { numRuns: 3000 },
  );
});

t.test('stampedVia: the usual cases', async (t) => {
  const v = (s: string): Via => via(s);
  t.equal(stampedVia(v('SIP/2.0/UDP 127.0.0.1:52675;branch=z9hG4bK1;rport'), '127.0.0.1', 52675), 'SIP/2.0/UDP 127.0.0.1:52675;branch=z9hG4bK1;rport=52675;received=127.0.0.1');
  t.equal(stampedVia(v('SIP/2.0/UDP 127.0.0.1:52675;rport;branch=z9hG4bK1'), '127.0.0.1', 5), 'SIP/2.0/UDP 127.0.0.1:52675;rport=5;branch=z9hG4bK1;received=127.0.0.1');
  t.equal(stampedVia(v('SIP/2.0/UDP h;received=1.2.3.4;branch=z9hG4bK1;rport=9'), '1.2.3.5', 7), 'SIP/2.0/UDP h;branch=z9hG4bK1;rport=7;received=1.2.3.5');
  t.equal(stampedVia(v('SIP/2.0/UDP h ; Branch = z9hG4bK1 ;RPORT'), '1.2.3.5', 7), 'SIP/2.0/UDP h;branch=z9hG4bK1;rport=7;received=1.2.3.5');
  t.equal(stampedVia(v('SIP/2.0/UDP h;branch=a;x=1;branch=b'), '1.2.3.5', 7), 'SIP/2.0/UDP h;branch=b;x=1;received=1.2.3.5', 'a name given twice: its first place, its last value');
  t.equal(stampedVia(v('SIP/2.0/UDP H:05060;branch=a'), '1.2.3.5', 7), 'SIP/2.0/UDP H:5060;branch=a;received=1.2.3.5', 'the port written as a number');
  t.equal(stampedVia(v('SIP/2.0/UDP Example.COM;branch=a'), 'example.com', 7), null, 'host compared without case');
});

t.test('name-addr parameters read in place are those of the Map', async () => {
  const addr = fc
    .record({
      display: fc.constantFrom('', '"Alice" ', 'Bob ', '"a;tag=x" '),
      uri: fc.constantFrom('sip:alice@example.com', 'sip:bob@h;lr;tag=u', 'tel:+123'),
      angle: fc.boolean(),
      gap: sws,
      params: paramsText,
    })
    .map((r) => (r.angle || r.display !== '' || r.uri.includes(';') ? r.display + '<' + r.uri + '>' : r.uri) + r.gap + r.params);
  fc.assert(
    fc.property(addr, (text) => {
      const a = parseNameAddr(text);
      const b = parseNameAddr(text);
      if (a === null || b === null) throw new Error('generated name-addr does not parse: ' + text);
      const map = b.params;
      assert.equal(a.tag, map.get('tag') ?? null, 'tag');
      for (const name of LOOKED_UP) assert.equal(a.param(name), map.get(name), name);
      assert.deepEqual([...a.params], [...map], 'the Map made later is the same');
      assert.equal(a.tag, map.get('tag') ?? null, 'tag once the Map is made');
    }),
    { numRuns: 2000 },
  );
});

t.test('the Vias kept across changes are those a new parse finds', async () => {
  const base = (vias: string[]): Buffer =>
    Buffer.from(
      'INVITE sip:bob@example.com SIP/2.0\r\n' +
        vias.map((v) => 'Via: ' + v + '\r\n').join('') +
        'From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1@h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n',
      'latin1',
    );
  const one = fc.constantFrom('SIP/2.0/UDP a.example.com;branch=z9hG4bK1', 'SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK2;rport', 'SIP/2.0/UDP b;branch=z9hG4bK3, SIP/2.0/UDP c;branch=z9hG4bK4');
  const value = fc.oneof({ weight: 5, arbitrary: one }, { weight: 1, arbitrary: fc.constantFrom('bad via', '') });
  const op = fc.oneof(
    fc.tuple(fc.constant('prepend' as const), value),
    fc.tuple(fc.constant('replace' as const), value),
    fc.tuple(fc.constant('remove' as const), fc.constant('')),
    fc.tuple(fc.constant('read' as const), fc.constant('')),
  );
  fc.assert(
    fc.property(fc.array(one, { minLength: 1, maxLength: 3 }), fc.array(op, { maxLength: 8 }), (vias, ops) => {
      const r = parseAndValidate(base(vias));
      if (!(r instanceof SipMessage)) throw new Error('base message does not parse');
      let m = r;
      for (const [what, v] of ops) {
        if (what === 'prepend') m.prependHeader('via', v);
        else if (what === 'replace') m.replaceFirstValue('v', v);
        else if (what === 'remove') m.removeFirstValue('Via');
        else {
          void m.viaOrNull();
          m = m.clone();
        }
      }
      // A fresh message from the same fields, nothing cached.
      const fresh = new SipMessage(true, 'INVITE', 'sip:bob@example.com', 0, '', 'SIP/2.0', Buffer.alloc(0), 0, [...m.headerFields()], 0, 0);
      const got = m.viaOrNull();
      const want = fresh.viaOrNull();
      assert.deepEqual(got === null ? null : got.map((x) => [x.raw, x.branch, x.host, x.port, [...x.params]]), want === null ? null : want.map((x) => [x.raw, x.branch, x.host, x.port, [...x.params]]));
    }),
    { numRuns: 1500 },
  );
});

// ---------------------------------------------------------------------------
// Responses are written as octets into a scratch Buffer; the bytes must be
// those the string-built head gave (reference below, as it was written).

const COPIED = ['via', 'from', 'to', 'call-id', 'cseq'];
const COPIED_NAMES = ['Via', 'From', 'To', 'Call-ID', 'CSeq'];

function referenceResponse(req: SipMessage, code: number, opts: ResponseOptions): Buffer {
  const oneLine = (v: string): string => v.replace(/[\r\n]/g, ' ');
  let text = 'SIP/2.0 ' + code + ' ' + oneLine(opts.reason ?? reasonPhrase(code)) + '\r\n';
  for (let k = 0; k < COPIED.length; k++) {
    for (const f of req.headerFields()) {
      if (f.key !== COPIED[k]) continue;
      let v = f.value;
      if (COPIED[k] === 'to' && code !== 100) {
        const to = req.toOrNull();
        if (to !== null && to.tag === null) v += ';tag=' + opts.toTag;
      }
      text += COPIED_NAMES[k] + ': ' + v + '\r\n';
    }
  }
  for (const [name, value] of opts.headers ?? []) text += headerDisplayName(headerKey(name)) + ': ' + oneLine(value) + '\r\n';
  const body = opts.body === undefined ? Buffer.alloc(0) : typeof opts.body === 'string' ? Buffer.from(opts.body, 'utf8') : opts.body;
  if (body.length > 0 && opts.contentType) text += 'Content-Type: ' + opts.contentType + '\r\n';
  text += 'Content-Length: ' + body.length + '\r\n\r\n';
  return Buffer.concat([Buffer.from(text, 'latin1'), body]);
}

t.test('responses: the octets of the string-built head, and a message that says the same', async () => {
  const request = fc
    .record({
      vias: fc.array(viaText, { minLength: 1, maxLength: 3 }),
      fold: fc.boolean(),
      toTag: fc.boolean(),
      ws: sws,
      utf8: fc.constantFrom('', 'é', 'Ω'),
    })
    .map((r) =>
      Buffer.from(
        'INVITE sip:bob@example.com SIP/2.0\r\n' +
          r.vias.map((v) => 'Via:' + r.ws + v + r.ws + '\r\n').join('') +
          'From: "A' + Buffer.from(r.utf8, 'utf8').toString('latin1') + '" <sip:a@example.com>;tag=1\r\n' +
          (r.fold ? 'To: <sip:bob@example.com>\r\n  ' + (r.toTag ? ';tag=x' : '') + '\r\n' : 'To:<sip:bob@example.com>' + (r.toTag ? ';tag=x' : '') + r.ws + '\r\n') +
          'Call-ID: c1@h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n',
        'latin1',
      ),
    );
  const options = fc.record(
    {
      reason: fc.constantFrom('Fine', 'Fine\r\nX: 1', 'Ça va ✓'),
      toTag: fc.constantFrom('abc', 'x'.repeat(40)),
      headers: fc.array(fc.tuple(fc.constantFrom('Contact', 'x-Custom-thing', 'subject', 'm'), fc.constantFrom('<sip:p@h>', 'a\r\nb', 'naïve ✓', '')), { maxLength: 3 }),
      body: fc.oneof(fc.constant(undefined), fc.constantFrom('v=0\r\n', 'héllo'), fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a))),
      contentType: fc.constantFrom(undefined, 'application/sdp'),
    },
    { requiredKeys: ['toTag'] },
  );
  fc.assert(
    fc.property(request, fc.constantFrom(100, 180, 200, 486, 603), options, (bytes, code, opts) => {
      const req = parseAndValidate(bytes);
      if (!(req instanceof SipMessage)) throw new Error('generated request does not parse: ' + (req as SipParseError).reason);
      const want = referenceResponse(req, code, opts);
      assert.deepEqual(buildResponseBytes(req, code, opts), want, 'buildResponseBytes');
      const built = buildResponse(req, code, opts);
      assert.deepEqual(built.toBuffer(), want, 'buildResponse serializes to the same octets');
      const parsed = parseAndValidate(want, { transport: 'tcp' });
      if (!(parsed instanceof SipMessage)) throw new Error('reference response does not parse: ' + parsed.reason);
      assert.equal(built.reason, parsed.reason, 'reason');
      assert.equal(built.status, parsed.status, 'status');
      const fields = (m: SipMessage): unknown[] => m.headerFields().map((f) => [f.key, f.name, f.value, f.valueStart, f.lineStart, f.lineEnd]);
      assert.deepEqual(fields(built), fields(parsed), 'fields');
    }),
    { numRuns: 1500 },
  );
});

t.test('removeFirstValue, replaceFirstValue, setHeader and removeHeader: the lines the split-and-join gave', async () => {
  const element = fc.constantFrom('<sip:a@h;lr>', '"x, y" <sip:b@h>', '<sip:c@h;p=1,2>', 'sip:d@h', '<sip:e@h>;q=0.5');
  const line = fc.tuple(fc.array(element, { minLength: 1, maxLength: 3 }), fc.constantFrom(', ', ',', ' ,  ', ',,'), sws).map(([els, sep, ws]) => ws + els.join(sep) + ws);
  const name = fc.constantFrom('Route', 'Contact', 'Subject', 'Record-Route');
  fc.assert(
    fc.property(name, fc.array(line, { minLength: 1, maxLength: 3 }), fc.constantFrom('remove', 'replace', 'set', 'drop'), (hname, lines, op) => {
      const bytes = Buffer.from(
        'INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n' +
          lines.map((l) => hname + ':' + l + '\r\nX-Between: 1\r\n').join('') +
          'From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1@h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n',
        'latin1',
      );
      const m = parseAndValidate(bytes, { transport: 'tcp' });
      if (!(m instanceof SipMessage)) throw new Error('generated request does not parse: ' + (m as SipParseError).reason);
      const key = headerKey(hname);
      const before = m.getAll(hname);
      const split = (v: string): string[] => (LIST_HEADERS.has(key) ? splitList(v) : [v]);
      let want: string[];
      if (op === 'remove') {
        const rest = split(before[0]).slice(1);
        want = rest.length === 0 ? before.slice(1) : [rest.join(', '), ...before.slice(1)];
        assert.equal(m.removeFirstValue(hname), true);
      } else if (op === 'replace') {
        const rest = split(before[0]);
        rest[0] = '<sip:new@h>';
        want = [rest.join(', '), ...before.slice(1)];
        m.replaceFirstValue(hname, '<sip:new@h>');
      } else if (op === 'set') {
        want = ['<sip:set@h>'];
        m.setHeader(hname, '<sip:set@h>');
      } else {
        want = [];
        assert.equal(m.removeHeader(hname), before.length);
      }
      assert.deepEqual(m.getAll(hname), want, op);
      assert.equal(m.count('x-between'), lines.length, 'the other lines stay');
      const again = parseAndValidate(m.toBuffer(), { transport: 'tcp' });
      if (!(again instanceof SipMessage)) throw new Error('changed message does not parse');
      assert.deepEqual(again.getAll(hname), want, op + ', serialized');
      assert.deepEqual(
        again.headerFields().map((f) => f.key),
        m.headerFields().map((f) => f.key),
        'the same lines in the same order',
      );
    }),
    { numRuns: 1500 },
  );
});
