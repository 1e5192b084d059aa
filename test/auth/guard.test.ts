import t from 'tap';
import { SCANNER_USER_AGENTS, SourceGuard, isScanner, type GuardSettings } from '../../src/auth/guard.js';

const T0 = Date.UTC(2025, 0, 1);

/** A guard on a hand-moved clock. */
function guard(over: Partial<GuardSettings> = {}): { g: SourceGuard; clock: { now: number; advance(seconds: number): void } } {
  const clock = {
    now: T0,
    advance(seconds: number) {
      this.now += seconds * 1000;
    },
  };
  const settings: GuardSettings = {
    rate: { perSource: 0, burst: 1 },
    authFailures: { max: 0, window: 60, ban: 300, maxBan: 3600 },
    exempt: [],
    dropScanners: true,
    ...over,
  };
  return { g: new SourceGuard(settings, () => clock.now), clock };
}

const FAILURES = { max: 3, window: 60, ban: 300, maxBan: 3600 };

/** `n` failures from address; the result of the last. */
function fail(g: SourceGuard, address: string, n: number) {
  let last = null;
  for (let i = 0; i < n; i++) last = g.authFailed(address);
  return last;
}

function admitMany(g: SourceGuard, address: string, n: number): Record<string, number> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = g.admit(address);
    counts[r] = (counts[r] ?? 0) + 1;
  }
  return counts;
}

t.test('token bucket: burst, then limited; refills at perSource per second up to burst', async (t) => {
  const { g, clock } = guard({ rate: { perSource: 10, burst: 20 } });
  t.same(admitMany(g, '192.0.2.1', 25), { ok: 20, limited: 5 }, 'a new source has the burst');
  t.equal(g.stats.limited, 5);
  clock.advance(0.05);
  t.equal(g.admit('192.0.2.1'), 'limited', 'half a token after 50 ms is not enough');
  clock.advance(0.05);
  t.equal(g.admit('192.0.2.1'), 'ok', 'one token after 100 ms at 10/s');
  t.equal(g.admit('192.0.2.1'), 'limited');
  clock.advance(1);
  t.same(admitMany(g, '192.0.2.1', 12), { ok: 10, limited: 2 }, 'one second refills ten');
  clock.advance(3600);
  t.same(admitMany(g, '192.0.2.1', 21), { ok: 20, limited: 1 }, 'refill is capped at burst');
  t.same(admitMany(g, '192.0.2.2', 20), { ok: 20 }, 'another source has its own bucket');
  clock.now -= 10_000;
  t.equal(g.admit('192.0.2.1'), 'limited', 'a clock stepping back gives no tokens');
  clock.now += 10_100;
  t.equal(g.admit('192.0.2.1'), 'ok', 'and takes none away');
});

t.test('sustained rate: exactly perSource per second get through', async (t) => {
  const { g, clock } = guard({ rate: { perSource: 50, burst: 1 } });
  let ok = 0;
  for (let ms = 0; ms < 10_000; ms++) {
    if (g.admit('198.51.100.9') === 'ok') ok++;
    clock.now += 1;
  }
  t.equal(ok, 500, '10 s at 1000 requests/s, limited to 50/s');
});

t.test('perSource 0: no rate limit, only bans', async (t) => {
  const { g } = guard({ rate: { perSource: 0, burst: 1 }, authFailures: FAILURES });
  t.same(admitMany(g, '192.0.2.1', 10_000), { ok: 10_000 });
  fail(g, '192.0.2.1', 3);
  t.equal(g.admit('192.0.2.1'), 'banned', 'bans still apply');
  t.same(admitMany(g, '192.0.2.2', 1000), { ok: 1000 }, 'others pass unlimited while a ban is on record');
  t.equal(g.stats.limited, 0);
});

