// RFC 3261 §10.3 steps 6 and 7: what one REGISTER does to the bindings an
// AOR has. A pure function of the current bindings, so that the store can
// run it inside its atomic update (and re-run it, if it must).

import type { Source } from '../transport/types.js';
import { instanceId } from './aor.js';
import type { ContactIntent } from './contact.js';
import type { Binding, ChangeSet, GruuData } from './location-store.js';

export interface PlanContext {
  aor: string;
  callId: string;
  cseq: number;
  now: number;
  source: Source;
  userAgent: string | null;
  path: readonly string[];
  /** True when the REGISTER has Supported: gruu: each instance Contact gets a new temp-gruu. */
  issueTempGruu: boolean;
  /** Most temp-gruus kept per binding; the oldest go first. */
  maxTempGruus: number;
  /** Most bindings per AOR. */
  maxBindings: number;
  mintToken(): string;
}

/** A Contact of the REGISTER with the expiry the registrar grants, in seconds; 0 removes. */
export interface GrantedContact {
  intent: ContactIntent;
  expires: number;
}

/**
 * Why a binding goes: the UA removed it (expires 0 or `*`), another binding
 * of the same device took its place (same instance, other key), it was the
 * oldest when the AOR had too many.
 */
export type RemovalCause = 'unregistered' | 'replaced' | 'evicted';

export interface Removal {
  binding: Binding;
  cause: RemovalCause;
}

export interface Write {
  binding: Binding;
  /** The binding this one refreshes or supersedes; null for a new device. */
  previous: Binding | null;
}

export type Plan =
  | { ok: true; changes: ChangeSet; writes: Write[]; removals: Removal[] }
  /** §10.3 step 7: same Call-ID, CSeq not higher: the request is out of order and fails. */
  | { ok: false; reason: 'stale'; binding: Binding }
  /** The request alone holds more Contacts than an AOR may have. */
  | { ok: false; reason: 'too-many' };

/** `contacts` is the REGISTER's Contacts, or 'star' for `Contact: *` (with Expires: 0, checked before). */
export function planRegister(current: readonly Binding[], contacts: readonly GrantedContact[] | 'star', ctx: PlanContext): Plan {
  if (contacts === 'star') {
    // §10.3 step 6: every binding goes, unless one was written by this very
    // Call-ID with a CSeq not lower: then the whole request fails.
    for (const b of current) if (isStale(b, ctx)) return { ok: false, reason: 'stale', binding: b };
    const removals: Removal[] = [];
    const keys: string[] = [];
    for (const binding of current) {
      removals.push({ binding, cause: 'unregistered' });
      keys.push(binding.key);
    }
    return { ok: true, changes: { remove: keys }, writes: [], removals };
  }

  // By key, in the order first written (an AOR has a few: arrays searched by key cost less than Maps).
  const writes: Write[] = [];
  const removals: Removal[] = [];

  for (let c = 0; c < contacts.length; c++) {
    const { intent, expires } = contacts[c];
    let existing = withKey(current, intent.key);
    // A device that registered this address without an instance before is
    // the same binding now that it names itself: take that one over rather
    // than fork calls to it twice.
    if (existing === null && intent.instance !== null) existing = withUriKey(current, intent.uriKey);
    if (existing !== null && isStale(existing, ctx)) return { ok: false, reason: 'stale', binding: existing };

    if (expires === 0) {
      const w = writeAt(writes, intent.key);
      if (w >= 0) writes.splice(w, 1);
      if (existing !== null) setRemoval(removals, existing, 'unregistered');
      continue;
    }
    if (existing !== null && existing.key !== intent.key) setRemoval(removals, existing, 'replaced');
    const r = removalAt(removals, intent.key);
    if (r >= 0) removals.splice(r, 1);
    const write: Write = { binding: buildBinding(intent, expires, existing, ctx), previous: existing };
    const w = writeAt(writes, intent.key);
    if (w >= 0) writes[w] = write;
    else writes.push(write);
  }

  if (writes.length > ctx.maxBindings) return { ok: false, reason: 'too-many' };
  // Over the limit: the bindings refreshed longest ago make room. The
  // newest registration is the device most likely to answer; a stale one
  // (a phone that rebooted onto a new port without an instance-id) would
  // otherwise lock its AOR out until it expired.
  let total = writes.length;
  for (let i = 0; i < current.length; i++) if (removalAt(removals, current[i].key) < 0 && writeAt(writes, current[i].key) < 0) total++;
  if (total > ctx.maxBindings) {
    const candidates = current.filter((b) => removalAt(removals, b.key) < 0 && writeAt(writes, b.key) < 0).sort((a, b) => a.updatedAt - b.updatedAt);
    for (const b of candidates) {
      if (total <= ctx.maxBindings) break;
      removals.push({ binding: b, cause: 'evicted' });
      total--;
    }
  }

  const put: Binding[] = [];
  for (let i = 0; i < writes.length; i++) put.push(writes[i].binding);
  const remove: string[] = [];
  for (let i = 0; i < removals.length; i++) {
    const k = removals[i].binding.key;
    if (writeAt(writes, k) < 0) remove.push(k);
  }
  return { ok: true, changes: { remove, put }, writes, removals };
}

