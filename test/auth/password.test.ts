import t from 'tap';
import { COMMON_PASSWORDS } from '../../src/auth/common-passwords.js';
import { MAX_PASSWORD_LENGTH, SHORT_WARNING, checkPassword } from '../../src/auth/password.js';

const WARN = 'shorter than 15 characters: a long passphrase is safer';

t.test('length, counted in code points', async (t) => {
  t.equal(SHORT_WARNING, WARN);
  t.same(checkPassword('Zq7#kLm'), { ok: false, reason: 'the password is too short: 7 characters, at least 8 needed' });
  t.same(checkPassword('Zq7#kLmw'), { ok: true, warnings: [WARN] }, '8 accepted with a warning');
  t.same(checkPassword('Zq7#kLmwVb2!pQr'.slice(0, 14)), { ok: true, warnings: [WARN] }, '14 warns');
  t.same(checkPassword('Zq7#kLmwVb2!pQr'), { ok: true, warnings: [] }, '15: no warning');
  const sixtyFour = 'correct horse battery staple, then a few more words to reach 64!';
  t.equal(sixtyFour.length, 64);
  t.same(checkPassword(sixtyFour), { ok: true, warnings: [] });
  t.same(checkPassword('x7'.repeat(100)), { ok: true, warnings: [] }, '200 accepted');
  t.same(checkPassword('y'.repeat(MAX_PASSWORD_LENGTH)), { ok: true, warnings: [] }, '1024 accepted');
  const tooLong = checkPassword('y'.repeat(MAX_PASSWORD_LENGTH + 1));
  t.same(tooLong, { ok: false, reason: 'the password is too long: 1025 characters, at most 1024' });
  // 7 emoji are 14 UTF-16 units but 7 characters.
  t.match(checkPassword('🔑🚪🔑🚪🔑🚪🔑'), { ok: false, reason: /7 characters/ });
  t.same(checkPassword('🔑🚪🔑🚪🔑🚪🔑🚪'), { ok: true, warnings: [WARN] });
  t.same(checkPassword(''), { ok: false, reason: 'the password must not be empty' });
});

t.test('any printable character and any Unicode; control characters refused', async (t) => {
  t.same(checkPassword('pässwörd-日本語'), { ok: true, warnings: [WARN] });
  t.same(checkPassword('with spaces in it, and "quotes" \\ too'), { ok: true, warnings: [] });
  t.same(checkPassword('alllowercaseletters'), { ok: true, warnings: [] }, 'no composition rules');
  t.same(checkPassword('   leading and trailing spaces   '), { ok: true, warnings: [] }, 'never trimmed');
  for (const [c, hex] of [
    ['\u0000', '0000'],
    ['\t', '0009'],
    ['\n', '000A'],
    ['\u001b', '001B'],
    ['\u001f', '001F'],
    ['\u007f', '007F'],
  ]) {
    t.same(
      checkPassword(`long enough${c}password`),
      { ok: false, reason: `the password contains a control character (U+${hex}); use printable characters only` },
      `U+${hex}`,
    );
  }
  t.same(checkPassword('non-breaking\u00a0space ok'), { ok: true, warnings: [] });
});

t.test('common passwords refused, case-insensitively', async (t) => {
  for (const pw of ['password', 'Password1', 'PASSWORD1', '12345678', 'qwertyuiop', 'iloveyou', 'IloveYou', 'trustno1', 'sunshine']) {
    t.match(checkPassword(pw), { ok: false, reason: /commonly used passwords/ }, pw);
  }
  t.match(checkPassword('Correct-Horse-7'), { ok: true });
});

t.test('the bundled list', async (t) => {
  t.ok(COMMON_PASSWORDS.size >= 9000 && COMMON_PASSWORDS.size <= 10000, `${COMMON_PASSWORDS.size} entries`);
  for (const pw of ['password', '12345678', 'qwertyuiop', 'iloveyou', 'password1']) t.ok(COMMON_PASSWORDS.has(pw), pw);
  for (const pw of COMMON_PASSWORDS) {
    if (pw !== pw.toLowerCase() || [...pw].length < 8 || /\s/.test(pw)) {
      t.fail(`bad entry ${JSON.stringify(pw)}`);
      break;
    }
  }
});
