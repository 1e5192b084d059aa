/**
 * The users file: one account per line, with HA1 digests only, never a password.
 *
 *   # Portier accounts: HA1 digests only (RFC 3261 §22, RFC 8760). Manage with: portier user add|del|list
 *   alice@example.test kind=phone realm=example.test md5=<32 hex> sha256=<64 hex>
 *
 * Fields are separated by whitespace; a line whose first non-blank character is
 * `#` is a comment; blank lines are ignored. The first field is the AOR
 * `user@domain` (no `sip:`), the others are `key=value` pairs, each exactly once:
 * `kind` (phone or door), `realm` (the digest realm the hashes were made for),
 * `md5` and `sha256` (HA1 = H(user:realm:password), RFC 7616 §3.4.2, lower-case hex).
 *
 * A bad line is reported with its 1-based line number and skipped; the rest
 * still loads. Writes (`portier user add|del`) keep every other line as it was,
 * replace the file atomically (temporary file, then rename) and keep it mode 0600:
 * an HA1 is enough to answer a digest challenge, so it must be kept secret.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { replaceFile } from './files.js';
import { parseDomain } from '../config/hosts.js';
import { unreadableReason } from '../config/errors.js';
import { normaliseEscapes } from '../registrar/aor.js';
import { URI_USER } from '../sip/chars.js';
import { detach } from '../sip/detach.js';
import { hostForUri } from '../sip/uri.js';

export type AccountKind = 'phone' | 'door';

export const ACCOUNT_KINDS: readonly AccountKind[] = ['phone', 'door'];

export interface Account {
  /** `user@domain`: the user part as written, the domain lower-cased (IPv6 in brackets). */
  aor: string;
  /** The user part of the AOR, case preserved; also the digest username. */
  user: string;
  /** Lower-case host name or IP literal (IPv6 without brackets). */
  domain: string;
  kind: AccountKind;
  /** The digest realm the HA1 digests were computed with. */
  realm: string;
  /** HA1 per algorithm, lower-case hex. */
  ha1: { md5: string; sha256: string };
}

export interface UsersProblem {
  /** 1-based line number in the file. */
  line: number;
  reason: string;
}

export const USERS_FILE_HEADER =
  '# Portier accounts: HA1 digests only (RFC 3261 §22, RFC 8760). Manage with: portier user add|del|list';

/** Mode of the users file: readable by its owner only. */
export const USERS_FILE_MODE = 0o600;

/** HA1 = H(username ":" realm ":" password), hex lower-case (RFC 2617 §3.2.2.2, RFC 7616 §3.4.2). No Unicode normalisation. */
export function ha1(algorithm: 'MD5' | 'SHA-256', user: string, realm: string, password: string): string {
  const h = createHash(algorithm === 'MD5' ? 'md5' : 'sha256');
  h.update(`${user}:${realm}:${password}`, 'utf8');
  return h.digest('hex');
}

// RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ).
const USER_PART = /^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$/;
// Same rule as `auth.realm` in the configuration: visible ASCII without spaces, quotes or backslashes.
const REALM = /^[!#-[\]-~]+$/;
const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** The lookup key: user part with escapes in one spelling (as the registrar's AORs), domain canonical. */
function keyOf(user: string, domain: string): string {
  return `${normaliseEscapes(user, URI_USER)}@${domain}`;
}

/** `user@domain` without a scheme; throws an Error saying what is wrong. */
function splitAor(text: string): { user: string; domain: string; aor: string } {
  const shown = JSON.stringify(text);
  if (text === '') throw new Error('the account must not be empty: write it as user@domain');
  if (/^sips?:/i.test(text)) throw new Error(`write the account as user@domain, without "${text.split(':')[0]}:" (got ${shown})`);
  if (/\s/.test(text)) throw new Error(`the account ${shown} must not contain spaces`);
  const at = text.indexOf('@');
  if (at < 0) throw new Error(`the account ${shown} must be user@domain`);
  if (text.indexOf('@', at + 1) >= 0) throw new Error(`the account ${shown} has more than one "@"`);
  const user = text.slice(0, at);
  if (user === '') throw new Error(`the account ${shown} has no user part before "@"`);
  if (!USER_PART.test(user)) {
    throw new Error(
      `the user part ${JSON.stringify(user)} of ${shown} may only contain letters, digits, -_.!~*'()&=+$,;?/ and %HH escapes`,
    );
  }
  let domain: string;
  try {
    domain = parseDomain(text.slice(at + 1));
  } catch (err) {
    const reason = (err as { reason?: string }).reason ?? (err as Error).message;
    throw new Error(`the domain of ${shown}: ${reason}`);
  }
  return { user, domain, aor: `${user}@${hostForUri(domain)}` };
}

/**
 * An account name as typed on the command line: `user@domain` or `sip:user@domain`.
 * The domain is validated and lower-cased; the user part keeps its case.
 */
export function parseAor(text: string): { user: string; domain: string; aor: string } {
  return splitAor(/^sip:/i.test(text) ? text.slice(4) : text);
}

/** Throws unless `realm` is usable as a digest realm: visible ASCII without spaces, quotes or backslashes. */
export function checkRealm(realm: string): void {
  if (!REALM.test(realm)) {
    throw new Error(`the realm ${JSON.stringify(realm)} must be visible ASCII without spaces, quotes or backslashes`);
  }
}

/** A new account for `aor` (as parseAor takes it) with the HA1 digests of `password` in `realm`. */
export function makeAccount(aor: string, password: string, realm: string, kind: AccountKind): Account {
  const { user, domain, aor: canonical } = parseAor(aor);
  checkRealm(realm);
  if (!ACCOUNT_KINDS.includes(kind)) throw new Error(`unknown kind ${JSON.stringify(kind)} (expected phone or door)`);
  return Object.freeze({
    aor: canonical,
    user,
    domain,
    kind,
    realm,
    ha1: Object.freeze({ md5: ha1('MD5', user, realm, password), sha256: ha1('SHA-256', user, realm, password) }),
  });
}

/** The file line for `a`, without a newline. */
export function formatAccount(a: Account): string {
  return `${a.aor} kind=${a.kind} realm=${a.realm} md5=${a.ha1.md5} sha256=${a.ha1.sha256}`;
}

/**
 * parseDomain results by text as received, null for text that is no
 * domain. Every digest and every REGISTER looks an account up by the host
 * of a URI, and a deployment has a handful of hosts: validating the same
 * one again is most of a lookup. parseDomain is pure, so the cache holds
 * across users-file reloads. Bounded: a flood of made-up hosts empties it
 * (and then costs what no cache costs) rather than growing it.
 */
const domains = new Map<string, string | null>();
const MAX_DOMAINS = 256;

// The last text asked for and its answer: a deployment has one domain or a few.
let lastDomainText = '';
let lastDomain: string | null = null;

function domainOrNull(text: string): string | null {
  if (text === lastDomainText && text !== '') return lastDomain;
  const d = parsedDomain(text);
  lastDomainText = detach(text);
  lastDomain = d;
  return d;
}

function parsedDomain(text: string): string | null {
  const known = domains.get(text);
  if (known !== undefined) return known;
  let d: string | null;
  try {
    d = parseDomain(text);
  } catch {
    d = null;
  }
  if (domains.size >= MAX_DOMAINS) domains.clear();
  domains.set(detach(text), d); // a copy: the key must not keep the message it came from
  return d;
}

/** Accounts by AOR; lookups are one Map read. */
export class Accounts {
  private readonly byKey = new Map<string, Account>();
  /** The same accounts by domain, then user part (escapes normalised): a lookup without a key string to build. */
  private readonly byDomain = new Map<string, Map<string, Account>>();
  // The last find(): for one REGISTER the gate and then the registrar ask
  // for the same account. Accounts never change (a reload makes new ones).
  // It keeps the strings of one request alive, no more.
  private lastUser = '';
  private lastDomain = '';
  private lastFound: Account | undefined = undefined;

  /** Keeps the first account of each AOR. */
  constructor(accounts: Iterable<Account> = []) {
    for (const a of accounts) {
      const key = keyOf(a.user, a.domain);
      if (this.byKey.has(key)) continue;
      this.byKey.set(key, a);
      let users = this.byDomain.get(a.domain);
      if (users === undefined) this.byDomain.set(a.domain, (users = new Map()));
      users.set(normaliseEscapes(a.user, URI_USER), a);
    }
  }

  /** `user@domain` (a leading `sip:` is allowed); the domain is compared lower-case. Undefined when unknown or malformed. */
  get(aor: string): Account | undefined {
    let parts: { user: string; domain: string };
    try {
      parts = parseAor(aor);
    } catch {
      return undefined;
    }
    return this.byKey.get(keyOf(parts.user, parts.domain));
  }

  /** By digest username and domain (any case, IPv6 with or without brackets). */
  find(user: string, domain: string): Account | undefined {
    if (user === this.lastUser && domain === this.lastDomain) return this.lastFound;
    const d = domainOrNull(domain);
    const found = d === null ? undefined : this.byDomain.get(d)?.get(normaliseEscapes(user, URI_USER));
    this.lastUser = user;
    this.lastDomain = domain;
    this.lastFound = found;
    return found;
  }

  /** Every account, in file order. */
  list(): Account[] {
    return [...this.byKey.values()];
  }

  get size(): number {
    return this.byKey.size;
  }
}

type LineResult = { kind: 'blank' } | { kind: 'account'; account: Account; key: string } | { kind: 'bad'; reason: string; key: string | null };

const KEYS = ['kind', 'realm', 'md5', 'sha256'] as const;

function parseLine(raw: string): LineResult {
  const line = raw.trim();
  if (line === '' || line.startsWith('#')) return { kind: 'blank' };
  const [first, ...fields] = line.split(/\s+/);
  let parts: { user: string; domain: string; aor: string };
  try {
    parts = splitAor(first);
  } catch (err) {
    return { kind: 'bad', reason: (err as Error).message, key: null };
  }
  const key = keyOf(parts.user, parts.domain);
  const bad = (reason: string): LineResult => ({ kind: 'bad', reason: `${parts.aor}: ${reason}`, key });
  const values = new Map<string, string>();
  for (const field of fields) {
    const eq = field.indexOf('=');
    const name = eq < 0 ? field : field.slice(0, eq);
    if (!(KEYS as readonly string[]).includes(name)) {
      return bad(`unknown field ${JSON.stringify(field.length > 40 ? `${field.slice(0, 40)}…` : field)} (expected ${KEYS.map((k) => `${k}=`).join(', ')})`);
    }
    if (eq < 0) return bad(`${name} needs a value: ${name}=…`);
    if (values.has(name)) return bad(`${name}= given twice`);
    values.set(name, field.slice(eq + 1));
  }
  const missing = KEYS.filter((k) => !values.has(k));
  if (missing.length > 0) return bad(`missing ${missing.map((k) => `${k}=`).join(', ')}`);
  const kind = values.get('kind') as string;
  if (!(ACCOUNT_KINDS as readonly string[]).includes(kind)) return bad(`kind=${kind}: expected phone or door`);
  const realm = values.get('realm') as string;
  if (!REALM.test(realm)) return bad(`realm=${realm}: must be visible ASCII without quotes or backslashes`);
  const md5 = (values.get('md5') as string).toLowerCase();
  if (!HEX32.test(md5)) return bad('md5= must be 32 hexadecimal digits');
  const sha256 = (values.get('sha256') as string).toLowerCase();
  if (!HEX64.test(sha256)) return bad('sha256= must be 64 hexadecimal digits');
  const account: Account = Object.freeze({ ...parts, kind: kind as AccountKind, realm, ha1: Object.freeze({ md5, sha256 }) });
  return { kind: 'account', account, key };
}

/** Reads users-file text. Bad lines are reported (1-based) and skipped; a repeated AOR keeps its first line. */
export function parseUsers(text: string): { accounts: Accounts; problems: UsersProblem[] } {
  const problems: UsersProblem[] = [];
  const lineOf = new Map<string, number>();
  const list: Account[] = [];
  splitLines(text).forEach((raw, i) => {
    const r = parseLine(raw);
    if (r.kind === 'blank') return;
    if (r.kind === 'bad') {
      problems.push({ line: i + 1, reason: r.reason });
      return;
    }
    const first = lineOf.get(r.key);
    if (first !== undefined) {
      problems.push({ line: i + 1, reason: `${r.account.aor}: duplicate of line ${first}; this line is ignored` });
      return;
    }
    lineOf.set(r.key, i + 1);
    list.push(r.account);
  });
  return { accounts: new Accounts(list), problems };
}

/** Lines as written (a CRLF line keeps its '\r', which parsing trims and writing keeps). */
function splitLines(text: string): string[] {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

function readError(path: string, err: unknown): Error {
  return new Error(`${path}: cannot read the users file: ${unreadableReason(err)}`);
}

/** Reads the file, or null when it does not exist. */
function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw readError(path, err);
  }
}

/** Loads a users file; a missing or unreadable file throws an Error naming the path and the cause ("no such file"). */
export function loadUsersFile(path: string): { accounts: Accounts; problems: UsersProblem[] } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw readError(path, err);
  }
  return parseUsers(text);
}

