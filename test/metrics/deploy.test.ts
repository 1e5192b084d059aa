// conf/grafana-dashboard.json and conf/prometheus-alerts.yml: the Grafana
// dashboard and the Prometheus alert rules parse, are well formed, and name
// only metrics, labels and label values that a running Portier exposes
// (scraped here from an in-process one with auth and a push provider on).
// promtool checks and unit-tests the rules when it is installed.
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { CODE_CLASSES, METHODS } from '../../src/metrics/index.js';
import { interopPortier, runTool, scrape, toolMissing, usersLine } from '../helpers/tools.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ALERTS = join(root, 'conf', 'prometheus-alerts.yml');
const ALERT_TESTS = join(root, 'conf', 'prometheus-alerts.test.yml');
const DASHBOARD = join(root, 'conf', 'grafana-dashboard.json');

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Array<{ expr: string; refId: string }>;
}

/** What a scrape exposes: metric → label name → values seen. */
async function exposed(t: Test): Promise<Map<string, Map<string, Set<string>>>> {
  const dir = t.testdir({ users: usersLine('gate', 'pw-1', { kind: 'door' }) + '\n' });
  const { server } = await interopPortier(t, dir, {
    listen: ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0'],
    // A provider, so that the push metrics are registered; nothing is ever pushed here.
    extra: ['push: {generic: {url: "http://127.0.0.1:9/$token"}}'],
  });
  const text = await scrape(server.metricsAddress()!.port);
  const out = new Map<string, Map<string, Set<string>>>();
  const add = (name: string) => {
    let m = out.get(name);
    if (m === undefined) out.set(name, (m = new Map()));
    return m;
  };
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type !== null) {
      add(type[1]);
      if (type[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) add(type[1] + s);
      continue;
    }
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? /.exec(line);
    if (m === null) continue;
    const labels = add(m[1]);
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      let v = labels.get(l[1]);
      if (v === undefined) labels.set(l[1], (v = new Set()));
      v.add(l[2]);
    }
  }
  // Series that appear only once counted (no traffic here): their labels and values as the registry makes them.
  const known = (name: string, label: string, values: readonly string[]) => {
    const labels = add(name);
    const set = labels.get(label) ?? new Set<string>();
    labels.set(label, set);
    for (const v of values) set.add(v);
  };
  known('portier_auth_failures_total', 'reason', ['wrong_password', 'unknown_user', 'identity_mismatch']);
  known('portier_sip_responses_total', 'code_class', CODE_CLASSES);
  known('portier_sip_responses_total', 'method', METHODS);
  known('portier_push_total', 'provider', ['fcm', 'apns', 'generic']);
  known('portier_push_total', 'result', ['sent', 'unregistered', 'failed']);
  known('portier_push_total', 'reason', ['unreachable', 'timeout', 'auth', 'UNREGISTERED']);
  return out;
}

/** Every selector `metric{matchers}` or bare metric name of an expression; `by (...)` labels too. */
function selectors(expr: string): Array<{ metric: string; matchers: Array<{ label: string; op: string; value: string }> }> {
  const out: Array<{ metric: string; matchers: Array<{ label: string; op: string; value: string }> }> = [];
  for (const m of expr.matchAll(/\b((?:portier|process|nodejs)_\w+)(\{[^}]*\})?/g)) {
    const matchers = [...(m[2] ?? '').matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)].map((x) => ({ label: x[1], op: x[2], value: x[3] }));
    out.push({ metric: m[1], matchers });
  }
  return out;
}

const TARGET_LABELS = new Set(['instance', 'job']);

function checkExpr(t: Test, where: string, expr: string, seen: Map<string, Map<string, Set<string>>>): void {
  const sels = selectors(expr);
  t.ok(sels.length > 0 || /\bup\{/.test(expr), `${where}: names a metric`);
  for (const s of sels) {
    const labels = seen.get(s.metric);
    t.ok(labels !== undefined, `${where}: ${s.metric} is exposed`);
    if (labels === undefined) continue;
    for (const m of s.matchers) {
      if (TARGET_LABELS.has(m.label) || m.label === 'le') continue;
      const values = labels.get(m.label);
      t.ok(values !== undefined || m.value.startsWith('$'), `${where}: ${s.metric} has a ${m.label} label`);
      if (values === undefined || m.value.startsWith('$') || m.value === '.*') continue;
      const wanted = m.op === '=' ? [m.value] : m.op === '=~' ? m.value.split('|') : [];
      for (const v of wanted) t.ok(values.has(v), `${where}: ${s.metric}{${m.label}="${v}"} exists`);
    }
  }
  for (const by of expr.matchAll(/\bby\s*\(([^)]*)\)/g)) {
    for (const label of by[1].split(',').map((l) => l.trim())) {
      if (TARGET_LABELS.has(label) || label === 'le') continue;
      t.ok(
        sels.some((s) => seen.get(s.metric)?.has(label)),
        `${where}: some metric of the expression has the label ${label} it aggregates by`,
      );
    }
  }
}

