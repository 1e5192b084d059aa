// The metrics HTTP listener on its own: 503 when not healthy, 500 when a collector fails.
import t from 'tap';
import http from 'node:http';
import { Gauge, Registry } from 'prom-client';
import { MetricsHttpServer, SipCounters, methodSlot, METHODS, CODE_CLASSES } from '../../src/metrics/index.js';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

t.test('/healthz 503 while stopping, /metrics 500 when a collector throws', async (t) => {
  const registry = new Registry();
  new Gauge({
    name: 'broken',
    help: 'throws',
    registers: [registry],
    collect() {
      throw new Error('collector broke');
    },
  });
  const server = new MetricsHttpServer({ host: '127.0.0.1', port: 0 }, registry, async () => ({ ok: false, body: { uptime: 1 } }));
  t.equal(server.address(), null, 'not listening yet');
  await server.start();
  const port = server.address()?.port ?? 0;
  const h = await get(port, '/healthz');
  t.equal(h.status, 503);
  t.same(JSON.parse(h.body), { status: 'stopping', uptime: 1 });
  const m = await get(port, '/metrics');
  t.equal(m.status, 500);
  t.match(m.body, /collector broke/);
  await server.close();
  await server.close();
  t.equal(server.address(), null);
});

t.test('close before start resolves', async (t) => {
  const server = new MetricsHttpServer({ host: '127.0.0.1', port: 0 }, new Registry(), async () => ({ ok: true, body: {} }));
  await server.close();
  t.pass();
});

t.test('a bad address is named in the error', async (t) => {
  const server = new MetricsHttpServer({ host: '192.0.2.1', port: 0 }, new Registry(), async () => ({ ok: true, body: {} }));
  await t.rejects(server.start(), { message: /^metrics\.listen 192\.0\.2\.1:0: cannot listen: no such local address$/, code: 'EADDRNOTAVAIL' });
});

t.test('counters: bounded methods and code classes', async (t) => {
  t.equal(METHODS[methodSlot('INVITE')], 'INVITE');
  t.equal(METHODS[methodSlot('invite')], 'other', 'methods are case-sensitive');
  t.equal(METHODS[methodSlot('X-CUSTOM')], 'other');
  const c = new SipCounters();
  c.response('BYE', 99);
  c.response('BYE', 700);
  t.equal(c.responses.reduce((a, b) => a + b, 0), 0, 'out-of-range statuses are ignored');
  c.response('BYE', 699);
  t.equal(c.responses[methodSlot('BYE') * CODE_CLASSES.length + 5], 1, '6xx');
  c.parseError('tcp', '999');
  t.equal(c.parseErrors.reduce((a, b) => a + b, 0), 1, 'an unknown reason still counts (as other)');
});

t.test('/readyz: the checks as JSON, 503 naming what is not ready; follows liveness without checks', async (t) => {
  let ready = { ok: false, checks: { listeners: { ok: true, detail: 'udp:127.0.0.1:5060' }, storage: { ok: false, detail: 'the redis store cannot be written' } } };
  const server = new MetricsHttpServer({ host: '127.0.0.1', port: 0 }, new Registry(), async () => ({ ok: true, body: {}, ready }));
  await server.start();
  t.teardown(() => server.close());
  const port = server.address()?.port ?? 0;
  let r = await get(port, '/readyz');
  t.equal(r.status, 503);
  t.same(JSON.parse(r.body), { status: 'not ready', not_ready: ['storage'], checks: ready.checks });
  ready = { ok: true, checks: { listeners: ready.checks.listeners, storage: { ok: true, detail: 'redis store up' } } };
  r = await get(port, '/readyz');
  t.equal(r.status, 200);
  t.same(JSON.parse(r.body), { status: 'ready', checks: ready.checks });
  t.equal((await get(port, '/status')).status, 404, 'no status page given: 404');

  const bare = new MetricsHttpServer({ host: '127.0.0.1', port: 0 }, new Registry(), async () => ({ ok: false, body: {} }));
  await bare.start();
  t.teardown(() => bare.close());
  r = await get(bare.address()?.port ?? 0, '/readyz');
  t.equal(r.status, 503, 'no readiness checks: follows liveness');
  t.same(JSON.parse(r.body), { status: 'not ready', not_ready: ['serving'], checks: { serving: { ok: false, detail: 'stopping' } } });
});

t.test('/status: the page given, 500 when it fails', async (t) => {
  let fail = false;
  const server = new MetricsHttpServer({ host: '127.0.0.1', port: 0 }, new Registry(), async () => ({ ok: true, body: {} }), {
    status: async () => {
      if (fail) throw new Error('page broke');
      return '<!DOCTYPE html><p>hello</p>';
    },
  });
  await server.start();
  t.teardown(() => server.close());
  const port = server.address()?.port ?? 0;
  const r = await get(port, '/status?x=1');
  t.equal(r.status, 200);
  t.equal(r.body, '<!DOCTYPE html><p>hello</p>');
  fail = true;
  const e = await get(port, '/status');
  t.equal(e.status, 500);
  t.match(e.body, /page broke/);
});
