import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  ACCOUNT_KINDS,
  Accounts,
  USERS_FILE_HEADER,
  addToUsersFile,
  checkRealm,
  formatAccount,
  ha1,
  loadUsersFile,
  makeAccount,
  parseAor,
  parseUsers,
  removeFromUsersFile,
  type Account,
} from '../../src/auth/users.js';

const md5 = (s: string) => createHash('md5').update(Buffer.from(s, 'utf8')).digest('hex');
const sha256 = (s: string) => createHash('sha256').update(Buffer.from(s, 'utf8')).digest('hex');

const mode = (path: string) => statSync(path).mode & 0o777;

t.test('ha1: RFC 2617 example and independent vectors', async (t) => {
  // RFC 2617 §3.5: Mufasa / testrealm@host.com / Circle Of Life.
  t.equal(ha1('MD5', 'Mufasa', 'testrealm@host.com', 'Circle Of Life'), '939e7578ed9e3c518a452acee763bce9');
  // RFC 7616 §3.9.1 publishes the responses, not HA1: recompute them from our HA1.
  const nonce = '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v';
  const cnonce = 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ';
  const response = (h: (s: string) => string, a1: string) => h(`${a1}:${nonce}:00000001:${cnonce}:auth:${h('GET:/dir/index.html')}`);
  t.equal(response(md5, ha1('MD5', 'Mufasa', 'http-auth@example.org', 'Circle of Life')), '8ca523f5e9506fed4657c9700eebdbec');
  t.equal(
    response(sha256, ha1('SHA-256', 'Mufasa', 'http-auth@example.org', 'Circle of Life')),
    '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1',
  );
  const cases: Array<[string, string, string]> = [
    ['alice', 'example.test', 'correct horse battery staple'],
    ['door-jaures', 'école.example', 'pässwörd-日本語'],
    ['Bob', 'x', '🔑🔑🔑🔑🔑🔑🔑🔑'],
  ];
  for (const [u, r, p] of cases) {
    t.equal(ha1('MD5', u, r, p), md5(`${u}:${r}:${p}`), `MD5 ${u}`);
    t.equal(ha1('SHA-256', u, r, p), sha256(`${u}:${r}:${p}`), `SHA-256 ${u}`);
    t.match(ha1('MD5', u, r, p), /^[0-9a-f]{32}$/);
    t.match(ha1('SHA-256', u, r, p), /^[0-9a-f]{64}$/);
  }
  // No Unicode normalisation: NFC and NFD spellings hash differently.
  const nfc = 'caf\u00e9-caf\u00e9';
  const nfd = 'cafe\u0301-cafe\u0301';
  t.not(ha1('MD5', 'a', 'r', nfc), ha1('MD5', 'a', 'r', nfd));
  t.equal(ha1('MD5', 'a', 'r', nfd), md5(`a:r:${nfd}`));
});

t.test('parseAor', async (t) => {
  t.same(parseAor('alice@example.test'), { user: 'alice', domain: 'example.test', aor: 'alice@example.test' });
  t.same(parseAor('sip:Alice@EXAMPLE.Test'), { user: 'Alice', domain: 'example.test', aor: 'Alice@example.test' }, 'sip: stripped, user case kept');
  t.same(parseAor('SIP:bob@10.0.0.1'), { user: 'bob', domain: '10.0.0.1', aor: 'bob@10.0.0.1' });
  t.same(parseAor('bob@[::1]'), { user: 'bob', domain: '::1', aor: 'bob@[::1]' });
  t.same(parseAor('bob@2001:DB8::1'), { user: 'bob', domain: '2001:db8::1', aor: 'bob@[2001:db8::1]' });
  t.equal(parseAor("a-_.!~*'()&=+$,;?/%41@x.test").user, "a-_.!~*'()&=+$,;?/%41");
  const bad: Array<[string, RegExp]> = [
    ['', /must not be empty/],
    ['alice', /must be user@domain/],
    ['@example.test', /no user part/],
    ['a@b@example.test', /more than one "@"/],
    ['al ice@example.test', /spaces/],
    ['al"ice@example.test', /may only contain/],
    ['al:ice@example.test', /may only contain/],
    ['al%4@example.test', /may only contain/],
    ['älice@example.test', /may only contain/],
    ['alice@', /domain of "alice@": must not be empty/],
    ['alice@example.test:5060', /domain of .*no port/],
    ['alice@exa_mple.test', /domain of .*not a valid host name/],
    ['sips:alice@example.test', /without "sips:"/],
    ['sip:sip:alice@example.test', /without "sip:"/],
  ];
  for (const [text, re] of bad) t.throws(() => parseAor(text), re, JSON.stringify(text));
});

