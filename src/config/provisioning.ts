// The `provisioning:` and `media:` sections of the configuration: remote
// provisioning of Linhome/Linphone apps by QR code (src/provisioning/), and
// the STUN/TURN servers the apps are given for media through NAT (TURN
// credentials in coturn's TURN REST API scheme).
//
// Values are checked alone here; what needs the rest of the file (auth and
// tls present, device groups that exist, files readable) is checked by
// `checkProvisioning` and `resolveMediaFiles`, called from ./index.ts.

import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { unreadableReason } from './errors.js';
import { parseHostPort } from './hosts.js';
import { Invalid, integer, list, oneOf, section, text, type Field, type Issue } from './schema.js';
import type { HttpListen, MediaConfig, ProvisioningConfig, ProvisioningDevice, ProvisioningTransport, TurnConfig } from './types.js';

/** `30s`, `15m`, `24h`, `7d` (or a number of seconds) → seconds. */
export function parseDuration(value: unknown, min: number, max: number, example: string): number {
  const m = typeof value === 'string' ? /^(\d+)\s*(s|m|h|d)?$/i.exec(value.trim()) : null;
  const unit = { s: 1, m: 60, h: 3600, d: 86400 };
  const secs = typeof value === 'number' ? value : m ? Number(m[1]) * unit[(m[2] ?? 's').toLowerCase() as keyof typeof unit] : NaN;
  if (!Number.isInteger(secs) || secs < min || secs > max) {
    throw new Invalid(`must be a duration from ${formatDuration(min)} to ${formatDuration(max)} such as ${example} (got ${JSON.stringify(value)})`);
  }
  return secs;
}

export function formatDuration(v: number): string {
  if (v % 86400 === 0) return `${v / 86400}d`;
  if (v % 3600 === 0) return `${v / 3600}h`;
  if (v % 60 === 0) return `${v / 60}m`;
  return `${v}s`;
}

const duration = (min: number, max: number, def: number, example: string): Field<number> => ({
  parse: (value) => parseDuration(value, min, max, example),
  format: formatDuration,
  default: () => def,
});

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

const listen = text<HttpListen>({
  convert(raw) {
    const needsPort = `${JSON.stringify(raw)} must be host:port, e.g. 0.0.0.0:8443 or [::]:8443`;
    return parseHostPort(raw, { defaultPort: null, raw, v6Example: '[::]:8443', needsPort, missingHost: needsPort });
  },
  format: (l) => `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`,
  expected: 'host:port such as 0.0.0.0:8443',
  example: '0.0.0.0:8443',
});

const baseUrl = text<string>({
  convert(s) {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      throw new Invalid(`${JSON.stringify(s)} is not a URL (e.g. https://portier.example.test:8443)`);
    }
    if (u.protocol !== 'https:' && !(u.protocol === 'http:' && isLoopbackHost(u.hostname))) {
      throw new Invalid(`must be an https:// URL (http:// only to a loopback address, for tests) (got ${JSON.stringify(s)})`);
    }
    if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
      throw new Invalid(`must be scheme://host[:port][/path] without credentials, query or fragment (got ${JSON.stringify(s)})`);
    }
    // Stored without a trailing slash: links are BASE/p/TOKEN.
    return s.replace(/\/+$/, '');
  },
  format: (s) => s,
  expected: 'an https:// URL such as https://portier.example.test:8443',
  example: 'https://portier.example.test:8443',
});

/** `host` or `host:port` (IPv6 in brackets) the apps reach Portier's SIP listeners at. */
const sipServer = text<string | null>({
  convert(s) {
    const t = s.trim();
    const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(t);
    if (m === null || (m[2] !== undefined && Number(m[2]) > 65535) || (m[1].startsWith('[') && isIP(m[1].slice(1, -1)) !== 6)) {
      throw new Invalid(`must be a host name or address with an optional port, e.g. portier.example.test:5061 (got ${JSON.stringify(s)})`);
    }
    return t.toLowerCase();
  },
  format: (v) => v ?? undefined,
  expected: 'host[:port] such as portier.example.test:5061',
  default: () => null,
});

