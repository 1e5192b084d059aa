import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { formatAccount, loadUsersFile, makeAccount, USERS_FILE_HEADER } from '../../src/auth/users.js';
import { HELP, runCli, type CliIo } from '../../src/cli/run.js';
import { USER_HELP, runUser, type CliStdin } from '../../src/cli/user.js';

interface Harness {
  io: CliIo;
  out: () => string;
  err: () => string;
}

function harness(stdin?: CliStdin): Harness {
  let out = '';
  let err = '';
  const io: CliIo = {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    stdin,
  };
  return { io, out: () => out, err: () => err };
}

/** A piped standard input holding `text`. */
function piped(text: string | Buffer): PassThrough {
  const s = new PassThrough();
  s.end(text);
  return s;
}

/** A fake terminal: records raw mode; `type` sends keys. */
class FakeTty extends PassThrough {
  isTTY = true;
  raw: boolean[] = [];
  setRawMode(b: boolean): this {
    this.raw.push(b);
    return this;
  }
}

const md5 = (s: string) => createHash('md5').update(s, 'utf8').digest('hex');

async function cli(argv: string[], stdin?: CliStdin): Promise<{ code: number; out: string; err: string }> {
  const h = harness(stdin);
  const code = await runCli(argv, h.io);
  return { code, out: h.out(), err: h.err() };
}

t.test('add via a pipe, list, change the password, del', async (t) => {
  const dir = t.testdir();
  const users = join(dir, 'users');
  const pw = 'correct horse battery staple';

  let r = await cli(['user', 'add', 'sip:alice@Example.Test', '--users', users], piped(`${pw}\n`));
  t.same(r, { code: 0, out: 'added alice@example.test (phone)\n', err: '' });
  const alice = loadUsersFile(users).accounts.get('alice@example.test');
  t.equal(alice?.realm, 'example.test', 'realm defaults to the domain');
  t.equal(alice?.ha1.md5, md5(`alice:example.test:${pw}`), 'exactly one trailing newline stripped');
  t.equal(statSync(users).mode & 0o777, 0o600);
  t.match(readFileSync(users, 'utf8'), new RegExp(`^${USERS_FILE_HEADER.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n`));
  t.notMatch(readFileSync(users, 'utf8'), /horse/);

  r = await cli(['user', 'add', 'door-jaures@example.test', '--users', users, '--kind', 'door', '--realm', 'intercom'], piped('Zq7#kLmw\r\n'));
  t.equal(r.code, 0);
  t.equal(r.out, 'added door-jaures@example.test (door)\n');
  t.equal(r.err, 'portier: warning: shorter than 15 characters: a long passphrase is safer\n');
  t.equal(loadUsersFile(users).accounts.get('door-jaures@example.test')?.ha1.md5, md5('door-jaures:intercom:Zq7#kLmw'), 'CRLF stripped');

  r = await cli(['user', 'list', '--users', users]);
  t.same(r, { code: 0, out: 'alice@example.test phone example.test\ndoor-jaures@example.test door intercom\n', err: '' });

  // A new password for the door: the kind is kept without --kind.
  r = await cli(['user', 'add', 'door-jaures@example.test', '--users', users, '--realm', 'intercom'], piped('a much longer door passphrase'));
  t.same(r, { code: 0, out: 'password changed for door-jaures@example.test (door)\n', err: '' });
  t.equal(loadUsersFile(users).accounts.get('door-jaures@example.test')?.ha1.md5, md5('door-jaures:intercom:a much longer door passphrase'), 'no newline: nothing stripped');

  r = await cli(['user', 'del', 'alice@example.test', '--users', users]);
  t.same(r, { code: 0, out: 'removed alice@example.test\n', err: '' });
  r = await cli(['user', 'del', 'alice@example.test', '--users', users]);
  t.same(r, { code: 1, out: '', err: `portier: no such account alice@example.test in ${users}\n` });
  r = await cli(['user', 'list', '--users', users]);
  t.equal(r.out, 'door-jaures@example.test door intercom\n');
  for (const out of [r.out, r.err]) t.notMatch(out, /[0-9a-f]{32}/, 'no hash printed');
});

