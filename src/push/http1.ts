// HTTP/1.1 requests, for the OAuth token endpoint and the generic gateway:
// every HTTP server speaks it (ntfy over plain http on loopback, a city's
// gateway behind an old reverse proxy), where HTTP/2 is not a given.

import http from 'node:http';
import https from 'node:https';
import { caOption, classifyError, TransportError, type HttpRequest, type HttpResponse, type TlsTrust } from './http2-pool.js';

export class Http1Client {
  private readonly httpsAgent: https.Agent;
  private readonly httpAgent: http.Agent;
  private closed = false;

  constructor(
    trust: TlsTrust,
    private readonly opts: { timeoutMs: number; maxBodyBytes?: number },
  ) {
    // Keep-alive: a burst of pushes to one gateway reuses its connections; the limit bounds sockets.
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 16, ca: caOption(trust), minVersion: 'TLSv1.2' });
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  request(url: URL, r: Omit<HttpRequest, 'path'>): Promise<HttpResponse> {
    if (this.closed) return Promise.reject(new TransportError('closed', 'the push client is closed'));
    const maxBody = this.opts.maxBodyBytes ?? 65536;
    const secure = url.protocol === 'https:';
    const mod = secure ? https : http;
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const headers: http.OutgoingHttpHeaders = { ...r.headers };
      if (r.body !== undefined) headers['content-length'] = Buffer.byteLength(r.body);
      const req = mod.request(
        url,
        { method: r.method, headers, agent: secure ? this.httpsAgent : this.httpAgent },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size <= maxBody) chunks.push(c);
          });
          res.on('end', () => settle(() => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) })));
          res.on('error', (err) => settle(() => reject(classifyError(err))));
        },
      );
      const timer = setTimeout(() => {
        settle(() => reject(new TransportError('timeout', `no response within ${this.opts.timeoutMs} ms`)));
        req.destroy();
      }, this.opts.timeoutMs);
      timer.unref();
      req.on('error', (err) => settle(() => reject(classifyError(err))));
      req.end(r.body);
    });
  }

  close(): void {
    this.closed = true;
    this.httpsAgent.destroy();
    this.httpAgent.destroy();
  }
}
