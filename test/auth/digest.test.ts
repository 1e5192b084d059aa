// Digest checking in isolation (RFC 3261 §22.4, RFC 7616 §3.4, RFC 8760):
// responses computed here from the RFC formulas, a clock moved by hand.
import { createHash, createHmac } from 'node:crypto';
import t from 'tap';
import { DigestAuthenticator, type DigestAlgorithm } from '../../src/auth/digest.js';
import { parseCredentials, type Credentials } from '../../src/sip/index.js';

const REALM = 'example.test';
const H = (alg: DigestAlgorithm, s: string) => createHash(alg === 'MD5' ? 'md5' : 'sha256').update(s, 'utf8').digest('hex');
const ha1 = (alg: DigestAlgorithm, user: string, pw: string) => H(alg, `${user}:${REALM}:${pw}`);
const ACCOUNTS: Record<string, string> = { alice: 'correct horse battery' };
const lookup = (user: string, alg: DigestAlgorithm) => (ACCOUNTS[user] === undefined ? undefined : ha1(alg, user, ACCOUNTS[user]));

function setup(o: { algorithms?: DigestAlgorithm[]; lifetime?: number; max?: number } = {}) {
  let now = 1_700_000_000_000;
  const d = new DigestAuthenticator({ realm: REALM, algorithms: o.algorithms ?? ['SHA-256', 'MD5'], nonceLifetimeMs: o.lifetime ?? 300_000, maxTrackedNonces: o.max, clock: () => now });
  return { d, advance: (ms: number) => (now += ms) };
}

function nonceOf(challenge: string): string {
  return /nonce="([^"]+)"/.exec(challenge)![1];
}

function creds(o: { user?: string; pw?: string; alg?: DigestAlgorithm; nonce: string; nc?: number; qop?: boolean; method?: string; uri?: string; realm?: string; extra?: string }): Credentials {
  const alg = o.alg ?? 'SHA-256';
  const user = o.user ?? 'alice';
  const uri = o.uri ?? 'sip:example.test';
  const a1 = ha1(alg, user, o.pw ?? ACCOUNTS.alice);
  const a2 = H(alg, `${o.method ?? 'REGISTER'}:${uri}`);
  const nc = (o.nc ?? 1).toString(16).padStart(8, '0');
  const response = o.qop === false ? H(alg, `${a1}:${o.nonce}:${a2}`) : H(alg, `${a1}:${o.nonce}:${nc}:0a4f113b:auth:${a2}`);
  const qop = o.qop === false ? '' : `, qop=auth, nc=${nc}, cnonce="0a4f113b"`;
  const text = `Digest username="${user}", realm="${o.realm ?? REALM}", nonce="${o.nonce}", uri="${uri}", response="${response}", algorithm=${alg}${qop}${o.extra ?? ''}`;
  const c = parseCredentials(text);
  if (c === null) throw new Error('test built bad credentials: ' + text);
  return c;
}

t.test('challenges: one per algorithm, in order, sharing one nonce; stale only when asked', async (t) => {
  const { d } = setup();
  const c = d.challenge(false);
  t.equal(c.length, 2);
  t.match(c[0], /^Digest realm="example.test", nonce="[A-Za-z0-9_-]{43}", algorithm=SHA-256, qop="auth"$/);
  t.match(c[1], /algorithm=MD5/);
  t.equal(nonceOf(c[0]), nonceOf(c[1]));
  t.match(d.challenge(true)[0], /, stale=true$/);
  t.not(nonceOf(d.challenge(false)[0]), nonceOf(c[0]), 'a fresh nonce each time');
  t.same(setup({ algorithms: ['MD5'] }).d.challenge(false).length, 1);
  const md5First = setup({ algorithms: ['MD5', 'SHA-256'] }).d.challenge(false);
  t.match(md5First[0], /algorithm=MD5/, 'the configured order: MD5 first');
  t.match(md5First[1], /algorithm=SHA-256/);
});

