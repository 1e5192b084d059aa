/** Host, IP and listen-address syntax used by the configuration. */
import { isIPv4, isIPv6 } from 'node:net';
import { Invalid, alternatives } from './schema.js';
import { PROTOCOLS, type ListenSpec, type Protocol } from './types.js';

/** Default port per transport when a listen entry omits it (RFC 3261 §19.1.2; RFC 7118 §5 for ws/wss). */
export const DEFAULT_PORTS: Readonly<Record<Protocol, number>> = {
  udp: 5060,
  tcp: 5060,
  tls: 5061,
  ws: 80,
  wss: 443,
};

/** Transports parsed and validated, but not served yet (refused with "not supported yet"): none now. */
export const UNSUPPORTED_PROTOCOLS: readonly Protocol[] = [];

/** Canonical lower-case IPv6 text (`0:0::1` → `::1`); zone ids are kept as written. */
export function canonicalIPv6(ip: string): string {
  const lower = ip.toLowerCase();
  if (lower.includes('%')) return lower;
  try {
    return new URL(`http://[${lower}]/`).hostname.slice(1, -1);
  } catch {
    return lower;
  }
}

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** A SIP domain: a host name or an IP literal (IPv6 with or without brackets). Returns it lower-cased, IPv6 unbracketed. */
export function parseDomain(raw: string): string {
  const s = raw.toLowerCase();
  if (s === '') throw new Invalid('must not be empty');
  if (/^sips?:/.test(s)) throw new Invalid(`write the domain without "${s.split(':')[0]}:" (got ${JSON.stringify(raw)})`);
  if (s.startsWith('[') && s.endsWith(']')) {
    const inner = s.slice(1, -1);
    if (isIPv6(inner)) return canonicalIPv6(inner);
    throw new Invalid(`${JSON.stringify(raw)} is not a valid IPv6 address`);
  }
  if (isIPv6(s)) return canonicalIPv6(s);
  if (isIPv4(s)) return s;
  if (/^[^:]+:\d+$/.test(s) || /^\[.*\]:\d+$/.test(s)) {
    throw new Invalid(`a domain has no port (got ${JSON.stringify(raw)})`);
  }
  const labels = s.split('.');
  if (s.length > 253 || !labels.every((l) => LABEL.test(l))) {
    throw new Invalid(`${JSON.stringify(raw)} is not a valid host name or IP address`);
  }
  if (/^\d+$/.test(labels[labels.length - 1])) {
    throw new Invalid(`${JSON.stringify(raw)} is not a valid IPv4 address or host name`);
  }
  return s;
}

const LISTEN_EXAMPLE = 'udp:127.0.0.1:5060, tcp:0.0.0.0:5060 or udp:[::1]:5060';

function parsePort(text: string, raw: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) {
    throw new Invalid(`port ${JSON.stringify(text)} in ${JSON.stringify(raw)} must be an integer between 0 and 65535`);
  }
  return Number(text);
}

export interface HostPortRules {
  /** Port when none is written; null: a port is required. */
  defaultPort: number | null;
  /** The whole value, for messages. */
  raw: string;
  /** How an IPv6 example is written, e.g. `udp:[::1]:5060`. */
  v6Example: string;
  /** Message for a value with no port when one is required. */
  needsPort: string;
  /** Message for an empty host. */
  missingHost: string;
}

/**
 * `host[:port]` where host is an IP literal, IPv6 in brackets: the part of a
 * listen value after its transport, and an HTTP listen address.
 */
