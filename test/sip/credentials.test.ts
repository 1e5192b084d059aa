// The credentials grammar (RFC 3261 §25.1): what parses, what is refused.
import t from 'tap';
import { parseCredentials } from '../../src/sip/index.js';

t.test('digest credentials as clients send them', async (t) => {
  // RFC 3261 §22.4 example, and a Linphone-style SHA-256 answer.
  const c = parseCredentials(
    'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
  );
  t.ok(c);
  t.equal(c!.scheme, 'digest');
  t.equal(c!.params.get('username'), 'bob');
  t.equal(c!.params.get('qop'), 'auth');
  t.equal(c!.params.get('nc'), '00000001');
  t.equal(c!.params.size, 9);
  const l = parseCredentials('DIGEST  realm="x",username="a"  ,  nonce = "n" ,uri="sip:x", response="r",algorithm=SHA-256');
  t.equal(l!.scheme, 'digest', 'scheme lower-cased');
  t.equal(l!.params.get('algorithm'), 'SHA-256');
  t.equal(l!.params.get('nonce'), 'n', 'spaces around = and commas');
  t.equal(parseCredentials('Digest username="a\\"b\\\\c"')!.params.get('username'), 'a"b\\c', 'quoted-pairs unescaped');
  t.equal(parseCredentials('Digest Username="A"')!.params.get('username'), 'A', 'names case-insensitive, values kept');
  t.equal(parseCredentials('Digest')!.params.size, 0);
});

t.test('refused: broken grammar, repeated or too many parameters', async (t) => {
  for (const bad of [
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
    'Digest=x',
    'Digest username=@',
    'Digest ' + Array.from({ length: 40 }, (_, i) => `p${i}=1`).join(', '),
  ]) {
    t.equal(parseCredentials(bad), null, JSON.stringify(bad.slice(0, 40)));
  }
});
