// Property-based tests of the SIP message layer (fast-check).
//
// 1. Generated valid requests and responses (RFC 3261 §25 grammar, with the
//    awkward corners: folding, compact names, comma-joined Vias, quoted
//    display names with quoted-pairs, IPv6 references, escapes, binary
//    bodies) parse, give back the generated facts, and serialize to the very
//    input octets.
// 2. After the changes a proxy makes (a pushed Via, Max-Forwards - 1) the
//    output is exactly the input with those lines changed, and re-parses to
//    the same facts.
// 3. Random byte mutations of valid messages never make the parser or the
//    lazy accessors throw, and the verdicts stay within the documented codes.
// 4. clone(): changing a clone never shows in the original.
//
// Generated text is a latin1 string (one char per octet) so that UTF-8
// octets and arbitrary body bytes survive the trip unchanged.
import t from 'tap';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  buildResponseBytes,
  parseAndValidate,
  SipMessage,
  SipParseError,
  stampedVia,
  type ParseOptions,
} from '../../src/sip/index.js';

/** SIP_PROPERTY_SCALE=20 runs every property 20 times as often (for a deeper local run). */
const SCALE = Number(process.env.SIP_PROPERTY_SCALE ?? 1) || 1;
const runs = (n: number): number => Math.round(n * SCALE);

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

// ---------------------------------------------------------------------------
// Character sets (RFC 3261 §25.1)

const ALPHA = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const DIGIT = '0123456789';
const ALNUM = ALPHA + DIGIT;
const TOKEN_CHARS = ALNUM + "-.!%*_+`'~";
const UNRESERVED = ALNUM + "-_.!~*'()";
const USER_CHARS = UNRESERVED + '&=+$,;?/';
/** User part safe outside <> (RFC 3261 §20.10: no ',', ';' or '?'). */
const PLAIN_USER_CHARS = UNRESERVED + '&=+$/';
const PASSWORD_CHARS = UNRESERVED + '&=+$,';
const PARAM_CHARS = UNRESERVED + '[]/:&+$';
const HNAME_CHARS = UNRESERVED + '[]/?:+$';
const WORD_CHARS = ALNUM + '-.!%*_+`\'~()<>:\\"/[]?{}';
const RESERVED = ';/?:@&=+$,';
/** Sample UTF-8 text, as latin1 strings of its octets. */
const UTF8 = ['é', 'ü', 'ß', 'Ω', '日本', '€', '😀'].map((s) => Buffer.from(s, 'utf8').toString('latin1'));

const CRLF = '\r\n';

const ch = (set: string): fc.Arbitrary<string> => fc.constantFrom(...set.split(''));
const str = (set: string, min: number, max: number): fc.Arbitrary<string> => fc.string({ unit: ch(set), minLength: min, maxLength: max });
const hexEscape = fc
  .tuple(fc.integer({ min: 0, max: 255 }), fc.boolean())
  .map(([n, up]) => '%' + (up ? n.toString(16).toUpperCase() : n.toString(16)).padStart(2, '0'));
/** 1*( set-char / escaped ) (or 0* when min is 0). */
const escapedStr = (set: string, min: number, max: number): fc.Arbitrary<string> =>
  fc
    .array(fc.oneof({ weight: 6, arbitrary: ch(set) }, { weight: 1, arbitrary: hexEscape }), { minLength: min, maxLength: max })
    .map((a) => a.join(''));
const token = str(TOKEN_CHARS, 1, 10);

/** SWS = [LWS], with folding now and then. */
const sws = fc.constantFrom('', '', '', '', ' ', '\t', '  ', CRLF + ' ', ' ' + CRLF + '\t', CRLF + '  ');
/** LWS = [*WSP CRLF] 1*WSP. */
const lws = fc.constantFrom(' ', ' ', ' ', '\t', '  ', CRLF + ' ', ' ' + CRLF + ' ', CRLF + '\t');

/** What a header value reads as: folding (LWS with a CRLF) is one SP, surrounding white space trimmed. */
function unfolded(raw: string): string {
  return raw.replace(/[ \t]*\r\n[ \t]+/g, ' ').replace(/^[ \t]+|[ \t]+$/g, '');
}

// ---------------------------------------------------------------------------
// URIs

interface UriSpec {
  scheme: string;
  user: string | null;
  password: string | null;
  host: string;
  port: number | null;
  params: Array<[string, string | null]>;
  headers: string | null;
  text: string;
}

const label = fc.tuple(ch(ALNUM), str(ALNUM + '-', 0, 6), ch(ALNUM)).map(([a, b, c]) => a + b + c);
const hostname = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));
const ipv6 = fc.ipV6();
const host = fc.oneof({ weight: 3, arbitrary: hostname }, { weight: 2, arbitrary: fc.ipV4() }, { weight: 2, arbitrary: ipv6.map((a) => '[' + a + ']') });
const port = fc.option(fc.integer({ min: 0, max: 65535 }), { nil: null, freq: 2 });

const uriParams = fc.uniqueArray(fc.tuple(escapedStr(PARAM_CHARS, 1, 8), fc.option(escapedStr(PARAM_CHARS, 1, 10), { nil: null })), {
  maxLength: 4,
  selector: ([n]) => n.toLowerCase(),
});
const uriHeaders = fc
  .array(fc.tuple(escapedStr(HNAME_CHARS, 1, 6), escapedStr(HNAME_CHARS, 0, 8)), { minLength: 1, maxLength: 3 })
  .map((hs) => hs.map(([n, v]) => n + '=' + v).join('&'));

/**
 * A sip/sips URI. `plain`: fit for an addr-spec (no ',', ';', '?' anywhere,
 * no parameters, no headers). `withHeaders`: may carry a headers part.
 */
