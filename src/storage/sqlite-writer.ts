// The SQLite writer thread: batches of binding rows arrive from the store on
// the main thread and are written here, so that SQLite's B-tree work (about
// 5 µs a row) never runs on the event loop that answers SIP.
//
// Messages in:  {type: 'batch', rows: Row[]}   {type: 'ban', ban}   {type: 'close'}
// Messages out: {type: 'ready'}  {type: 'written', rows}    {type: 'failed', message}   {type: 'closed'}
// A batch that fails is kept and tried again with the next one (newer rows win).

import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

/** [aor, key, expiresAt, JSON] to write, or [aor, key] to delete. */
export type Row = [string, string, number, string] | [string, string];

export interface WriterBan {
  address: string;
  until: number;
  level: number;
}

export type WriterMessage = { type: 'batch'; rows: Row[] } | { type: 'ban'; ban: WriterBan } | { type: 'close' };
export type WriterReply = { type: 'ready' } | { type: 'written'; rows: number } | { type: 'failed'; message: string; ban?: boolean } | { type: 'closed' };

const CHUNK = 100;

function run(port: NonNullable<typeof parentPort>, path: string): void {
  const db = new Database(path);
  db.pragma('busy_timeout = 5000');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  const one = db.prepare('INSERT OR REPLACE INTO bindings (aor, key, expires_at, data) VALUES (?, ?, ?, ?)');
  const chunk = db.prepare('INSERT OR REPLACE INTO bindings (aor, key, expires_at, data) VALUES ' + Array(CHUNK).fill('(?, ?, ?, ?)').join(', '));
  const del = db.prepare('DELETE FROM bindings WHERE aor = ? AND key = ?');
  const ban = db.prepare('INSERT OR REPLACE INTO bans (address, until, level) VALUES (?, ?, ?)');
  const write = db.transaction((rows: Map<string, Row>) => {
    const args: unknown[] = [];
    for (const r of rows.values()) {
      if (r.length === 2) {
        del.run(r[0], r[1]);
        continue;
      }
      args.push(r[0], r[1], r[2], r[3]);
      if (args.length === CHUNK * 4) {
        chunk.run(args);
        args.length = 0;
      }
    }
    for (let i = 0; i < args.length; i += 4) one.run(args[i], args[i + 1], args[i + 2], args[i + 3]);
  });
  let pending = new Map<string, Row>();
  const reply = (m: WriterReply) => port.postMessage(m);
  reply({ type: 'ready' });

  port.on('message', (m: WriterMessage) => {
    switch (m.type) {
      case 'batch': {
        for (const r of m.rows) pending.set(r[0] + '\n' + r[1], r);
        const rows = pending;
        try {
          write(rows);
          pending = new Map();
          reply({ type: 'written', rows: rows.size });
        } catch (err) {
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
          if (pending.size > 0) write(pending);
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
