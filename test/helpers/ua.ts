// A small SIP user agent for end-to-end tests over real loopback sockets
// (UDP, TCP and TLS), written from RFC 3261 independently of Portier's own
// transaction layer: only src/sip's parser and framer are borrowed.
//
// UAC: REGISTER (optionally asking for a GRUU, RFC 5627), INVITE with the
// ACK rules of §13.2.2.4 (2xx: end to end, new branch, to the remote target
// along the Route set) and §17.1.1.3 (non-2xx: same branch, the response's
// To), CANCEL (§9.1), and requests inside a dialog (§12.2.1.1, loose and
// strict routing). Extra 2xx from other forks are ACKed and BYEd (§13.2.2.4).
// UAS: INVITE behaviours (ring, answer, reject, never answer; CANCEL gives
// 200 + 487), 200 to BYE/INFO/re-INVITE inside a dialog, Record-Route copied
// into dialog-creating responses (§12.1.1).
// Over UDP: requests retransmitted per Timer A/E, non-2xx INVITE finals per
// Timer G, and 2xx per §13.3.1.4, until the response or ACK arrives; over
// TCP nothing is retransmitted. Every timer is cleared by close().

import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { parseAndValidate, parseNameAddr, SipMessage, SipParseError, StreamFramer, unquote, type NameAddr } from '../../src/sip/index.js';

export type UATransport = 'udp' | 'tcp' | 'tls';

/** TLS client settings of a UA on transport 'tls'. */
export interface UATlsOptions {
  /** CA trusted for Portier's certificate. */
  ca?: string;
  /** Client certificate and key (verify-clients: optional or required). */
  cert?: string;
  key?: string;
  /** SNI and the name checked in Portier's certificate (default localhost). */
  servername?: string;
}

export interface UAOptions {
  transport: UATransport;
  user: string;
  domain: string;
  proxyPort: number;
  proxyHost?: string;
  /** Retransmission timers of the UA itself, ms (RFC 3261 defaults 500 / 4000). */
  t1?: number;
  t2?: number;
  /** +sip.instance URN of this device; a fresh urn:uuid by default. */
  instance?: string;
  /** Loopback address this UA binds to (default 127.0.0.1): tests of per-source rules use 127.0.0.2 and up. */
  localHost?: string;
  /** Answer 401/407 challenges with digest credentials (RFC 3261 §22.2), once per request. */
  password?: string;
  /** Digest username (default: user). */
  authUser?: string;
  /** Algorithms this UA can answer, in its order of preference (default SHA-256, MD5). */
  algorithms?: string[];
  /** Transport 'tls': trust and client certificate. */
  tls?: UATlsOptions;
  /**
   * The Contact URI this UA claims instead of its real address, e.g. a
   * private `sip:phone@192.168.1.20:5060` as a phone behind NAT sends.
   */
  contact?: string;
  /** Contact as `sips:user@host:port` (transport 'tls'): what RFC 3261 §8.1.1.8 asks in a sips dialog. */
  sipsContact?: boolean;
}

/** A challenge as the UA read it. */
export interface Challenge {
  header: 'www-authenticate' | 'proxy-authenticate';
  params: Map<string, string>;
}

/** Reads WWW-Authenticate / Proxy-Authenticate values of a response (comma lists of name=value inside one scheme). */
export function challengesOf(res: SipMessage): Challenge[] {
  const out: Challenge[] = [];
  for (const header of ['www-authenticate', 'proxy-authenticate'] as const) {
    for (const v of res.getAll(header)) {
      const m = /^\s*Digest\s+(.*)$/is.exec(v);
      if (m === null) continue;
      const params = new Map<string, string>();
      const re = /([a-zA-Z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]+)\s*(?:,|$)/g;
      let p: RegExpExecArray | null;
      while ((p = re.exec(m[1])) !== null) params.set(p[1].toLowerCase(), p[2].startsWith('"') ? unquote(p[2]) : p[2]);
      out.push({ header, params });
    }
  }
  return out;
}

/** An Authorization / Proxy-Authorization value answering `c` (qop=auth when offered, RFC 2617 style without). */
export function digestCredentials(c: Challenge, o: { method: string; uri: string; user: string; password: string; nc?: number; cnonce?: string }): string {
  const alg = c.params.get('algorithm') ?? 'MD5';
  const h = (s: string) => createHash(alg.toUpperCase() === 'SHA-256' ? 'sha256' : 'md5').update(s, 'utf8').digest('hex');
  const realm = c.params.get('realm') ?? '';
  const nonce = c.params.get('nonce') ?? '';
  const ha1 = h(`${o.user}:${realm}:${o.password}`);
  const ha2 = h(`${o.method}:${o.uri}`);
  const qops = (c.params.get('qop') ?? '').split(',').map((q) => q.trim().toLowerCase());
  if (qops.includes('auth')) {
    const nc = (o.nc ?? 1).toString(16).padStart(8, '0');
    const cnonce = o.cnonce ?? rnd(8);
    const response = h(`${ha1}:${nonce}:${nc}:${cnonce}:auth:${ha2}`);
    return `Digest username="${o.user}", realm="${realm}", nonce="${nonce}", uri="${o.uri}", response="${response}", algorithm=${alg}, cnonce="${cnonce}", qop=auth, nc=${nc}`;
  }
  return `Digest username="${o.user}", realm="${realm}", nonce="${nonce}", uri="${o.uri}", response="${h(`${ha1}:${nonce}:${ha2}`)}", algorithm=${alg}`;
}

export interface RegisterOptions {
  expires?: number;
  /** A +sip.instance other than the UA's own, or false for none. */
  instance?: string | false;
  /** Put `gruu` in Supported (RFC 5627) and, once granted, use the pub-gruu as Contact in dialogs (as liblinphone does). */
  gruu?: boolean;
  /** Raw extra Contact header parameters, e.g. `reg-id=1;q=0.5`. */
  contactParams?: string;
  /** Raw extra Contact URI parameters (inside <>), e.g. RFC 8599 `pn-provider=fcm;pn-prid=TOKEN`. */
  uriParams?: string;
}

