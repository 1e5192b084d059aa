// The location store in process memory: Maps, lost on restart (phones
// re-register within their refresh interval, so a restart costs at most one
// interval of unreachability).
//
// Atomicity comes free: update() reads, calls fn and writes without an
// await in between, so nothing else runs on the event loop meanwhile.

import { domainOfAor, instanceKey } from './aor.js';
import { NO_PARAMS, NO_STRINGS, setParam } from './plan.js';
import type {
  Binding,
  BindingCounts,
  ChangeSet,
  GruuRef,
  GruuResolution,
  LocationStore,
  UpdateDecision,
  UpdateOutcome,
} from './location-store.js';

export interface MemoryLocationStoreOptions {
  /**
   * How long a GRUU is remembered after its binding ended, so that it still
   * resolves to 'expired' (480) rather than null (404). Default 7 days.
   */
  retiredGruuTtlMs?: number;
  /** Most retired GRUUs remembered; the oldest are forgotten first. Default 100000. */
  maxRetiredGruus?: number;
}

const DAY_MS = 86_400_000;

export class MemoryLocationStore implements LocationStore {
  /**
   * AOR → its bindings: the binding itself when there is one (most AORs: a
   * door station, a phone), else an array of exactly their number. An AOR
   * has a handful (registrar.max-bindings, 10 by default), so a small array
   * searched by key costs less memory than a Map per AOR (about 150 bytes
   * per AOR fewer), and no array at all 56 bytes fewer again. An AOR with no
   * binding has no entry. Entries are never changed in place: a change
   * stores a new one (the caller of update() gets copies either way).
   */
  private readonly aors = new Map<string, Entry>();
  /** temp-gruu token → where its binding is. */
  private readonly tempIndex = new Map<string, { aor: string; key: string }>();
  /**
   * GRUUs whose binding ended → until when they are remembered. Keys:
   * `t <token>` and `p <aor> <instance key>`. Insertion order is retirement
   * order, so the oldest are at the front.
   */
  private readonly retired = new Map<string, number>();
  private readonly retiredTtlMs: number;
  private readonly maxRetired: number;

  constructor(opts: MemoryLocationStoreOptions = {}) {
    this.retiredTtlMs = opts.retiredGruuTtlMs ?? 7 * DAY_MS;
    this.maxRetired = opts.maxRetiredGruus ?? 100_000;
  }

  async get(aor: string, now: number): Promise<Binding[]> {
    return this.getNow(aor, now);
  }

  /** get() without the Promise: this store never waits. */
  getNow(aor: string, now: number): Binding[] {
    return liveOf(this.aors.get(aor), now);
  }

  async update<R>(aor: string, now: number, fn: (current: readonly Binding[]) => UpdateDecision<R>): Promise<UpdateOutcome<R>> {
    return this.updateNow(aor, now, fn, null);
  }

  /**
   * update() without the Promise: this store never waits. `applied`, when
   * given, gets the change set that was applied (null: none), for a store
   * built on this one (SQLite queues those changes for its file).
   */
  updateNow<R>(aor: string, now: number, fn: (current: readonly Binding[]) => UpdateDecision<R>, applied: { changes: ChangeSet | null } | null = null): UpdateOutcome<R> {
    // The AOR is looked up here (in a table of 100,000 AORs the first lookup
    // misses the cache), again only after a purge or a change.
    let entry = this.aors.get(aor);
    let expired = NONE_REMOVED;
    // The usual case, one live binding: nothing to drop, nothing allocated.
    if (entry !== undefined && (Array.isArray(entry) || entry.expiresAt <= now)) {
      expired = this.purge(aor, entry, now);
      if (expired !== NONE_REMOVED) entry = this.aors.get(aor);
    }
    // What the purge left is live; a copy, which the caller may keep.
    const decision = fn(copyOf(entry));
    let removed = NONE_REMOVED;
    if (decision.changes !== null) {
      removed = this.apply(aor, copyOf(entry), decision.changes, now);
      entry = this.aors.get(aor);
    }
    if (applied !== null) applied.changes = decision.changes;
    return { result: decision.result, bindings: liveOf(entry, now), removed, expired };
  }

  async remove(aor: string, key: string, now: number): Promise<Binding | null> {
    const set = listOf(this.aors.get(aor));
    const b = byKey(set, key);
    if (b === undefined) return null;
    this.retireGruus(b, now);
    this.store(aor, set.filter((x) => x !== b));
    return b;
  }

