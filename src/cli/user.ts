/**
 * `portier user add|del|list`: manage the accounts of the users file (src/auth/users.ts).
 *
 *   portier user add AOR [--users FILE] [--config FILE] [--realm REALM] [--kind door|phone]
 *   portier user del AOR [--users FILE] [--config FILE]
 *   portier user list [--users FILE] [--config FILE]
 *
 * The users file is --users, else the `auth.users` of --config, else conf/users.
 * The realm is --realm, else the `auth.realm` of --config, else the AOR's domain.
 * `add` reads the password from standard input: on a terminal it asks twice
 * without echo; from a pipe it reads everything and strips one final newline.
 * Neither the password nor its hashes are ever printed.
 */
import { StringDecoder } from 'node:string_decoder';
import { parseArgs } from 'node:util';
import { checkPassword } from '../auth/password.js';
import {
  ACCOUNT_KINDS,
  addToUsersFile,
  checkRealm,
  loadUsersFile,
  makeAccount,
  parseAor,
  removeFromUsersFile,
  type Account,
  type AccountKind,
} from '../auth/users.js';
import type { Config } from '../config/index.js';
import { Failure, readConfig } from './common.js';

/** Where `user add` reads the password. A TTY gets raw mode (no echo). */
export type CliStdin = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?(raw: boolean): unknown };

export interface UserIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  /** Default: process.stdin. */
  stdin?: CliStdin;
}

export const DEFAULT_USERS_FILE = 'conf/users';

export const USER_HELP = `Usage: portier user add AOR [--users FILE] [--config FILE] [--realm REALM] [--kind door|phone]
       portier user del AOR [--users FILE] [--config FILE]
       portier user list [--users FILE] [--config FILE]

Manage the accounts of the users file, which holds HA1 digests only (MD5 and
SHA-256), never a password. AOR is user@domain (a leading sip: is accepted).

  add    add the account, or change its password: the password is read from
         standard input (asked twice without echo on a terminal; from a pipe,
         everything up to one final newline). At least 8 characters, 15 or
         more recommended; common passwords are refused.
  del    remove the account
  list   print one line per account: AOR kind realm

Options:
  --users FILE        the users file (default: auth.users of --config, else ${DEFAULT_USERS_FILE})
  -c, --config FILE   take the users file and the realm from this configuration
  --realm REALM       digest realm (default: auth.realm of --config, else the AOR's domain)
  --kind KIND         phone or door (default: the account's kind, phone for a new one)
  -h, --help          show this help and exit
`;

const EXIT_OK = 0;
const EXIT_ERROR = 1;
const EXIT_USAGE = 2;

class UsageError extends Error {}
type Sub = 'add' | 'del' | 'list';

interface UserArgs {
  sub: Sub;
  aor: string | null;
  users?: string;
  config?: string;
  realm?: string;
  kind?: AccountKind;
}

