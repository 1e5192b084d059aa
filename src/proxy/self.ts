// Which URIs and Via sent-bys name this server: its domains, and the
// addresses and ports it listens on (for a wildcard listener, every local
// interface address). Used for Route pre-processing, loop detection and
// OPTIONS addressed to the server itself.

import { networkInterfaces } from 'node:os';
import { stripBrackets, type Uri } from '../sip/index.js';
import type { Endpoint } from '../transport/index.js';

const DEFAULT_PORT: Record<string, number> = { udp: 5060, tcp: 5060, tls: 5061, ws: 80, wss: 443 };

export class SelfAddresses {
  private readonly domains: Set<string>;
  private readonly hosts = new Set<string>();
  private readonly ports = new Set<number>();
  private readonly defaultPorts = new Set<number>();

  /** `extraHosts`: addresses that reach this server though no listener is bound to them (a cluster node's advertised address behind NAT). */
  constructor(domains: readonly string[], listening: readonly Endpoint[], extraHosts: readonly string[] = []) {
    this.domains = new Set(domains.map((d) => d.toLowerCase()));
    for (const h of extraHosts) this.hosts.add(h.toLowerCase());
    for (const ep of listening) {
      this.ports.add(ep.port);
      this.defaultPorts.add(DEFAULT_PORT[ep.protocol] ?? 5060);
      if (ep.address === '0.0.0.0' || ep.address === '::') {
        for (const list of Object.values(networkInterfaces())) {
          for (const ni of list ?? []) {
            if (ep.address === '::' || ni.family === 'IPv4') this.hosts.add(ni.address.toLowerCase());
          }
        }
      } else this.hosts.add(ep.address.toLowerCase());
    }
  }

  /** A domain this server is authoritative for. */
  isDomain(host: string): boolean {
    return this.domains.has(stripBrackets(host).toLowerCase());
  }

  /**
   * True when host:port reaches this server: one of its addresses on one of
   * its ports (no port means the transport default), or one of its domains
   * on any of its ports.
   */
  isSelf(host: string, port: number | null): boolean {
    const h = stripBrackets(host).toLowerCase();
    if (this.hosts.has(h)) return port === null ? this.ports.has(5060) || this.defaultPortListened() : this.ports.has(port);
    if (this.domains.has(h)) return port === null || this.ports.has(port);
    return false;
  }

  /** One of this server's domains or addresses, whatever the port: a Request-URI for the server itself (OPTIONS, REGISTER). */
  isOwnHost(host: string): boolean {
    const h = stripBrackets(host).toLowerCase();
    return this.hosts.has(h) || this.domains.has(h);
  }

  isSelfUri(uri: Uri): boolean {
    return uri.isSip && this.isSelf(uri.host, uri.port);
  }

  private defaultPortListened(): boolean {
    for (const p of this.defaultPorts) if (this.ports.has(p)) return true;
    return false;
  }
}
