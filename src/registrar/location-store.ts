// The location service (RFC 3261 §10): bindings of addresses-of-record to
// contact addresses, behind an interface that an in-memory, SQLite or Redis
// store can implement alike.
//
// Every method returns a Promise, so a store may do I/O. A store keeps no
// clock of its own: callers pass `now` (ms since the epoch), which keeps
// expiry exact and testable, and lets a shared store (Redis) serve several
// Portier processes without trusting each one's timers.

import type { Source } from '../transport/types.js';

/** GRUU state of a binding that has a +sip.instance (RFC 5627). */
export interface GruuData {
  /**
   * The `gr` value of the pub-gruu: the instance-id without its angle
   * brackets (`urn:uuid:...`). The pub-gruu is the AOR with `;gr=` this
   * value, so it is stable per AOR and instance.
   */
  readonly pub: string;
  /**
   * Tokens of the temp-gruus (`sip:tgruu.TOKEN@domain;gr`) valid now, oldest
   * first: a new one per registration with the same Call-ID, all dropped
   * when the Call-ID changes or the binding ends (RFC 5627).
   */
  readonly temp: readonly string[];
}

/**
 * One binding of an AOR to a contact. Plain data (JSON-serialisable), never
 * mutated: a refresh replaces the whole object.
 */
export interface Binding {
  /** Canonical AOR, `sip:user@domain` (see aorOf). */
  readonly aor: string;
  /**
   * What identifies the binding within its AOR: `i:<instance>|<reg-id>` when
   * the Contact had a +sip.instance (RFC 5626 §6: the device, whatever its
   * address), else `u:<contactKey>` (RFC 3261 §10.3 step 7).
   */
  readonly key: string;
  /** The Contact URI as registered (the text inside <>). */
  readonly contact: string;
  /** The other Contact header parameters as registered, null when valueless (q, expires, +sip.instance and reg-id have fields of their own). */
  readonly contactParams: Readonly<Record<string, string | null>>;
  /** When the binding ends, ms since the epoch. Live while expiresAt > now. */
  readonly expiresAt: number;
  /** 0 to 1, default 1 (RFC 3261 §20.10). */
  readonly q: number;
  readonly callId: string;
  readonly cseq: number;
  /** +sip.instance, unquoted but otherwise as written (`<urn:uuid:...>`); null when absent. */
  readonly instance: string | null;
  /** RFC 5626 reg-id; null when absent (or given without +sip.instance, where it means nothing). */
  readonly regId: number | null;
  /** Path header values of the REGISTER, top first (RFC 3327). */
  readonly path: readonly string[];
  /**
   * Push-notification parameters found on the Contact URI: RFC 8599
   * pn-provider, pn-prid, pn-param and every other pn-* parameter (Linphone's
   * pn-silent, pn-timeout, pn-msg-str... and the legacy pn-type, pn-tok),
   * plus Linphone's app-id. Values as written ('' when valueless).
   */
  readonly pushParams: Readonly<Record<string, string>>;
  /** The flow the REGISTER came on: requests to the contact go back down it. */
  readonly source: Source;
  readonly userAgent: string | null;
  /** When this binding was first created (kept across refreshes). */
  readonly registeredAt: number;
  /** When it was last written by a REGISTER. */
  readonly updatedAt: number;
  /** Null when the Contact had no +sip.instance. */
  readonly gruu: GruuData | null;
}

/** Changes to one AOR's bindings, applied together. */
export interface ChangeSet {
  /** Keys of bindings to remove. Applied before `put`. */
  remove?: readonly string[];
  /** Bindings to add, or to replace the binding with the same key. Their `aor` must be the AOR updated. */
  put?: readonly Binding[];
}

/** What an update function decides: the changes to apply (null: none) and a value handed back. */
export interface UpdateDecision<R> {
  changes: ChangeSet | null;
  result: R;
}

export interface UpdateOutcome<R> {
  result: R;
  /** The AOR's live bindings after the update. */
  bindings: Binding[];
  /** Bindings that the change set removed (by `remove`; not those replaced by `put`). */
  removed: Binding[];
  /** Bindings found expired (not swept yet) and dropped on the way. */
  expired: Binding[];
}

/** What a Request-URI with a `gr` parameter names (RFC 5627). */
export type GruuRef =
  /** `sip:tgruu.TOKEN@domain;gr` */
  | { kind: 'temp'; token: string }
  /** `sip:user@domain;gr=<instance-id>`: aor canonical, instance with or without <>. */
  | { kind: 'pub'; aor: string; instance: string };

/**
 * The binding a GRUU reaches; 'expired' when the GRUU was valid but its
 * binding has ended (a proxy answers 480 Temporarily Unavailable); null when
 * the store never issued it, or has forgotten it (404 Not Found).
 */
export type GruuResolution = Binding | 'expired' | null;

export interface BindingCounts {
  /** AORs with at least one live binding. */
  aors: number;
  /** Live bindings. */
  bindings: number;
  /** Live bindings per AOR domain. */
  byDomain: Record<string, number>;
}

export interface LocationStore {
  /** The AOR's live bindings (expiresAt > now), in no particular order. Expired ones are never returned, swept or not. */
  get(aor: string, now: number): Promise<Binding[]>;

  /**
   * Reads the AOR's live bindings, lets `fn` decide what to change, applies
   * that, atomically per AOR: no other update of the AOR is interleaved
   * between the read and the write. `fn` must be synchronous and free of side
   * effects: a store with optimistic concurrency (Redis compare-and-set) may run
   * it more than once and keep only the last decision.
   */
  update<R>(aor: string, now: number, fn: (current: readonly Binding[]) => UpdateDecision<R>): Promise<UpdateOutcome<R>>;

  /**
   * get() and update() without a Promise, on a store that never waits for
   * anything (memory, SQLite: its file is written behind): the registrar
   * then answers a REGISTER in the task that received it. Absent on a store
   * that does wait (Redis). They throw where the others reject.
   */
  getNow?(aor: string, now: number): Binding[];
  updateNow?<R>(aor: string, now: number, fn: (current: readonly Binding[]) => UpdateDecision<R>): UpdateOutcome<R>;

  /** Removes one binding (e.g. its flow failed); returns it, or null when there was none. */
  remove(aor: string, key: string, now: number): Promise<Binding | null>;

  /** Removes every binding expired at `now` and returns them. Also forgets GRUUs retired long enough ago. */
  sweep(now: number): Promise<Binding[]>;

  /** Live bindings and AORs, per domain. */
  count(now: number): Promise<BindingCounts>;

  /** The binding a GRUU reaches (see GruuResolution). A pub-gruu of several flows (reg-ids) gives the most recently refreshed. */
  findByGruu(ref: GruuRef, now: number): Promise<GruuResolution>;

  /** Releases resources (connections). The store is not used afterwards. */
  close(): Promise<void>;
}

export { MemoryLocationStore, type MemoryLocationStoreOptions } from './memory-store.js';
