// Debian's sipsak against Portier's registrar: its usrloc mode registers a
// contact and checks the 200 (a client written by others), without and with
// digest authentication. (sipsak's OPTIONS ping is in server.test.ts.)
import t, { type Test } from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import dgram from 'node:dgram';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/log.js';
import { startServer } from '../src/server.js';
import { metric, runTool, type ToolRun } from './helpers/tools.js';
import { clientPortier, portierDiagnostics, withDiagnostics, type ClientPortier } from './interop/clients.js';

const sipsak = spawnSync('sipsak', ['--version'], { encoding: 'utf8' });

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

t.test('sipsak usrloc: REGISTER accepted with 200', { skip: sipsak.error ? 'sipsak not installed' : false, timeout: 30_000 }, async (t) => {
  const config = parseConfig('domains: [127.0.0.1]\nstorage: {type: memory}\nlisten: [udp:127.0.0.1:0]\nlog: {level: fatal}\n', 'sipsak.yaml');
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const port = server.listening()[0].port;
  const contactPort = await freeUdpPort();
  let out = '';
  let code = 0;
  try {
    const r = await promisify(execFile)(
      'sipsak',
      ['-U', '-i', '-C', `sip:carol@127.0.0.1:${contactPort}`, '-s', `sip:carol@127.0.0.1:${port}`, '-x', '120', '-v'],
      { encoding: 'utf8', timeout: 20_000 },
    );
    out = r.stdout;
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string; message?: string };
    code = typeof e.code === 'number' ? e.code : -1;
    out = (e.stdout ?? '') + (e.stderr ?? '') + (e.message ?? '');
  }
  t.equal(code, 0, 'sipsak exits 0', { output: out.slice(-800) });
  t.match(out, /All usrloc tests completed successful/, 'sipsak reports its usrloc test successful');
  t.ok(server.stats.requests >= 1, 'Portier handled the REGISTER');
});

// sipsak's REGISTER with digest (-a PASSWORD, -u USER) against Portier with
// accounts. sipsak 0.9.8 answers MD5 only, and only the first WWW-Authenticate
// of the 401: Portier's default [SHA-256, MD5] makes it stop with "error:
// unsupported authentication algorithm"; a site with such clients sets
// `auth: {algorithms: [MD5, SHA-256]}` (or [MD5]). sipsak resolves the host of
// -s itself, so the SIP domain here is 127.0.0.1 (realm example.test). It
// also cuts a 5-digit port in its Request-URI and To (sip:127.0.0.1:4730 for
// port 47309): Portier ignores the port of its own domain.
const missingSipsak = sipsak.error ? 'sipsak not installed' : false;
const CAROL = { user: 'carol', password: 'carol-sipsak-Pw3' };

async function sipsakRegister(p: ClientPortier, password: string): Promise<ToolRun & { contact: string }> {
  const contact = `sip:carol@127.0.0.1:${await freeUdpPort()}`;
  const r = await runTool('sipsak', ['-U', '-i', '-C', contact, '-s', `sip:carol@127.0.0.1:${p.ports.udp}`, '-u', CAROL.user, '-a', password, '-x', '120', '-vvv'], { timeoutMs: 20_000 });
  return { ...r, contact };
}

async function withPortier(t: Test, algorithms: string | null, body: (p: ClientPortier, log: string[]) => Promise<void>): Promise<void> {
  const p = await clientPortier(t, t.testdir({}), [CAROL], { domain: '127.0.0.1', ...(algorithms !== null ? { algorithms } : {}) });
  const log: string[] = [];
  await withDiagnostics(t, () => [{ name: 'sipsak output (-vvv)', text: log.join('\n').slice(-6000) || '(none)' }, ...portierDiagnostics(p)], () => body(p, log));
}

const bindings = async (p: ClientPortier) => metric(await p.metrics(), 'portier_registrations_active', { domain: '127.0.0.1' });

t.test('sipsak usrloc with digest, algorithms [MD5, SHA-256]: 401, REGISTER with MD5 credentials, 200', { skip: missingSipsak, timeout: 60_000 }, (t) =>
  withPortier(t, '[MD5, SHA-256]', async (p, log) => {
    const r = await sipsakRegister(p, CAROL.password);
    log.push(r.output);
    t.notOk(r.timedOut, `sipsak finished on its own (${r.ms} ms)`);
    t.equal(r.code, 0, 'sipsak exits 0');
    t.match(r.output, /All usrloc tests completed successful/, 'sipsak reports its usrloc test successful');
    const regs = p.find({ dir: 'in', first: 'REGISTER' });
    t.equal(regs.length, 2, 'two REGISTERs: without, then with credentials');
    t.match(regs[1]?.text ?? '', /^Authorization: Digest username="carol", [^\r\n]*algorithm=MD5, realm="example\.test"[^\r\n]*qop=auth/m, 'the second answers the MD5 challenge, qop=auth');
    t.equal(p.find({ dir: 'out', first: '200', cseq: /REGISTER/ }).length, 1, 'Portier answered it 200');
    t.equal(await bindings(p), 1, 'Portier holds the binding');
    t.match(p.find({ dir: 'out', first: '200' })[0]?.text ?? '', new RegExp(`^Contact: <${r.contact}>;expires=120`, 'm'), "with sipsak's Contact");

    const bad = await sipsakRegister(p, 'not-' + CAROL.password);
    log.push(bad.output);
    t.not(bad.code, 0, 'with a wrong password sipsak fails');
    t.match(bad.output, /401 Unauthorized/, 'on a second 401');
    t.equal(metric(await p.metrics(), 'portier_auth_failures_total', { reason: 'wrong_password' }), 1, 'Portier counted one wrong password');
    t.equal(await bindings(p), 1, 'and added no binding');
  }),
);

t.test('sipsak usrloc with digest, default algorithms [SHA-256, MD5]: sipsak reads the first challenge and stops', { skip: missingSipsak, timeout: 60_000 }, (t) =>
  withPortier(t, null, async (p, log) => {
    const r = await sipsakRegister(p, CAROL.password);
    log.push(r.output);
    t.notOk(r.timedOut, 'sipsak stops at once');
    t.not(r.code, 0, 'sipsak fails');
    t.match(r.output, /error: unsupported authentication algorithm/, 'on the SHA-256 challenge');
    t.match(p.find({ dir: 'out', first: '401' })[0]?.text ?? '', /WWW-Authenticate: Digest [^\r\n]*algorithm=SHA-256[^\r\n]*\r\nWWW-Authenticate: Digest [^\r\n]*algorithm=MD5/, 'though MD5 was offered second');
    t.equal(p.find({ dir: 'in', first: 'REGISTER' }).length, 1, 'no second REGISTER');
    t.equal(await bindings(p), 0, 'not registered');
  }),
);
