// RFC 4475 (SIP Torture Test Messages) and RFC 5118 (IPv6 torture tests) run
// through the parser. Fixtures and expectations live in test/fixtures/; see
// test/fixtures/README.md for how they were made and what each field means.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAndValidate, SipParseError } from '../../src/sip/index.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };
interface Case {
  file: string;
  section: string;
  valid: boolean;
  kind: 'request' | 'response';
  expect: Obj;
  why: string;
  lenient?: boolean;
  mayAccept?: boolean;
  partial?: boolean;
  appResponse?: number;
}

// The parser's public types are used loosely here so that this file states
// RFC facts, not the parser's internal representation.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const CRLFCRLF = Buffer.from('\r\n\r\n');

function pctDecode(s: string): string {
  // One level of %HH decoding over octets; result as a latin1 string so that
  // %00 and non-UTF-8 octets survive.
  const bytes: number[] = [];
  const src = Buffer.from(s, 'latin1');
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === 0x25 && i + 2 < src.length + 0 && /^[0-9A-Fa-f]{2}$/.test(src.subarray(i + 1, i + 3).toString('latin1'))) {
      bytes.push(parseInt(src.subarray(i + 1, i + 3).toString('latin1'), 16));
      i += 2;
    } else bytes.push(c);
  }
  return Buffer.from(bytes).toString('latin1');
}

/** Unquote and unescape a quoted-string display name; tokens are returned trimmed. */
function displayText(s: unknown): string | null {
  if (s === undefined || s === null) return null;
  const str = String(s).trim();
  if (str.length >= 2 && str.startsWith('"') && str.endsWith('"')) {
    return str.slice(1, -1).replace(/\\([\s\S])/g, '$1');
  }
  return str;
}

function stripBrackets(h: unknown): string | null {
  if (h === undefined || h === null) return null;
  const s = String(h);
  return s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s;
}

function uriString(u: unknown): string | null {
  if (u === undefined || u === null) return null;
  if (typeof u === 'string') return u;
  const o = u as Any;
  if (typeof o.toString === 'function' && o.toString !== Object.prototype.toString) return String(o.toString());
  if (typeof o.raw === 'string') return o.raw;
  return null;
}

function paramsToMap(p: unknown): Map<string, string | null> {
  const m = new Map<string, string | null>();
  if (!p) return m;
  const entries: Iterable<[string, unknown]> = p instanceof Map ? p.entries() : Object.entries(p as object);
  for (const [k, val] of entries) m.set(k.toLowerCase(), val === undefined || val === '' ? (val === '' ? '' : null) : (val as string | null));
  return m;
}

function matches(actual: unknown, expected: Json): boolean {
  if (expected !== null && typeof expected === 'object' && !Array.isArray(expected) && 'anyOf' in expected) {
    return (expected.anyOf as Json[]).some((e) => matches(actual, e));
  }
  return actual === expected;
}

function bytesOf(s: string): Buffer[] {
  return [Buffer.from(s, 'utf8'), Buffer.from(s, 'latin1')];
}

function checkParams(tt: Any, label: string, actualParams: unknown, expected: Obj, decode = false) {
  const m = paramsToMap(actualParams);
  const norm = new Map<string, string | null>();
  for (const [k, val] of m) norm.set(decode ? pctDecode(k).toLowerCase() : k, val);
  for (const [k, ev] of Object.entries(expected)) {
    const key = k.toLowerCase();
    tt.ok(norm.has(key), `${label}: has parameter ${key}`);
    const av = norm.get(key);
    const avN = av === '' ? null : av;
    tt.ok(matches(avN ?? null, ev), `${label}: parameter ${key} = ${JSON.stringify(ev)} (got ${JSON.stringify(av)})`);
  }
}

function checkUriParts(tt: Any, label: string, u: Any, e: Obj) {
  tt.ok(u, `${label}: parsed URI present`);
  if (!u) return;
  if ('scheme' in e) tt.equal(String(u.scheme).toLowerCase(), e.scheme, `${label}: scheme`);
  if ('user' in e) tt.equal(u.user, e.user, `${label}: user`);
  if ('userDecoded' in e) tt.equal(pctDecode(String(u.user ?? '')), e.userDecoded, `${label}: user (after %HH decoding)`);
  if ('password' in e) tt.equal(u.password, e.password, `${label}: password`);
  if ('host' in e) tt.equal(String(u.host).toLowerCase(), e.host, `${label}: host`);
  if ('host6' in e) tt.ok(matches(stripBrackets(u.host)?.toLowerCase(), e.host6), `${label}: IPv6 host ${JSON.stringify(e.host6)} (got ${u.host})`);
  if ('port' in e) tt.equal(u.port ?? null, e.port, `${label}: port`);
  if ('params' in e) {
    const m = paramsToMap(u.params);
    const exp = e.params as Obj;
    if (Object.keys(exp).length === 0) tt.equal(m.size, 0, `${label}: no URI parameters`);
    checkParams(tt, `${label} params`, u.params, exp);
  }
}

