// Bytes a transaction keeps for its Timers D, G, H, J: up to 32 s.

/** Slabs the kept bytes are copied into, one after the other. */
const SLAB_SIZE = 64 * 1024;
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
  if (slab === null || used + n > SLAB_SIZE) {
    slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
    used = 0;
  }
  bytes.copy(slab, used);
  const kept = slab.subarray(used, used + n);
  used += n;
  return kept;
}
