// The request path of digest checking: credentials read in place into a
// DigestCredentials (the same answers as parseCredentials), the nonce-count
// table's bound (least recently used first), the response compared in any
// case, and the nonce MAC when the address changes from one nonce to the next.
import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { DigestAuthenticator, type DigestAlgorithm } from '../../src/auth/digest.js';
import { DigestCredentials, parseDigestCredentials } from '../../src/sip/credentials.js';
import { parseCredentials } from '../../src/sip/index.js';

const REALM = 'example.test';
const H = (alg: DigestAlgorithm, s: string) => createHash(alg === 'MD5' ? 'md5' : 'sha256').update(s, 'utf8').digest('hex');
const HA1 = { md5: H('MD5', `alice:${REALM}:pw`), sha256: H('SHA-256', `alice:${REALM}:pw`) };
const FIELDS = ['username', 'realm', 'nonce', 'uri', 'response', 'algorithm', 'qop', 'cnonce', 'nc'] as const;

/** parseDigestCredentials of `value` read in place from inside a longer text, compared with parseCredentials. */
function agree(t: Test, value: string, name: string): void {
  const text = 'Authorization: ' + value + '\r\nContent-Length: 0\r\n';
  const d = parseDigestCredentials(text, 15, 15 + value.length);
  const m = parseCredentials(value);
  if (m === null || d === null) {
    t.equal(d, null, `${name}: null for null`);
    t.equal(m, null, `${name}: null for null`);
    return;
  }
  t.equal(d.scheme, m.scheme, `${name}: scheme`);
  t.equal(d.count, m.params.size, `${name}: parameter count`);
  for (const f of FIELDS) t.equal(d[f], m.params.get(f), `${name}: ${f}`);
}

t.test('parseDigestCredentials reads what parseCredentials reads, in place', async (t) => {
  const cases = [
    'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    'DIGEST  realm="x",username="a"  ,  nonce = "n" ,uri="sip:x", response="r",algorithm=SHA-256',
    'Digest username="a\\"b\\\\c", realm="r"',
    'Digest Username="A", REALM="x", NC=00000002, QoP=auth, CNonce="y"',
    'Digest',
    'Basic realm="example.test", user="alice"',
    '',
    '   ',
    '"Digest"',
    'Digest username',
    'Digest username=',
    'Digest username="unterminated',
    'Digest username="a" realm="b"',
    'Digest username="a",',
    'Digest username="a",,realm="b"',
    'Digest username="a", username="b"',
    'Digest USERNAME="a", username="b"',
    'Digest opaque="a", opaque="b"',
    'Digest opaque="a", userhash=false, other=1, other=2',
    'Digest x=1, y=2, z=3',
    'Digest=x',
    'Digest username=@',
    'Digest username="line\r\nbreak"',
    'Digest username="a\\\r\n"',
    'Digest ' + Array.from({ length: 32 }, (_, i) => `p${i}=1`).join(', '),
    'Digest ' + Array.from({ length: 33 }, (_, i) => `p${i}=1`).join(', '),
    'Digest username="x", ' + Array.from({ length: 31 }, (_, i) => `p${i}=1`).join(', '),
  ];
  for (const c of cases) agree(t, c, JSON.stringify(c.slice(0, 50)));
});

t.test('parseDigestCredentials agrees with parseCredentials on generated values', async (t) => {
  const name = fc.constantFrom('username', 'Username', 'REALM', 'realm', 'nonce', 'uri', 'response', 'algorithm', 'qop', 'cnonce', 'nc', 'NC', 'opaque', 'userhash', 'x-other', 'n');
  const quoted = fc.array(fc.constantFrom('a', 'Z', '9', ' ', ',', '=', '\\"', '\\\\', '"', '\\', '\r\n', 'é'), { maxLength: 6 }).map((p) => '"' + p.join('') + '"');
  const token = fc.constantFrom('auth', 'SHA-256', 'MD5', '00000001', 'x', '', '@');
  const param = fc.tuple(name, fc.constantFrom('=', ' = ', '=', ''), fc.oneof(quoted, token)).map(([n, eq, v]) => n + eq + v);
  const value = fc.tuple(fc.constantFrom('Digest ', 'digest  ', 'Basic ', 'Digest', ''), fc.array(param, { maxLength: 12 }), fc.constantFrom(', ', ',', ' , ', ' ')).map(([s, ps, sep]) => s + ps.join(sep));
  let n = 0;
  fc.assert(
    fc.property(value, (v) => {
      const text = 'X: ' + v + '\r\n';
      const d = parseDigestCredentials(text, 3, 3 + v.length);
      const m = parseCredentials(v);
      n++;
      if (m === null || d === null) return m === null && d === null;
      return d.scheme === m.scheme && d.count === m.params.size && FIELDS.every((f) => d[f] === m.params.get(f));
    }),
    { numRuns: 5000 },
  );
  t.equal(n, 5000);
});

function setup(max?: number) {
  let now = 1_700_000_000_000;
  const d = new DigestAuthenticator({ realm: REALM, algorithms: ['SHA-256', 'MD5'], nonceLifetimeMs: 300_000, maxTrackedNonces: max, clock: () => now });
  return { d, advance: (ms: number) => (now += ms) };
}

