// Locating SIP servers (RFC 3263 §4) for requests that leave Portier for
// another domain: a PBX, a partner server, a GRUU at another domain.
//
//   IP literal            that address; transport from the URI, else UDP (TLS for sips)
//   host with a port      A/AAAA of the host
//   transport given       SRV _sip._udp / _sip._tcp / _sips._tcp / _sip(s)._ws of it, else A/AAAA
//   neither               NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T, SIP(S)+D2W), else SRV per transport, else A/AAAA
//
// The result is an ordered list: the caller tries the next on a transport
// error, a timeout or a 503 (§4.3). SRV targets are ordered by priority,
// and by a weighted random draw within one (RFC 2782). Answers are cached:
// A/AAAA for their TTL, NAPTR and SRV (whose TTL node:dns does not give)
// for at most CACHE_MS, so that a DNS change is seen within a minute.

import { lookup, Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import { stripBrackets, type Uri } from '../sip/index.js';
import type { Destination, Protocol } from '../transport/index.js';

const CACHE_MS = 60_000;
/** A failed lookup that may succeed next time (timeout, SERVFAIL) is remembered this long only. */
const FAILURE_CACHE_MS = 5_000;
/** The longest one request waits for DNS: a silent server must not hold a call for half a minute. */
const DEADLINE_MS = 4_000;
/** SRV records of one name looked at (each may cost an A and an AAAA query). */
const MAX_SRV = 16;
/** How many targets one URI may give (a zone cannot make Portier try a hundred servers). */
const MAX_TARGETS = 8;

const NAPTR_SERVICES: Readonly<Record<string, Protocol>> = {
  'SIP+D2U': 'udp',
  'SIP+D2T': 'tcp',
  'SIPS+D2T': 'tls',
  'SIP+D2W': 'ws',
  'SIPS+D2W': 'wss',
};

const SRV_PREFIX: Readonly<Record<Protocol, string>> = {
  udp: '_sip._udp.',
  tcp: '_sip._tcp.',
  tls: '_sips._tcp.',
  ws: '_sip._ws.',
  wss: '_sips._ws.',
};

const DEFAULT_PORT: Readonly<Record<Protocol, number>> = { udp: 5060, tcp: 5060, tls: 5061, ws: 80, wss: 443 };

export interface SipResolverOptions {
  /** DNS servers (`127.0.0.1:5353`); empty: the system's. */
  servers?: readonly string[];
  /** Transports Portier can use towards a server, in its order of preference. Portier never dials WebSocket. */
  transports?: readonly Protocol[];
  /** For tests: the randomness of the SRV weight draw. */
  random?: () => number;
}

interface Srv {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

export class SipResolver {
  private readonly dns: Resolver;
  private readonly transports: readonly Protocol[];
  private readonly random: () => number;
  private readonly cache = new LRUCache<string, { value: unknown }>({ max: 2000, ttl: CACHE_MS });

  constructor(opts: SipResolverOptions = {}) {
    this.dns = new Resolver({ timeout: 2000, tries: 2 });
    if (opts.servers && opts.servers.length > 0) this.dns.setServers([...opts.servers]);
    this.transports = opts.transports ?? ['tls', 'tcp', 'udp'];
    this.random = opts.random ?? Math.random;
  }

  /** Where to send a request for `uri`, best first; empty when nothing resolves (or not within DEADLINE_MS). */
  async resolve(uri: Uri): Promise<Destination[]> {
    // An IP literal (most Contacts, every flow-less in-dialog target) needs no DNS, so no deadline either.
    const literal = uri.isSip && isIP(stripBrackets(uri.params.get('maddr') ?? uri.hostname)) !== 0;
    if (literal) return this.locate(uri);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<Destination[]>((resolve) => {
      timer = setTimeout(() => resolve([]), DEADLINE_MS);
      timer.unref();
    });
    try {
      return await Promise.race([this.locate(uri), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async locate(uri: Uri): Promise<Destination[]> {
    if (!uri.isSip) return [];
    const sips = uri.scheme === 'sips';
    const param = uri.params.get('transport');
    let transport: Protocol | null = null;
    if (typeof param === 'string') {
      const p = param.toLowerCase();
      if (p === 'udp' || p === 'tcp' || p === 'tls' || p === 'ws' || p === 'wss') transport = p;
    }
    // A sips URI is reached over TLS (RFC 5630): transport=tcp means TLS over TCP, transport=ws WSS; udp stays, to be refused.
    if (sips && transport !== null && transport !== 'udp') transport = transport === 'ws' || transport === 'wss' ? 'wss' : 'tls';
    const maddr = uri.params.get('maddr');
    let host = typeof maddr === 'string' ? maddr : uri.hostname;
    if (host.startsWith('[')) host = host.slice(1, -1);
    host = host.toLowerCase();

    if (isIP(host) !== 0) {
      const protocol = transport ?? (sips ? 'tls' : 'udp');
      return [{ protocol, address: host, port: uri.port ?? DEFAULT_PORT[protocol] }];
    }
    if (uri.port !== null) {
      const protocol = transport ?? (sips ? 'tls' : 'udp');
      return this.addresses(host, protocol, uri.port);
    }
    if (transport !== null) {
      const viaSrv = await this.srvTargets(SRV_PREFIX[transport] + host, transport);
      return viaSrv.length > 0 ? viaSrv : this.addresses(host, transport, DEFAULT_PORT[transport]);
    }
    // §4.1: NAPTR first, for the transports this side supports.
    const naptr = await this.naptr(host, sips);
    const viaNaptr: Destination[] = [];
    // Every record in order: the servers of the next transport are the failover of the first's.
    for (const n of naptr) {
      if (viaNaptr.length >= MAX_TARGETS) break;
      for (const d of await this.srvTargets(n.replacement, n.protocol)) if (viaNaptr.length < MAX_TARGETS) viaNaptr.push(d);
    }
    if (viaNaptr.length > 0) return viaNaptr;
    if (naptr.length === 0) {
      for (const protocol of this.transports) {
        if (sips && protocol !== 'tls') continue;
        const targets = await this.srvTargets(SRV_PREFIX[protocol] + host, protocol);
        if (targets.length > 0) return targets;
      }
    }
    const protocol: Protocol = sips ? 'tls' : 'udp';
    return this.addresses(host, protocol, DEFAULT_PORT[protocol]);
  }

  private async naptr(host: string, sips: boolean): Promise<Array<{ protocol: Protocol; replacement: string }>> {
    const records = await this.cached('naptr ' + host, () => this.dns.resolveNaptr(host));
    const out: Array<{ protocol: Protocol; replacement: string; order: number; preference: number }> = [];
    for (const r of records) {
      const protocol = NAPTR_SERVICES[r.service.toUpperCase()];
      // Only the SRV-pointing ("s") records of transports Portier dials; a sips URI only over TLS.
      if (protocol === undefined || r.flags.toLowerCase() !== 's' || r.replacement === '' || !this.transports.includes(protocol)) continue;
      if (sips && protocol !== 'tls') continue;
      out.push({ protocol, replacement: r.replacement, order: r.order, preference: r.preference });
    }
    return out.sort((a, b) => a.order - b.order || a.preference - b.preference);
  }

  /** The SRV targets of `name`, in RFC 2782 order, each with its addresses. */
  private async srvTargets(name: string, protocol: Protocol): Promise<Destination[]> {
    const records = await this.cached('srv ' + name, () => this.dns.resolveSrv(name) as Promise<Srv[]>);
    const out: Destination[] = [];
    for (const srv of orderSrv(records.slice(0, MAX_SRV), this.random)) {
      // "." as target: the service is decidedly not available (RFC 2782).
      if (srv.name === '' || srv.name === '.') continue;
      for (const d of await this.addresses(srv.name.toLowerCase(), protocol, srv.port)) {
        out.push(d);
        if (out.length >= MAX_TARGETS) return out;
      }
    }
    return out;
  }

  /** A and AAAA of a host (IPv4 first), cached for their TTL. */
  private async addresses(host: string, protocol: Protocol, port: number): Promise<Destination[]> {
    if (isIP(host) !== 0) return [{ protocol, address: host, port }];
    const hit = this.cache.get('a ' + host);
    let list: string[];
    if (hit !== undefined) list = hit.value as string[];
    else {
      const [v4, v6] = await Promise.all([
        this.dns.resolve4(host, { ttl: true }).catch(() => []),
        this.dns.resolve6(host, { ttl: true }).catch(() => []),
      ]);
      list = [...v4, ...v6].map((r) => r.address);
      let ttl = Math.min(CACHE_MS, ...[...v4, ...v6].map((r) => r.ttl * 1000));
      if (list.length === 0) {
        // Names DNS does not know may be the system's (/etc/hosts: localhost, a PBX by its LAN name).
        list = (await lookup(host, { all: true }).catch(() => [])).map((a) => a.address);
        ttl = CACHE_MS;
      }
      if (list.length > 0 && ttl > 0) this.cache.set('a ' + host, { value: list }, { ttl });
    }
    return list.slice(0, MAX_TARGETS).map((address) => ({ protocol, address, port }));
  }

  /** A record list, cached; no records is remembered like any answer, a failure (timeout, SERVFAIL) only briefly. */
  private async cached<T>(key: string, fetch: () => Promise<T[]>): Promise<T[]> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return hit.value as T[];
    try {
      const value = await fetch();
      this.cache.set(key, { value });
      return value;
    } catch (err) {
      const code = (err as { code?: string }).code;
      const definite = code === 'ENODATA' || code === 'ENOTFOUND';
      this.cache.set(key, { value: [] }, { ttl: definite ? CACHE_MS : FAILURE_CACHE_MS });
      return [];
    }
  }
}

/** RFC 2782: ascending priority; within one priority, a weighted random order (weight 0 rarely first). */
export function orderSrv(records: readonly Srv[], random: () => number): Srv[] {
  const byPriority = new Map<number, Srv[]>();
  for (const r of records) {
    const list = byPriority.get(r.priority);
    if (list) list.push(r);
    else byPriority.set(r.priority, [r]);
  }
  const out: Srv[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    // Zero weights first, as RFC 2782 asks, so they get a small chance.
    const pool = (byPriority.get(priority) as Srv[]).slice().sort((a, b) => a.weight - b.weight);
    while (pool.length > 0) {
      const total = pool.reduce((sum, r) => sum + r.weight, 0);
      let pick = 0;
      if (total > 0) {
        const draw = random() * total;
        let running = 0;
        pick = pool.findIndex((r) => (running += r.weight) > draw);
        if (pick < 0) pick = pool.length - 1;
      }
      out.push(pool.splice(pick, 1)[0]);
    }
  }
  return out;
}
