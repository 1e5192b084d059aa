// Loop detection (RFC 3261 §16.3 step 4, §16.6 step 8).
//
// Every branch parameter Portier writes is `z9hG4bK` + BRANCH_MAGIC + a hash
// of what identifies the request's routing state + '.' + a unique part. A
// request that comes back carrying a Via of this server whose hash equals the
// hash of the request as it is now has looped (482); with a different hash
// (the Request-URI was retargeted) it is a spiral and is processed again.
//
// The topmost Via is left out of the hash on purpose: after one pass it is
// always this server's own Via, so including it would hide every loop.

import { randomToken, type SipMessage } from '../sip/index.js';

export const BRANCH_MAGIC = 'z9hG4bK-pt';

/**
 * Hash of the fields that stay the same when the same request comes back
 * unchanged: FNV-1a over them in two 32-bit lanes, 12 base36 characters.
 * Not cryptographic, and it needs not be: a collision can only make
 * someone's own request look like a loop to them. (It was a SHA-1, 3% of
 * a proxied call.)
 */
export function loopHash(req: SipMessage): string {
  laneA = 0x811c9dc5;
  laneB = 0x5ad1e806;
  mix(req.uri);
  mix(req.callId());
  mix(req.from().tag ?? '');
  mix(req.to().tag ?? '');
  mix(String(req.cseq().seq));
  mix(req.get('proxy-require') ?? '');
  for (const r of req.getAll('route')) mix(r);
  return ((laneA >>> 0).toString(36).padStart(7, '0') + (laneB >>> 0).toString(36).padStart(7, '0')).slice(0, 12);
}

// The two lanes of the hash being computed (one at a time: no object per request).
let laneA = 0;
let laneB = 0;

/** One field and a separator into both lanes (different multipliers, so the lanes differ). */
function mix(s: string): void {
  let a = laneA;
  let b = laneB;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000197);
  }
  laneA = Math.imul(a ^ 0xff, 0x01000193);
  laneB = Math.imul(b ^ 0xff, 0x01000197);
}

/** A fresh branch for one forwarded copy of `req`, with the loop hash in it. */
export function branchFor(hash: string): string {
  return BRANCH_MAGIC + hash + '.' + randomToken();
}

/** The loop hash carried by one of our branches, or null for a branch not written by Portier. */
export function hashInBranch(branch: string | null): string | null {
  if (branch === null || !branch.startsWith(BRANCH_MAGIC)) return null;
  const dot = branch.indexOf('.', BRANCH_MAGIC.length);
  return dot === -1 ? null : branch.slice(BRANCH_MAGIC.length, dot);
}

/**
 * True when `req` already went through this server in the same state: one of
 * its Vias has a sent-by that `isSelf` recognises and a branch with the same
 * loop hash.
 */
export function isLoop(req: SipMessage, hash: string, isSelf: (host: string, port: number | null) => boolean): boolean {
  for (const v of req.via()) {
    const h = hashInBranch(v.branch);
    if (h !== null && h === hash && isSelf(v.host, v.port)) return true;
  }
  return false;
}
