// The transport layer: binds the listen specs, hands every received message
// up with its Source, and sends messages to a Destination. It frames stream
// transports (TCP, TLS; WS and WSS carry one message per WebSocket message)
// and answers keep-alives; it knows nothing else of SIP.

import net from 'node:net';
import tls from 'node:tls';
import { ConnectionTable, type StreamConnection } from './connections.js';
import { connectTcp, TcpListener } from './tcp.js';
import {
  createTransportStats,
  DEFAULT_TLS_SETTINGS,
  DEFAULT_WS_SETTINGS,
  endpointKey,
  PROTOCOLS,
  type Destination,
  type Endpoint,
  type ListenSpec,
  type Protocol,
  type TlsSettings,
  type TransportLimits,
  type TransportLog,
  type TransportSink,
  type TransportStats,
  type WsSettings,
} from './types.js';
import { UdpListener } from './udp.js';
import { WsListener, type WsContext } from './ws.js';
import { WorkerRelay, type RelayStats, type WorkerSeat } from './relay.js';

export * from './types.js';
export { ConnectionTable, type StreamConnection } from './connections.js';
export type { WorkerSeat, RelayStats } from './relay.js';

/**
 * One worker of several reading the same sockets (config `workers`). The
 * transport knows nothing of SIP: `owner` says which worker a message
 * belongs to, from its bytes (src/sip/owner.ts: the Call-ID's hash).
 */
export interface TransportWorkers {
  seat: WorkerSeat;
  owner(data: Buffer): number;
}

type State = 'new' | 'starting' | 'running' | 'stopped';

export class TransportLayer {
  readonly stats: TransportStats;
  private readonly specs: readonly ListenSpec[];
  private readonly limits: TransportLimits;
  private readonly sink: TransportSink;
  private readonly log: TransportLog | undefined;
  private tls: Readonly<TlsSettings>;
  private readonly table: ConnectionTable<StreamConnection>;
  private readonly ctx: WsContext;
  private udp: UdpListener[] = [];
  private tcp: TcpListener[] = [];
  private ws: WsListener[] = [];
  private state: State = 'new';
  private relayPortNumber: number | null = null;
  /** With workers: the link to the others, and the connections they hold that are open. */
  private readonly relay: WorkerRelay | null = null;
  /** With workers: the open connections the others hold, by id, with their remote end. */
  private readonly siblingConnections = new Map<number, Endpoint>();
  /** The sink as given (with workers, `sink` is the one that steers messages to their owner). */
  private readonly innerSink: TransportSink;
  private readonly workerIndex: number = 0;
  private readonly workerCount: number = 1;

  /**
   * `tls` gives the certificate and key of TLS and WSS listeners (required
   * when there is one) and the trust of outbound TLS; without it outbound
   * TLS verifies against the system store. `ws` sets the path, largest
   * message and ping interval of WS and WSS listeners.
   */
  constructor(specs: ListenSpec[], limits: TransportLimits, sink: TransportSink, log?: TransportLog, tls?: TlsSettings, ws?: WsSettings, workers?: TransportWorkers) {
    this.limits = { ...limits };
    this.log = log;
    this.tls = Object.freeze({ ...(tls ?? DEFAULT_TLS_SETTINGS) });
    this.stats = createTransportStats();
    this.table = new ConnectionTable<StreamConnection>(this.limits, this.stats);
    this.innerSink = sink;
    if (workers !== undefined && workers.seat.count > 1) {
      const { seat, owner } = workers;
      const inner = sink;
      this.workerIndex = seat.index;
      this.workerCount = seat.count;
      this.table.setIdSpace(seat.index, seat.count);
      const siblings = this.siblingConnections;
      const relay = new WorkerRelay(
        seat,
        {
          deliver: (data, source) => inner.onMessage(data, source),
          send: (data, dest) => this.send(data, dest),
          probe: (listener, data) => this.udp[listener]?.acceptProbe(data),
          opened: (id, remote) => siblings.set(id, remote),
          closed: (id, remote) => {
            siblings.delete(id);
            inner.onConnectionClosed?.(id, remote);
          },
        },
        log,
      );
      this.relay = relay;
      const table = this.table;
      this.table.onAdded = (id) => {
        const c = table.get(id);
        if (c !== undefined) relay.broadcastOpened(id, c.remote);
      };
      // Every message goes to its owner; the worker that read it only carries it there.
      sink = {
        onMessage(data, source) {
          const w = relay.route(owner(data));
          if (w === seat.index) inner.onMessage(data, source);
          else relay.forward(w, data, source);
        },
        onSendError: inner.onSendError?.bind(inner),
        onConnectionClosed(id, remote) {
          relay.broadcastClosed(id, remote);
          inner.onConnectionClosed?.(id, remote);
        },
      };
      specs = specs.map((s) => ({ ...s, shared: true }));
    }
    this.specs = specs.slice();
    this.sink = sink;
    const wsSettings = Object.freeze({ ...(ws ?? DEFAULT_WS_SETTINGS) });
    const layer = this;
    // A getter: reloadTls() replaces the settings, and new outbound connections must see them.
    this.ctx = {
      table: this.table,
      limits: this.limits,
      stats: this.stats,
      sink,
      log,
      get tls() {
        return layer.tls;
      },
      ws: wsSettings,
    };
  }

