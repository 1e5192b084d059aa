// The SQLite writer thread: batches of binding rows arrive from the store on
// the main thread and are written here, so that SQLite's B-tree work (about
// 5 µs a row) never runs on the event loop that answers SIP.
//
// Messages in:  {type: 'batch', rows: Rows}   {type: 'ban', ban}   {type: 'close'}
// Messages out: {type: 'ready'}  {type: 'written', rows}    {type: 'failed', message}   {type: 'closed'}
// A batch that fails is kept and tried again with the next one (newer rows win).

import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

/**
 * Rows to write, flat, four values a row: aor, key, expiresAt, JSON of the
 * binding; expiresAt DELETE (and '' for the JSON) deletes the row. One
 * array for a whole batch: nothing to allocate per row on either side, and
 * one object for postMessage to copy. A batch names each (aor, key) once.
 */
export type Rows = Array<string | number>;

/** expiresAt of a row that deletes (aor, key). */
export const DELETE = -1;

export interface WriterBan {
  address: string;
  until: number;
  level: number;
}

export type WriterMessage = { type: 'batch'; rows: Rows } | { type: 'ban'; ban: WriterBan } | { type: 'close' };
export type WriterReply = { type: 'ready' } | { type: 'written'; rows: number } | { type: 'failed'; message: string; ban?: boolean } | { type: 'closed' };

const CHUNK = 100;

/** `older` then `newer` as one batch naming each (aor, key) once, the newer row winning (only after a failed write). */
export function mergeRows(older: Rows, newer: Rows): Rows {
  const at = new Map<string, number>();
  const out: Rows = [];
  for (const rows of [older, newer]) {
    for (let i = 0; i < rows.length; i += 4) {
      const id = (rows[i] as string) + '\n' + (rows[i + 1] as string);
      const j = at.get(id);
      if (j === undefined) {
        at.set(id, out.length);
        out.push(rows[i], rows[i + 1], rows[i + 2], rows[i + 3]);
      } else {
        out[j + 2] = rows[i + 2];
        out[j + 3] = rows[i + 3];
      }
    }
  }
  return out;
}

function run(port: NonNullable<typeof parentPort>, path: string): void {
  const db = new Database(path);
  db.pragma('busy_timeout = 5000');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  const one = db.prepare('INSERT OR REPLACE INTO bindings (aor, key, expires_at, data) VALUES (?, ?, ?, ?)');
  const chunk = db.prepare('INSERT OR REPLACE INTO bindings (aor, key, expires_at, data) VALUES ' + Array(CHUNK).fill('(?, ?, ?, ?)').join(', '));
  const del = db.prepare('DELETE FROM bindings WHERE aor = ? AND key = ?');
  const ban = db.prepare('INSERT OR REPLACE INTO bans (address, until, level) VALUES (?, ?, ?)');
  const args: Rows = [];
  const write = db.transaction((rows: Rows) => {
    args.length = 0;
    for (let i = 0; i < rows.length; i += 4) {
      if (rows[i + 2] === DELETE) {
        del.run(rows[i], rows[i + 1]);
        continue;
      }
      args.push(rows[i], rows[i + 1], rows[i + 2], rows[i + 3]);
      if (args.length === CHUNK * 4) {
        chunk.run(args);
        args.length = 0;
      }
    }
    for (let i = 0; i < args.length; i += 4) one.run(args[i], args[i + 1], args[i + 2], args[i + 3]);
  });
  /** Rows of batches that failed, to be written before (under) the next one. */
  let failed: Rows | null = null;
  const reply = (m: WriterReply) => port.postMessage(m);
  reply({ type: 'ready' });

  port.on('message', (m: WriterMessage) => {
    switch (m.type) {
      case 'batch': {
        const rows = failed === null ? m.rows : mergeRows(failed, m.rows);
        try {
          write(rows);
          failed = null;
          reply({ type: 'written', rows: rows.length / 4 });
        } catch (err) {
          failed = rows;
          reply({ type: 'failed', message: (err as Error).message });
        }
        return;
      }
      case 'ban':
        try {
          ban.run(m.ban.address, m.ban.until, m.ban.level);
        } catch (err) {
          reply({ type: 'failed', message: (err as Error).message, ban: true });
        }
        return;
      case 'close':
        try {
          if (failed !== null) write(failed);
        } catch {
          // nothing more can be done at exit; the main thread logged earlier failures
        }
        db.close();
        reply({ type: 'closed' });
        port.close();
        return;
    }
  });
}

if (parentPort !== null && typeof (workerData as { path?: unknown } | undefined)?.path === 'string') {
  run(parentPort, (workerData as { path: string }).path);
}
