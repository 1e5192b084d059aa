// A small SIP user agent over WebSocket (RFC 7118) for end-to-end tests,
// written the way browser clients (SIP.js, JsSIP) behave: one WebSocket to
// the proxy with the `sip` subprotocol, everything sent down it whatever the
// Route set says, a random `.invalid` host in Via and Contact (§5), `;ob`
// on the Contact. WebSocket is reliable: nothing is retransmitted, and a
// response is matched to its request by branch and method (§17.1.3).
//
// UAC: REGISTER (digest answered once when a password is given), INVITE
// with the 2xx ACK end to end (§13.2.2.4) and the non-2xx ACK hop by hop
// (§17.1.1.3), requests inside the dialog (§12.2.1.1), and OPTIONS /
// MESSAGE outside one. UAS: INVITE answered (180, then 200 with the
// Record-Route copied, §12.1.1), BYE, OPTIONS and MESSAGE get 200.

import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { parseAndValidate, SipMessage, SipParseError, type NameAddr } from '../../src/sip/index.js';
import { defaultSdp, digestCredentials, challengesOf, type Match, matches, responseHead } from './ua.js';

const rnd = (bytes = 8): string => randomBytes(bytes).toString('hex');
const newBranch = (): string => 'z9hG4bK' + rnd();
const REASONS: Record<number, string> = { 180: 'Ringing', 200: 'OK', 481: 'Call/Transaction Does Not Exist', 486: 'Busy Here' };

export interface WsUAOptions {
  /** ws://127.0.0.1:PORT/path or wss://localhost:PORT/path. */
  url: string;
  user: string;
  domain: string;
  password?: string;
  /** Trusted CA for wss. */
  ca?: string;
  /** Send requests as binary WebSocket messages instead of text. */
  binary?: boolean;
}

/** A dialog as one side sees it. */
export class WsDialog {
  localSeq: number;
  terminated = false;
  readonly requests: SipMessage[] = [];

  constructor(
    private readonly ua: WsUA,
    readonly callId: string,
    /** Our From (UAC) or To (UAS), tag included. */
    readonly local: string,
    readonly remote: string,
    readonly remoteTarget: string,
    /** In Route order (§12.1.1, §12.1.2). */
    readonly routeSet: NameAddr[],
    localSeq: number,
  ) {
    this.localSeq = localSeq;
  }

  /** @internal Request-URI and Route of a request in the dialog (loose routing only). */
  build(method: string, seq: number, o: { body?: string; contentType?: string } = {}): SipMessage {
    return this.ua.build({
      method,
      ruri: this.remoteTarget,
      from: this.local,
      to: this.remote,
      callId: this.callId,
      cseq: seq,
      routes: this.routeSet.map((r) => r.raw),
      contact: method === 'INVITE',
      body: o.body,
      contentType: o.contentType,
    });
  }

  request(method: string, o: { body?: string; contentType?: string } = {}): Promise<SipMessage> {
    const req = this.build(method, ++this.localSeq, o);
    if (method === 'BYE') this.terminated = true;
    return this.ua.send(req);
  }

  bye(): Promise<SipMessage> {
    return this.request('BYE');
  }
}

