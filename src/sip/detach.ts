// Strings kept long after their message is gone.

/**
 * `s` copied into a string of its own. What the parser cuts from a message
 * (a branch, a Call-ID, a tag) is, in V8, a view of the message's whole text,
 * and so is a concatenation of such pieces: a table that keeps one for the
 * 32 s of a transaction or the length of a call would keep the whole message
 * text with it. Use it for what outlives the message, not on every read.
 */
export function detach(s: string): string {
  // slice() of a concatenation flattens it into a new string first.
  return (' ' + s).slice(1);
}
