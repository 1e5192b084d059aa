// Bytes a transaction keeps for its Timers D, G, H, J: up to 32 s.

/**
 * `bytes` in a buffer of its own. Small buffers are slices of Node's shared
 * 8 KiB pool, and one slice kept alive keeps its whole slab: at a thousand
 * calls a second, two BYE responses held for Timer J pinned each 8 KiB slab,
 * four times the bytes they needed. Copying the few that are kept is cheaper
 * than that memory and the garbage collection it costs.
 */
export function retained(bytes: Buffer): Buffer {
  if (bytes.byteLength === bytes.buffer.byteLength) return bytes;
  const own = Buffer.allocUnsafeSlow(bytes.byteLength);
  bytes.copy(own);
  return own;
}
