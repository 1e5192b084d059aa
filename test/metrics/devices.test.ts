// The device census on its own: kinds from accounts and User-Agents, door
// stations online and offline with their last-seen times, on a registrar
// over a memory store driven by a clock of the test's own.
import t from 'tap';
import { Accounts, type Account } from '../../src/auth/index.js';
import { DeviceCensus, kindFromUserAgent, renderStatus, escapeHtml, formatDuration, MAX_TRACKED } from '../../src/metrics/index.js';
import { Registrar, type Binding } from '../../src/registrar/index.js';
import { parseAndValidate, SipParseError, type SipMessage } from '../../src/sip/index.js';
import type { Source } from '../../src/transport/index.js';

t.test('kind from the User-Agent', async (t) => {
  const doors = [
    '2N Helios IP Verso/2.31.0.40.5',
    '2N IP Force/2.40',
    'Castel Xtrem 2.4',
    'DoorBird D2101V/000128',
    'Akuvox R20B 20.30.1.50',
    'HIKVISION DS-KV8113-WME1',
    'DS-KD8003-IME1',
    'Dahua VTO2202F',
    'Fanvil i20S 2.12.9',
    'Fanvil PA2S',
    'MOBOTIX T26',
    'Grandstream GDS3710 1.0.11.1',
    'AXIS I8016-LVE',
    'Comelit 1456S',
  ];
  for (const ua of doors) t.equal(kindFromUserAgent(ua), 'door', ua);
  const phones = [
    null,
    '',
    'Linhome/1.2 (Pixel 7) LinphoneSDK/5.3.0',
    'LinphoneAndroid/5.2.5 (SM-A525F) LinphoneSDK/5.3.2',
    'Linphone iOS/5.1',
    'baresip v3.10.1 (x86_64/linux)',
    'Fanvil X4U 2.12.1',
    'Fanvil V64 2.12.2',
    'Akuvox C315 115.30.3.3',
    'HIKVISION DS-KH6320-WTE1',
    'Dahua VTH5321GW',
    '2N Indoor Touch 2.0',
    '2N IP Phone D7A',
    'Yealink SIP-T46U 108.86.0.45',
    'MicroSIP/3.21.3',
    'Zoiper v2.10',
    'PortierTestUA/1.0',
    'Linphone/5.2N',
  ];
  for (const ua of phones) t.equal(kindFromUserAgent(ua), 'phone', String(ua));
});

const DOMAIN = 'example.test';

function account(aor: string, kind: 'door' | 'phone'): Account {
  const [user, domain] = aor.split('@');
  return { aor, user, domain, kind, realm: DOMAIN, ha1: { md5: '0'.repeat(32), sha256: '0'.repeat(64) } };
}

const source: Source = {
  protocol: 'udp',
  address: '192.0.2.10',
  port: 5062,
  family: 4,
  connectionId: 0,
  local: { protocol: 'udp', address: '192.0.2.1', port: 5060 },
};

let cseq = 0;
function register(user: string, o: { ua?: string; expires?: number; contact?: string; domain?: string } = {}): SipMessage {
  cseq++;
  const domain = o.domain ?? DOMAIN;
  const text =
    [
      `REGISTER sip:${domain} SIP/2.0`,
      `Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-dev-${cseq}`,
      'Max-Forwards: 70',
      `From: <sip:${user}@${domain}>;tag=f${cseq}`,
      `To: <sip:${user}@${domain}>`,
      `Call-ID: dev-${user}`,
      `CSeq: ${cseq} REGISTER`,
      `Contact: <${o.contact ?? `sip:${user}@192.0.2.10:5062`}>;expires=${o.expires ?? 600}`,
      ...(o.ua === undefined ? [] : [`User-Agent: ${o.ua}`]),
      'Content-Length: 0',
    ].join('\r\n') + '\r\n\r\n';
  const m = parseAndValidate(Buffer.from(text, 'latin1'), { transport: 'udp' });
  if (m instanceof SipParseError) throw new Error(`parse: ${m.reason}`);
  return m;
}

