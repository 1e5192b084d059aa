// Packaging (issue 9): the systemd unit has what the README promises and
// passes `systemd-analyze verify` where systemd is installed; the Dockerfile
// (Docker cannot run here) has its stages, a non-root user, a health check
// and one Node LTS major throughout; every example configuration under conf/
// loads.
import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { loadConfig } from '../../src/config/index.js';
import { runTool, toolMissing } from '../helpers/tools.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const UNIT = join(root, 'systemd', 'portier.service');

/** An INI-style unit: section → key → values (a key may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s !== null) {
      out.set(s[1], (section = new Map()));
      continue;
    }
    const eq = line.indexOf('=');
    if (section === undefined || eq < 0) throw new Error(`not a unit line: ${line}`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return out;
}

t.test('the systemd unit: dedicated user, CAP_NET_BIND_SERVICE, read-only system, data directory, restart, reload by SIGHUP', async (t) => {
  const unit = parseUnit(readFileSync(UNIT, 'utf8'));
  const service = unit.get('Service')!;
  const one = (key: string) => service.get(key)?.at(-1);
  t.ok(['simple', 'notify', 'exec'].includes(one('Type') ?? 'simple'), 'Type');
  t.equal(one('User'), 'portier', 'a dedicated user');
  t.not(one('User'), 'root');
  t.equal(one('AmbientCapabilities'), 'CAP_NET_BIND_SERVICE', 'binds 5060 and below-1024 ports without root');
  t.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE', 'and no other capability');
  t.equal(one('ProtectSystem'), 'strict');
  t.ok((service.get('ReadWritePaths') ?? []).join(' ').split(/\s+/).includes('/var/lib/portier'), 'the data directory is writable');
  t.equal(one('WorkingDirectory'), '/var/lib/portier', 'storage.path data/portier.db lands in it');
  t.equal(one('Restart'), 'on-failure');
  t.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID', 'systemctl reload sends SIGHUP');
  t.match(one('ExecStart'), /portier --config \/etc\/portier\/portier\.yaml$/);
  t.equal(one('NoNewPrivileges'), 'yes');
  t.equal(unit.get('Install')?.get('WantedBy')?.[0], 'multi-user.target');
});

// Debian's `systemd` package provides systemd-analyze; .ci/run installs it
// (it runs offline, as root in a container, without systemd as PID 1).
t.test('systemd-analyze verify accepts the unit without a warning', { skip: toolMissing('systemd-analyze', ['--version']) }, async (t) => {
  // verify wants a unit file named like its unit, and reads the directory it is in.
  const dir = t.testdir({});
  const copy = join(dir, 'portier.service');
  copyFileSync(UNIT, copy);
  const r = await runTool('systemd-analyze', ['verify', copy], { timeoutMs: 30_000, env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } });
  t.equal(r.code, 0, r.output);
  // Unknown keys and bad values are only warnings (exit 0), each naming the file.
  t.same(r.output.split('\n').filter((l) => l.includes('portier.service')), [], 'no warning about the unit');
});

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function instructions(text: string): Array<{ op: string; args: string }> {
  const out: Array<{ op: string; args: string }> = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    const m = /^(\S+)\s*(.*)$/.exec(full)!;
    out.push({ op: m[1].toUpperCase(), args: m[2] });
  }
  return out;
}

t.test('the Dockerfile: multi-stage on one Node LTS, non-root, a health check, SIGHUP-friendly entrypoint', async (t) => {
  const ins = instructions(readFileSync(join(root, 'Dockerfile'), 'utf8'));
  const froms = ins.filter((i) => i.op === 'FROM').map((i) => /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args)!);
  t.ok(froms.length >= 2, 'at least a build stage and a runtime stage');
  const build = froms[0][2];
  t.ok(build !== undefined, 'the first stage is named');
  const images = froms.map((f) => f[1]);
  for (const image of images) t.match(image, /^node:\d+(-[a-z]+)*-slim$/, `${image}: an official slim Node image`);
  const majors = new Set(images.map((i) => Number(/^node:(\d+)/.exec(i)![1])));
  t.equal(majors.size, 1, 'the same Node major in every stage (the native addon is built in one, run in the other)');
  const major = [...majors][0];
  t.equal(major % 2, 0, `Node ${major}: an even major, an LTS line`);
  // Node 26 became the Active LTS in October 2026 (24 is in maintenance).
  t.ok(major >= 26, `Node ${major}: the current LTS or newer`);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string } };
  t.ok(major >= Number(/\d+/.exec(pkg.engines.node)![0]), 'within package.json engines');

  // The runtime stage: everything after the last FROM.
  const last = ins.map((i) => i.op).lastIndexOf('FROM');
  const runtime = ins.slice(last + 1);
  t.ok(runtime.some((i) => i.op === 'COPY' && i.args.includes(`--from=${build}`)), 'the runtime stage copies from the build stage');
  t.notOk(runtime.some((i) => i.op === 'RUN' && /npm (ci|install)|apt-get install/.test(i.args)), 'no compiler or dev dependency installed in the runtime stage');
  const users = runtime.filter((i) => i.op === 'USER').map((i) => i.args);
  t.ok(users.length > 0, 'USER is set');
  t.notMatch(users.at(-1), /^(root|0)(:|$)/, 'and is not root');
  const hc = runtime.filter((i) => i.op === 'HEALTHCHECK');
  t.equal(hc.length, 1, 'one HEALTHCHECK');
  t.match(hc[0].args, /CMD \["node", "\/app\/dist\/src\/cli\/healthcheck\.js"/, 'it runs src/cli/healthcheck.ts (compiled)');
  t.match(hc[0].args, /--interval=\d+s/);
  const ep = runtime.find((i) => i.op === 'ENTRYPOINT');
  t.match(ep?.args, /^\["node", "--initial-old-space-size=128", "\/app\/dist\/src\/cli\/main\.js"\]$/, 'exec form: node is PID 1 and gets SIGTERM and SIGHUP itself');
  t.match(runtime.find((i) => i.op === 'EXPOSE')?.args, /5060\/udp/);
  t.ok(runtime.some((i) => i.op === 'VOLUME' && i.args.includes('/var/lib/portier')), 'the data directory is a volume');
});

t.test('every example configuration under conf/ loads', async (t) => {
  const conf = join(root, 'conf');
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      // The Prometheus rules are YAML too, but not Portier's.
      else if (e.name.endsWith('.yaml') && !e.name.startsWith('prometheus-')) found.push(p.slice(conf.length + 1));
    }
  };
  walk(conf);
  t.same(found.sort(), ['portier.yaml', 'school.yaml', 'two-nodes/node-a.yaml', 'two-nodes/node-b.yaml']);
  for (const f of found) t.doesNotThrow(() => loadConfig(join(conf, f)), f);

  const a = loadConfig(join(conf, 'two-nodes', 'node-a.yaml'));
  const b = loadConfig(join(conf, 'two-nodes', 'node-b.yaml'));
  for (const c of [a, b]) t.equal(c.storage.type, 'redis', 'two nodes share Redis');
  t.same([a.storage.url, a.storage.prefix], [b.storage.url, b.storage.prefix], 'the same Redis and prefix');
  t.same(a.domains, b.domains, 'the same domains');
  t.same(a.auth?.realm, b.auth?.realm, 'the same realm (the same HA1 hashes)');
  t.not(a.listen[0].host, b.listen[0].host, 'each node listens on its own address');
  t.not(a.metrics.listen?.host, b.metrics.listen?.host);
});
