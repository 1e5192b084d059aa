// Bytes a transaction keeps for its Timers D, G, H, J: up to 32 s.

/**
 * The size of the buffers kept bytes are copied into, here and in
 * FinishedTable's chunks (finished.ts). A burst (a restart: every phone
 * registers again) leaves 32 s of them, tens of MB, then frees them all.
 * From glibc's heap, the holes they leave stay resident; mapped on their
 * own, they go back to the system when freed. glibc maps an allocation of
 * at least its mmap threshold, 128 KiB at first, but raises the threshold
 * after the first such free. The systemd unit and the Docker image pin it
 * (MALLOC_MMAP_THRESHOLD_=131072): then 128 KiB, mapped on their own. Not
 * pinned, 64 KiB: 128 KiB buffers there sit at the threshold glibc moves,
 * and the setup p99 at 1,000 calls/s went from 3-7 ms to 20-65 ms (five
 * runs each, bench/README.md, "Tenth session").
 */
export const KEPT_BUFFER_SIZE = mmapThresholdPinnedAt(128 * 1024) ? 128 * 1024 : 64 * 1024;

/** Whether glibc's mmap threshold is pinned at or below `size` (so that buffers of that size are mapped on their own). */
export function mmapThresholdPinnedAt(size: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.MALLOC_MMAP_THRESHOLD_;
  if (v === undefined || !/^[0-9]+$/.test(v)) return false;
  const n = Number(v);
  return n > 0 && n <= size;
}

/** Bigger messages get a buffer of their own rather than most of a slab. */
const OWN_BUFFER_OVER = 4 * 1024;

let slab: Buffer | null = null;
let used = 0;

/**
 * `bytes` as kept for a retransmission: a copy in a slab that only kept
 * bytes go to. What is kept here lives about as long (a final response or
 * an ACK, until its last wait ends), so a slab fills, then empties as a
 * whole, and the collector frees it when nothing points into it any more.
 * Its octets are off the JS heap: a young-generation collection copies the
 * small view, not the message. Kept as a latin1 string instead, the 200 of
 * every BYE was copied by the scavenger on its way to the old generation, a
 * seventh of what a call left there; as a slice of Node's shared 8 KiB pool,
 * one kept response pinned a slab full of short-lived data.
 */
export function retained(bytes: Buffer): Buffer {
  const n = bytes.length;
  if (n > OWN_BUFFER_OVER) {
    const own = Buffer.allocUnsafeSlow(n);
    bytes.copy(own);
    return own;
  }
  if (slab === null || used + n > KEPT_BUFFER_SIZE) {
    slab = Buffer.allocUnsafeSlow(KEPT_BUFFER_SIZE);
    used = 0;
  }
  bytes.copy(slab, used);
  const kept = slab.subarray(used, used + n);
  used += n;
  return kept;
}
