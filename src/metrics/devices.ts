/**
 * Registered devices by kind (door station or phone) and the door stations
 * online and offline, for portier_registered_devices, portier_door_stations
 * and the /status page. Everything is computed on scrape (snapshot()); the
 * registrar's events only keep two small tables up to date:
 *
 * - bindings of no account (no authentication, or an account since removed
 *   from the users file), whose kind is guessed from their User-Agent: the
 *   store cannot list its bindings, so the ones this process registered are
 *   remembered here (at most MAX_TRACKED; the sweep and scrapes drop them);
 * - when each door account was last seen and when its last binding ended.
 *
 * A binding's kind is its account's `kind=` (users file); without an
 * account, the User-Agent decides (kindFromUserAgent). Each binding is one
 * device, so the kinds of a domain add up to portier_registrations_active.
 * Door accounts are looked up in the store on every snapshot, so they are
 * right whichever node (Redis) registered them and after a restart (SQLite);
 * a binding of no account registered through another node, or before a
 * restart, is counted as a phone until it registers here again.
 *
 * Last-seen times are kept in memory only: after a restart a door that has
 * not registered since reads "not seen since start".
 */
import type { Account, Accounts } from '../auth/index.js';
import type { Binding, BindingCounts, UnbindCause } from '../registrar/index.js';
import { canonicalDomain, domainOfAor } from '../registrar/aor.js';

export type DeviceKind = 'door' | 'phone';
export const DEVICE_KINDS: readonly DeviceKind[] = ['door', 'phone'];
export type DoorState = 'online' | 'offline';
export const DOOR_STATES: readonly DoorState[] = ['online', 'offline'];

// ---- User-Agent guess ----