export function parseHostPort(rest: string, rules: HostPortRules): { host: string; port: number } {
  const raw = rules.raw;
  let host: string;
  let port = rules.defaultPort;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw new Invalid(`missing "]" after the IPv6 address in ${JSON.stringify(raw)}`);
    host = rest.slice(1, close);
    if (!isIPv6(host)) throw new Invalid(`${JSON.stringify(host)} in ${JSON.stringify(raw)} is not a valid IPv6 address`);
    host = canonicalIPv6(host);
    const after = rest.slice(close + 1);
    if (after.startsWith(':')) port = parsePort(after.slice(1), raw);
    else if (after !== '') throw new Invalid(`unexpected ${JSON.stringify(after)} after "]" in ${JSON.stringify(raw)}`);
    else if (port === null) throw new Invalid(`${JSON.stringify(raw)} needs a port after "]", e.g. ${rules.v6Example}`);
  } else {
    const parts = rest.split(':');
    if (parts.length > 2) throw new Invalid(`IPv6 addresses must be in brackets, e.g. ${rules.v6Example} (got ${JSON.stringify(raw)})`);
    host = parts[0];
    if (parts.length === 2) port = parsePort(parts[1], raw);
    if (host === '') throw new Invalid(rules.missingHost);
    if (!isIPv4(host)) {
      throw new Invalid(
        `host ${JSON.stringify(host)} in ${JSON.stringify(raw)} must be an IP address (e.g. 127.0.0.1, 0.0.0.0, [::1] or [::]), not a name`,
      );
    }
  }
  if (port === null) throw new Invalid(rules.needsPort);
  return { host, port };
}

/** `transport:host[:port]`, IPv6 hosts in brackets: `udp:[::1]:5060`. */
export function parseListen(raw: string): ListenSpec {
  const colon = raw.indexOf(':');
  if (colon <= 0) {
    throw new Invalid(`${JSON.stringify(raw)} must be transport:host:port, e.g. ${LISTEN_EXAMPLE}`);
  }
  const name = raw.slice(0, colon).toLowerCase();
  if (!(PROTOCOLS as readonly string[]).includes(name)) {
    throw new Invalid(`unknown transport ${JSON.stringify(raw.slice(0, colon))} (expected ${alternatives(PROTOCOLS)})`);
  }
  const protocol = name as Protocol;
  const { host, port } = parseHostPort(raw.slice(colon + 1), {
    defaultPort: DEFAULT_PORTS[protocol],
    raw,
    v6Example: `${protocol}:[::1]:${DEFAULT_PORTS[protocol]}`,
    needsPort: '',
    missingHost: `missing host in ${JSON.stringify(raw)}, e.g. ${LISTEN_EXAMPLE}`,
  });
  if (UNSUPPORTED_PROTOCOLS.includes(protocol)) {
    throw new Invalid(`${protocol} transport is not supported yet (use udp, tcp or tls for now)`);
  }
  return { protocol, host, port };
}

/** Inverse of parseListen; always writes the port. */
export function formatListen(spec: ListenSpec): string {
  const host = spec.host.includes(':') ? `[${spec.host}]` : spec.host;
  return `${spec.protocol}:${host}:${spec.port}`;
}

/** Sockets of the same kind that could not both be bound. */
function socketKind(p: Protocol): 'udp' | 'tcp' {
  return p === 'udp' ? 'udp' : 'tcp';
}

function hostsOverlap(a: string, b: string): boolean {
  if (a === b) return true;
  // '::' is dual-stack on Linux by default: it also takes every IPv4 address.
  if (a === '::' || b === '::') return true;
  if (a === '0.0.0.0') return isIPv4(b);
  if (b === '0.0.0.0') return isIPv4(a);
  return false;
}

/** Refuse duplicate listen entries and entries that would collide when bound. */
export function checkListenConflicts(specs: ListenSpec[], report: (index: number, reason: string) => void): void {
  specs.forEach((spec, i) => {
    for (let j = 0; j < i; j++) {
      const other = specs[j];
      if (spec.protocol === other.protocol && spec.host === other.host && spec.port === other.port) {
        report(i, `duplicate of listen[${j}] (${formatListen(other)})`);
        return;
      }
      if (spec.port !== 0 && spec.port === other.port && socketKind(spec.protocol) === socketKind(other.protocol) && hostsOverlap(spec.host, other.host)) {
        report(
          i,
          `${formatListen(spec)} overlaps listen[${j}] (${formatListen(other)}): both need ${socketKind(spec.protocol).toUpperCase()} port ${spec.port} on the same address`,
        );
        return;
      }
    }
  });
}

/** A URL as written, with its password (if any) replaced by ***: for logs, errors and `portier check`. */
export function hideUrlPassword(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)[^@/]*@/i, '$1***@');
}
