// Counting calls without keeping dialog state for routing (Record-Route
// does the routing). An established call is remembered by Call-ID until its
// BYE; the memory is bounded in size and time so that a lost BYE never
// leaks: an entry older than the TTL is forgotten and counted as expired.

import { LRUCache } from 'lru-cache';

export interface CallCounts {
  active: number;
  established: number;
  ended: number;
  /** Calls forgotten without a BYE (TTL or size bound). */
  expired: number;
}

export class CallTracker {
  private readonly cache: LRUCache<string, number>;
  private readonly counts = { established: 0, ended: 0, expired: 0 };

  constructor(opts: { max?: number; ttlMs?: number } = {}) {
    this.cache = new LRUCache<string, number>({
      max: opts.max ?? 100_000,
      ttl: opts.ttlMs ?? 12 * 3600_000,
      // Expired entries are dropped lazily; count them as they go.
      dispose: (_value, _key, reason) => {
        if (reason === 'evict' || reason === 'expire') this.counts.expired++;
      },
    });
  }

  /** A 2xx to an INVITE went upstream: the call is up (re-INVITEs of a known call do not count again). */
  established(callId: string, now = Date.now()): void {
    if (this.cache.has(callId)) return;
    this.cache.set(callId, now);
    this.counts.established++;
  }

  /** A BYE was forwarded: the call is over. */
  ended(callId: string): void {
    if (this.cache.delete(callId)) this.counts.ended++;
  }

  stats(): CallCounts {
    this.cache.purgeStale();
    return { active: this.cache.size, ...this.counts };
  }
}
