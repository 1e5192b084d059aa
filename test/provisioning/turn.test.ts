// TURN REST API credentials (coturn use-auth-secret) and ICE server URLs.
// That coturn accepts them is test/provisioning/coturn.test.ts.

import { createHmac } from 'node:crypto';
import t from 'tap';
import { iceServer, turnCredentials, turnPassword } from '../../src/provisioning/turn.js';

t.test('username EXPIRY:USER, password base64(HMAC-SHA1(secret, username))', async (t) => {
  const c = turnCredentials('s3cret', 'alice@example.test', 86400, 1_700_000_000_500);
  t.same(c, { username: '1700086400:alice@example.test', password: createHmac('sha1', 's3cret').update('1700086400:alice@example.test').digest('base64'), expires: 1700086400 });
  // A fixed vector, computed once with: printf '%s' 1700086400:alice@example.test | openssl dgst -sha1 -hmac s3cret -binary | base64
  t.equal(turnPassword('s3cret', '1700086400:alice@example.test'), 'AYQlr3nDVENN3yNxWFx4NgHEa2A=');
  t.equal(c.password.length, 28, '20 bytes of SHA-1 in base64');
});

t.test('ICE server URLs (RFC 7064, 7065)', async (t) => {
  t.same(iceServer('turn:turn.example.test:3478?transport=udp'), { hostPort: 'turn.example.test:3478', host: 'turn.example.test', port: 3478, transport: 'udp' });
  t.same(iceServer('turn:turn.example.test?transport=tcp'), { hostPort: 'turn.example.test:3478', host: 'turn.example.test', port: 3478, transport: 'tcp' });
  t.same(iceServer('turns:turn.example.test'), { hostPort: 'turn.example.test:5349', host: 'turn.example.test', port: 5349, transport: 'tls' });
  t.same(iceServer('stun:[2001:db8::1]:3479'), { hostPort: '[2001:db8::1]:3479', host: '[2001:db8::1]', port: 3479, transport: 'udp' });
  t.throws(() => iceServer('http://x'), /must be a stun: or stuns: or turn: or turns: URL/);
});
