// The routing decisions alone (issue 7): schedules in a time zone with an
// injected clock, plans for groups, aliases and overflow, the policy, and
// the configuration checks (a group that loops into itself is refused).
import t from 'tap';
import { formatConfig, loadConfig, parseConfig } from '../../src/config/index.js';
import { DoorRouter } from '../../src/routing/index.js';
import { isOpen, parseClock, parseDays } from '../../src/routing/schedule.js';
import { parseAndValidate, parseUri, SipParseError, type SipMessage, type Uri } from '../../src/sip/index.js';
import { F, MIN, refusal } from '../config/helpers.js';

t.test('days and times', async (t) => {
  t.same(parseDays('mon-fri'), [1, 2, 3, 4, 5]);
  t.same(parseDays('sat'), [6]);
  t.same(parseDays('mon,wed, fri'), [1, 3, 5]);
  t.same(parseDays('fri-mon'), [0, 1, 5, 6], 'a range wraps over the weekend');
  t.same(parseDays('Monday-Tuesday'), [1, 2]);
  t.same(parseDays('all'), [0, 1, 2, 3, 4, 5, 6]);
  t.throws(() => parseDays('mond'), /unknown day "mond"/);
  t.throws(() => parseDays('mon-tue-wed'), /not a day or a range/);
  t.equal(parseClock('07:30'), 450);
  t.equal(parseClock('24:00'), 1440);
  t.throws(() => parseClock('7h30'), /not a time of day/);
  t.throws(() => parseClock('24:01'), /00:00 to 24:00/);
  t.throws(() => parseClock('12:60'), /00:00 to 24:00/);
});

t.test('isOpen follows the time zone, daylight saving time and windows past midnight', async (t) => {
  const school = [{ days: [1, 2, 3, 4, 5], from: 450, to: 1110 }]; // mon-fri 07:30-18:30
  // Monday 2026-03-30, after the clocks went forward in Paris (UTC+2).
  t.notOk(isOpen(school, 'Europe/Paris', Date.UTC(2026, 2, 30, 5, 29)), '07:29 in Paris: closed');
  t.ok(isOpen(school, 'Europe/Paris', Date.UTC(2026, 2, 30, 5, 30)), '07:30 in Paris: open');
  t.ok(isOpen(school, 'Europe/Paris', Date.UTC(2026, 2, 30, 16, 29)), '18:29: open');
  t.notOk(isOpen(school, 'Europe/Paris', Date.UTC(2026, 2, 30, 16, 30)), '18:30: closed');
  // Monday 2026-01-05, winter time (UTC+1): the same local hours are an hour later in UTC.
  t.notOk(isOpen(school, 'Europe/Paris', Date.UTC(2026, 0, 5, 6, 29)), '07:29 in winter: closed');
  t.ok(isOpen(school, 'Europe/Paris', Date.UTC(2026, 0, 5, 6, 30)), '07:30 in winter: open');
  t.notOk(isOpen(school, 'Europe/Paris', Date.UTC(2026, 0, 3, 10, 0)), 'Saturday: closed');
  t.ok(isOpen([], 'Europe/Paris', Date.UTC(2026, 0, 3, 10, 0)), 'no schedule: always open');
  const night = [{ days: [5], from: 1320, to: 360 }]; // friday 22:00 to saturday 06:00
  t.ok(isOpen(night, 'UTC', Date.UTC(2026, 0, 2, 23, 0)), 'friday 23:00');
  t.ok(isOpen(night, 'UTC', Date.UTC(2026, 0, 3, 5, 59)), 'saturday 05:59, the night that began friday');
  t.notOk(isOpen(night, 'UTC', Date.UTC(2026, 0, 3, 6, 0)), 'saturday 06:00');
  t.notOk(isOpen(night, 'UTC', Date.UTC(2026, 0, 2, 5, 0)), 'friday 05:00 belongs to thursday night, not scheduled');
});

const ROUTING = [
  'groups:',
  '  ecole: {members: [alice, bob@example.test, "sip:+33111@pbx.example.test"], ring-time: 20, overflow: securite, schedule: [{days: mon-fri, from: "07:30", to: "18:30"}], timezone: Europe/Paris}',
  '  securite: {members: [sec, staff], ring-time: 30, overflow: "sip:astreinte@pbx.example.test"}',
  '  staff: {members: [carol, alice], strategy: sequential, ring-time: 10}',
  'aliases: {"100": ecole, "9": "sip:accueil@pbx.example.test", gate: alice}',
  'routes: [{match: "^0[1-9]", to: "sip:pbx.example.test;transport=tcp"}]',
].join('\n');

function invite(uri: string, from = 'sip:door1@example.test'): SipMessage {
  const m = parseAndValidate(Buffer.from(`INVITE ${uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nFrom: <${from}>;tag=1\r\nTo: <${uri}>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`), { transport: 'udp' });
  if (m instanceof SipParseError) throw new Error(m.reason);
  return m;
}