t.test('exempt sources are never limited nor banned (IPv4, IPv6, IPv4-mapped)', async (t) => {
  const { g } = guard({
    rate: { perSource: 1, burst: 1 },
    authFailures: { ...FAILURES, max: 1 },
    exempt: ['10.20.0.0/16', '2001:db8:1::/48'],
  });
  for (const a of ['10.20.1.2', '2001:db8:1::5', '::ffff:10.20.9.9']) {
    t.ok(g.isExempt(a), `${a} is exempt`);
    t.same(admitMany(g, a, 100), { ok: 100 }, `${a} not limited`);
    t.equal(fail(g, a, 10), null, `${a}: failures start no ban`);
    t.notOk(g.isBanned(a));
    t.equal(g.admit(a), 'ok');
  }
  t.equal(g.restoreBans([{ address: '10.20.1.2', until: T0 + 60_000, level: 1 }]), 0, 'a restored ban of an exempt source is skipped');
  t.equal(g.admit('10.20.1.2'), 'ok');
  for (const a of ['10.21.0.1', '2001:db8:2::1', '::ffff:10.21.0.1']) {
    t.notOk(g.isExempt(a), `${a} is not exempt`);
    t.same(admitMany(g, a, 3), { ok: 1, limited: 2 }, `${a} is limited`);
  }
  t.equal(g.activeBans(), 0);
  t.same(g.stats.bansStarted, 0);
});

t.test('a ban starts at exactly max failures within the window', async (t) => {
  const { g, clock } = guard({ authFailures: { max: 5, window: 60, ban: 300, maxBan: 3600 } });
  for (let i = 1; i < 5; i++) {
    t.equal(g.authFailed('203.0.113.5'), null, `failure ${i}: no ban`);
    clock.advance(14);
  }
  t.notOk(g.isBanned('203.0.113.5'));
  const ban = g.authFailed('203.0.113.5');
  t.same(ban, { address: '203.0.113.5', until: clock.now + 300_000, level: 1 }, 'the fifth, 56 s after the first, starts a 300 s ban');
  t.equal(g.stats.bansStarted, 1);
  t.ok(g.isBanned('203.0.113.5'));
  t.equal(g.admit('203.0.113.5'), 'banned');
  t.equal(g.stats.bannedDrops, 1);
  t.equal(g.activeBans(), 1);
  t.same(g.bans(), [ban]);
});

t.test('failures spread beyond the window start no ban', async (t) => {
  const { g, clock } = guard({ authFailures: { max: 3, window: 60, ban: 300, maxBan: 3600 } });
  for (let i = 0; i < 20; i++) {
    t.equal(g.authFailed('203.0.113.6'), null);
    clock.advance(30);
  }
  t.equal(g.stats.bansStarted, 0, 'one every 30 s never makes 3 in a 60 s window');
  const edge = guard({ authFailures: { max: 2, window: 60, ban: 300, maxBan: 3600 } });
  edge.g.authFailed('203.0.113.7');
  edge.clock.advance(60);
  t.equal(edge.g.authFailed('203.0.113.7'), null, 'a failure exactly window seconds after the first opens a new window');
  edge.clock.advance(59.999);
  t.not(edge.g.authFailed('203.0.113.7'), null, 'and one just inside it counts');
});

t.test('the window is fixed, anchored at its first failure (documented trade-off)', async (t) => {
  const { g, clock } = guard({ authFailures: { max: 3, window: 60, ban: 300, maxBan: 3600 } });
  g.authFailed('203.0.113.8');
  clock.advance(50);
  g.authFailed('203.0.113.8');
  clock.advance(20);
  t.equal(g.authFailed('203.0.113.8'), null, 't=70: new window (count 1)');
  clock.advance(5);
  t.equal(g.authFailed('203.0.113.8'), null, 't=75: count 2, although three failures fell within the last 60 s');
  clock.advance(5);
  t.not(g.authFailed('203.0.113.8'), null, 't=80: third in the window opened at 70');
});

t.test('a ban expires; failures during it are not counted and do not extend it', async (t) => {
  const { g, clock } = guard({ authFailures: FAILURES });
  const ban = fail(g, '203.0.113.9', 3);
  t.ok(ban);
  clock.advance(299);
  t.equal(fail(g, '203.0.113.9', 10), null, 'failures while banned start nothing');
  t.equal(g.admit('203.0.113.9'), 'banned');
  t.same(g.bans()[0].until, ban!.until, 'the end did not move');
  clock.advance(1);
  t.notOk(g.isBanned('203.0.113.9'), 'over after exactly 300 s');
  t.equal(g.admit('203.0.113.9'), 'ok');
  t.equal(g.activeBans(), 0);
  t.same(g.bans(), []);
  t.equal(fail(g, '203.0.113.9', 2), null, 'the budget starts afresh after a ban: the failures during it were not kept');
});