export interface CallOptions {
  sdp?: string;
  maxForwards?: number;
  /** Extra raw header lines. */
  headers?: string[];
  /** Preloaded `Route: <sip:proxy;lr>` as linphone sends (default true). */
  preloadedRoute?: boolean;
  /** Keep dialogs created by a second 2xx instead of ACK + BYE (default false). */
  keepExtraDialogs?: boolean;
}

export type InviteBehaviour =
  | { action: 'answer'; ring?: boolean; after?: number; sdp?: string }
  | { action: 'reject'; code: number; ring?: boolean; after?: number }
  /** 180 and nothing else: only a CANCEL (200, then 487) ends it. */
  | { action: 'ring' };

export type Match = ((m: SipMessage) => boolean) | { method?: string; status?: number; cseq?: string; callId?: string };

export interface TimelineEntry {
  dir: 'in' | 'out';
  at: number;
  msg: SipMessage;
  dropped: boolean;
}

interface Hop {
  address: string;
  port: number;
}

const REASONS: Record<number, string> = { 100: 'Trying', 180: 'Ringing', 200: 'OK', 405: 'Method Not Allowed', 481: 'Call/Transaction Does Not Exist', 486: 'Busy Here', 487: 'Request Terminated', 603: 'Decline' };
const ALLOW = 'INVITE, ACK, CANCEL, OPTIONS, BYE, INFO, UPDATE';
const rnd = (bytes = 8): string => randomBytes(bytes).toString('hex');
export const newBranch = (): string => 'z9hG4bK' + rnd();

export function matches(m: SipMessage, match: Match): boolean {
  if (typeof match === 'function') return match(m);
  if (match.method !== undefined && m.method !== match.method) return false;
  if (match.status !== undefined && m.status !== match.status) return false;
  if (match.cseq !== undefined && m.cseq().method !== match.cseq) return false;
  if (match.callId !== undefined && m.callId() !== match.callId) return false;
  return true;
}

function parse(bytes: Buffer): SipMessage {
  const m = parseAndValidate(bytes, { transport: 'tcp' });
  if (m instanceof SipParseError) throw new Error('test UA built an invalid message: ' + m.reason);
  return m;
}

/**
 * The head of a response to `req` (§8.2.6), up to and with the blank line:
 * status line, the Vias, From, Call-ID and CSeq copied, `to` as given (with
 * the tag the caller chose), `headers`, and Content-Type application/sdp when
 * the body (of `bodyLength` bytes) is not empty.
 */
export function responseHead(req: SipMessage, code: number, reason: string, to: string, headers: string[], bodyLength: number): string {
  const lines = [
    `SIP/2.0 ${code} ${reason}`,
    ...req.getAll('via').map((v) => 'Via: ' + v),
    'From: ' + req.get('from'),
    'To: ' + to,
    'Call-ID: ' + req.callId(),
    'CSeq: ' + req.get('cseq'),
    ...headers,
    ...(bodyLength > 0 ? ['Content-Type: application/sdp'] : []),
    `Content-Length: ${bodyLength}`,
  ];
  return lines.join('\r\n') + '\r\n\r\n';
}

/**
 * A framer for the bytes a raw TCP or TLS socket receives: each whole
 * message that parses as SIP goes into `replies`; pings and framing errors
 * are ignored. The caller pushes the socket's data into `framer`.
 */
export function replyCollector(transport: 'tcp' | 'tls'): { replies: SipMessage[]; framer: StreamFramer } {
  const replies: SipMessage[] = [];
  const framer = new StreamFramer(
    {
      onFrame: (b) => {
        const m = parseAndValidate(b, { transport });
        if (m instanceof SipMessage) replies.push(m);
      },
      onPing: () => {},
      onFramingError: () => {},
    },
    { maxMessageSize: 65535 },
  );
  return { replies, framer };
}

