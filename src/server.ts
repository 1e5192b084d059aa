// The running server: configuration in, transports up, every received
// message parsed, checked and answered or dropped (and counted).
//
// This is the foundation's request handling: OPTIONS to the server itself,
// and a correct SIP error for what cannot be routed yet. The transaction
// layer, proxy and registrar take over the routing of requests.

import type { Config } from './config/index.js';
import type { Logger } from './log.js';
import {
  buildResponseBytes,
  parseAndValidate,
  responsePort,
  SipParseError,
  stampedVia,
  type ParseLimits,
  type ResponseOptions,
  type SipMessage,
} from './sip/index.js';
import {
  TransportLayer,
  type Destination,
  type Endpoint,
  type Source,
  type TransportLimits,
} from './transport/index.js';

/** Methods Portier answers itself or routes. */
export const ALLOWED_METHODS = 'INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, MESSAGE, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER';
const ALLOWED = new Set(ALLOWED_METHODS.split(', '));

/** Option tags Portier supports (none before the registrar's path/outbound/gruu). */
export const SUPPORTED_OPTIONS = '';

/** Counters of what the server did with what it received; read by tests and, later, metrics. */
export interface ServerStats {
  requests: number;
  responses: number;
  /** Messages refused by the parser, by the response sent: '400', '413', '505', or 'drop'. */
  parseErrors: Record<string, number>;
  /** Responses with no transaction to go to. */
  strayResponses: number;
  /** Requests answered locally, by status code. */
  answered: Record<string, number>;
}

export interface RunningServer {
  stop(): Promise<void>;
  /** Bound endpoints (ports resolved when the config asked for port 0). */
  listening(): Endpoint[];
  readonly stats: ServerStats;
  readonly transport: TransportLayer;
}

export function transportLimits(config: Config): TransportLimits {
  return {
    maxMessageSize: config.limits.messageSize,
    maxConnections: config.limits.connections,
    maxConnectionsPerSource: config.limits.connectionsPerSource,
    idleTimeoutMs: config.limits.idleTimeout * 1000,
    firstMessageTimeoutMs: config.limits.firstMessageTimeout * 1000,
  };
}

export function parseLimits(config: Config): ParseLimits {
  return {
    maxMessageSize: config.limits.messageSize,
    maxHeaders: config.limits.headers,
    maxLineLength: config.limits.lineLength,
  };
}

const DEFAULT_PORT: Record<string, number> = { udp: 5060, tcp: 5060, tls: 5061, ws: 80, wss: 443 };