t.test('repeat bans double, capped at maxBan; a ban ends before the next starts', async (t) => {
  const { g, clock } = guard({ authFailures: { max: 3, window: 60, ban: 300, maxBan: 1000 } });
  const a = '198.51.100.20';
  const durations: number[] = [];
  const levels: number[] = [];
  for (let i = 0; i < 5; i++) {
    const ban = fail(g, a, 3)!;
    t.ok(ban, `ban ${i + 1}`);
    durations.push((ban.until - clock.now) / 1000);
    levels.push(ban.level);
    clock.now = ban.until;
  }
  t.same(durations, [300, 600, 1000, 1000, 1000]);
  t.same(levels, [1, 2, 3, 4, 5]);
  const wide = guard({ authFailures: { max: 1, window: 60, ban: 300, maxBan: 86400 } });
  const seen: number[] = [];
  for (let i = 0; i < 10; i++) {
    const ban = wide.g.authFailed(a)!;
    seen.push((ban.until - wide.clock.now) / 1000);
    wide.clock.now = ban.until + 1000;
  }
  t.same(seen, [300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800, 86400], '300→600→1200… capped at 86400');
});

t.test('the level is remembered for maxBan after a ban ends, then decays to the first', async (t) => {
  const { g, clock } = guard({ authFailures: { max: 1, window: 60, ban: 300, maxBan: 3600 } });
  const a = '198.51.100.21';
  let ban = g.authFailed(a)!;
  t.equal(ban.level, 1);
  clock.now = ban.until + 3600_000 - 1;
  ban = g.authFailed(a)!;
  t.same([ban.level, (ban.until - clock.now) / 1000], [2, 600], 'just inside the memory: doubled');
  clock.now = ban.until + 3600_000;
  ban = g.authFailed(a)!;
  t.same([ban.level, (ban.until - clock.now) / 1000], [1, 300], 'maxBan after the end: back to the first level');
});

t.test('isolation: one address banned, others not', async (t) => {
  const { g } = guard({ rate: { perSource: 1, burst: 2 }, authFailures: FAILURES });
  fail(g, '203.0.113.1', 3);
  fail(g, '203.0.113.2', 2);
  fail(g, '2001:db8::1', 3);
  t.equal(g.admit('203.0.113.1'), 'banned');
  t.equal(g.admit('203.0.113.2'), 'ok', 'two failures are not a ban');
  t.equal(g.admit('203.0.113.3'), 'ok');
  t.equal(g.admit('2001:db8::1'), 'banned');
  t.equal(g.admit('2001:db8::2'), 'ok');
  t.same(admitMany(g, '203.0.113.1', 5), { banned: 5 }, 'banned sources are counted as banned, not limited');
  t.equal(g.stats.limited, 0);
  t.equal(g.stats.bannedDrops, 7);
  t.equal(g.activeBans(), 2);
  t.same(g.bans().map((b) => b.address).sort(), ['2001:db8::1', '203.0.113.1']);
});

t.test('IPv4-mapped IPv6 and plain IPv4 are one host for bans', async (t) => {
  const { g } = guard({ authFailures: FAILURES });
  const ban = fail(g, '::ffff:203.0.113.50', 3);
  t.equal(ban!.address, '203.0.113.50', 'stored as plain IPv4');
  t.ok(g.isBanned('203.0.113.50'));
  t.equal(g.admit('203.0.113.50'), 'banned');
  t.equal(g.admit('::ffff:203.0.113.50'), 'banned');
  t.equal(g.admit('::FFFF:203.0.113.50'), 'banned');
  g.admit('203.0.113.51');
  fail(g, '203.0.113.51', 3);
  t.equal(g.admit('::ffff:203.0.113.51'), 'banned', 'the other way round');
  t.equal(fail(g, '::ffff:203.0.113.51', 3), null, 'failures under the other spelling do not start a second ban');
  t.equal(g.admit('::FFFF:203.0.113.52'), 'ok', 'an unusual spelling, tracked before the ban');
  fail(g, '203.0.113.52', 3);
  t.equal(fail(g, '::FFFF:203.0.113.52', 3), null, 'its failures find the ban on record and start no second one');
  t.equal(g.admit('::FFFF:203.0.113.52'), 'banned', 'and from then on it is refused');
  t.equal(g.stats.bansStarted, 3);
});

