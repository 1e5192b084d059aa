// One-time provisioning links: the tokens file (written by portier
// provision) and the used file (written by the server), with an injected clock.

import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { TokenRegistry, addToken, isTokenSyntax, newToken, parseTokens, seal, tokenId, unseal } from '../../src/provisioning/tokens.js';

function dir(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'portier-tokens-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

t.test('tokens: 256 random bits, sealed password opens with its own token only', async (t) => {
  const a = newToken();
  t.ok(isTokenSyntax(a));
  t.not(a, newToken());
  t.notOk(isTokenSyntax(a + 'x'));
  t.notOk(isTokenSyntax('../../etc/passwd'));
  t.match(tokenId(a), /^[0-9a-f]{64}$/);
  const sealed = seal(a, 'correct horse battery staple');
  t.notMatch(sealed, /horse/);
  t.equal(unseal(a, sealed), 'correct horse battery staple');
  t.equal(unseal(newToken(), sealed), null, 'another token cannot open it');
  const tampered = Buffer.from(sealed, 'base64url');
  tampered[14] ^= 1;
  t.equal(unseal(a, tampered.toString('base64url')), null, 'an altered seal is refused');
});

t.test('a link works once, until it expires, across a restart too', async (t) => {
  const d = dir(t);
  const tokens = join(d, 'users.tokens');
  const used = join(d, 'state', 'provisioning-used');
  let now = 1_000_000;
  const token = newToken();
  addToken(tokens, { id: tokenId(token), expires: now + 3600_000, aor: 'alice@example.test', sealed: seal(token, 'pw-alice-1234') }, now);
  t.equal(statSync(tokens).mode & 0o777, 0o600, 'the tokens file is mode 0600');
  t.notMatch(readFileSync(tokens, 'utf8'), new RegExp(token), 'the file never holds the link');
  t.notMatch(readFileSync(tokens, 'utf8'), /pw-alice/, 'nor the password');

  const r = new TokenRegistry(tokens, used, () => now);
  const found = r.lookup(token);
  t.equal(found.kind, 'ok');
  t.equal(found.kind === 'ok' ? found.password : '', 'pw-alice-1234');
  t.equal(r.lookup(newToken()).kind, 'unknown');
  t.equal(r.lookup('short').kind, 'unknown');
  r.markUsed(tokenId(token));
  t.equal(r.lookup(token).kind, 'used', 'the second fetch is refused');
  t.equal(statSync(used).mode & 0o777, 0o600, 'the used file is mode 0600');

  const restarted = new TokenRegistry(tokens, used, () => now);
  t.equal(restarted.lookup(token).kind, 'used', 'still refused after a restart');

  const other = newToken();
  addToken(tokens, { id: tokenId(other), expires: now + 60_000, aor: 'bob@example.test', sealed: seal(other, 'pw-bob-12345') }, now);
  t.equal(r.lookup(other).kind, 'ok', 'a link added while running is seen without a reload');
  now += 60_000;
  t.equal(r.lookup(other).kind, 'expired', 'refused once expired (injected clock)');
});

t.test('a new link for an account replaces its older ones; expired links are dropped', async (t) => {
  const d = dir(t);
  const tokens = join(d, 'users.tokens');
  const now = 5_000_000;
  const [a, b, c] = [newToken(), newToken(), newToken()];
  addToken(tokens, { id: tokenId(a), expires: now + 1000, aor: 'alice@example.test', sealed: seal(a, 'x1234567') }, now);
  addToken(tokens, { id: tokenId(b), expires: now + 10, aor: 'bob@example.test', sealed: seal(b, 'x1234567') }, now);
  addToken(tokens, { id: tokenId(c), expires: now + 1000, aor: 'alice@example.test', sealed: seal(c, 'x7654321') }, now + 20);
  t.same(parseTokens(readFileSync(tokens, 'utf8')).map((r) => r.id), [tokenId(c)]);
  const r = new TokenRegistry(tokens, join(d, 'used'), () => now + 20);
  t.equal(r.lookup(a).kind, 'unknown', "the older link's password is no longer the account's");
});

t.test('the used file forgets links older than any token-ttl', async (t) => {
  const d = dir(t);
  const used = join(d, 'used');
  const now = 100 * 86400_000;
  writeFileSync(used, `${'a'.repeat(64)} ${now - 40 * 86400_000}\n${'b'.repeat(64)} ${now - 86400_000}\nnot a line\n`);
  new TokenRegistry(join(d, 'tokens'), used, () => now);
  t.equal(readFileSync(used, 'utf8'), `${'b'.repeat(64)} ${now - 86400_000}\n`);
});