function answer(nonce: string, o: { nc?: number; alg?: DigestAlgorithm; upper?: boolean; pw?: string } = {}): string {
  const alg = o.alg ?? 'SHA-256';
  const nc = (o.nc ?? 1).toString(16).padStart(8, '0');
  const a1 = H(alg, `alice:${REALM}:${o.pw ?? 'pw'}`);
  const response = H(alg, `${a1}:${nonce}:${nc}:c1:auth:${H(alg, `REGISTER:sip:${REALM}`)}`);
  return `Digest username="alice", realm="${REALM}", nonce="${nonce}", uri="sip:${REALM}", response="${o.upper ? response.toUpperCase() : response}", algorithm=${alg}, cnonce="c1", qop=auth, nc=${nc}`;
}

t.test('check() takes a DigestCredentials and a Credentials alike', async (t) => {
  const { d } = setup();
  for (const alg of ['SHA-256', 'MD5'] as const) {
    const nonce = d.makeNonce();
    const text = answer(nonce, { alg });
    t.same(d.check('REGISTER', parseDigestCredentials(text)!, HA1), { kind: 'ok', username: 'alice', algorithm: alg });
    t.same(d.check('REGISTER', parseCredentials(text)!, HA1), { kind: 'unverifiable', why: 'replay' }, 'the same nonce-count through the Map form: a replay');
    t.same(d.check('REGISTER', DigestCredentials.of(parseCredentials(answer(nonce, { alg, nc: 2 }))!), HA1).kind, 'ok');
    t.same(d.check('REGISTER', parseDigestCredentials(answer(nonce, { alg, nc: 3, upper: true }))!, HA1).kind, 'ok', 'upper-case hex');
    t.same(d.check('REGISTER', parseDigestCredentials(answer(nonce, { alg, nc: 4, pw: 'guess' }))!, HA1), { kind: 'wrong', username: 'alice', unknownUser: false });
  }
  // A response of the wrong length, or hex of the other algorithm, is wrong (not an error).
  const nonce = d.makeNonce();
  const c = parseDigestCredentials(answer(nonce))!;
  c.response = c.response!.slice(0, 32);
  t.equal(d.check('REGISTER', c, HA1).kind, 'wrong');
  c.response = '';
  t.equal(d.check('REGISTER', c, HA1).kind, 'wrong');
  c.response = 'g'.repeat(64);
  t.equal(d.check('REGISTER', c, HA1).kind, 'wrong', 'not hex');
});

t.test('the nonce-count table drops the least recently used nonce first, and keeps refusing replays of the rest', async (t) => {
  const { d, advance } = setup(3);
  const [a, b, c, e] = [d.makeNonce(), d.makeNonce(), d.makeNonce(), d.makeNonce()];
  for (const n of [a, b, c]) t.equal(d.check('REGISTER', parseDigestCredentials(answer(n))!, HA1).kind, 'ok');
  // a is used again: b is now the least recently used.
  t.equal(d.check('REGISTER', parseDigestCredentials(answer(a, { nc: 2 }))!, HA1).kind, 'ok');
  t.equal(d.check('REGISTER', parseDigestCredentials(answer(e))!, HA1).kind, 'ok', 'a fourth nonce: one goes');
  t.equal(d.check('REGISTER', parseDigestCredentials(answer(a, { nc: 2 }))!, HA1).kind, 'unverifiable', 'a was kept');
  t.equal(d.check('REGISTER', parseDigestCredentials(answer(c))!, HA1).kind, 'unverifiable', 'c was kept');
  t.equal(d.check('REGISTER', parseDigestCredentials(answer(e))!, HA1).kind, 'unverifiable', 'e was kept');
  t.equal(d.check('REGISTER', parseDigestCredentials(answer(b))!, HA1).kind, 'stale', 'b, the least recently used, was evicted: stale, never accepted again');
  // Many more nonces than the table holds, one a millisecond: the newest always counts.
  for (let i = 0; i < 50; i++) {
    advance(1);
    const n = d.makeNonce();
    t.equal(d.check('REGISTER', parseDigestCredentials(answer(n))!, HA1).kind, 'ok');
    t.equal(d.check('REGISTER', parseDigestCredentials(answer(n))!, HA1).kind, 'unverifiable');
  }
  t.throws(() => setup(0), RangeError);
});

t.test('nonce MACs stay right when the address changes back and forth', async (t) => {
  const secret = Buffer.alloc(32, 3);
  const d = new DigestAuthenticator({ realm: REALM, algorithms: ['SHA-256'], nonceLifetimeMs: 300_000, secret });
  const addresses = ['192.0.2.1', '192.0.2.1', '198.51.100.200', '', '2001:db8::1', '192.0.2.1', 'x'.repeat(100), '192.0.2.1', ''];
  for (const address of addresses) {
    const nonce = d.makeNonce(undefined, address);
    const raw = Buffer.from(nonce, 'base64url');
    const mac = createHmac('sha256', secret).update(raw.subarray(0, 16)).update(REALM + '\n' + address).digest().subarray(0, 16);
    t.same(raw.subarray(16), mac, `made for ${JSON.stringify(address.slice(0, 20))}`);
    t.ok(d.nonceAge(nonce, address) >= 0, 'verifies for its address');
    for (const other of addresses) if (other !== address) t.equal(d.nonceAge(nonce, other), -1, `not for ${JSON.stringify(other.slice(0, 20))}`);
  }
});
