// bench/heapsnapshot: what holds the memory in a V8 heap snapshot.
//
//   node --max-old-space-size=8192 dist/bench/heapsnapshot.js FILE.heapsnapshot [--top 25] [--class NAME]...
//
// Reads a .heapsnapshot (node --heapsnapshot-near-heap-limit=1 or
// --heapsnapshot-signal=SIGUSR2 on the Portier process; bench/load passes
// node options with --node-args) and prints:
//   - objects by constructor (or by kind for strings, arrays, code), with
//     their count, self size and retained size (dominator tree: what would
//     be freed with them; instances nested in another of the same class are
//     counted once);
//   - for the classes with the most retained memory (or the --class ones),
//     the average instance: what it retains, split by the property (edge)
//     through which it dominates each part, so that "a ServerTransaction
//     keeps 9 KB, 6 KB of it through .request" can be read off.
// Weak edges do not retain. The dominator tree is computed with the
// iterative algorithm of Cooper, Harvey and Kennedy over the snapshot's
// graph from its synthetic root.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '25' }, class: { type: 'string', multiple: true, default: [] } },
});
if (positionals.length !== 1) {
  process.stderr.write('Usage: node --max-old-space-size=8192 dist/bench/heapsnapshot.js FILE.heapsnapshot [--top N] [--class NAME]...\n');
  process.exit(2);
}
const TOP = Number(values.top);

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] }; node_count: number };
  nodes: number[];
  edges: number[];
  strings: string[];
}
const t0 = performance.now();
const snap = JSON.parse(readFileSync(positionals[0], 'utf8')) as Snapshot;
const meta = snap.snapshot.meta;
const NF = meta.node_fields.length;
const EF = meta.edge_fields.length;
const nType = meta.node_fields.indexOf('type');
const nName = meta.node_fields.indexOf('name');
const nSize = meta.node_fields.indexOf('self_size');
const nEdges = meta.node_fields.indexOf('edge_count');
const eType = meta.edge_fields.indexOf('type');
const eName = meta.edge_fields.indexOf('name_or_index');
const eTo = meta.edge_fields.indexOf('to_node');
const nodeTypes = meta.node_types[0];
const edgeTypes = meta.edge_types[0];
const N = snap.nodes.length / NF;
const nodes = snap.nodes;
const edges = snap.edges;
const strings = snap.strings;

const firstEdge = new Uint32Array(N + 1);
for (let i = 0, e = 0; i < N; i++) {
  firstEdge[i] = e;
  e += nodes[i * NF + nEdges] * EF;
  firstEdge[i + 1] = e;
}
const WEAK = edgeTypes.indexOf('weak');
const SHORTCUT = edgeTypes.indexOf('shortcut');
const retains = (e: number): boolean => edges[e + eType] !== WEAK && edges[e + eType] !== SHORTCUT;

/** Class of a node: the constructor name for objects, the kind otherwise. */
function classOf(i: number): string {
  const type = nodeTypes[nodes[i * NF + nType]];
  const name = strings[nodes[i * NF + nName]];
  switch (type) {
    case 'object':
    case 'native':
      return name;
    case 'closure':
      return '(closure)';
    case 'string':
    case 'concatenated string':
    case 'sliced string':
      return '(string)';
    case 'array':
      return `(array${name !== '' ? ' ' + name : ''})`;
    case 'code':
      return '(code)';
    case 'hidden':
      return `(hidden ${name.slice(0, 40)})`;
    default:
      return `(${type}${name !== '' ? ' ' + name.slice(0, 40) : ''})`;
  }
}

// Reverse postorder from the root (node 0), iterative DFS.
const order = new Int32Array(N).fill(-1); // postorder number
const rpo = new Uint32Array(N);
let count = 0;
{
  const stack = new Uint32Array(N);
  const edgeAt = new Uint32Array(N);
  const seen = new Uint8Array(N);
  let sp = 0;
  stack[sp++] = 0;
  seen[0] = 1;
  edgeAt[0] = firstEdge[0];
  while (sp > 0) {
    const v = stack[sp - 1];
    let pushed = false;
    for (let e = edgeAt[v]; e < firstEdge[v + 1]; e += EF) {
      if (!retains(e)) continue;
      const w = edges[e + eTo] / NF;
      if (seen[w]) continue;
      seen[w] = 1;
      edgeAt[v] = e + EF;
      edgeAt[w] = firstEdge[w];
      stack[sp++] = w;
      pushed = true;
      break;
    }
    if (!pushed) {
      sp--;
      order[v] = count;
      rpo[N - 1 - count] = v;
      count++;
    }
  }
}
const reachable = count;
const rpoStart = N - reachable;

// Predecessors (retaining edges between reachable nodes), CSR.
const predCount = new Uint32Array(N + 1);
for (let v = 0; v < N; v++) {
  if (order[v] < 0) continue;
  for (let e = firstEdge[v]; e < firstEdge[v + 1]; e += EF) if (retains(e) && order[edges[e + eTo] / NF] >= 0) predCount[edges[e + eTo] / NF + 1]++;
}
for (let i = 0; i < N; i++) predCount[i + 1] += predCount[i];
const preds = new Uint32Array(predCount[N]);
{
  const fill = predCount.slice(0, N);
  for (let v = 0; v < N; v++) {
    if (order[v] < 0) continue;
    for (let e = firstEdge[v]; e < firstEdge[v + 1]; e += EF) {
      const w = edges[e + eTo] / NF;
      if (retains(e) && order[w] >= 0) preds[fill[w]++] = v;
    }
  }
}

