/**
 * The operations HTTP listener (`metrics.listen`):
 *
 *   GET /metrics   Prometheus text format
 *   GET /healthz   liveness: 200 {"status":"ok",...} while SIP is served, 503 once stopping
 *   GET /readyz    readiness: 200 {"status":"ready",...} when the SIP listeners are bound and
 *                  storage is reachable, else 503 {"status":"not ready","not_ready":[...],...}
 *   GET /status    an HTML page for a person (when a status page is given)
 *
 * HEAD is answered like GET without a body; other methods get 405, other paths 404.
 * There is no authentication: bind it to 127.0.0.1 or a management network
 * (/status names accounts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { HttpListen } from '../config/index.js';
import { closeHttp, httpAddress, listenHttp, requestPath } from '../http-listen.js';

/** Readiness checks by name (listeners, storage, ...): each ok or not, with a reason a person can read. */
export interface Readiness {
  ok: boolean;
  checks: Record<string, { ok: boolean; detail: string }>;
}

export interface Health {
  /** True while the SIP transports are up; false once stopping. */
  ok: boolean;
  /** The JSON body (a `status` field is added). */
  body: Record<string, unknown>;
  /** For /readyz; without it /readyz follows `ok`. */
  ready?: Readiness;
}

export interface OperationsPages {
  /** The /status page (HTML); without it /status is 404. */
  status?: () => Promise<string>;
}

/** Headers of the HTML page: no caching, no framing, nothing loaded from anywhere. */
const HTML_HEADERS = {
  'Content-Type': 'text/html; charset=utf-8',
  'Cache-Control': 'no-store',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
};

const ROUTES = new Set(['/metrics', '/healthz', '/readyz', '/status']);

export class MetricsHttpServer {
  private readonly server: Server;
  private closed: Promise<void> | null = null;

  constructor(
    private readonly listen: HttpListen,
    private readonly registry: Registry,
    private readonly health: () => Promise<Health>,
    private readonly pages: OperationsPages = {},
  ) {
    this.server = createServer((req, res) => this.handle(req, res));
    // A scrape is a small GET: keep slow or idle clients from holding sockets.
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 10_000;
    this.server.maxHeadersCount = 50;
  }

  /** Binds the socket; rejects with an error naming metrics.listen (its `code` copied from the system error). */
  start(): Promise<void> {
    return listenHttp(this.server, this.listen, 'metrics.listen', {
      EADDRINUSE: 'address already in use (another program holds the port; choose another metrics.listen port or set it to off)',
      EADDRNOTAVAIL: 'no such local address',
    });
  }

  /** The bound address (port resolved when 0 was asked), or null when not listening. */
  address(): { address: string; port: number } | null {
    return httpAddress(this.server);
  }

  /** Stops listening and closes every connection, keep-alive ones included. Idempotent. */
  close(): Promise<void> {
    this.closed ??= closeHttp(this.server);
    return this.closed;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = requestPath(req.url);
    if (!ROUTES.has(path) || (path === '/status' && this.pages.status === undefined)) return plain(res, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return plain(res, 405, 'method not allowed\n');
    }
    const answer = path === '/metrics' ? this.metrics(res) : path === '/healthz' ? this.healthz(res) : path === '/readyz' ? this.readyz(res) : this.status(res);
    answer.catch((err: unknown) => {
      if (!res.headersSent) plain(res, 500, `${err instanceof Error ? err.message : String(err)}\n`);
      else res.destroy();
    });
  }

  private async metrics(res: ServerResponse): Promise<void> {
    const text = await this.registry.metrics();
    res.writeHead(200, { 'Content-Type': this.registry.contentType, 'Cache-Control': 'no-store' });
    res.end(text);
  }

  private async healthz(res: ServerResponse): Promise<void> {
    const h = await this.health();
    const body = JSON.stringify({ status: h.ok ? 'ok' : 'stopping', ...h.body });
    res.writeHead(h.ok ? 200 : 503, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    res.end(body + '\n');
  }

  private async readyz(res: ServerResponse): Promise<void> {
    const h = await this.health();
    const r: Readiness = h.ready ?? { ok: h.ok, checks: { serving: { ok: h.ok, detail: h.ok ? 'serving' : 'stopping' } } };
    const notReady = Object.entries(r.checks)
      .filter(([, c]) => !c.ok)
      .map(([name]) => name);
    const body = JSON.stringify({ status: r.ok ? 'ready' : 'not ready', ...(r.ok ? {} : { not_ready: notReady }), checks: r.checks });
    res.writeHead(r.ok ? 200 : 503, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    res.end(body + '\n');
  }

  private async status(res: ServerResponse): Promise<void> {
    const html = await (this.pages.status as () => Promise<string>)();
    res.writeHead(200, HTML_HEADERS);
    res.end(html);
  }
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text);
}