function sipUri(plain: boolean, withHeaders: boolean): fc.Arbitrary<UriSpec> {
  return fc
    .record({
      scheme: fc.constantFrom('sip', 'sip', 'sips', 'SIP'),
      userinfo: fc.option(
        fc.tuple(escapedStr(plain ? PLAIN_USER_CHARS : USER_CHARS, 1, 12), fc.option(escapedStr(PASSWORD_CHARS.replace(plain ? ',' : '', ''), 0, 8), { nil: null, freq: 3 })),
        { nil: null, freq: 5 },
      ),
      host,
      port,
      params: plain ? fc.constant([] as Array<[string, string | null]>) : uriParams,
      headers: withHeaders && !plain ? fc.option(uriHeaders, { nil: null, freq: 3 }) : fc.constant(null),
    })
    .map(({ scheme, userinfo, host, port, params, headers }) => {
      let text = scheme + ':';
      if (userinfo !== null) text += userinfo[0] + (userinfo[1] !== null ? ':' + userinfo[1] : '') + '@';
      text += host + (port !== null ? ':' + port : '');
      for (const [n, v] of params) text += ';' + n + (v !== null ? '=' + v : '');
      if (headers !== null) text += '?' + headers;
      return {
        scheme: scheme.toLowerCase(),
        user: userinfo?.[0] ?? null,
        password: userinfo?.[1] ?? null,
        host,
        port,
        params,
        headers,
        text,
      };
    });
}

const telUri: fc.Arbitrary<UriSpec> = fc
  .tuple(fc.oneof(str(DIGIT, 3, 12).map((d) => '+' + d), str(DIGIT + '-.()', 1, 10).map((d) => '1' + d)), fc.option(str(ALNUM, 1, 8), { nil: null }))
  .map(([num, ctx]) => ({
    scheme: 'tel',
    user: num,
    password: null,
    host: '',
    port: null,
    params: ctx === null ? [] : [['phone-context', ctx + '.example.com'] as [string, string | null]],
    headers: null,
    text: 'tel:' + num + (ctx === null ? '' : ';phone-context=' + ctx + '.example.com'),
  }));

// ---------------------------------------------------------------------------
// Header parameters, Via, name-addr

/** A quoted-string body as written: qdtext (with LWS now and then), quoted-pairs, UTF-8. */
const quotedContent: fc.Arbitrary<string> = fc
  .array(
    fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).filter((c) => c !== 0x22 && c !== 0x5c).map((c) => [String.fromCharCode(c), String.fromCharCode(c)] as [string, string]) },
      { weight: 2, arbitrary: fc.constantFrom('"', '\\').map((c) => ['\\' + c, c] as [string, string]) },
      // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x7f }).filter((c) => c !== 0x0a && c !== 0x0d).map((c) => ['\\' + String.fromCharCode(c), String.fromCharCode(c)] as [string, string]) },
      { weight: 1, arbitrary: fc.constantFrom(...UTF8).map((u) => [u, u] as [string, string]) },
      { weight: 1, arbitrary: fc.constantFrom('\t', ' ' + CRLF + ' ', CRLF + '\t').map((w) => [w, w] as [string, string]) },
    ),
    { maxLength: 16 },
  )
  .map((parts) => parts.map((p) => p[0]).join(''));

type ParamList = Array<[string, string | null]>;

/** generic-param values: token, host or quoted-string (no folding inside). */
const genericValue = fc.oneof(
  { weight: 4, arbitrary: token },
  { weight: 1, arbitrary: host },
  {
    weight: 1,
    arbitrary: fc
      .array(fc.oneof(fc.integer({ min: 0x20, max: 0x7e }).filter((c) => c !== 0x22 && c !== 0x5c).map((c) => String.fromCharCode(c)), fc.constant('\\"')), { maxLength: 10 })
      .map((a) => '"' + a.join('') + '"'),
  },
);

/** Extension parameters whose names cannot clash with the ones a test looks at. */
function extParams(max: number): fc.Arbitrary<ParamList> {
  return fc.uniqueArray(fc.tuple(token.map((n) => 'x' + n), fc.option(genericValue, { nil: null })), { maxLength: max, selector: ([n]) => n.toLowerCase() });
}

/** Writes `*( SEMI param )` with random SWS around ';' and '='. */
function paramsText(params: ParamList, ws: string[]): string {
  let out = '';
  params.forEach(([n, v], i) => {
    const a = ws[(3 * i) % ws.length];
    const b = ws[(3 * i + 1) % ws.length];
    const c = ws[(3 * i + 2) % ws.length];
    out += a + ';' + b + n + (v !== null ? c + '=' + c + v : '');
  });
  return out;
}

const wsList = fc.array(sws, { minLength: 1, maxLength: 8 });

interface ViaSpec {
  transport: string;
  host: string;
  port: number | null;
  branch: string;
  params: ParamList;
  text: string;
}

const viaParm: fc.Arbitrary<ViaSpec> = fc
  .record({
    proto: fc.constantFrom('SIP', 'SIP', 'sip'),
    transport: fc.oneof({ weight: 5, arbitrary: fc.constantFrom('UDP', 'TCP', 'TLS', 'SCTP', 'WS', 'WSS', 'udp', 'tcp') }, { weight: 1, arbitrary: token }),
    slashWs: fc.tuple(sws, sws, sws, sws),
    gap: lws,
    host,
    port,
    branch: token.map((b) => 'z9hG4bK' + b),
    rport: fc.option(fc.option(fc.integer({ min: 1, max: 65535 }).map(String), { nil: null }), { nil: undefined }),
    received: fc.option(fc.oneof(fc.ipV4(), ipv6), { nil: undefined, freq: 3 }),
    maddr: fc.option(host, { nil: undefined, freq: 4 }),
    ttl: fc.option(fc.integer({ min: 0, max: 255 }).map(String), { nil: undefined, freq: 4 }),
    ext: extParams(3),
    order: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
    ws: wsList,
  })
  .map((r) => {
    const params: ParamList = [['branch', r.branch], ...r.ext];
    if (r.rport !== undefined) params.push(['rport', r.rport]);
    if (r.received !== undefined) params.push(['received', r.received]);
    if (r.maddr !== undefined) params.push(['maddr', r.maddr]);
    if (r.ttl !== undefined) params.push(['ttl', r.ttl]);
    const ordered = params.map((p, i) => [p, r.order[i % 8] * 16 + i] as const).sort((a, b) => a[1] - b[1]).map((x) => x[0]);
    const [w1, w2, w3, w4] = r.slashWs;
    const text =
      r.proto + w1 + '/' + w2 + '2.0' + w3 + '/' + w4 + r.transport + r.gap + r.host + (r.port !== null ? ':' + r.port : '') + paramsText(ordered, r.ws);
    return { transport: r.transport.toUpperCase(), host: r.host, port: r.port, branch: r.branch, params: ordered, text };
  });

