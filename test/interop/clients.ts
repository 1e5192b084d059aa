// Real SIP user agents (linphonec, baresip) against an in-process Portier on
// loopback, for test/interop/linphone.test.ts and baresip.test.ts (issue 11).
//
// - Portier: started like interopPortier (test/helpers/tools.ts) but with
//   UDP, TCP and TLS listeners (a certificate from the test CA of
//   test/helpers/certs.ts), its debug log kept in memory, and every SIP
//   message it receives and sends recorded (the transport layer's send and
//   its sink are wrapped), so that a failing test prints the exchange.
// - Each client has its own directory, HOME and configuration files, runs in
//   its own process group (killed on teardown) and keeps its log there.
// - No sound card: linphonec plays and records (no) wav files (`soundcard
//   use files`); baresip's ALSA default device is a null device (its
//   ~/.asoundrc). No video.
// - Clients are driven by their command interfaces: linphonec's stdin,
//   baresip's ctrl_tcp module (JSON in netstrings, with events).
//
// Learnt by running them (Debian bookworm: liblinphone 5.1.65, baresip 1.0.0
// on libre 1.1.0):
// - linphonec prints no registration event (`status register` is polled),
//   and does not flush its stdout on a pipe (run under stdbuf -oL).
// - belle-sip's mbedTLS checks only dNSName entries of the certificate
//   (see serverCertForClients).
// - baresip computes MD5 digests only, and fails the whole challenge when any
//   WWW-Authenticate offers another algorithm: it needs algorithms: [MD5].
// - baresip 1.0 loads sip_cafile but does not verify the server's
//   certificate (it registers over TLS with an unrelated CA as well).
// - baresip registers before its ctrl_tcp socket is connected: its first
//   REGISTER_OK event may go to nobody (`reginfo` is asked instead).