const optionalPath = text<string | null>({
  convert(s) {
    if (s === '') throw new Invalid('must not be empty');
    return s;
  },
  format: (p) => p ?? undefined,
  expected: 'a file path',
  default: () => null,
});

// Linhome's door-open actions (the action types of its shared theme) and
// DTMF methods (the vCard's X-LINPHONE-ACCOUNT-DTMF-PROTOCOL values).
export const DEVICE_ACTIONS = ['open-door', 'open-gate', 'light-up', 'unlock'] as const;
export const DEVICE_DTMF = ['sipinfo', 'rfc2833', 'sipmessage'] as const;

const nonEmpty = (expected: string, re: RegExp, why: string) =>
  text<string>({
    convert(s) {
      if (!re.test(s)) throw new Invalid(`${why} (got ${JSON.stringify(s)})`);
      return s;
    },
    format: (s) => s,
    expected,
  });

const device: Field<ProvisioningDevice> = section({
  account: nonEmpty('an account such as portail-jaures or portail-jaures@example.test', /^[^\s@:<>"]+(@[^\s@:<>"]+)?$/, 'must be an account: user, or user@domain'),
  name: nonEmpty('a name shown in the app', /^[^\r\n\x00-\x1f]{1,64}$/, 'must be 1 to 64 characters on one line'),
  type: nonEmpty("a device type of the app's theme", /^[A-Za-z0-9_.-]{1,64}$/, 'must be letters, digits, . _ -'),
  dtmf: oneOf<ProvisioningDevice['dtmf']>(DEVICE_DTMF, { default: 'sipinfo' }),
  actions: list(
    section({
      type: oneOf(DEVICE_ACTIONS),
      code: nonEmpty('the DTMF code the door station opens on, e.g. "*1"', /^[0-9A-D*#]{1,32}$/, 'must be DTMF digits 0-9, A-D, * and #'),
    }),
    { default: () => [] },
  ),
  groups: list(nonEmpty('a ring-group name', /^\S+$/, 'must be a group name'), { min: 1, example: '[ecole-jaures]' }),
});

export const provisioningSection = section({
  listen,
  'base-url': baseUrl,
  'token-ttl': duration(60, 30 * 86400, 86400, '24h'),
  transport: oneOf<ProvisioningTransport>(['tls', 'tcp', 'udp'], { default: 'tls' }),
  'sip-server': sipServer,
  tokens: optionalPath,
  'reg-expires': integer({ min: 60, max: 604800, default: 3600 }),
  devices: list(device, { default: () => [] }),
  'push-gateway': oneOf<ProvisioningConfig['pushGateway']>(['portier', 'vendor'], { default: 'portier' }),
});

// No `provisioning:` section: null, nothing served, nothing written back.
export const provisioningField: Field<ProvisioningConfig | null> = {
  parse: (value, p, ctx) => provisioningSection.parse(value, p, ctx),
  format: (v) => (v === null ? undefined : provisioningSection.format(v)),
  default: () => null,
};

/** `stun:host[:port]` (RFC 7064) → `host:port`, or `turn(s):host[:port][?transport=udp|tcp]` (RFC 7065). */
export function parseIceUrl(s: string, schemes: readonly string[]): { scheme: string; host: string; port: number; transport: 'udp' | 'tcp' } {
  const m = /^(stuns?|turns?):(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(?:\?transport=(udp|tcp))?$/i.exec(s.trim());
  const scheme = m?.[1].toLowerCase();
  if (m === null || scheme === undefined || !schemes.includes(scheme)) {
    const example = schemes[0].startsWith('stun') ? 'stun:turn.example.test:3478' : 'turn:turn.example.test:3478?transport=udp';
    throw new Invalid(`must be a ${schemes.map((x) => `${x}:`).join(' or ')} URL such as ${example} (got ${JSON.stringify(s)})`);
  }
  if (scheme.startsWith('stun') && m[4] !== undefined) throw new Invalid(`a stun: URL has no transport (got ${JSON.stringify(s)})`);
  const secure = scheme.endsWith('s');
  const port = m[3] === undefined ? (secure ? 5349 : 3478) : Number(m[3]);
  if (port < 1 || port > 65535) throw new Invalid(`port must be between 1 and 65535 (got ${JSON.stringify(s)})`);
  const transport = (m[4]?.toLowerCase() ?? (secure ? 'tcp' : 'udp')) as 'udp' | 'tcp';
  return { scheme, host: m[2].toLowerCase(), port, transport };
}

const iceUrl = (schemes: readonly string[], example: string) =>
  text<string>({
    convert(s) {
      parseIceUrl(s, schemes);
      return s.trim();
    },
    format: (s) => s,
    expected: `a URL such as ${example}`,
    example,
  });

const turnSection: Field<TurnConfig> = section({
  url: iceUrl(['turn', 'turns'], 'turn:turn.example.test:3478?transport=udp'),
  // A file holding coturn's static-auth-secret (never the secret itself, so that `portier check` never prints it).
  secret: text<string>({
    convert(s) {
      if (s === '') throw new Invalid('must not be empty');
      return s;
    },
    format: (p) => p,
    expected: "a file holding coturn's static-auth-secret",
    example: '/etc/portier/turn-secret',
  }),
  ttl: duration(60, 30 * 86400, 86400, '24h'),
});

export const mediaField: Field<MediaConfig> = section({
  stun: { ...iceUrl(['stun', 'stuns'], 'stun:turn.example.test:3478'), format: (v: string | null) => v ?? undefined, default: () => null } as Field<string | null>,
  turn: { parse: (v, p, ctx) => turnSection.parse(v, p, ctx), format: (v: TurnConfig | null) => (v === null ? undefined : turnSection.format(v)), default: () => null },
});

/**
 * Cross-section checks: provisioning needs accounts (auth) and, for https,
 * the tls: certificate; its devices name ring groups that exist. Reported
 * with the top-level key at fault.
 */
export function checkProvisioning(
  c: { provisioning: ProvisioningConfig | null; groups: Record<string, unknown>; auth: unknown; tls: unknown },
  report: (key: string, reason: string) => void,
): void {
  const p = c.provisioning;
  if (p === null) return;
  if (c.auth === null) report('provisioning', 'needs the auth: section (the apps are given an account and its password)');
  const https = p.baseUrl.startsWith('https:');
  if (https && c.tls === null) report('provisioning', 'an https base-url needs the tls: section (its certificate is served)');
  if (!https && !isLoopbackHost(p.listen.host)) report('provisioning', `an http:// base-url is for tests on loopback only: listen must be 127.0.0.1 or [::1] (got ${p.listen.host})`);
  p.devices.forEach((d, i) => {
    d.groups.forEach((g, j) => {
      if (!Object.prototype.hasOwnProperty.call(c.groups, g)) report('provisioning', `devices[${i}].groups[${j}]: no ring group named "${g}"`);
    });
  });
}

/** media.turn.secret is relative to the configuration file and must name a readable, non-empty file now; the secret itself is never kept in the Config. */
export function resolveMediaFiles(m: MediaConfig, base: string, issues: Issue[]): MediaConfig {
  if (m.turn === null) return m;
  const abs = resolve(base, m.turn.secret);
  try {
    if (statSync(abs).isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    if (readTurnSecret(abs) === '') issues.push({ path: ['media', 'turn', 'secret'], reason: `${abs} is empty (it holds coturn's static-auth-secret)` });
  } catch (err) {
    issues.push({ path: ['media', 'turn', 'secret'], reason: `cannot read ${abs}: ${unreadableReason(err)}` });
  }
  return { ...m, turn: { ...m.turn, secret: abs } };
}

/** The secret in `path`: its first line, trimmed (coturn's static-auth-secret). */
export function readTurnSecret(path: string): string {
  return readFileSync(path, 'utf8').split('\n')[0].trim();
}

/** Where the provisioning tokens live: `provisioning.tokens`, else beside the users file. */
export function tokensPath(p: ProvisioningConfig, usersFile: string): string {
  return p.tokens ?? `${usersFile}.tokens`;
}

/** provisioning.tokens, when given, is relative to the configuration file. */
export function resolveProvisioningFiles(p: ProvisioningConfig | null, base: string): ProvisioningConfig | null {
  if (p === null || p.tokens === null) return p;
  return { ...p, tokens: resolve(base, p.tokens) };
}