t.test('makeAccount and formatAccount', async (t) => {
  const a = makeAccount('sip:alice@Example.Test', 'correct horse battery staple', 'example.test', 'phone');
  t.same(a, {
    aor: 'alice@example.test',
    user: 'alice',
    domain: 'example.test',
    kind: 'phone',
    realm: 'example.test',
    ha1: { md5: md5('alice:example.test:correct horse battery staple'), sha256: sha256('alice:example.test:correct horse battery staple') },
  });
  t.ok(Object.isFrozen(a) && Object.isFrozen(a.ha1));
  t.equal(formatAccount(a), `alice@example.test kind=phone realm=example.test md5=${a.ha1.md5} sha256=${a.ha1.sha256}`);
  t.notMatch(formatAccount(a), /horse/, 'no password in the line');
  t.same(ACCOUNT_KINDS, ['phone', 'door']);
  t.throws(() => makeAccount('alice@example.test', 'x', 'bad realm', 'phone'), /realm "bad realm" must be visible ASCII/);
  t.throws(() => makeAccount('alice@example.test', 'x', 'a"b', 'door'), /realm/);
  t.throws(() => makeAccount('alice@example.test', 'x', '', 'door'), /realm/);
  t.throws(() => makeAccount('alice@example.test', 'x', 'r', 'robot' as 'door'), /unknown kind "robot"/);
  t.throws(() => makeAccount('alice', 'x', 'r', 'door'), /user@domain/);
  t.doesNotThrow(() => checkRealm('http-auth@example.org'));
});

t.test('parse/format round trip', async (t) => {
  const accounts = [
    makeAccount('alice@example.test', 'pw-one-1234', 'example.test', 'phone'),
    makeAccount('door-jaures@example.test', 'pw-two-1234', 'example.test', 'door'),
    makeAccount('Bob@[::1]', 'pw-three-123', 'intercom', 'phone'),
  ];
  const text = `${USERS_FILE_HEADER}\n${accounts.map(formatAccount).join('\n')}\n`;
  const { accounts: parsed, problems } = parseUsers(text);
  t.same(problems, []);
  t.equal(parsed.size, 3);
  t.same(parsed.list(), accounts);
  t.equal(parsed.list().map(formatAccount).join('\n'), accounts.map(formatAccount).join('\n'));
  t.equal(parsed.get('alice@example.test'), parsed.list()[0]);
  t.equal(parsed.get('sip:alice@EXAMPLE.test')?.aor, 'alice@example.test', 'domain compared lower-case');
  t.equal(parsed.get('Alice@example.test'), undefined, 'user part is case-sensitive');
  t.equal(parsed.get('nobody'), undefined, 'malformed: undefined');
  t.equal(parsed.find('door-jaures', 'EXAMPLE.TEST')?.kind, 'door');
  t.equal(parsed.find('Bob', '[::1]')?.realm, 'intercom');
  t.equal(parsed.find('Bob', '0:0::1')?.aor, 'Bob@[::1]');
  t.equal(parsed.find('bob', '::1'), undefined);
  t.equal(parsed.find('alice', 'not a domain'), undefined);
  t.equal(parsed.find('%61lice', 'example.test')?.aor, 'alice@example.test', 'escapes of unreserved characters compare equal');
});

