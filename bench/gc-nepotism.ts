// bench/gc-nepotism: why a busy table whose Map lives in the old generation
// has its short-lived entries promoted.
//
//   npm run build && node dist/bench/gc-nepotism.js [-- --seconds 12 --rate 3000]
//
// A Map's entries live in one backing table. When inserts and deletes have
// filled it, V8 rehashes it into a new table; the old one keeps its entries
// and a pointer to the new one, and is garbage. If the Map's table is in the
// old generation, the new one is allocated there too, and the dead tables
// stay until the next full collection. Meanwhile each young-generation
// collection treats every old-to-new pointer as a root, the dead tables'
// included: whatever a table held when it was replaced survives, is copied,
// and is promoted at the next scavenge, although nothing alive points at it.
//
// Each case runs in a child process with a fixed 16 MB young generation
// (the size Portier's grows to under load) and --trace-gc-nvp: a steady
// stream of entries (an object of ~0.2 KB behind a string key, 3,000 a
// second, each deleted 60 ms later, as a transaction table with short
// retention). Printed: bytes promoted per scavenge (median), with
//   none   no Map: the entries are only in a FIFO;
//   young  a new Map, whose table starts in the young generation and is
//          replaced before it can be promoted;
//   old    the same Map after two full collections moved its table to the
//          old generation.
// No budget: a diagnostic for bench/README.md ("Sixth session").

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '12' },
    rate: { type: 'string', default: '3000' },
    child: { type: 'string' },
  },
});
const SECONDS = Math.min(60, Math.max(3, Number(values.seconds)));
const RATE = Math.min(20_000, Math.max(100, Number(values.rate)));
const LIFE_MS = 60;
const CASES = ['none', 'young', 'old'] as const;
type Case = (typeof CASES)[number];

class Entry {
  readonly parts: number[];
  readonly meta: { at: number; seq: number; tags: string[] };
  constructor(
    readonly key: string,
    readonly at: number,
    seq: number,
  ) {
    this.parts = new Array<number>(24).fill(seq);
    this.meta = { at, seq, tags: ['a' + seq, 'b' + seq] };
  }
}

function child(mode: Case): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  const table = new Map<string, Entry>();
  table.set('seed', new Entry('seed', 0, 0));
  if (mode === 'old') {
    if (gc === undefined) throw new Error('the child needs --expose-gc');
    gc();
    gc();
  }
  table.delete('seed');
  // A ring of the entries in order of their end.
  const ring: Array<Entry | null> = new Array<Entry | null>(1 << 14).fill(null);
  let head = 0;
  let tail = 0;
  let made = 0;
  const start = performance.now();
  const tick = setInterval(() => {
    const now = performance.now();
    const due = Math.floor(((now - start) * RATE) / 1000);
    while (made < due && tail - head < ring.length) {
      const key = 'z9hG4bK-' + made + '-x 127.0.0.1:40000 OPTIONS';
      const e = new Entry(key, now, made++);
      if (mode !== 'none') table.set(e.key, e);
      ring[tail++ & (ring.length - 1)] = e;
      // The garbage a request leaves: parsed fields, buffers.
      let g: unknown = null;
      for (let i = 0; i < 60; i++) g = { i, g };
    }
    while (head < tail) {
      const e = ring[head & (ring.length - 1)]!;
      if (now - e.at < LIFE_MS) break;
      if (mode !== 'none') table.delete(e.key);
      ring[head++ & (ring.length - 1)] = null;
    }
    if (now - start > SECONDS * 1000) clearInterval(tick);
  }, 1);
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[s.length >> 1];
}

function runCase(mode: Case): { scavenges: number; promotedKB: number; survivedKB: number; pauseMs: number } {
  const r = spawnSync(
    process.execPath,
    [
      '--expose-gc',
      '--trace-gc-nvp',
      '--min-semi-space-size=16',
      '--max-semi-space-size=16',
      fileURLToPath(import.meta.url),
      '--child',
      mode,
      '--seconds',
      String(SECONDS),
      '--rate',
      String(RATE),
    ],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: (SECONDS + 30) * 1000 },
  );
  if (r.status !== 0) throw new Error(`child ${mode} failed: ${r.stderr || r.error?.message}`);
  // The first scavenges come before the load is steady.
  const lines = r.stdout.split('\n').filter((l) => l.includes(' gc=s ')).slice(2);
  const field = (l: string, k: string) => Number(new RegExp(`\\b${k}=([0-9.]+)`).exec(l)?.[1] ?? NaN);
  return {
    scavenges: lines.length,
    promotedKB: median(lines.map((l) => field(l, 'promoted'))) / 1024,
    survivedKB: median(lines.map((l) => field(l, 'new_space_survived'))) / 1024,
    pauseMs: median(lines.map((l) => field(l, 'pause'))),
  };
}

if (values.child !== undefined) {
  if (!(CASES as readonly string[]).includes(values.child)) throw new Error(`unknown case ${values.child}`);
  child(values.child as Case);
} else {
  process.stdout.write(`gc-nepotism: ${RATE} entries/s for ${SECONDS} s, each deleted after ${LIFE_MS} ms; 16 MB young generation\n`);
  const results = new Map<Case, ReturnType<typeof runCase>>();
  for (const mode of CASES) {
    const r = runCase(mode);
    results.set(mode, r);
    process.stdout.write(
      `${mode.padEnd(6)} ${String(r.scavenges).padStart(3)} scavenges: promoted ${r.promotedKB.toFixed(1)} KB, survived ` +
        `${r.survivedKB.toFixed(1)} KB, pause ${r.pauseMs.toFixed(2)} ms (medians per scavenge)\n`,
    );
  }
  const none = results.get('none')!.promotedKB;
  const old = results.get('old')!.promotedKB;
  process.stdout.write(`old table: ${(old - none).toFixed(1)} KB more promoted per scavenge than no table\n`);
}
