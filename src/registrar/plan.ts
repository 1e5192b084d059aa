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
  const isStale = (b: Binding) => b.callId === ctx.callId && ctx.cseq <= b.cseq;

  if (contacts === 'star') {
    // §10.3 step 6: every binding goes, unless one was written by this very
    // Call-ID with a CSeq not lower: then the whole request fails.
    for (const b of current) if (isStale(b)) return { ok: false, reason: 'stale', binding: b };
    const removals = current.map((binding): Removal => ({ binding, cause: 'unregistered' }));
    return { ok: true, changes: { remove: current.map((b) => b.key) }, writes: [], removals };
  }

  const writes = new Map<string, Write>();
  const removals = new Map<string, Removal>();

  for (const { intent, expires } of contacts) {
    let existing = withKey(current, intent.key);
    // A device that registered this address without an instance before is
    // the same binding now that it names itself: take that one over rather
    // than fork calls to it twice.
    if (existing === null && intent.instance !== null) existing = withKey(current, 'u:' + intent.uriKey);
    if (existing !== null && isStale(existing)) return { ok: false, reason: 'stale', binding: existing };

    if (expires === 0) {
      writes.delete(intent.key);
      if (existing !== null) removals.set(existing.key, { binding: existing, cause: 'unregistered' });
      continue;
    }
    if (existing !== null && existing.key !== intent.key) removals.set(existing.key, { binding: existing, cause: 'replaced' });
    removals.delete(intent.key);
    writes.set(intent.key, { binding: buildBinding(intent, expires, existing, ctx), previous: existing });
  }

  if (writes.size > ctx.maxBindings) return { ok: false, reason: 'too-many' };
  // Over the limit: the bindings refreshed longest ago make room. The
  // newest registration is the device most likely to answer; a stale one
  // (a phone that rebooted onto a new port without an instance-id) would
  // otherwise lock its AOR out until it expired.
  let total = 0;
  for (const b of current) if (!removals.has(b.key) && !writes.has(b.key)) total++;
  total += writes.size;
  if (total > ctx.maxBindings) {
    const candidates = current.filter((b) => !removals.has(b.key) && !writes.has(b.key)).sort((a, b) => a.updatedAt - b.updatedAt);
    for (const b of candidates) {
      if (total <= ctx.maxBindings) break;
      removals.set(b.key, { binding: b, cause: 'evicted' });
      total--;
    }
  }

  const put = [...writes.values()].map((w) => w.binding);
  const remove = [...removals.keys()].filter((k) => !writes.has(k));
  return { ok: true, changes: { remove, put }, writes: [...writes.values()], removals: [...removals.values()] };
}

/** The binding with that key. An AOR has a few (registrar.max-bindings): a search costs less than building a Map. */
function withKey(bindings: readonly Binding[], key: string): Binding | null {
  for (const b of bindings) if (b.key === key) return b;
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

function ownRecord<V extends string | null>(r: Readonly<Record<string, V>>): Record<string, V> {
  const out: Record<string, V> = {};
  for (const k in r) {
    const v = r[k];
    out[own(k)] = (v === null ? v : own(v)) as V;
  }
  return out;
}

function buildBinding(intent: ContactIntent, expires: number, existing: Binding | null, ctx: PlanContext): Binding {
  let gruu: GruuData | null = null;
  if (intent.instance !== null) {
    // RFC 5627 (and as other registrars do it): temp-gruus handed out with
    // this Call-ID stay valid while the binding lives; a new Call-ID (the
    // UA restarted) invalidates them.
    const kept = existing?.gruu != null && existing.callId === ctx.callId ? existing.gruu.temp : [];
    const temp = ctx.issueTempGruu ? [...kept, ctx.mintToken()] : [...kept];
    gruu = { pub: own(instanceId(intent.instance)), temp: temp.slice(Math.max(0, temp.length - ctx.maxTempGruus)) };
  }
  return {
    aor: own(ctx.aor),
    key: own(intent.key),
    contact: own(intent.contact),
    contactParams: ownRecord(intent.params),
    expiresAt: ctx.now + expires * 1000,
    q: intent.q,
    callId: existing !== null && existing.callId === ctx.callId ? existing.callId : own(ctx.callId),
    cseq: ctx.cseq,
    instance: intent.instance === null ? null : own(intent.instance),
    regId: intent.regId,
    path: ctx.path.map(own),
    pushParams: ownRecord(intent.pushParams),
    source: ctx.source,
    userAgent: ctx.userAgent === null ? null : sharedAgent(ctx.userAgent),
    registeredAt: existing?.registeredAt ?? ctx.now,
    updatedAt: ctx.now,
    gruu,
  };
}