t.test('find: the same answers in any order, across many domains and after a reload', async (t) => {
  const alice = makeAccount('alice@example.test', 'pw-one-1234', 'example.test', 'phone');
  const bob = makeAccount('bob@example.test', 'pw-two-1234', 'example.test', 'door');
  const v6 = makeAccount('carol@[2001:db8::1]', 'pw-three-123', 'example.test', 'phone');
  const accounts = new Accounts([alice, bob, v6]);
  // Asked again and again, interleaved: the last answer is never handed to another question.
  for (let i = 0; i < 3; i++) {
    t.equal(accounts.find('alice', 'example.test'), alice);
    t.equal(accounts.find('alice', 'example.test'), alice);
    t.equal(accounts.find('bob', 'example.test'), bob);
    t.equal(accounts.find('alice', 'other.test'), undefined);
    t.equal(accounts.find('Alice', 'example.test'), undefined);
    t.equal(accounts.find('alice', 'EXAMPLE.test'), alice);
    t.equal(accounts.find('carol', '[2001:DB8:0::1]'), v6);
    t.equal(accounts.find('carol', '2001:db8::1'), v6);
    t.equal(accounts.find('alice', 'example.test:5060'), undefined, 'no port in a domain');
    t.equal(accounts.find('alice', ''), undefined);
  }
  // More made-up hosts than the domain cache holds: it starts again, answers stay right.
  for (let i = 0; i < 600; i++) t.equal(accounts.find('alice', `host-${i}.test`), undefined);
  t.equal(accounts.find('alice', 'Example.Test'), alice);
  t.equal(accounts.find('bob', 'not a domain'), undefined);
  t.equal(accounts.find('bob', 'example.test'), bob);
  // A reload is new Accounts: bob is gone there, alice has a new password.
  const alice2 = makeAccount('alice@example.test', 'pw-new-12345', 'example.test', 'phone');
  const reloaded = new Accounts([alice2]);
  t.equal(reloaded.find('bob', 'example.test'), undefined);
  t.equal(reloaded.find('alice', 'example.test'), alice2);
  t.equal(accounts.find('alice', 'example.test'), alice, 'the old set still answers as it was');
});

t.test('parseUsers: bad lines are reported with their line number, the rest loads', async (t) => {
  const good = makeAccount('alice@example.test', 'pw-one-1234', 'example.test', 'phone');
  const h = `md5=${good.ha1.md5} sha256=${good.ha1.sha256}`;
  const lines = [
    '# comment', //                                                           1
    '', //                                                                    2
    '   # indented comment', //                                             3
    formatAccount(good), //                                                   4
    'nobody', //                                                              5
    `sip:carol@example.test kind=phone realm=r ${h}`, //                      6
    `dave@example.test kind=robot realm=r ${h}`, //                           7
    `erin@example.test kind=phone realm=r ${h} colour=blue`, //              8
    `frank@example.test kind=phone ${h}`, //                                  9
    `gina@example.test kind=phone realm=r md5=abc sha256=${good.ha1.sha256}`, // 10
    `hugo@example.test kind=phone realm=r md5=${good.ha1.md5} sha256=xyz`, // 11
    `ines@example.test kind=phone kind=door realm=r ${h}`, //                 12
    `jo@example.test kind realm=r ${h}`, //                                  13
    `kim@example.test kind=phone realm=a"b ${h}`, //                         14
    `  lea@EXAMPLE.test\tkind=door   realm=r md5=${good.ha1.md5.toUpperCase()} sha256=${good.ha1.sha256}  \r`, // 15
    `alice@Example.Test kind=door realm=other ${h}`, //                        16
    `mo@ex_ample.test kind=phone realm=r ${h}`, //                            17
  ];
  const { accounts, problems } = parseUsers(lines.join('\n'));
  t.same(
    accounts.list().map((a) => a.aor),
    ['alice@example.test', 'lea@example.test'],
  );
  t.equal(accounts.get('alice@example.test')?.kind, 'phone', 'the first of a duplicate wins');
  t.equal(accounts.get('lea@example.test')?.ha1.md5, good.ha1.md5, 'hex lower-cased; tabs, CR and extra spaces accepted');
  t.same(
    problems.map((p) => p.line),
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17],
  );
  const reason = (line: number) => problems.find((p) => p.line === line)?.reason ?? '';
  t.match(reason(5), /must be user@domain/);
  t.match(reason(6), /without "sip:"/);
  t.match(reason(7), /^dave@example\.test: kind=robot: expected phone or door/);
  t.match(reason(8), /unknown field "colour=blue"/);
  t.match(reason(9), /missing realm=/);
  t.match(reason(10), /md5= must be 32 hexadecimal digits/);
  t.match(reason(11), /sha256= must be 64 hexadecimal digits/);
  t.match(reason(12), /kind= given twice/);
  t.match(reason(13), /kind needs a value/);
  t.match(reason(14), /realm=a"b/);
  t.match(reason(16), /^alice@example\.test: duplicate of line 4; this line is ignored$/);
  t.match(reason(17), /domain of/);
  t.same(parseUsers(''), { accounts: new Accounts(), problems: [] });
  const long = parseUsers(`x@y.test ${'z'.repeat(100)}=1`).problems[0].reason;
  t.match(long, /unknown field "z{40}…"/, 'long fields are cut in messages');
});