/** One Via header field value: one or more via-parms joined by COMMA. */
const viaValue = fc.tuple(fc.array(viaParm, { minLength: 1, maxLength: 3 }), fc.array(fc.tuple(sws, sws), { minLength: 2, maxLength: 2 })).map(([vias, ws]) => ({
  vias,
  text: vias.map((v) => v.text).reduce((acc, v, i) => acc + ws[(i - 1) % 2][0] + ',' + ws[(i - 1) % 2][1] + v),
}));

interface AddrSpec {
  /** Display name as the parser should report it (unfolded), or null. */
  display: string | null;
  /** Display name without quotes and quoted-pairs. */
  displayText: string | null;
  uri: UriSpec;
  params: ParamList;
  tag: string | null;
  text: string;
}

const displayName: fc.Arbitrary<{ raw: string; text: string } | null> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 3, arbitrary: quotedContent.map((raw) => ({ raw: '"' + raw + '"', text: unquoted(unfoldedQuoted('"' + raw + '"')) })) },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.array(token, { minLength: 1, maxLength: 3 }), fc.array(lws, { minLength: 3, maxLength: 3 })).map(([toks, ws]) => {
      const raw = toks.reduce((acc, tk, i) => acc + ws[i - 1] + tk);
      return { raw, text: unfolded(raw) };
    }),
  },
);

/** Quoted-pairs hidden as one char each (latin1 strings never hold chars over 0xff), and back. */
const hidePairs = (q: string): string => q.replace(/\\([^\r\n])/g, (_, c: string) => String.fromCharCode(0x100 + c.charCodeAt(0)));
const showPairs = (s: string): string => s.replace(/[\u0100-\u01ff]/g, (c) => '\\' + String.fromCharCode(c.charCodeAt(0) - 0x100));

/** unfolded() for a quoted-string: a quoted-pair (an escaped SP or HT too) is not white space. */
function unfoldedQuoted(q: string): string {
  return showPairs(unfolded(hidePairs(q)));
}

/** unfolded() for a whole value: quoted-pairs inside quoted strings are not white space. */
function unfoldedValue(v: string): string {
  return showPairs(unfolded(v.replace(/"(?:[^"\\]|\\[^\r\n])*"/g, hidePairs)));
}

/** A quoted-string's text: quotes off, quoted-pairs resolved. */
function unquoted(q: string): string {
  return q.slice(1, -1).replace(/\\([\s\S])/g, '$1');
}

/**
 * A name-addr or addr-spec with header parameters. `extra` adds parameters
 * (Contact's expires, q...). `withTag`: 'yes', 'no' or 'maybe'.
 */
function nameAddr(withTag: 'yes' | 'no' | 'maybe', extra: fc.Arbitrary<ParamList> = fc.constant([])): fc.Arbitrary<AddrSpec> {
  return fc
    .record({
      angle: fc.boolean(),
      display: displayName,
      before: sws,
      uri: fc.oneof({ weight: 5, arbitrary: sipUri(false, true) }, { weight: 1, arbitrary: telUri }),
      plainUri: sipUri(true, false),
      tag: withTag === 'yes' ? token.map((x) => x as string | null) : withTag === 'no' ? fc.constant(null) : fc.option(token, { nil: null }),
      ext: extParams(2),
      extra,
      order: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
      ws: wsList,
    })
    .map((r) => {
      const params: ParamList = [...r.extra, ...r.ext];
      if (r.tag !== null) params.push(['tag', r.tag]);
      const ordered = params.map((p, i) => [p, r.order[i % 8] * 16 + i] as const).sort((a, b) => a[1] - b[1]).map((x) => x[0]);
      if (r.angle) {
        const d = r.display;
        // tokens need LWS or nothing before '<'; a quoted string takes SWS.
        const text = (d === null ? '' : d.raw + r.before) + '<' + r.uri.text + '>' + paramsText(ordered, r.ws);
        return {
          display: d === null ? null : d.raw.startsWith('"') ? unfoldedQuoted(d.raw) : unfolded(d.raw),
          displayText: d === null ? null : d.text,
          uri: r.uri,
          params: ordered,
          tag: r.tag,
          text,
        };
      }
      return { display: null, displayText: null, uri: r.plainUri, params: ordered, tag: r.tag, text: r.plainUri.text + paramsText(ordered, r.ws) };
    });
}

const contactExtra: fc.Arbitrary<ParamList> = fc
  .record({
    expires: fc.option(fc.integer({ min: 0, max: 0xffffffff }).map(String), { nil: undefined }),
    q: fc.option(fc.constantFrom('0', '0.5', '1', '1.0', '0.001'), { nil: undefined }),
    instance: fc.option(fc.uuid().map((u) => '"<urn:uuid:' + u + '>"'), { nil: undefined }),
    regId: fc.option(fc.integer({ min: 1, max: 9 }).map(String), { nil: undefined }),
  })
  .map((r) => {
    const out: ParamList = [];
    if (r.expires !== undefined) out.push(['expires', r.expires]);
    if (r.q !== undefined) out.push(['q', r.q]);
    if (r.instance !== undefined) out.push(['+sip.instance', r.instance]);
    if (r.regId !== undefined) out.push(['reg-id', r.regId]);
    return out;
  });

/** A list header value: elements joined by COMMA with random SWS. */
function listOf<T extends { text: string }>(el: fc.Arbitrary<T>, max: number): fc.Arbitrary<{ items: T[]; text: string }> {
  return fc.tuple(fc.array(el, { minLength: 1, maxLength: max }), fc.array(fc.tuple(sws, sws), { minLength: 2, maxLength: 2 })).map(([items, ws]) => ({
    items,
    text: items.map((x) => x.text).reduce((acc, v, i) => acc + ws[i % 2][0] + ',' + ws[i % 2][1] + v),
  }));
}

// ---------------------------------------------------------------------------
// Whole messages

interface Line {
  key: string;
  text: string;
}

interface MsgSpec {
  isRequest: boolean;
  method: string;
  ruri: UriSpec | null;
  status: number;
  reason: string;
  callId: string;
  cseq: { seq: number; method: string };
  maxForwards: number;
  vias: ViaSpec[];
  from: AddrSpec;
  to: AddrSpec;
  contacts: AddrSpec[];
  routes: AddrSpec[];
  unknown: Array<{ name: string; value: string }>;
  body: Buffer;
  hasLength: boolean;
  lines: Line[];
  startLine: string;
  bytes: Buffer;
  transport: string | undefined;
}

/** `Name: value` with HCOLON = *( SP / HTAB ) ":" SWS. */
const hcolon = fc.constantFrom(':', ': ', ': ', ':  ', ' : ', '\t:\t', ':' + CRLF + ' ');

function nameVariant(names: string[]): fc.Arbitrary<string> {
  return fc.constantFrom(...names);
}

const methods = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('INVITE', 'REGISTER', 'OPTIONS', 'BYE', 'ACK', 'CANCEL', 'MESSAGE', 'SUBSCRIBE', 'NOTIFY', 'INFO', 'PRACK', 'UPDATE', 'REFER', 'PUBLISH') },
  { weight: 1, arbitrary: token },
);

