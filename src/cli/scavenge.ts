// V8's young-generation collections (scavenges) in one task, the main
// thread's, unless the operator chose otherwise.
//
// Why: V8 splits a scavenge over up to five tasks (its four helper threads
// and the main thread), and the pause lasts until the last of them ends. On
// a machine with few cores shared with other work (a city's 2-core VM; here
// the load generator), a helper descheduled mid-task holds the pause for a
// time slice. Portier's scavenges copy little (its transactions live off the
// heap), so one task costs nothing at the median and removes that tail:
// at 1,000 calls/s, GC pause p99 median 1.34 ms against 4.15 over five
// interleaved runs, scavenge p50 0.67 against 0.80 (bench/README.md,
// "Eleventh session").

import { setFlagsFromString } from 'node:v8';

// V8 reads --parallel-scavenge, --no-parallel-scavenge and --noparallel-scavenge, with - or _;
// --single-threaded-gc turns it off too. Either spelling means the operator has chosen. Only the
// command line can say (node refuses V8 options in NODE_OPTIONS).
const CHOSEN = /(?:^|\s)--(?:no-?)?parallel[-_]scavenge(?:=\S*)?(?=\s|$)|(?:^|\s)--single[-_]threaded[-_]gc(?=\s|$)/;

/** Whether node's command-line options set V8's parallel scavenging either way. */
export function scavengeChosen(execArgv: readonly string[]): boolean {
  return CHOSEN.test(execArgv.join(' '));
}

/** Turns parallel scavenging off unless node's options chose; true when it did. Process-wide: call once, at start. */
export function singleTaskScavenges(execArgv: readonly string[] = process.execArgv): boolean {
  if (scavengeChosen(execArgv)) return false;
  setFlagsFromString('--no-parallel-scavenge');
  return true;
}