t.test('right answers pass for both algorithms, with and without qop', async (t) => {
  const { d } = setup();
  for (const alg of ['SHA-256', 'MD5'] as const) {
    const nonce = d.makeNonce();
    t.same(d.check('REGISTER', creds({ alg, nonce }), lookup), { kind: 'ok', username: 'alice', algorithm: alg }, alg);
    t.same(d.check('INVITE', creds({ alg, nonce, method: 'INVITE', uri: 'sip:bob@example.test', nc: 2 }), lookup).kind, 'ok', `${alg}: next nc on the same nonce`);
    const n2 = d.makeNonce();
    t.equal(d.check('REGISTER', creds({ alg, nonce: n2, qop: false }), lookup).kind, 'ok', `${alg} without qop (RFC 2069 clients)`);
    t.same(d.check('REGISTER', creds({ alg, nonce: n2, qop: false }), lookup), { kind: 'unverifiable', why: 'replay' }, 'without qop a nonce serves once');
  }
  // Upper-case hex in the response is the same number.
  const nonce = d.makeNonce();
  const c = creds({ nonce });
  c.params.set('response', c.params.get('response')!.toUpperCase());
  t.equal(d.check('REGISTER', c, lookup).kind, 'ok');
});

t.test('wrong password and unknown user: both "wrong", told apart only internally', async (t) => {
  const { d } = setup();
  t.same(d.check('REGISTER', creds({ nonce: d.makeNonce(), pw: 'guess' }), lookup), { kind: 'wrong', username: 'alice', unknownUser: false });
  t.same(d.check('REGISTER', creds({ nonce: d.makeNonce(), user: 'mallory' }), lookup), { kind: 'wrong', username: 'mallory', unknownUser: true });
  // The method is part of the hash: REGISTER credentials do not serve an INVITE.
  const nonce = d.makeNonce();
  t.equal(d.check('INVITE', creds({ nonce }), lookup).kind, 'wrong');
});

t.test('replays: a nonce-count must grow', async (t) => {
  const { d } = setup();
  const nonce = d.makeNonce();
  t.equal(d.check('REGISTER', creds({ nonce, nc: 1 }), lookup).kind, 'ok');
  t.same(d.check('REGISTER', creds({ nonce, nc: 1 }), lookup), { kind: 'unverifiable', why: 'replay' });
  t.equal(d.check('REGISTER', creds({ nonce, nc: 5 }), lookup).kind, 'ok', 'counts may skip');
  t.same(d.check('REGISTER', creds({ nonce, nc: 3 }), lookup).kind, 'unverifiable', 'but never go back');
  // A wrong answer is not remembered: it cannot burn the count of the real client.
  const n2 = d.makeNonce();
  t.equal(d.check('REGISTER', creds({ nonce: n2, nc: 9, pw: 'x' }), lookup).kind, 'wrong');
  t.equal(d.check('REGISTER', creds({ nonce: n2, nc: 1 }), lookup).kind, 'ok');
});

t.test('nonces: expiry gives stale only with a right answer; forged and foreign nonces are unverifiable', async (t) => {
  const { d, advance } = setup({ lifetime: 1000 });
  const nonce = d.makeNonce();
  advance(1001);
  t.same(d.check('REGISTER', creds({ nonce }), lookup), { kind: 'stale' });
  t.equal(d.check('REGISTER', creds({ nonce, pw: 'guess' }), lookup).kind, 'wrong', 'no stale=true for a wrong answer (RFC 7616 §3.3)');
  const forged = Buffer.from(nonce, 'base64url');
  forged[20] ^= 1;
  t.same(d.check('REGISTER', creds({ nonce: forged.toString('base64url') }), lookup), { kind: 'unverifiable', why: 'bad-nonce' });
  const other = setup().d; // another process: another secret
  t.same(other.check('REGISTER', creds({ nonce: d.makeNonce() }), lookup), { kind: 'unverifiable', why: 'bad-nonce' });
  for (const bad of ['', 'short', 'x'.repeat(43), '!'.repeat(43)]) {
    t.equal(d.check('REGISTER', creds({ nonce: bad }), lookup).kind, 'unverifiable', `nonce ${JSON.stringify(bad)}`);
  }
  // Bound to the address it was sent to: another host cannot use it.
  const forAlice = d.makeNonce(undefined, '192.0.2.10');
  t.equal(d.check('REGISTER', creds({ nonce: forAlice }), lookup, '192.0.2.10').kind, 'ok', 'from the address it was made for');
  t.same(d.check('REGISTER', creds({ nonce: forAlice, pw: 'guess' }), lookup, '198.51.100.66'), { kind: 'unverifiable', why: 'bad-nonce' }, 'from elsewhere: no guess is checked');
  // A nonce from the future (clock stepped back) is not trusted either.
  const future = d.makeNonce(Date.now() + 1e12);
  t.equal(d.nonceAge(future), -1);
});

