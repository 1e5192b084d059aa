// The /metrics of several workers (config `workers`) as one exposition:
// every sample labelled with its worker, each family's HELP and TYPE once,
// the samples of a family together (the text format requires it).

interface Family {
  meta: string[];
  samples: string[];
}

/** `texts[i]` is worker i's Prometheus text exposition. */
export function mergeWorkerMetrics(texts: readonly string[]): string {
  const families = new Map<string, Family>();
  for (let w = 0; w < texts.length; w++) {
    let current: Family | null = null;
    for (const line of texts[w].split('\n')) {
      if (line === '') continue;
      if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) {
        const name = line.slice(7, line.indexOf(' ', 7) === -1 ? undefined : line.indexOf(' ', 7));
        let f = families.get(name);
        if (f === undefined) families.set(name, (f = { meta: [], samples: [] }));
        // One HELP and one TYPE: the first worker's.
        const kind = line.slice(0, 7);
        if (!f.meta.some((m) => m.startsWith(kind))) f.meta.push(line);
        current = f;
        continue;
      }
      if (line.startsWith('#')) continue;
      if (current === null) {
        // A sample before any HELP or TYPE: a family of its own name.
        const name = line.slice(0, firstOf(line, '{', ' '));
        let f = families.get(name);
        if (f === undefined) families.set(name, (f = { meta: [], samples: [] }));
        current = f;
      }
      current.samples.push(labelled(line, w));
    }
  }
  const out: string[] = [];
  for (const f of families.values()) out.push(...f.meta, ...f.samples);
  return out.join('\n') + '\n';
}

function firstOf(line: string, a: string, b: string): number {
  const i = line.indexOf(a);
  const j = line.indexOf(b);
  if (i === -1) return j === -1 ? line.length : j;
  return j === -1 || i < j ? i : j;
}

/** `name{a="1"} 2` → `name{worker="w",a="1"} 2`; `name 2` → `name{worker="w"} 2`. */
function labelled(line: string, w: number): string {
  const at = firstOf(line, '{', ' ');
  if (line[at] === '{') return line.slice(0, at + 1) + `worker="${w}"` + (line[at + 1] === '}' ? '' : ',') + line.slice(at + 1);
  return line.slice(0, at) + `{worker="${w}"}` + line.slice(at);
}