t.test('add refuses bad passwords and writes nothing', async (t) => {
  const dir = t.testdir();
  const users = join(dir, 'users');
  const cases: Array<[string | Buffer, RegExp]> = [
    ['Password1\n', /^portier: the password is on the list of commonly used passwords; choose another one\n$/],
    ['iloveyou', /commonly used/],
    ['short\n', /too short: 5 characters/],
    ['', /must not be empty/],
    ['\n', /must not be empty/],
    ['first-password\nsecond-password\n', /alone on one line/],
    ['tab\tinside-password', /control character \(U\+0009\)/],
    [Buffer.from([0x61, 0x62, 0xff, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68]), /not valid UTF-8/],
  ];
  for (const [input, re] of cases) {
    const r = await cli(['user', 'add', 'alice@example.test', '--users', users], piped(input));
    t.equal(r.code, 1, JSON.stringify(String(input)));
    t.match(r.err, re);
    t.equal(r.out, '');
    t.notOk(existsSync(users), 'nothing written');
  }
  // An existing file is left as it was.
  writeFileSync(users, '# mine\n');
  const r = await cli(['user', 'add', 'alice@example.test', '--users', users], piped('password'));
  t.equal(r.code, 1);
  t.equal(readFileSync(users, 'utf8'), '# mine\n');
});

t.test('Unicode passwords are hashed as typed (UTF-8, no normalisation)', async (t) => {
  const dir = t.testdir();
  const users = join(dir, 'users');
  const pw = 'pässwörd-日本語-cafe\u0301';
  const r = await cli(['user', 'add', 'bob@example.test', '--users', users], piped(Buffer.from(`${pw}\n`, 'utf8')));
  t.equal(r.code, 0);
  t.equal(loadUsersFile(users).accounts.get('bob@example.test')?.ha1.md5, md5(`bob:example.test:${pw}`));
});

t.test('add on a terminal: asked twice without echo', async (t) => {
  const dir = t.testdir();
  const users = join(dir, 'users');

  const tty = new FakeTty();
  // Typed: a typo fixed with Backspace, an arrow key (ignored), Enter; then again with CRLF Enter.
  tty.write('a long passphrase, typed carefullyx\u007f\u001b[D\r');
  tty.write(Buffer.from('a long passphrase, typed carefully\r\n'));
  const h = harness(tty);
  t.equal(await runCli(['user', 'add', 'carol@example.test', '--users', users], h.io), 0);
  t.equal(h.err(), 'Password: \nRepeat password: \n', 'prompts on stderr, nothing echoed');
  t.equal(h.out(), 'added carol@example.test (phone)\n');
  t.equal(loadUsersFile(users).accounts.get('carol@example.test')?.ha1.md5, md5('carol:example.test:a long passphrase, typed carefully'));
  t.equal(tty.raw[0], true, 'raw mode on');
  t.equal(tty.raw[tty.raw.length - 1], false, 'raw mode off again');

  // Keys one chunk at a time, a multi-byte character split across chunks, Ctrl-U clears, Ctrl-D ends.
  const slow = new FakeTty();
  const h2 = harness(slow);
  const done = runCli(['user', 'add', 'dave@example.test', '--users', users], h2.io);
  const keys = Buffer.from('garbage\u0015clé de la porte du jardin\u0004', 'utf8');
  for (let i = 0; i < keys.length; i++) {
    slow.write(keys.subarray(i, i + 1));
    await new Promise((r) => setImmediate(r));
  }
  slow.write('clé de la porte du jardin\n');
  t.equal(await done, 0);
  t.equal(loadUsersFile(users).accounts.get('dave@example.test')?.ha1.md5, md5('dave:example.test:clé de la porte du jardin'));

  const differ = new FakeTty();
  differ.write('first passphrase here\rsecond passphrase here\r');
  const h3 = harness(differ);
  t.equal(await runCli(['user', 'add', 'erin@example.test', '--users', users], h3.io), 1);
  t.equal(h3.err(), 'Password: \nRepeat password: \nportier: the two passwords differ; nothing changed\n');
  t.equal(loadUsersFile(users).accounts.get('erin@example.test'), undefined);

  for (const keysTyped of ['abc\u0003', 'first passphrase here\rabc\u0003']) {
    const ctrlC = new FakeTty();
    ctrlC.write(keysTyped);
    const h4 = harness(ctrlC);
    t.equal(await runCli(['user', 'add', 'erin@example.test', '--users', users], h4.io), 1, 'Ctrl-C aborts');
    t.match(h4.err(), /portier: aborted\n$/);
    t.equal(ctrlC.raw[ctrlC.raw.length - 1], false);
  }

  const eof = new FakeTty();
  eof.end('abc');
  const h5 = harness(eof);
  t.equal(await runCli(['user', 'add', 'erin@example.test', '--users', users], h5.io), 1, 'end of input aborts');
  t.match(h5.err(), /aborted/);

  const weak = new FakeTty();
  weak.write('password1\rpassword1\r');
  const h6 = harness(weak);
  t.equal(await runCli(['user', 'add', 'erin@example.test', '--users', users], h6.io), 1);
  t.match(h6.err(), /commonly used/);
  t.notMatch(h6.err(), /password1/, 'the password is never printed');
});

