// Header field names: compact forms (RFC 3261 §7.3.3 and the extensions
// registered since), canonical spellings for headers Portier writes, and
// which headers hold comma-separated lists.

import { isToken } from './chars.js';

/** Compact form -> full lower-case name. */
const COMPACT: Record<string, string> = {
  a: 'accept-contact',
  b: 'referred-by',
  c: 'content-type',
  d: 'request-disposition',
  e: 'content-encoding',
  f: 'from',
  i: 'call-id',
  j: 'reject-contact',
  k: 'supported',
  l: 'content-length',
  m: 'contact',
  n: 'identity-info',
  o: 'event',
  r: 'refer-to',
  s: 'subject',
  t: 'to',
  u: 'allow-events',
  v: 'via',
  x: 'session-expires',
  y: 'identity',
};

/** Spelling used when Portier writes a header. */
const CANONICAL: Record<string, string> = {
  'call-id': 'Call-ID',
  cseq: 'CSeq',
  'www-authenticate': 'WWW-Authenticate',
  'mime-version': 'MIME-Version',
  'rack': 'RAck',
  'rseq': 'RSeq',
  'sip-etag': 'SIP-ETag',
  'sip-if-match': 'SIP-If-Match',
};

// Exact spellings seen on the wire, mapped straight to their lower-case name,
// so the common case costs one Map lookup and no toLowerCase().
const KNOWN = new Map<string, string>();

for (const name of [
  'Via',
  'From',
  'To',
  'Call-ID',
  'Call-Id',
  'CSeq',
  'Contact',
  'Max-Forwards',
  'Content-Length',
  'Content-Type',
  'Route',
  'Record-Route',
  'Path',
  'Expires',
  'User-Agent',
  'Server',
  'Allow',
  'Supported',
  'Require',
  'Proxy-Require',
  'Unsupported',
  'Accept',
  'Authorization',
  'Proxy-Authorization',
  'WWW-Authenticate',
  'Proxy-Authenticate',
  'Authentication-Info',
  'Date',
  'Subject',
  'Event',
  'Allow-Events',
  'Organization',
  'Session-Expires',
  'Min-SE',
  'P-Asserted-Identity',
  'Privacy',
  'Reason',
  'Retry-After',
  'Min-Expires',
  'Timestamp',
  'Warning',
  'Content-Disposition',
  'Content-Encoding',
  'Accept-Encoding',
  'Accept-Language',
  'Refer-To',
  'Referred-By',
  'Replaces',
  'Subscription-State',
  'Flow-Timer',
]) {
  KNOWN.set(name, name.toLowerCase());
  KNOWN.set(name.toLowerCase(), name.toLowerCase());
}
for (const [c, full] of Object.entries(COMPACT)) {
  KNOWN.set(c, full);
  KNOWN.set(c.toUpperCase(), full);
}

// Small ids for the headers whose presence and count are checked on every
// message: counting by id avoids string comparisons.
export const H_OTHER = 0;
export const H_VIA = 1;
export const H_FROM = 2;
export const H_TO = 3;
export const H_CALL_ID = 4;
export const H_CSEQ = 5;
export const H_MAX_FORWARDS = 6;
export const H_CONTENT_TYPE = 7;
export const H_EXPIRES = 8;
export const H_CONTENT_LENGTH = 9;
const IDS = new Map<string, number>([
  ['via', H_VIA],
  ['from', H_FROM],
  ['to', H_TO],
  ['call-id', H_CALL_ID],
  ['cseq', H_CSEQ],
  ['max-forwards', H_MAX_FORWARDS],
  ['content-type', H_CONTENT_TYPE],
  ['expires', H_EXPIRES],
  ['content-length', H_CONTENT_LENGTH],
]);

// Candidates by length and first letter, for reading a name straight out of
// the message head: usually one candidate to compare.
const CANDIDATES: Array<string[] | undefined> = [];
const CANDIDATE_IDS: Array<number[] | undefined> = [];
function slot(len: number, first: number): number {
  return len * 32 + (first & 31);
}
for (const key of new Set(KNOWN.values())) {
  if (key.length < 2) continue;
  const sl = slot(key.length, key.charCodeAt(0));
  (CANDIDATES[sl] ??= []).push(key);
  (CANDIDATE_IDS[sl] ??= []).push(IDS.get(key) ?? H_OTHER);
}

