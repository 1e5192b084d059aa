// The table of open stream connections (TCP, TLS, WS and WSS share it):
// lookup by id and by remote endpoint, admission bounds, and the timeouts.
// One interval timer sweeps the whole table, instead of a timer per
// connection, so 10k idle connections cost no timer churn.

import { performance } from 'node:perf_hooks';
import type { Endpoint, Protocol, TransportLimits, TransportStats } from './types.js';

export type CloseReason = 'idle' | 'first-message-timeout' | 'connect-timeout';

/** What the table needs from a connection, whatever its protocol. */
export interface TableConnection {
  readonly id: number;
  readonly protocol: Protocol;
  /** endpointKey() of the remote end. */
  readonly key: string;
  readonly remoteAddress: string;
  readonly inbound: boolean;
  /** now() when accepted or when the connect began. */
  readonly openedAt: number;
  /** now() of the last bytes received (or of the connect). */
  lastActivity: number;
  /** Has delivered at least one complete message. */
  delivered: boolean;
  /** An outbound connect still in progress. */
  readonly connecting: boolean;
  /**
   * Destroys the connection. It must leave the table (remove()) before
   * returning, so that a sweep never counts it twice.
   */
  timeout(reason: CloseReason): void;
}

/** A connection messages can be sent down, whatever its protocol. */
export interface StreamConnection extends TableConnection {
  readonly remote: Readonly<Endpoint>;
  /** Sends one message (or queues it while connecting). False when it was dropped. */
  write(data: Buffer): boolean;
  /** Closes at once; pending output is discarded. */
  destroy(err: Error | null): void;
}

/**
 * Monotonic milliseconds. Wall-clock time is wrong here: small devices often
 * step their clock at boot when NTP syncs, which would time out every
 * connection at once.
 */
export function now(): number {
  return performance.now();
}

const MAX_SWEEP_INTERVAL_MS = 1000;
const MIN_SWEEP_INTERVAL_MS = 10;

export class ConnectionTable<C extends TableConnection = TableConnection> {
  private readonly limits: TransportLimits;
  private readonly stats: TransportStats;
  private readonly byId = new Map<number, C>();
  private readonly byEndpoint = new Map<string, C>();
  private readonly perSource = new Map<string, number>();
  private lastId = 0;
  /** Ids are lastId * idStride + idOffset: unique across the workers of a cluster, whose owner is id % idStride. */
  private idStride = 1;
  private idOffset = 0;
  /** Told of every connection added (the other workers learn which flows are up). */
  onAdded: ((id: number) => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly sweepInterval: number;

  constructor(limits: TransportLimits, stats: TransportStats) {
    this.limits = limits;
    this.stats = stats;
    // A quarter of the shortest timeout keeps the overshoot small; a second at
    // most is precise enough for timeouts counted in seconds.
    const shortest = Math.min(limits.idleTimeoutMs, limits.firstMessageTimeoutMs);
    this.sweepInterval = Math.max(MIN_SWEEP_INTERVAL_MS, Math.min(MAX_SWEEP_INTERVAL_MS, Math.floor(shortest / 4)));
  }

  get size(): number {
    return this.byId.size;
  }

  nextId(): number {
    // Ids are never reused within a process, so a stale id cannot hit a new connection.
    return ++this.lastId * this.idStride + this.idOffset;
  }

  /** Worker `index` of `count`: its ids are the ones equal to index modulo count. */
  setIdSpace(index: number, count: number): void {
    this.idStride = count;
    this.idOffset = index;
  }

  /** May a new inbound connection from `address` be kept? Counts a refusal. */
  admitInbound(address: string): boolean {
    if (this.byId.size >= this.limits.maxConnections || (this.perSource.get(address) ?? 0) >= this.limits.maxConnectionsPerSource) {
      this.stats.dropped['connection-limit']++;
      return false;
    }
    return true;
  }

  /** May a new outbound connection be opened? Counts a refusal. */
  admitOutbound(): boolean {
    if (this.byId.size >= this.limits.maxConnections) {
      this.stats.dropped['connection-limit']++;
      return false;
    }
    return true;
  }

  add(conn: C): void {
    this.byId.set(conn.id, conn);
    // Latest wins: two connections to one endpoint only happen when both
    // ends connect at once, and either serves for sending.
    this.byEndpoint.set(conn.key, conn);
    if (conn.inbound) this.perSource.set(conn.remoteAddress, (this.perSource.get(conn.remoteAddress) ?? 0) + 1);
    if (this.onAdded !== null) this.onAdded(conn.id);
    if (this.timer === null) {
      this.timer = setInterval(this.sweep, this.sweepInterval);
      this.timer.unref();
    }
  }

  remove(conn: C): void {
    if (this.byId.get(conn.id) !== conn) return;
    this.byId.delete(conn.id);
    if (this.byEndpoint.get(conn.key) === conn) this.byEndpoint.delete(conn.key);
    if (conn.inbound) {
      const n = (this.perSource.get(conn.remoteAddress) ?? 1) - 1;
      if (n > 0) this.perSource.set(conn.remoteAddress, n);
      else this.perSource.delete(conn.remoteAddress);
    }
    if (this.byId.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  get(id: number): C | undefined {
    return this.byId.get(id);
  }

  /** An open connection to the remote endpoint with this endpointKey(). */
  find(key: string): C | undefined {
    return this.byEndpoint.get(key);
  }

  count(protocol?: Protocol): number {
    if (protocol === undefined) return this.byId.size;
    let n = 0;
    for (const c of this.byId.values()) if (c.protocol === protocol) n++;
    return n;
  }

  /** Inbound connections currently counted for a remote address. */
  countFrom(address: string): number {
    return this.perSource.get(address) ?? 0;
  }

  values(): IterableIterator<C> {
    return this.byId.values();
  }

  /** Stops the sweep timer (the connections themselves are the caller's). */
  stop(): void {
    if (this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** One pass over the table; public so tests and callers can force it. */
  readonly sweep = (): void => {
    const t = now();
    const { idleTimeoutMs, firstMessageTimeoutMs } = this.limits;
    for (const c of this.byId.values()) {
      let reason: CloseReason | null = null;
      if (c.connecting) {
        if (t - c.openedAt > firstMessageTimeoutMs) reason = 'connect-timeout';
      } else if (c.inbound && !c.delivered && t - c.openedAt > firstMessageTimeoutMs) {
        reason = 'first-message-timeout';
      } else if (t - c.lastActivity > idleTimeoutMs) {
        reason = 'idle';
      }
      if (reason !== null) {
        this.stats.dropped.timeout++;
        c.timeout(reason);
      }
    }
  };
}
