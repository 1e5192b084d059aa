// Replacing a secrets file (users, provisioning tokens) so that a reader
// never sees half of it and a crash never leaves a truncated one: written
// to a temporary file beside it, fsync'd, then renamed over it.

import { closeSync, fchmodSync, fchownSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';

/** Writes `text` to `path` atomically with `mode`, and `owner` (uid, gid) when this process may set it (root). */
export function replaceFile(path: string, text: string, mode: number, owner: { uid: number; gid: number } | null): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    try {
      fchmodSync(fd, mode);
      if (owner !== null) {
        try {
          fchownSync(fd, owner.uid, owner.gid);
        } catch {
          // not permitted: the file becomes ours, as any new file would
        }
      }
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw err;
  }
}
