// What the names in the routing configuration point at. A member, an
// overflow or an alias target is written as a group name, an account
// (`alice@example.test`, or `alice` in the first domain), or a SIP URI of
// another server (a PBX extension). Resolved once at load, so a typo or a
// cycle is found by `portier check`, not by the first visitor at the gate.

import { parseUri, type Uri } from '../sip/index.js';

export type Ref =
  /** A ring group, by name. */
  | { kind: 'group'; name: string }
  /** An address-of-record of a served domain: its registered devices. */
  | { kind: 'local'; uri: string }
  /** Elsewhere (a PBX): forwarded as it is. */
  | { kind: 'remote'; uri: string };

/** Names that may be dialled: letters, digits and `. _ - + * #`, starting with a letter or digit (what door stations and keypads send). */
const NAME = /^[A-Za-z0-9+*#][A-Za-z0-9._+*#-]*$/;

export function checkName(name: string): void {
  if (!NAME.test(name)) throw new Error(`"${name}" is not a name a door station can dial (letters, digits, . _ - + * #)`);
}

/** The user part of a SIP URI without its escapes (`%31%30%30` is `100`). */
export function plainUser(uri: Uri): string {
  const u = uri.user ?? '';
  if (!u.includes('%')) return u;
  try {
    return decodeURIComponent(u);
  } catch {
    return u;
  }
}

export class RoutingNames {
  private readonly domains: readonly string[];
  private readonly groups: ReadonlySet<string>;
  /** Alias → what it finally names (never another alias). */
  private readonly aliases = new Map<string, Ref>();

  /** Throws with a reason naming the alias when one cannot be resolved. */
  constructor(domains: readonly string[], groups: Iterable<string>, aliases: Readonly<Record<string, string>>) {
    this.domains = domains.map((d) => d.toLowerCase());
    this.groups = new Set(groups);
    const raw = new Map(Object.entries(aliases));
    for (const name of raw.keys()) {
      if (this.groups.has(name)) throw new Error(`aliases.${name}: is also the name of a group`);
      const seen = [name];
      let target = raw.get(name) as string;
      // An alias may name another alias; follow the chain, refusing loops.
      while (raw.has(target)) {
        if (seen.includes(target)) throw new Error(`aliases.${name}: aliases loop: ${[...seen, target].join(' → ')}`);
        seen.push(target);
        target = raw.get(target) as string;
      }
      try {
        this.aliases.set(name, this.resolveText(target, false));
      } catch (err) {
        throw new Error(`aliases.${name}: ${(err as Error).message}`);
      }
    }
  }

  /**
   * What a configured reference points at; throws with a reason. Among the
   * members of group `within`, that group's own name is the account of the
   * same name (group securite: {members: [securite]}): a group cannot contain itself.
   */
  resolve(text: string, within?: string): Ref {
    const r = this.resolveText(text, true);
    if (r.kind === 'group' && r.name === within) return { kind: 'local', uri: `sip:${r.name}@${this.domains[0]}` };
    return r;
  }

  private resolveText(text: string, aliases: boolean): Ref {
    const t = text.trim();
    if (t === '') throw new Error('is empty');
    if (!t.includes(':') && !t.includes('@')) {
      if (this.groups.has(t)) return { kind: 'group', name: t };
      if (aliases) {
        const a = this.aliases.get(t);
        if (a !== undefined) return a;
      }
      checkName(t);
      return { kind: 'local', uri: `sip:${t}@${this.domains[0]}` };
    }
    const uri = parseUri(/^(sips?|tel):/i.test(t) ? t : 'sip:' + t);
    if (uri === null || !uri.isSip || uri.user === null || uri.user === '') throw new Error(`"${t}" is not a group, an account (user@domain) or a SIP URI with a user part`);
    const named = this.resolveUri(uri);
    if (named !== null) return named;
    return { kind: 'remote', uri: uri.raw };
  }

  /** Whether a host is one of the served domains. */
  isDomain(host: string): boolean {
    return this.domains.includes(host.toLowerCase());
  }

  /**
   * A Request-URI (or configured URI) of a served domain: the group or alias
   * its user part names, or its address-of-record; null for other domains.
   */
  resolveUri(uri: Uri): Ref | null {
    if (!uri.isSip || !this.isDomain(uri.hostname)) return null;
    const user = plainUser(uri);
    if (this.groups.has(user)) return { kind: 'group', name: user };
    const a = this.aliases.get(user);
    if (a !== undefined) return a;
    return { kind: 'local', uri: `sip:${uri.user ?? ''}@${uri.hostname}` };
  }

  /** Whether the user part of a served-domain URI is an alias (for the door policy). */
  isAlias(uri: Uri): boolean {
    return uri.isSip && this.isDomain(uri.hostname) && this.aliases.has(plainUser(uri));
  }
}