export function defaultSdp(user: string): string {
  const id = Math.floor(Math.random() * 1e6);
  const port = 20000 + 2 * Math.floor(Math.random() * 5000);
  return ['v=0', `o=${user} ${id} ${id} IN IP4 127.0.0.1`, 's=Talk', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${port} RTP/AVP 96 0 8 101`, 'a=rtpmap:96 opus/48000/2', 'a=fmtp:96 useinbandfec=1', 'a=rtpmap:101 telephone-event/8000', ''].join('\r\n');
}

export class UA {
  readonly received: SipMessage[] = [];
  readonly sent: SipMessage[] = [];
  readonly dropped: SipMessage[] = [];
  readonly timeline: TimelineEntry[] = [];
  /** Problems the UA met on its own (bad route set, stray ACK...): tests expect it empty. */
  readonly errors: Error[] = [];
  readonly incoming: IncomingCall[] = [];
  onInvite: (inv: IncomingCall) => InviteBehaviour | void = () => ({ action: 'answer', ring: true, after: 50 });
  readonly t1: number;
  readonly t2: number;
  readonly instance: string;
  pubGruu: string | null = null;
  tempGruu: string | null = null;
  localPort = 0;

  private udp: dgram.Socket | null = null;
  private tcp: net.Socket | null = null;
  private closed = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly waiters = new Set<{ match: Match; resolve: (m: SipMessage) => void }>();
  private readonly clientTxs = new Map<string, ClientTx>();
  private readonly serverTxs = new Map<string, ServerTx>();
  /** Dialogs by Call-ID, local tag, remote tag. */
  readonly dialogs = new Map<string, Dialog>();
  private readonly drops: Array<{ dir: 'in' | 'out'; match: Match; left: number }> = [];
  private readonly regCallId = rnd(10);
  private readonly regTag = rnd(5);
  private regSeq = 0;
  private regContactParams = '';
  private regUriParams = '';
  private regInstance: string | null = null;
  private useGruu = false;
  /** The credentials header line of the last request this UA authenticated, for replay tests. */
  lastCredentials: string | null = null;

  private constructor(readonly opts: UAOptions) {
    this.t1 = opts.t1 ?? 500;
    this.t2 = opts.t2 ?? 4000;
    this.instance = opts.instance ?? 'urn:uuid:' + randomUUID();
  }

  static async create(opts: UAOptions): Promise<UA> {
    const ua = new UA(opts);
    await ua.open();
    return ua;
  }

  get user(): string {
    return this.opts.user;
  }
  get transport(): UATransport {
    return this.opts.transport;
  }
  get aor(): string {
    return `sip:${this.opts.user}@${this.opts.domain}`;
  }
  get localHost(): string {
    return this.opts.localHost ?? '127.0.0.1';
  }
  get proxy(): Hop {
    return { address: this.opts.proxyHost ?? '127.0.0.1', port: this.opts.proxyPort };
  }
  /** The device's own address (or the one it claims, opts.contact): what goes in Contact of REGISTER. */
  get contactUri(): string {
    if (this.opts.contact !== undefined) return this.opts.contact;
    if (this.opts.sipsContact) return `sips:${this.opts.user}@${this.localHost}:${this.localPort}`;
    return `sip:${this.opts.user}@${this.localHost}:${this.localPort};transport=${this.opts.transport}`;
  }
  /** CRLF pongs received on the connection (RFC 5626 §4.4.1). */
  pongs = 0;

  /** Sends a double-CRLF keep-alive ping down the connection and resolves at its CRLF pong (rejects after `ms`). */
  ping(ms = 2000): Promise<void> {
    if (this.tcp === null) return Promise.reject(new Error(`${this.user}: ping needs a connection`));
    const before = this.pongs;
    this.tcp.write('\r\n\r\n');
    return new Promise((resolve, reject) => {
      const end = Date.now() + ms;
      const poll = (): void => {
        if (this.pongs > before) resolve();
        else if (Date.now() > end || this.closed) reject(new Error(`${this.user}: no pong within ${ms} ms`));
        else this.later(poll, 5);
      };
      poll();
    });
  }
  /** The Contact of INVITEs and dialog-creating responses: the pub-gruu once granted and asked for. */
  get dialogContact(): string {
    return this.useGruu && this.pubGruu !== null ? this.pubGruu : this.contactUri;
  }

  private async open(): Promise<void> {
    const host = this.proxy.address;
    if (this.opts.transport === 'udp') {
      const s = dgram.createSocket('udp4');
      this.udp = s;
      s.on('message', (buf, rinfo) => this.onData(buf, { address: rinfo.address, port: rinfo.port }));
      s.on('error', (e) => this.errors.push(e));
      await new Promise<void>((resolve) => s.bind(0, this.localHost, resolve));
      this.localPort = s.address().port;
      return;
    }
    const o = this.opts.tls ?? {};
    // tls.connect hands localAddress on to the TCP connect.
    const secure: tls.ConnectionOptions & Pick<net.TcpNetConnectOpts, 'localAddress'> = { host, port: this.opts.proxyPort, localAddress: this.localHost, ca: o.ca, cert: o.cert, key: o.key, servername: o.servername ?? 'localhost' };
    const s = this.opts.transport === 'tls' ? tls.connect(secure) : net.connect({ host, port: this.opts.proxyPort, localAddress: this.localHost });
    this.tcp = s;
    const framer = new StreamFramer(
      {
        onFrame: (b) => this.onData(b, this.proxy),
        onPing: () => {
          if (!this.closed) s.write('\r\n');
        },
        onFramingError: (why) => this.errors.push(new Error('framing error from the proxy: ' + why)),
      },
      { maxMessageSize: 65535 },
    );
    s.on('data', (d: Buffer) => {
      if (d.length === 2 && d[0] === 0x0d && d[1] === 0x0a) {
        this.pongs++;
        return;
      }
      framer.push(d);
    });
    s.on('error', (e) => {
      if (!this.closed) this.errors.push(e);
    });
    await new Promise<void>((resolve, reject) => {
      s.once(this.opts.transport === 'tls' ? 'secureConnect' : 'connect', () => resolve());
      s.once('error', reject);
    });
    this.localPort = s.localPort!;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.waiters.clear();
    if (this.udp) await new Promise<void>((r) => this.udp!.close(() => r()));
    if (this.tcp) this.tcp.destroy();
  }

  // ---- timers, waiting, loss ----

  /** @internal */
  later(fn: () => void, ms: number): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
    return t;
  }
  /** @internal */
  cancel(t: NodeJS.Timeout | null): void {
    if (t === null) return;
    clearTimeout(t);
    this.timers.delete(t);
  }

  /** The first received message (past or future) that matches, within `ms`. */
  waitFor(match: Match, ms = 3000, what = 'a message'): Promise<SipMessage> {
    const found = this.received.find((m) => matches(m, match));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { match, resolve: (m: SipMessage) => (this.cancel(timer), resolve(m)) };
      const timer = this.later(() => {
        this.waiters.delete(w);
        reject(new Error(`${this.user}: no ${what} within ${ms} ms`));
      }, ms);
      this.waiters.add(w);
    });
  }

  filter(match: Match): SipMessage[] {
    return this.received.filter((m) => matches(m, match));
  }

  sentMatching(match: Match): SipMessage[] {
    return this.sent.filter((m) => matches(m, match));
  }

  /** Simulated loss: the next `count` received messages that match are discarded before the UA sees them. */
  dropIncoming(match: Match, count = 1): void {
    this.drops.push({ dir: 'in', match, left: count });
  }
  /** Simulated loss of what this UA sends (recorded in `sent` and the timeline, never transmitted). */
  dropOutgoing(match: Match, count = 1): void {
    this.drops.push({ dir: 'out', match, left: count });
  }

  private lose(dir: 'in' | 'out', m: SipMessage): boolean {
    const rule = this.drops.find((d) => d.dir === dir && d.left > 0 && matches(m, d.match));
    if (rule === undefined) return false;
    rule.left--;
    return true;
  }

  // ---- sending ----

  /** @internal Sends bytes to `hop` (UDP) or down the connection (TCP). */
  transmit(bytes: Buffer, hop: Hop, msg: SipMessage): void {
    if (this.closed) return;
    const lost = this.lose('out', msg);
    this.sent.push(msg);
    this.timeline.push({ dir: 'out', at: Date.now(), msg, dropped: lost });
    if (lost) return;
    if (this.udp) this.udp.send(bytes, hop.port, hop.address);
    else this.tcp!.write(bytes);
  }

  /** @internal §8.1.2 / §12.2.1.1: where a request goes, from the top Route or the Request-URI. */
  hopFor(na: NameAddr): Hop {
    const u = na.uri;
    if (!u.isSip) throw new Error(`${this.user}: cannot route to ${na.raw}`);
    // A sips URI is TLS whatever its transport says (RFC 5630: transport=tcp is TLS over TCP).
    let transport = (u.param('transport') ?? (u.scheme === 'sips' ? 'tls' : 'udp')).toLowerCase();
    if (u.scheme === 'sips' && transport === 'tcp') transport = 'tls';
    if (transport !== this.opts.transport) throw new Error(`${this.user} (${this.opts.transport}): next hop ${na.raw} asks for ${transport}`);
    const address = net.isIP(u.hostname) ? u.hostname : this.proxy.address;
    const port = u.port ?? (transport === 'tls' ? 5061 : 5060);
    if (this.tcp && (address !== this.proxy.address || port !== this.proxy.port)) {
      throw new Error(`${this.user} (tcp): next hop ${na.raw} is not the proxy connection ${this.proxy.address}:${this.proxy.port}`);
    }
    return { address, port };
  }

  /** @internal Builds a request this UA sends; Content-Length is computed. */
  request(r: { method: string; ruri: string; branch: string; from: string; to: string; callId: string; cseq: number; routes?: string[]; contact?: string; maxForwards?: number; headers?: string[]; body?: string; contentType?: string }): { bytes: Buffer; msg: SipMessage } {
    const body = Buffer.from(r.body ?? '', 'utf8');
    const lines = [
      `${r.method} ${r.ruri} SIP/2.0`,
      `Via: SIP/2.0/${this.opts.transport.toUpperCase()} ${this.localHost}:${this.localPort};branch=${r.branch};rport`,
      `From: ${r.from}`,
      `To: ${r.to}`,
      `CSeq: ${r.cseq} ${r.method}`,
      `Call-ID: ${r.callId}`,
      `Max-Forwards: ${r.maxForwards ?? 70}`,
      ...(r.routes ?? []).map((v) => 'Route: ' + v),
      ...(r.contact !== undefined ? ['Contact: ' + r.contact] : []),
      ...(r.headers ?? []),
      'User-Agent: PortierTestUA/1.0',
      ...(body.length > 0 ? [`Content-Type: ${r.contentType ?? 'application/sdp'}`] : []),
      `Content-Length: ${body.length}`,
    ];
    const bytes = Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
    return { bytes, msg: parse(bytes) };
  }

  /** @internal Starts a client transaction (Timer A/E retransmissions over UDP, Timer B/F). */
  startClient(bytes: Buffer, msg: SipMessage, hop: Hop): ClientTx {
    const tx = new ClientTx(this, bytes, msg, hop);
    this.clientTxs.set(msg.topVia()!.branch + ' ' + msg.method, tx);
    tx.start();
    return tx;
  }

  // ---- registration ----

  async register(o: RegisterOptions = {}): Promise<SipMessage> {
    this.regInstance = o.instance === false ? null : (o.instance ?? this.instance);
    this.regContactParams = o.contactParams ? ';' + o.contactParams : '';
    this.regUriParams = o.uriParams ? ';' + o.uriParams : '';
    this.useGruu = o.gruu ?? false;
    const res = await this.sendRegister(o.expires ?? 600);
    this.pubGruu = this.tempGruu = null;
    if (res.status === 200) {
      const mine = (res.contacts() ?? []).find((c) => {
        const inst = c.param('+sip.instance');
        return this.regInstance !== null && typeof inst === 'string' ? unquote(inst).toLowerCase() === `<${this.regInstance}>`.toLowerCase() : c.uriText === this.contactUri;
      });
      const pub = mine?.param('pub-gruu');
      const temp = mine?.param('temp-gruu');
      if (typeof pub === 'string') this.pubGruu = unquote(pub);
      if (typeof temp === 'string') this.tempGruu = unquote(temp);
    }
    return res;
  }

  /** REGISTER with the last Contact and Expires: 0. */
  async unregister(): Promise<SipMessage> {
    const res = await this.sendRegister(0);
    this.pubGruu = this.tempGruu = null;
    return res;
  }

  private async sendRegister(expires: number): Promise<SipMessage> {
    const res = await this.sendRegisterOnce(expires, []);
    const auth = this.credentialsFor(res, 'REGISTER', `sip:${this.opts.domain}`);
    return auth === null ? res : this.sendRegisterOnce(expires, [auth]);
  }

  /** The header line answering a 401/407 to `method`, or null when there is nothing (more) to answer. */
  credentialsFor(res: SipMessage, method: string, uri: string): string | null {
    if ((res.status !== 401 && res.status !== 407) || this.opts.password === undefined) return null;
    const prefs = this.opts.algorithms ?? ['SHA-256', 'MD5'];
    const all = challengesOf(res);
    const chosen = prefs.map((a) => all.find((c) => (c.params.get('algorithm') ?? 'MD5').toUpperCase() === a.toUpperCase())).find((c) => c !== undefined);
    if (chosen === undefined) return null;
    const value = digestCredentials(chosen, { method, uri, user: this.opts.authUser ?? this.opts.user, password: this.opts.password });
    this.lastCredentials = `${chosen.header === 'www-authenticate' ? 'Authorization' : 'Proxy-Authorization'}: ${value}`;
    return this.lastCredentials;
  }

  private sendRegisterOnce(expires: number, extra: string[]): Promise<SipMessage> {
    const name = `"${this.opts.user}" <${this.aor}>`;
    const inst = this.regInstance !== null ? `;+sip.instance="<${this.regInstance}>"` : '';
    const { bytes, msg } = this.request({
      method: 'REGISTER',
      ruri: `sip:${this.opts.domain}`,
      branch: newBranch(),
      from: `${name};tag=${this.regTag}`,
      to: name,
      callId: this.regCallId,
      cseq: 20 + ++this.regSeq,
      contact: `"${this.opts.user}" <${this.contactUri}${this.regUriParams}>${inst}${this.regContactParams}`,
      headers: [`Supported: replaces, outbound${this.useGruu ? ', gruu' : ''}`, 'Accept: application/sdp', `Expires: ${expires}`, ...extra],
    });
    return this.startClient(bytes, msg, this.proxy).done;
  }

  // ---- calls ----

  call(target: string, o: CallOptions = {}): Call {
    const callId = rnd(10) + '@127.0.0.1';
    const from = `"${this.opts.user}" <${this.aor}>;tag=${rnd(5)}`;
    const cseq = 1 + Math.floor(Math.random() * 1000);
    const { bytes, msg } = this.buildInvite(target, o, callId, from, cseq, []);
    const call = new Call(this, msg, o.keepExtraDialogs ?? false);
    const tx = this.startClient(bytes, msg, this.proxy);
    call.attach(tx);
    // §22.2: a challenged INVITE is sent again, same Call-ID and From tag, next CSeq, with credentials.
    let retried = false;
    call.on('final', (res: SipMessage) => {
      if (retried || res.cseq().seq !== cseq) return;
      const auth = this.credentialsFor(res, 'INVITE', target);
      if (auth === null) return;
      retried = true;
      const again = this.buildInvite(target, o, callId, from, cseq + 1, [auth]);
      call.invite = again.msg;
      call.attach(this.startClient(again.bytes, again.msg, this.proxy));
    });
    return call;
  }

  private buildInvite(target: string, o: CallOptions, callId: string, from: string, cseq: number, extra: string[]): { bytes: Buffer; msg: SipMessage } {
    const inst = this.regInstance !== null ? `;+sip.instance="<${this.regInstance}>"` : '';
    return this.request({
      method: 'INVITE',
      ruri: target,
      branch: newBranch(),
      from,
      to: `<${target}>`,
      callId,
      cseq,
      maxForwards: o.maxForwards,
      routes: o.preloadedRoute === false ? [] : [`<sip:${this.proxy.address}:${this.proxy.port};transport=${this.opts.transport};lr>`],
      contact: `<${this.dialogContact}>${inst}`,
      headers: [`Supported: replaces, outbound${this.useGruu ? ', gruu' : ''}`, `Allow: ${ALLOW}`, ...(o.headers ?? []), ...extra],
      body: o.sdp ?? defaultSdp(this.opts.user),
    });
  }

  /** The next incoming call (past or future) not yet handed out by waitIncoming(). */
  async waitIncoming(ms = 3000): Promise<IncomingCall> {
    const i = this.incomingTaken++;
    await this.waitFor(() => this.incoming.length > i, ms, `incoming call #${i + 1}`);
    return this.incoming[i];
  }
  private incomingTaken = 0;

  /** @internal */
  dialogKey(callId: string, localTag: string, remoteTag: string): string {
    return callId + '|' + localTag + '|' + remoteTag;
  }

  // ---- receiving ----

  private onData(buf: Buffer, from: Hop): void {
    if (this.closed) return;
    const m = parseAndValidate(buf, { transport: this.opts.transport });
    if (m instanceof SipParseError) {
      this.errors.push(new Error(`${this.user}: unparseable message (${m.reason}): ${buf.toString('latin1').slice(0, 80)}`));
      return;
    }
    const lost = this.lose('in', m);
    this.timeline.push({ dir: 'in', at: Date.now(), msg: m, dropped: lost });
    if (lost) {
      this.dropped.push(m);
      return;
    }
    this.received.push(m);
    try {
      if (m.isRequest) this.onRequest(m, from);
      else {
        const tx = this.clientTxs.get(m.topVia()?.branch + ' ' + m.cseq().method);
        if (tx === undefined) throw new Error(`${this.user}: ${m.status} response matching no request sent (${m.cseq().method})`);
        tx.receive(m);
      }
    } catch (e) {
      this.errors.push(e as Error);
    }
    for (const w of [...this.waiters]) {
      if (matches(m, w.match)) {
        this.waiters.delete(w);
        w.resolve(m);
      }
    }
  }

  private onRequest(req: SipMessage, from: Hop): void {
    const branch = req.topVia()?.branch ?? '';
    const to = req.to().tag;
    if (req.method === 'ACK') {
      const inv = this.serverTxs.get(branch + ' INVITE');
      if (inv !== undefined && inv.finalStatus >= 300) return inv.acked();
      const d = to ? this.dialogs.get(this.dialogKey(req.callId(), to, req.from().tag ?? '')) : undefined;
      if (d === undefined) throw new Error(`${this.user}: ACK matching no transaction or dialog: ${req.uri}`);
      d.requests.push(req);
      d.pending2xx.get(req.cseq().seq)?.acked();
      return;
    }
    const old = this.serverTxs.get(branch + ' ' + req.method);
    if (old !== undefined) return old.onRetransmission(); // not passed up
    const tx = new ServerTx(this, req, from);
    this.serverTxs.set(branch + ' ' + req.method, tx);
    if (req.method === 'CANCEL') {
      const inv = this.serverTxs.get(branch + ' INVITE');
      if (inv === undefined || inv.call === null) return void tx.respond(481);
      tx.respond(200);
      if (inv.finalStatus === 0) {
        inv.call.cancelled = true;
        inv.respond(487);
      }
      return;
    }
    if (to) {
      const d = this.dialogs.get(this.dialogKey(req.callId(), to, req.from().tag ?? ''));
      if (d === undefined) return void tx.respond(481);
      d.requests.push(req);
      if (req.method === 'INVITE') {
        tx.respond(200, { headers: [`Contact: <${this.dialogContact}>`, `Allow: ${ALLOW}`], body: defaultSdp(this.user) });
        d.pending2xx.set(req.cseq().seq, tx);
      } else tx.respond(200);
      if (req.method === 'BYE') d.terminated = true;
      return;
    }
    if (req.method === 'INVITE') {
      const inv = new IncomingCall(this, req, tx);
      tx.call = inv;
      this.incoming.push(inv);
      const b = this.onInvite(inv);
      if (b) inv.run(b);
      return;
    }
    tx.respond(req.method === 'OPTIONS' ? 200 : 405, { headers: [`Allow: ${ALLOW}`] });
  }
}