function checkVia(tt: Any, label: string, v: Any, e: Obj) {
  tt.ok(v, `${label}: present`);
  if (!v) return;
  if ('transport' in e) tt.equal(String(v.transport).toUpperCase(), e.transport, `${label}: transport`);
  if ('host' in e) tt.equal(String(v.host).toLowerCase(), e.host, `${label}: host`);
  if ('host6' in e) tt.equal(stripBrackets(v.host)?.toLowerCase(), e.host6, `${label}: IPv6 host`);
  if ('port' in e) tt.equal(v.port ?? null, e.port, `${label}: port`);
  if ('branch' in e) tt.equal(v.branch ?? null, e.branch, `${label}: branch`);
  if ('params' in e) checkParams(tt, label, v.params, e.params as Obj);
}

function checkNameAddr(tt: Any, label: string, na: Any, e: Obj) {
  tt.ok(na, `${label}: present`);
  if (!na) return;
  if ('uri' in e) tt.equal(uriString(na.uri), e.uri, `${label}: URI`);
  if ('displayName' in e) tt.equal(displayText(na.displayName), e.displayName, `${label}: display name`);
  if ('userDecoded' in e || 'host' in e) {
    const u = typeof na.uri === 'object' ? na.uri : null;
    tt.ok(u, `${label}: URI is parsed`);
    if (u) {
      if ('userDecoded' in e) tt.equal(pctDecode(String(u.user ?? '')), e.userDecoded, `${label}: user (after %HH decoding)`);
      if ('host' in e) tt.equal(String(u.host).toLowerCase(), e.host, `${label}: host`);
    }
  }
  if ('uriParamsDecodedKeys' in e) {
    const u = typeof na.uri === 'object' ? na.uri : null;
    tt.ok(u, `${label}: URI is parsed`);
    if (u) checkParams(tt, `${label} URI`, u.params, e.uriParamsDecodedKeys as Obj, true);
  }
  if ('params' in e) checkParams(tt, label, na.params, e.params as Obj);
}

function checkFacts(tt: Any, msg: Any, e: Obj, input: Buffer) {
  if ('method' in e) tt.equal(msg.method, e.method, 'method');
  if ('status' in e) tt.equal(msg.status, e.status, 'status code');
  if ('reason' in e) tt.equal(msg.reason, e.reason, 'reason phrase');
  if ('reasonHex' in e) {
    const want = Buffer.from(e.reasonHex as string, 'hex');
    tt.ok(bytesOf(String(msg.reason)).some((b) => b.equals(want)), 'reason phrase octets preserved');
  }
  if ('ruri' in e) tt.equal(msg.uri, e.ruri, 'Request-URI (raw)');
  if ('requestUri' in e) checkUriParts(tt, 'Request-URI', msg.requestUri, e.requestUri as Obj);
  if ('callId' in e) tt.equal(msg.callId(), e.callId, 'Call-ID');
  if ('cseq' in e) tt.same(msg.cseq(), e.cseq, 'CSeq');
  if ('maxForwards' in e) tt.equal(msg.maxForwards(), e.maxForwards, 'Max-Forwards');
  const vias: Any[] = 'viaCount' in e || 'vias' in e || 'topVia' in e || 'lastVia' in e ? msg.via() : [];
  if ('viaCount' in e) tt.equal(vias.length, e.viaCount, 'number of Via values');
  if ('topVia' in e) checkVia(tt, 'top Via', vias[0], e.topVia as Obj);
  if ('lastVia' in e) checkVia(tt, 'last Via', vias[vias.length - 1], e.lastVia as Obj);
  if ('vias' in e) (e.vias as Obj[]).forEach((ve, i) => checkVia(tt, `Via #${i + 1}`, vias[i], ve));
  if ('fromTag' in e) tt.equal(msg.from().tag ?? null, e.fromTag, 'From tag');
  if ('toTag' in e) tt.equal(msg.to().tag ?? null, e.toTag, 'To tag');
  if ('fromDisplayName' in e) tt.equal(displayText(msg.from().displayName), e.fromDisplayName, 'From display name');
  if ('toDisplayName' in e) tt.equal(displayText(msg.to().displayName), e.toDisplayName, 'To display name');
  if ('fromUri' in e) tt.equal(uriString(msg.from().uri), e.fromUri, 'From URI');
  if ('toUri' in e) tt.equal(uriString(msg.to().uri), e.toUri, 'To URI');
  if ('fromUserDecoded' in e) tt.equal(pctDecode(String(msg.from().uri?.user ?? '')), e.fromUserDecoded, 'From user (after %HH decoding)');
  if ('toUserDecoded' in e) tt.equal(pctDecode(String(msg.to().uri?.user ?? '')), e.toUserDecoded, 'To user (after %HH decoding)');
  if ('toUriHost' in e) tt.equal(String(msg.to().uri?.host).toLowerCase(), e.toUriHost, 'To URI host');
  if ('toUriPort' in e) tt.equal(msg.to().uri?.port ?? null, e.toUriPort, 'To URI port');
  if ('fromParams' in e) checkParams(tt, 'From', msg.from().params, e.fromParams as Obj);
  const contacts: Any[] = 'contactCount' in e || 'contacts' in e ? msg.contacts() : [];
  if ('contactCount' in e) tt.equal(contacts.length, e.contactCount, 'number of Contact values');
  if ('contacts' in e) (e.contacts as Obj[]).forEach((ce, i) => checkNameAddr(tt, `Contact #${i + 1}`, contacts[i], ce));
  if ('headers' in e) {
    for (const [name, val] of Object.entries(e.headers as Obj)) tt.equal(msg.get(name), val, `header ${name}`);
  }
  if ('headersHex' in e) {
    for (const [name, hex] of Object.entries(e.headersHex as Obj)) {
      const got = msg.get(name);
      const want = Buffer.from(hex as string, 'hex');
      tt.ok(got !== undefined && bytesOf(String(got)).some((b) => b.equals(want)), `header ${name} octets preserved`);
    }
  }
  if ('bodyLength' in e) {
    tt.equal(msg.body?.length, e.bodyLength, 'body length');
    const headEnd = input.indexOf(CRLFCRLF) + 4;
    if (Buffer.isBuffer(msg.body) && headEnd >= 4) {
      tt.ok(msg.body.equals(input.subarray(headEnd, headEnd + (e.bodyLength as number))), 'body octets are the octets after the header section');
    }
  }
}

