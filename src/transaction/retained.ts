// Bytes a transaction keeps for its Timers D, G, H, J: up to 32 s.

/**
 * `bytes` as kept for a retransmission: a latin1 string, one character per
 * octet, which gives the same octets back. A small Buffer is a slice of
 * Node's shared 8 KiB pool (one kept slice keeps its whole slab: two BYE
 * responses held for Timer J pinned each slab), and a Buffer of its own
 * costs two objects and an off-heap allocation besides its bytes. A string
 * is one object of its length, and retransmissions, which need the Buffer
 * again, are rare.
 */
export function retained(bytes: Buffer): string {
  return bytes.toString('latin1');
}

/** The octets of what retained() kept. */
export function octetsOf(kept: string): Buffer {
  return Buffer.from(kept, 'latin1');
}