t.test('Accounts keeps the first of each AOR', async (t) => {
  const a = makeAccount('a@x.test', 'p', 'r', 'phone');
  const b = makeAccount('a@X.TEST', 'q', 'r', 'door');
  const accounts = new Accounts([a, b]);
  t.equal(accounts.size, 1);
  t.equal(accounts.get('a@x.test'), a);
});

t.test('loadUsersFile', async (t) => {
  const dir = t.testdir({ users: `${USERS_FILE_HEADER}\n${formatAccount(makeAccount('a@x.test', 'p', 'r', 'phone'))}\nbad line\n`, sub: {} });
  const { accounts, problems } = loadUsersFile(join(dir, 'users'));
  t.equal(accounts.size, 1);
  t.same(problems, [{ line: 3, reason: 'the account "bad" must be user@domain' }]);
  const missing = join(dir, 'nope');
  t.throws(() => loadUsersFile(missing), { message: `${missing}: cannot read the users file: no such file` });
  t.throws(() => loadUsersFile(join(dir, 'sub')), /is a directory, not a file/);
  if (process.getuid?.() !== 0) {
    chmodSync(join(dir, 'users'), 0o000);
    t.throws(() => loadUsersFile(join(dir, 'users')), /permission denied/);
  }
});

t.test('add, replace and remove keep every other line, atomically; new files 0600, no world access ever', async (t) => {
  const dir = t.testdir();
  const path = join(dir, 'users');
  const alice = makeAccount('alice@example.test', 'first-password', 'example.test', 'phone');
  t.equal(addToUsersFile(path, alice), 'added');
  t.equal(readFileSync(path, 'utf8'), `${USERS_FILE_HEADER}\n${formatAccount(alice)}\n`, 'created with the header');
  t.equal(mode(path), 0o600);

  // Someone edits the file by hand: comments, a bad line, CRLF, no final newline; and loosens the mode.
  const door = makeAccount('door-jaures@example.test', 'door-password', 'example.test', 'door');
  const handmade = `${readFileSync(path, 'utf8')}\n# the doors\r\nnot an account\n${formatAccount(door)}\r\n# end`;
  writeFileSync(path, handmade);
  chmodSync(path, 0o644);

  const alice2 = makeAccount('sip:alice@EXAMPLE.test', 'second-password', 'example.test', 'phone');
  t.equal(addToUsersFile(path, alice2), 'replaced');
  t.equal(readFileSync(path, 'utf8'), `${handmade.replace(formatAccount(alice), formatAccount(alice2))}\n`, 'only the account line changed');
  t.equal(mode(path), 0o640, 'world access removed, group read kept (root:portier 0640 stays readable by the service)');
  t.equal(loadUsersFile(path).accounts.get('alice@example.test')?.ha1.md5, alice2.ha1.md5);

  const bob = makeAccount('bob@example.test', 'bob-password', 'example.test', 'phone');
  t.equal(addToUsersFile(path, bob), 'added');
  const afterBob = readFileSync(path, 'utf8');
  t.equal(afterBob, `${handmade.replace(formatAccount(alice), formatAccount(alice2))}\n${formatAccount(bob)}\n`, 'appended');

  t.equal(removeFromUsersFile(path, 'door-jaures@example.test'), true);
  t.equal(readFileSync(path, 'utf8'), afterBob.replace(`${formatAccount(door)}\r\n`, ''), 'only the removed line is gone');
  t.equal(removeFromUsersFile(path, 'door-jaures@example.test'), false, 'false when absent');
  t.equal(removeFromUsersFile(path, 'sip:nobody@example.test'), false);
  t.same(
    loadUsersFile(path).accounts.list().map((a) => a.aor),
    ['alice@example.test', 'bob@example.test'],
  );
  t.same(loadUsersFile(path).problems, [{ line: 5, reason: 'the account "not" must be user@domain' }]);
  t.same(readdirSync(dir), ['users'], 'no temporary file left behind');
  t.equal(mode(path), 0o640, "the mode chosen by the operator stays");
  t.throws(() => removeFromUsersFile(join(dir, 'nope'), 'a@b.test'), /nope: cannot read the users file: no such file/);
  t.throws(() => removeFromUsersFile(path, 'bad'), /user@domain/);
});

