// Counting calls without keeping dialog state for routing (Record-Route
// does the routing). An established call is remembered by Call-ID until its
// BYE; the memory is bounded in size and time so that a lost BYE never
// leaks: an entry older than the TTL is forgotten and counted as expired.

import { LRUCache } from 'lru-cache';
import { detach } from '../sip/index.js';

export interface CallCounts {
  active: number;
  established: number;
  ended: number;
  /** Calls forgotten without a BYE (TTL or size bound). */
  expired: number;
}

/** An established call: when it was answered, and what the caller of established() attached (the call's log record). */
export interface EstablishedCall<R> {
  at: number;
  record: R | null;
}

export class CallTracker<R = unknown> {
  private readonly cache: LRUCache<string, EstablishedCall<R>>;
  private readonly counts = { established: 0, ended: 0, expired: 0 };

  /** `onForgotten`: a call dropped without a BYE (TTL or size bound), so that its log line is still written. */
  constructor(opts: { max?: number; ttlMs?: number; onForgotten?: (call: EstablishedCall<R>) => void } = {}) {
    this.cache = new LRUCache<string, EstablishedCall<R>>({
      max: opts.max ?? 100_000,
      ttl: opts.ttlMs ?? 12 * 3600_000,
      // Expired entries are dropped lazily; count them as they go.
      dispose: (value, _key, reason) => {
        if (reason === 'evict' || reason === 'expire') {
          this.counts.expired++;
          opts.onForgotten?.(value);
        }
      },
    });
  }

  /** A 2xx to an INVITE went upstream: the call is up (re-INVITEs of a known call do not count again). */
  established(callId: string, now = Date.now(), record: R | null = null): void {
    if (this.cache.has(callId)) return;
    // Kept for the whole call: not a view of the INVITE's text.
    this.cache.set(detach(callId), { at: now, record });
    this.counts.established++;
  }

  /** A BYE was answered: the call is over. Returns what established() kept, once. */
  ended(callId: string): EstablishedCall<R> | undefined {
    const call = this.cache.get(callId);
    if (call === undefined) return undefined;
    this.cache.delete(callId);
    this.counts.ended++;
    return call;
  }

  stats(): CallCounts {
    this.cache.purgeStale();
    return { active: this.cache.size, ...this.counts };
  }
}
