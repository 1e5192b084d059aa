// Polling for a condition in tests, bounded in time.

/** Resolves once `cond()` holds; rejects after `ms` with a message naming `what`. */
export async function until(cond: () => boolean | Promise<boolean>, what = 'condition', ms = 4000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
