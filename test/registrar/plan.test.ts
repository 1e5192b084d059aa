// The registrar's plan (RFC 3261 §10.3 steps 6-7) against a reference
// written the plain way (Maps keyed by binding key, as it was first
// written), on generated bindings and Contacts; and what a refresh keeps of
// the binding it replaces (the same strings and records: nothing new to
// keep alive), frozen as the store holds it.
import fc from 'fast-check';
import t from 'tap';
import { MemoryLocationStore, Registrar, type Binding } from '../../src/registrar/index.js';
import type { ContactIntent } from '../../src/registrar/contact.js';
import { planRegister, type GrantedContact, type PlanContext } from '../../src/registrar/plan.js';
import type { Uri } from '../../src/sip/index.js';
import { Clock, DOMAIN, register, udpSource } from './helpers.js';
import { binding } from './store-contract.js';

const AOR = 'sip:alice@' + DOMAIN;

function intent(key: string, uriKey: string): ContactIntent {
  const instance = key.startsWith('i:') ? '<urn:uuid:' + key.slice(2, key.indexOf('|')) + '>' : null;
  return { key, uriKey, contact: 'sip:' + uriKey, uri: null as unknown as Uri, params: {}, requested: 60, q: 1, instance, regId: null, pushParams: {} };
}

type Summary =
  | { ok: false; reason: string; key?: string }
  | { ok: true; writes: Array<[string, string | null]>; removals: Array<[string, string]>; remove: string[]; put: string[] };

/** planRegister as first written (Maps), summarised. */
function reference(current: readonly Binding[], contacts: readonly GrantedContact[], ctx: PlanContext): Summary {
  const isStale = (b: Binding) => b.callId === ctx.callId && ctx.cseq <= b.cseq;
  const find = (key: string) => current.find((b) => b.key === key) ?? null;
  const writes = new Map<string, Binding | null>();
  const removals = new Map<string, { binding: Binding; cause: string }>();
  for (const { intent, expires } of contacts) {
    let existing = find(intent.key);
    if (existing === null && intent.instance !== null) existing = find('u:' + intent.uriKey);
    if (existing !== null && isStale(existing)) return { ok: false, reason: 'stale', key: existing.key };
    if (expires === 0) {
      writes.delete(intent.key);
      if (existing !== null) removals.set(existing.key, { binding: existing, cause: 'unregistered' });
      continue;
    }
    if (existing !== null && existing.key !== intent.key) removals.set(existing.key, { binding: existing, cause: 'replaced' });
    removals.delete(intent.key);
    writes.set(intent.key, existing);
  }
  if (writes.size > ctx.maxBindings) return { ok: false, reason: 'too-many' };
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
  return {
    ok: true,
    writes: [...writes].map(([k, prev]) => [k, prev === null ? null : prev.key]),
    removals: [...removals.values()].map((r) => [r.binding.key, r.cause]),
    remove: [...removals.keys()].filter((k) => !writes.has(k)),
    put: [...writes.keys()],
  };
}

function summary(current: readonly Binding[], contacts: readonly GrantedContact[], ctx: PlanContext): Summary {
  const p = planRegister(current, contacts, ctx);
  if (!p.ok) return p.reason === 'stale' ? { ok: false, reason: 'stale', key: p.binding.key } : { ok: false, reason: 'too-many' };
  return {
    ok: true,
    writes: p.writes.map((w) => [w.binding.key, w.previous === null ? null : w.previous.key]),
    removals: p.removals.map((r) => [r.binding.key, r.cause]),
    remove: [...(p.changes.remove ?? [])],
    put: (p.changes.put ?? []).map((b) => b.key),
  };
}