/** A client transaction of the UA (RFC 3261 §17.1, timers with the UA's T1/T2). */
export class ClientTx {
  readonly responses: SipMessage[] = [];
  final: SipMessage | null = null;
  readonly done: Promise<SipMessage>;
  /** @internal End-to-end ACKs sent for 2xx to this INVITE, by To tag: resent for each 2xx copy. */
  readonly acks = new Map<string, { bytes: Buffer; msg: SipMessage; hop: Hop }>();
  /** Every response, retransmissions included (the INVITE's ACK logic hangs here). */
  onResponse: ((res: SipMessage) => void) | null = null;
  private resolve!: (m: SipMessage) => void;
  private reject!: (e: Error) => void;
  private retransmit: NodeJS.Timeout | null = null;
  private timeout: NodeJS.Timeout | null = null;
  private interval: number;

  constructor(
    private readonly ua: UA,
    readonly bytes: Buffer,
    readonly request: SipMessage,
    readonly hop: Hop,
  ) {
    this.interval = ua.t1;
    this.done = new Promise<SipMessage>((res, rej) => ((this.resolve = res), (this.reject = rej)));
    this.done.catch(() => {}); // awaited by whoever cares; never an unhandled rejection
  }

  get isInvite(): boolean {
    return this.request.method === 'INVITE';
  }

