// SIPVicious (Debian's sipvicious 0.3.3: svmap, svwar, svcrack) against a
// running Portier with digest authentication, on loopback (issue 5, "done
// when"): the scanner finds the server, the extension enumerator cannot tell
// accounts from unknown names, the password cracker is banned long before it
// reaches the right password, and with security.drop-scanners (the default)
// none of them gets any answer at all.
//
// What the tools do, learnt by running them by hand (0.3.3):
// - Every tool sends `User-Agent: friendly-scanner`.
// - svwar and svcrack ignore -b (their main() does not pass it on) and bind
//   to every interface; their traffic still only goes to 127.0.0.1, and -x
//   127.0.0.1 keeps Via/Contact on loopback. So all three always come from
//   127.0.0.1: each scenario gets its own Portier (bans are per source).
// - svwar first sends a request for a random number to learn what an unknown
//   extension gets. A 401/407 there makes it stop at once ("SIP server
//   replied with an authentication request for an unknown extension"); with
//   --force it compares first lines: an account whose answer is the same as
//   the random name's is "an unknown response" and it stops.
// - svcrack computes MD5 only and reads the first challenge header: against
//   the default [SHA-256, MD5] it dies ("Unknown algorithm: sha-256", then a
//   Python UnboundLocalError) without sending a single guess. To meet the ban
//   it needs a server that offers MD5 first ([MD5, SHA-256], as sites with
//   old door stations configure). It waits 10 s for a first answer and, once
//   answers stop, --maximumtime seconds plus a 10 s socket timeout.
// - None of them exits non-zero for "found nothing".

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { freeUdpPort, interopPortier, killTools, metric, runTool, toolMissing, usersLine, type InteropPortier, type ToolRun } from '../helpers/tools.js';

const missing = toolMissing('svmap') || toolMissing('svwar') || toolMissing('svcrack');

const REALM = 'example.test';

const PASSWORDS: Record<string, string> = {
  alice: 'Xq7-alice-Secret',
  bob: 'bob-Zr9-secret',
  '100': 'hundred-Pw-77',
  door1: 'door1-Kk3-pass',
};
const ACCOUNTS = Object.keys(PASSWORDS);

/** 40 guesses as a cracker's list would have them; alice's real password is the 30th. */
const GUESSES = [
  '123456', 'password', '1234', '12345', '12345678', 'alice', 'alice123', 'qwerty', '111111', '1234567',
  'admin', 'letmein', 'welcome', 'secret', 'sip', 'voip', 'changeme', 'passw0rd', '000000', '123123',
  'abc123', 'iloveyou', 'monkey', 'dragon', 'master', 'sunshine', 'princess', 'football', 'shadow', PASSWORDS.alice,
  'superman', 'trustno1', 'hello', 'freedom', 'whatever', 'qazwsx', 'ninja', 'mustang', 'access', 'batman',
];
const REAL_AT = GUESSES.indexOf(PASSWORDS.alice) + 1;

/** Names svwar tries: the four accounts among names that do not exist. */
const NAMES = ['admin', 'alice', 'carol', 'bob', '1000', '100', 'test', 'door1', 'mallory', '101'];

const dir = t.testdir({});
const home = join(dir, 'home'); // sipvicious keeps sessions under ~/.sipvicious
mkdirSync(home);
const env = { ...process.env, HOME: home };
writeFileSync(join(dir, 'users'), ACCOUNTS.map((u) => usersLine(u, PASSWORDS[u], { realm: REALM, kind: u === 'door1' ? 'door' : 'phone' })).join('\n') + '\n');
writeFileSync(join(dir, 'guesses.txt'), GUESSES.join('\n') + '\n');
writeFileSync(join(dir, 'control.txt'), ['guess-one', 'guess-two', PASSWORDS.alice, 'guess-four'].join('\n') + '\n');
writeFileSync(join(dir, 'names.txt'), NAMES.join('\n') + '\n');
for (const a of ACCOUNTS) writeFileSync(join(dir, `names-${a}.txt`), [a, ...NAMES.filter((n) => n !== a)].join('\n') + '\n');