function setup(accounts: Accounts | null) {
  let clock = 1_700_000_000_000;
  const registrar = new Registrar({ domains: [DOMAIN, 'other.test'], sweepIntervalMs: 0 }, { now: () => clock });
  const census = new DeviceCensus({
    domains: [DOMAIN, 'other.test'],
    bindingCounts: () => registrar.bindingCounts(),
    lookup: (aor) => registrar.lookup(aor),
    accounts: () => accounts,
    now: () => clock,
  });
  registrar.on('registered', (b: Binding) => census.registered(b));
  registrar.on('unregistered', (b, cause) => census.unregistered(b, cause));
  return {
    registrar,
    census,
    advance(ms: number) {
      clock += ms;
    },
    get now() {
      return clock;
    },
    async reg(user: string, o: Parameters<typeof register>[1] = {}) {
      const r = await registrar.register(register(user, o), source);
      if (r.status !== 200) throw new Error(`REGISTER ${user}: ${r.status} ${r.detail}`);
    },
  };
}

t.test('with accounts: the account kind wins over the User-Agent; doors online, offline, last seen', async (t) => {
  const accounts = new Accounts([account('gate@example.test', 'door'), account('back@example.test', 'door'), account('alice@example.test', 'phone'), account('hall@other.test', 'door')]);
  const s = setup(accounts);
  t.teardown(() => s.registrar.close());

  let snap = await s.census.snapshot();
  t.same(snap.devices?.get(DOMAIN), { door: 0, phone: 0 });
  t.same(
    snap.doors.map((d) => [d.aor, d.domain, d.state, d.lastSeen]),
    [
      ['gate@example.test', DOMAIN, 'offline', null],
      ['back@example.test', DOMAIN, 'offline', null],
      ['hall@other.test', 'other.test', 'offline', null],
    ],
    'every door account, in file order, not seen since start',
  );

  await s.reg('gate', { ua: 'Linphone/5 (a door account with a phone UA is still a door)' });
  await s.reg('alice', { ua: '2N Helios IP Verso (a phone account stays a phone)' });
  await s.reg('alice', { ua: 'LinphoneAndroid/5', contact: 'sip:alice@192.0.2.11:5062' });
  await s.reg('hall', { ua: 'DoorBird D2101V', domain: 'other.test' });
  t.equal(s.census.trackedCount, 0, 'bindings of accounts are not tracked');
  const registeredAt = s.now;

  s.advance(60_000);
  await s.reg('gate', { ua: 'Linphone/5 (a door account with a phone UA is still a door)' });
  snap = await s.census.snapshot();
  t.same(snap.devices?.get(DOMAIN), { door: 1, phone: 2 });
  t.same(snap.devices?.get('other.test'), { door: 1, phone: 0 });
  t.same(snap.registrations?.get(DOMAIN), 3);
  const gate = snap.doors[0];
  t.equal(gate.state, 'online');
  t.equal(gate.bindings.length, 1);
  t.equal(gate.bindings[0].since, registeredAt, 'registered since its first REGISTER');
  t.equal(gate.bindings[0].updatedAt, s.now, 'refreshed now');
  t.equal(gate.lastSeen, s.now);
  t.equal(snap.doors[1].state, 'offline');

  // The gate unregisters (Expires: 0): offline, last seen at its last REGISTER, offline since now.
  s.advance(30_000);
  const lastRegister = s.now - 30_000;
  await s.reg('gate', { ua: 'x', expires: 0 });
  snap = await s.census.snapshot();
  t.match(snap.doors[0], { state: 'offline', lastSeen: lastRegister, offlineSince: s.now, offlineCause: 'unregistered', bindings: [] });
  t.same(snap.devices?.get(DOMAIN), { door: 0, phone: 2 });

  // The hall's binding expires; the sweep removes it at a later time: offline since its expiry.
  const hallExpiry = registeredAt + 600_000;
  s.advance(700_000);
  await s.registrar.sweep();
  snap = await s.census.snapshot();
  t.match(snap.doors[2], { state: 'offline', lastSeen: registeredAt, offlineSince: hallExpiry, offlineCause: 'expired' });

  // The page shows them, escaped.
  const html = renderStatus({
    version: '1.2.3',
    uptime: 4000,
    listeners: ['udp:127.0.0.1:5060'],
    storage: 'memory',
    storageUp: true,
    ready: { ok: true, checks: {} },
    devices: snap,
    auth: true,
    now: s.now,
  });
  t.match(html, /Door stations: 0 online, 3 offline/);
  t.match(html, /<td>hall@other\.test<\/td><td>other\.test<\/td><td>2023-11-14 22:13:20 UTC \(/);
  t.match(html, /not seen since start/, 'the back door never registered');
  t.match(html, /, unregistered<\/td>/);
});

t.test('compare on scrape: a door gone without an event here (another node) is offline from its expiry', async (t) => {
  const accounts = new Accounts([account('gate@example.test', 'door')]);
  const s = setup(accounts);
  t.teardown(() => s.registrar.close());
  await s.reg('gate', { ua: '2N IP Verso', expires: 120 });
  const seen = s.now;
  t.equal((await s.census.snapshot()).doors[0].state, 'online');
  // Expired, not swept: the store no longer returns it, and no event came.
  s.advance(300_000);
  const snap = await s.census.snapshot();
  t.match(snap.doors[0], { state: 'offline', lastSeen: seen, offlineSince: seen + 120_000, offlineCause: 'expired' });
});

t.test('without accounts: the User-Agent decides; bindings of no account are tracked and forgotten', async (t) => {
  const s = setup(null);
  t.teardown(() => s.registrar.close());
  await s.reg('gate', { ua: '2N Helios IP Verso/2.31', expires: 120 });
  await s.reg('gate2', { ua: 'Castel Xtrem' });
  await s.reg('alice', { ua: 'Linhome/1.2' });
  await s.reg('bob');
  await s.reg('hall', { ua: 'Akuvox R29', domain: 'other.test' });
  t.equal(s.census.trackedCount, 5);
  let snap = await s.census.snapshot();
  t.same(snap.devices?.get(DOMAIN), { door: 2, phone: 2 });
  t.same(snap.devices?.get('other.test'), { door: 1, phone: 0 });
  t.same(snap.doors, [], 'no door accounts without authentication');
  t.same(
    snap.guessedDoors.map((g) => [g.aor, g.domain, g.userAgent]),
    [
      ['gate2@example.test', DOMAIN, 'Castel Xtrem'],
      ['gate@example.test', DOMAIN, '2N Helios IP Verso/2.31'],
      ['hall@other.test', 'other.test', 'Akuvox R29'],
    ],
  );
  await s.reg('gate2', { ua: 'Castel Xtrem', expires: 0 });
  t.equal(s.census.trackedCount, 4, 'an unregistered binding is forgotten at once');
  s.advance(200_000);
  snap = await s.census.snapshot();
  t.equal(s.census.trackedCount, 3, 'an expired one on the next snapshot');
  t.same(snap.devices?.get(DOMAIN), { door: 0, phone: 2 });
});

t.test('the store does not answer: no counts, doors unknown', async (t) => {
  const census = new DeviceCensus({
    domains: [DOMAIN],
    bindingCounts: () => Promise.reject(new Error('redis down')),
    lookup: () => Promise.reject(new Error('redis down')),
    accounts: () => new Accounts([account('gate@example.test', 'door')]),
  });
  const [a, b] = await Promise.all([census.snapshot(), census.snapshot()]);
  t.equal(a, b, 'concurrent callers share one snapshot');
  t.equal(a.devices, null);
  t.equal(a.registrations, null);
  t.equal(a.doorsUnknown, 1);
  t.same(a.doors, []);
  t.equal(a.error, 'redis down');
  t.not(await census.snapshot(), a, 'a later call computes again');
  const html = renderStatus({ version: '1', uptime: 1, listeners: [], storage: 'redis', storageUp: false, ready: { ok: false, checks: { storage: { ok: false, detail: 'the redis store cannot be written' } } }, devices: a, auth: true, now: Date.now() });
  t.match(html, /Not ready: storage: the redis store cannot be written\./);
  t.match(html, /The store did not answer: redis down/);
  t.match(html, /1 door account\(s\) not shown/);
});

t.test('the tracked table is bounded', async (t) => {
  const census = new DeviceCensus({ domains: [DOMAIN], bindingCounts: async () => ({ aors: 0, bindings: 0, byDomain: {} }), lookup: async () => [], accounts: () => null });
  const b = { aor: 'sip:x@example.test', key: 'u:0', userAgent: '2N', registeredAt: 0, updatedAt: 0, expiresAt: Number.MAX_SAFE_INTEGER } as unknown as Binding;
  for (let i = 0; i < MAX_TRACKED + 10; i++) census.registered({ ...b, key: `u:${i}` });
  t.equal(census.trackedCount, MAX_TRACKED);
  census.registered(null as unknown as Binding);
  census.unregistered(null as unknown as Binding, 'removed');
  t.pass('a listener never throws');
});

t.test('html helpers', async (t) => {
  t.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  t.equal(formatDuration(0), '0 s');
  t.equal(formatDuration(59.9), '59 s');
  t.equal(formatDuration(3600 * 26 + 120), '1 d 2 h');
  t.equal(formatDuration(3720), '1 h 2 min');
  t.equal(formatDuration(-5), '0 s');
});
