import t from 'tap';
import fc from 'fast-check';
import {
  findContentLength,
  FRAMING_ERROR_BAD_LENGTH,
  FRAMING_ERROR_HEAD_TOO_LARGE,
  FRAMING_ERROR_MESSAGE_TOO_LARGE,
  FRAMING_ERROR_MISSING_LENGTH,
  StreamFramer,
  type FramerLimits,
} from '../../src/sip/framer.js';

interface Recorded {
  frames: string[];
  buffers: Buffer[];
  pings: number;
  errors: string[];
  events: string[];
}

function framer(limits: FramerLimits = { maxMessageSize: 65535 }): { f: StreamFramer; r: Recorded } {
  const r: Recorded = { frames: [], buffers: [], pings: 0, errors: [], events: [] };
  const f = new StreamFramer(
    {
      onFrame(m) {
        r.frames.push(m.toString('latin1'));
        r.buffers.push(m);
        r.events.push('F:' + m.toString('latin1'));
      },
      onPing() {
        r.pings++;
        r.events.push('P');
      },
      onFramingError(reason) {
        r.errors.push(reason);
        r.events.push('E:' + reason);
      },
    },
    limits,
  );
  return { f, r };
}

function msg(body = '', extra = '', lengthHeader = 'Content-Length'): string {
  return (
    'MESSAGE sip:bob@example.com SIP/2.0\r\n' +
    'Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n' +
    'From: <sip:alice@example.com>;tag=1928301774\r\n' +
    'To: <sip:bob@example.com>\r\n' +
    'Call-ID: a84b4c76e66710\r\n' +
    'CSeq: 1 MESSAGE\r\n' +
    extra +
    `${lengthHeader}: ${Buffer.byteLength(body, 'latin1')}\r\n` +
    '\r\n' +
    body
  );
}

const B = (s: string) => Buffer.from(s, 'latin1');

t.test('findContentLength', async (t) => {
  const cl = (head: string) => findContentLength(B(head), 0, B(head).length);
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length: 42\r\n\r\n'), 42);
  t.equal(cl('INVITE sip:a SIP/2.0\r\ncontent-length:7\r\n\r\n'), 7);
  t.equal(cl('INVITE sip:a SIP/2.0\r\nCONTENT-LENGTH \t:  0 \r\n\r\n'), 0);
  t.equal(cl('INVITE sip:a SIP/2.0\r\nl: 5\r\n\r\n'), 5, 'compact form');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nL : 5\r\n\r\n'), 5, 'compact form, upper case, space before colon');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length:\r\n  12\r\n\r\n'), 12, 'folded value');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length: 1\r\n 2\r\n\r\n'), -2, 'digits split by folding');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nVia: x\r\n\r\n'), -1, 'absent');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nLocation: 5\r\nlr: 3\r\nContent-Length-X: 3\r\n\r\n'), -1, 'look-alike names');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length: abc\r\n\r\n'), -2, 'not a number');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n'), -2, 'negative');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length:\r\n\r\n'), -2, 'empty');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length: 4 2\r\n\r\n'), -2, 'two numbers');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n'), -2, 'huge');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length: 3\r\nl: 3\r\n\r\n'), 3, 'repeated, agreeing');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nContent-Length: 3\r\nl: 4\r\n\r\n'), -2, 'repeated, disagreeing');
  t.equal(cl('INVITE sip:a SIP/2.0\r\nSubject: x\r\n Content-Length: 9\r\nl: 2\r\n\r\n'), 2, 'a folded line is not a header');
  t.equal(cl('Content-Length: 3\r\nVia: x\r\n\r\n'), -1, 'the start line is not a header');
  // Offsets inside a larger buffer.
  const two = B('junk' + 'X sip:a SIP/2.0\r\nl: 1\r\n\r\n' + 'Y');
  t.equal(findContentLength(two, 4, two.length - 1), 1);
});

t.test('one message in one chunk is a subarray of the chunk', async (t) => {
  const { f, r } = framer();
  const chunk = B(msg('hello'));
  f.push(chunk);
  t.same(r.frames, [msg('hello')]);
  chunk[0] = 0x58;
  t.equal(r.buffers[0][0], 0x58, 'shares memory with the chunk');
  t.equal(f.buffered, 0);
});

t.test('several messages in one chunk, with CRLFs between', async (t) => {
  const { f, r } = framer();
  const a = msg('a');
  const b = msg('');
  const c = msg('ccc', '', 'l');
  f.push(B(a + '\r\n' + b + '\r\n' + c));
  t.same(r.frames, [a, b, c]);
  t.equal(r.pings, 0, 'lone CRLFs are skipped, not pings');
  t.same(r.errors, []);
});