function router(extra = '', now = Date.UTC(2026, 2, 30, 8, 0)) {
  const c = parseConfig(MIN + ROUTING + '\n' + extra, F);
  const kinds: Record<string, 'door' | 'phone'> = { door1: 'door', door2: 'door', alice: 'phone', bob: 'phone', carol: 'phone', sec: 'phone' };
  return new DoorRouter(c, { kindOf: (u: Uri) => (u.hostname === 'example.test' ? kinds[u.user ?? ''] : undefined), now: () => now });
}

const uri = (s: string) => parseUri(s) as Uri;

t.test('a group call: its members in parallel, then the overflow group (nested groups flattened, sequential members one by one), then its URI', async (t) => {
  const d = router().route(invite('sip:100@example.test'), uri('sip:100@example.test'), { kind: 'door', authorised: true });
  if (d.kind !== 'plan') throw new Error('expected a plan');
  t.match(d.plan.label, /alias 100 → group ecole \(ecole open, securite open\)/);
  t.same(
    d.plan.stages.map((s) => [s.label, s.members.map((m) => `${m.uri}${m.local ? '' : ' (remote)'}`), s.ringMs, s.overflow]),
    [
      ['ecole', ['sip:alice@example.test', 'sip:bob@example.test', 'sip:+33111@pbx.example.test (remote)'], 20000, false],
      ['securite', ['sip:sec@example.test', 'sip:carol@example.test', 'sip:alice@example.test'], 30000, true],
      ['overflow sip:astreinte@pbx.example.test', ['sip:astreinte@pbx.example.test (remote)'], null, true],
    ],
  );
  const seq = router().route(invite('sip:staff@example.test'), uri('sip:staff@example.test'), { kind: 'door', authorised: true });
  if (seq.kind !== 'plan') throw new Error('expected a plan');
  t.same(seq.plan.stages.map((s) => [s.label, s.ringMs]), [['staff: sip:carol@example.test', 10000], ['staff: sip:alice@example.test', 10000]], 'sequential: one stage per member');
});

t.test('outside the schedule: straight to the overflow', async (t) => {
  const saturday = Date.UTC(2026, 3, 4, 10, 0);
  const d = router('', saturday).route(invite('sip:ecole@example.test'), uri('sip:ecole@example.test'), { kind: 'door', authorised: true });
  if (d.kind !== 'plan') throw new Error('expected a plan');
  t.match(d.plan.label, /ecole closed, securite open/);
  t.same(d.plan.stages.map((s) => s.label), ['securite', 'overflow sip:astreinte@pbx.example.test']);
  t.ok(d.plan.stages.every((s) => s.overflow));
});

t.test('the policy', async (t) => {
  const r = router();
  const door = { kind: 'door' as const, authorised: true };
  const phone = { kind: 'phone' as const, authorised: true };
  const route = (target: string, who: { kind: 'door' | 'phone' | null; authorised: boolean }, from?: string) => r.route(invite(target, from), uri(target), who);
  t.match(route('sip:alice@example.test', door), { kind: 'location' }, 'by default a door may call a phone');
  t.match(route('sip:door2@example.test', door), { kind: 'refuse', code: 403 }, 'not another door station');
  t.match(route('sip:0145678900@example.test', door), { kind: 'refuse', code: 403 }, 'nor a PBX number');
  t.match(route('sip:0145678900@example.test', phone), { kind: 'external', why: /route \^0\[1-9\]/ }, 'a phone may');
  t.match(route('sip:0145678900@example.test', { kind: null, authorised: false }), { kind: 'refuse', code: 403, reason: 'Relaying Not Allowed' }, 'an unauthenticated caller may not');
  t.match(route('sip:0145678900@example.test', { kind: null, authorised: true }, 'sip:door1@example.test'), { kind: 'refuse' }, "a trusted source is held to its From's kind");
  t.match(route('sip:9@example.test', door), { kind: 'plan' }, 'an alias to a PBX extension');
  t.match(route('sip:gate@example.test', door), { kind: 'location', uri: { raw: 'sip:alice@example.test' } }, 'an alias to an account');
  t.match(route('sip:door2@example.test', phone), { kind: 'location' }, 'phones may call door stations (live view)');

  const strict = router('policy: {doors-may-call: [groups], phones-may-call-phones: false, phones-may-call-doors: false}');
  t.match(strict.route(invite('sip:100@example.test'), uri('sip:100@example.test'), door), { kind: 'refuse', why: /doors may not call aliases/ });
  t.match(strict.route(invite('sip:ecole@example.test'), uri('sip:ecole@example.test'), door), { kind: 'plan' });
  t.match(strict.route(invite('sip:alice@example.test'), uri('sip:alice@example.test'), door), { kind: 'refuse' });
  t.match(strict.route(invite('sip:alice@example.test'), uri('sip:alice@example.test'), phone), { kind: 'refuse', reason: 'Calls Between Phones Not Allowed' });
  t.match(strict.route(invite('sip:door2@example.test'), uri('sip:door2@example.test'), phone), { kind: 'refuse', reason: 'Calls To Door Stations Not Allowed' });
  const any = router('policy: {doors-may-call: any}');
  t.match(any.route(invite('sip:0145678900@example.test'), uri('sip:0145678900@example.test'), door), { kind: 'external' });
});