const reasonPhrase = fc
  .array(fc.oneof({ weight: 8, arbitrary: ch(UNRESERVED + RESERVED + ' \t') }, { weight: 1, arbitrary: hexEscape }, { weight: 1, arbitrary: fc.constantFrom(...UTF8) }), { maxLength: 20 })
  .map((a) => a.join(''));

const unknownValue = fc
  .tuple(
    fc.array(
      fc
        .array(fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0x21, max: 0x7e }).filter((c) => c !== 0x5c).map((c) => String.fromCharCode(c)) }, { weight: 1, arbitrary: fc.constantFrom(...UTF8) }), { minLength: 1, maxLength: 8 })
        .map((a) => a.join('')),
      { maxLength: 5 },
    ),
    fc.array(lws, { minLength: 4, maxLength: 4 }),
  )
  .map(([words, ws]) => (words.length === 0 ? '' : words.reduce((acc, w, i) => acc + ws[(i - 1) % 4] + w)));

const messageSpec: fc.Arbitrary<MsgSpec> = fc
  .record({
    isRequest: fc.boolean(),
    method: methods,
    ruri: fc.oneof({ weight: 6, arbitrary: sipUri(false, false) }, { weight: 1, arbitrary: telUri }),
    version: fc.constantFrom('SIP/2.0', 'SIP/2.0', 'SIP/2.0', 'sip/2.0'),
    status: fc.integer({ min: 100, max: 699 }),
    reason: reasonPhrase,
    cseqMethod: methods,
    callId: fc.tuple(str(WORD_CHARS, 1, 20), fc.option(str(WORD_CHARS, 1, 12), { nil: null })).map(([a, b]) => a + (b === null ? '' : '@' + b)),
    seq: fc.integer({ min: 0, max: 0xffffffff }),
    seqPad: fc.constantFrom('', '', '', '0', '000'),
    seqGap: lws,
    maxForwards: fc.integer({ min: 1, max: 255 }),
    mfPad: fc.constantFrom('', '', '0'),
    viaLines: fc.array(viaValue, { minLength: 1, maxLength: 3 }),
    from: nameAddr('yes'),
    to: nameAddr('maybe'),
    contacts: fc.array(listOf(nameAddr('no', contactExtra), 3), { maxLength: 2 }),
    routes: fc.array(listOf(sipUri(false, false).map((u) => ({ text: '<' + u.text + ';lr>', uri: u })), 3), { maxLength: 2 }),
    unknown: fc.array(fc.tuple(token, unknownValue), { maxLength: 5 }),
    body: fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ minLength: 1, maxLength: 300 })),
    hasLength: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    lengthPad: fc.constantFrom('', '', '0', '00'),
    names: fc.record({
      via: nameVariant(['Via', 'v', 'VIA', 'via', 'V']),
      from: nameVariant(['From', 'f', 'FROM', 'from']),
      to: nameVariant(['To', 't', 'TO', 'to']),
      callId: nameVariant(['Call-ID', 'i', 'call-id', 'Call-Id', 'CALL-ID']),
      cseq: nameVariant(['CSeq', 'CSEQ', 'cseq']),
      mf: nameVariant(['Max-Forwards', 'max-forwards']),
      contact: nameVariant(['Contact', 'm', 'contact']),
      route: nameVariant(['Route', 'route']),
      cl: nameVariant(['Content-Length', 'l', 'content-length', 'L']),
      ct: nameVariant(['Content-Type', 'c']),
    }),
    colons: fc.array(hcolon, { minLength: 24, maxLength: 24 }),
    trailing: fc.array(fc.constantFrom('', '', '', '', '', ' ', '\t'), { minLength: 24, maxLength: 24 }),
    order: fc.array(fc.nat(), { minLength: 24, maxLength: 24 }),
    transport: fc.constantFrom(undefined, 'udp', 'tcp', 'tls', 'ws', 'UDP'),
  })
  .map((r): MsgSpec => {
    const isRequest = r.isRequest;
    const cseqMethod = isRequest ? r.method : r.cseqMethod;
    let c = 0;
    const line = (key: string, name: string, value: string): Line => {
      const i = c++ % 24;
      return { key, text: name + r.colons[i] + value + r.trailing[i] };
    };
    const viaLines = r.viaLines.map((v) => line('via', r.names.via, v.text));
    const others: Line[] = [
      line('from', r.names.from, r.from.text),
      line('to', r.names.to, r.to.text),
      line('call-id', r.names.callId, r.callId),
      line('cseq', r.names.cseq, r.seqPad + r.seq + r.seqGap + cseqMethod),
      line('max-forwards', r.names.mf, r.mfPad + r.maxForwards),
    ];
    const contactLines = r.contacts.map((l) => line('contact', r.names.contact, l.text));
    const routeLines = r.routes.map((l) => line('route', r.names.route, l.text));
    const unknown = r.unknown.map(([n, v], i) => ({ name: 'X-' + n + '-' + i, value: v }));
    for (const u of unknown) others.push(line(u.name.toLowerCase(), u.name, u.value));
    const body = Buffer.from(r.body);
    if (body.length > 0) others.push(line('content-type', r.names.ct, 'application/octet-stream'));
    const hasLength = r.hasLength || !(r.transport === undefined || r.transport === 'udp' || r.transport === 'UDP');
    if (hasLength) others.push(line('content-length', r.names.cl, r.lengthPad + body.length));
    // Shuffle everything, then put the lines whose relative order matters
    // (Via, Contact, Route) back in their own order in the slots they got.
    const all = [...viaLines, ...contactLines, ...routeLines, ...others];
    const keyed = all.map((l, i) => ({ l, k: r.order[i % 24] * 64 + i })).sort((a, b) => a.k - b.k).map((x) => x.l);
    for (const [key, ordered] of [
      ['via', viaLines],
      ['contact', contactLines],
      ['route', routeLines],
    ] as const) {
      let j = 0;
      for (let i = 0; i < keyed.length; i++) if (keyed[i].key === key) keyed[i] = ordered[j++];
    }
    const startLine = isRequest ? r.method + ' ' + r.ruri.text + ' ' + r.version : 'SIP/2.0 ' + r.status + ' ' + r.reason;
    const head = startLine + CRLF + keyed.map((l) => l.text).join(CRLF) + CRLF + CRLF;
    return {
      isRequest,
      method: isRequest ? r.method : '',
      ruri: isRequest ? r.ruri : null,
      status: isRequest ? 0 : r.status,
      reason: isRequest ? '' : r.reason,
      callId: r.callId,
      cseq: { seq: r.seq, method: cseqMethod },
      maxForwards: r.maxForwards,
      vias: r.viaLines.flatMap((v) => v.vias),
      from: r.from,
      to: r.to,
      contacts: r.contacts.flatMap((l) => l.items),
      routes: r.routes.flatMap((l) => l.items.map((x) => ({ display: null, displayText: null, uri: x.uri, params: [['lr', null]] as ParamList, tag: null, text: x.text }))),
      unknown,
      body,
      hasLength,
      lines: keyed,
      startLine,
      bytes: Buffer.concat([Buffer.from(head, 'latin1'), body]),
      transport: r.transport,
    };
  });

