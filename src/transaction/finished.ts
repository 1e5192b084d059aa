// Non-INVITE server transactions over UDP in their Completed state (Timer J,
// 64*T1: 32 s), kept off the JS heap.
//
// In Completed a transaction only answers a retransmitted request with its
// final response again. At a thousand calls a second (every BYE) or
// thousands of REGISTERs a second, 32 s of them as JS objects (the
// transaction, its key, a view of the response) were most of what every
// young-generation collection copied on its way to the old generation
// (bench/README.md, "Sixth session"). Here a finished transaction is a
// record in typed arrays: its key's and its response's octets in one byte
// ring, an open-addressing index by the key's hash, its due time, and where
// to resend. Records all wait the same 64*T1, so they end in the order they
// came: a FIFO, as the timer wheel's wait lanes.
//
// Keys are the layer's table keys (serverKey(), legacyServerKey()), made of
// characters read from latin1 text; a key with a character above 0xff is
// refused and its transaction kept as an object instead.

import type { Destination } from '../transport/index.js';

/** Where a retransmitted request's answer goes, and what it is. */
export interface FinishedAnswer {
  readonly bytes: Buffer;
  readonly dest: Destination;
}

const EMPTY = 0;
const INITIAL_RECORDS = 1024;
const INITIAL_BYTES = 256 * 1024;

function hashKey(key: string): number {
  // FNV-1a, 32 bits.
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export class FinishedTable {
  // Records: a ring of `cap` slots, `head` the oldest, `count` in use.
  private cap = 0;
  private head = 0;
  private count = 0;
  private hashes = new Uint32Array(0);
  private offsets = new Int32Array(0);
  private keyLengths = new Int32Array(0);
  private answerLengths = new Int32Array(0);
  private dues = new Float64Array(0);
  private dests: Array<Destination | null> = [];
  // Index: open addressing with linear probing, record slot + 1 (0: empty).
  private index = new Int32Array(0);
  private mask = 0;
  // Octets: each record's key then its answer, one after the other; the
  // live ones run from the oldest record's offset to `write`, wrapping once.
  private bytes = Buffer.alloc(0);
  private write = 0;

  constructor() {
    this.resize(INITIAL_RECORDS, INITIAL_BYTES);
  }

  /** Records kept. */
  get size(): number {
    return this.count;
  }

  /**
   * Keeps `answer` for `key` until `due` (a time on the caller's clock).
   * False when the key cannot be kept here (a character above 0xff).
   */
  add(key: string, answer: Buffer, dest: Destination, due: number): boolean {
    const keyLength = key.length;
    for (let i = 0; i < keyLength; i++) if (key.charCodeAt(i) > 0xff) return false;
    const n = keyLength + answer.length;
    if (this.count === this.cap) this.resize(this.cap * 2, this.bytes.length);
    let at = this.place(n);
    if (at < 0) {
      this.resize(this.cap, Math.max(this.bytes.length * 2, n * 2));
      at = this.place(n);
    }
    const bytes = this.bytes;
    bytes.write(key, at, keyLength, 'latin1');
    answer.copy(bytes, at + keyLength);
    this.write = at + n;
    const slot = (this.head + this.count) & (this.cap - 1);
    const hash = hashKey(key);
    this.hashes[slot] = hash;
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
    if (this.count === 0) return null;
    const slot = this.lookup(key, hashKey(key));
    if (slot < 0 || this.dues[slot] < now) return null;
    const at = this.offsets[slot] + this.keyLengths[slot];
    return { bytes: this.bytes.subarray(at, at + this.answerLengths[slot]), dest: this.dests[slot]! };
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
    this.head = this.count = this.write = 0;
  }

  /** Where `n` octets go after the newest record, or -1 when they do not fit. */
  private place(n: number): number {
    const size = this.bytes.length;
    if (this.count === 0) return n <= size ? 0 : -1;
    const read = this.offsets[this.head];
    if (this.write > read) {
      // Live octets in [read, write): after them, or wrapped to the start before `read`.
      if (this.write + n <= size) return this.write;
      return n <= read ? 0 : -1;
    }
    // Wrapped: live octets in [read, size) and [0, write) (write === read: full).
    return this.write + n <= read ? this.write : -1;
  }

  private dropHead(): void {
    const slot = this.head;
    this.removeIndex(slot);
    this.dests[slot] = null;
    this.head = (slot + 1) & (this.cap - 1);
    this.count--;
    if (this.count === 0) this.write = 0;
  }

  private lookup(key: string, hash: number): number {
    const index = this.index;
    const mask = this.mask;
    const bytes = this.bytes;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const entry = index[i];
      if (entry === EMPTY) return -1;
      const slot = entry - 1;
      if (this.hashes[slot] !== hash || this.keyLengths[slot] !== key.length) continue;
      const at = this.offsets[slot];
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

  /** New arrays for `records` records (a power of two) and `octets` octets, the live records copied in order. */
  private resize(records: number, octets: number): void {
    const old = {
      cap: this.cap,
      head: this.head,
      count: this.count,
      hashes: this.hashes,
      offsets: this.offsets,
      keyLengths: this.keyLengths,
      answerLengths: this.answerLengths,
      dues: this.dues,
      dests: this.dests,
      bytes: this.bytes,
    };
    this.cap = records;
    this.hashes = new Uint32Array(records);
    this.offsets = new Int32Array(records);
    this.keyLengths = new Int32Array(records);
    this.answerLengths = new Int32Array(records);
    this.dues = new Float64Array(records);
    this.dests = new Array<Destination | null>(records).fill(null);
    this.index = new Int32Array(records * 2);
    this.mask = records * 2 - 1;
    this.bytes = Buffer.allocUnsafeSlow(octets);
    this.head = 0;
    this.count = 0;
    let write = 0;
    for (let k = 0; k < old.count; k++) {
      const from = (old.head + k) & (old.cap - 1);
      const n = old.keyLengths[from] + old.answerLengths[from];
      old.bytes.copy(this.bytes, write, old.offsets[from], old.offsets[from] + n);
      this.hashes[k] = old.hashes[from];
      this.offsets[k] = write;
      this.keyLengths[k] = old.keyLengths[from];
      this.answerLengths[k] = old.answerLengths[from];
      this.dues[k] = old.dues[from];
      this.dests[k] = old.dests[from];
      this.insertIndex(old.hashes[from], k);
      write += n;
    }
    this.count = old.count;
    this.write = write;
  }
}