t.test('planRegister decides what the Map-based reference decides', async (t) => {
  // Keys that collide on purpose: u:A is also the address instance X's Contact names.
  const keyOf = fc.constantFrom('u:A', 'u:B', 'u:C', 'i:X|1', 'i:X|2', 'i:Y|');
  const uriKeyFor: Record<string, string> = { 'u:A': 'A', 'u:B': 'B', 'u:C': 'C', 'i:X|1': 'A', 'i:X|2': 'B', 'i:Y|': 'C' };
  const stored = fc.uniqueArray(fc.record({ key: keyOf, callId: fc.constantFrom('c1', 'c2'), cseq: fc.integer({ min: 1, max: 4 }), updatedAt: fc.integer({ min: 0, max: 5 }) }), {
    selector: (b) => b.key,
    maxLength: 5,
  });
  const contacts = fc.array(fc.record({ key: keyOf, expires: fc.constantFrom(0, 60) }), { maxLength: 5 });
  let n = 0;
  fc.assert(
    fc.property(stored, contacts, fc.constantFrom('c1', 'c2'), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 4 }), (bs, cs, callId, cseq, maxBindings) => {
      const current = bs.map((b) => binding(b.key, { callId: b.callId, cseq: b.cseq, updatedAt: b.updatedAt, expiresAt: 10_000_000, registeredAt: 0 }));
      const granted = cs.map((c) => ({ intent: intent(c.key, uriKeyFor[c.key]), expires: c.expires }));
      const ctx: PlanContext = {
        aor: AOR,
        callId,
        cseq,
        now: 1000,
        source: udpSource(),
        userAgent: 'ua',
        path: [],
        issueTempGruu: true,
        maxTempGruus: 4,
        maxBindings,
        mintToken: () => 'tok' + n,
      };
      n++;
      t.same(summary(current, granted, ctx), reference(current, granted, ctx));
    }),
    { numRuns: 3000 },
  );
});

t.test('a refresh keeps what did not change: the same strings, records and Source; the binding is frozen all through', async (t) => {
  const clock = new Clock();
  const store = new MemoryLocationStore();
  const registrar = new Registrar({ domains: [DOMAIN], sweepIntervalMs: 0 }, { store, now: clock.now });
  const written: Binding[] = [];
  registrar.on('registered', (b) => written.push(b));
  const contacts = ['<sip:alice@192.0.2.1:5060;transport=udp;pn-provider=fcm;pn-prid=tok>;+sip.instance="<urn:uuid:0001>";reg-id=1;+sip.x="a";expires=600'];
  t.equal((await registrar.register(register({ cseq: 1, contacts, extra: ['Path: <sip:edge.test;lr>'] }), udpSource())).status, 200);
  clock.advance(60);
  // The transport hands each datagram a Source of its own.
  t.equal((await registrar.register(register({ cseq: 2, contacts, extra: ['Path: <sip:edge.test;lr>'] }), udpSource())).status, 200);
  const [first, second] = written;
  t.not(first, second);
  for (const k of ['aor', 'key', 'contact', 'contactParams', 'callId', 'instance', 'path', 'pushParams', 'source', 'userAgent'] as const) t.equal(second[k], first[k], `${k}: the same object`);
  t.equal(second.gruu?.pub, first.gruu?.pub);
  t.equal(second.cseq, 2);
  t.equal(second.updatedAt, first.updatedAt + 60_000);
  t.same(second.gruu?.temp.length, 2, 'a temp-gruu per refresh with Supported: gruu');
  const [stored] = await store.get(AOR, clock.t);
  t.equal(stored, second, 'the store keeps the binding the plan wrote');
  for (const o of [second, second.contactParams, second.pushParams, second.path, second.gruu, second.gruu?.temp]) t.ok(Object.isFrozen(o), 'frozen');
  t.throws(() => {
    (second as { cseq: number }).cseq = 9;
  });

  // Something changed: that part is new, the rest still shared.
  clock.advance(60);
  const changed = [contacts[0].replace('+sip.x="a"', '+sip.x="b"').replace('pn-prid=tok', 'pn-prid=tok2')];
  t.equal((await registrar.register(register({ cseq: 3, contacts: changed }), udpSource('192.0.2.1', 5062))).status, 200);
  const third = written[2];
  t.not(third.contactParams, second.contactParams);
  t.same(third.contactParams, { '+sip.x': '"b"' });
  t.not(third.pushParams, second.pushParams);
  t.same(third.pushParams, { 'pn-provider': 'fcm', 'pn-prid': 'tok2' });
  t.not(third.source, second.source, 'another port: another Source');
  t.equal(third.source.port, 5062);
  t.same(third.path, [], 'no Path this time');
  t.equal(third.key, second.key);
  await registrar.close();
});

t.test('registrations are counted by domain, whichever domain came before', async (t) => {
  const clock = new Clock();
  const registrar = new Registrar({ domains: [DOMAIN, 'other.test', 'OTHER2.test'], sweepIntervalMs: 0 }, { now: clock.now });
  const order = [DOMAIN, 'other.test', 'other.test', DOMAIN, 'OTHER2.test', 'other2.test', DOMAIN];
  let i = 0;
  for (const domain of order) t.equal((await registrar.register(register({ domain, user: 'u' + i++ }), udpSource())).status, 200, domain);
  t.same(registrar.stats.registrations, { [DOMAIN]: 3, 'other.test': 2, 'other2.test': 2 });
  await registrar.close();
});