/** §10.3 step 7: a binding written by this Call-ID with a CSeq not lower than the request's. */
function isStale(b: Binding, ctx: PlanContext): boolean {
  return b.callId === ctx.callId && ctx.cseq <= b.cseq;
}

function writeAt(writes: readonly Write[], key: string): number {
  for (let i = 0; i < writes.length; i++) if (writes[i].binding.key === key) return i;
  return -1;
}

function removalAt(removals: readonly Removal[], key: string): number {
  for (let i = 0; i < removals.length; i++) if (removals[i].binding.key === key) return i;
  return -1;
}

/** As Map.set by the binding's key: a removal already listed keeps its place and takes the new cause. */
function setRemoval(removals: Removal[], binding: Binding, cause: RemovalCause): void {
  const i = removalAt(removals, binding.key);
  if (i >= 0) removals[i] = { binding, cause };
  else removals.push({ binding, cause });
}

/** The binding with that key. An AOR has a few (registrar.max-bindings): a search costs less than building a Map. */
function withKey(bindings: readonly Binding[], key: string): Binding | null {
  for (let i = 0; i < bindings.length; i++) if (bindings[i].key === key) return bindings[i];
  return null;
}

/** The binding keyed `u:` + uriKey (bound without an instance), without building that key. */
function withUriKey(bindings: readonly Binding[], uriKey: string): Binding | null {
  for (let i = 0; i < bindings.length; i++) {
    const k = bindings[i].key;
    if (k.length === uriKey.length + 2 && k.charCodeAt(0) === 0x75 && k.charCodeAt(1) === 0x3a && k.endsWith(uriKey)) return bindings[i];
  }
  return null;
}

// Where own() copies through: one buffer for every copy, not one each.
const SCRATCH = Buffer.allocUnsafeSlow(4096);

/**
 * A copy of `s` that does not share memory with the message it was cut
 * from. V8 keeps a substring as a view of its parent: a binding holding the
 * Call-ID would keep the whole REGISTER text alive (about 1 KB) for as long
 * as the registration lasts. Through octets, so that the copy is a string of
 * its own (a slice of a concatenation would still be a view, of a smaller one).
 */
function own(s: string): string {
  if (s.length === 0) return s;
  if (s.length > SCRATCH.length) return Buffer.from(s, 'latin1').toString('latin1');
  return SCRATCH.toString('latin1', 0, SCRATCH.write(s, 0, 'latin1'));
}

/**
 * One copy per distinct User-Agent: a city's devices run a handful of apps
 * and firmwares, so thousands of bindings share a few strings. Bounded: past
 * MAX_AGENTS distinct values new ones are simply copied.
 */
const agents = new Map<string, string>();
const MAX_AGENTS = 1000;

function sharedAgent(ua: string): string {
  const known = agents.get(ua);
  if (known !== undefined) return known;
  const copy = own(ua);
  if (agents.size < MAX_AGENTS) agents.set(copy, copy);
  return copy;
}

/** Shared by the bindings that have no such parameters or Path (frozen, as the store keeps bindings). */
export const NO_PARAMS: Readonly<Record<string, never>> = Object.freeze({});
export const NO_STRINGS: readonly string[] = Object.freeze([]);

/**
 * `out[key] = value` for a record of parameters, where a key is whatever a
 * device wrote: a Contact parameter named `__proto__` becomes an own
 * property, as JSON.parse makes it, instead of replacing the record's
 * prototype (and being lost) through the `__proto__` setter.
 */
