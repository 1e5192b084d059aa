// bench/alloc-sampler: preloaded into Portier (node --import), samples what
// it allocates, collected objects included, and writes a .heapprofile.
//
//   node dist/bench/load.js --calls 20000 --warmup 2000 --rate 1000 --answer 0 --store memory \
//     --node-args="--import ./dist/bench/alloc-sampler.js"
//   node dist/bench/allocprofile.js /tmp/portier-alloc.heapprofile --ops 10000
//
// Node's --heap-prof keeps only the samples still alive when it stops, which
// says what is held, not what the collector has to sweep: this one asks V8's
// sampling heap profiler to keep the collected ones too. It starts after
// ALLOC_DELAY seconds (default 8: registrations and JIT warm-up done),
// samples for ALLOC_SECONDS (default 10) and writes ALLOC_OUT (default
// /tmp/portier-alloc.heapprofile). With ALLOC_KEEP=promoted it drops the
// samples the young-generation collector freed: what was promoted (and is
// copied by each scavenge on its way), by allocation site; with
// ALLOC_KEEP=live, only what is still alive when it stops. Bench-only:
// never loaded by Portier itself.

import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const out = process.env.ALLOC_OUT ?? '/tmp/portier-alloc.heapprofile';
const delayS = Number(process.env.ALLOC_DELAY ?? 8);
const seconds = Number(process.env.ALLOC_SECONDS ?? 10);
const keep = process.env.ALLOC_KEEP ?? 'all';
if (keep !== 'all' && keep !== 'promoted' && keep !== 'live') throw new Error('ALLOC_KEEP must be all, promoted or live');
const session = new Session();
session.connect();
session.post('HeapProfiler.enable');
setTimeout(() => {
  session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: keep !== 'live', includeObjectsCollectedByMinorGC: keep === 'all' });
  setTimeout(() => {
    session.post('HeapProfiler.stopSampling', (err, r) => {
      if (err) process.stderr.write(`alloc-sampler: ${err.message}\n`);
      else writeFileSync(out, JSON.stringify(r.profile));
    });
  }, seconds * 1000).unref();
}, delayS * 1000).unref();
