// bench/allocprofile: summarise a sampled .heapprofile (bench/alloc-sampler)
// as bytes allocated per operation, by function.
//
//   node dist/bench/allocprofile.js FILE.heapprofile --ops N [--top 30]
//
// N: the operations in the sampled window (rate x ALLOC_SECONDS: 10,000 calls
// at 1,000 calls/s for 10 s). Prints the total per operation, then the
// functions by self bytes (allocated while on top of the stack) and by
// inclusive bytes (on the stack at all), aggregated by name, file and line.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface SampleNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: SampleNode[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { ops: { type: 'string' }, top: { type: 'string', default: '30' } } });
const ops = Number(values.ops);
if (positionals.length !== 1 || !(ops > 0)) {
  process.stderr.write('Usage: node dist/bench/allocprofile.js FILE.heapprofile --ops N [--top 30]\n');
  process.exit(2);
}
const top = Number(values.top);
const root = (JSON.parse(readFileSync(positionals[0], 'utf8')) as { head: SampleNode }).head;
const self = new Map<string, number>();
const inclusive = new Map<string, number>();
let total = 0;

function nameOf(n: SampleNode): string {
  const f = n.callFrame;
  return `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
}

/** Walks the tree with the names on the stack; a name counts once per stack for inclusive bytes. */
function walk(n: SampleNode, stack: Map<string, number>): number {
  const name = nameOf(n);
  let below = n.selfSize;
  total += n.selfSize;
  self.set(name, (self.get(name) ?? 0) + n.selfSize);
  const outer = stack.has(name);
  if (!outer) stack.set(name, 1);
  for (const c of n.children) below += walk(c, stack);
  if (!outer) {
    stack.delete(name);
    inclusive.set(name, (inclusive.get(name) ?? 0) + below);
  }
  return below;
}
walk(root, new Map());

const perOp = (bytes: number): string => Math.round(bytes / ops).toLocaleString('en-US').padStart(8);
process.stdout.write(`${(total / 1048576).toFixed(1)} MiB sampled, ${(total / ops / 1024).toFixed(1)} KiB per operation (${ops} operations)\n\n`);
process.stdout.write('bytes/op self   function\n');
for (const [name, b] of [...self].sort((x, y) => y[1] - x[1]).slice(0, top)) process.stdout.write(`${perOp(b)}        ${name}\n`);
process.stdout.write('\nbytes/op inclusive   function\n');
for (const [name, b] of [...inclusive].sort((x, y) => y[1] - x[1]).slice(1, top + 1)) process.stdout.write(`${perOp(b)}             ${name}\n`);