  /**
   * Binds every listen spec. On any failure the ones already bound are closed
   * again and the promise rejects with an error naming the spec (its `cause`
   * is the system error, its `code` copied from it).
   */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`transport layer cannot start: it is ${this.state}`);
    this.state = 'starting';
    const udp: UdpListener[] = [];
    const tcp: TcpListener[] = [];
    const ws: WsListener[] = [];
    const starting: Promise<void>[] = [];
    let failure: Error | null = null;
    for (const spec of this.specs) {
      let host: string;
      try {
        host = checkSpec(spec, this.tls);
      } catch (err) {
        failure = err as Error;
        break;
      }
      if (spec.protocol === 'udp') {
        const l = new UdpListener(spec, host, this.limits, this.stats, this.sink, this.log);
        const relay = this.relay;
        const index = udp.length;
        if (relay !== null) l.shareProbes(this.workerIndex, (worker, probe) => relay.probe(worker, index, probe));
        udp.push(l);
        starting.push(l.start().catch((err: NodeJS.ErrnoException) => Promise.reject(listenError(spec, err))));
      } else if (spec.protocol === 'ws' || spec.protocol === 'wss') {
        const l = new WsListener(spec, host, this.ctx);
        ws.push(l);
        starting.push(l.start().catch((err: NodeJS.ErrnoException) => Promise.reject(listenError(spec, err))));
      } else {
        const l = new TcpListener(spec, host, this.ctx);
        tcp.push(l);
        starting.push(l.start().catch((err: NodeJS.ErrnoException) => Promise.reject(listenError(spec, err))));
      }
    }
    if (this.relay !== null && failure === null) {
      starting.push(
        this.relay.start().then((port) => {
          this.relayPortNumber = port;
        }),
      );
    }
    const results = await Promise.allSettled(starting);
    if (failure === null) {
      for (const r of results) {
        if (r.status === 'rejected') {
          failure = r.reason as Error;
          break;
        }
      }
    }
    if (failure !== null) {
      await Promise.all([...udp.map((l) => l.close()), ...tcp.map((l) => l.close()), ...ws.map((l) => l.close()), this.relay?.close()]);
      this.state = 'stopped';
      throw failure;
    }
    this.udp = udp;
    this.tcp = tcp;
    this.ws = ws;
    this.state = 'running';
  }

  /** Closes listeners and every connection. Idempotent. */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    this.table.stop();
    const closing: Promise<void>[] = [];
    for (const l of this.tcp) closing.push(l.close());
    for (const l of this.ws) closing.push(l.close());
    // Copy first: destroying a connection removes it from the table.
    for (const c of [...this.table.values()]) c.destroy(null);
    for (const l of this.udp) closing.push(l.close());
    if (this.relay !== null) closing.push(this.relay.close());
    await Promise.all(closing);
  }

  /** With workers: the port of this worker's relay on 127.0.0.1, once started (the primary passes it to the others). */
  get relayPort(): number | null {
    return this.relayPortNumber;
  }

  /** With workers: every worker's relay port, by index (null: that worker is not up). */
  setRelayPeers(ports: Array<number | null>): void {
    if (this.relay === null) return;
    this.relay.setPeers(ports);
    // A worker gone took its connections with it, without a word: they are closed for the others too.
    for (const [id, remote] of this.siblingConnections) {
      if (ports[id % this.workerCount] !== null) continue;
      this.siblingConnections.delete(id);
      this.innerSink.onConnectionClosed?.(id, remote);
    }
  }

  /** With workers: what went over the relay; null without. */
  get relayStats(): Readonly<RelayStats> | null {
    return this.relay?.stats ?? null;
  }

  /**
   * Sends one message. Never throws: failures are counted in
   * stats.dropped['send-error'] and, where the cause is known only later (a
   * failed connect), reported through sink.onSendError.
   *
   * UDP goes out of the socket of the destination's family, preferring the
   * one bound to dest.local. TCP and TLS go down dest.connectionId if still
   * open (and of that protocol), else down an open connection to the
   * endpoint (RFC 3261 §18), else down a new connection, the data queued
   * until it is up (for TLS: until the handshake is done and the server's
   * certificate verified). WS and WSS go down dest.connectionId or an
   * open connection from the endpoint, never a new one: Portier does not
   * dial out WebSocket, so without one the send fails (sink.onSendError,
   * at once).
   */
  send(data: Buffer, dest: Destination): void {
    if (this.state !== 'running') {
      this.sendFailed(dest, 'transport layer is not running', 'ENOTCONN');
      return;
    }
    const id = dest.connectionId;
    // Down a connection another worker holds: that worker sends it (UDP: every worker has the socket).
    if (this.relay !== null && id !== undefined && id !== 0 && dest.protocol !== 'udp' && id % this.workerCount !== this.workerIndex) {
      const holder = id % this.workerCount;
      // Not up: its connections went with it.
      if (this.relay.isUp(holder)) this.relay.sendVia(holder, data, dest);
      else this.sendFailed(dest, `the worker holding connection ${id} is not running`, 'ENOTCONN');
      return;
    }
    switch (dest.protocol) {
      case 'udp':
        this.sendUdp(data, dest);
        return;
      case 'tcp':
      case 'tls':
        this.sendStream(data, dest, dest.protocol);
        return;
      case 'ws':
      case 'wss':
        this.sendWs(data, dest, dest.protocol);
        return;
      default:
        this.sendFailed(dest, `protocol ${dest.protocol} is not supported`, 'EPROTONOSUPPORT');
    }
  }

  /**
   * SIGHUP: a new certificate, key, CA and minimum version for the TLS and
   * WSS listeners and for outbound TLS. New handshakes get them; connections
   * already open keep theirs. Who must show a client certificate
   * (verifyClients) is fixed at start and stays. Throws, changing nothing,
   * when the settings do not make a TLS context (unreadable PEM, a key that
   * is not the certificate's). Returns whether certificate, key or CA differ
   * from the ones in use.
   */
  reloadTls(settings: TlsSettings): boolean {
    const next: Readonly<TlsSettings> = Object.freeze({ ...settings, verifyClients: this.tls.verifyClients });
    const context: tls.SecureContextOptions = { cert: next.cert, key: next.key, ca: next.ca, minVersion: next.minVersion };
    // Validate once before touching any listener: a bad file must leave every listener as it was.
    tls.createSecureContext(context);
    for (const l of this.tcp) l.setSecureContext(context);
    for (const l of this.ws) l.setSecureContext(context);
    const same = (a: string | Buffer | undefined, b: string | Buffer | undefined) => (a === undefined || b === undefined ? a === b : Buffer.from(a).equals(Buffer.from(b)));
    const changed = !same(this.tls.cert, next.cert) || !same(this.tls.key, next.key) || !same(this.tls.ca, next.ca);
    this.tls = next;
    return changed;
  }

  /** The bound local endpoints, ports resolved where 0 was asked. */
  listening(): Endpoint[] {
    const out: Endpoint[] = [];
    for (const l of this.udp) if (l.started) out.push({ ...l.local });
    for (const l of this.tcp) if (l.started) out.push({ ...l.local });
    for (const l of this.ws) if (l.started) out.push({ ...l.local });
    return out;
  }

  /** Sends a queue probe on every UDP listener (see UdpListener.sendProbe). */
  probeUdp(): void {
    // With workers, only while every one is up: another may read the probe, and one not up loses it.
    if (this.relay !== null && !this.relay.complete) return;
    const now = performance.now();
    for (let i = 0; i < this.udp.length; i++) this.udp[i].sendProbe(now);
  }

  /** How long a datagram waited in the deepest UDP receive queue since the previous call, ms (0 without UDP; see UdpListener.takeQueueDelay). */
  takeUdpQueueDelay(): number {
    if (this.relay !== null && !this.relay.complete) {
      for (let i = 0; i < this.udp.length; i++) this.udp[i].forgetProbe();
      return 0;
    }
    const now = performance.now();
    let out = 0;
    for (let i = 0; i < this.udp.length; i++) out = Math.max(out, this.udp[i].takeQueueDelay(now));
    return out;
  }

  /** Whether the stream connection with this id is still open (a registered app's flow). */
  hasConnection(id: number): boolean {
    if (this.relay !== null && id % this.workerCount !== this.workerIndex) return this.siblingConnections.has(id);
    return this.table.get(id) !== undefined;
  }

  /** Open connections (connecting ones included), of one protocol or all. */
  connectionCount(protocol?: Protocol): number {
    return this.table.count(protocol);
  }

  private sendUdp(data: Buffer, dest: Destination): void {
    const family = dest.address.indexOf(':') === -1 ? 4 : 6;
    const local = dest.local;
    let chosen: UdpListener | null = null;
    for (let i = 0; i < this.udp.length; i++) {
      const l = this.udp[i];
      if (l.family !== family) continue;
      if (local === undefined) {
        chosen = l;
        break;
      }
      const e = l.local;
      if (e.address === local.address && e.port === local.port) {
        chosen = l;
        break;
      }
      if (chosen === null || (e.address === local.address && chosen.local.address !== local.address)) chosen = l;
    }
    if (chosen === null) {
      this.sendFailed(dest, `no UDP socket for IPv${family}`, 'EAFNOSUPPORT');
      return;
    }
    if (data.length > this.limits.maxMessageSize) this.log?.debug?.({ dest, size: data.length }, 'sending datagram over maxMessageSize');
    chosen.send(data, dest.port, dest.address);
  }

  /** The open connection of `protocol` to dest: its connectionId when that still names it, else any to its endpoint. */
  private openConnection(dest: Destination, protocol: Protocol): StreamConnection | undefined {
    let conn: StreamConnection | undefined;
    if (dest.connectionId !== undefined && dest.connectionId !== 0) {
      conn = this.table.get(dest.connectionId);
      // An id is only a hint: one from another process or node (a stored
      // binding) may name someone else's connection here. The remote end
      // must be the destination's.
      if (conn !== undefined && (conn.protocol !== protocol || conn.remote.port !== dest.port || conn.remote.address !== dest.address)) conn = undefined;
    }
    return conn ?? this.table.find(endpointKey(protocol, dest.address, dest.port));
  }

  private sendWs(data: Buffer, dest: Destination, protocol: 'ws' | 'wss'): void {
    const conn = this.openConnection(dest, protocol);
    if (conn === undefined) {
      // RFC 7118 §5: a WebSocket client is reached down its own connection only.
      this.sendFailed(dest, `no open ${protocol} connection to ${dest.address}:${dest.port}`, 'ENOTCONN');
      return;
    }
    conn.write(data);
  }

  private sendStream(data: Buffer, dest: Destination, protocol: 'tcp' | 'tls'): void {
    let conn = this.openConnection(dest, protocol);
    if (conn === undefined) {
      if (!this.table.admitOutbound()) {
        this.sendFailed(dest, 'connection limit reached', 'EMFILE');
        return;
      }
      conn = connectTcp(this.ctx, dest, this.localAddressFor(dest.address));
    }
    conn.write(data);
  }

  // Outbound connections leave from the listener's address when it names one
  // of the destination's family, so that a multi-homed host uses the address
  // it advertises.
  private localAddressFor(address: string): string | undefined {
    const family = address.indexOf(':') === -1 ? 4 : 6;
    for (const l of this.tcp) {
      if (l.family !== family) continue;
      const a = l.specificAddress;
      if (a !== undefined) return a;
    }
    return undefined;
  }

  private sendFailed(dest: Destination, message: string, code: string): void {
    this.stats.dropped['send-error']++;
    const err = Object.assign(new Error(message), { code });
    this.log?.debug?.({ dest, err }, 'send failed');
    if (this.sink.onSendError) {
      try {
        this.sink.onSendError(dest, err);
      } catch (e) {
        this.log?.warn({ err: e }, 'send error handler threw');
      }
    }
  }
}