  async sweep(now: number): Promise<Binding[]> {
    const out: Binding[] = [];
    for (const aor of [...this.aors.keys()]) {
      const entry = this.aors.get(aor);
      if (entry !== undefined) for (const b of this.purge(aor, entry, now)) out.push(b);
    }
    for (const [k, until] of this.retired) {
      if (until > now) break; // the rest were retired later
      this.retired.delete(k);
    }
    return out;
  }

  async count(now: number): Promise<BindingCounts> {
    const counts: BindingCounts = { aors: 0, bindings: 0, byDomain: {} };
    for (const [aor, entry] of this.aors) {
      let n = 0;
      for (const b of listOf(entry)) if (b.expiresAt > now) n++;
      if (n === 0) continue;
      counts.aors++;
      counts.bindings += n;
      const d = domainOfAor(aor);
      counts.byDomain[d] = (counts.byDomain[d] ?? 0) + n;
    }
    return counts;
  }

  async findByGruu(ref: GruuRef, now: number): Promise<GruuResolution> {
    if (ref.kind === 'temp') {
      const at = this.tempIndex.get(ref.token);
      if (at !== undefined) {
        const b = byKey(listOf(this.aors.get(at.aor)), at.key);
        if (b !== undefined) return b.expiresAt > now ? b : 'expired';
      }
      return this.isRetired('t ' + ref.token, now) ? 'expired' : null;
    }
    const want = instanceKey(ref.instance);
    let best: Binding | null = null;
    let ended = false;
    for (const b of listOf(this.aors.get(ref.aor))) {
      if (b.gruu === null || instanceKey(b.gruu.pub) !== want) continue;
      if (b.expiresAt <= now) ended = true;
      else if (best === null || b.updatedAt > best.updatedAt) best = b;
    }
    if (best !== null) return best;
    return ended || this.isRetired(pubKey(ref.aor, ref.instance), now) ? 'expired' : null;
  }

  async close(): Promise<void> {
    this.aors.clear();
    this.tempIndex.clear();
    this.retired.clear();
  }

  // ---- internals ----

  /** Drops the expired bindings of the AOR's `entry`; returns them (a shared empty array when none: the usual case, it is never written to). */
  private purge(aor: string, entry: Entry, now: number): Binding[] {
    if (!Array.isArray(entry) && entry.expiresAt > now) return NONE_REMOVED;
    const set = listOf(entry);
    let out: Binding[] | null = null;
    for (let i = 0; i < set.length; i++) if (set[i].expiresAt <= now) (out ??= []).push(set[i]);
    if (out === null) return NONE_REMOVED;
    for (const b of out) this.retireGruus(b, now);
    this.store(aor, set.filter((b) => b.expiresAt > now));
    return out;
  }

  /**
   * The AOR's entry from its bindings: none, the binding itself, or the
   * array (of exactly their number). A new AOR is keyed by its binding's
   * own copy of the AOR string (the caller's may be a concatenation or a
   * slice of the request): one string per AOR, shared with its bindings. An
   * existing key stays.
   */
  private store(aor: string, set: readonly Binding[]): void {
    if (set.length === 0) this.aors.delete(aor);
    else this.aors.set(set[0].aor, set.length === 1 ? set[0] : (set as Binding[]));
  }

  /** Applies `changes` to `set` (a copy of the AOR's live bindings), stores the result; returns the bindings removed. */
  private apply(aor: string, set: Binding[], changes: ChangeSet, now: number): Binding[] {
    let removed: Binding[] = NONE_REMOVED;
    const remove = changes.remove;
    if (set.length > 0 && remove !== undefined) {
      for (let i = 0; i < remove.length; i++) {
        const b = byKey(set, remove[i]);
        if (b === undefined) continue;
        this.retireGruus(b, now);
        set = set.filter((x) => x !== b);
        if (removed === NONE_REMOVED) removed = [];
        removed.push(b);
      }
    }
    const put = changes.put ?? NO_BINDINGS;
    for (let i = 0; i < put.length; i++) {
      const b = put[i];
      if (b.aor !== aor) throw new Error(`binding for ${b.aor} put under ${aor}`);
      const old = byKey(set, b.key);
      const kept = b.gruu?.temp ?? NO_TOKENS;
      if (old !== undefined && old.gruu != null) {
        // Tokens the new version no longer carries have ended.
        for (const t of old.gruu.temp) {
          if (kept.includes(t)) continue;
          this.tempIndex.delete(t);
          this.retire('t ' + t, now);
        }
      }
      const frozen = freezeBinding(b);
      // A new array of exactly the new length: one grown by push() reserves 17 slots.
      if (old === undefined) set = set.concat(frozen);
      else set[set.indexOf(old)] = frozen;
      for (let k = 0; k < kept.length; k++) this.tempIndex.set(kept[k], { aor: frozen.aor, key: frozen.key });
    }
    this.store(aor, set);
    return removed;
  }