/** The id (H_VIA...) of the name headerKeyAt() returned last. */
export let lastHeaderId = 0;

/**
 * The full lower-case name of the header name s[start, end), without slicing
 * when it is a known header: the hot path of the parser. Returns null when
 * s[start, end) is not a token.
 */
export function headerKeyAt(s: string, start: number, end: number): string | null {
  const len = end - start;
  const c0 = s.charCodeAt(start) | 0x20;
  if (len === 1) {
    const full = COMPACT[String.fromCharCode(c0)];
    if (typeof full === 'string') {
      lastHeaderId = IDS.get(full) ?? H_OTHER;
      return full;
    }
  } else if (c0 >= 0x61 && c0 <= 0x7a) {
    const sl = slot(len, c0);
    const list = CANDIDATES[sl];
    if (list !== undefined) {
      outer: for (let k = 0; k < list.length; k++) {
        const cand = list[k];
        for (let i = 1; i < len; i++) {
          const c = s.charCodeAt(start + i);
          const w = cand.charCodeAt(i);
          // Only letters fold; '-' must match exactly.
          if (c !== w && (c | 0x20) !== w) continue outer;
          if (c !== w && w === 0x2d) continue outer;
        }
        lastHeaderId = (CANDIDATE_IDS[sl] as number[])[k];
        return cand;
      }
    }
  }
  // Unknown or unusual: check it is a token, then fold.
  if (!isToken(s, start, end)) return null;
  const key = s.slice(start, end).toLowerCase();
  lastHeaderId = IDS.get(key) ?? H_OTHER;
  return key;
}

/** Full lower-case name of a header name as written (any case, compact or full). */
export function headerKey(name: string): string {
  const k = KNOWN.get(name);
  if (k !== undefined) return k;
  const lower = name.toLowerCase();
  // typeof: a name like `constructor` or `__proto__` must not read Object.prototype.
  const full = COMPACT[lower];
  return typeof full === 'string' ? full : lower;
}

/** The spelling Portier writes for a lower-case header name. */
export function headerDisplayName(key: string): string {
  return DISPLAY.get(key) ?? spell(key);
}

function spell(key: string): string {
  const c = CANONICAL[key];
  if (typeof c === 'string') return c; // not `constructor` & co. from Object.prototype
  let out = '';
  let up = true;
  for (let i = 0; i < key.length; i++) {
    const ch = key[i];
    out += up ? ch.toUpperCase() : ch;
    up = ch === '-';
  }
  return out;
}

const METHODS = ['INVITE', 'ACK', 'BYE', 'CANCEL', 'OPTIONS', 'REGISTER', 'PRACK', 'UPDATE', 'INFO', 'MESSAGE', 'REFER', 'SUBSCRIBE', 'NOTIFY', 'PUBLISH'];

/** s[start, end), as the constant when it is one of the usual methods (case-sensitive): no string per message. */
export function methodAt(s: string, start: number, end: number): string {
  for (let k = 0; k < METHODS.length; k++) {
    const m = METHODS[k];
    if (m.length === end - start && s.startsWith(m, start)) return m;
  }
  return s.slice(start, end);
}

/** headerDisplayName of every known header, spelled once: Portier writes Via, Max-Forwards, Record-Route... per message. */
const DISPLAY = new Map<string, string>();
for (const key of new Set(KNOWN.values())) DISPLAY.set(key, spell(key));

/**
 * Headers whose value is a comma-separated list of elements. Only these are
 * ever split on commas; for others (Date, User-Agent, Authorization...) a
 * comma is part of the value.
 */
export const LIST_HEADERS: ReadonlySet<string> = new Set([
  'via',
  'contact',
  'route',
  'record-route',
  'path',
  'service-route',
  'allow',
  'supported',
  'require',
  'proxy-require',
  'unsupported',
  'accept',
  'accept-encoding',
  'accept-language',
  'allow-events',
  'content-encoding',
  'in-reply-to',
  'reply-to',
  'alert-info',
  'call-info',
  'error-info',
  'p-asserted-identity',
  'privacy',
  'reason',
  'warning',
]);

/** The id of a lower-case full header name; H_OTHER for the rest. */
export function headerId(key: string): number {
  return IDS.get(key) ?? H_OTHER;
}