function parse(argv: string[]): UserArgs | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      users: { type: 'string' },
      config: { type: 'string', short: 'c' },
      realm: { type: 'string' },
      kind: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const [sub, aor, extra] = positionals;
  if (sub === undefined) throw new UsageError('user needs a command: add, del or list');
  if (sub !== 'add' && sub !== 'del' && sub !== 'list') throw new UsageError(`unknown user command "${sub}" (expected add, del or list)`);
  if (sub === 'list' && aor !== undefined) throw new UsageError(`unexpected argument "${aor}"`);
  if (sub !== 'list' && aor === undefined) throw new UsageError(`user ${sub} needs an account: user@domain`);
  if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`);
  for (const name of ['users', 'config', 'realm', 'kind'] as const) {
    if (values[name] === '') throw new UsageError(`--${name} needs a value`);
  }
  if (sub !== 'add') {
    for (const name of ['realm', 'kind'] as const) {
      if (values[name] !== undefined) throw new UsageError(`--${name} is for user add only`);
    }
  }
  if (values.kind !== undefined && !(ACCOUNT_KINDS as readonly string[]).includes(values.kind)) {
    throw new UsageError(`--kind must be phone or door (got "${values.kind}")`);
  }
  try {
    if (aor !== undefined) parseAor(aor);
    if (values.realm !== undefined) checkRealm(values.realm);
  } catch (err) {
    throw new UsageError(oneLine(err));
  }
  return {
    sub,
    aor: aor ?? null,
    users: values.users,
    config: values.config,
    realm: values.realm,
    kind: values.kind as AccountKind | undefined,
  };
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0];
}

/** `portier user ...`; `argv` is what follows `user`. Resolves to the exit status. */
export async function runUser(argv: string[], io: UserIo): Promise<number> {
  const usage = (why: string) => {
    io.stderr.write(`portier: ${why}\nTry 'portier user --help'.\n`);
    return EXIT_USAGE;
  };
  let args: UserArgs | 'help';
  try {
    args = parse(argv);
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      const unknown = /^Unknown option '([^']+)'/.exec(oneLine(err));
      return usage(unknown ? `unknown option '${unknown[1]}'` : oneLine(err));
    }
    throw err;
  }
  if (args === 'help') {
    io.stdout.write(USER_HELP);
    return EXIT_OK;
  }

  try {
    const config = args.config === undefined ? null : readConfig(args.config);
    const auth = config?.auth ?? null;
    if (config !== null && auth === null && args.users === undefined) {
      io.stderr.write(`portier: note: ${config.source} has authentication off; using ${DEFAULT_USERS_FILE}\n`);
    }
    const file = args.users ?? auth?.users ?? DEFAULT_USERS_FILE;
    switch (args.sub) {
      case 'list':
        return list(file, io);
      case 'del':
        return del(file, args.aor as string, io);
      case 'add':
        return await add(file, args, config, io);
    }
  } catch (err) {
    if (err instanceof Failure) {
      io.stderr.write(`portier: ${err.message}\n`);
      return EXIT_ERROR;
    }
    throw err;
  }
}

function load(file: string): ReturnType<typeof loadUsersFile> {
  try {
    return loadUsersFile(file);
  } catch (err) {
    throw new Failure(oneLine(err));
  }
}

/** Runs a write, turning file-system errors into one line naming the file. */
function writing<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === undefined) throw new Failure(oneLine(err));
    const why = e.code === 'ENOENT' ? 'no such directory' : e.code === 'EACCES' ? 'permission denied' : e.message;
    throw new Failure(`${file}: cannot write the users file: ${why}`);
  }
}

function list(file: string, io: UserIo): number {
  const { accounts, problems } = load(file);
  for (const p of problems) io.stderr.write(`${file}:${p.line}: ${p.reason}\n`);
  const lines = accounts
    .list()
    .map((a) => `${a.aor} ${a.kind} ${a.realm}`)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const line of lines) io.stdout.write(`${line}\n`);
  return EXIT_OK;
}

function del(file: string, aor: string, io: UserIo): number {
  const canonical = parseAor(aor).aor;
  load(file); // a clear error for a missing or unreadable file
  if (!writing(file, () => removeFromUsersFile(file, aor))) throw new Failure(`no such account ${canonical} in ${file}`);
  io.stdout.write(`removed ${canonical}\n`);
  return EXIT_OK;
}

async function add(file: string, args: UserArgs, config: Config | null, io: UserIo): Promise<number> {
  const aor = parseAor(args.aor as string);
  if (config !== null && !config.domains.includes(aor.domain)) {
    io.stderr.write(`portier: warning: ${aor.domain} is not one of the domains of ${config.source} (${config.domains.join(', ')})\n`);
  }
  const realm = args.realm ?? config?.auth?.realm ?? aor.domain;
  let existing: Account | undefined;
  try {
    existing = loadUsersFile(file).accounts.get(aor.aor);
  } catch {
    existing = undefined; // a missing file is created; an unreadable one fails at the write
  }
  // Changing a password keeps the kind unless --kind says otherwise.
  const kind = args.kind ?? existing?.kind ?? 'phone';
  const password = await readPassword(io);
  const verdict = checkPassword(password);
  if (!verdict.ok) throw new Failure(verdict.reason);
  for (const w of verdict.warnings) io.stderr.write(`portier: warning: ${w}\n`);
  const account = makeAccount(aor.aor, password, realm, kind);
  const outcome = writing(file, () => addToUsersFile(file, account));
  io.stdout.write(outcome === 'added' ? `added ${account.aor} (${kind})\n` : `password changed for ${account.aor} (${kind})\n`);
  return EXIT_OK;
}

async function readPassword(io: UserIo): Promise<string> {
  const stdin: CliStdin = io.stdin ?? process.stdin;
  if (stdin.isTTY && typeof stdin.setRawMode === 'function') {
    const reader = new HiddenReader(stdin, io.stderr);
    const first = await reader.prompt('Password: ');
    if (first === null) throw new Failure('aborted');
    const again = await reader.prompt('Repeat password: ');
    if (again === null) throw new Failure('aborted');
    if (first !== again) throw new Failure('the two passwords differ; nothing changed');
    return first;
  }
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : (chunk as Buffer));
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new Failure('the password on standard input is not valid UTF-8');
  }
  if (text.endsWith('\r\n')) text = text.slice(0, -2);
  else if (text.endsWith('\n')) text = text.slice(0, -1);
  if (/[\r\n]/.test(text)) throw new Failure('standard input must hold the password alone on one line');
  return text;
}

/**
 * Reads lines from a terminal in raw mode, echoing nothing. Enter (or Ctrl-D)
 * ends a line, Backspace removes the last character, Ctrl-U clears the line,
 * Ctrl-C aborts; escape sequences (arrow keys) and other control keys are ignored.
 */
class HiddenReader {
  private pending = '';
  private readonly decoder = new StringDecoder('utf8');

  constructor(
    private readonly stdin: CliStdin,
    private readonly stderr: { write(s: string): unknown },
  ) {}

  /** The line typed, or null when aborted (Ctrl-C or end of input). */
  prompt(text: string): Promise<string | null> {
    this.stderr.write(text);
    const stdin = this.stdin;
    return new Promise((resolve) => {
      let chars: string[] = [];
      let escape: 'no' | 'start' | 'sequence' = 'no';
      const finish = (value: string | null) => {
        stdin.removeListener('data', onData);
        stdin.removeListener('end', onEnd);
        stdin.setRawMode?.(false);
        stdin.pause();
        this.stderr.write('\n');
        resolve(value);
      };
      // Returns true when the line is complete; the rest of `s` stays pending.
      const feed = (s: string): boolean => {
        const cps = [...s];
        for (let i = 0; i < cps.length; i++) {
          const c = cps[i];
          if (escape === 'start') {
            escape = c === '[' || c === 'O' ? 'sequence' : 'no';
            continue;
          }
          if (escape === 'sequence') {
            if (c >= '@' && c <= '~') escape = 'no';
            continue;
          }
          if (c === '\r' || c === '\n' || c === '\u0004') {
            this.pending = cps.slice(i + 1).join('');
            if (c === '\r' && this.pending.startsWith('\n')) this.pending = this.pending.slice(1);
            finish(chars.join(''));
            return true;
          }
          if (c === '\u0003') {
            this.pending = '';
            finish(null);
            return true;
          }
          if (c === '\u007f' || c === '\b') chars.pop();
          else if (c === '\u0015') chars = [];
          else if (c === '\u001b') escape = 'start';
          else if (c >= ' ') chars.push(c);
        }
        return false;
      };
      const onData = (chunk: Buffer | string) => {
        feed(typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
      };
      const onEnd = () => finish(null);
      const leftover = this.pending;
      this.pending = '';
      if (feed(leftover)) return;
      stdin.setRawMode?.(true);
      stdin.on('data', onData);
      stdin.on('end', onEnd);
      stdin.resume();
    });
  }
}