class Server implements RunningServer {
  readonly stats: ServerStats = { requests: 0, responses: 0, parseErrors: {}, strayResponses: 0, answered: {} };
  readonly transport: TransportLayer;
  private readonly limits: ParseLimits;
  private readonly domains: Set<string>;
  private selfHosts = new Set<string>();

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    this.limits = parseLimits(config);
    this.domains = new Set(config.domains.map((d) => d.toLowerCase()));
    this.transport = new TransportLayer(
      config.listen.map((l) => ({ protocol: l.protocol, host: l.host, port: l.port })),
      transportLimits(config),
      {
        onMessage: (data, source) => this.onMessage(data, source),
        onSendError: (dest, err) => this.log.debug({ dest: `${dest.protocol}:${dest.address}:${dest.port}`, err: err.message }, 'send failed'),
      },
      {
        warn: (obj, msg) => this.log.warn(obj, msg),
        debug: (obj, msg) => this.log.debug(obj, msg),
      },
    );
  }

  async start(): Promise<void> {
    await this.transport.start();
    for (const ep of this.transport.listening()) this.selfHosts.add(ep.address.toLowerCase());
    this.log.info({ listen: this.listening().map((e) => `${e.protocol}:${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}`), domains: this.config.domains }, 'Portier started');
  }

  async stop(): Promise<void> {
    await this.transport.stop();
    this.log.info('Portier stopped');
  }

  listening(): Endpoint[] {
    return this.transport.listening();
  }

  private onMessage(data: Buffer, source: Source): void {
    const r = parseAndValidate(data, { transport: source.protocol, limits: this.limits });
    if (r instanceof SipParseError) {
      this.onParseError(r, source);
      return;
    }
    if (!r.isRequest) {
      this.stats.responses++;
      // No client transactions yet: a response here belongs to nothing we sent.
      this.stats.strayResponses++;
      return;
    }
    this.stats.requests++;
    stampTopVia(r, source);
    this.onRequest(r, source);
  }

  private onParseError(err: SipParseError, source: Source): void {
    const msg = err.message;
    // A response needs the request's Via, From, To, Call-ID and CSeq
    // (RFC 3261 §8.2.6.2); without them no client could match it: drop.
    const canAnswer =
      err.code !== 0 &&
      msg !== undefined &&
      msg.isRequest &&
      msg.method !== 'ACK' &&
      msg.topVia() !== null &&
      msg.has('from') &&
      msg.has('to') &&
      msg.has('call-id') &&
      msg.has('cseq');
    const key = canAnswer ? String(err.code) : 'drop';
    this.stats.parseErrors[key] = (this.stats.parseErrors[key] ?? 0) + 1;
    this.log.debug({ source: `${source.protocol}:${source.address}:${source.port}`, code: err.code, reason: err.reason }, 'malformed message');
    if (!canAnswer) return;
    stampTopVia(msg, source);
    const headers: Array<[string, string]> = [['Warning', `399 portier "${err.reason}"`]];
    if (err.code === 505) headers.push(['Supported', SUPPORTED_OPTIONS]);
    this.respond(msg, source, err.code, { reason: reasonFor(err), headers });
  }

  private onRequest(req: SipMessage, source: Source): void {
    const method = req.method;
    if (method === 'ACK') return; // ACK to a final response Portier sent: nothing to do
    const ruri = req.requestUri!;
    if (ruri.scheme !== 'sip' && ruri.scheme !== 'sips' && ruri.scheme !== 'tel') {
      this.respond(req, source, 416);
      return;
    }
    if (method === 'OPTIONS' && this.isSelf(ruri.user, ruri.hostname, source)) {
      this.respond(req, source, 200, {
        headers: [
          ['Allow', ALLOWED_METHODS],
          ['Accept', 'application/sdp'],
          ['Supported', SUPPORTED_OPTIONS],
        ],
      });
      return;
    }
    // RFC 3261 §16.3 step 4: extensions a proxy must understand.
    const proxyRequire = req.tokens('proxy-require');
    if (proxyRequire.length > 0) {
      this.respond(req, source, 420, { headers: [['Unsupported', proxyRequire.join(', ')]] });
      return;
    }
    const mf = req.maxForwards();
    if (mf === 0) {
      this.respond(req, source, 483);
      return;
    }
    if (method === 'CANCEL') {
      this.respond(req, source, 481);
      return;
    }
    if (!ALLOWED.has(method)) {
      this.respond(req, source, 501, { headers: [['Allow', ALLOWED_METHODS]] });
      return;
    }
    if (method === 'REGISTER') {
      // The registrar arrives with the proxy issue.
      this.respond(req, source, 501, { reason: 'Registrar Not Available Yet', headers: [['Allow', ALLOWED_METHODS]] });
      return;
    }
    if (ruri.isSip && (this.domains.has(ruri.hostname) || this.selfHosts.has(ruri.hostname))) {
      // Ours, but nobody can be registered yet.
      this.respond(req, source, 480);
      return;
    }
    this.respond(req, source, 403, { reason: 'Relaying Not Allowed' });
  }

  /** A request for the server itself: no user part and one of its domains or addresses. */
  private isSelf(user: string | null, host: string, source: Source): boolean {
    if (user !== null && user !== '') return false;
    return this.domains.has(host) || this.selfHosts.has(host) || host === source.local.address.toLowerCase();
  }

  private respond(req: SipMessage, source: Source, code: number, opts?: ResponseOptions): void {
    this.stats.answered[code] = (this.stats.answered[code] ?? 0) + 1;
    const bytes = buildResponseBytes(req, code, opts);
    this.transport.send(bytes, responseDestination(req, source));
  }
}

function reasonFor(err: SipParseError): string | undefined {
  if (err.code === 400) return 'Bad Request';
  return undefined;
}

/** RFC 3261 §18.2.1, RFC 3581: note where the request really came from in its top Via. */
function stampTopVia(req: SipMessage, source: Source): void {
  const top = req.topVia();
  if (top === null) return;
  const v = stampedVia(top, source.address, source.port);
  if (v !== null) req.replaceFirstValue('via', v);
}

/**
 * RFC 3261 §18.2.2 with RFC 3581: on a stream, back down the same
 * connection; over UDP, to the source address and either the source port
 * (rport) or the Via's sent-by port.
 */
export function responseDestination(req: SipMessage, source: Source): Destination {
  if (source.protocol !== 'udp') {
    return { protocol: source.protocol, address: source.address, port: source.port, connectionId: source.connectionId };
  }
  const via = req.topVia();
  const port = via === null ? source.port : responsePort(via, DEFAULT_PORT[source.protocol] ?? 5060);
  return { protocol: 'udp', address: source.address, port, local: source.local };
}

/** Starts Portier with a validated configuration (the contract src/cli/run.ts expects). */
export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const server = new Server(config, log);
  await server.start();
  return server;
}