// ---------------------------------------------------------------------------
// Checking facts

let checks = 0;
function eq(actual: unknown, expected: unknown, what: string): void {
  checks++;
  assert.deepStrictEqual(actual, expected, what);
}
function ok(cond: unknown, what: string): void {
  checks++;
  assert.ok(cond, what);
}

function paramMap(p: ParamList): Map<string, string | null> {
  return new Map(p.map(([n, v]) => [n.toLowerCase(), v]));
}

function parsed(spec: { bytes: Buffer; transport: string | undefined }, bytes = spec.bytes, opts?: ParseOptions): SipMessage {
  const r = parseAndValidate(bytes, opts ?? { transport: spec.transport });
  if (r instanceof SipParseError) assert.fail(`parse failed: ${r.code} ${r.reason}\n${JSON.stringify(bytes.toString('latin1'))}`);
  return r;
}

function checkAddr(label: string, got: { displayName: string | null; displayText: string | null; uri: { raw: string; scheme: string }; params: Map<string, string | null>; tag: string | null }, want: AddrSpec): void {
  eq(got.uri.raw, want.uri.text, `${label} URI`);
  eq(got.uri.scheme, want.uri.scheme, `${label} URI scheme`);
  eq(got.displayName, want.display, `${label} display name`);
  eq(got.displayText, want.displayText, `${label} display text`);
  eq(got.tag, want.tag, `${label} tag`);
  eq(got.params, paramMap(want.params), `${label} parameters`);
}

function checkUri(label: string, u: SipMessage['requestUri'], want: UriSpec): void {
  ok(u !== null, `${label} parses`);
  if (u === null) return;
  eq(u.raw, want.text, `${label} raw`);
  eq(u.scheme, want.scheme, `${label} scheme`);
  eq(u.user, want.user, `${label} user`);
  eq(u.password, want.password, `${label} password`);
  eq(u.host, want.host, `${label} host`);
  eq(u.port, want.port, `${label} port`);
  eq(u.headers, want.headers, `${label} headers`);
  eq(u.params, paramMap(want.params), `${label} params`);
  if (want.host.startsWith('[')) eq(u.hostname, want.host.slice(1, -1).toLowerCase(), `${label} hostname without brackets`);
}

/** Everything but the Via list, Max-Forwards and the octets. */
function checkCommonFacts(m: SipMessage, s: MsgSpec): void {
  eq(m.isRequest, s.isRequest, 'request or response');
  if (s.isRequest) {
    eq(m.method, s.method, 'method');
    eq(m.uri, s.ruri!.text, 'Request-URI');
    checkUri('Request-URI', m.requestUri, s.ruri!);
  } else {
    eq(m.status, s.status, 'status');
    eq(m.reason, s.reason, 'reason phrase');
  }
  eq(m.callId(), s.callId, 'Call-ID');
  eq(m.cseq(), s.cseq, 'CSeq');
  checkAddr('From', m.from(), s.from);
  checkAddr('To', m.to(), s.to);
  const contacts = m.contacts();
  ok(contacts !== null, 'Contact parses');
  eq(contacts!.length, s.contacts.length, 'number of contacts');
  s.contacts.forEach((c, i) => checkAddr(`Contact #${i + 1}`, contacts![i], c));
  const routes = m.routes();
  ok(routes !== null, 'Route parses');
  eq(
    routes!.map((r) => r.uri.raw),
    s.routes.map((r) => r.uri.text + ';lr'),
    'Route URIs',
  );
  for (const u of s.unknown) eq(m.get(u.name), unfolded(u.value), `header ${u.name}`);
  ok(m.body.equals(s.body), 'body octets');
}

function checkVias(m: SipMessage, want: ViaSpec[]): void {
  const vias = m.via();
  eq(vias.length, want.length, 'number of Vias');
  eq(
    vias.map((v) => [v.transport, v.host, v.port, v.branch]),
    want.map((v) => [v.transport, v.host, v.port, v.branch]),
    'Via transports, sent-by and branches',
  );
  eq(m.topVia()?.branch, want[0].branch, 'top Via branch');
  vias.forEach((v, i) => eq(v.params, paramMap(want[i].params), `Via #${i + 1} params`));
}

// ---------------------------------------------------------------------------