t.test('list reports file problems as FILE:LINE: reason', async (t) => {
  const dir = t.testdir();
  const users = join(dir, 'users');
  const b = makeAccount('bob@example.test', 'x', 'example.test', 'door');
  const a = makeAccount('Alice@example.test', 'x', 'example.test', 'phone');
  writeFileSync(users, `# accounts\n${formatAccount(b)}\nnonsense\n${formatAccount(a)}\n${formatAccount(b)}\n`);
  const r = await cli(['user', 'list', '--users', users]);
  t.equal(r.code, 0);
  t.equal(r.out, 'Alice@example.test phone example.test\nbob@example.test door example.test\n', 'sorted');
  t.equal(
    r.err,
    `${users}:3: the account "nonsense" must be user@domain\n${users}:5: bob@example.test: duplicate of line 2; this line is ignored\n`,
  );
  const missing = join(dir, 'nope');
  for (const argv of [
    ['user', 'list', '--users', missing],
    ['user', 'del', 'a@b.test', '--users', missing],
  ]) {
    const m = await cli(argv);
    t.same(m, { code: 1, out: '', err: `portier: ${missing}: cannot read the users file: no such file\n` }, argv[1]);
  }
  const w = await cli(['user', 'add', 'a@b.test', '--users', join(dir, 'no', 'users')], piped('a long passphrase'));
  t.same(w, { code: 1, out: '', err: `portier: ${join(dir, 'no', 'users')}: cannot write the users file: no such directory\n` });
});

t.test('the users file defaults to conf/users', async (t) => {
  const dir = t.testdir({ conf: {} });
  const cwd = process.cwd();
  process.chdir(dir);
  t.teardown(() => process.chdir(cwd));
  const r = await cli(['user', 'add', 'a@b.test'], piped('a long passphrase'));
  t.equal(r.code, 0);
  t.equal(loadUsersFile(join(dir, 'conf', 'users')).accounts.size, 1);
});

