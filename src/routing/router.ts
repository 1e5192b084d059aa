// Door-station routing: what a call to a served domain becomes. A door
// station dials one address (`100`, `ecole-jaures`); here that becomes a
// ring group's members, in parallel or one after the other, then its
// overflow when nobody answers or the school is closed; a number that
// belongs to the city's PBX goes there; and a door station that dials
// anything its policy does not allow is refused.
//
// The router decides; the proxy carries the decision out (src/proxy:
// Router, CallPlan). Nothing here touches a socket or the registrar.

import type { ExternalRoute, GroupConfig, PolicyConfig } from '../config/types.js';
import type { CallPlan, Caller, PlanMember, PlanStage, RouteDecision, Router } from '../proxy/proxy.js';
import { parseUri, type SipMessage, type Uri } from '../sip/index.js';
import { plainUser, RoutingNames, type Ref } from './names.js';
import { isOpen } from './schedule.js';

export interface RoutingSettings {
  domains: readonly string[];
  groups: Readonly<Record<string, GroupConfig>>;
  aliases: Readonly<Record<string, string>>;
  policy: PolicyConfig;
  routes: readonly ExternalRoute[];
}

export interface RouterOptions {
  /** The kind of an account (door or phone); undefined when it is not one (or there are no accounts). */
  kindOf(uri: Uri): 'door' | 'phone' | undefined;
  /** The clock for schedules, ms since the epoch; tests inject it. */
  now?: () => number;
}

/** How deep groups may nest or overflow into each other; the config check refuses loops, this bounds the rest. */
const MAX_DEPTH = 16;

interface CompiledRoute {
  match: RegExp;
  to: Uri;
  text: string;
}

export class DoorRouter implements Router {
  private readonly names: RoutingNames;
  private readonly routes: CompiledRoute[];
  private readonly now: () => number;

  /** Throws when the settings were not validated (config/routing.ts checks them at load). */
  constructor(
    private readonly settings: RoutingSettings,
    private readonly opts: RouterOptions,
  ) {
    this.names = new RoutingNames(settings.domains, Object.keys(settings.groups), settings.aliases);
    this.routes = settings.routes.map((r) => ({ match: new RegExp(r.match), to: parseUri(r.to) as Uri, text: r.to }));
    this.now = opts.now ?? Date.now;
  }

  route(req: SipMessage, target: Uri, caller: Caller): RouteDecision {
    const callerKind = caller.kind ?? (caller.authorised && req.isRequest ? this.fromKind(req) : undefined);
    const dialled = plainUser(target);
    const ref = caller.relay ? null : this.names.resolveUri(target);
    if (ref === null) {
      // Another domain, or a Route to another server: for a door station, that is calling out.
      return this.refuse(callerKind, 'routes', dialled || target.raw) ?? { kind: 'location', uri: null, why: 'another domain' };
    }
    const alias = this.names.isAlias(target);

    if (ref.kind === 'group') {
      const refused = this.refuse(callerKind, alias ? 'aliases' : 'groups', dialled);
      if (refused !== null) return refused;
      return { kind: 'plan', plan: this.plan(ref.name, alias ? `alias ${dialled} → group ${ref.name}` : `group ${ref.name}`) };
    }
    if (ref.kind === 'remote') {
      // An alias for an address elsewhere (the security desk's PBX extension).
      const refused = this.refuse(callerKind, 'aliases', dialled);
      if (refused !== null) return refused;
      return { kind: 'plan', plan: { label: `alias ${dialled} → ${ref.uri}`, stages: [{ label: ref.uri, members: [{ uri: ref.uri, local: false }], ringMs: null, overflow: false }] } };
    }
    const aorUri = alias ? parseUri(ref.uri) : target;
    const kind = aorUri === null ? undefined : this.opts.kindOf(aorUri);
    if (kind === undefined && !alias) {
      // Not an account: perhaps a number that belongs to the PBX.
      const r = this.routes.find((x) => x.match.test(dialled));
      if (r !== undefined) {
        if (!caller.authorised) return { kind: 'refuse', code: 403, reason: 'Relaying Not Allowed', why: `route ${r.match.source} needs an authenticated caller` };
        const refused = this.refuse(callerKind, 'routes', dialled);
        if (refused !== null) return refused;
        return { kind: 'external', route: r.to, why: `route ${r.match.source} → ${r.text}` };
      }
    }
    const refused = this.refuse(callerKind, alias ? 'aliases' : kind === 'door' ? 'doors' : 'phones', dialled);
    if (refused !== null) return refused;
    if (alias) return { kind: 'location', uri: aorUri, why: `alias ${dialled} → ${ref.uri}` };
    return { kind: 'location', uri: null, why: 'account' };
  }

