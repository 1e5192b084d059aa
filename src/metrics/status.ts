/**
 * GET /status: one plain HTML page for a person (no script, no external
 * resource): version, uptime, listeners, readiness, registrations per
 * domain, door stations online and offline. Every value from outside
 * (account names, User-Agents, domains) is HTML-escaped.
 *
 * It names accounts, so it is served on the metrics listener only, which
 * should stay on 127.0.0.1 or a management network (see README, Metrics).
 */
import type { DeviceSnapshot, Door } from './devices.js';
import type { Readiness } from './http.js';

export interface StatusInfo {
  version: string;
  /** Seconds since start. */
  uptime: number;
  /** SIP listeners bound, `udp:127.0.0.1:5060`. */
  listeners: readonly string[];
  /** storage.type */
  storage: string;
  storageUp: boolean;
  ready: Readiness;
  devices: DeviceSnapshot;
  /** Whether authentication is on (door stations are accounts of kind door only then). */
  auth: boolean;
  /** ms since the epoch. */
  now: number;
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text safe inside HTML elements and quoted attributes. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** `2024-05-01 08:30:00 UTC` */
export function formatTime(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

/** `3 d 4 h`, `12 min`, `45 s`: the two largest units. */
export function formatDuration(seconds: number): string {
  let s = Math.max(0, Math.floor(seconds));
  const parts: string[] = [];
  for (const [unit, n] of [
    ['d', 86_400],
    ['h', 3600],
    ['min', 60],
    ['s', 1],
  ] as const) {
    if (s >= n || (unit === 's' && parts.length === 0)) {
      parts.push(`${Math.floor(s / n)} ${unit}`);
      s %= n;
    }
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}

function ago(ms: number, now: number): string {
  return `${formatTime(ms)} (${formatDuration((now - ms) / 1000)} ago)`;
}

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const th = head.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const trs = rows.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table>\n<thead><tr>${th}</tr></thead>\n<tbody>\n${trs}\n</tbody>\n</table>`;
}

function onlineRows(doors: readonly Door[], now: number): string[][] {
  return doors.flatMap((d) =>
    d.bindings.map((b, i) => [
      i === 0 ? d.aor : '',
      d.domain,
      b.userAgent ?? '(none)',
      b.transport,
      ago(b.since, now),
      ago(b.updatedAt, now),
      formatTime(b.expiresAt),
    ]),
  );
}

function offlineRows(doors: readonly Door[], now: number, startedAt: number): string[][] {
  return doors.map((d) => [
    d.aor,
    d.domain,
    d.lastSeen === null ? `not seen since start (${formatTime(startedAt)})` : ago(d.lastSeen, now),
    d.offlineSince === null ? '' : ago(d.offlineSince, now) + (d.offlineCause === null ? '' : `, ${d.offlineCause}`),
  ]);
}

export function renderStatus(s: StatusInfo): string {
  const now = s.now;
  const startedAt = now - s.uptime * 1000;
  const d = s.devices;
  const doors = d.doors;
  const online = doors.filter((x) => x.state === 'online');
  const offline = doors.filter((x) => x.state === 'offline');
  const parts: string[] = [];
  parts.push(`<h1>Portier ${escapeHtml(s.version)}</h1>`);
  parts.push(
    `<p>Up ${escapeHtml(formatDuration(s.uptime))}, since ${escapeHtml(formatTime(startedAt))}. Page made ${escapeHtml(formatTime(now))}.</p>`,
  );
  const notReady = Object.entries(s.ready.checks).filter(([, c]) => !c.ok);
  parts.push(
    s.ready.ok
      ? '<p class="ok">Ready: SIP listeners bound, storage reachable.</p>'
      : `<p class="bad">Not ready: ${notReady.map(([k, c]) => `${escapeHtml(k)}: ${escapeHtml(c.detail)}`).join('; ')}.</p>`,
  );

  parts.push('<h2>Listeners</h2>');
  parts.push(s.listeners.length === 0 ? '<p class="bad">None bound.</p>' : `<ul>${s.listeners.map((l) => `<li>${escapeHtml(l)}</li>`).join('')}</ul>`);
  parts.push(`<p>Storage: ${escapeHtml(s.storage)}, ${s.storageUp ? '<span class="ok">up</span>' : '<span class="bad">down</span>'}.</p>`);

  parts.push('<h2>Registrations</h2>');
  if (d.registrations === null || d.devices === null) {
    parts.push(`<p class="bad">The store did not answer${d.error === null ? '' : `: ${escapeHtml(d.error)}`}.</p>`);
  } else {
    const rows = [...d.registrations].map(([domain, n]) => {
      const k = d.devices?.get(domain) ?? { door: 0, phone: 0 };
      return [domain, String(n), String(k.door), String(k.phone)];
    });
    parts.push(table(['Domain', 'Bindings', 'Door stations', 'Phones'], rows));
  }

  parts.push(`<h2>Door stations: ${online.length} online, ${offline.length} offline</h2>`);
  if (!s.auth) {
    parts.push('<p>Authentication is off: there are no door accounts (accounts of kind door in auth.users) to list.</p>');
  } else if (doors.length === 0 && d.doorsUnknown === 0) {
    parts.push('<p>No account of kind door in the users file (portier user add AOR --kind door).</p>');
  }
  if (d.doorsUnknown > 0) parts.push(`<p class="bad">${d.doorsUnknown} door account(s) not shown: the store did not answer.</p>`);
  if (offline.length > 0) {
    parts.push('<h3 class="bad">Offline</h3>');
    parts.push(table(['Account', 'Domain', 'Last seen (last REGISTER)', 'Offline since'], offlineRows(offline, now, startedAt)));
  }
  if (online.length > 0) {
    parts.push('<h3 class="ok">Online</h3>');
    parts.push(table(['Account', 'Domain', 'User-Agent', 'Transport', 'Registered since', 'Last REGISTER', 'Expires'], onlineRows(online, now)));
  }
  if (d.guessedDoors.length > 0) {
    parts.push('<h3>Door stations without an account (recognised by their User-Agent)</h3>');
    parts.push(table(['Address of record', 'Domain', 'User-Agent', 'Registered since'], d.guessedDoors.map((g) => [g.aor, g.domain, g.userAgent ?? '(none)', ago(g.since, now)])));
  }
  parts.push('<p class="note">Last-seen times are kept in memory: after a restart, a door that has not registered since reads "not seen since start".</p>');

  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="30">
<title>Portier status</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
.ok { color: #176b2c; }
.bad { color: #a3120f; }
.note { color: #666; font-size: 0.9em; }
</style>
</head>
<body>
${parts.join('\n')}
</body>
</html>
`;
}