t.test('byte by byte', async (t) => {
  const { f, r } = framer();
  const a = msg('first body');
  const b = msg('', 'Subject: folded\r\n  subject\r\n');
  const all = B('\r\n' + a + b + '\r\n\r\n' + a);
  for (let i = 0; i < all.length; i++) {
    f.push(all.subarray(i, i + 1));
    if (i === 10) t.equal(f.buffered, 9, 'head bytes are held');
  }
  t.same(r.frames, [a, b, a]);
  t.equal(r.pings, 1);
  t.equal(f.buffered, 0);
  all.fill(0);
  t.equal(r.buffers[0].toString('latin1'), a, 'a spanning message is a copy');
});

t.test('body split across chunks', async (t) => {
  const { f, r } = framer();
  const body = 'v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n';
  const m = msg(body);
  const cut = m.indexOf('v=0') + 5;
  f.push(B(m.slice(0, cut)));
  t.same(r.frames, []);
  t.equal(f.buffered, cut);
  f.push(B(m.slice(cut, cut + 3)));
  t.same(r.frames, []);
  f.push(B(m.slice(cut + 3) + msg('next')));
  t.same(r.frames, [m, msg('next')]);
});

t.test('head terminator split at every position', async (t) => {
  const m = msg('xy');
  const t0 = m.indexOf('\r\n\r\n');
  for (let cut = t0 - 1; cut <= t0 + 5; cut++) {
    const { f, r } = framer();
    f.push(B(m.slice(0, cut)));
    f.push(B(m.slice(cut)));
    t.same(r.frames, [m], `cut at ${cut}`);
  }
});

t.test('missing Content-Length is an error and input is then ignored', async (t) => {
  const { f, r } = framer();
  const ok = msg('1');
  f.push(B(ok + 'OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n' + ok));
  t.same(r.frames, [ok]);
  t.same(r.errors, [FRAMING_ERROR_MISSING_LENGTH]);
  f.push(B(ok));
  t.same(r.frames, [ok], 'nothing after the error');
  t.ok(f.failed);
});

t.test('invalid Content-Length is an error', async (t) => {
  const { f, r } = framer();
  f.push(B('OPTIONS sip:a SIP/2.0\r\nContent-Length: twelve\r\n\r\n'));
  t.same(r.errors, [FRAMING_ERROR_BAD_LENGTH]);
});

t.test('compact l: with odd case and spacing', async (t) => {
  const { f, r } = framer();
  const m = 'OPTIONS sip:a SIP/2.0\r\nL \t:\t3\r\n\r\nabc';
  f.push(B(m + m));
  t.same(r.frames, [m, m]);
});

t.test('pings', async (t) => {
  const { f, r } = framer();
  f.push(B('\r\n\r\n'));
  t.equal(r.pings, 1);
  f.push(B('\r\n\r\n\r\n\r\n'));
  t.equal(r.pings, 3, 'one per CRLFCRLF');
  f.push(B('\r\n'));
  t.equal(r.pings, 3, 'half a ping');
  f.push(B('\r\n'));
  t.equal(r.pings, 4, 'completed across chunks');
  f.push(B('\r\n' + msg('') + '\r\n\r\n'));
  t.equal(r.pings, 5, 'ping after a message');
  t.same(r.events.slice(-2), ['F:' + msg(''), 'P']);
  t.equal(f.buffered, 0);
});

t.test('head over the limit', async (t) => {
  const { f, r } = framer({ maxMessageSize: 65535, maxHeaderSize: 100 });
  f.push(B('OPTIONS sip:a SIP/2.0\r\nX: ' + 'a'.repeat(200)));
  t.same(r.errors, [FRAMING_ERROR_HEAD_TOO_LARGE], 'no terminator within the limit');
  const b = framer({ maxMessageSize: 65535, maxHeaderSize: 100 });
  const big = 'OPTIONS sip:a SIP/2.0\r\nX: ' + 'a'.repeat(80) + '\r\nl: 0\r\n\r\n';
  for (const ch of big) b.f.push(B(ch));
  t.same(b.r.errors, [FRAMING_ERROR_HEAD_TOO_LARGE], 'trickled in');
  const c = framer({ maxMessageSize: 65535, maxHeaderSize: 100 });
  c.f.push(B(big));
  t.same(c.r.errors, [FRAMING_ERROR_HEAD_TOO_LARGE], 'terminated, but too long');
  const d = framer({ maxMessageSize: 65535, maxHeaderSize: 100 });
  d.f.push(B(big.slice(0, 50)));
  d.f.push(B(big.slice(50)));
  t.same(d.r.errors, [FRAMING_ERROR_HEAD_TOO_LARGE], 'terminated in a second chunk, too long');
});