// Cooper-Harvey-Kennedy.
const idom = new Int32Array(N).fill(-1);
idom[0] = 0;
const intersect = (a: number, b: number): number => {
  while (a !== b) {
    while (order[a] < order[b]) a = idom[a];
    while (order[b] < order[a]) b = idom[b];
  }
  return a;
};
for (let changed = true, pass = 0; changed && pass < 50; pass++) {
  changed = false;
  for (let k = rpoStart; k < N; k++) {
    const v = rpo[k];
    if (v === 0) continue;
    let d = -1;
    for (let p = predCount[v]; p < predCount[v + 1]; p++) {
      const u = preds[p];
      if (idom[u] < 0) continue;
      d = d < 0 ? u : intersect(u, d);
    }
    if (d >= 0 && idom[v] !== d) {
      idom[v] = d;
      changed = true;
    }
  }
}

// Retained sizes: children before parents (postorder).
const retained = new Float64Array(N);
for (let v = 0; v < N; v++) if (order[v] >= 0) retained[v] = nodes[v * NF + nSize];
for (let k = N - 1; k >= rpoStart; k--) {
  /* rpo[N-1] is the first in postorder: leaves first */
}
for (let k = rpoStart; k < N; k++) void k;
{
  // Sort reachable nodes by postorder ascending and add each to its dominator.
  const post = new Uint32Array(reachable);
  for (let v = 0; v < N; v++) if (order[v] >= 0) post[order[v]] = v;
  for (let i = 0; i < reachable; i++) {
    const v = post[i];
    if (v !== 0 && idom[v] >= 0) retained[idom[v]] += retained[v];
  }
}

// By class.
interface Row {
  n: number;
  self: number;
  retained: number;
}
const byClass = new Map<string, Row>();
const cls: string[] = new Array(N);
let total = 0;
for (let v = 0; v < N; v++) {
  if (order[v] < 0) continue;
  const c = classOf(v);
  cls[v] = c;
  const self = nodes[v * NF + nSize];
  total += self;
  const r = byClass.get(c) ?? { n: 0, self: 0, retained: 0 };
  r.n++;
  r.self += self;
  byClass.set(c, r);
}
// Retained per class: instances not dominated by another instance of the class.
for (let v = 0; v < N; v++) {
  if (order[v] < 0 || v === 0) continue;
  const c = cls[v];
  let nested = false;
  for (let d = idom[v]; d > 0; d = idom[d]) {
    if (cls[d] === c) {
      nested = true;
      break;
    }
  }
  if (!nested) byClass.get(c)!.retained += retained[v];
}

const mb = (x: number): string => (x / 1048576).toFixed(1).padStart(8);
const kb = (x: number): string => (x / 1024).toFixed(1).padStart(7);
process.stdout.write(
  `heap snapshot ${positionals[0]}: ${N} nodes, ${reachable} reachable, ${(total / 1048576).toFixed(1)} MiB of reachable objects ` +
    `(read in ${((performance.now() - t0) / 1000).toFixed(1)} s)\n\n` +
    `  count      self MiB  retained MiB  class (retained: what freeing every instance would free)\n`,
);
const rows = [...byClass.entries()].sort((a, b) => b[1].retained - a[1].retained);
const skip = (c: string): boolean => c.startsWith('(') || c === '' || c === 'Object' || c === 'Array' || c === 'Map' || c === 'Set' || c === 'system / Context';
for (const [c, r] of rows.slice(0, TOP)) {
  process.stdout.write(`  ${String(r.n).padStart(8)}  ${mb(r.self)}  ${mb(r.retained)}      ${c.slice(0, 80)}\n`);
}
process.stdout.write(`\n  by self size:\n`);
for (const [c, r] of [...byClass.entries()].sort((a, b) => b[1].self - a[1].self).slice(0, 15)) {
  process.stdout.write(`  ${String(r.n).padStart(8)}  ${mb(r.self)}  ${mb(r.retained)}      ${c.slice(0, 80)}\n`);
}

// What an average instance of the chosen classes holds, by edge.
const chosen = values.class.length > 0 ? values.class : rows.filter(([c]) => !skip(c)).slice(0, 6).map(([c]) => c);
for (const c of chosen) {
  const r = byClass.get(c);
  if (r === undefined) {
    process.stdout.write(`\n${c}: not in the snapshot\n`);
    continue;
  }
  const parts = new Map<string, number>();
  let n = 0;
  let sumRetained = 0;
  for (let v = 0; v < N; v++) {
    if (order[v] < 0 || cls[v] !== c) continue;
    n++;
    sumRetained += retained[v];
    for (let e = firstEdge[v]; e < firstEdge[v + 1]; e += EF) {
      if (!retains(e)) continue;
      const w = edges[e + eTo] / NF;
      if (idom[w] !== v) continue;
      const et = edgeTypes[edges[e + eType]];
      const name = et === 'element' || et === 'hidden' ? `[${et}]` : String(strings[edges[e + eName]]);
      const key = `.${name} -> ${cls[w].slice(0, 50)}`;
      parts.set(key, (parts.get(key) ?? 0) + retained[w]);
    }
  }
  process.stdout.write(`\n${c}: ${n} instances, ${kb(sumRetained / n).trim()} KiB retained each on average (self ${kb(r.self / n).trim()} KiB)\n`);
  for (const [k, v] of [...parts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    process.stdout.write(`  ${kb(v / n)} KiB  ${k}\n`);
  }
}
