/**
 * The operations HTTP listener (`metrics.listen`):
 *
 *   GET /metrics   Prometheus text format
 *   GET /healthz   200 {"status":"ok",...} while SIP is served, 503 once stopping
 *
 * HEAD is answered like GET without a body; other methods get 405, other paths 404.
 * There is no authentication: bind it to 127.0.0.1 or a management network.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { formatHttpListen, type HttpListen } from '../config/index.js';

export interface Health {
  /** True while the SIP transports are up; false once stopping. */
  ok: boolean;
  /** The JSON body (a `status` field is added). */
  body: Record<string, unknown>;
}

const ROUTES = new Set(['/metrics', '/healthz']);

export class MetricsHttpServer {
  private readonly server: Server;
  private closed: Promise<void> | null = null;

  constructor(
    private readonly listen: HttpListen,
    private readonly registry: Registry,
    private readonly health: () => Promise<Health>,
  ) {
    this.server = createServer((req, res) => this.handle(req, res));
    // A scrape is a small GET: keep slow or idle clients from holding sockets.
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 10_000;
    this.server.maxHeadersCount = 50;
  }

  /** Binds the socket; rejects with an error naming metrics.listen (its `code` copied from the system error). */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const where = formatHttpListen(this.listen);
        const why =
          err.code === 'EADDRINUSE'
            ? 'address already in use (another program holds the port; choose another metrics.listen port or set it to off)'
            : err.code === 'EACCES'
              ? 'permission denied (ports below 1024 need privileges)'
              : err.code === 'EADDRNOTAVAIL'
                ? 'no such local address'
                : err.message;
        reject(Object.assign(new Error(`metrics.listen ${where}: cannot listen: ${why}`, { cause: err }), { code: err.code }));
      };
      this.server.once('error', onError);
      this.server.listen({ host: this.listen.host, port: this.listen.port, exclusive: true }, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
  }

  /** The bound address (port resolved when 0 was asked), or null when not listening. */
  address(): { address: string; port: number } | null {
    const a = this.server.address() as AddressInfo | null;
    return a === null ? null : { address: a.address, port: a.port };
  }

  /** Stops listening and closes every connection, keep-alive ones included. Idempotent. */
  close(): Promise<void> {
    this.closed ??= new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    return this.closed;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (!ROUTES.has(path)) return plain(res, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return plain(res, 405, 'method not allowed\n');
    }
    const answer = path === '/metrics' ? this.metrics(res) : this.healthz(res);
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
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text);
}