t.test('malformed and foreign credentials', async (t) => {
  const { d } = setup({ algorithms: ['SHA-256'] });
  const nonce = d.makeNonce();
  t.same(d.check('REGISTER', creds({ nonce, realm: 'other.test' }), lookup), { kind: 'other-realm' });
  t.equal(d.check('REGISTER', creds({ nonce, alg: 'MD5' }), lookup).kind, 'malformed', 'an algorithm not offered');
  t.equal(parseCredentials('Basic YWxpY2U6cGFzcw=='), null, 'token68 is no SIP credentials');
  const basic = parseCredentials('Basic realm="example.test", user="alice"');
  t.ok(basic);
  t.equal(d.check('REGISTER', basic!, lookup).kind, 'malformed');
  const noRealm = parseCredentials('Digest username="alice", nonce="x", uri="sip:a", response="0"')!;
  t.same(d.check('REGISTER', noRealm, lookup), { kind: 'malformed', why: 'no realm' });
  const noResponse = parseCredentials(`Digest username="alice", realm="${REALM}", nonce="${nonce}", uri="sip:a"`)!;
  t.equal(d.check('REGISTER', noResponse, lookup).kind, 'malformed');
  for (const extra of [', qop=auth-int', ', qop=auth']) {
    const c = creds({ nonce, qop: false, extra });
    t.equal(d.check('REGISTER', c, lookup).kind, 'malformed', `qop without its parts: ${extra}`);
  }
  const zero = creds({ nonce, nc: 0 });
  t.equal(d.check('REGISTER', zero, lookup).kind, 'malformed', 'nc starts at 1');
});

t.test('a full nonce-count table keeps authenticating, and still refuses a replay of a nonce it holds', async (t) => {
  const { d, advance } = setup({ max: 10 });
  // A nonce a millisecond: one issued in the same millisecond as an evicted one counts as possibly used (next test).
  for (let i = 0; i < 50; i++) {
    advance(1);
    t.equal(d.check('REGISTER', creds({ nonce: d.makeNonce() }), lookup).kind, 'ok');
  }
  advance(1);
  const last = d.makeNonce();
  t.equal(d.check('REGISTER', creds({ nonce: last }), lookup).kind, 'ok', '51 nonces with a table of 10');
  t.same(d.check('REGISTER', creds({ nonce: last }), lookup), { kind: 'unverifiable', why: 'replay' }, 'the newest entry is kept');
});

t.test('a nonce whose count was evicted from the full table is stale, never accepted again (no replay after eviction)', async (t) => {
  const { d, advance } = setup({ max: 10 });
  const first = d.makeNonce();
  const captured = creds({ nonce: first });
  t.equal(d.check('REGISTER', captured, lookup).kind, 'ok');
  t.same(d.check('REGISTER', captured, lookup), { kind: 'unverifiable', why: 'replay' }, 'held: a replay');
  for (let i = 0; i < 10; i++) {
    advance(1);
    t.equal(d.check('REGISTER', creds({ nonce: d.makeNonce() }), lookup).kind, 'ok');
  }
  t.same(d.check('REGISTER', captured, lookup), { kind: 'stale' }, 'evicted: stale, not ok');
  const unused = d.makeNonce(1_700_000_000_000 - 5_000);
  t.same(d.check('REGISTER', creds({ nonce: unused }), lookup), { kind: 'stale' }, 'an older nonce never seen is stale too (it may have been used and evicted)');
  advance(1);
  t.equal(d.check('REGISTER', creds({ nonce: d.makeNonce() }), lookup).kind, 'ok', 'a fresh nonce works');
});