t.test('generated valid messages parse to what was generated and serialize to the same octets', async (t) => {
  const before = checks;
  fc.assert(
    fc.property(messageSpec, (s) => {
      const m = parsed(s);
      checkCommonFacts(m, s);
      checkVias(m, s.vias);
      eq(m.maxForwards(), s.maxForwards, 'Max-Forwards');
      eq(m.headerCount, s.lines.length, 'number of header fields');
      ok(!m.isModified, 'not modified');
      ok(m.toBuffer().equals(s.bytes), 'toBuffer() gives back the input octets');
      // every line reads back with its own name and unfolded value
      m.headerFields().forEach((f, i) => {
        const want = s.lines[i].text;
        const colon = want.indexOf(':');
        eq(f.name, want.slice(0, colon).replace(/[ \t]+$/, ''), `field #${i} name`);
        eq(f.value, unfoldedValue(want.slice(colon + 1)), `field #${i} value`);
      });
    }),
    { numRuns: runs(600) },
  );
  t.ok(checks - before > runs(600) * 20, `${checks - before} checks passed over ${runs(600)} generated messages`);
});

t.test('after a pushed Via and Max-Forwards - 1 the output is the input with those lines changed', async (t) => {
  const before = checks;
  fc.assert(
    fc.property(messageSpec, viaParm, (s, extra) => {
      const m = parsed(s);
      const newVia = 'SIP/2.0/' + extra.transport + ' ' + extra.host + (extra.port !== null ? ':' + extra.port : '') + ';branch=' + extra.branch;
      m.prependHeader('Via', newVia);
      m.setHeader('Max-Forwards', String(s.maxForwards - 1));
      ok(m.isModified, 'modified');
      const out = m.toBuffer();

      // The exact expected octets: new Via above the first Via line, the
      // Max-Forwards line rewritten in place, a Content-Length added if
      // there was none, everything else copied.
      const lines: string[] = [];
      let viaDone = false;
      for (const l of s.lines) {
        if (l.key === 'via' && !viaDone) {
          lines.push('Via: ' + newVia);
          viaDone = true;
        }
        lines.push(l.key === 'max-forwards' ? 'Max-Forwards: ' + (s.maxForwards - 1) : l.text);
      }
      if (!s.hasLength) lines.push('Content-Length: ' + s.body.length);
      const want = Buffer.concat([Buffer.from(s.startLine + CRLF + lines.join(CRLF) + CRLF + CRLF, 'latin1'), s.body]);
      eq(out.toString('latin1'), want.toString('latin1'), 'serialization');
      const outText = out.toString('latin1');
      for (const l of s.lines) if (l.key !== 'max-forwards') ok(outText.includes(CRLF + l.text + CRLF), 'untouched line copied byte-exact');

      // Re-parsed (on a stream: Content-Length is now always there).
      const again = parsed(s, out, { transport: 'tcp' });
      checkCommonFacts(again, s);
      checkVias(again, [{ ...extra, params: [['branch', extra.branch]] }, ...s.vias]);
      eq(again.maxForwards(), s.maxForwards - 1, 'Max-Forwards decremented');
      ok(again.body.equals(s.body), 'body unchanged');
      eq(again.toBuffer().toString('latin1'), outText, 're-parsed message serializes to the same octets');

      // And back: dropping the pushed Via gives the original Via list.
      again.removeFirstValue('Via');
      checkVias(again, s.vias);
      const third = parsed(s, again.toBuffer(), { transport: 'tcp' });
      checkVias(third, s.vias);
      checkCommonFacts(third, s);
    }),
    { numRuns: runs(400) },
  );
  t.ok(checks - before > runs(400) * 40, `${checks - before} checks passed over ${runs(400)} changed messages`);
});

t.test('clone(): changing a clone leaves the original serialization alone', async (t) => {
  const before = checks;
  fc.assert(
    fc.property(messageSpec, fc.boolean(), fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 6 }), (s, preModify, ops) => {
      const m = parsed(s);
      if (preModify) m.prependHeader('Record-Route', '<sip:proxy.example.com;lr>');
      const orig = Buffer.from(m.toBuffer());
      const origVias = m.via().map((v) => v.branch);
      const origMf = m.maxForwards();
      const c = m.clone();
      ok(c.toBuffer().equals(orig), 'a fresh clone serializes like the original');
      let changed = false;
      for (const op of ops) {
        changed ||= op !== 3 || c.has('contact');
        switch (op) {
          case 0:
            c.prependHeader('Via', 'SIP/2.0/TCP clone.example.com;branch=z9hG4bKclone');
            break;
          case 1:
            c.setHeader('Max-Forwards', '7');
            break;
          case 2:
            c.removeFirstValue('Via');
            break;
          case 3:
            c.removeHeader('Contact');
            break;
          case 4:
            c.appendHeader('X-Clone', 'yes');
            break;
          case 5:
            c.replaceFirstValue('Via', 'SIP/2.0/UDP replaced.example.com;branch=z9hG4bKrepl');
            break;
          case 6:
            if (c.isRequest) c.setRequestUri('sip:changed@example.net');
            else c.setHeader('To', '<sip:changed@example.net>;tag=x');
            break;
          case 7:
            c.removeHeader('Route');
            c.prependHeader('Route', '<sip:r.example.com;lr>');
            break;
        }
      }
      eq(c.isModified, changed || preModify, 'clone modified');
      c.toBuffer();
      eq(m.toBuffer().toString('latin1'), orig.toString('latin1'), 'original serialization unchanged');
      eq(m.via().map((v) => v.branch), origVias, 'original Vias unchanged');
      eq(m.maxForwards(), origMf, 'original Max-Forwards unchanged');
      eq(m.isModified, preModify, 'original modified flag unchanged');
      // and the other way round
      const c2 = m.clone();
      const c2Bytes = Buffer.from(c2.toBuffer());
      m.setHeader('Max-Forwards', '1');
      m.prependHeader('Via', 'SIP/2.0/UDP orig.example.com;branch=z9hG4bKorig');
      eq(c2.toBuffer().toString('latin1'), c2Bytes.toString('latin1'), 'clone unchanged by changes to the original');
    }),
    { numRuns: runs(300) },
  );
  t.ok(checks - before > runs(300) * 5, `${checks - before} checks passed over ${runs(300)} clones`);
});

// ---------------------------------------------------------------------------
// Mutation fuzzing

