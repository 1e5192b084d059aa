#!/usr/bin/env -S node --initial-old-space-size=128
// The `portier` executable (package.json "bin"): see ./run.ts for the command line.
//
// --initial-old-space-size=128 (here, in npm start and in the Docker image): V8 starts full
// collections of the old generation only once it holds 128 MiB instead of a few MiB over what
// is live. With the default, a busy Portier ran one every ~5 s, each with main-thread marking
// steps of 4-10 ms and a pause of 2.5-6 ms; at 1,000 calls/s none fell in a 20 s window with it,
// GC pause p99 1.4-1.5 ms against 5.7-6.1, for ~13 MiB more RSS (bench/README.md, "Eleventh
// session"). A heap larger than that is collected as V8 sees fit.
import { runCli } from './run.js';
import { singleTaskScavenges } from './scavenge.js';

singleTaskScavenges();

function exit(code: number): void {
  process.exitCode = code;
  // Let stdout and stderr drain, then exit even if something still holds the event loop.
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr }).then(exit, (err: unknown) => {
  process.stderr.write(`portier: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  exit(1);
});