t.test('nonce MACs are the HMAC-SHA256 createHmac gives: nonces stay valid across versions and cluster nodes', async (t) => {
  const secret = Buffer.alloc(32, 7);
  const now = 1_700_000_000_000;
  const d = new DigestAuthenticator({ realm: REALM, algorithms: ['SHA-256'], nonceLifetimeMs: 300_000, clock: () => now, secret });
  // A 100-character address takes the long way (no room in the scratch buffer): same MAC.
  for (const address of ['', '192.0.2.10', '2001:db8::1', 'fe80::1%eth0', 'x'.repeat(100)]) {
    const raw = Buffer.from(d.makeNonce(now, address), 'base64url');
    const mac = createHmac('sha256', secret).update(raw.subarray(0, 16)).update(REALM).update('\n').update(address).digest();
    t.same(raw.subarray(16), mac.subarray(0, 16), `address ${JSON.stringify(address.slice(0, 20))}`);
    t.equal(d.nonceAge(raw.toString('base64url'), address), 0);
  }
  // A key longer than a SHA-256 block is hashed first (RFC 2104 §2).
  const long = Buffer.alloc(100, 9);
  const dl = new DigestAuthenticator({ realm: REALM, algorithms: ['SHA-256'], nonceLifetimeMs: 300_000, clock: () => now, secret: long });
  const raw = Buffer.from(dl.makeNonce(now, '192.0.2.10'), 'base64url');
  t.same(raw.subarray(16), createHmac('sha256', long).update(raw.subarray(0, 16)).update(REALM + '\n192.0.2.10').digest().subarray(0, 16));
});

t.test('nonces drawn past one pool of random bytes are all different and all verify', async (t) => {
  const { d } = setup();
  const seen = new Set<string>();
  for (let i = 0; i < 1200; i++) seen.add(d.makeNonce());
  t.equal(seen.size, 1200);
  let bad = 0;
  for (const n of seen) if (d.nonceAge(n) !== 0) bad++;
  t.equal(bad, 0);
});

t.test('the account digests may be given instead of a lookup; null is an unknown user', async (t) => {
  const { d } = setup();
  const digests = { md5: ha1('MD5', 'alice', ACCOUNTS.alice), sha256: ha1('SHA-256', 'alice', ACCOUNTS.alice) };
  t.same(d.check('REGISTER', creds({ nonce: d.makeNonce() }), digests), { kind: 'ok', username: 'alice', algorithm: 'SHA-256' });
  t.same(d.check('REGISTER', creds({ nonce: d.makeNonce(), alg: 'MD5' }), digests), { kind: 'ok', username: 'alice', algorithm: 'MD5' });
  t.same(d.check('REGISTER', creds({ nonce: d.makeNonce(), pw: 'guess' }), digests), { kind: 'wrong', username: 'alice', unknownUser: false });
  t.same(d.check('REGISTER', creds({ nonce: d.makeNonce() }), null), { kind: 'wrong', username: 'alice', unknownUser: true });
});

t.test('H(method:uri) is worked out for each request: another uri or method is never taken for the last one', async (t) => {
  const { d } = setup();
  t.equal(d.check('REGISTER', creds({ nonce: d.makeNonce(), uri: 'sip:example.test' }), lookup).kind, 'ok');
  t.equal(d.check('REGISTER', creds({ nonce: d.makeNonce(), uri: 'sip:other.test' }), lookup).kind, 'ok');
  t.equal(d.check('INVITE', creds({ nonce: d.makeNonce(), uri: 'sip:other.test', method: 'INVITE' }), lookup).kind, 'ok');
  // Answered for INVITE, presented with a REGISTER: wrong.
  t.equal(d.check('REGISTER', creds({ nonce: d.makeNonce(), uri: 'sip:other.test', method: 'INVITE' }), lookup).kind, 'wrong');
  t.equal(d.check('REGISTER', creds({ nonce: d.makeNonce(), uri: 'sip:other.test', alg: 'MD5' }), lookup).kind, 'ok', 'same input, other algorithm');
  // Non-ASCII octets (latin1, as the parser decodes them) hash as those octets.
  const uri = 'sip:caf\u00e9@example.test';
  t.equal(d.check('REGISTER', creds({ nonce: d.makeNonce(), uri }), lookup).kind, 'wrong', 'the test hashes UTF-8, Portier the octets');
  const nonce = d.makeNonce();
  const a1 = ha1('SHA-256', 'alice', ACCOUNTS.alice);
  const a2 = createHash('sha256').update(`REGISTER:${uri}`, 'latin1').digest('hex');
  const response = createHash('sha256').update(`${a1}:${nonce}:00000001:0a4f113b:auth:${a2}`, 'latin1').digest('hex');
  const c = parseCredentials(`Digest username="alice", realm="${REALM}", nonce="${nonce}", uri="${uri}", response="${response}", algorithm=SHA-256, qop=auth, nc=00000001, cnonce="0a4f113b"`)!;
  t.equal(d.check('REGISTER', c, lookup).kind, 'ok', 'latin1 octets');
});
