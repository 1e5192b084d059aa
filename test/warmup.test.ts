import { EventEmitter } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { runCli } from '../src/cli/run.js';
import { warmUp } from '../src/warmup.js';
import { until } from './helpers/wait.js';

t.test('every round runs the whole path: challenge, credentials accepted, responses built and read back', async (t) => {
  // A step that failed ends the loop early: all 40 rounds done means every step of each passed.
  const w = warmUp(60_000, 40);
  t.equal(w.rounds, 40);
  t.ok(w.ms > 0);
  t.same(warmUp(0, 40).rounds, 0, 'no time, no rounds');
  t.equal(warmUp(60_000, 0).rounds, 0);
});

class FakeProcess extends EventEmitter {
  exits: number[] = [];
  exit(code: number): void {
    this.exits.push(code);
  }
}

/** `portier run` with the real server on a config, until it has started; then SIGTERM. */
async function serve(t: Test, overload: string): Promise<Array<Record<string, unknown>>> {
  const dir = mkdtempSync(join(tmpdir(), 'portier-warmup-'));
  const path = join(dir, 'portier.yaml');
  writeFileSync(path, `domains: [example.test]\nlisten: [udp:127.0.0.1:0]\nstorage: {type: memory}\nlog: {level: info}\noverload: ${overload}\n`);
  const logs: Array<Record<string, unknown>> = [];
  const proc = new FakeProcess();
  const done = runCli(['--config', path], {
    stdout: { write: () => true },
    stderr: { write: () => true },
    process: proc,
    logDestination: { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) },
  });
  await until(() => logs.some((l) => l.msg === 'portier started'), 'portier started', 20_000);
  proc.emit('SIGTERM');
  t.equal(await done, 0, 'stops cleanly');
  return logs;
}

t.test('portier run warms up before it serves, for the time overload.warm-up says; 0 turns it off', async (t) => {
  const on = await serve(t, '{warm-up: 150}');
  const warmed = on.find((l) => l.msg === 'hot path warmed up') as { rounds: number; ms: number } | undefined;
  t.ok(warmed, 'logged');
  t.ok(warmed!.rounds > 0, `${warmed!.rounds} rounds`);
  // It stops at the budget, or sooner after its most rounds (3,000) on a fast machine.
  t.ok((warmed!.ms >= 149 || warmed!.rounds === 3000) && warmed!.ms < 2000, `about the budget: ${warmed!.ms} ms`);
  t.ok(on.indexOf(warmed!) < on.findIndex((l) => l.msg === 'portier started'), 'before the server started');

  const off = await serve(t, '{warm-up: 0}');
  t.notOk(off.some((l) => l.msg === 'hot path warmed up'), 'no warm-up');
  t.ok(off.some((l) => l.msg === 'portier started'));
});
