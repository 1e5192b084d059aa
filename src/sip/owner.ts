// Which worker owns a message, read off its bytes before any parsing: the
// hash of its Call-ID. Every message of a call (the INVITE and its
// retransmissions, every response of every branch, CANCEL, ACK, BYE, a
// re-INVITE) carries the same Call-ID, and so does every request the proxy
// itself sends for a call (CANCEL, the BYE of a late 2xx): one worker sees all
// of them and keeps the call's state, as a single process would.

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const LOWER = 0x20;

/** `call-id`, lower case, without its first letter (checked apart, with the compact `i`). */
const ALL_ID = [0x61, 0x6c, 0x6c, 0x2d, 0x69, 0x64];

/**
 * FNV-1a (32 bits) of the Call-ID's value, trimmed, from the message head;
 * -1 when the head has no Call-ID (or none before maxHead octets). The same
 * value hashes the same written as `Call-ID:` or `i:`, with any spacing
 * around the colon. A Call-ID folded over two lines (obsolete, never seen)
 * hashes its first line only: still the same for every copy of a message.
 */
export function callIdHash(buf: Buffer, maxHead = buf.length): number {
  const end = maxHead < buf.length ? maxHead : buf.length;
  let i = 0;
  // Skip the start line.
  while (i < end && buf[i] !== LF) i++;
  i++;
  while (i < end) {
    const c = buf[i];
    if (c === CR || c === LF) return -1; // the empty line: end of the head
    const value = callIdValueAt(buf, i, end);
    if (value >= 0) return hashValue(buf, value, end);
    while (i < end && buf[i] !== LF) i++;
    i++;
  }
  return -1;
}

/** Where the value of a Call-ID header starting at `i` begins, or -1 when the line is another header. */
function callIdValueAt(buf: Buffer, i: number, end: number): number {
  const first = buf[i] | LOWER;
  let j = i + 1;
  if (first === 0x63 /* c */) {
    for (let k = 0; k < ALL_ID.length; k++, j++) {
      if (j >= end || (buf[j] | LOWER) !== ALL_ID[k]) return -1;
    }
  } else if (first !== 0x69 /* i */) {
    return -1;
  }
  while (j < end && (buf[j] === SP || buf[j] === HTAB)) j++;
  if (j >= end || buf[j] !== COLON) return -1;
  j++;
  while (j < end && (buf[j] === SP || buf[j] === HTAB)) j++;
  return j;
}

function hashValue(buf: Buffer, start: number, end: number): number {
  let stop = start;
  while (stop < end && buf[stop] !== CR && buf[stop] !== LF) stop++;
  while (stop > start && (buf[stop - 1] === SP || buf[stop - 1] === HTAB)) stop--;
  let h = 0x811c9dc5;
  for (let k = start; k < stop; k++) h = Math.imul(h ^ buf[k], 0x01000193);
  return h >>> 0;
}

/** The worker of `count` that owns the message: its Call-ID's hash modulo count; `fallback` without a Call-ID. */
export function ownerOf(buf: Buffer, count: number, fallback: number): number {
  const h = callIdHash(buf);
  return h < 0 ? fallback : h % count;
}