t.test('message over the limit', async (t) => {
  const m = msg('x'.repeat(100));
  const { f, r } = framer({ maxMessageSize: m.length - 1 });
  f.push(B(m));
  t.same(r.errors, [FRAMING_ERROR_MESSAGE_TOO_LARGE]);
  const ok = framer({ maxMessageSize: m.length });
  ok.f.push(B(m));
  t.same(ok.r.frames, [m], 'exactly at the limit');
});

t.test('a sink may close the framer from a callback', async (t) => {
  const frames: string[] = [];
  const f: StreamFramer = new StreamFramer(
    {
      onFrame(m) {
        frames.push(m.toString());
        f.close();
      },
      onPing() {},
      onFramingError() {},
    },
    { maxMessageSize: 65535 },
  );
  f.push(B(msg('a') + msg('b')));
  t.same(frames, [msg('a')]);
});

// Messages as the property below builds them: random bodies (CRLFs
// included), random header case for Content-Length, compact form, folding.
const messageArb = fc
  .record({
    body: fc.string({ unit: fc.constantFrom('a', 'b', '\r', '\n', ' ', 'é', '\u0000'), maxLength: 40 }),
    name: fc.constantFrom('Content-Length', 'content-length', 'CONTENT-LENGTH', 'l', 'L'),
    folded: fc.boolean(),
    method: fc.constantFrom('INVITE', 'OPTIONS', 'SIP/2.0 200 OK'),
  })
  .map(({ body, name, folded, method }) => {
    const len = Buffer.byteLength(body, 'latin1');
    const start = method.startsWith('SIP/') ? method : `${method} sip:x@example.com SIP/2.0`;
    const value = folded ? `\r\n ${len}` : ` ${len}`;
    return `${start}\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n${name}:${value}\r\nCSeq: 1 X\r\n\r\n${body}`;
  });

const streamArb = fc.array(
  fc.oneof(
    { weight: 4, arbitrary: messageArb.map((m) => ({ kind: 'msg' as const, text: m })) },
    { weight: 1, arbitrary: fc.constant({ kind: 'crlf' as const, text: '\r\n' }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'ping' as const, text: '\r\n\r\n' }) },
  ),
  { maxLength: 8 },
);

t.test('property: any split of a valid stream yields the same frames', async (t) => {
  fc.assert(
    fc.property(streamArb, fc.array(fc.nat(), { maxLength: 12 }), (parts, cutsRaw) => {
      // Between messages, CRLF pairs pair up into pings: a run of k pairs is floor(k/2) pings.
      let text = '';
      const expectedFrames: string[] = [];
      let expectedPings = 0;
      let pairs = 0;
      for (const p of parts) {
        text += p.text;
        if (p.kind === 'msg') {
          expectedPings += Math.floor(pairs / 2);
          pairs = 0;
          expectedFrames.push(p.text);
        } else {
          pairs += p.kind === 'ping' ? 2 : 1;
        }
      }
      expectedPings += Math.floor(pairs / 2);
      const all = B(text);
      const whole = framer();
      whole.f.push(all);
      const cuts = [...new Set(cutsRaw.map((c) => (all.length ? c % (all.length + 1) : 0)))].sort((a, b) => a - b);
      const split = framer();
      let prev = 0;
      for (const c of [...cuts, all.length]) {
        split.f.push(all.subarray(prev, c));
        prev = c;
      }
      const ok =
        JSON.stringify(whole.r.events) === JSON.stringify(split.r.events) &&
        JSON.stringify(whole.r.frames) === JSON.stringify(expectedFrames) &&
        whole.r.pings === expectedPings &&
        whole.r.errors.length === 0 &&
        split.f.buffered === 0;
      return ok;
    }),
    { numRuns: 500 },
  );
  t.pass('property holds');
});

t.test('property: byte by byte equals whole, errors included', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(messageArb, fc.constantFrom('\r\n', '\r\n\r\n', 'X sip:a SIP/2.0\r\n\r\n', 'l: x\r\n\r\n', '\r')), {
        maxLength: 6,
      }),
      (parts) => {
        const all = B(parts.join(''));
        const whole = framer({ maxMessageSize: 200, maxHeaderSize: 150 });
        whole.f.push(all);
        const bytes = framer({ maxMessageSize: 200, maxHeaderSize: 150 });
        for (let i = 0; i < all.length; i++) bytes.f.push(all.subarray(i, i + 1));
        return JSON.stringify(whole.r.events) === JSON.stringify(bytes.r.events);
      },
    ),
    { numRuns: 300 },
  );
  t.pass('property holds');
});