t.test('--config: the users file and realm of auth', async (t) => {
  const dir = t.testdir({
    'users.txt': `${USERS_FILE_HEADER}\n`,
    'portier.yaml': 'domains: [school.example.test]\nlisten: [udp:127.0.0.1:0]\nauth: {users: users.txt, realm: school-realm}\n',
    'off.yaml': 'domains: [school.example.test]\nlisten: [udp:127.0.0.1:0]\nauth: off\n',
    'bad.yaml': 'domains: []\nlisten: []\n',
    conf: {},
  });
  const config = join(dir, 'portier.yaml');
  const users = join(dir, 'users.txt');

  let r = await cli(['user', 'add', 'alice@school.example.test', '--config', config], piped('a long passphrase'));
  t.same(r, { code: 0, out: 'added alice@school.example.test (phone)\n', err: '' });
  t.equal(loadUsersFile(users).accounts.get('alice@school.example.test')?.realm, 'school-realm');
  t.equal(loadUsersFile(users).accounts.get('alice@school.example.test')?.ha1.md5, md5('alice:school-realm:a long passphrase'));

  r = await cli(['user', 'add', 'bob@other.test', '-c', config, '--realm', 'own'], piped('a long passphrase'));
  t.equal(r.code, 0);
  t.equal(r.err, `portier: warning: other.test is not one of the domains of ${config} (school.example.test)\n`);
  t.equal(loadUsersFile(users).accounts.get('bob@other.test')?.realm, 'own', '--realm wins');

  r = await cli(['user', 'list', '--config', config]);
  t.equal(r.out, 'alice@school.example.test phone school-realm\nbob@other.test phone own\n');

  const other = join(dir, 'other-users');
  r = await cli(['user', 'add', 'carol@school.example.test', '--config', config, '--users', other], piped('a long passphrase'));
  t.equal(r.code, 0);
  t.equal(loadUsersFile(other).accounts.get('carol@school.example.test')?.realm, 'school-realm', '--users wins, realm still from the config');

  r = await cli(['user', 'del', 'bob@other.test', '--config', config]);
  t.same(r, { code: 0, out: 'removed bob@other.test\n', err: '' });

  r = await cli(['user', 'list', '--config', join(dir, 'bad.yaml')]);
  t.equal(r.code, 1);
  t.equal(r.err, `portier: ${join(dir, 'bad.yaml')}: domains: must not be empty (and 1 more; see: portier check --config ${join(dir, 'bad.yaml')})\n`);

  const cwd = process.cwd();
  process.chdir(dir);
  t.teardown(() => process.chdir(cwd));
  r = await cli(['user', 'add', 'dave@school.example.test', '--config', join(dir, 'off.yaml')], piped('a long passphrase'));
  t.equal(r.code, 0);
  t.equal(r.err, `portier: note: ${join(dir, 'off.yaml')} has authentication off; using conf/users\n`);
  t.equal(loadUsersFile(join(dir, 'conf', 'users')).accounts.get('dave@school.example.test')?.realm, 'school.example.test', 'realm: the domain');
});

t.test('usage errors exit 2', async (t) => {
  const cases: Array<[string[], string]> = [
    [['user'], 'user needs a command: add, del or list'],
    [['user', 'frob'], 'unknown user command "frob" (expected add, del or list)'],
    [['user', 'add'], 'user add needs an account: user@domain'],
    [['user', 'del'], 'user del needs an account: user@domain'],
    [['user', 'list', 'x'], 'unexpected argument "x"'],
    [['user', 'add', 'a@b.test', 'c'], 'unexpected argument "c"'],
    [['user', 'add', 'a@b.test', '--kind', 'robot'], '--kind must be phone or door (got "robot")'],
    [['user', 'del', 'a@b.test', '--kind', 'door'], '--kind is for user add only'],
    [['user', 'list', '--realm', 'r'], '--realm is for user add only'],
    [['user', 'list', '--users', ''], '--users needs a value'],
    [['user', 'list', '--bogus'], "unknown option '--bogus'"],
    [['user', 'add', 'alice'], 'the account "alice" must be user@domain'],
    [['user', 'add', 'a@b.test', '--realm', 'with space'], 'the realm "with space" must be visible ASCII without spaces, quotes or backslashes'],
  ];
  for (const [argv, why] of cases) {
    const r = await cli(argv, piped('a long passphrase'));
    t.same(r, { code: 2, out: '', err: `portier: ${why}\nTry 'portier user --help'.\n` }, argv.join(' '));
  }
  const late = await cli(['-c', 'x.yaml', 'user']);
  t.same(late, { code: 2, out: '', err: "portier: write the user command first: portier user add|del|list ...\nTry 'portier --help'.\n" });
});

t.test('help', async (t) => {
  for (const argv of [['user', '--help'], ['user', 'add', '-h']]) {
    const r = await cli(argv);
    t.same(r, { code: 0, out: USER_HELP, err: '' });
  }
  t.match(HELP, /portier user add AOR/);
  t.match(HELP, /portier user list/);
  t.match(USER_HELP, /--kind KIND/);
});

t.test('runUser reads process.stdin by default', async (t) => {
  // Not a terminal under tap: a pipe; here an empty one is enough to see it is read.
  const h = harness();
  const stdin = process.stdin;
  const fake = piped('');
  Object.defineProperty(process, 'stdin', { value: fake, configurable: true });
  t.teardown(() => Object.defineProperty(process, 'stdin', { value: stdin, configurable: true }));
  const dir = t.testdir();
  t.equal(await runUser(['add', 'a@b.test', '--users', join(dir, 'users')], { stdout: h.io.stdout, stderr: h.io.stderr }), 1);
  t.match(h.err(), /must not be empty/);
});