  start(): void {
    this.ua.transmit(this.bytes, this.hop, this.request);
    if (this.ua.transport === 'udp') this.scheduleRetransmit();
    this.timeout = this.ua.later(() => {
      this.ua.cancel(this.retransmit);
      this.reject(new Error(`${this.ua.user}: no final response to ${this.request.method} ${this.request.uri} within 64*T1`));
    }, 64 * this.ua.t1);
  }

  private scheduleRetransmit(): void {
    this.retransmit = this.ua.later(() => {
      this.ua.transmit(this.bytes, this.hop, this.request);
      // Timer A doubles without bound, Timer E up to T2 (§17.1.1.2, §17.1.2.2).
      this.interval = this.isInvite ? this.interval * 2 : Math.min(this.interval * 2, this.ua.t2);
      this.scheduleRetransmit();
    }, this.interval);
  }

  receive(res: SipMessage): void {
    this.responses.push(res);
    if (res.status < 200) {
      if (this.isInvite) this.ua.cancel(this.retransmit);
      else this.interval = this.ua.t2;
    } else if (this.final === null) {
      this.final = res;
      this.ua.cancel(this.retransmit);
      this.ua.cancel(this.timeout);
      this.resolve(res);
    }
    this.onResponse?.(res);
  }
}

/** A server transaction of the UA; an INVITE's final response is resent over UDP until its ACK (Timer G / §13.3.1.4). */
export class ServerTx {
  finalStatus = 0;
  call: IncomingCall | null = null;
  private last: { bytes: Buffer; msg: SipMessage } | null = null;
  private retransmit: NodeJS.Timeout | null = null;
  private hop: Hop;

