// The provisioning listener (`provisioning.listen`), HTTPS with the tls:
// certificate (plain HTTP only on loopback, for tests):
//
//   GET /p/TOKEN        the Linphone XML for one account, with its password,
//                       once: a second fetch gets 410, an expired link 410,
//                       an unknown one 404 (src/provisioning/tokens.ts)
//   GET /config         with media.turn: the same XML without the password and
//                       with fresh TURN credentials, for the app's later starts
//                       (misc.config-uri); HTTP digest with the account's
//                       SIP credentials (the users file's HA1)
//   GET /contacts/vcard Linhome's device list: the door stations of the
//                       account's ring groups (provisioning.devices), vCard
//                       4.0; HTTP digest likewise
//   POST /xmlrpc        [assistant] xmlrpc_url, and /api/... [account_creator]
//   ANY /api/...        url (FlexiAPI), in the XML with provisioning.
//                       push-gateway: portier (served either way): HTTP
//                       digest likewise, then an XML-RPC refusal or a
//                       FlexiAPI 404: Portier creates no push gateway
//                       account (./account-manager.ts)
//
// HEAD is answered like GET without a body (and, for /p/TOKEN, without using
// the link up); other methods get 405. Nothing here logs a token or a
// password: a served link is logged with its account only.

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { statSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { DigestAuthenticator, type DigestAlgorithm } from '../auth/digest.js';
import { ha1, parseAor, type Account, type Accounts } from '../auth/users.js';
import type { Config, ProvisioningConfig } from '../config/index.js';
import { readTurnSecret, tokensPath } from '../config/provisioning.js';
import { closeHttp, httpAddress, listenHttp, requestPath } from '../http-listen.js';
import { RoutingNames } from '../routing/names.js';
import { parseCredentials, parseUri } from '../sip/index.js';
import { FLEXIAPI_NOT_FOUND, MAX_REQUEST_BODY, answerXmlRpc, renderXmlRpc } from './account-manager.js';
import { TokenRegistry } from './tokens.js';
import { iceServer, turnCredentials } from './turn.js';
import { provisioningXml, vcardList, type NatXml, type VcardDevice } from './xml.js';

export interface ProvisioningLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface ProvisioningDeps {
  /** The running configuration (a SIGHUP may replace it). */
  config: () => Config;
  /** The accounts the SIP side authenticates with now. */
  accounts: () => Accounts | null;
  /** The users file changed on disk since it was read (`portier provision` set a password): read it again. */
  usersChanged: () => void;
  log: ProvisioningLog;
  /** Milliseconds since the epoch; Date.now by default (tests inject a clock). */
  now?: () => number;
}

/** Where the server records used links: beside the registration store, in the service's state directory. */
export function usedTokensPath(config: Config): string {
  return join(dirname(config.storage.path), 'provisioning-used');
}

/** The SIP server the apps register to: provisioning.sip-server, else base-url's host with the transport's port. */
export function appSipServer(p: ProvisioningConfig): { host: string; port: number; transport: 'tls' | 'tcp' | 'udp' } {
  const port = p.transport === 'tls' ? 5061 : 5060;
  if (p.sipServer === null) {
    const host = new URL(p.baseUrl).hostname;
    return { host: host.replace(/^\[(.*)\]$/, '$1'), port, transport: p.transport };
  }
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(p.sipServer) as RegExpExecArray;
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: m[2] === undefined ? port : Number(m[2]), transport: p.transport };
}

/** Ring groups `account` belongs to, directly or through a group that is a member of another. */
export function groupsOf(config: Config, account: { user: string; domain: string }): Set<string> {
  const names = new RoutingNames(config.domains, Object.keys(config.groups), config.aliases);
  const direct = new Map<string, string[]>(); // group → groups it contains
  const mine = new Set<string>();
  for (const [name, g] of Object.entries(config.groups)) {
    for (const m of g.members) {
      let ref;
      try {
        ref = names.resolve(m, name);
      } catch {
        continue;
      }
      if (ref.kind === 'group') direct.set(name, [...(direct.get(name) ?? []), ref.name]);
      else if (ref.kind === 'local') {
        const u = parseUri(ref.uri);
        if (u !== null && u.user === account.user && u.hostname.toLowerCase() === account.domain) mine.add(name);
      }
    }
  }
  // A group containing one of mine rings me too.
  for (let grew = true; grew; ) {
    grew = false;
    for (const [outer, inner] of direct) {
      if (!mine.has(outer) && inner.some((g) => mine.has(g))) {
        mine.add(outer);
        grew = true;
      }
    }
  }
  return mine;
}