  /** The caller's kind when no account authenticated (a trusted source): its From, if that is an account. */
  private fromKind(req: SipMessage): 'door' | 'phone' | undefined {
    try {
      return this.opts.kindOf(req.from().uri);
    } catch {
      return undefined;
    }
  }

  /** The policy's answer for a caller of this kind calling this kind of target; null: allowed. */
  private refuse(callerKind: 'door' | 'phone' | undefined, target: 'groups' | 'aliases' | 'phones' | 'doors' | 'routes', dialled: string): RouteDecision | null {
    const p = this.settings.policy;
    if (callerKind === 'door') {
      if (p.doorsMayCall === 'any' || p.doorsMayCall.includes(target)) return null;
      return { kind: 'refuse', code: 403, reason: 'Not Allowed From A Door Station', why: `policy: doors may not call ${target} (dialled ${dialled})` };
    }
    if (callerKind === 'phone') {
      if (target === 'phones' && !p.phonesMayCallPhones) return { kind: 'refuse', code: 403, reason: 'Calls Between Phones Not Allowed', why: `policy: phones may not call phones (dialled ${dialled})` };
      if (target === 'doors' && !p.phonesMayCallDoors) return { kind: 'refuse', code: 403, reason: 'Calls To Door Stations Not Allowed', why: `policy: phones may not call doors (dialled ${dialled})` };
    }
    // A trusted source that is not an account (a PBX) and unauthenticated demo setups: no policy.
    return null;
  }

  /** The stages of a call to a group, as the clock stands now: its members if open, then its overflow. */
  plan(name: string, label: string): CallPlan {
    const now = this.now();
    const stages: PlanStage[] = [];
    const why: string[] = [];
    let current: string | null = name;
    for (let depth = 0; current !== null && depth < MAX_DEPTH; depth++) {
      const g: GroupConfig = this.settings.groups[current];
      const ringMs = g.ringTime * 1000;
      const open = isOpen(g.schedule, g.timezone, now);
      const overflow = depth > 0;
      why.push(`${current} ${open ? 'open' : 'closed'}`);
      if (open) {
        const members = this.members(current, [current]);
        if (g.strategy === 'parallel') stages.push({ label: current, members, ringMs, overflow });
        else for (const m of members) stages.push({ label: `${current}: ${m.uri}`, members: [m], ringMs, overflow });
      }
      current = null;
      if (g.overflow !== null) {
        const o: Ref = this.names.resolve(g.overflow);
        if (o.kind === 'group') current = o.name;
        else stages.push({ label: `overflow ${o.uri}`, members: [{ uri: o.uri, local: o.kind === 'local' }], ringMs: null, overflow: true });
      }
    }
    return { label: `${label} (${why.join(', ')})`, stages };
  }

  /** A group's members, nested groups flattened, each address once. */
  private members(name: string, path: string[]): PlanMember[] {
    const out: PlanMember[] = [];
    const seen = new Set<string>();
    const add = (m: PlanMember) => {
      if (seen.has(m.uri)) return;
      seen.add(m.uri);
      out.push(m);
    };
    for (const text of this.settings.groups[name].members) {
      const r = this.names.resolve(text, name);
      if (r.kind === 'group') {
        if (path.includes(r.name) || path.length > MAX_DEPTH) continue;
        for (const m of this.members(r.name, [...path, r.name])) add(m);
      } else add({ uri: r.uri, local: r.kind === 'local' });
    }
    return out;
  }
}