  constructor(
    private readonly ua: UA,
    readonly request: SipMessage,
    from: Hop,
  ) {
    // §18.2.2 and RFC 3581: rport → the source; else received / sent-by.
    const v = request.topVia()!;
    this.hop = v.params.has('rport') ? from : { address: v.received ?? v.host, port: v.port ?? 5060 };
  }

  respond(code: number, o: { headers?: string[]; body?: string; toTag?: string } = {}): SipMessage {
    const req = this.request;
    let to = req.get('to')!;
    if (code > 100 && req.to().tag === null) to += ';tag=' + (o.toTag ?? this.call?.localTag ?? rnd(5));
    const body = Buffer.from(o.body ?? '', 'utf8');
    const head = responseHead(req, code, REASONS[code] ?? 'Response', to, o.headers ?? [], body.length);
    const bytes = Buffer.concat([Buffer.from(head, 'latin1'), body]);
    const msg = parse(bytes);
    this.last = { bytes, msg };
    if (code >= 200) this.finalStatus = code;
    this.ua.transmit(bytes, this.hop, msg);
    if (code >= 200 && req.method === 'INVITE' && this.ua.transport === 'udp') this.resendUntilAck(this.ua.t1, 0);
    return msg;
  }

  private resendUntilAck(interval: number, elapsed: number): void {
    if (elapsed + interval > 64 * this.ua.t1) return; // Timer H / §13.3.1.4: give up
    this.retransmit = this.ua.later(() => {
      this.retransmitLast();
      this.resendUntilAck(Math.min(interval * 2, this.ua.t2), elapsed + interval);
    }, interval);
  }

  /** §17.2.1: the last response again; RFC 6026 §7.1: absorbed once a 2xx went out (the core resends that one). */
  onRetransmission(): void {
    if (this.request.method === 'INVITE' && this.finalStatus >= 200 && this.finalStatus < 300) return;
    this.retransmitLast();
  }

  retransmitLast(): void {
    if (this.last !== null) this.ua.transmit(this.last.bytes, this.hop, this.last.msg);
  }

  acked(): void {
    this.ua.cancel(this.retransmit);
    this.retransmit = null;
  }
}

/**
 * A dialog (§12): the same object on the UAC and UAS side. Requests sent in
 * it follow the Route set to the remote target; requests received in it are
 * kept in `requests` (ACKs included).
 */
