// One-time provisioning links.
//
// A link is BASE/p/TOKEN, TOKEN 32 random bytes (base64url, 43 characters).
// Nothing that could be used in place of the link is written anywhere:
//
//   - the tokens file (written by `portier provision` only, mode 0600) holds
//     per link SHA-256(TOKEN) (the lookup key), the account, the expiry, and
//     the account's new password sealed with AES-256-GCM under a key derived
//     from TOKEN (HKDF-SHA256). Without the link, the file reveals neither
//     the link nor the password;
//   - the used file (written by the running server only, appended to and
//     fsync'd before the XML is sent) holds SHA-256(TOKEN) of every link
//     already fetched, so that a link works once, across restarts too.
//
// One writer per file, so no locking: `portier provision` rewrites the tokens
// file atomically (temporary file, rename), and the server notices by its
// modification time on the next request; the server only appends to the used
// file. With several Portier nodes each has its own used file: serve
// provisioning from one node.
//
//   ID EXPIRES-MS AOR SEALED        a line of the tokens file
//   ID USED-MS                      a line of the used file

import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { dirname } from 'node:path';
import { replaceFile } from '../auth/files.js';

/** 32 random bytes, base64url. */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

const TOKEN = /^[A-Za-z0-9_-]{43}$/;

export function isTokenSyntax(s: string): boolean {
  return TOKEN.test(s);
}

/** SHA-256 of the token, hex: how the files name a link. */
export function tokenId(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

function keyOf(token: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(token, 'utf8'), Buffer.alloc(0), 'portier provisioning password', 32));
}

/** The password sealed under the token: base64url(iv[12] | ciphertext | tag[16]). */
export function seal(token: string, password: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', keyOf(token), iv);
  const body = Buffer.concat([c.update(password, 'utf8'), c.final()]);
  return Buffer.concat([iv, body, c.getAuthTag()]).toString('base64url');
}

/** The password, or null when `sealed` was not made with this token (or was altered). */
export function unseal(token: string, sealed: string): string | null {
  const raw = Buffer.from(sealed, 'base64url');
  if (raw.length < 12 + 16 + 1) return null;
  try {
    const d = createDecipheriv('aes-256-gcm', keyOf(token), raw.subarray(0, 12));
    d.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]).toString('utf8');
  } catch {
    return null;
  }
}

export interface TokenRecord {
  id: string;
  /** Milliseconds since the epoch. */
  expires: number;
  aor: string;
  sealed: string;
}

export const TOKENS_FILE_HEADER = '# Portier provisioning links (portier provision): SHA-256 of each link, expiry (ms), account, sealed password. Never the link itself.';

const ID = /^[0-9a-f]{64}$/;

export function parseTokens(text: string): TokenRecord[] {
  const out: TokenRecord[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [id, expires, aor, sealed, extra] = line.split(/\s+/);
    if (extra !== undefined || !ID.test(id ?? '') || !/^\d+$/.test(expires ?? '') || aor === undefined || sealed === undefined) continue;
    out.push({ id, expires: Number(expires), aor, sealed });
  }
  return out;
}

/**
 * Replaces `path` with `text` atomically, mode 0600. A new file takes the
 * owner and group of `ownerFrom` (the users file, which the service can
 * read) when we may set them (root); an existing one keeps its own.
 */
export function writeFileAtomic(path: string, text: string, ownerFrom?: string): void {
  let owner: Stats | null = null;
  try {
    owner = statSync(path);
  } catch {
    try {
      owner = ownerFrom === undefined ? null : statSync(ownerFrom);
    } catch {
      owner = null;
    }
  }
  replaceFile(path, text, 0o600, owner === null ? null : { uid: owner.uid, gid: owner.gid });
}

