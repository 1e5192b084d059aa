// Concurrent calls per door station (issue 5, limits): a door station whose
// button is pressed again and again, or one that was taken over, must not
// ring a school's staff a hundred times at once. Calls are counted from the
// INVITE until its failure or the BYE; the table is bounded in size and
// time, so a lost BYE frees its slot after the TTL.

import { LRUCache } from 'lru-cache';
import { detach } from '../sip/index.js';

export class CallLimit {
  private readonly calls: LRUCache<string, string>;
  private readonly perCaller = new Map<string, number>();

  constructor(
    readonly max: number,
    opts: { ttlMs?: number; maxCalls?: number } = {},
  ) {
    this.calls = new LRUCache<string, string>({
      max: opts.maxCalls ?? 100_000,
      ttl: opts.ttlMs ?? 4 * 3600_000,
      dispose: (caller) => {
        const n = (this.perCaller.get(caller) ?? 1) - 1;
        if (n <= 0) this.perCaller.delete(caller);
        else this.perCaller.set(caller, n);
      },
    });
  }

  /**
   * Counts a new call of `caller`, named by `call` (its Call-ID and the
   * caller's tag); false when the caller already has `max`. A call already
   * counted (the INVITE again after a 407) is let through.
   */
  tryStart(caller: string, call: string): boolean {
    if (this.calls.has(call)) return true;
    // Expired entries still count until purged; purging walks the whole
    // table, so only when this caller seems to be at its limit.
    if ((this.perCaller.get(caller) ?? 0) >= this.max) {
      this.calls.purgeStale();
      if ((this.perCaller.get(caller) ?? 0) >= this.max) return false;
    }
    this.perCaller.set(caller, (this.perCaller.get(caller) ?? 0) + 1);
    // Kept for the whole call: not a view of the INVITE's text.
    this.calls.set(detach(call), caller);
    return true;
  }

  /** The call failed or was hung up. */
  end(call: string): void {
    this.calls.delete(call);
  }
}
