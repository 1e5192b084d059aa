// Shared by the registrar tests: the real linphonec traces, REGISTERs built
// to order, Sources, and a clock the tests move by hand.
import { readFileSync } from 'node:fs';
import { parseAndValidate, SipMessage, SipParseError } from '../../src/sip/index.js';
import type { Source } from '../../src/transport/types.js';

export const CRLF = '\r\n';
export const DOMAIN = 'intercom.test';

const TRACES = new URL('../fixtures/traces/', import.meta.url);

/** The octets of a trace file. */
export function traceBytes(name: string): Buffer {
  return readFileSync(new URL(name, TRACES));
}

/** A trace parsed and validated as received over `transport`. */
export function trace(name: string, transport = 'udp'): SipMessage {
  return parseOrThrow(traceBytes(name), transport);
}

export function parseOrThrow(buf: Buffer | string, transport = 'udp'): SipMessage {
  const m = parseAndValidate(typeof buf === 'string' ? Buffer.from(buf, 'latin1') : buf, { transport });
  if (m instanceof SipParseError) throw new Error(`fixture does not parse: ${m.reason}`);
  return m;
}

export interface RegisterSpec {
  user?: string;
  domain?: string;
  ruri?: string;
  callId?: string;
  cseq?: number;
  /** Contact header values, one line each. Default: one plain UDP contact. */
  contacts?: string[];
  /** Expires header; null for none. Default none. */
  expires?: number | string | null;
  /** Supported header; null for none. */
  supported?: string | null;
  extra?: string[];
  toScheme?: 'sip' | 'sips';
}

let branch = 0;

/** The text of a REGISTER as a Linphone-like UA would send it. */
export function registerText(spec: RegisterSpec = {}): string {
  const user = spec.user ?? 'alice';
  const domain = spec.domain ?? DOMAIN;
  const scheme = spec.toScheme ?? 'sip';
  const lines = [
    `REGISTER ${spec.ruri ?? `sip:${domain}`} SIP/2.0`,
    `Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-reg-${++branch};rport`,
    'Max-Forwards: 70',
    `From: <${scheme}:${user}@${domain}>;tag=from-${user}`,
    `To: <${scheme}:${user}@${domain}>`,
    `Call-ID: ${spec.callId ?? 'call-' + user}`,
    `CSeq: ${spec.cseq ?? 1} REGISTER`,
  ];
  for (const c of spec.contacts ?? [`<sip:${user}@192.0.2.1:5060;transport=udp>`]) lines.push(`Contact: ${c}`);
  if (spec.expires !== undefined && spec.expires !== null) lines.push(`Expires: ${spec.expires}`);
  if (spec.supported !== null) lines.push(`Supported: ${spec.supported ?? 'replaces, outbound, gruu'}`);
  lines.push(...(spec.extra ?? []), 'User-Agent: test-ua/1.0', 'Content-Length: 0');
  return lines.join(CRLF) + CRLF + CRLF;
}

export function register(spec: RegisterSpec = {}): SipMessage {
  return parseOrThrow(registerText(spec));
}

export function udpSource(address = '192.0.2.1', port = 5060): Source {
  return { protocol: 'udp', address, port, family: 4, local: { protocol: 'udp', address: '127.0.0.1', port: 5080 }, connectionId: 0 };
}

export function tcpSource(address = '127.0.0.1', port = 47388, connectionId = 7): Source {
  // Frozen, as the transport hands a connection's Source up.
  const source: Source = { protocol: 'tcp', address, port, family: 4, local: { protocol: 'tcp', address: '127.0.0.1', port: 5080 }, connectionId };
  return Object.freeze(source);
}

/** A clock for the registrar: starts at a fixed instant, moves only when told. */
export class Clock {
  t = Date.UTC(2025, 0, 15, 9, 0, 0);
  readonly now = (): number => this.t;
  advance(seconds: number): void {
    this.t += seconds * 1000;
  }
}

/** A header parameter of the response's Contact values, unquoted. */
export function unq(v: string | null | undefined): string | undefined {
  if (v === null || v === undefined) return undefined;
  return v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
}