function readOrEmpty(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/**
 * `portier provision`: adds a link for `aor`. Older links of the same account
 * (their sealed password is no longer the account's) and expired links are
 * dropped.
 */
export function addToken(path: string, record: TokenRecord, now: number, ownerFrom?: string): void {
  const kept = parseTokens(readOrEmpty(path)).filter((r) => r.expires > now && r.aor !== record.aor);
  const lines = [TOKENS_FILE_HEADER, ...[...kept, record].map((r) => `${r.id} ${r.expires} ${r.aor} ${r.sealed}`)];
  writeFileAtomic(path, lines.join('\n') + '\n', ownerFrom);
}

export type Lookup =
  | { kind: 'ok'; record: TokenRecord; password: string }
  | { kind: 'unknown' }
  | { kind: 'used'; record: TokenRecord }
  | { kind: 'expired'; record: TokenRecord };

/** The server's view of both files. Every call is synchronous: a lookup and its markUsed cannot interleave with another request's. */
export class TokenRegistry {
  private records = new Map<string, TokenRecord>();
  private used = new Set<string>();
  private seen: { mtimeMs: number; size: number; ino: number } | null = null;

  constructor(
    readonly tokensFile: string,
    readonly usedFile: string,
    private readonly now: () => number = Date.now,
    /** How long a used link is remembered: past the longest token-ttl it could have had. */
    private readonly rememberMs = 31 * 86400_000,
  ) {
    this.loadUsed(true);
    this.refresh();
  }

  /** Reads the tokens file again when it changed (modification time, size or inode). */
  refresh(): void {
    let st: Stats;
    try {
      st = statSync(this.tokensFile);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.records = new Map();
      this.seen = null;
      return;
    }
    const now = { mtimeMs: st.mtimeMs, size: st.size, ino: st.ino };
    if (this.seen !== null && this.seen.mtimeMs === now.mtimeMs && this.seen.size === now.size && this.seen.ino === now.ino) return;
    this.records = new Map(parseTokens(readFileSync(this.tokensFile, 'utf8')).map((r) => [r.id, r]));
    this.seen = now;
  }

  /** The link's record, its password unsealed, unless unknown, used or expired. */
  lookup(token: string): Lookup {
    if (!isTokenSyntax(token)) return { kind: 'unknown' };
    this.refresh();
    const id = tokenId(token);
    const record = this.records.get(id);
    // Map lookups by a SHA-256 of 256 random bits: nothing to learn from timing. The compare is belt and braces.
    if (record === undefined || !timingSafeEqual(Buffer.from(record.id), Buffer.from(id))) return { kind: 'unknown' };
    if (this.used.has(id)) return { kind: 'used', record };
    if (record.expires <= this.now()) return { kind: 'expired', record };
    const password = unseal(token, record.sealed);
    if (password === null) return { kind: 'unknown' };
    return { kind: 'ok', record, password };
  }

  /** Records the link as used, on disk (fsync'd) before anything is sent. Throws when it cannot. */
  markUsed(id: string): void {
    mkdirSync(dirname(this.usedFile), { recursive: true });
    const fd = openSync(this.usedFile, 'a', 0o600);
    try {
      writeSync(fd, `${id} ${this.now()}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.used.add(id);
  }

  /** Loads the used file; at start, also rewrites it without the entries too old to matter. */
  private loadUsed(prune: boolean): void {
    const text = readOrEmpty(this.usedFile);
    const cutoff = this.now() - this.rememberMs;
    const keep: string[] = [];
    let dropped = 0;
    for (const raw of text.split('\n')) {
      const [id, at] = raw.trim().split(/\s+/);
      if (id === undefined || !ID.test(id) || !/^\d+$/.test(at ?? '')) continue;
      if (Number(at) < cutoff) {
        dropped++;
        continue;
      }
      this.used.add(id);
      keep.push(`${id} ${at}`);
    }
    if (prune && dropped > 0) writeFileAtomic(this.usedFile, keep.map((l) => l + '\n').join(''));
  }

  /** For tests and logs: how many links are known. */
  get size(): number {
    return this.records.size;
  }
}