/** The door stations an account is shown: provisioning.devices in one of its groups. */
export function devicesFor(config: Config, account: { user: string; domain: string }): VcardDevice[] {
  const p = config.provisioning;
  if (p === null) return [];
  const groups = groupsOf(config, account);
  return p.devices
    .filter((d) => d.groups.some((g) => groups.has(g)))
    .map((d) => {
      const aor = parseAor(d.account.includes('@') ? d.account : `${d.account}@${config.domains[0]}`);
      return { uri: `sip:${aor.aor}`, name: d.name, type: d.type, dtmf: d.dtmf, actions: d.actions };
    });
}

const XML_HEADERS = { 'Content-Type': 'application/xml; charset=utf-8', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' };

/** Wrong digest answers from one address within the window before it gets 429. */
const MAX_AUTH_FAILURES = 10;
const AUTH_FAILURE_WINDOW_MS = 600_000;

export class ProvisioningServer {
  private readonly server: Server;
  private readonly registry: TokenRegistry;
  private readonly now: () => number;
  private digest: DigestAuthenticator | null = null;
  private digestKey = '';
  private usersSeen: string | null;
  private readonly failures = new LRUCache<string, number>({ max: 10_000, ttl: AUTH_FAILURE_WINDOW_MS });
  private closed: Promise<void> | null = null;

  constructor(private readonly deps: ProvisioningDeps) {
    const config = deps.config();
    const p = config.provisioning;
    const auth = config.auth;
    if (p === null || auth === null) throw new Error('provisioning needs the provisioning: and auth: sections');
    this.now = deps.now ?? Date.now;
    this.registry = new TokenRegistry(tokensPath(p, auth.users), usedTokensPath(config), this.now);
    this.usersSeen = mtimeOf(auth.users);
    const handler = (req: IncomingMessage, res: ServerResponse) => this.handle(req, res);
    if (p.baseUrl.startsWith('https:')) {
      const tls = config.tls;
      if (tls === null) throw new Error('provisioning: an https base-url needs the tls: section');
      this.server = createHttpsServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key), minVersion: tls.minVersion }, handler);
    } else {
      this.server = createHttpServer(handler);
    }
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 10_000;
    this.server.maxHeadersCount = 50;
  }

  /** Binds the socket; rejects with an error naming provisioning.listen. */
  start(): Promise<void> {
    const l = (this.deps.config().provisioning as ProvisioningConfig).listen;
    return listenHttp(this.server, l, 'provisioning.listen');
  }

  address(): { address: string; port: number } | null {
    return httpAddress(this.server);
  }

  close(): Promise<void> {
    this.closed ??= closeHttp(this.server);
    return this.closed;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = requestPath(req.url);
    const link = /^\/p\/([^/]*)$/.exec(path);
    if (path === '/xmlrpc' || path === '/api' || path.startsWith('/api/')) return this.guard(req, res, logPathOf(path), () => this.accountManager(req, res, path));
    const known = link !== null || path === '/config' || path === '/contacts/vcard';
    if (!known) return plain(res, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return plain(res, 405, 'method not allowed\n');
    }
    this.guard(req, res, link !== null ? '/p/…' : path, () => {
      if (link !== null) this.link(req, res, link[1]);
      else if (path === '/config') this.refresh(req, res);
      else this.vcards(req, res);
    });
  }

  /** Runs a handler; an exception is logged (with `logPath`, never a token) and answered 500. */
  private guard(req: IncomingMessage, res: ServerResponse, logPath: string, handler: () => void): void {
    try {
      handler();
    } catch (err) {
      this.deps.log.warn({ err: err instanceof Error ? err.message : String(err), path: logPath }, 'provisioning request failed');
      if (!res.headersSent) plain(res, 500, 'internal error\n');
      else res.destroy();
    }
  }

  /**
   * The account-manager URLs of the XML: the body is size-checked before
   * anything, then HTTP digest as for /config (so the 429 after repeated
   * failures too), then an XML-RPC refusal or FlexiAPI's 404.
   */
  private accountManager(req: IncomingMessage, res: ServerResponse, path: string): void {
    const xmlrpc = path === '/xmlrpc';
    if (xmlrpc && req.method !== 'POST') {
      res.setHeader('Allow', 'POST');
      return plain(res, 405, 'method not allowed\n');
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (!Number.isFinite(declared) || declared > MAX_REQUEST_BODY) return tooLarge(req, res);
    const account = this.authenticate(req, res);
    if (account === null) return;
    const log = { aor: account.aor, path: logPathOf(path), source: req.socket.remoteAddress, userAgent: req.headers['user-agent'] };
    if (!xmlrpc) {
      this.deps.log.info({ ...log, method: req.method }, 'provisioning: FlexiAPI request refused: Portier creates no push gateway account');
      res.writeHead(404, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      return void res.end(FLEXIAPI_NOT_FOUND);
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'text/xml' && type !== 'application/xml') return plain(res, 415, 'XML-RPC takes text/xml\n');
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_REQUEST_BODY) {
        req.removeAllListeners('data');
        return tooLarge(req, res);
      }
      chunks.push(c);
    });
    req.on('end', () =>
      this.guard(req, res, log.path, () => {
        if (size > MAX_REQUEST_BODY || res.headersSent) return;
        let body: string;
        try {
          body = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
        } catch {
          body = '\u0000'; // not UTF-8: answered as not well formed
        }
        const answer = answerXmlRpc(body);
        const outcome = 'result' in answer ? { result: answer.result } : { faultCode: answer.fault.code };
        this.deps.log.info({ ...log, method: answer.method, ...outcome }, 'provisioning: XML-RPC call refused: Portier creates no push gateway account');
        res.writeHead(200, { 'Content-Type': 'text/xml; charset=utf-8', 'Cache-Control': 'no-store' });
        res.end(renderXmlRpc(answer));
      }),
    );
  }

  /** The users file changed since the SIP side read it: have it read again before we trust its hashes. */
  private freshAccounts(): Accounts | null {
    const auth = this.deps.config().auth;
    if (auth === null) return null;
    const m = mtimeOf(auth.users);
    if (m !== this.usersSeen) {
      this.usersSeen = m;
      this.deps.usersChanged();
    }
    return this.deps.accounts();
  }

  /** GET /p/TOKEN: the one-time link. Synchronous from lookup to markUsed, so two fetches cannot both pass. */
  private link(req: IncomingMessage, res: ServerResponse, token: string): void {
    const config = this.deps.config();
    const found = this.registry.lookup(token);
    if (found.kind === 'unknown') return plain(res, 404, 'no such provisioning link\n');
    if (found.kind === 'used' || found.kind === 'expired') {
      this.deps.log.warn({ aor: found.record.aor, reason: found.kind, source: req.socket.remoteAddress }, `provisioning link refused: ${found.kind === 'used' ? 'already used' : 'expired'}`);
      return plain(res, 410, found.kind === 'used' ? 'this provisioning link was already used; ask for a new one\n' : 'this provisioning link has expired; ask for a new one\n');
    }
    const accounts = this.freshAccounts();
    const account = accounts?.get(found.record.aor);
    const auth = config.auth;
    // The sealed password must still be the account's: `portier user add` may have changed it since.
    if (account === undefined || auth === null || ha1('SHA-256', account.user, account.realm, found.password) !== account.ha1.sha256) {
      this.deps.log.warn({ aor: found.record.aor, reason: account === undefined ? 'no-account' : 'password-changed' }, 'provisioning link refused: the account was removed or its password changed since the link was made');
      return plain(res, 410, 'this provisioning link is no longer valid; ask for a new one\n');
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, XML_HEADERS);
      return void res.end();
    }
    const xml = this.xml(config, account, found.password);
    this.registry.markUsed(found.record.id);
    this.deps.log.info({ aor: account.aor, source: req.socket.remoteAddress, userAgent: req.headers['user-agent'] }, 'provisioning link used: the app was given its account');
    res.writeHead(200, XML_HEADERS);
    res.end(xml);
  }

  /** GET /config: the XML again for an authenticated app, without the password, with fresh TURN credentials. */
  private refresh(req: IncomingMessage, res: ServerResponse): void {
    const config = this.deps.config();
    if (config.media.turn === null) return plain(res, 404, 'not found\n');
    const account = this.authenticate(req, res);
    if (account === null) return;
    this.deps.log.info({ aor: account.aor, source: req.socket.remoteAddress }, 'provisioning refreshed: fresh TURN credentials');
    res.writeHead(200, XML_HEADERS);
    res.end(req.method === 'HEAD' ? undefined : this.xml(config, account, null));
  }

  /** GET /contacts/vcard: the door stations of the account's ring groups. */
  private vcards(req: IncomingMessage, res: ServerResponse): void {
    const config = this.deps.config();
    const account = this.authenticate(req, res);
    if (account === null) return;
    res.writeHead(200, { 'Content-Type': 'text/vcard; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : vcardList(devicesFor(config, account)));
  }

  /** HTTP digest (RFC 7616) against the users file, as the SIP side does; null once a 401 or 429 is sent. */
  private authenticate(req: IncomingMessage, res: ServerResponse): Account | null {
    const config = this.deps.config();
    const auth = config.auth;
    if (auth === null) {
      plain(res, 404, 'not found\n');
      return null;
    }
    const key = `${auth.realm}|${auth.algorithms.join(',')}|${auth.nonceLifetime}`;
    if (this.digest === null || this.digestKey !== key) {
      this.digest = new DigestAuthenticator({ realm: auth.realm, algorithms: auth.algorithms, nonceLifetimeMs: auth.nonceLifetime * 1000, clock: this.now });
      this.digestKey = key;
    }
    const digest = this.digest;
    const address = req.socket.remoteAddress ?? '';
    if ((this.failures.get(address) ?? 0) >= MAX_AUTH_FAILURES) {
      plain(res, 429, 'too many failed attempts; try again later\n');
      return null;
    }
    const challenge = (stale: boolean) => {
      res.writeHead(401, { 'WWW-Authenticate': digest.challenge(stale, address), 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end('authentication required\n');
      return null;
    };
    const header = req.headers.authorization;
    const creds = header === undefined ? null : parseCredentials(header);
    if (creds === null) return challenge(false);
    const accounts = this.freshAccounts();
    if (accounts === null) return challenge(false);
    const lookup = (username: string): Account | undefined => {
      for (const d of config.domains) {
        const a = accounts.find(username, d);
        if (a !== undefined) return a;
      }
      return undefined;
    };
    const ha1For = (username: string, algorithm: DigestAlgorithm) => {
      const a = lookup(username);
      if (a === undefined || a.realm !== auth.realm) return undefined;
      return algorithm === 'MD5' ? a.ha1.md5 : a.ha1.sha256;
    };
    const r = digest.check(req.method ?? 'GET', creds, ha1For, address);
    if (r.kind === 'ok') return lookup(r.username) ?? challenge(false);
    if (r.kind === 'wrong') {
      this.failures.set(address, (this.failures.get(address) ?? 0) + 1);
      this.deps.log.warn({ source: address, user: r.username }, 'provisioning: wrong credentials');
    }
    return challenge(r.kind === 'stale');
  }

  /** The XML for `account`; `password` null in a refresh. */
  private xml(config: Config, account: Account, password: string | null): string {
    const p = config.provisioning as ProvisioningConfig;
    const devices = devicesFor(config, account);
    const withActions = devices.find((d) => d.actions.length > 0);
    return provisioningXml({
      account: { user: account.user, domain: account.domain, realm: account.realm, password, server: appSipServer(p), regExpires: p.regExpires },
      nat: this.nat(config, account),
      vcardUrl: p.devices.length > 0 ? `${p.baseUrl}/contacts/vcard` : null,
      refreshUrl: config.media.turn !== null ? `${p.baseUrl}/config` : null,
      defaultActions: withActions === undefined ? null : { method: withActions.dtmf, actions: withActions.actions },
      accountManager: p.pushGateway === 'portier' ? { xmlrpcUrl: `${p.baseUrl}/xmlrpc`, flexiApiUrl: `${p.baseUrl}/api/` } : null,
    });
  }

  /** The NAT policy: the TURN server (it answers STUN too) with fresh credentials, else the STUN server; null without either. */
  private nat(config: Config, account: Account): NatXml | null {
    const m = config.media;
    if (m.turn !== null) {
      const server = iceServer(m.turn.url);
      const creds = turnCredentials(readTurnSecret(m.turn.secret), account.aor, m.turn.ttl, this.now());
      return { stunServer: server.hostPort, turn: { username: creds.username, password: creds.password, transport: server.transport } };
    }
    if (m.stun !== null) return { stunServer: iceServer(m.stun).hostPort, turn: null };
    return null;
  }
}

/** Modification time, inode and size: a rewritten file (rename over it) differs in at least one. */
function mtimeOf(path: string): string | null {
  try {
    const st = statSync(path);
    return `${st.mtimeMs}:${st.ino}:${st.size}`;
  } catch {
    return null;
  }
}

/** A FlexiAPI path as logged: its first segment only (later ones may be tokens, e.g. provisioning/TOKEN). */
function logPathOf(path: string): string {
  const parts = path.split('/');
  return parts.length > 3 ? `${parts.slice(0, 3).join('/')}/…` : path;
}

/** 413, and the connection closed: the rest of an oversized body is not read. */
function tooLarge(req: IncomingMessage, res: ServerResponse): void {
  res.setHeader('Connection', 'close');
  plain(res, 413, `request body larger than ${MAX_REQUEST_BODY} bytes\n`);
  req.pause();
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(text);
}