export class WsUA {
  readonly received: SipMessage[] = [];
  readonly sent: SipMessage[] = [];
  /** Problems the UA met (unparseable messages, unmatched responses): tests expect it empty. */
  readonly errors: Error[] = [];
  readonly incoming: { request: SipMessage; dialog: WsDialog }[] = [];
  /** What to do with an INVITE outside a dialog: answer (default) or reject with a code. */
  onInvite: (req: SipMessage) => number = () => 200;
  /** The random host of this UA (RFC 7118 §5). */
  readonly host = rnd(6) + '.invalid';
  readonly dialogs = new Map<string, WsDialog>();
  private ws!: WebSocket;
  private closed = false;
  private readonly pending = new Map<string, { resolve: (m: SipMessage) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly waiters = new Set<{ match: Match; resolve: (m: SipMessage) => void }>();
  private readonly regCallId = rnd(10);
  private regSeq = 0;

  private constructor(readonly opts: WsUAOptions) {}

  static async create(opts: WsUAOptions): Promise<WsUA> {
    const ua = new WsUA(opts);
    await ua.open();
    return ua;
  }

  get user(): string {
    return this.opts.user;
  }
  get aor(): string {
    return `sip:${this.opts.user}@${this.opts.domain}`;
  }
  get transport(): 'ws' | 'wss' {
    return this.opts.url.startsWith('wss:') ? 'wss' : 'ws';
  }
  get contactUri(): string {
    return `sip:${this.opts.user}@${this.host};transport=${this.transport};ob`;
  }

  private open(): Promise<void> {
    const ws = new WebSocket(this.opts.url, ['sip'], this.opts.ca !== undefined ? { ca: this.opts.ca } : {});
    this.ws = ws;
    ws.on('message', (data) => this.onData(data as Buffer));
    ws.on('error', (e) => {
      if (!this.closed) this.errors.push(e);
    });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    this.waiters.clear();
    if (this.ws.readyState === WebSocket.OPEN) {
      await new Promise<void>((resolve) => {
        this.ws.once('close', () => resolve());
        this.ws.close();
        setTimeout(() => (this.ws.terminate(), resolve()), 500).unref();
      });
    } else this.ws.terminate();
  }

  /** @internal A request of this UA (no Content-Length: RFC 7118 §5.2 makes it optional; we add it like browsers do). */
  build(r: { method: string; ruri: string; from: string; to: string; callId: string; cseq: number; routes?: string[]; contact?: boolean; headers?: string[]; body?: string; contentType?: string; branch?: string }): SipMessage {
    const body = Buffer.from(r.body ?? '', 'utf8');
    const lines = [
      `${r.method} ${r.ruri} SIP/2.0`,
      `Via: SIP/2.0/${this.transport.toUpperCase()} ${this.host};branch=${r.branch ?? newBranch()}`,
      `Max-Forwards: 70`,
      `To: ${r.to}`,
      `From: ${r.from}`,
      `Call-ID: ${r.callId}`,
      `CSeq: ${r.cseq} ${r.method}`,
      ...(r.routes ?? []).map((v) => 'Route: ' + v),
      ...(r.contact ? [`Contact: <${this.contactUri}>`] : []),
      ...(r.headers ?? []),
      'User-Agent: PortierTestWsUA/1.0',
      ...(body.length > 0 ? [`Content-Type: ${r.contentType ?? 'application/sdp'}`] : []),
      `Content-Length: ${body.length}`,
    ];
    return parse(Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'utf8'), body]));
  }

  private transmit(m: SipMessage): void {
    if (this.closed) return;
    this.sent.push(m);
    this.ws.send(m.toBuffer(), { binary: this.opts.binary === true });
  }

  /** Sends a request and resolves with its final response (ACK: resolves at once with the ACK). */
  send(req: SipMessage, ms = 4000): Promise<SipMessage> {
    if (req.method === 'ACK') {
      this.transmit(req);
      return Promise.resolve(req);
    }
    const key = req.topVia()!.branch + ' ' + req.method;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(key);
        reject(new Error(`${this.user}: no final response to ${req.method} within ${ms} ms`));
      }, ms);
      this.pending.set(key, { resolve, reject, timer });
      this.transmit(req);
    });
  }

  /** The first received message (past or future) that matches, within `ms`. */
  waitFor(match: Match, ms = 3000, what = 'a message'): Promise<SipMessage> {
    const found = this.received.find((m) => matches(m, match));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`${this.user}: no ${what} within ${ms} ms`));
      }, ms);
      const w = { match, resolve: (m: SipMessage) => (clearTimeout(timer), resolve(m)) };
      this.waiters.add(w);
    });
  }

  async register(expires = 600): Promise<SipMessage> {
    const once = (extra: string[]): Promise<SipMessage> =>
      this.send(
        this.build({
          method: 'REGISTER',
          ruri: `sip:${this.opts.domain}`,
          from: `<${this.aor}>;tag=${rnd(5)}`,
          to: `<${this.aor}>`,
          callId: this.regCallId,
          cseq: ++this.regSeq,
          contact: false,
          headers: [`Contact: <${this.contactUri}>;expires=${expires}`, 'Supported: path, gruu, outbound', ...extra],
        }),
      );
    const res = await once([]);
    if ((res.status !== 401 && res.status !== 407) || this.opts.password === undefined) return res;
    const c = challengesOf(res)[0];
    const value = digestCredentials(c, { method: 'REGISTER', uri: `sip:${this.opts.domain}`, user: this.opts.user, password: this.opts.password });
    return once([`${c.header === 'www-authenticate' ? 'Authorization' : 'Proxy-Authorization'}: ${value}`]);
  }

  /** OPTIONS, MESSAGE...: a request outside any dialog. */
  request(method: string, target: string, o: { body?: string; contentType?: string } = {}): Promise<SipMessage> {
    return this.send(this.build({ method, ruri: target, from: `<${this.aor}>;tag=${rnd(5)}`, to: `<${target}>`, callId: rnd(10), cseq: 1, body: o.body, contentType: o.contentType }));
  }

  /** INVITE; a 2xx is ACKed end to end and gives the dialog, a non-2xx is ACKed hop by hop. */
  async call(target: string): Promise<{ final: SipMessage; dialog: WsDialog | null }> {
    const callId = rnd(10);
    const from = `<${this.aor}>;tag=${rnd(5)}`;
    const inv = this.build({ method: 'INVITE', ruri: target, from, to: `<${target}>`, callId, cseq: 1, contact: true, body: defaultSdp(this.user) });
    const final = await this.send(inv, 6000);
    if (final.status >= 300) {
      // §17.1.1.3: same branch, Request-URI and CSeq number; the response's To.
      this.transmit(this.build({ method: 'ACK', ruri: target, from, to: final.get('to')!, callId, cseq: 1, branch: inv.topVia()!.branch! }));
      return { final, dialog: null };
    }
    const rr = final.recordRoutes() ?? [];
    const contact = final.contacts()?.[0];
    if (contact === undefined) throw new Error(`${this.user}: 2xx without Contact`);
    const d = new WsDialog(this, callId, from, final.get('to')!, contact.uriText, rr.reverse(), 1);
    this.dialogs.set(callId, d);
    this.transmit(d.build('ACK', 1));
    return { final, dialog: d };
  }

  private onData(buf: Buffer): void {
    if (this.closed) return;
    if (buf.length === 2 && buf[0] === 0x0d && buf[1] === 0x0a) return; // keep-alive pong
    const m = parseAndValidate(buf, { transport: this.transport });
    if (m instanceof SipParseError) {
      this.errors.push(new Error(`${this.user}: unparseable message (${m.reason})`));
      return;
    }
    this.received.push(m);
    try {
      if (m.isRequest) this.onRequest(m);
      else if (m.status >= 200) {
        const key = m.topVia()?.branch + ' ' + m.cseq().method;
        const p = this.pending.get(key);
        if (p === undefined) {
          // A 2xx to an INVITE may come again (forked or retransmitted by the UAS over UDP): ACK it again.
          const d = this.dialogs.get(m.callId());
          if (m.cseq().method === 'INVITE' && m.status < 300 && d !== undefined) this.transmit(d.build('ACK', m.cseq().seq));
          else throw new Error(`${this.user}: ${m.status} matching no request sent (${m.cseq().method})`);
        } else {
          clearTimeout(p.timer);
          this.pending.delete(key);
          p.resolve(m);
        }
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

  private respond(req: SipMessage, code: number, o: { headers?: string[]; body?: string; toTag?: string } = {}): void {
    let to = req.get('to')!;
    if (req.to().tag === null && code > 100) to += ';tag=' + (o.toTag ?? rnd(5));
    const body = Buffer.from(o.body ?? '', 'utf8');
    const head = responseHead(req, code, REASONS[code] ?? 'Response', to, o.headers ?? [], body.length);
    this.transmit(parse(Buffer.concat([Buffer.from(head, 'utf8'), body])));
  }

  private onRequest(req: SipMessage): void {
    const d = this.dialogs.get(req.callId());
    if (req.method === 'ACK') {
      if (d !== undefined) d.requests.push(req);
      return;
    }
    if (req.to().tag !== null) {
      if (d === undefined) return this.respond(req, 481);
      d.requests.push(req);
      if (req.method === 'BYE') d.terminated = true;
      return this.respond(req, 200);
    }
    if (req.method !== 'INVITE') return this.respond(req, 200);
    const code = this.onInvite(req);
    if (code !== 200) return this.respond(req, code);
    const tag = rnd(5);
    const rr = req.getAll('record-route').map((v) => 'Record-Route: ' + v);
    const contact = req.contacts()?.[0];
    if (contact === undefined) throw new Error(`${this.user}: INVITE without Contact`);
    const headers = [...rr, `Contact: <${this.contactUri}>`];
    this.respond(req, 180, { headers, toTag: tag });
    this.respond(req, 200, { headers, toTag: tag, body: defaultSdp(this.user) });
    const dialog = new WsDialog(this, req.callId(), `${req.get('to')!};tag=${tag}`, req.get('from')!, contact.uriText, req.recordRoutes() ?? [], 5000);
    this.dialogs.set(req.callId(), dialog);
    this.incoming.push({ request: req, dialog });
  }
}

function parse(bytes: Buffer): SipMessage {
  const m = parseAndValidate(bytes, { transport: 'ws' });
  if (m instanceof SipParseError) throw new Error('test WS UA built an invalid message: ' + m.reason);
  return m;
}
