#!/usr/bin/env node
// The `portier` executable (package.json "bin"): see ./run.ts for the command line.
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