/**
 * Replaces `path` with `lines` atomically: a temporary file beside it,
 * fsync'd, then renamed over it. A new file gets mode 0600; an existing one
 * keeps its owner, group and mode, minus any access for others (0640
 * root:portier stays readable by the service; world access never survives).
 */
function writeLines(path: string, lines: string[]): void {
  let owner: { uid: number; gid: number } | null = null;
  let mode = USERS_FILE_MODE;
  try {
    const st = statSync(path);
    // Keep the owner (e.g. the portier service user when root runs `portier user add`); only root may.
    owner = { uid: st.uid, gid: st.gid };
    mode = (st.mode & 0o660) | 0o600;
  } catch {
    owner = null;
  }
  replaceFile(path, lines.map((l) => `${l}\n`).join(''), mode, owner);
}

/** The line index of each AOR key, as `parseUsers` would read it (the first good line wins). */
function scan(lines: string[]): Array<{ key: string | null; good: boolean }> {
  return lines.map((raw) => {
    const r = parseLine(raw);
    if (r.kind === 'blank') return { key: null, good: false };
    return { key: r.key, good: r.kind === 'account' };
  });
}

/**
 * Adds `account`, or replaces the line in effect for its AOR ('replaced').
 * Creates the file, with the header comment, when it does not exist.
 */
export function addToUsersFile(path: string, account: Account): 'added' | 'replaced' {
  const text = readText(path);
  const lines = text === null ? [USERS_FILE_HEADER] : splitLines(text);
  const key = keyOf(account.user, account.domain);
  const index = scan(lines).findIndex((l) => l.good && l.key === key);
  if (index >= 0) lines[index] = formatAccount(account);
  else lines.push(formatAccount(account));
  writeLines(path, lines);
  return index >= 0 ? 'replaced' : 'added';
}

/**
 * Removes every line for `aor` (as parseAor takes it), bad or duplicate ones
 * too, so that no older line comes back into effect. False when there was none.
 * A missing file throws, as loadUsersFile does.
 */
export function removeFromUsersFile(path: string, aor: string): boolean {
  const { user, domain } = parseAor(aor);
  const text = readText(path);
  if (text === null) throw readError(path, Object.assign(new Error('no such file'), { code: 'ENOENT' }));
  const lines = splitLines(text);
  const key = keyOf(user, domain);
  const marks = scan(lines);
  const kept = lines.filter((_, i) => marks[i].key !== key);
  if (kept.length === lines.length) return false;
  writeLines(path, kept);
  return true;
}