/** The octets of the message proper inside the datagram (RFC 3261 18.3). */
function messageBytes(input: Buffer, e: Obj): Buffer {
  if (e.messageLength === 'headers+contentLength') {
    const headEnd = input.indexOf(CRLFCRLF) + 4;
    return input.subarray(0, headEnd + (e.bodyLength as number));
  }
  return input;
}

function isError(r: unknown): r is SipParseError {
  return r instanceof SipParseError;
}

for (const suite of ['rfc4475', 'rfc5118']) {
  const cases = JSON.parse(readFileSync(join(fixtures, suite, 'expected.json'), 'utf8')) as Case[];
  t.test(suite, async (st) => {
    for (const c of cases) {
      st.test(`${c.section} ${c.file}`, async (tt) => {
        const input = readFileSync(join(fixtures, suite, c.file));
        let r: unknown;
        tt.doesNotThrow(() => {
          r = parseAndValidate(input, { transport: 'udp' });
        }, 'parseAndValidate never throws');
        if (c.valid) {
          if (isError(r)) {
            if (c.lenient && r.code === c.appResponse) {
              // The RFC lets the element refuse this at the application layer;
              // a response must still be buildable from the parsed headers.
              tt.ok(r.message, `rejected with ${r.code} as the RFC allows, partial message present to build the response`);
              return;
            }
            tt.fail(`must be accepted (${c.why}); got ${r.code} ${r.reason}`);
            return;
          }
          const msg = r as Any;
          tt.equal(msg.isRequest, c.kind === 'request', `is a ${c.kind}`);
          checkFacts(tt, msg, c.expect, input);
          const want = messageBytes(input, c.expect);
          const out: Buffer = msg.toBuffer();
          tt.ok(Buffer.isBuffer(out) && out.equals(want), `toBuffer() reproduces the ${want.length} message octets exactly (got ${out?.length})`);
        } else {
          const code = c.expect.response as number;
          if (!isError(r)) {
            if (c.mayAccept) {
              tt.pass(`accepted liberally, which the RFC permits (${c.why})`);
              return;
            }
            tt.fail(`must be rejected with ${code} (${c.why}); it was accepted`);
            return;
          }
          tt.equal(r.code, code, `rejected with ${code === 0 ? 'drop (0)' : code}: ${c.why}`);
          if (c.partial) tt.ok(r.message, 'the partially parsed message is available to build the response');
        }
      });
    }
  });
}
