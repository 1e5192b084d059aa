// bench/parse: how fast the SIP message layer reads and forwards messages.
//
//   npm run build && npm run bench:parse [-- --runs 7 --ms 400 --no-budget]
//
// For a 914-byte INVITE with SDP (baresip as a door station) and a
// 771-byte REGISTER with digest credentials (linphonec), both from
// test/fixtures/traces, it measures on one core:
//   parse          parseAndValidate(): start line, every header line framed
//                  and named, and what a proxy reads checked (Via, CSeq,
//                  Call-ID, From/To with tags, Max-Forwards, Content-Length,
//                  Request-URI, Contacts of a REGISTER)
//   parse+forward  parse, push a Via, decrement Max-Forwards, serialize
//   copy           the ceiling: allocate a Buffer and copy the same bytes
// Each figure is the median of several timed runs. Budget (issue 2): parse
// >= 400,000 INVITEs/s and parse+forward >= 250,000 INVITEs/s; the process
// exits 1 when a budget is missed (unless --no-budget).

import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseAndValidate, SipMessage, SipParseError } from '../src/sip/index.js';

const here = dirname(fileURLToPath(import.meta.url));
// Works from bench/ (ts) and from dist/bench/ (compiled).
const root = here.endsWith(join('dist', 'bench')) ? join(here, '..', '..') : join(here, '..');
const traces = join(root, 'test', 'fixtures', 'traces');

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '7' },
    ms: { type: 'string', default: '400' },
    'no-budget': { type: 'boolean', default: false },
  },
});
const RUNS = Math.max(3, Number(values.runs));
const RUN_MS = Math.max(50, Number(values.ms));
// Bounded in count as well as time.
const MAX_ITERATIONS = 5_000_000;

const BUDGET = { parse: 400_000, forward: 250_000 };

const invite = readFileSync(join(traces, '12-invite-from-baresip-door.sip'));
const register = readFileSync(join(traces, '02-register-udp-with-digest.sip'));

let sink = 0;

function parse(buf: Buffer): void {
  const m = parseAndValidate(buf, { transport: 'udp' });
  if (m instanceof SipParseError) throw new Error('benchmark message does not parse: ' + m.reason);
  sink += m.headerCount;
}

const VIA = 'SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK.portier.bench;rport';

function forward(buf: Buffer): void {
  const m = parseAndValidate(buf, { transport: 'udp' }) as SipMessage;
  const mf = m.maxForwards() ?? 70;
  m.prependHeader('via', VIA);
  m.setHeader('max-forwards', String(mf - 1));
  sink += m.toBuffer().length;
}

function copy(buf: Buffer): void {
  const out = Buffer.allocUnsafe(buf.length);
  buf.copy(out);
  sink += out[0];
}

/** Messages per second of one timed run. */
function run(fn: (b: Buffer) => void, buf: Buffer): number {
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(RUN_MS) * 1_000_000n;
  let n = 0;
  for (;;) {
    for (let i = 0; i < 1000; i++) fn(buf);
    n += 1000;
    const now = process.hrtime.bigint();
    if (now >= deadline || n >= MAX_ITERATIONS) return (n * 1e9) / Number(now - start);
  }
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function measure(fn: (b: Buffer) => void, buf: Buffer): number {
  run(fn, buf); // warm-up: let the JIT settle
  const xs: number[] = [];
  for (let i = 0; i < RUNS; i++) xs.push(run(fn, buf));
  return median(xs);
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US').padStart(11);
}

// Sanity: the forwarded INVITE parses and carries the pushed Via.
{
  const m = parseAndValidate(invite, { transport: 'udp' }) as SipMessage;
  m.prependHeader('via', VIA);
  m.setHeader('max-forwards', String((m.maxForwards() ?? 70) - 1));
  const again = parseAndValidate(m.toBuffer(), { transport: 'tcp' });
  if (again instanceof SipParseError || again.topVia()?.branch !== 'z9hG4bK.portier.bench' || !again.body.equals((parseAndValidate(invite) as SipMessage).body)) {
    throw new Error('forwarded message is wrong');
  }
}

console.log(`bench/parse: node ${process.version}, ${RUNS} runs of ${RUN_MS} ms each, median messages/s on one core`);
console.log(`${'message'.padEnd(26)}${'copy'.padStart(11)}${'parse'.padStart(11)}${'forward'.padStart(11)}  parse/copy  forward/copy`);
const results: Record<string, { copy: number; parse: number; forward: number }> = {};
for (const [name, buf] of [
  [`INVITE (${invite.length} B, SDP)`, invite],
  [`REGISTER (${register.length} B)`, register],
] as const) {
  const c = measure(copy, buf);
  const p = measure(parse, buf);
  const f = measure(forward, buf);
  results[name] = { copy: c, parse: p, forward: f };
  console.log(`${name.padEnd(26)}${fmt(c)}${fmt(p)}${fmt(f)}  ${(p / c).toFixed(3).padStart(10)}  ${(f / c).toFixed(3).padStart(12)}`);
}
if (sink === 0) console.log('');

const inv = results[`INVITE (${invite.length} B, SDP)`];
const misses: string[] = [];
if (inv.parse < BUDGET.parse) misses.push(`parse ${Math.round(inv.parse)}/s < ${BUDGET.parse}/s`);
if (inv.forward < BUDGET.forward) misses.push(`parse+forward ${Math.round(inv.forward)}/s < ${BUDGET.forward}/s`);
if (misses.length === 0) {
  console.log(`budget met: INVITE parse >= ${BUDGET.parse}/s and parse+forward >= ${BUDGET.forward}/s`);
} else {
  console.log(`budget MISSED: ${misses.join('; ')}`);
  if (!values['no-budget']) process.exitCode = 1;
}
