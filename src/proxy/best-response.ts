// Choosing the response a forking proxy sends back (RFC 3261 §16.7 step 6).
//
// Every 2xx is forwarded at once and is not chosen here. Among the final
// non-2xx responses of all branches: a 6xx wins outright (and ends the
// search: the proxy cancels the other branches); otherwise the lowest class
// wins (3xx before 4xx before 5xx), and within a class the responses that
// let the caller resubmit (401, 407, 415, 420, 484) are preferred.

/** Responses the caller can act on to retry successfully, preferred within their class. */
const ACTIONABLE = new Set([401, 407, 415, 420, 484]);

/**
 * Rank of a final non-2xx status: lower is better. 6xx always beats
 * everything else: once one arrives no other final response is awaited.
 */
export function responseRank(status: number): number {
  if (status >= 600) return 0;
  const cls = Math.floor(status / 100); // 3, 4 or 5
  // 503 from a branch says nothing about the callee; it ranks last in its class.
  const within = ACTIONABLE.has(status) ? 0 : status === 503 ? 2 : 1;
  return cls * 10 + within;
}

/** True when `candidate` should replace `best` as the response to forward. Ties keep the first received. */
export function isBetterResponse(candidate: number, best: number | null): boolean {
  if (best === null) return true;
  return responseRank(candidate) < responseRank(best);
}

/**
 * The status actually sent upstream for a chosen response: a 503 from a
 * downstream server becomes 500, since the caller would otherwise think
 * this proxy is unavailable (§16.7 step 6).
 */
export function forwardedStatus(status: number): number {
  return status === 503 ? 500 : status;
}
