// bench/cpuprofile: summarise a V8 .cpuprofile (node --cpu-prof) as text.
//
//   node dist/bench/cpuprofile.js FILE.cpuprofile [--top 25] [--callers NAME]
//
// Prints the profile's span, the share of (idle), (garbage collector) and
// (program), then the functions with the most self time (time the sampled
// stack had them on top), aggregated by function name, file and line, with
// their inclusive time (on the stack at all) and the share of all samples.
// --callers NAME: the stacks (3 frames up) under which functions whose name
// contains NAME took their self time.
// Used for the CPU profile in bench/README.md (the load: bench/load with
// --node-args="--cpu-prof --cpu-prof-dir=DIR").

import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, callers: { type: 'string' } } });
if (positionals.length !== 1) {
  process.stderr.write('Usage: node dist/bench/cpuprofile.js FILE.cpuprofile [--top N]\n');
  process.exit(2);
}
const top = Number(values.top);
const prof = JSON.parse(readFileSync(positionals[0], 'utf8')) as Profile;
const byId = new Map<number, Node>();
const parent = new Map<number, number>();
for (const n of prof.nodes) {
  byId.set(n.id, n);
  for (const c of n.children ?? []) parent.set(c, n.id);
}

function where(n: Node): string {
  const f = n.callFrame;
  let url = f.url;
  if (url.startsWith('file://')) {
    try {
      url = relative(process.cwd(), fileURLToPath(url));
    } catch {
      /* as it is */
    }
  }
  const name = f.functionName === '' ? '(anonymous)' : f.functionName;
  return url === '' ? name : `${name} ${url}:${f.lineNumber + 1}`;
}

const self = new Map<string, number>();
const incl = new Map<string, number>();
let total = 0;
for (let i = 0; i < prof.samples.length; i++) {
  // A sample's delta is the time until the next one; the first delta is from the start.
  const dt = prof.timeDeltas[i + 1] ?? 0;
  total += dt;
  let n = byId.get(prof.samples[i]);
  if (n === undefined) continue;
  const key = where(n);
  self.set(key, (self.get(key) ?? 0) + dt);
  const seen = new Set<string>();
  for (; n !== undefined; n = byId.get(parent.get(n.id) ?? -1)) {
    const k = where(n);
    if (seen.has(k)) continue;
    seen.add(k);
    incl.set(k, (incl.get(k) ?? 0) + dt);
  }
}
const ms = (us: number): string => (us / 1000).toFixed(0).padStart(7);
const pc = (us: number): string => ((us / total) * 100).toFixed(1).padStart(5) + '%';
const busy = total - (self.get('(idle)') ?? 0);
process.stdout.write(
  `profile ${positionals[0]}: ${(total / 1e6).toFixed(2)} s sampled, ${prof.samples.length} samples; ` +
    `busy ${(busy / 1e6).toFixed(2)} s (${pc(busy).trim()})\n` +
    `  (idle) ${pc(self.get('(idle)') ?? 0).trim()}, (garbage collector) ${pc(self.get('(garbage collector)') ?? 0).trim()}, (program) ${pc(self.get('(program)') ?? 0).trim()}\n` +
    `  self ms  self% of busy  incl ms  function\n`,
);
const rows = [...self.entries()].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, top);
for (const [k, v] of rows) {
  process.stdout.write(`  ${ms(v)}  ${((v / busy) * 100).toFixed(1).padStart(5)}%  ${ms(incl.get(k) ?? 0)}  ${k}\n`);
}

if (values.callers !== undefined) {
  const want = values.callers;
  const stacks = new Map<string, number>();
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i + 1] ?? 0;
    let n = byId.get(prof.samples[i]);
    if (n === undefined || !n.callFrame.functionName.includes(want)) continue;
    const chain: string[] = [];
    for (let d = 0; d < 4 && n !== undefined; d++, n = byId.get(parent.get(n.id) ?? -1)) chain.push(where(n));
    const k = chain.join(' <- ');
    stacks.set(k, (stacks.get(k) ?? 0) + dt);
  }
  process.stdout.write(`callers of ${want}:\n`);
  for (const [k, v] of [...stacks.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${ms(v)}  ${k}\n`);
}