interface Expected {
  file: string;
  valid: boolean;
}
const expected: Expected[] = JSON.parse(readFileSync(join(fixtures, 'rfc4475', 'expected.json'), 'utf8'));
const seeds = expected.filter((e) => e.valid).map((e) => readFileSync(join(fixtures, 'rfc4475', e.file)));

const INTERESTING = [0x0d, 0x0a, 0x20, 0x09, 0x3a, 0x3b, 0x2c, 0x22, 0x3c, 0x3e, 0x5c, 0x25, 0x40, 0x5b, 0x5d, 0x3d, 0x2f, 0x3f, 0x00, 0xff, 0x80, 0x2a, 0x30, 0x39];
const SNIPPETS = [
  '\r\n',
  '\r\n ',
  '\r\n\r\n',
  '\n',
  '\r',
  ',',
  ';',
  '"',
  '<',
  '>',
  '%',
  '%0',
  '[',
  ']:',
  '\\',
  'Via: SIP/2.0/UDP x;rport\r\n',
  'v: ,\r\n',
  'Content-Length: 99999\r\n',
  'l: 0\r\n',
  'Content-Length: -1\r\n',
  'Contact: *\r\n',
  'm: <sip:a@[::1]:5060;ob>;expires=x\r\n',
  'Max-Forwards: 256\r\n',
  'CSeq: 1 FOO\r\n',
  'Route: <sip:x;lr\r\n',
  ' SIP/3.0',
  'sips:',
  'tel:',
  '\u00ff\u00fe',
];

type Op =
  | { k: 'flip'; pos: number; mask: number }
  | { k: 'set'; pos: number; byte: number }
  | { k: 'ins'; pos: number; bytes: Buffer }
  | { k: 'del'; pos: number; len: number }
  | { k: 'trunc'; pos: number }
  | { k: 'dup'; from: number; len: number; to: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), pos: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ k: fc.constant('set' as const), pos: fc.nat(), byte: fc.oneof(fc.constantFrom(...INTERESTING), fc.integer({ min: 0, max: 255 })) }),
  fc.record({
    k: fc.constant('ins' as const),
    pos: fc.nat(),
    bytes: fc.oneof(fc.constantFrom(...SNIPPETS).map((s) => Buffer.from(s, 'latin1')), fc.uint8Array({ minLength: 1, maxLength: 8 }).map((a) => Buffer.from(a))),
  }),
  fc.record({ k: fc.constant('del' as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ k: fc.constant('trunc' as const), pos: fc.nat() }),
  fc.record({ k: fc.constant('dup' as const), from: fc.nat(), len: fc.integer({ min: 1, max: 200 }), to: fc.nat() }),
);

function mutate(input: Buffer, ops: Op[]): Buffer {
  let b = Buffer.from(input);
  for (const op of ops) {
    const n = b.length;
    switch (op.k) {
      case 'flip':
        if (n > 0) b[op.pos % n] ^= op.mask;
        break;
      case 'set':
        if (n > 0) b[op.pos % n] = op.byte;
        break;
      case 'ins': {
        const p = op.pos % (n + 1);
        b = Buffer.concat([b.subarray(0, p), op.bytes, b.subarray(p)]);
        break;
      }
      case 'del': {
        const p = op.pos % (n + 1);
        b = Buffer.concat([b.subarray(0, p), b.subarray(p + op.len)]);
        break;
      }
      case 'trunc':
        b = b.subarray(0, op.pos % (n + 1));
        break;
      case 'dup': {
        const f = op.from % (n + 1);
        const chunk = b.subarray(f, f + op.len);
        const to = op.to % (n + 1);
        b = Buffer.concat([b.subarray(0, to), chunk, b.subarray(to)]);
        break;
      }
    }
  }
  return b;
}

const ALLOWED_CODES = new Set([0, 400, 413, 416, 420, 505]);

/** Calls every lazy accessor and change of a (possibly partial) message; none may throw. */
function exercise(m: SipMessage, validated: boolean): void {
  const vias = m.via();
  ok(Array.isArray(vias), 'via() is an array');
  for (const v of vias) {
    void [v.branch, v.received, v.rport, v.maddr, v.hasRfc3261Branch, v.host, v.port, v.transport, String(v)];
    stampedVia(v, '2001:db8::9', 5062);
    stampedVia(v, '192.0.2.9', 5060);
  }
  void m.topVia();
  for (const list of [m.contacts(), m.routes(), m.recordRoutes(), m.addresses('path')]) {
    ok(list === null || Array.isArray(list), 'address list is an array or null');
    for (const a of list ?? []) void [a.tag, a.displayText, a.uri.hostname, a.uri.isSip, a.uri.params.size, String(a)];
  }
  for (const a of [m.from(), m.to(), m.fromOrNull(), m.toOrNull()]) if (a !== null) void [a.tag, a.displayText, a.uri.hostname];
  const u = m.requestUri;
  if (u !== null) void [u.hostname, u.user, u.port, u.params.size, u.headers];
  ok(m.isRequest || u === null, 'responses have no Request-URI');
  void [m.cseq(), m.cseqOrNull(), m.callId(), m.maxForwards(), m.expires(), m.isContactStar(), m.tokens('supported'), m.values('allow'), m.getAll('via'), m.count('via'), m.has('to')];
  for (const f of m.headerFields()) {
    ok(typeof f.name === 'string' && typeof f.value === 'string', 'field name and value');
    ok(!/[\r\n]/.test(f.value), 'unfolded values hold no CR or LF');
  }
  const bytes = m.toBuffer();
  ok(Buffer.isBuffer(bytes), 'toBuffer() gives octets');
  const frozen = Buffer.from(bytes);
  void m.toString();

  if (m.isRequest && vias.length > 0) {
    const resp = buildResponseBytes(m, 400, { reason: 'Bad Request' });
    const r = parseAndValidate(resp, { transport: 'tcp' });
    if (validated) {
      // A response to a valid request is itself valid.
      ok(r instanceof SipMessage, `response to a valid request parses: ${r instanceof SipParseError ? r.reason : ''}`);
      if (r instanceof SipMessage) {
        eq(r.status, 400, 'response status');
        eq(r.callId(), m.callId(), 'response Call-ID');
        eq(r.cseq(), m.cseq(), 'response CSeq');
        eq(r.via().map(String), vias.map(String), 'response Vias');
        eq(r.from().tag, m.from().tag, 'response From tag');
        ok(r.to().tag !== null, 'response To tag');
      }
    }
  }

  const c = m.clone();
  c.prependHeader('Via', 'SIP/2.0/UDP fuzz.example.com;branch=z9hG4bKfuzz');
  c.setHeader('Max-Forwards', '69');
  c.removeFirstValue('Route');
  c.replaceFirstValue('Record-Route', '<sip:rr.example.com;lr>');
  c.removeHeader('Contact');
  c.appendHeader('X-Fuzz', '1');
  if (c.isRequest) c.setRequestUri('sip:fuzz@example.com');
  const cb = c.toBuffer();
  const again = parseAndValidate(cb, { transport: 'tcp' });
  ok(again instanceof SipMessage || again instanceof SipParseError, 're-parse of a changed clone');
  if (validated) {
    // A valid message stays valid after the proxy's changes.
    ok(again instanceof SipMessage, `changed valid message re-parses: ${again instanceof SipParseError ? again.reason : ''}`);
  }
  eq(m.toBuffer().toString('latin1'), frozen.toString('latin1'), 'original unchanged by changes to a clone');
}

