// Finished transactions over UDP, kept off the JS heap for their last wait:
// non-INVITE server ones for Timer J (64*T1: 32 s), with the final to
// resend; non-INVITE client ones for Timer K (T4: 5 s), only their keys, to
// absorb the final's retransmissions. The layer keeps INVITE ones the same
// way: accepted server ones for Timer L (keys only), client ones with a
// non-2xx final for Timer D (the ACK to resend), accepted client ones their
// owner released for Timer M (where their 2xx go). See layer.ts.
//
// In Completed a server transaction only answers a retransmitted request
// with its final again, and a client one only swallows retransmitted
// finals. At thousands of REGISTERs a second (or every BYE of a thousand
// calls a second), 32 s of them as JS objects (the transaction, its key, a
// view of the response) were what every young-generation collection copied
// on its way to the old generation (bench/README.md, "Sixth session"). Here
// a finished transaction is a record in typed arrays: its key's and its
// response's octets in a chunk of a FIFO of 64 or 128 KiB buffers, an
// open-addressing index by the key's hash, its due time, and where to
// resend. The records of one table all wait the same time, so they end in
// the order they came (a FIFO, as the timer wheel's wait lanes), and a
// chunk is let go when its last record ends. Octets are never copied again
// nor overwritten: a 64 MB ring doubled under load stalled the event loop
// for tens of milliseconds, and a view being sent stays intact.
//
// Keys are the layer's table keys (serverKey(), legacyServerKey(),
// clientKey()), made of characters read from latin1 text; a key with a
// character above 0xff is refused and its transaction kept as an object.

import type { Destination } from '../transport/index.js';
// Chunks of 128 KiB where glibc maps them on their own, else 64 KiB (retained.ts).
import { KEPT_BUFFER_SIZE } from './retained.js';
import type { TimerTarget, TimerWheel } from './timer-wheel.js';

/** Where a retransmitted request's answer goes, and what it is. */
export interface FinishedAnswer {
  readonly bytes: Buffer;
  readonly dest: Destination;
}

const EMPTY = 0;
const INITIAL_RECORDS = 4096;

/** FNV-1a (32 bits) of a latin1 key; -1 for a key with a character above 0xff. */
function hashKey(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c > 0xff) return -1;
    h = Math.imul(h ^ c, 0x01000193);
  }
  return h >>> 0;
}

export class FinishedTable {
  // Records: a ring of `cap` slots, `head` the oldest, `count` in use.
  private cap = 0;
  private head = 0;
  private count = 0;
  private hashes = new Uint32Array(0);
  private chunkIds = new Int32Array(0);
  private offsets = new Int32Array(0);
  private keyLengths = new Int32Array(0);
  private answerLengths = new Int32Array(0);
  private dues = new Float64Array(0);
  private dests: Array<Destination | null> = [];
  // Index: open addressing with linear probing, record slot + 1 (0: empty).
  private index = new Int32Array(0);
  private mask = 0;
  // Octets: each record's key then its answer, one after the other, in
  // chunks[id - firstChunk]; the newest chunk is written at `write`.
  private chunks: Buffer[] = [Buffer.allocUnsafeSlow(KEPT_BUFFER_SIZE)];
  private firstChunk = 0;
  private write = 0;

  constructor() {
    this.resize(INITIAL_RECORDS);
  }

  /** Records kept. */
  get size(): number {
    return this.count;
  }

  /** Buffers of octets held (the newest one always): for tests and the curious. */
  get chunkCount(): number {
    return this.chunks.length;
  }

  /**
   * Keeps `answer` for `key` until `due` (a time on the caller's clock).
   * False when the key cannot be kept here (a character above 0xff).
   */
  add(key: string, answer: Buffer, dest: Destination, due: number): boolean {
    const hash = hashKey(key);
    if (hash < 0) return false;
    const keyLength = key.length;
    const n = keyLength + answer.length;
    if (this.count === this.cap) this.resize(this.cap * 2);
    let chunk = this.chunks[this.chunks.length - 1];
    if (this.write + n > chunk.length) {
      chunk = Buffer.allocUnsafeSlow(Math.max(KEPT_BUFFER_SIZE, n));
      this.chunks.push(chunk);
      this.write = 0;
    }
    const at = this.write;
    chunk.write(key, at, keyLength, 'latin1');
    answer.copy(chunk, at + keyLength);
    this.write = at + n;
    const slot = (this.head + this.count) & (this.cap - 1);
    this.hashes[slot] = hash;
    this.chunkIds[slot] = this.firstChunk + this.chunks.length - 1;
    this.offsets[slot] = at;
    this.keyLengths[slot] = keyLength;
    this.answerLengths[slot] = answer.length;
    this.dues[slot] = due;
    this.dests[slot] = dest;
    this.count++;
    this.insertIndex(hash, slot);
    return true;
  }

  /** The answer kept for `key`, or null. `now` on the clock of add(): a record past its due does not match. */
  find(key: string, now: number): FinishedAnswer | null {
    const slot = this.slotOf(key);
    return slot < 0 ? null : this.answerAt(slot, now);
  }

  /** The record kept for `key` (due or not), or -1: a lookup that needs no clock. */
  slotOf(key: string): number {
    if (this.count === 0) return -1;
    const hash = hashKey(key);
    return hash < 0 ? -1 : this.lookup(key, hash);
  }

  /** Whether the record at `slot` (from slotOf()) still holds at `now`: not past its due. */
  liveAt(slot: number, now: number): boolean {
    return this.dues[slot] >= now;
  }

  /** The answer of the record at `slot` (from slotOf()), or null once it is past its due at `now`. */
  answerAt(slot: number, now: number): FinishedAnswer | null {
    if (!this.liveAt(slot, now)) return null;
    const at = this.offsets[slot] + this.keyLengths[slot];
    return { bytes: this.chunkOf(slot).subarray(at, at + this.answerLengths[slot]), dest: this.dests[slot]! };
  }

