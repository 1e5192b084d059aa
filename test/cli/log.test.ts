import t from 'tap';
import { REDACTED, REDACTED_KEYS, createLogger, redact, redactSipText } from '../../src/log.js';

function capture(level: Parameters<typeof createLogger>[0] = 'trace') {
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const log = createLogger(level, {
    write: (s: string) => {
      raw.push(s);
      lines.push(JSON.parse(s) as Record<string, unknown>);
    },
  });
  return { log, lines, raw };
}

t.test('JSON lines with name portier, level labels and ISO time', async (t) => {
  const { log, lines, raw } = capture('info');
  log.info({ peer: '127.0.0.1:5060' }, 'hello');
  log.debug('hidden at info');
  t.equal(lines.length, 1);
  t.match(lines[0], { level: 'info', name: 'portier', peer: '127.0.0.1:5060', msg: 'hello' });
  t.match(String(lines[0].time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  t.ok(raw[0].endsWith('\n'));
  t.equal(log.level, 'info');
});

t.test('credentials are never logged, at any depth and in any case', async (t) => {
  t.same(REDACTED_KEYS, ['authorization', 'proxy-authorization', 'password', 'nonce', 'ha1']);
  const { log, raw, lines } = capture();
  const secret = 'S3CRET-VALUE';
  const input = {
    authorization: secret,
    user: 'door-1',
    headers: { Authorization: secret, 'Proxy-Authorization': secret, 'Call-ID': 'abc' },
    list: [{ password: secret }, { HA1: secret }, 'plain'],
    deep: { a: { b: { c: { nonce: secret } } } },
    map: new Map([['password', secret]]),
  };
  log.info(input, 'request');
  log.child({ password: secret, component: 'registrar' }).warn({ nonce: secret }, 'child');
  t.notMatch(raw.join(''), secret);
  t.match(lines[0], {
    authorization: REDACTED,
    user: 'door-1',
    headers: { Authorization: REDACTED, 'Proxy-Authorization': REDACTED, 'Call-ID': 'abc' },
    list: [{ password: REDACTED }, { HA1: REDACTED }, 'plain'],
    deep: { a: { b: { c: { nonce: REDACTED } } } },
  });
  t.match(lines[1], { component: 'registrar', password: REDACTED, nonce: REDACTED });
  // The caller's object is untouched.
  t.equal(input.authorization, secret);
  t.equal(input.headers.Authorization, secret);
  t.equal(input.map.get('password'), secret);
});

t.test('redact() shares unchanged parts and survives cycles', async (t) => {
  const clean = { a: 1, b: [1, 2, { c: 3 }] };
  t.equal(redact(clean), clean);
  const cyclic: Record<string, unknown> = { password: 'x' };
  cyclic.self = cyclic;
  const r = redact(cyclic) as Record<string, unknown>;
  t.equal(r.password, REDACTED);
  t.equal(redact('text'), 'text');
  t.equal(redact(null), null);
  const date = new Date(0);
  t.equal(redact(date), date, 'class instances are left alone');
  const err = Object.assign(new Error('bad digest'), { nonce: 'n1' });
  const e = redact({ err }) as { err: Record<string, unknown> };
  t.match(e.err, { message: 'bad digest', nonce: REDACTED, type: 'Error' });
  const { log, raw } = capture();
  log.error({ err }, 'auth failed');
  t.notMatch(raw.join(''), 'n1');
  t.match(raw.join(''), 'bad digest');
});

t.test('redactSipText masks credential headers in raw SIP', async (t) => {
  const msg =
    'REGISTER sip:example.test SIP/2.0\r\n' +
    'Authorization: Digest username="door", nonce="abc", response="xyz"\r\n' +
    'proxy-authorization : Digest username="door"\r\n' +
    'Call-ID: 1\r\n\r\n';
  const out = redactSipText(msg);
  t.notMatch(out, /abc|xyz|username/);
  t.match(out, `Authorization: ${REDACTED}\r\n`);
  t.match(out, `proxy-authorization : ${REDACTED}\r\n`);
  t.match(out, 'Call-ID: 1\r\n');
});

t.test('bindings of grandchildren and setBindings are redacted too', async (t) => {
  const { log, raw, lines } = capture();
  const grandchild = log.child({ a: 1 }).child({ Authorization: 'zzz-secret' });
  grandchild.info('x');
  grandchild.setBindings({ ha1: 'zzz-secret' });
  grandchild.info('y');
  t.notMatch(raw.join(''), 'zzz-secret');
  t.match(lines[0], { a: 1, Authorization: REDACTED });
  t.match(lines[1], { ha1: REDACTED });
});
