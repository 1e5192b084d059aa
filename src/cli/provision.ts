/**
 * `portier provision AOR --config FILE [--png FILE]`: one QR code that sets a
 * staff member's Linhome or Linphone app up completely.
 *
 *  1. sets a fresh random password for the account (created, kind phone, if
 *     missing): its HA1 goes to the users file (src/auth/users.ts), the
 *     password itself nowhere but into the sealed link;
 *  2. adds a one-time link, valid provisioning.token-ttl, to the tokens file
 *     (src/provisioning/tokens.ts), which the running server reads again by
 *     its modification time: no reload needed;
 *  3. prints the link and its QR code, and writes the QR code as a PNG
 *     (mode 0600: whoever has it can take the account) with --png.
 *
 * The running server reads the users file again when the link is used, so
 * the old password keeps working until then.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, openSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import QRCode from 'qrcode';
import { checkPassword } from '../auth/password.js';
import { addToUsersFile, loadUsersFile, makeAccount, parseAor, type Account } from '../auth/users.js';
import { formatDuration, tokensPath } from '../config/provisioning.js';
import { addToken, newToken, seal, tokenId } from '../provisioning/tokens.js';
import { Failure, readConfig } from './common.js';

export interface ProvisionIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
}

export const PROVISION_HELP = `Usage: portier provision AOR --config FILE [--png FILE]

Make a one-time link, and its QR code, that sets up a Linhome or Linphone app
for the account AOR (user@domain): account, password, transport, push
notifications, STUN/TURN and the door stations of the account's ring groups.
Scan it in the app (Linhome: Assistant, Remote provisioning, QR code;
Linphone: Assistant, Fetch remote configuration).

The account gets a fresh random password (created as a phone account if it
does not exist): its other devices sign in again with a new link. The link
works once, for provisioning.token-ttl; the running server picks it up at
once (no reload needed).

Options:
  -c, --config FILE   the configuration (needs provisioning: and auth:)
  --png FILE          also write the QR code as a PNG image (mode 0600)
  -h, --help          show this help and exit
`;

const EXIT_OK = 0;
const EXIT_ERROR = 1;
const EXIT_USAGE = 2;

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0];
}

/** 20 random bytes, base64url: 27 characters, far beyond any guessing and any common-password list. */
export function randomPassword(): string {
  return randomBytes(20).toString('base64url');
}

/** `portier provision ...`; `argv` is what follows `provision`. Resolves to the exit status. */
export async function runProvision(argv: string[], io: ProvisionIo): Promise<number> {
  let values: { config?: string; png?: string; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: { config: { type: 'string', short: 'c' }, png: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    const unknown = /^Unknown option '([^']+)'/.exec(oneLine(err));
    return usage(io, unknown ? `unknown option '${unknown[1]}'` : oneLine(err));
  }
  if (values.help) {
    io.stdout.write(PROVISION_HELP);
    return EXIT_OK;
  }
  if (positionals.length === 0) return usage(io, 'provision needs an account: user@domain');
  if (positionals.length > 1) return usage(io, `unexpected argument "${positionals[1]}"`);
  if (values.config === undefined || values.config === '') return usage(io, 'provision needs --config FILE');
  if (values.png === '') return usage(io, '--png needs a FILE');
  let aor: ReturnType<typeof parseAor>;
  try {
    aor = parseAor(positionals[0]);
  } catch (err) {
    return usage(io, oneLine(err));
  }
  try {
    return await provision(aor, values.config, values.png, io);
  } catch (err) {
    if (err instanceof Failure) {
      io.stderr.write(`portier: ${err.message}\n`);
      return EXIT_ERROR;
    }
    throw err;
  }
}

function usage(io: ProvisionIo, why: string): number {
  io.stderr.write(`portier: ${why}\nTry 'portier provision --help'.\n`);
  return EXIT_USAGE;
}

async function provision(aor: { user: string; domain: string; aor: string }, configPath: string, png: string | undefined, io: ProvisionIo): Promise<number> {
  const config = readConfig(configPath);
  const p = config.provisioning;
  const auth = config.auth;
  if (p === null) throw new Failure(`${config.source} has no provisioning: section (see README, Setting up the apps)`);
  if (auth === null) throw new Failure(`${config.source} has authentication off: provisioning needs auth.users`);
  if (!config.domains.includes(aor.domain)) throw new Failure(`${aor.domain} is not one of the domains of ${config.source} (${config.domains.join(', ')})`);

  let existing: Account | undefined;
  try {
    existing = loadUsersFile(auth.users).accounts.get(aor.aor);
  } catch {
    existing = undefined; // a missing users file is created
  }
  if (existing?.kind === 'door') throw new Failure(`${aor.aor} is a door-station account: door stations are set up in their own web interface`);

  const password = randomPassword();
  const verdict = checkPassword(password);
  if (!verdict.ok) throw new Failure(`internal: a generated password was refused (${verdict.reason})`);
  const account = makeAccount(aor.aor, password, auth.realm, existing?.kind ?? 'phone');
  const now = Date.now();
  const token = newToken();
  const expires = now + p.tokenTtl * 1000;
  const tokens = tokensPath(p, auth.users);
  try {
    addToUsersFile(auth.users, account);
  } catch (err) {
    throw new Failure(`${auth.users}: cannot write the users file: ${fsReason(err)}`);
  }
  try {
    addToken(tokens, { id: tokenId(token), expires, aor: account.aor, sealed: seal(token, password) }, now, auth.users);
  } catch (err) {
    throw new Failure(`${tokens}: cannot write the provisioning tokens: ${fsReason(err)}`);
  }

  const url = `${p.baseUrl}/p/${token}`;
  io.stdout.write(
    `${existing === undefined ? `added ${account.aor} (phone) with` : `${account.aor}: new`} password set; provisioning link, valid once until ${new Date(expires).toISOString()} (${formatDuration(p.tokenTtl)}):\n${url}\n`,
  );
  io.stdout.write(await QRCode.toString(url, { type: 'terminal', small: true, errorCorrectionLevel: 'M' }));
  if (png !== undefined) {
    const image = await QRCode.toBuffer(url, { type: 'png', errorCorrectionLevel: 'M', margin: 4, width: 512 });
    try {
      writePrivate(png, image);
    } catch (err) {
      throw new Failure(`${png}: cannot write the QR code: ${fsReason(err)}`);
    }
    io.stdout.write(`QR code written to ${png}\n`);
  }
  io.stdout.write(
    'Scan it in the app (Linhome: Assistant > Remote provisioning > QR code; Linphone: Assistant > Fetch remote configuration).\n' +
      'Whoever has this link or image can take the account until it is used: hand it over in person, then delete the image.\n',
  );
  return EXIT_OK;
}

/** Writes `data` to `path` with mode 0600, an existing file included. */
function writePrivate(path: string, data: Buffer): void {
  const fd = openSync(path, 'w', 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
}

function fsReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code === 'ENOENT' ? 'no such directory' : e.code === 'EACCES' ? 'permission denied' : oneLine(err);
}