  /** Drops the records due at or before `now`; returns how many. */
  expire(now: number): number {
    let dropped = 0;
    while (this.count !== 0 && this.dues[this.head] <= now) {
      this.dropHead();
      dropped++;
    }
    return dropped;
  }

  /** Drops every record. */
  clear(): void {
    this.index.fill(EMPTY);
    this.dests.fill(null);
    this.head = this.count = 0;
    this.firstChunk += this.chunks.length - 1;
    this.chunks = [this.chunks[this.chunks.length - 1]];
  }

  private chunkOf(slot: number): Buffer {
    return this.chunks[this.chunkIds[slot] - this.firstChunk];
  }

  private dropHead(): void {
    const slot = this.head;
    this.removeIndex(slot);
    this.dests[slot] = null;
    this.head = (slot + 1) & (this.cap - 1);
    this.count--;
    // The chunks before the oldest record's are empty now (the newest one always stays).
    const keep = this.count === 0 ? this.firstChunk + this.chunks.length - 1 : this.chunkIds[this.head];
    while (this.firstChunk < keep) {
      this.chunks.shift();
      this.firstChunk++;
    }
  }

  private lookup(key: string, hash: number): number {
    const index = this.index;
    const mask = this.mask;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const entry = index[i];
      if (entry === EMPTY) return -1;
      const slot = entry - 1;
      if (this.hashes[slot] !== hash || this.keyLengths[slot] !== key.length) continue;
      const at = this.offsets[slot];
      const bytes = this.chunkOf(slot);
      let same = true;
      for (let k = 0; k < key.length; k++) {
        if (bytes[at + k] !== key.charCodeAt(k)) {
          same = false;
          break;
        }
      }
      if (same) return slot;
    }
  }

  private insertIndex(hash: number, slot: number): void {
    const index = this.index;
    const mask = this.mask;
    let i = hash & mask;
    while (index[i] !== EMPTY) i = (i + 1) & mask;
    index[i] = slot + 1;
  }

  /** Removes a record from the index, shifting back the entries after it (no tombstones). */
  private removeIndex(slot: number): void {
    const index = this.index;
    const mask = this.mask;
    let i = this.hashes[slot] & mask;
    while (index[i] !== slot + 1) i = (i + 1) & mask;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const entry = index[j];
      if (entry === EMPTY) break;
      const home = this.hashes[entry - 1] & mask;
      // The entry at j may move to the hole at i if its home is not in (i, j] cyclically.
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        index[i] = entry;
        i = j;
      }
    }
    index[i] = EMPTY;
  }

  /** New arrays for `records` records (a power of two), the live records copied in order (not their octets). */
  private resize(records: number): void {
    const old = {
      cap: this.cap,
      head: this.head,
      count: this.count,
      hashes: this.hashes,
      chunkIds: this.chunkIds,
      offsets: this.offsets,
      keyLengths: this.keyLengths,
      answerLengths: this.answerLengths,
      dues: this.dues,
      dests: this.dests,
    };
    this.cap = records;
    this.hashes = new Uint32Array(records);
    this.chunkIds = new Int32Array(records);
    this.offsets = new Int32Array(records);
    this.keyLengths = new Int32Array(records);
    this.answerLengths = new Int32Array(records);
    this.dues = new Float64Array(records);
    this.dests = new Array<Destination | null>(records).fill(null);
    this.index = new Int32Array(records * 2);
    this.mask = records * 2 - 1;
    this.head = 0;
    for (let k = 0; k < old.count; k++) {
      const from = (old.head + k) & (old.cap - 1);
      this.hashes[k] = old.hashes[from];
      this.chunkIds[k] = old.chunkIds[from];
      this.offsets[k] = old.offsets[from];
      this.keyLengths[k] = old.keyLengths[from];
      this.answerLengths[k] = old.answerLengths[from];
      this.dues[k] = old.dues[from];
      this.dests[k] = old.dests[from];
      this.insertIndex(old.hashes[from], k);
    }
    this.count = old.count;
  }
}

/**
 * A FinishedTable on the transaction layer's wheel: each record kept
 * `delayMs` (one wheel wait per record, all on this one target), and the
 * number of records that ended told to `ended` (the layer's live counts).
 */
export class CompletedRecords implements TimerTarget {
  private readonly table = new FinishedTable();

  constructor(
    private readonly wheel: TimerWheel,
    private readonly delayMs: number,
    private readonly ended: (n: number) => void,
  ) {}

  /** Keeps `answer` for `key`; false when the key cannot be kept (see FinishedTable.add()). */
  keep(key: string, answer: Buffer, dest: Destination): boolean {
    if (!this.table.add(key, answer, dest, this.wheel.now() + this.delayMs)) return false;
    this.wheel.wait(this, 0, this.delayMs);
    return true;
  }

  /** The answer kept for `key`, or null; the clock is read only when a record matches. */
  answer(key: string): FinishedAnswer | null {
    const slot = this.table.slotOf(key);
    return slot < 0 ? null : this.table.answerAt(slot, this.wheel.now());
  }

  /** Whether a record for `key` is kept: answer() without building the answer (records that answer nothing, absorption). */
  has(key: string): boolean {
    const slot = this.table.slotOf(key);
    return slot >= 0 && this.table.liveAt(slot, this.wheel.now());
  }

  /** @internal The wheel: the oldest records are due. */
  onTimer(): void {
    this.ended(this.table.expire(this.wheel.now()));
  }

  /** Drops every record (their waits are the wheel's to drop). */
  clear(): void {
    this.table.clear();
  }
}
