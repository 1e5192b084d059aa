/**
 * Hot-path counters for the metrics: plain numbers in typed arrays, indexed
 * by bounded label values. Counting costs a Map lookup and an array
 * increment, never an allocation; prom-client reads the totals on scrape
 * (see ./registry.ts).
 */
import type { Protocol } from '../config/types.js';
import { PROTOCOLS } from '../config/types.js';

/** Request methods counted by name; any other method is counted as "other". */
export const METHODS = [
  'INVITE',
  'ACK',
  'CANCEL',
  'BYE',
  'OPTIONS',
  'REGISTER',
  'INFO',
  'MESSAGE',
  'UPDATE',
  'PRACK',
  'SUBSCRIBE',
  'NOTIFY',
  'REFER',
  'PUBLISH',
  'other',
] as const;

export type MethodLabel = (typeof METHODS)[number];

/** Response code classes. */
export const CODE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', '6xx'] as const;

/**
 * Why the parser refused a message: the response code sent, or 'drop' when none could be;
 * 'other' for a code the parser does not use today (exported only once seen).
 */
export const PARSE_ERROR_REASONS = ['400', '413', '505', 'drop', 'other'] as const;

export type ParseErrorReason = (typeof PARSE_ERROR_REASONS)[number];

const OTHER = METHODS.length - 1;
const methodIndex = new Map<string, number>(METHODS.slice(0, OTHER).map((m, i) => [m, i]));
const protocolIndex = new Map<Protocol, number>(PROTOCOLS.map((p, i) => [p, i]));
const reasonIndex = new Map<string, number>(PARSE_ERROR_REASONS.map((r, i) => [r, i]));

/** Index of a method in METHODS; methods are case-sensitive (RFC 3261 §7.1), so "invite" is "other". */
export function methodSlot(method: string): number {
  return methodIndex.get(method) ?? OTHER;
}

function protocolSlot(p: Protocol): number {
  return protocolIndex.get(p) ?? 0;
}

export class SipCounters {
  /** [method * PROTOCOLS.length + protocol] */
  readonly requests = new Float64Array(METHODS.length * PROTOCOLS.length);
  /** [method * CODE_CLASSES.length + class] */
  readonly responses = new Float64Array(METHODS.length * CODE_CLASSES.length);
  /** [protocol * PARSE_ERROR_REASONS.length + reason] */
  readonly parseErrors = new Float64Array(PROTOCOLS.length * PARSE_ERROR_REASONS.length);

  /** A request passed the parser. */
  request(method: string, protocol: Protocol): void {
    this.requests[methodSlot(method) * PROTOCOLS.length + protocolSlot(protocol)]++;
  }

  /** A response went out (status 100-699) to a request of `method`. */
  response(method: string, status: number): void {
    const cls = Math.floor(status / 100) - 1;
    if (cls < 0 || cls >= CODE_CLASSES.length) return;
    this.responses[methodSlot(method) * CODE_CLASSES.length + cls]++;
  }

  /** The parser refused a message received over `protocol`. */
  parseError(protocol: Protocol, reason: string): void {
    const r = reasonIndex.get(reason) ?? PARSE_ERROR_REASONS.length - 1;
    this.parseErrors[protocolSlot(protocol) * PARSE_ERROR_REASONS.length + r]++;
  }
}