import { randomBytes } from 'node:crypto';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type { Test } from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import type { SipMessage } from '../../src/sip/index.js';
import type { Destination, Endpoint, Source, TransportSink } from '../../src/transport/index.js';
import { makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { metric, scrape, usersLine } from '../helpers/tools.js';
import { newBranch, UA } from '../helpers/ua.js';

export const REALM = 'example.test';

/** Why `cmd` cannot run here (for `{ skip }`), or false. */
export function binaryMissing(cmd: string, args: string[]): string | false {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  return r.error !== undefined ? `${cmd} is not installed (Debian: ${cmd === 'baresip' ? 'baresip-core' : 'linphone-cli'})` : false;
}

/** Waits until `cond()` holds, polling every 50 ms; throws naming `what` after `ms`. */
export async function waitFor<T>(cond: () => T | undefined | null | false | Promise<T | undefined | null | false>, what: string, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A TCP port free on 127.0.0.1 now (for a client's control socket). */
export async function freeTcpPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

// ---------------------------------------------------------------- Portier

export interface TracedMessage {
  dir: 'in' | 'out';
  /** `udp:127.0.0.1:40000`: where it came from or went to. */
  peer: string;
  at: number;
  text: string;
  /** Request method or response status code, as text ('INVITE', '480'). */
  first: string;
  cseq: string;
}

export interface Account {
  user: string;
  password: string;
  kind?: 'phone' | 'door';
}

export interface ClientPortier {
  server: RunningServer;
  /** ws: 0 without the `ws` option. */
  ports: { udp: number; tcp: number; tls: number; ws: number };
  /** The test CA that signed Portier's certificate (for the clients' trust). */
  certs: TestCerts;
  metrics(): Promise<string>;
  /** Every SIP message Portier received or sent, in order. */
  trace: TracedMessage[];
  /** Portier's own log lines (debug level, JSON). */
  log: string[];
  /** The trace as text, one message after the other (the last `max` characters). */
  traceText(max?: number): string;
  /** Messages matching: `dir`, the first line's method or status, and a regex over the text. */
  find(o: { dir?: 'in' | 'out'; first?: string; cseq?: RegExp; text?: RegExp }): TracedMessage[];
}

const peerOf = (e: Endpoint) => `${e.protocol}:${e.address}:${e.port}`;

function firstOf(text: string): string {
  const line = text.slice(0, text.indexOf('\r\n') >>> 0);
  const m = /^SIP\/2\.0 (\d{3})/.exec(line);
  return m !== null ? m[1] : line.split(' ')[0];
}

/**
 * Records every message of `server`'s transport layer. The transaction layer
 * sends through transport.send (wrapped on the instance) and the listeners
 * deliver through the sink object they share (its onMessage replaced): no
 * change in src/ is needed to trace.
 */
function traceMessages(server: RunningServer, trace: TracedMessage[]): void {
  const push = (dir: 'in' | 'out', peer: string, data: Buffer) => {
    const text = data.toString('utf8');
    if (text.trim() === '') return; // CRLF keep-alives
    trace.push({ dir, peer, at: Date.now(), text, first: firstOf(text), cseq: /^CSeq:\s*(.*)$/im.exec(text)?.[1].trim() ?? '' });
  };
  const transport = server.transport;
  const send = transport.send.bind(transport);
  transport.send = (data: Buffer, dest: Destination) => {
    push('out', peerOf(dest), data);
    send(data, dest);
  };
  const sink = (transport as unknown as { sink?: TransportSink }).sink;
  if (sink === undefined || typeof sink.onMessage !== 'function') {
    trace.push({ dir: 'in', peer: '-', at: Date.now(), text: '(incoming messages cannot be traced: TransportLayer has no sink)', first: '-', cseq: '' });
    return;
  }
  const onMessage = sink.onMessage.bind(sink);
  sink.onMessage = (data: Buffer, source: Source) => {
    push('in', peerOf(source), data);
    onMessage(data, source);
  };
}

/**
 * Portier's certificate, signed by the test CA, for localhost and 127.0.0.1,
 * the address also as a DNS name: belle-sip's mbedTLS (2.28) compares only
 * the dNSName entries of subjectAltName with the host it connected to, so
 * with an iPAddress entry alone linphonec refuses 127.0.0.1 ("CN-mismatch").
 */
function serverCertForClients(certs: TestCerts): { cert: string; key: string } {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: certs.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  writeFileSync(join(certs.dir, 'sip.ext'), 'subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'sip.key', '-out', 'sip.csr', '-subj', '/CN=localhost');
  ssl('x509', '-req', '-in', 'sip.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'sip.pem', '-days', '2', '-extfile', 'sip.ext');
  return { cert: join(certs.dir, 'sip.pem'), key: join(certs.dir, 'sip.key') };
}

/**
 * Portier on 127.0.0.1 with udp, tcp and tls listeners (ports chosen by the
 * kernel; with `ws`, a ws listener on path /sip too), digest accounts in
 * realm example.test (the SIP domain too, unless `domain` names another,
 * e.g. 127.0.0.1 for a client that resolves it), storage in memory, metrics
 * on. Stopped on teardown.
 */
export async function clientPortier(t: Test, dir: string, accounts: Account[], o: { algorithms?: string; extra?: string[]; ws?: boolean; domain?: string } = {}): Promise<ClientPortier> {
  mkdirSync(dir, { recursive: true });
  const certs = makeTestCerts();
  t.teardown(() => certs.remove());
  const cert = serverCertForClients(certs);
  writeFileSync(join(dir, 'users'), accounts.map((a) => usersLine(a.user, a.password, { realm: REALM, kind: a.kind ?? 'phone', domain: o.domain ?? REALM })).join('\n') + '\n');
  const config = parseConfig(
    [
      `domains: [${o.domain ?? REALM}]`,
      'storage: {type: memory}',
      `listen: [udp:127.0.0.1:0, tcp:127.0.0.1:0, tls:127.0.0.1:0${o.ws === true ? ', ws:127.0.0.1:0' : ''}]`,
      ...(o.ws === true ? ['websocket: {path: /sip}'] : []),
      `tls: {cert: ${JSON.stringify(cert.cert)}, key: ${JSON.stringify(cert.key)}}`,
      'auth:',
      '  users: users',
      `  realm: ${REALM}`,
      ...(o.algorithms !== undefined ? [`  algorithms: ${o.algorithms}`] : []),
      ...(o.extra ?? []),
      'log: {level: debug}',
      'metrics: {listen: 127.0.0.1:0}',
    ].join('\n'),
    join(dir, 'portier.yaml'),
  );
  const log: string[] = [];
  const server = await startServer(config, createLogger('debug', { write: (s: string) => void log.push(s.trimEnd()) }));
  t.teardown(() => server.stop());
  const trace: TracedMessage[] = [];
  traceMessages(server, trace);
  const port = (p: string) => server.listening().find((e) => e.protocol === p)?.port ?? 0;
  const m = server.metricsAddress()!;
  return {
    server,
    ports: { udp: port('udp'), tcp: port('tcp'), tls: port('tls'), ws: port('ws') },
    certs,
    metrics: () => scrape(m.port),
    trace,
    log,
    traceText(max = 12_000) {
      const s = trace.map((x) => `--- ${x.dir === 'in' ? 'received from' : 'sent to'} ${x.peer} at +${x.at - (trace[0]?.at ?? x.at)} ms\n${x.text.replace(/\r\n/g, '\n').trimEnd()}`).join('\n');
      return s.length > max ? '…' + s.slice(-max) : s;
    },
    find(q) {
      return trace.filter((x) => (q.dir === undefined || x.dir === q.dir) && (q.first === undefined || x.first === q.first) && (q.cseq === undefined || q.cseq.test(x.cseq)) && (q.text === undefined || q.text.test(x.text)));
    },
  };
}

/** portier_calls_active, or NaN. */
export async function callsActive(p: ClientPortier): Promise<number> {
  return metric(await p.metrics(), 'portier_calls_active');
}

// ------------------------------------------------------------ processes

/** A child in its own process group, its output kept, killed (the whole group) on teardown. */
class Child {
  readonly proc: ChildProcess;
  output = '';
  exited: Promise<void>;
  exitCode: number | null | undefined = undefined;

  constructor(t: Test, cmd: string, args: string[], o: { env: NodeJS.ProcessEnv; cwd: string; stdin: boolean }) {
    this.proc = spawn(cmd, args, { env: o.env, cwd: o.cwd, detached: true, stdio: [o.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
    this.proc.stderr!.setEncoding('utf8').on('data', (d: string) => (this.output += d));
    this.proc.stdin?.on('error', () => {}); // EPIPE once it has exited
    this.exited = new Promise((r) => {
      this.proc.on('error', (err) => {
        this.output += `\n(spawn failed: ${err.message})\n`;
        this.exitCode = null;
        r();
      });
      this.proc.on('exit', (code) => {
        this.exitCode = code;
        r();
      });
    });
    t.teardown(() => this.kill());
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** SIGKILL to the process group (the child is its leader). */
  kill(): void {
    if (!this.running || this.proc.pid === undefined) return;
    try {
      process.kill(-this.proc.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }

  /** Waits `ms` for the exit, then kills the group. */
  async stop(ms: number): Promise<void> {
    const timer = setTimeout(() => this.kill(), ms);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * baresip's audio: ALSA's default device made a null device by the
 * instance's ~/.asoundrc, so that it "plays" and "captures" silence without a
 * sound card.
 */
function nullAudioHome(home: string): void {
  mkdirSync(home, { recursive: true });
  writeFileSync(join(home, '.asoundrc'), 'pcm.!default { type null }\nctl.!default { type null }\n');
}

export type Transport = 'udp' | 'tcp' | 'tls';

// ------------------------------------------------------------ linphonec

export interface LinphonecOptions {
  account: Account;
  transport: Transport;
  portier: ClientPortier;
  /** -a: answer every incoming call at once. */
  autoAnswer?: boolean;
  /** PEM file of the CAs linphonec trusts (root_ca); Portier's test CA unless told. */
  rootCa?: string;
  /** How the rc names Portier in reg_proxy and reg_route: 127.0.0.1 unless told (`localhost` resolves to it with IPv6 off). */
  proxyHost?: string;
}

/**
 * linphonec (liblinphone 5.1, Debian linphone-cli) driven through its stdin.
 * Its rc file registers the account at start through Portier (reg_proxy, and
 * reg_route so that calls go through it too); DTMF is sent as SIP INFO
 * (use_info=1); TLS trusts only the test CA and checks the certificate's name.
 */
export class Linphonec {
  readonly dir: string;
  readonly logFile: string;
  private readonly child: Child;

  constructor(t: Test, readonly name: string, baseDir: string, o: LinphonecOptions) {
    this.dir = join(baseDir, name);
    const home = join(this.dir, 'home');
    // liblinphone keeps its call history in HOME/.local/share/linphone/linphone.db.
    mkdirSync(join(home, '.local', 'share', 'linphone'), { recursive: true });
    this.logFile = join(this.dir, 'linphonec.log');
    const rc = join(this.dir, 'linphonerc');
    const port = o.portier.ports[o.transport];
    const host = o.proxyHost ?? '127.0.0.1';
    const a = o.account;
    writeFileSync(
      rc,
      [
        '[sip]',
        // UDP on a random port; TCP and TLS only as clients (Portier uses the connection they registered on).
        'sip_port=-1',
        'sip_tcp_port=-2',
        'sip_tls_port=-2',
        'use_ipv6=0',
        'use_info=1',
        'use_rfc2833=0',
        'default_proxy=0',
        'register_only_when_network_is_up=0',
        'auto_net_state_mon=0',
        'ping_with_options=0',
        'inc_timeout=30',
        `root_ca=${o.rootCa ?? o.portier.certs.paths.caCert}`,
        'verify_server_certs=1',
        'verify_server_cn=1',
        '[net]',
        'firewall_policy=0',
        '[rtp]',
        'audio_rtp_port=-1',
        'video_rtp_port=-1',
        '[video]',
        'capture=0',
        'display=0',
        'automatically_initiate=0',
        'automatically_accept=0',
        '[sound]',
        'echocancellation=0',
        '[proxy_0]',
        `reg_proxy=<sip:${host}:${port};transport=${o.transport}>`,
        `reg_route=<sip:${host}:${port};transport=${o.transport};lr>`,
        `reg_identity="${a.user}" <sip:${a.user}@${REALM}>`,
        'reg_expires=600',
        'reg_sendregister=1',
        'publish=0',
        '[auth_info_0]',
        `username=${a.user}`,
        `passwd=${a.password}`,
        `realm=${REALM}`,
        `domain=${REALM}`,
        '',
      ].join('\n'),
    );
    // stdbuf: linphonec's stdout is a pipe here, and it does not flush every line it prints.
    this.child = new Child(t, 'stdbuf', ['-oL', '-eL', 'linphonec', '-c', rc, '-d', '6', '-l', this.logFile, ...(o.autoAnswer === true ? ['-a'] : [])], {
      env: { ...process.env, HOME: home, LANG: 'C' },
      cwd: this.dir,
      stdin: true,
    });
    // Audio from and to (no) wav files instead of a sound card. (With ALSA's
    // null device instead, a caller's linphonec spins on it and hangs when
    // the call ends.)
    this.send('soundcard use files');
  }

  get output(): string {
    return this.child.output;
  }

  get running(): boolean {
    return this.child.running;
  }

  /** One command line on stdin. */
  send(line: string): void {
    this.child.proc.stdin?.write(line + '\n');
  }

  /** Waits for `re` in the output written from `from` on (an offset from mark()). */
  async expect(re: RegExp, what: string, ms = 15_000, from = 0): Promise<RegExpExecArray> {
    return waitFor(() => {
      if (!this.running) throw new Error(`${this.name}: linphonec exited (${this.child.exitCode}) while waiting for ${what}`);
      return re.exec(this.output.slice(from)) ?? undefined;
    }, `${this.name}: ${what}`, ms);
  }

  mark(): number {
    return this.output.length;
  }

  /** Sends `cmd` (again every second) until its answer matches `re`. */
  async ask(cmd: string, re: RegExp, what: string, ms = 15_000): Promise<RegExpExecArray> {
    const end = Date.now() + ms;
    for (;;) {
      const from = this.mark();
      this.send(cmd);
      try {
        return await this.expect(re, what, Math.min(1000, Math.max(50, end - Date.now())), from);
      } catch (err) {
        if (Date.now() >= end || !this.running) throw err;
      }
    }
  }

  /** `status register` says registered (linphonec has no event for it). */
  async registered(ms = 15_000): Promise<RegExpExecArray> {
    await this.expect(/^Using wav files instead of soundcard\./m, 'file audio', ms);
    return this.ask('status register', /^registered, identity=.*$/m, 'registered', ms);
  }

  /** The log file (-d 6: every SIP message and TLS step) so far. */
  log(): string {
    return existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8') : '';
  }

  /** quit, then the process group is killed if it has not exited within 5 s. */
  async quit(): Promise<void> {
    if (!this.running) return;
    this.send('quit');
    await this.child.stop(5000);
  }

  /**
   * For a failure: the tail of its stdout and of its log, which has every SIP
   * message it sent and received (the media stack's own lines left out).
   */
  diagnostics(): string {
    const log = this.log()
      .split('\n')
      .filter((l) => !/ (mediastreamer|ortp)-(message|debug)-/.test(l))
      .join('\n');
    return `${this.name} (linphonec) output:\n${this.output.slice(-3000)}\n${this.name} linphonec.log (without media lines):\n${log.length > 10_000 ? '…' + log.slice(-10_000) : log || `(no ${this.logFile})`}`;
  }
}

// ------------------------------------------------------------ baresip

export interface BaresipEvent {
  type: string;
  class?: string;
  param?: string;
  peeruri?: string;
  accountaor?: string;
  [k: string]: unknown;
}

export interface BaresipOptions {
  account: Account;
  transport: Transport;
  portier: ClientPortier;
  /** PEM file of the CA to trust for TLS (sip_cafile); Portier's test CA by default. */
  caFile?: string;
}

/**
 * baresip 1.0 (Debian baresip-core) with only the modules it needs: g711,
 * alsa (on the null device of its HOME), account, menu (the commands) and
 * ctrl_tcp, its command interface: `{"command":..,"params":..,"token":..}`
 * netstrings in, responses and events (REGISTER_OK, CALL_ESTABLISHED,
 * CALL_CLOSED...) out. Its SIP trace (-s) goes to its output.
 */
export class Baresip {
  readonly dir: string;
  readonly events: BaresipEvent[] = [];
  readonly responses: { ok: boolean; data: string; token: string }[] = [];
  private readonly child: Child;
  private sock: net.Socket | null = null;
  private buf = '';
  private tokens = 0;

  private constructor(readonly name: string, dir: string, child: Child) {
    this.dir = dir;
    this.child = child;
  }

  static async start(t: Test, name: string, baseDir: string, o: BaresipOptions): Promise<Baresip> {
    const dir = join(baseDir, name);
    const conf = join(dir, 'conf');
    const home = join(dir, 'home');
    mkdirSync(conf, { recursive: true });
    nullAudioHome(home);
    const ctrl = await freeTcpPort();
    const port = o.portier.ports[o.transport];
    writeFileSync(
      join(conf, 'config'),
      [
        'poll_method epoll',
        'sip_listen 127.0.0.1:0',
        `sip_cafile ${o.caFile ?? o.portier.certs.paths.caCert}`,
        'net_interface 127.0.0.1',
        'call_local_timeout 30',
        'call_max_calls 4',
        'audio_player alsa,default',
        'audio_source alsa,default',
        'audio_alert alsa,default',
        'audio_level no',
        'rtp_stats no',
        'module_path /usr/lib/baresip/modules',
        'module g711.so',
        'module alsa.so',
        'module ctrl_tcp.so',
        'module_tmp uuid.so',
        'module_tmp account.so',
        'module_app menu.so',
        `ctrl_tcp_listen 127.0.0.1:${ctrl}`,
        '',
      ].join('\n'),
    );
    const a = o.account;
    writeFileSync(
      join(conf, 'accounts'),
      `"${a.user}" <sip:${a.user}@${REALM};transport=${o.transport}>;auth_user=${a.user};auth_pass=${a.password};` +
        `outbound="sip:127.0.0.1:${port};transport=${o.transport}";regint=600;answermode=manual;audio_codecs=PCMU,PCMA\n`,
    );
    writeFileSync(join(conf, 'contacts'), '');
    const child = new Child(t, 'baresip', ['-f', conf, '-s', '-v'], { env: { ...process.env, HOME: home, LANG: 'C' }, cwd: dir, stdin: false });
    const b = new Baresip(name, dir, child);
    t.teardown(() => b.sock?.destroy());
    await b.connect(ctrl);
    return b;
  }

  get output(): string {
    return this.child.output;
  }

  get running(): boolean {
    return this.child.running;
  }

  private async connect(port: number): Promise<void> {
    const sock = await waitFor(
      () => {
        if (!this.running) throw new Error(`${this.name}: baresip exited (${this.child.exitCode}) before its ctrl_tcp socket listened; its output:\n${this.output.slice(-3000)}`);
        return new Promise<net.Socket | false>((resolve) => {
          const s = net.connect(port, '127.0.0.1');
          s.once('connect', () => resolve(s));
          s.once('error', () => resolve(false));
        });
      },
      `${this.name}: baresip's ctrl_tcp socket`,
      10_000,
    );
    this.sock = sock;
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (d: string) => this.receive(d));
  }

  /** Netstrings: `LEN:JSON,`. */
  private receive(d: string): void {
    this.buf += d;
    for (;;) {
      const colon = this.buf.indexOf(':');
      if (colon < 0) return;
      const len = Number(this.buf.slice(0, colon));
      if (this.buf.length < colon + 1 + len + 1) return;
      const body = this.buf.slice(colon + 1, colon + 1 + len);
      this.buf = this.buf.slice(colon + 2 + len);
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(body) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (msg.event === true) this.events.push(msg as unknown as BaresipEvent);
      else if (msg.response === true) this.responses.push({ ok: msg.ok === true, data: String(msg.data ?? ''), token: String(msg.token ?? '') });
    }
  }

  /** Runs a command (a long menu command: dial, hangup, ...) and waits for its response. */
  async command(command: string, params = ''): Promise<{ ok: boolean; data: string }> {
    const token = String(++this.tokens);
    const body = JSON.stringify({ command, params, token });
    this.sock!.write(`${Buffer.byteLength(body)}:${body},`);
    return waitFor(() => this.responses.find((r) => r.token === token), `${this.name}: response to ${command}`, 15_000);
  }

  /** Waits for an event of `type` (after the `from`-th event), matching `pred`. */
  event(type: string, ms = 15_000, pred: (e: BaresipEvent) => boolean = () => true, from = 0): Promise<BaresipEvent> {
    return waitFor(() => {
      if (!this.running) throw new Error(`${this.name}: baresip exited (${this.child.exitCode}) while waiting for ${type}`);
      return this.events.slice(from).find((e) => e.type === type && pred(e));
    }, `${this.name}: event ${type}`, ms);
  }

  /**
   * Registered: a REGISTER_OK event, or `reginfo` saying OK (baresip
   * registers as it starts, often before the control socket is connected, so
   * the event may have gone to nobody). A REGISTER_FAIL event throws.
   */
  async registered(ms = 15_000): Promise<string> {
    return waitFor(async () => {
      const failed = this.events.find((e) => e.type === 'REGISTER_FAIL');
      if (failed !== undefined) throw new Error(`${this.name}: REGISTER_FAIL (${failed.param ?? ''})`);
      if (this.events.some((e) => e.type === 'REGISTER_OK')) return 'REGISTER_OK';
      const info = (await this.command('reginfo')).data.replace(/\x1b\[[0-9;]*m/g, '');
      if (/^> sip:\S+\s+OK\b/m.test(info)) return info.trim();
      await sleep(250);
      return undefined;
    }, `${this.name}: registered`, ms);
  }

  async quit(): Promise<void> {
    if (!this.running) return;
    try {
      const body = JSON.stringify({ command: 'quit', params: '', token: 'quit' });
      this.sock?.write(`${Buffer.byteLength(body)}:${body},`);
    } catch {
      /* the socket is gone: the kill below */
    }
    await this.child.stop(5000);
  }

  diagnostics(): string {
    const ev = this.events.map((e) => `${e.type}${e.param !== undefined && e.param !== '' ? ` (${e.param})` : ''}`).join(', ');
    return `${this.name} (baresip) events: ${ev || '(none)'}\n${this.name} output (SIP trace):\n${this.output.slice(-8000)}`;
  }
}

// ------------------------------------------------------------ failures

/**
 * Runs `body`; if it throws or any assertion of `t` failed, comments the
 * clients' log tails and Portier's trace and log, so that a red CI says why.
 */
export async function withDiagnostics(t: Test, sources: () => { name: string; text: string }[], body: () => Promise<void>): Promise<void> {
  let error: unknown = null;
  try {
    await body();
  } catch (err) {
    error = err;
  }
  if (error !== null || !t.passing()) {
    if (error !== null) t.fail(`stopped: ${(error as Error).message ?? String(error)}`);
    // Terminal colours and control characters (baresip prints both) out of the TAP stream.
    const clean = (x: string) => x.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/\r\n?/g, '\n').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
    for (const s of sources()) t.comment(`==== ${s.name}\n${clean(s.text)}`);
  }
}

/** Portier's part of the diagnostics. */
export function portierDiagnostics(p: ClientPortier): { name: string; text: string }[] {
  return [
    { name: 'Portier: SIP messages received and sent', text: p.traceText() },
    { name: 'Portier: log (debug)', text: p.log.slice(-60).join('\n') },
  ];
}

/** A UA on UDP registered (with digest) to Portier's UDP `port`; closed at teardown. */
export async function udpUa(t: Test, port: number, user: string, password: string): Promise<UA> {
  const u = await UA.create({ transport: 'udp', user, domain: 'example.test', proxyPort: port, password });
  t.teardown(() => u.close());
  t.equal((await u.register()).status, 200, `${user} registered over UDP with digest`);
  return u;
}

/** A MESSAGE from the UDP UA outside any dialog, answering Portier's 407 once. */
export async function udpMessage(u: UA, target: string, text: string): Promise<SipMessage> {
  const from = `<${u.aor}>;tag=${randomBytes(4).toString('hex')}`;
  const callId = randomBytes(8).toString('hex');
  const send = (cseq: number, headers: string[]) => {
    const { bytes, msg } = u.request({ method: 'MESSAGE', ruri: target, branch: newBranch(), from, to: `<${target}>`, callId, cseq, headers, body: text, contentType: 'text/plain' });
    return u.startClient(bytes, msg, u.proxy).done;
  };
  const first = await send(1, []);
  const auth = u.credentialsFor(first, 'MESSAGE', target);
  return auth === null ? first : send(2, [auth]);
}
