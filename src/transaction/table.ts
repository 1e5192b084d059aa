// The layer's tables of live transactions, by key: open addressing over
// arrays that are replaced only when the table grows.
//
// A V8 Map under steady inserts and deletes (every transaction comes and
// goes) rehashes into a new backing table every few hundred operations and
// leaves the old one as garbage, its entries still in place. Once the Map
// is old, so are those dead tables, and until the next full collection
// every scavenge treats their pointers as roots: it copies and promotes the
// young transactions they held, dead as they are (bench/README.md, "Sixth
// and seventh sessions": at a thousand calls a second, most of what each
// scavenge still promoted). Here a deleted entry's slot is cleared in place
// (backward-shift deletion, no tombstones), so nothing dead stays
// reachable from an old array; new arrays come only when the table doubles.

const INITIAL_CAPACITY = 1024;

/** FNV-1a (32 bits) over a string's UTF-16 code units. */
function hashOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h | 0;
}

export class TransactionTable<T> {
  private keys: Array<string | undefined>;
  private values: Array<T | undefined>;
  private hashes: Int32Array;
  private mask: number;
  private count = 0;

  constructor(capacity = INITIAL_CAPACITY) {
    let cap = 16;
    while (cap < capacity) cap *= 2;
    this.keys = new Array<string | undefined>(cap).fill(undefined);
    this.values = new Array<T | undefined>(cap).fill(undefined);
    this.hashes = new Int32Array(cap);
    this.mask = cap - 1;
  }

  get size(): number {
    return this.count;
  }

  get(key: string): T | undefined {
    const i = this.find(key, hashOf(key));
    return i < 0 ? undefined : this.values[i];
  }

  has(key: string): boolean {
    return this.find(key, hashOf(key)) >= 0;
  }

  /** Adds or replaces the entry for `key`. */
  set(key: string, value: T): void {
    const hash = hashOf(key);
    const found = this.find(key, hash);
    if (found >= 0) {
      this.values[found] = value;
      return;
    }
    // At most half full: probes stay short.
    if (2 * (this.count + 1) > this.mask + 1) this.grow();
    const keys = this.keys;
    const mask = this.mask;
    let i = hash & mask;
    while (keys[i] !== undefined) i = (i + 1) & mask;
    keys[i] = key;
    this.values[i] = value;
    this.hashes[i] = hash;
    this.count++;
  }

  delete(key: string): boolean {
    const i = this.find(key, hashOf(key));
    if (i < 0) return false;
    this.removeAt(i);
    return true;
  }

  /** Deletes the entry for `key` only when it holds `value`: one lookup for the layer's "if it is still mine". */
  deleteIf(key: string, value: T): boolean {
    const i = this.find(key, hashOf(key));
    if (i < 0 || this.values[i] !== value) return false;
    this.removeAt(i);
    return true;
  }

  /** The values, as a new array: for the rare walks (transport errors, shutdown). */
  snapshot(): T[] {
    const out: T[] = [];
    const keys = this.keys;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== undefined) out.push(this.values[i] as T);
    return out;
  }

  clear(): void {
    this.keys.fill(undefined);
    this.values.fill(undefined);
    this.count = 0;
  }

  private find(key: string, hash: number): number {
    const keys = this.keys;
    const hashes = this.hashes;
    const mask = this.mask;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const k = keys[i];
      if (k === undefined) return -1;
      if (hashes[i] === hash && k === key) return i;
    }
  }

  /** Empties slot `at`, shifting back the entries after it (no tombstones). */
  private removeAt(at: number): void {
    let i = at;
    const keys = this.keys;
    const values = this.values;
    const hashes = this.hashes;
    const mask = this.mask;
    // Backward shift: move each later entry of the run into the hole when its home allows.
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const k = keys[j];
      if (k === undefined) break;
      const home = hashes[j] & mask;
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        keys[i] = k;
        values[i] = values[j];
        hashes[i] = hashes[j];
        i = j;
      }
    }
    keys[i] = undefined;
    values[i] = undefined;
    this.count--;
  }

  private grow(): void {
    const keys = this.keys;
    const values = this.values;
    const hashes = this.hashes;
    const cap = 2 * keys.length;
    this.keys = new Array<string | undefined>(cap).fill(undefined);
    this.values = new Array<T | undefined>(cap).fill(undefined);
    this.hashes = new Int32Array(cap);
    this.mask = cap - 1;
    for (let j = 0; j < keys.length; j++) {
      const k = keys[j];
      if (k === undefined) continue;
      let i = hashes[j] & this.mask;
      while (this.keys[i] !== undefined) i = (i + 1) & this.mask;
      this.keys[i] = k;
      this.values[i] = values[j];
      this.hashes[i] = hashes[j];
    }
  }
}
