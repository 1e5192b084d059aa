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

import { createHash } from 'node:crypto';
import { randomToken, type SipMessage } from '../sip/index.js';

export const BRANCH_MAGIC = 'z9hG4bK-pt';

/** Hash of the fields that stay the same when the same request comes back unchanged. */
export function loopHash(req: SipMessage): string {
  const h = createHash('sha1');
  h.update(req.uri);
  h.update('\0');
  h.update(req.callId());
  h.update('\0');
  h.update(req.from().tag ?? '');
  h.update('\0');
  h.update(req.to().tag ?? '');
  h.update('\0');
  h.update(String(req.cseq().seq));
  h.update('\0');
  h.update(req.get('proxy-require') ?? '');
  h.update('\0');
  for (const r of req.getAll('route')) h.update(r);
  return h.digest('base64url').slice(0, 12);
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