  /** A binding left its AOR: its GRUUs are retired. */
  private retireGruus(b: Binding, now: number): void {
    if (b.gruu === null) return;
    for (const t of b.gruu.temp) {
      this.tempIndex.delete(t);
      this.retire('t ' + t, now);
    }
    this.retire(pubKey(b.aor, b.gruu.pub), now);
  }

  private retire(key: string, now: number): void {
    this.retired.delete(key); // re-inserted at the end: retirement order stays sorted
    this.retired.set(key, now + this.retiredTtlMs);
    while (this.retired.size > this.maxRetired) {
      const oldest = this.retired.keys().next().value as string;
      this.retired.delete(oldest);
    }
  }

  private isRetired(key: string, now: number): boolean {
    const until = this.retired.get(key);
    return until !== undefined && until > now;
  }
}

/** One binding, or the array of several (see MemoryLocationStore.aors). */
type Entry = Binding | Binding[];

/** An entry's bindings (a one-element array made for a single binding: reads are short-lived). */
function listOf(entry: Entry | undefined): readonly Binding[] {
  if (entry === undefined) return NO_BINDINGS;
  return Array.isArray(entry) ? entry : [entry];
}

/** The live bindings of an entry, as a new array. */
function liveOf(entry: Entry | undefined, now: number): Binding[] {
  if (entry === undefined) return [];
  if (!Array.isArray(entry)) return entry.expiresAt > now ? [entry] : [];
  const out: Binding[] = [];
  for (let i = 0; i < entry.length; i++) if (entry[i].expiresAt > now) out.push(entry[i]);
  return out;
}

/** A fresh array of an entry's bindings, the caller's to change. */
function copyOf(entry: Entry | undefined): Binding[] {
  if (entry === undefined) return [];
  return Array.isArray(entry) ? entry.slice() : [entry];
}

function byKey(set: readonly Binding[], key: string): Binding | undefined {
  for (let i = 0; i < set.length; i++) if (set[i].key === key) return set[i];
  return undefined;
}

function pubKey(aor: string, instance: string): string {
  return 'p ' + aor + ' ' + instanceKey(instance);
}

/**
 * Bindings are shared with callers: freeze them so that nobody changes the
 * store's copy by accident. Built property by property, not by spreading:
 * V8 gives each frozen copy of a spread object a hidden class of its own
 * (about 600 bytes per binding, measured with 100,000 bindings), while
 * objects built by assignment share theirs.
 */
function freezeBinding(b: Binding): Binding {
  if (Object.isFrozen(b)) return b;
  return Object.freeze({
    aor: b.aor,
    key: b.key,
    contact: b.contact,
    contactParams: freezeRecord(b.contactParams),
    expiresAt: b.expiresAt,
    q: b.q,
    callId: b.callId,
    cseq: b.cseq,
    instance: b.instance,
    regId: b.regId,
    path: b.path.length === 0 ? NO_PATH : Object.freeze(b.path.slice()),
    pushParams: freezeRecord(b.pushParams),
    source: b.source,
    userAgent: b.userAgent,
    registeredAt: b.registeredAt,
    updatedAt: b.updatedAt,
    gruu: b.gruu === null ? null : Object.freeze({ pub: b.gruu.pub, temp: Object.freeze(b.gruu.temp.slice()) }),
  });
}

const NO_TOKENS: readonly string[] = Object.freeze([]);
const NO_BINDINGS: readonly Binding[] = Object.freeze([]);
/**
 * What update() hands back as `removed` or `expired` when nothing was: one
 * frozen array (typed mutable for the interface; nobody may push to it).
 */
const NONE_REMOVED = Object.freeze([]) as unknown as Binding[];

// Most bindings have no Path and no extra parameters: they share these (as the registrar's plan does).
const NO_PATH = NO_STRINGS;

function freezeRecord<V>(r: Readonly<Record<string, V>>): Readonly<Record<string, V>> {
  if (r === NO_PARAMS) return r;
  const keys = Object.keys(r);
  if (keys.length === 0) return NO_PARAMS;
  const out: Record<string, V> = {};
  for (const k of keys) setParam(out, k, r[k]);
  return Object.freeze(out);
}