t.test('bounded memory: sources are evicted, bans survive while the ban store has room', async (t) => {
  const { g, clock } = guard({ rate: { perSource: 1, burst: 2 }, authFailures: { ...FAILURES, max: 1 }, maxSources: 10, maxBans: 50 });
  for (let i = 0; i < 20; i++) g.authFailed(`192.0.2.${i}`);
  t.equal(g.activeBans(), 20);
  for (let i = 0; i < 5000; i++) g.admit(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
  t.equal((g as unknown as { sources: { size: number } }).sources.size, 10, 'the source cache holds maxSources');
  for (let i = 0; i < 20; i++) t.equal(g.admit(`192.0.2.${i}`), 'banned', `192.0.2.${i} still banned after its entry was evicted`);
  t.same(admitMany(g, '10.0.0.0', 3), { ok: 2, limited: 1 }, 'an evicted source comes back with a fresh bucket');
  for (let i = 0; i < 60; i++) g.authFailed(`198.51.100.${i}`);
  t.equal((g as unknown as { banStore: { size: number } }).banStore.size, 50, 'the ban store holds maxBans');
  t.equal(g.activeBans(), 50);
  t.equal(g.stats.bansEvicted, 30, 'running bans pushed out are counted');
  t.notOk(g.isBanned('192.0.2.0'), 'so the oldest bans are gone once both stores forgot them');
  t.ok(g.isBanned('198.51.100.59'));
  clock.advance(301);
  t.equal(g.activeBans(), 0);
  t.equal(g.admit('198.51.100.59'), 'ok');
});

t.test('bans() and restoreBans(): round trip, expired and malformed skipped, capped at maxBan', async (t) => {
  const a = guard({ authFailures: FAILURES });
  fail(a.g, '203.0.113.1', 3);
  fail(a.g, '2001:db8::7', 3);
  a.clock.advance(100);
  const saved = a.g.bans();
  t.equal(saved.length, 2);

  const b = guard({ rate: { perSource: 10, burst: 10 }, authFailures: FAILURES });
  b.clock.now = a.clock.now + 50_000;
  b.g.admit('203.0.113.1');
  const restored = b.g.restoreBans([
    ...saved,
    { address: '203.0.113.9', until: b.clock.now, level: 1 },
    { address: '203.0.113.10', until: b.clock.now - 1, level: 3 },
    { address: 'not-an-ip', until: b.clock.now + 1000, level: 1 },
    { address: '203.0.113.11', until: Number.NaN, level: 1 },
    { address: '203.0.113.12', until: b.clock.now + 1000, level: 0 },
    { address: '203.0.113.13', until: b.clock.now + 1000, level: 1.5 },
    null as never,
    { address: '203.0.113.14', until: b.clock.now + 100_000_000, level: 9 },
  ]);
  t.equal(restored, 3, 'two saved bans and the long one');
  t.equal(b.g.activeBans(), 3);
  t.equal(b.g.admit('203.0.113.1'), 'banned', 'applied to a source already tracked');
  t.equal(b.g.admit('2001:db8::7'), 'banned');
  t.notOk(b.g.isBanned('203.0.113.9'), 'ended exactly now: skipped');
  t.notOk(b.g.isBanned('203.0.113.10'));
  t.same(
    b.g.bans().find((x) => x.address === '203.0.113.14'),
    { address: '203.0.113.14', until: b.clock.now + 3600_000, level: 9 },
    'shortened to maxBan from now',
  );
  b.clock.now = saved[0].until;
  t.notOk(b.g.isBanned('203.0.113.1'), 'a restored ban ends when it would have');
  t.equal(b.g.admit('203.0.113.1'), 'ok');
  t.equal(b.g.authFailed('203.0.113.1'), null);
  t.equal(b.g.authFailed('203.0.113.1'), null);
  t.equal(b.g.authFailed('203.0.113.1')!.level, 2, 'its level came along');
  t.equal(b.g.restoreBans(b.g.bans()), 0, 'restoring what is already on record changes nothing');

  const off = guard({ authFailures: { ...FAILURES, max: 0 } });
  off.clock.now = b.clock.now;
  t.equal(off.g.restoreBans(b.g.bans()), 0, 'nothing restored while failure bans are off');
  t.equal(off.g.authFailed('203.0.113.1'), null);
});

t.test('authFailures.max 0: failures never ban', async (t) => {
  const { g } = guard({ authFailures: { ...FAILURES, max: 0 } });
  t.equal(fail(g, '203.0.113.1', 1000), null);
  t.equal(g.admit('203.0.113.1'), 'ok');
  t.equal(g.activeBans(), 0);
});

t.test('settings are checked', async (t) => {
  const make = (over: Partial<GuardSettings>) => () => guard(over);
  t.throws(make({ rate: { perSource: -1, burst: 1 } }), RangeError);
  t.throws(make({ rate: { perSource: 10, burst: 0 } }), { message: /rate.burst must be at least 1/ });
  t.doesNotThrow(make({ rate: { perSource: 0, burst: 0 } }), 'burst is irrelevant with the limit off');
  t.throws(make({ authFailures: { max: 1.5, window: 60, ban: 1, maxBan: 1 } }), /authFailures.max/);
  t.throws(make({ authFailures: { max: 3, window: 0, ban: 1, maxBan: 1 } }), /authFailures.window/);
  t.throws(make({ authFailures: { max: 3, window: 60, ban: 0, maxBan: 1 } }), /authFailures.ban/);
  t.throws(make({ authFailures: { max: 3, window: 60, ban: 300, maxBan: 60 } }), /maxBan must not be below ban/);
  t.throws(make({ maxSources: 0 }), /maxSources/);
  t.throws(make({ maxBans: 0 }), /maxBans/);
  t.throws(make({ exempt: ['10.0.0.1/8'] }), /host bits set/);
});

t.test('the default clock is Date.now', async (t) => {
  const g = new SourceGuard({ rate: { perSource: 1, burst: 1 }, authFailures: FAILURES, exempt: [], dropScanners: false });
  const before = Date.now();
  const ban = fail(g, '192.0.2.1', 3)!;
  t.ok(ban.until >= before + 300_000 && ban.until <= Date.now() + 300_000);
});

t.test('isScanner: attack tools by User-Agent, not real clients', async (t) => {
  for (const ua of [
    'friendly-scanner',
    'Friendly-Scanner',
    'sipvicious',
    'SIPVicious/0.3.4',
    'sipcli/v1.8',
    'VaxSIPUserAgent/3.1',
    'sundayddr',
    'iWar',
    'sip-scan',
  ]) {
    t.ok(isScanner(ua), ua);
  }
  for (const ua of [
    'Linphone-Desktop/5.2.0 (belledonne) linux/6.1, Qt 5.15.2 LinphoneCore/5.3.0',
    'LinphoneAndroid/5.2.5 (Pixel 7) LinphoneSDK/5.3.0',
    'Linhome/1.1.0 (iPhone) LinphoneSDK/5.2.0',
    'baresip v3.0.0 (x86_64/linux)',
    'sipsak 0.9.8',
    'SIPp',
    '2N Helios IP Verso',
    'Asterisk PBX 20.5.0',
    'FreeSWITCH-mod_sofia/1.10.10',
    'Grandstream GDS3710 1.0.11.3',
    'MicroSIP/3.21.3',
    'Zoiper rv2.10.19.3',
    '',
  ]) {
    t.notOk(isScanner(ua), ua);
  }
  t.notOk(isScanner(null));
  t.notOk(isScanner(undefined));
  t.ok(SCANNER_USER_AGENTS.every((s) => s === s.toLowerCase() && s !== ''), 'the list is lower case');
  t.ok(Object.isFrozen(SCANNER_USER_AGENTS));
});

t.test('a flood of other (forged) sources does not reset a guesser\'s failure count', async (t) => {
  const { g } = guard({ authFailures: FAILURES, rate: { perSource: 10, burst: 10 }, maxSources: 10 });
  t.equal(g.authFailed('198.51.100.7'), null);
  t.equal(g.authFailed('198.51.100.7'), null);
  // Many more sources than the source cache holds, between two guesses.
  for (let i = 0; i < 1000; i++) g.admit(`203.0.113.${i % 250}`) && g.admit(`2001:db8::${i.toString(16)}`);
  const ban = g.authFailed('198.51.100.7');
  t.ok(ban, 'the third failure still bans');
  t.equal(g.admit('198.51.100.7'), 'banned');
});
