import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import ts from 'typescript';
import { scavengeChosen } from '../../src/cli/scavenge.js';

t.test('the operator chooses on node\'s command line, with any spelling V8 reads; other options do not count', async (t) => {
  for (const opt of ['--parallel-scavenge', '--no-parallel-scavenge', '--noparallel-scavenge', '--parallel_scavenge', '--no-parallel_scavenge', '--single-threaded-gc', '--single_threaded_gc']) {
    t.ok(scavengeChosen([opt]), `${opt} alone`);
    t.ok(scavengeChosen(['--max-old-space-size=512', opt, '--expose-gc']), `${opt} among other options`);
  }
  t.notOk(scavengeChosen([]), 'nothing');
  t.notOk(scavengeChosen(['--max-semi-space-size=64', '--trace-parallel-scavenge']), 'neighbouring flags');
  t.notOk(scavengeChosen(['--parallel-scavenge-x']), 'a longer name');
});

// What V8 does, seen from outside: --trace-parallel-scavenge prints one line per task of each
// scavenge, --trace-gc one line per scavenge. The child runs the module as plain JavaScript
// (transpiled here), so that it has one isolate (tap's TypeScript loader would add a thread with
// its own collections). The workload keeps much alive, so that a parallel scavenge has work for
// its helpers.
t.test('a process that calls it scavenges in one task; one that does not, in several', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'portier-scavenge-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const source = readFileSync(fileURLToPath(new URL('../../src/cli/scavenge.ts', import.meta.url)), 'utf8');
  const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
  writeFileSync(join(dir, 'scavenge.mjs'), js);
  const run = (tuned: boolean, nodeArgs: string[] = []): { scavenges: number; tasks: number; applied: string } => {
    const code =
      `const m = await import('./scavenge.mjs'); const applied = ${tuned} ? m.singleTaskScavenges() : 'no-call'; ` +
      'let keep = []; for (let i = 0; i < 4e6; i++) { keep.push({ a: i, b: [i, i] }); if (keep.length > 200000) keep = []; } ' +
      'console.log("applied", applied)';
    const args = [...nodeArgs, '--min-semi-space-size=16', '--trace-gc', '--trace-parallel-scavenge', '--input-type=module', '-e', code];
    const out = execFileSync(process.execPath, args, { cwd: dir, maxBuffer: 16 << 20 }).toString().split('\n');
    return {
      scavenges: out.filter((l) => / Scavenge /.test(l)).length,
      tasks: out.filter((l) => /scavenge\[/.test(l)).length,
      applied: out.map((l) => /^applied (\S+)/.exec(l)?.[1]).find((a) => a !== undefined) ?? '',
    };
  };
  const single = run(true);
  t.equal(single.applied, 'true', 'applied');
  t.ok(single.scavenges >= 3, `the workload scavenges (${single.scavenges} times)`);
  t.equal(single.tasks, single.scavenges, 'one task per scavenge');
  const parallel = run(false);
  t.ok(parallel.tasks > parallel.scavenges, `without it, V8 runs scavenges in several tasks (${parallel.tasks} tasks, ${parallel.scavenges} scavenges)`);
  const chosen = run(true, ['--parallel-scavenge']);
  t.equal(chosen.applied, 'false', 'node started with --parallel-scavenge: left alone');
  t.ok(chosen.tasks > chosen.scavenges, `and the scavenges stay parallel (${chosen.tasks} tasks, ${chosen.scavenges} scavenges)`);
});