export class Dialog {
  readonly requests: SipMessage[] = [];
  terminated = false;
  /** @internal 2xx to INVITEs received in the dialog (and the initial one), by CSeq, awaiting ACK. */
  readonly pending2xx = new Map<number, ServerTx>();

  constructor(
    private readonly ua: UA,
    readonly callId: string,
    /** Our From (UAC) or To (UAS) value, tag included. */
    readonly local: string,
    /** The peer's, tag included. */
    readonly remote: string,
    readonly remoteTarget: string,
    /** Route set, in the order Route headers are written (§12.1.1, §12.1.2). */
    readonly routeSet: NameAddr[],
    public localSeq: number,
  ) {}

  get remoteTag(): string {
    return parseNameAddr(this.remote)?.tag ?? '';
  }

  /** §12.2.1.1: Request-URI and Route headers for a request in the dialog, and its next hop. */
  private target(): { ruri: string; routes: string[]; hop: Hop } {
    const rs = this.routeSet;
    if (rs.length === 0) return { ruri: this.remoteTarget, routes: [], hop: this.ua.hopFor(parseContact(this.remoteTarget)) };
    if (rs[0].uri.hasParam('lr')) return { ruri: this.remoteTarget, routes: rs.map((r) => r.raw), hop: this.ua.hopFor(rs[0]) };
    // Strict router: it becomes the Request-URI, the remote target the last Route.
    return { ruri: rs[0].uriText, routes: [...rs.slice(1).map((r) => r.raw), `<${this.remoteTarget}>`], hop: this.ua.hopFor(rs[0]) };
  }

  /** @internal The ACK for a 2xx to the INVITE with CSeq `seq` (§13.2.2.4): new branch, end to end. */
  buildAck(seq: number): { bytes: Buffer; msg: SipMessage; hop: Hop } {
    const { ruri, routes, hop } = this.target();
    const r = this.ua.request({ method: 'ACK', ruri, branch: newBranch(), from: this.local, to: this.remote, callId: this.callId, cseq: seq, routes });
    return { ...r, hop };
  }

  send(method: string, o: { body?: string; contentType?: string; headers?: string[] } = {}): ClientTx {
    const { ruri, routes, hop } = this.target();
    this.localSeq++;
    const { bytes, msg } = this.ua.request({
      method,
      ruri,
      branch: newBranch(),
      from: this.local,
      to: this.remote,
      callId: this.callId,
      cseq: this.localSeq,
      routes,
      contact: method === 'INVITE' ? `<${this.ua.dialogContact}>` : undefined,
      headers: o.headers,
      body: o.body,
      contentType: o.contentType,
    });
    const tx = this.ua.startClient(bytes, msg, hop);
    if (method === 'INVITE') tx.onResponse = (res) => ackInviteResponse(this.ua, tx, res, () => this);
    return tx;
  }

  bye(): Promise<SipMessage> {
    this.terminated = true;
    return this.send('BYE').done;
  }

  /** In-dialog INFO, by default a DTMF digit as linphone sends it (application/dtmf-relay). */
  info(body = 'Signal=1\r\nDuration=250\r\n', contentType = 'application/dtmf-relay'): Promise<SipMessage> {
    return this.send('INFO', { body, contentType }).done;
  }

  /** A re-INVITE with a fresh offer; its 2xx is ACKed. */
  reinvite(sdp?: string): Promise<SipMessage> {
    return this.send('INVITE', { body: sdp ?? defaultSdp('reinvite') }).done;
  }
}

function parseContact(uri: string): NameAddr {
  const m = parse(Buffer.from(`OPTIONS ${uri} SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKx\r\nFrom: <sip:x@x>;tag=x\r\nTo: <${uri}>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`, 'latin1'));
  return m.to();
}

/** ACK for a non-2xx (§17.1.1.3) or CANCEL (§9.1): the INVITE's Request-URI, branch, From, Call-ID, CSeq number and Route. */
function derivedFromInvite(ua: UA, inv: SipMessage, method: 'ACK' | 'CANCEL', to: string): { bytes: Buffer; msg: SipMessage } {
  const { uri: ruri } = inv;
  return ua.request({ method, ruri, branch: inv.topVia()!.branch!, from: inv.get('from')!, to, callId: inv.callId(), cseq: inv.cseq().seq, routes: inv.getAll('route'), maxForwards: inv.maxForwards() ?? 70 });
}

/**
 * What a UAC does with each response to an INVITE it sent: non-2xx finals
 * get the hop-by-hop ACK (§17.1.1.3: same Via branch, Request-URI and Route
 * as the INVITE, To of the response); each 2xx, its copies included, the
 * end-to-end ACK of its dialog (§13.2.2.4).
 */
function ackInviteResponse(ua: UA, tx: ClientTx, res: SipMessage, dialogFor: (res: SipMessage) => Dialog | null): void {
  if (res.status < 200) return;
  const inv = tx.request;
  if (res.status >= 300) {
    const { bytes, msg } = derivedFromInvite(ua, inv, 'ACK', res.get('to')!);
    ua.transmit(bytes, tx.hop, msg);
    return;
  }
  const d = dialogFor(res);
  if (d === null) return;
  let ack = tx.acks.get(d.remoteTag);
  if (ack === undefined) {
    ack = d.buildAck(inv.cseq().seq);
    tx.acks.set(d.remoteTag, ack);
  }
  ua.transmit(ack.bytes, ack.hop, ack.msg);
}

/** An INVITE this UA sent outside a dialog, and what came of it. */
export class Call extends EventEmitter {
  readonly responses: SipMessage[] = [];
  /** Dialogs created by 2xx responses, first one first; `extraDialogs` lists those this UA ended. */
  readonly dialogs: Dialog[] = [];
  readonly extraDialogs: Dialog[] = [];
  tx!: ClientTx;

  constructor(
    private readonly ua: UA,
    /** The INVITE sent last (the one with credentials, after a challenge). */
    public invite: SipMessage,
    private readonly keepExtra: boolean,
  ) {
    super();
  }