/** Door-station makers and models, as they appear in User-Agent headers. */
const DOOR_USER_AGENTS: readonly RegExp[] = [
  /(?:^|[\s(;,/])2N(?:[\s_/-]|$)/i, // 2N Helios IP Verso, 2N IP Force, 2N IP Solo
  /\bcastel\b/i,
  /\bdoorbird\b/i,
  /\bakuvox\b/i,
  /\bhikvision\b/i,
  /\bDS-K[DV]\d/i, // Hikvision door stations
  /\bdahua\b/i,
  /\bVTO\d/i, // Dahua door stations
  /\bfanvil\b/i,
  /\bmobotix\b/i,
  /\bcomelit\b/i,
  /\bbticino\b/i,
  /\baiphone\b/i,
  /\bcommend\b/i,
  /\bzenitel\b/i,
  /\bstentofon\b/i,
  /\bbaudisch\b/i,
  /\bbehnke\b/i,
  /\bsiedle\b/i,
  /\bcyberdata\b/i,
  /\bfermax\b/i,
  /\burmet\b/i,
  /\bGDS37\d\d/i, // Grandstream door systems
  /\bAXIS\s+[AI]8\d{3}/i, // Axis network door stations
];

/**
 * Products of those makers that are not door stations: indoor monitors and
 * desk phones (Fanvil X/V/H/C/W series, Akuvox indoor units, Hikvision
 * DS-KH, Dahua VTH, 2N Indoor Touch, 2N IP Phone).
 */
const NOT_DOOR: readonly RegExp[] = [
  /\b(?:indoor|monitor|phone)\b/i,
  /\bfanvil[\s/_-]*[xvhcw]\d/i,
  /\bakuvox[\s/_-]*(?:c3\d|it\d|s5\d|sp-?r|vp-?r)/i,
  /\bDS-KH\d/i,
  /\bVTH\d/i,
];

/** Door station or phone, from a User-Agent alone: a known door-station maker is a door, anything else (Linhome, Linphone...) a phone. */
export function kindFromUserAgent(userAgent: string | null): DeviceKind {
  if (userAgent === null || userAgent === '') return 'phone';
  if (!DOOR_USER_AGENTS.some((r) => r.test(userAgent))) return 'phone';
  return NOT_DOOR.some((r) => r.test(userAgent)) ? 'phone' : 'door';
}

// ---- the census ----

/** Bindings of no account remembered at most (beyond: counted as phones). */
export const MAX_TRACKED = 100_000;
/** Store lookups in flight at once during a snapshot (one per door account). */
const LOOKUP_CONCURRENCY = 32;
/** Distinct User-Agents whose guess is remembered. */
const UA_CACHE = 1024;

export interface DeviceSources {
  /** Served domains, as configured: the only values of the domain label. */
  domains: readonly string[];
  /** Live bindings per domain (the store). */
  bindingCounts(): Promise<BindingCounts>;
  /** The live bindings of an AOR (`sip:user@domain`). */
  lookup(aor: string): Promise<Binding[]>;
  /** The accounts of the users file; null when authentication is off. */
  accounts(): Accounts | null;
  /** ms since the epoch. */
  now?: () => number;
}

/** One binding of a door station, as /status shows it. */
export interface DoorBinding {
  userAgent: string | null;
  /** First registered (kept across refreshes), ms since the epoch. */
  since: number;
  /** Last REGISTER. */
  updatedAt: number;
  expiresAt: number;
  transport: string;
}

export interface Door {
  /** `user@domain` as in the users file. */
  aor: string;
  /** The configured domain (label value). */
  domain: string;
  state: DoorState;
  /** Live bindings, newest first (empty when offline). */
  bindings: DoorBinding[];
  /** Last REGISTER seen from it since Portier started (or found in the store); null: not seen since start. */
  lastSeen: number | null;
  /** When its last binding ended (expired or removed), when known. */
  offlineSince: number | null;
  /** How it ended: expired, unregistered (Expires: 0), replaced, evicted, removed (dead flow); null when unknown. */
  offlineCause: UnbindCause | null;
}

/** A binding of no account that the User-Agent says is a door station. */
export interface GuessedDoor {
  aor: string;
  domain: string;
  userAgent: string | null;
  since: number;
}

export interface DeviceSnapshot {
  /** ms since the epoch. */
  at: number;
  /** Null when the store did not answer (then no device counts: none rather than wrong ones). */
  devices: Map<string, Record<DeviceKind, number>> | null;
  /** Live bindings per configured domain; null when the store did not answer. */
  registrations: Map<string, number> | null;
  /** Every door account of a served domain, in users-file order; empty without authentication. */
  doors: Door[];
  /** Door accounts whose lookup failed (the store did not answer): their state is unknown and they are left out of doors. */
  doorsUnknown: number;
  guessedDoors: GuessedDoor[];
  /** Why the store could not be read, or null. */
  error: string | null;
}

interface Tracked {
  aor: string;
  /** Canonical domain. */
  domain: string;
  userAgent: string | null;
  registeredAt: number;
  expiresAt: number;
}

interface DoorMemory {
  lastSeen: number | null;
  /** Latest expiry of the bindings seen live. */
  until: number;
  offlineSince: number | null;
  cause: UnbindCause | null;
}

export class DeviceCensus {
  private readonly tracked = new Map<string, Tracked>();
  private readonly doorMemory = new Map<string, DoorMemory>();
  private readonly uaKinds = new Map<string, DeviceKind>();
  /** Canonical domain → configured spelling. */
  private readonly labels = new Map<string, string>();
  private readonly now: () => number;
  private inFlight: Promise<DeviceSnapshot> | null = null;

  constructor(private readonly src: DeviceSources) {
    for (const d of src.domains) this.labels.set(canonicalDomain(d), d);
    this.now = src.now ?? Date.now;
  }

  /** Bindings of no account remembered now (for tests). */
  get trackedCount(): number {
    return this.tracked.size;
  }

  /** The registrar's 'registered' event: one Map write; never throws. */
  registered(b: Binding): void {
    try {
      const account = this.accountOf(b.aor);
      if (account !== undefined) {
        if (account.kind === 'door') {
          const m = this.memoryOf(aorKey(account));
          m.lastSeen = Math.max(m.lastSeen ?? 0, b.updatedAt);
          m.until = Math.max(m.until, b.expiresAt);
          m.offlineSince = null;
          m.cause = null;
        }
        return;
      }
      const key = b.aor + '\n' + b.key;
      if (!this.tracked.has(key) && this.tracked.size >= MAX_TRACKED) return;
      this.tracked.set(key, { aor: b.aor, domain: domainOfAor(b.aor), userAgent: b.userAgent, registeredAt: b.registeredAt, expiresAt: b.expiresAt });
    } catch {
      // a listener must not make register() fail
    }
  }

  /** The registrar's 'unregistered' event; never throws. */
  unregistered(b: Binding, cause: UnbindCause): void {
    try {
      this.tracked.delete(b.aor + '\n' + b.key);
      const account = this.accountOf(b.aor);
      if (account === undefined || account.kind !== 'door') return;
      const m = this.memoryOf(aorKey(account));
      m.lastSeen = Math.max(m.lastSeen ?? 0, b.updatedAt);
      // The door may have other bindings still: the snapshot decides whether it is offline.
      m.offlineSince = cause === 'expired' ? Math.min(b.expiresAt, this.now()) : this.now();
      m.cause = cause;
    } catch {
      // never throw from a listener
    }
  }

  /** Devices and door stations now; concurrent callers (the collectors of one scrape) share one computation. */
  snapshot(): Promise<DeviceSnapshot> {
    this.inFlight ??= this.compute().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private async compute(): Promise<DeviceSnapshot> {
    const now = this.now();
    const snap: DeviceSnapshot = { at: now, devices: null, registrations: null, doors: [], doorsUnknown: 0, guessedDoors: [], error: null };
    let counts: BindingCounts | null = null;
    try {
      counts = await this.src.bindingCounts();
    } catch (err) {
      snap.error = err instanceof Error ? err.message : String(err);
    }
    const doorsByDomain = new Map<string, number>();
    for (const d of this.src.domains) doorsByDomain.set(d, 0);

    const accounts = this.src.accounts();
    const doorAccounts = accounts === null ? [] : accounts.list().filter((a) => a.kind === 'door' && this.labels.has(canonicalDomain(a.domain)));
    const looked = await mapLimit(doorAccounts, LOOKUP_CONCURRENCY, async (a) => {
      try {
        return await this.src.lookup('sip:' + a.aor);
      } catch (err) {
        snap.error ??= err instanceof Error ? err.message : String(err);
        return null;
      }
    });
    const current = new Set<string>();
    doorAccounts.forEach((a, i) => {
      const bindings = looked[i];
      const key = aorKey(a);
      current.add(key);
      if (bindings === null) {
        snap.doorsUnknown++;
        return;
      }
      const domain = this.labels.get(canonicalDomain(a.domain)) as string;
      const m = this.memoryOf(key);
      if (bindings.length > 0) {
        for (const b of bindings) {
          m.lastSeen = Math.max(m.lastSeen ?? 0, b.updatedAt);
          m.until = Math.max(m.until, b.expiresAt);
        }
        m.offlineSince = null;
        m.cause = null;
        doorsByDomain.set(domain, (doorsByDomain.get(domain) ?? 0) + bindings.length);
      } else if (m.offlineSince === null && m.lastSeen !== null) {
        // Seen live before, gone now, and no event here (another node, or the store swept it): it ended at its expiry at the latest.
        m.offlineSince = Math.min(m.until, now);
        m.cause = m.until <= now ? 'expired' : null;
      }
      snap.doors.push({
        aor: a.aor,
        domain,
        state: bindings.length > 0 ? 'online' : 'offline',
        bindings: bindings
          .map((b) => ({ userAgent: b.userAgent, since: b.registeredAt, updatedAt: b.updatedAt, expiresAt: b.expiresAt, transport: b.source.protocol }))
          .sort((x, y) => y.updatedAt - x.updatedAt),
        lastSeen: m.lastSeen,
        offlineSince: bindings.length > 0 ? null : m.offlineSince,
        offlineCause: bindings.length > 0 ? null : m.cause,
      });
    });
    // Forget doors no longer in the users file.
    for (const k of this.doorMemory.keys()) if (!current.has(k)) this.doorMemory.delete(k);

    for (const [key, t] of this.tracked) {
      if (t.expiresAt <= now) {
        this.tracked.delete(key);
        continue;
      }
      if (this.accountOf(t.aor) !== undefined) continue; // its account's kind counts (doors above, phones below)
      const domain = this.labels.get(t.domain);
      if (domain === undefined || this.uaKind(t.userAgent) !== 'door') continue;
      doorsByDomain.set(domain, (doorsByDomain.get(domain) ?? 0) + 1);
      snap.guessedDoors.push({ aor: t.aor.replace(/^sips?:/, ''), domain, userAgent: t.userAgent, since: t.registeredAt });
    }
    snap.guessedDoors.sort((x, y) => (x.domain === y.domain ? (x.aor < y.aor ? -1 : 1) : x.domain < y.domain ? -1 : 1));

    if (counts !== null) {
      snap.registrations = new Map();
      snap.devices = new Map();
      for (const d of this.src.domains) {
        const total = counts.byDomain[canonicalDomain(d)] ?? 0;
        const door = Math.min(total, doorsByDomain.get(d) ?? 0);
        snap.registrations.set(d, total);
        snap.devices.set(d, { door, phone: total - door });
      }
    }
    return snap;
  }

  private accountOf(aor: string): Account | undefined {
    return this.src.accounts()?.get(aor);
  }

  private memoryOf(key: string): DoorMemory {
    let m = this.doorMemory.get(key);
    if (m === undefined) {
      m = { lastSeen: null, until: 0, offlineSince: null, cause: null };
      this.doorMemory.set(key, m);
    }
    return m;
  }

  private uaKind(ua: string | null): DeviceKind {
    if (ua === null) return 'phone';
    let k = this.uaKinds.get(ua);
    if (k === undefined) {
      if (this.uaKinds.size >= UA_CACHE) this.uaKinds.clear();
      k = kindFromUserAgent(ua);
      this.uaKinds.set(ua, k);
    }
    return k;
  }
}

/** The key of a door account in doorMemory (events find the account of a binding first, so both paths agree). */
function aorKey(a: Account): string {
  return a.aor;
}

async function mapLimit<T, U>(items: readonly T[], limit: number, f: (x: T) => Promise<U>): Promise<U[]> {
  const out = new Array<U>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