t.test('the alert rules parse and name what Portier exposes', async (t) => {
  const doc = parseYaml(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> };
  t.ok(Array.isArray(doc.groups) && doc.groups.length > 0, 'groups');
  const seen = await exposed(t);
  const names = new Set<string>();
  for (const g of doc.groups) {
    t.type(g.name, 'string');
    for (const r of g.rules) {
      t.match(r.alert, /^Portier[A-Z]\w+$/, `${r.alert}: a name in CamelCase`);
      t.notOk(names.has(r.alert), `${r.alert}: unique`);
      names.add(r.alert);
      t.type(r.expr, 'string');
      if (r.for !== undefined) t.match(r.for, /^\d+[smh]$/, `${r.alert}: for`);
      t.ok(['critical', 'warning'].includes(r.labels?.severity), `${r.alert}: severity`);
      t.type(r.annotations?.summary, 'string', `${r.alert}: summary`);
      t.type(r.annotations?.description, 'string', `${r.alert}: description`);
      checkExpr(t, r.alert, r.expr, seen);
    }
  }
  for (const a of ['PortierDown', 'PortierDoorStationOffline', 'PortierStorageDown', 'PortierAuthFailureSpike', 'PortierNoRegistrations', 'PortierCallFailureRatio', 'PortierPushFailures']) t.ok(names.has(a), a);
  const push = doc.groups.flatMap((g) => g.rules).find((r) => r.alert === 'PortierPushFailures');
  t.match(push?.expr, /portier_push_total\{result!="sent"\}/, 'push failures: pushes that were not sent');
  const offline = doc.groups.flatMap((g) => g.rules).find((r) => r.alert === 'PortierDoorStationOffline');
  t.equal(offline?.for, '10m', 'a door station offline for 10 minutes');
});

t.test('promtool checks and unit-tests the rules', { skip: toolMissing('promtool', ['--version']) }, async (t) => {
  const check = await runTool('promtool', ['check', 'rules', ALERTS], { timeoutMs: 30_000 });
  t.equal(check.code, 0, check.output);
  const unit = await runTool('promtool', ['test', 'rules', ALERT_TESTS], { timeoutMs: 30_000, cwd: dirname(ALERT_TESTS) });
  t.equal(unit.code, 0, unit.output);
});

t.test('the Grafana dashboard parses and names what Portier exposes', async (t) => {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    title: string;
    uid: string;
    schemaVersion: number;
    panels: Panel[];
    templating: { list: Array<{ name: string; type: string }> };
  };
  t.equal(d.title, 'Portier');
  t.equal(d.uid, 'portier');
  t.type(d.schemaVersion, 'number');
  t.same(
    d.templating.list.map((v) => v.name),
    ['datasource', 'instance', 'domain'],
  );
  const ids = new Set<number>();
  const seen = await exposed(t);
  const exprs: string[] = [];
  for (const p of d.panels) {
    t.notOk(ids.has(p.id), `panel id ${p.id} unique`);
    ids.add(p.id);
    t.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title}: fits the 24-column grid`);
    if (p.type === 'row') continue;
    t.same(p.datasource, { type: 'prometheus', uid: '${datasource}' }, `${p.title}: the datasource variable`);
    t.ok((p.targets ?? []).length > 0, `${p.title}: has queries`);
    for (const q of p.targets ?? []) {
      checkExpr(t, p.title, q.expr, seen);
      exprs.push(q.expr);
    }
  }
  const all = exprs.join('\n');
  for (const m of [
    'portier_calls_total',
    'portier_call_setup_seconds_bucket',
    'portier_registrations_active',
    'portier_registered_devices',
    'portier_door_stations',
    'portier_auth_failures_total',
    'portier_bans_active',
    'portier_storage_up',
    'portier_push_total',
    'portier_push_register_seconds_bucket',
  ]) {
    t.ok(all.includes(m), `a panel shows ${m}`);
  }
});