t.test("a group's own name among its members is the account of that name", async (t) => {
  const c = parseConfig(MIN + 'groups:\n  securite: {members: [securite, bob]}', F);
  const r = new DoorRouter(c, { kindOf: () => 'phone' });
  const d = r.route(invite('sip:securite@example.test'), uri('sip:securite@example.test'), { kind: 'door', authorised: true });
  t.match(d, { kind: 'plan', plan: { stages: [{ members: [{ uri: 'sip:securite@example.test', local: true }, { uri: 'sip:bob@example.test' }] }] } });
});

t.test('configuration: loops, unknown names and bad values are refused with their path', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['groups:\n  a: {members: [x], overflow: b}\n  b: {members: [y], overflow: a}', /groups: a: overflow loops back to the group: a → b → a/],
    ['groups:\n  a: {members: [b]}\n  b: {members: [c]}\n  c: {members: [a]}', /groups: a: the group contains itself: a → b → c → a/],
    ['groups:\n  a: {members: []}', /groups\.a\.members: must not be empty/],
    ['groups:\n  a: {members: [x], strategy: random}', /groups\.a\.strategy/],
    ['groups:\n  a: {members: [x], schedule: [{days: mon-fri, from: "7h", to: "18:00"}]}', /groups\.a\.schedule\[0\]\.from: "7h" is not a time of day/],
    ['groups:\n  a: {members: [x], timezone: Mars/Olympus}', /unknown time zone "Mars\/Olympus"/],
    ['groups:\n  "a b": {members: [x]}', /groups\.a b: "a b" is not a name a door station can dial/],
    ['groups:\n  a: {members: ["sip:@nowhere"]}', /groups: a\.members\[0\]: .*not a group, an account/],
    ['aliases: {"1": "2", "2": "1"}', /aliases loop: 1 → 2 → 1/],
    ['groups:\n  a: {members: [x]}\naliases: {a: x}', /aliases\.a: is also the name of a group/],
    ['routes: [{match: "([", to: "sip:pbx.test"}]', /routes\[0\]\.match: not a regular expression/],
    ['routes: [{match: "^0", to: "mailto:x@y"}]', /routes\[0\]\.to: .*not a SIP URI/],
    ['policy: {doors-may-call: [groups, everything]}', /policy\.doors-may-call\[1\]/],
  ];
  for (const [text, reason] of cases) t.match(refusal(t, MIN + text).message, reason, text.split('\n').join(' | '));
});

t.test('the routing sections survive portier check (formatted config parses back the same)', async (t) => {
  const c = parseConfig(MIN + ROUTING, F);
  const again = parseConfig(formatConfig(c), F);
  t.same(again.groups, c.groups);
  t.same(again.aliases, c.aliases);
  t.same(again.policy, c.policy);
  t.same(again.routes, c.routes);
  t.same(c.groups.ecole.schedule, [{ days: [1, 2, 3, 4, 5], from: 450, to: 1110 }]);
});

t.test('conf/school.yaml is valid and routes as its comments say', async (t) => {
  const path = new URL('../../conf/school.yaml', import.meta.url).pathname;
  const c = loadConfig(path);
  const r = new DoorRouter(c, { kindOf: (u: Uri) => (u.user?.includes('jaures') ? 'door' : 'phone') });
  const at = (now: number) => {
    const d = new DoorRouter(c, { kindOf: (u: Uri) => (u.user?.includes('jaures') ? 'door' : 'phone'), now: () => now });
    const res = d.route(invite('sip:100@ecole.example.test', 'sip:portail-jaures@ecole.example.test'), uri('sip:100@ecole.example.test'), { kind: 'door', authorised: true });
    return res.kind === 'plan' ? res.plan.stages.map((s) => s.label) : res.kind;
  };
  t.same(at(Date.UTC(2026, 8, 7, 8, 0)), ['ecole-jaures', 'securite'], 'Monday 10:00 in Paris: the staff, then security');
  t.same(at(Date.UTC(2026, 8, 9, 12, 0)), ['securite'], 'Wednesday 14:00: closed, security at once');
  t.same(at(Date.UTC(2026, 8, 12, 9, 0)), ['securite'], 'Saturday: security');
  t.match(r.route(invite('sip:directrice@ecole.example.test', 'sip:portail-jaures@ecole.example.test'), uri('sip:directrice@ecole.example.test'), { kind: 'door', authorised: true }), { kind: 'refuse', code: 403 }, 'a door station cannot ring a phone directly');
});
