/**
 * Password policy for accounts, after NIST SP 800-63B §3.1.1.2 (memorized secrets):
 *
 * - at least 8 characters, counted in Unicode code points; a warning under 15;
 * - up to 1024 characters accepted (the guideline asks for at least 64), never truncated;
 * - any printable character, spaces and any Unicode included, with no composition
 *   rules; only control characters (U+0000–U+001F, U+007F) are refused, since no
 *   phone keyboard types them and they are mostly paste accidents;
 * - no Unicode normalisation: the HA1 digest is computed over the UTF-8 bytes as
 *   typed, which is what a SIP client hashes;
 * - refused when it is on the bundled list of common passwords (case-insensitively).
 */
import { COMMON_PASSWORDS } from './common-passwords.js';

export const MIN_PASSWORD_LENGTH = 8;
/** Under this many characters, the password is accepted with a warning. */
export const RECOMMENDED_PASSWORD_LENGTH = 15;
export const MAX_PASSWORD_LENGTH = 1024;

export const SHORT_WARNING = `shorter than ${RECOMMENDED_PASSWORD_LENGTH} characters: a long passphrase is safer`;

export type PasswordCheck = { ok: true; warnings: string[] } | { ok: false; reason: string };

const CONTROL = /[\u0000-\u001f\u007f]/u;

export function checkPassword(pw: string): PasswordCheck {
  if (pw === '') return { ok: false, reason: 'the password must not be empty' };
  const control = CONTROL.exec(pw);
  if (control) {
    const code = control[0].codePointAt(0) as number;
    const hex = code.toString(16).toUpperCase().padStart(4, '0');
    return { ok: false, reason: `the password contains a control character (U+${hex}); use printable characters only` };
  }
  const length = [...pw].length;
  if (length < MIN_PASSWORD_LENGTH) {
    return { ok: false, reason: `the password is too short: ${length} characters, at least ${MIN_PASSWORD_LENGTH} needed` };
  }
  if (length > MAX_PASSWORD_LENGTH) {
    return { ok: false, reason: `the password is too long: ${length} characters, at most ${MAX_PASSWORD_LENGTH}` };
  }
  if (COMMON_PASSWORDS.has(pw.toLowerCase())) {
    return { ok: false, reason: 'the password is on the list of commonly used passwords; choose another one' };
  }
  const warnings = length < RECOMMENDED_PASSWORD_LENGTH ? [SHORT_WARNING] : [];
  return { ok: true, warnings };
}