export function setParam<V>(out: Record<string, V>, key: string, value: V): void {
  if (key === '__proto__') Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  else out[key] = value;
}

/** A frozen copy of `r` that shares nothing with the message; NO_PARAMS when empty. */
function ownRecord<V extends string | null>(r: Readonly<Record<string, V>>): Readonly<Record<string, V>> {
  let out: Record<string, V> | null = null;
  for (const k in r) {
    const v = r[k];
    setParam((out ??= {}), own(k), (v === null ? v : own(v)) as V);
  }
  return out === null ? NO_PARAMS : Object.freeze(out);
}

/** Whether two records hold the same names and values (in any order). */
function sameRecord<V extends string | null>(a: Readonly<Record<string, V>>, b: Readonly<Record<string, V>>): boolean {
  for (const k in a) if (!Object.prototype.hasOwnProperty.call(b, k) || a[k] !== b[k]) return false;
  for (const k in b) if (!Object.prototype.hasOwnProperty.call(a, k)) return false;
  return true;
}

function samePath(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether two Sources name the same flow (the same connection for a stream). */
function sameSource(a: Source, b: Source): boolean {
  if (a === b) return true;
  const al = a.local;
  const bl = b.local;
  return (
    a.protocol === b.protocol &&
    a.address === b.address &&
    a.port === b.port &&
    a.family === b.family &&
    a.connectionId === b.connectionId &&
    (al === bl || (al.protocol === bl.protocol && al.address === bl.address && al.port === bl.port))
  );
}

/**
 * The binding a Contact of the REGISTER makes, frozen (the store keeps it
 * as it is). A refresh reuses what the binding it replaces already holds
 * when it is unchanged (strings, parameter records, the Path, the Source):
 * the new binding then allocates little, and what the request brought dies
 * young instead of being copied into the long-lived binding.
 */
function buildBinding(intent: ContactIntent, expires: number, existing: Binding | null, ctx: PlanContext): Binding {
  let gruu: GruuData | null = null;
  if (intent.instance !== null) {
    // RFC 5627 (and as other registrars do it): temp-gruus handed out with
    // this Call-ID stay valid while the binding lives; a new Call-ID (the
    // UA restarted) invalidates them.
    const kept = existing?.gruu != null && existing.callId === ctx.callId ? existing.gruu.temp : NO_STRINGS;
    const temp = ctx.issueTempGruu ? [...kept, ctx.mintToken()] : [...kept];
    const pub = existing?.gruu != null && existing.gruu.pub === instanceId(intent.instance) ? existing.gruu.pub : own(instanceId(intent.instance));
    gruu = Object.freeze({ pub, temp: Object.freeze(temp.slice(Math.max(0, temp.length - ctx.maxTempGruus))) });
  }
  const ua = ctx.userAgent;
  const path = ctx.path;
  return Object.freeze({
    aor: existing !== null && existing.aor === ctx.aor ? existing.aor : own(ctx.aor),
    key: existing !== null && existing.key === intent.key ? existing.key : own(intent.key),
    contact: existing !== null && existing.contact === intent.contact ? existing.contact : own(intent.contact),
    contactParams: existing !== null && sameRecord(existing.contactParams, intent.params) ? existing.contactParams : ownRecord(intent.params),
    expiresAt: ctx.now + expires * 1000,
    q: intent.q,
    callId: existing !== null && existing.callId === ctx.callId ? existing.callId : own(ctx.callId),
    cseq: ctx.cseq,
    instance: intent.instance === null ? null : existing !== null && existing.instance === intent.instance ? existing.instance : own(intent.instance),
    regId: intent.regId,
    path: existing !== null && samePath(existing.path, path) ? existing.path : path.length === 0 ? NO_STRINGS : Object.freeze(path.map(own)),
    pushParams: existing !== null && sameRecord(existing.pushParams, intent.pushParams) ? existing.pushParams : ownRecord(intent.pushParams),
    source: existing !== null && sameSource(existing.source, ctx.source) ? existing.source : ctx.source,
    userAgent: ua === null ? null : existing !== null && existing.userAgent === ua ? existing.userAgent : sharedAgent(ua),
    registeredAt: existing?.registeredAt ?? ctx.now,
    updatedAt: ctx.now,
    gruu,
  });
}