t.test('remove takes every line of the account, so that no older one comes back', async (t) => {
  const dir = t.testdir();
  const path = join(dir, 'users');
  const a1 = makeAccount('a@x.test', 'one', 'r', 'phone');
  const a2 = makeAccount('a@x.test', 'two', 'r', 'door');
  writeFileSync(path, `${formatAccount(a1)}\n${formatAccount(a2)}\na@x.test kind=bogus\nb@x.test kind=phone\n`);
  t.equal(parseUsers(readFileSync(path, 'utf8')).problems.length, 3);
  // Replacing changes the line in effect (the first), the duplicate stays as it was.
  const a3 = makeAccount('a@x.test', 'three', 'r', 'phone');
  t.equal(addToUsersFile(path, a3), 'replaced');
  t.equal(readFileSync(path, 'utf8').split('\n')[0], formatAccount(a3));
  t.equal(removeFromUsersFile(path, 'a@x.test'), true);
  t.equal(readFileSync(path, 'utf8'), 'b@x.test kind=phone\n');
  t.equal(loadUsersFile(path).accounts.get('a@x.test'), undefined);
});

t.test('a failed write leaves the file as it was and no temporary file', async (t) => {
  const dir = t.testdir();
  const path = join(dir, 'users');
  const a = makeAccount('a@x.test', 'one', 'r', 'phone');
  addToUsersFile(path, a);
  const before = readFileSync(path, 'utf8');
  // The temporary file's name is taken by a directory: the write fails.
  mkdirSync(`${path}.tmp-${process.pid}`);
  t.throws(() => addToUsersFile(path, makeAccount('b@x.test', 'two', 'r', 'door')), { code: 'EISDIR' });
  t.equal(readFileSync(path, 'utf8'), before);
  t.throws(() => addToUsersFile(join(dir, 'no', 'dir', 'users'), a), { code: 'ENOENT' });
  t.notOk(existsSync(join(dir, 'no')));
  t.throws(() => addToUsersFile(dir, a), /cannot read the users file: is a directory/);
});

t.test('a failed rename removes the temporary file; an owner that cannot be kept is not an error', async (t) => {
  const fs = await import('node:fs');
  // The writing itself lives in src/auth/files.ts: that is where the file system fails.
  const files = await t.mockImport<typeof import('../../src/auth/files.js')>('../../src/auth/files.js', {
    'node:fs': {
      ...fs,
      renameSync: () => {
        throw Object.assign(new Error('EXDEV: cross-device link not permitted'), { code: 'EXDEV' });
      },
      fchownSync: () => {
        throw Object.assign(new Error('EPERM: operation not permitted'), { code: 'EPERM' });
      },
    },
  });
  const { addToUsersFile: add } = await t.mockImport<typeof import('../../src/auth/users.js')>('../../src/auth/users.js', { '../../src/auth/files.js': files });
  const dir = t.testdir();
  const path = join(dir, 'users');
  addToUsersFile(path, makeAccount('a@x.test', 'one', 'r', 'phone'));
  const before = readFileSync(path, 'utf8');
  t.throws(() => add(path, makeAccount('b@x.test', 'two', 'r', 'phone')), { code: 'EXDEV' });
  t.equal(readFileSync(path, 'utf8'), before);
  t.same(readdirSync(dir), ['users'], 'temporary file removed');
});

t.test('a rewrite keeps the owner of the file (when run as root)', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, async (t) => {
  const dir = t.testdir();
  const path = join(dir, 'users');
  addToUsersFile(path, makeAccount('a@x.test', 'one', 'r', 'phone'));
  chownSync(path, 4321, 4322);
  addToUsersFile(path, makeAccount('b@x.test', 'two', 'r', 'phone'));
  t.equal(statSync(path).uid, 4321);
  t.equal(statSync(path).gid, 4322);
  t.equal(mode(path), 0o600);
});

t.test('the rename makes the temporary file take the place of the users file', async (t) => {
  const dir = t.testdir();
  const path = join(dir, 'users');
  addToUsersFile(path, makeAccount('a@x.test', 'one', 'r', 'phone'));
  const inode = statSync(path).ino;
  addToUsersFile(path, makeAccount('b@x.test', 'two', 'r', 'phone'));
  t.not(statSync(path).ino, inode, 'a new file replaced the old one (readers never see half a file)');
  t.equal(loadUsersFile(path).accounts.size, 2);
});

t.test('accounts are usable as plain data', async (t) => {
  const a: Account = makeAccount('a@x.test', 'one', 'r', 'door');
  t.same(JSON.parse(JSON.stringify(a)), a);
});