// Validates a listen spec; returns the host without brackets.
function checkSpec(spec: ListenSpec, tls: Readonly<TlsSettings>): string {
  const name = `${spec.protocol} ${spec.host}:${spec.port}`;
  if (!(PROTOCOLS as readonly string[]).includes(spec.protocol)) {
    throw new Error(`cannot listen on ${name}: unknown protocol ${String(spec.protocol)}`);
  }
  if ((spec.protocol === 'tls' || spec.protocol === 'wss') && (tls.cert === undefined || tls.key === undefined)) {
    throw new Error(`cannot listen on ${name}: no TLS certificate and key given`);
  }
  let host = spec.host;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (!isIpLiteral(host)) throw new Error(`cannot listen on ${name}: host must be an IP address`);
  if (!Number.isInteger(spec.port) || spec.port < 0 || spec.port > 65535) {
    throw new Error(`cannot listen on ${name}: invalid port`);
  }
  return host;
}

function isIpLiteral(host: string): boolean {
  // Startup only, so node's own checks are fine here.
  return net.isIP(host) !== 0;
}

function listenError(spec: ListenSpec, cause: NodeJS.ErrnoException): Error {
  const name = `${spec.protocol} ${spec.host}:${spec.port}`;
  let why: string;
  switch (cause.code) {
    case 'EADDRINUSE':
      why = 'address already in use';
      break;
    case 'EACCES':
      why = 'permission denied (ports below 1024 need privileges)';
      break;
    case 'EADDRNOTAVAIL':
      why = 'address not available on this host';
      break;
    default:
      why = cause.message;
  }
  const err = new Error(`cannot listen on ${name}: ${why}${cause.code ? ` (${cause.code})` : ''}`, { cause });
  return Object.assign(err, { code: cause.code });
}