/** How the fuzzed inputs came out, so that a test can tell it reached every path. */
const verdicts = { valid: 0, partial: 0, dropped: 0, codes: new Set<number>() };

function checkVerdict(input: Buffer, opts: ParseOptions, defaults: boolean): void {
  let r: SipMessage | SipParseError;
  try {
    r = parseAndValidate(input, opts);
  } catch (e) {
    assert.fail('parseAndValidate threw: ' + String(e));
  }
  ok(r instanceof SipMessage || r instanceof SipParseError, 'a message or an error');
  if (r instanceof SipParseError) {
    verdicts.codes.add(r.code);
    if (r.message === undefined) verdicts.dropped++;
    else verdicts.partial++;
    ok(ALLOWED_CODES.has(r.code), `code ${r.code} is one of 0, 400, 413, 416, 420, 505`);
    ok(typeof r.reason === 'string' && r.reason.length > 0, 'a reason');
    ok(r.reason !== 'internal parser error', 'no exception inside the parser');
    if (r.code !== 0) ok(r.message !== undefined && r.message.isRequest, 'a response code comes with the partial request');
    if (r.message !== undefined) {
      if (!r.message.isRequest) eq(r.code, 0, 'bad responses are dropped');
      exercise(r.message, false);
    }
    return;
  }
  verdicts.valid++;
  // Valid: serialization is the input (leading CRLFs and datagram tail
  // aside), and it re-parses to the same thing.
  let skip = 0;
  while (skip + 1 < input.length && input[skip] === 0x0d && input[skip + 1] === 0x0a) skip += 2;
  const out = r.toBuffer();
  ok(input.subarray(skip, skip + out.length).equals(out), 'toBuffer() is the input message');
  const again = parseAndValidate(out, opts);
  ok(again instanceof SipMessage, 'a valid message re-parses');
  if (again instanceof SipMessage) {
    eq(again.callId(), r.callId(), 're-parsed Call-ID');
    eq(again.cseq(), r.cseq(), 're-parsed CSeq');
    ok(again.body.equals(r.body), 're-parsed body');
  }
  exercise(r, defaults);
}

const parseOpts: fc.Arbitrary<{ opts: ParseOptions; defaults: boolean }> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(undefined, 'udp', 'tcp', 'tls', 'ws').map((transport) => ({ opts: { transport }, defaults: true })) },
  {
    weight: 1,
    arbitrary: fc
      .record({
        transport: fc.constantFrom(undefined, 'udp', 'tcp'),
        maxMessageSize: fc.integer({ min: 0, max: 2000 }),
        maxHeaders: fc.integer({ min: 0, max: 30 }),
        maxLineLength: fc.integer({ min: 0, max: 300 }),
      })
      .map(({ transport, ...limits }) => ({ opts: { transport, limits }, defaults: false })),
  },
);

/** The mutations must reach valid messages, partial ones and dropped octets alike, and several codes. */
function checkSpread(t: { ok(c: unknown, m: string): unknown }): void {
  const { valid, partial, dropped, codes } = verdicts;
  t.ok(valid > 0 && partial > 0 && dropped > 0, `verdicts so far: ${valid} valid, ${partial} partial, ${dropped} dropped`);
  t.ok(codes.has(0) && codes.has(400), `codes seen: ${[...codes].sort().join(', ')}`);
  verdicts.valid = verdicts.partial = verdicts.dropped = 0;
  verdicts.codes.clear();
}

t.test('mutated RFC 4475 messages never break the parser or the accessors', async (t) => {
  t.ok(seeds.length >= 20, `${seeds.length} valid RFC 4475 messages as seeds`);
  const before = checks;
  fc.assert(
    fc.property(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(opArb, { minLength: 1, maxLength: 6 }), parseOpts, (i, ops, { opts, defaults }) => {
      checkVerdict(mutate(seeds[i], ops), opts, defaults);
    }),
    { numRuns: runs(1000) },
  );
  t.ok(checks - before > runs(1000) * 5, `${checks - before} checks passed over ${runs(1000)} mutated fixtures`);
  checkSpread(t);
});

t.test('mutated generated messages never break the parser or the accessors', async (t) => {
  const before = checks;
  fc.assert(
    fc.property(messageSpec, fc.array(opArb, { minLength: 1, maxLength: 6 }), parseOpts, (s, ops, { opts, defaults }) => {
      checkVerdict(mutate(s.bytes, ops), opts, defaults);
    }),
    { numRuns: runs(800) },
  );
  t.ok(checks - before > runs(800) * 5, `${checks - before} checks passed over ${runs(800)} mutated generated messages`);
  checkSpread(t);
});

t.test('unmutated seeds pass the same checks', async (t) => {
  const before = checks;
  for (const s of seeds) checkVerdict(s, {}, true);
  fc.assert(
    fc.property(messageSpec, (s) => {
      const r = parseAndValidate(s.bytes, { transport: s.transport });
      ok(r instanceof SipMessage, 'generated message is valid');
      checkVerdict(s.bytes, { transport: s.transport }, true);
    }),
    { numRuns: runs(300) },
  );
  t.ok(checks - before > runs(300) * 10, `${checks - before} checks passed`);
});