t.teardown(killTools);

async function portier(t: Test, o: { dropScanners: boolean; algorithms?: string }): Promise<InteropPortier> {
  return interopPortier(t, dir, {
    auth: o.algorithms !== undefined ? [`algorithms: ${o.algorithms}`] : [],
    extra: ['security:', `  drop-scanners: ${o.dropScanners}`, '  auth-failures: {max: 10, window: 600, ban: 300, max-ban: 86400}'],
  });
}

/**
 * What the tool reported, for t.comment: its log lines and result tables,
 * without its debug dumps of raw messages; a response it echoes is cut to its
 * status line, and a line it printed several times is shown once, counted.
 */
function summary(r: ToolRun): string {
  const seen = new Map<string, number>();
  for (const raw of (r.stderr + r.stdout).split('\n')) {
    if (!/^(INFO|WARNING|ERROR|CRITICAL):|^[+|]|^Unknown algorithm|^\w+Error:/.test(raw)) continue;
    const l = raw.replace(/Response: '(SIP\/2\.0 [0-9]{3} [^\\]*).*/, "Response: '$1...'");
    seen.set(l, (seen.get(l) ?? 0) + 1);
  }
  return [...seen].map(([l, n]) => (n > 1 && !/^[+|]/.test(l) ? `${l} (x${n})` : l)).join('\n');
}

function finished(t: Test, r: ToolRun, what: string): void {
  t.notOk(r.timedOut, `${what} finished on its own (${r.ms} ms)`);
  t.equal(r.code, 0, `${what} exits 0`, { output: r.output.slice(-1500) });
}

async function svmap(p: InteropPortier): Promise<ToolRun> {
  const local = await freeUdpPort();
  return runTool('svmap', ['-p', String(p.port), '-b', '127.0.0.1', '-P', String(local), '127.0.0.1'], { timeoutMs: 20_000, env });
}

async function svwar(p: InteropPortier, o: { method: string; dictionary: string; force?: boolean }): Promise<ToolRun> {
  const local = await freeUdpPort();
  const args = ['-p', String(p.port), '-b', '127.0.0.1', '-x', '127.0.0.1', '-P', String(local), '--domain', REALM, '-d', join(dir, o.dictionary), '-m', o.method, '-vv'];
  if (o.force === true) args.push('--force');
  return runTool('svwar', [...args, '127.0.0.1'], { timeoutMs: 30_000, env });
}

async function svcrack(p: InteropPortier, words: string): Promise<ToolRun> {
  const local = await freeUdpPort();
  const args = ['-p', String(p.port), '-b', '127.0.0.1', '-x', '127.0.0.1', '-P', String(local), '--domain', REALM, '-u', 'alice', '-d', join(dir, words), '--maximumtime', '1', '-vv'];
  return runTool('svcrack', [...args, '127.0.0.1'], { timeoutMs: 40_000, env });
}

/** Passwords svcrack says it sent (its -vv "trying X" lines). */
const triedOf = (r: ToolRun) => [...r.output.matchAll(/trying (.*)$/gm)].map((m) => m[1]);

const failures = async (p: InteropPortier) => {
  const m = await p.metrics();
  const reasons = ['wrong_password', 'unknown_user', 'identity_mismatch', 'malformed', 'bad_nonce', 'replay', 'stale'];
  return Object.fromEntries(reasons.map((r) => [r, metric(m, 'portier_auth_failures_total', { reason: r })]));
};

t.test('drop-scanners off: the tools meet the real authentication', { skip: missing }, async (t) => {
  t.test('svmap finds Portier (a 407 to its OPTIONS, no Server header: "unknown" user agent)', async (t) => {
    const p = await portier(t, { dropScanners: false });
    const r = await svmap(p);
    t.comment('svmap printed:\n' + summary(r));
    finished(t, r, 'svmap');
    t.match(r.output, new RegExp(`\\| 127\\.0\\.0\\.1:${p.port}\\s+\\| unknown\\s+\\|`), 'svmap lists the server');
    t.notMatch(r.output, /found nothing/);
  });

  t.test('svwar (REGISTER, INVITE, OPTIONS) finds no account name', async (t) => {
    const p = await portier(t, { dropScanners: false });
    const runs: Array<{ what: string; account?: string; run: Promise<ToolRun> }> = [];
    for (const method of ['REGISTER', 'INVITE', 'OPTIONS']) {
      // As svwar is normally run: its first check sees a random name challenged.
      runs.push({ what: `svwar -m ${method}`, run: svwar(p, { method, dictionary: 'names.txt' }) });
      // --force: each account in turn as the first name tried after the random one.
      for (const account of ACCOUNTS) {
        runs.push({ what: `svwar -m ${method} --force (${account} first)`, account, run: svwar(p, { method, dictionary: `names-${account}.txt`, force: true }) });
      }
    }
    for (const { what, account, run } of runs) {
      const r = await run;
      t.comment(`${what} printed:\n` + summary(r));
      finished(t, r, what);
      t.match(r.output, /WARNING:root:found nothing/, `${what}: found nothing`);
      t.notMatch(r.output, /extension '[^']*' (exists|probably exists)/, `${what}: reports no extension`);
      t.notMatch(r.output, /\| Extension\s+\| Authentication/, `${what}: prints no result table`);
      for (const a of ACCOUNTS) t.notMatch(r.output, new RegExp(`^\\| ${a}\\s+\\|`, 'm'), `${what}: does not list ${a}`);
      if (account === undefined) {
        t.match(r.output, /SIP server replied with an authentication request for an unknown extension/, `${what}: svwar itself says it cannot tell`);
      } else {
        const asked = [...r.output.matchAll(/sending request for (.*)$/gm)].map((m) => m[1]);
        t.comment(`${what} asked for: ${asked.join(', ')}`);
        t.equal(asked[0], account, `${what}: ${account} was asked for`);
        t.match(r.output, /We got an unknown response/, `${what}: ${account}'s answer is the random name's answer`);
      }
    }
    const f = await failures(p);
    t.same(Object.values(f).reduce((a, b) => a + b, 0), 0, 'svwar sends no credentials: no failures counted', f);
    t.equal(metric(await p.metrics(), 'portier_bans_total'), 0, 'nobody banned');
  });

  t.test('svcrack against the default algorithms [SHA-256, MD5]: it cannot compute SHA-256 and sends no guess', async (t) => {
    const p = await portier(t, { dropScanners: false });
    const r = await svcrack(p, 'guesses.txt');
    t.comment('svcrack printed:\n' + summary(r));
    finished(t, r, 'svcrack');
    t.match(r.output, /Unknown algorithm: sha-256/);
    t.match(r.output, /WARNING:root:found nothing/);
    t.notMatch(r.output, /The password for/);
    const f = await failures(p);
    t.equal(f.wrong_password + f.unknown_user + f.malformed, 0, 'no guess reached Portier', f);
  });

  t.test('svcrack with MD5 offered first, control: the password third in its list is found', async (t) => {
    // Shows svcrack does work against Portier: the next test's result is the ban's doing.
    const p = await portier(t, { dropScanners: false, algorithms: '[MD5, SHA-256]' });
    const r = await svcrack(p, 'control.txt');
    t.comment('svcrack printed:\n' + summary(r));
    finished(t, r, 'svcrack');
    t.match(r.output, new RegExp(`The password for alice is ${PASSWORDS.alice}`), 'svcrack cracks alice when nothing stops it');
    t.same(triedOf(r), ['guess-one', 'guess-two', PASSWORDS.alice]);
    t.equal((await failures(p)).wrong_password, 2, 'Portier checked two wrong guesses');
    t.equal(metric(await p.metrics(), 'portier_bans_total'), 0, 'two failures: no ban');
  });

  t.test(`svcrack with MD5 offered first: banned at its 10th guess, the password being ${REAL_AT}th`, async (t) => {
    const p = await portier(t, { dropScanners: false, algorithms: '[MD5, SHA-256]' });
    const r = await svcrack(p, 'guesses.txt');
    t.comment('svcrack printed:\n' + summary(r));
    finished(t, r, 'svcrack');
    t.notMatch(r.output, /The password for/, 'svcrack does not find the password');
    t.notMatch(r.output, new RegExp(PASSWORDS.alice), 'nor prints it');
    t.match(r.output, /since we last received a response - stopping/, 'svcrack gives up when Portier goes silent');
    t.match(r.output, /WARNING:root:found nothing/);
    const tried = triedOf(r);
    t.comment(`svcrack sent ${tried.length} guesses: ${tried.join(', ')}`);
    t.ok(tried.length < 20, `svcrack got to send ${tried.length} guesses, fewer than 20`);
    t.notOk(tried.includes(PASSWORDS.alice), 'the real password was never tried');

    const m = await p.metrics();
    const f = await failures(p);
    const checked = f.wrong_password + f.unknown_user;
    t.comment(`Portier: ${JSON.stringify(f)}; bans_total ${metric(m, 'portier_bans_total')}, bans_active ${metric(m, 'portier_bans_active')}, refused banned ${metric(m, 'portier_requests_refused_total', { reason: 'banned' })}`);
    t.ok(checked > 0 && checked < 20, `Portier checked ${checked} guesses, fewer than 20`);
    t.equal(f.wrong_password, 10, 'each guess checked was a wrong password for a real account; the 10th (security.auth-failures.max) started the ban');
    t.equal(metric(m, 'portier_bans_total'), 1, 'one ban started');
    t.equal(metric(m, 'portier_bans_active'), 1, 'and still running');
    t.ok(metric(m, 'portier_requests_refused_total', { reason: 'banned' }) > 0, 'what svcrack sent afterwards was dropped');
    t.equal(metric(m, 'portier_requests_refused_total', { reason: 'scanner' }), 0, 'not dropped as a scanner: drop-scanners is off');
  });
});

t.test('drop-scanners on (the default): svmap, svwar and svcrack get no answer at all', { skip: missing }, async (t) => {
  // MD5 first, so that svcrack could guess if it were answered.
  const p = await portier(t, { dropScanners: true, algorithms: '[MD5, SHA-256]' });
  const [map, war, warInvite, crack] = await Promise.all([
    svmap(p),
    svwar(p, { method: 'REGISTER', dictionary: 'names.txt' }),
    svwar(p, { method: 'INVITE', dictionary: 'names-alice.txt', force: true }),
    svcrack(p, 'guesses.txt'),
  ]);
  t.comment('svmap printed:\n' + summary(map));
  finished(t, map, 'svmap');
  t.match(map.output, /found nothing/, 'svmap finds nothing');
  t.notMatch(map.output, /SIP Device/, 'and prints no table');

  for (const [what, r] of [['svwar', war], ['svwar -m INVITE --force', warInvite]] as const) {
    t.comment(`${what} printed:\n` + summary(r));
    finished(t, r, what);
    t.match(r.output, /ERROR:TakeASip:socket error: timed out/, `${what}: its first request is never answered`);
    t.match(r.output, /WARNING:root:found nothing/, `${what}: found nothing`);
  }

  t.comment('svcrack printed:\n' + summary(crack));
  finished(t, crack, 'svcrack');
  t.match(crack.output, /ERROR:ASipOfRedWine:no server response/, 'svcrack gets no answer');
  t.equal(triedOf(crack).length, 0, 'and so sends no guess');
  t.match(crack.output, /WARNING:root:found nothing/);

  const m = await p.metrics();
  const scanner = metric(m, 'portier_requests_refused_total', { reason: 'scanner' });
  t.comment(`Portier: requests_refused{reason="scanner"} ${scanner}`);
  t.ok(scanner >= 4, `every tool's requests were dropped as a scanner's (${scanner})`);
  const f = await failures(p);
  t.same(Object.values(f).reduce((a, b) => a + b, 0), 0, 'no authentication was even attempted', f);
  t.equal(metric(m, 'portier_bans_total'), 0, 'no ban needed');
});