  /** @internal */
  attach(tx: ClientTx): void {
    this.tx = tx;
    tx.onResponse = (res) => {
      this.responses.push(res);
      try {
        ackInviteResponse(this.ua, tx, res, (r) => this.dialogOf(r));
      } catch (e) {
        this.ua.errors.push(e as Error);
      }
      this.emit('response', res);
      this.emit(res.status < 200 ? 'provisional' : 'final', res);
    };
  }

  get callId(): string {
    return this.invite.callId();
  }

  private dialogOf(res: SipMessage): Dialog {
    const tag = res.to().tag ?? '';
    const known = this.dialogs.find((d) => d.remoteTag === tag) ?? this.extraDialogs.find((d) => d.remoteTag === tag);
    if (known) return known;
    const rr = res.recordRoutes() ?? [];
    const contact = res.contacts()?.[0];
    if (contact === undefined) throw new Error(`${this.ua.user}: 2xx without Contact`);
    const d = new Dialog(this.ua, this.callId, this.invite.get('from')!, res.get('to')!, contact.uriText, rr.reverse(), this.invite.cseq().seq);
    this.ua.dialogs.set(this.ua.dialogKey(this.callId, this.invite.from().tag!, tag), d);
    if (this.dialogs.length === 0 || this.keepExtra) this.dialogs.push(d);
    else {
      // §13.2.2.4: a dialog the UAC does not want is ACKed, then ended with BYE.
      this.extraDialogs.push(d);
      this.ua.later(() => d.bye().catch((e: Error) => this.ua.errors.push(e)), 0);
    }
    return d;
  }

  /** The first dialog (throws when the call was not answered). */
  get dialog(): Dialog {
    if (this.dialogs.length === 0) throw new Error(`${this.ua.user}: call ${this.callId} has no dialog`);
    return this.dialogs[0];
  }

  /** The first response with that status (past or future), within `ms`. */
  response(status: number, ms = 3000): Promise<SipMessage> {
    return this.ua.waitFor((m) => !m.isRequest && m.status === status && m.callId() === this.callId && m.cseq().method === 'INVITE', ms, `${status} to INVITE`);
  }

  /** The first final response, within `ms`. */
  final(ms = 5000): Promise<SipMessage> {
    return this.ua.waitFor((m) => !m.isRequest && m.status >= 200 && m.callId() === this.callId && m.cseq().method === 'INVITE' && m.cseq().seq === this.invite.cseq().seq, ms, 'final response to INVITE');
  }

  /** Sends the very same INVITE again (same branch), as a UDP retransmission would. */
  retransmit(): void {
    this.ua.transmit(this.tx.bytes, this.tx.hop, this.invite);
  }

  /** CANCEL (§9.1), after a provisional response as the RFC asks; resolves with the CANCEL's final response. */
  async cancel(ms = 3000): Promise<SipMessage> {
    await this.ua.waitFor((m) => !m.isRequest && m.status < 200 && m.callId() === this.callId, ms, 'provisional before CANCEL');
    const { bytes, msg } = derivedFromInvite(this.ua, this.invite, 'CANCEL', this.invite.get('to')!);
    return this.ua.startClient(bytes, msg, this.tx.hop).done;
  }

  bye(): Promise<SipMessage> {
    return this.dialog.bye();
  }
  info(body?: string, contentType?: string): Promise<SipMessage> {
    return this.dialog.info(body, contentType);
  }
  reinvite(sdp?: string): Promise<SipMessage> {
    return this.dialog.reinvite(sdp);
  }
}

/** An INVITE this UA received outside a dialog (the UAS side of a call). */
export class IncomingCall {
  readonly localTag = rnd(5);
  cancelled = false;
  dialog: Dialog | null = null;

  constructor(
    private readonly ua: UA,
    readonly request: SipMessage,
    private readonly tx: ServerTx,
  ) {}

  get finalStatus(): number {
    return this.tx.finalStatus;
  }

  run(b: InviteBehaviour): void {
    if (b.action === 'ring' || b.ring) this.ring();
    if (b.action === 'ring') return;
    const act = (): void => {
      if (this.tx.finalStatus !== 0) return; // cancelled meanwhile
      if (b.action === 'answer') this.answer(b.sdp);
      else this.reject(b.code);
    };
    if (b.after) this.ua.later(act, b.after);
    else act();
  }

  /** Record-Route is copied into every response that can create a dialog (§12.1.1). */
  private rr(): string[] {
    return this.request.getAll('record-route').map((v) => 'Record-Route: ' + v);
  }

  ring(): SipMessage {
    return this.tx.respond(180, { headers: [...this.rr(), `Contact: <${this.ua.dialogContact}>`] });
  }

  /** 183 Session Progress with an SDP answer: early media (a Linhome device shows the door's video before answering). */
  earlyMedia(sdp?: string): SipMessage {
    return this.tx.respond(183, { headers: [...this.rr(), `Contact: <${this.ua.dialogContact}>`], body: sdp ?? defaultSdp(this.ua.user) });
  }

  answer(sdp?: string): SipMessage {
    const req = this.request;
    const res = this.tx.respond(200, { headers: [...this.rr(), `Contact: <${this.ua.dialogContact}>`, `Allow: ${ALLOW}`, 'Supported: replaces, outbound'], body: sdp ?? defaultSdp(this.ua.user) });
    const contact = req.contacts()?.[0];
    if (contact === undefined) throw new Error(`${this.ua.user}: INVITE without Contact`);
    const d = new Dialog(this.ua, req.callId(), res.get('to')!, req.get('from')!, contact.uriText, req.recordRoutes() ?? [], 1000);
    d.pending2xx.set(req.cseq().seq, this.tx);
    this.dialog = d;
    this.ua.dialogs.set(this.ua.dialogKey(req.callId(), this.localTag, req.from().tag ?? ''), d);
    return res;
  }

  reject(code: number): SipMessage {
    return this.tx.respond(code);
  }
}
