// Concurrent calls per door station (issue 5, limits): a door station whose
// button is pressed again and again, or one that was taken over, must not
// ring a school's staff a hundred times at once. Calls are counted from the
// INVITE until its failure or the BYE; the table is bounded in size and
// time, so a lost BYE frees its slot after the TTL.

import { LRUCache } from 'lru-cache';

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

  /** Counts a new call of `caller`; false when it already has `max` (a call already counted is let through again). */
  tryStart(caller: string, callId: string): boolean {
    if (this.calls.has(callId)) return true;
    this.calls.purgeStale();
    if ((this.perCaller.get(caller) ?? 0) >= this.max) return false;
    this.perCaller.set(caller, (this.perCaller.get(caller) ?? 0) + 1);
    this.calls.set(callId, caller);
    return true;
  }

  /** The call failed or was hung up. */
  end(callId: string): void {
    this.calls.delete(callId);
  }

  active(caller: string): number {
    return this.perCaller.get(caller) ?? 0;
  }
}
