// HTTP/2 client sessions to the push providers: one session per origin,
// reused for every request (APNs and FCM both ask for long-lived connections
// rather than one per push), opened again after GOAWAY, close or error.
// Certificates are always verified: a configured CA is added to the roots.

import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import tls from 'node:tls';

/** Trust and client identity for outbound TLS. */
export interface TlsTrust {
  /** Extra CA certificates (PEM) trusted besides the system roots; null: the roots only. */
  ca: string | null;
  /** Client certificate and key (PEM) for APNs certificate-based authentication. */
  cert?: string;
  key?: string;
}

/** The `ca` option for node:tls: the roots plus the configured PEM (giving `ca` alone would replace the roots). */
export function caOption(trust: TlsTrust): string[] | undefined {
  return trust.ca === null ? undefined : [...tls.rootCertificates, trust.ca];
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface HttpRequest {
  method: string;
  /** Path and query. */
  path: string;
  headers?: OutgoingHttpHeaders;
  body?: string | Buffer;
}

/** A request that got no HTTP response. `reason` is one of unreachable, tls, timeout, closed. */
export class TransportError extends Error {
  constructor(
    readonly reason: 'unreachable' | 'tls' | 'timeout' | 'closed',
    detail: string,
  ) {
    super(detail);
    this.name = 'TransportError';
  }
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'EADDRNOTAVAIL']);

/** Sorts a socket, TLS or HTTP/2 error into the few reasons the counters know. */
export function classifyError(err: unknown): TransportError {
  if (err instanceof TransportError) return err;
  const e = err as NodeJS.ErrnoException & { library?: string };
  const code = e?.code ?? '';
  const detail = `${code ? `${code}: ` : ''}${e?.message ?? String(err)}`;
  if (NETWORK_CODES.has(code)) return new TransportError('unreachable', detail);
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(code) || e?.library === 'SSL routines') {
    return new TransportError('tls', detail);
  }
  return new TransportError('closed', detail);
}

export interface PoolOptions {
  /** Milliseconds a request may take, connection included. */
  timeoutMs: number;
  /** Largest response body kept; providers answer with a few hundred bytes. */
  maxBodyBytes?: number;
}

interface Entry {
  session: ClientHttp2Session;
  active: number;
  /** The session's own error (refused connection, bad certificate), reported to its pending requests. */
  error: Error | null;
  /** Rejecters of the requests in progress on it. */
  failers: Set<(err: unknown) => void>;
}

export class Http2Pool {
  private readonly entries = new Map<string, Entry>();
  private readonly maxBody: number;
  private closed = false;

  constructor(
    private readonly trust: TlsTrust,
    private readonly opts: PoolOptions,
  ) {
    this.maxBody = opts.maxBodyBytes ?? 65536;
  }

  private entry(origin: string): Entry {
    const old = this.entries.get(origin);
    if (old !== undefined && !old.session.closed && !old.session.destroyed) return old;
    const session = http2.connect(origin, {
      ca: caOption(this.trust),
      cert: this.trust.cert,
      key: this.trust.key,
      minVersion: 'TLSv1.2',
    });
    const e: Entry = { session, active: 0, error: null, failers: new Set() };
    this.entries.set(origin, e);
    const forget = () => {
      if (this.entries.get(origin) === e) this.entries.delete(origin);
    };
    // After GOAWAY the streams in flight finish; new requests open a new session.
    session.on('goaway', forget);
    session.on('close', forget);
    session.on('error', (err) => {
      e.error = err;
      forget();
      for (const fail of [...e.failers]) fail(err);
    });
    return e;
  }

  request(origin: string, r: HttpRequest): Promise<HttpResponse> {
    if (this.closed) return Promise.reject(new TransportError('closed', 'the push client is closed'));
    return new Promise((resolve, reject) => {
      let e: Entry;
      let stream: http2.ClientHttp2Stream;
      try {
        e = this.entry(origin);
        const headers: OutgoingHttpHeaders = { ':method': r.method, ':path': r.path, ...r.headers };
        stream = e.session.request(headers, { endStream: r.body === undefined });
      } catch (err) {
        // A session that died between lookup and request: the caller may try again on a new one.
        reject(classifyError(err));
        return;
      }
      e.active++;
      e.session.ref();
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        e.failers.delete(fail);
        // An idle session must not keep a stopping process alive.
        if (--e.active === 0 && !e.session.destroyed) e.session.unref();
        fn();
      };
      const timer = setTimeout(() => {
        settle(() => reject(new TransportError('timeout', `no response within ${this.opts.timeoutMs} ms`)));
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }, this.opts.timeoutMs);
      timer.unref();
      let status = 0;
      let resHeaders: IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('response', (h) => {
        status = Number(h[':status']);
        resHeaders = h;
      });
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= this.maxBody) chunks.push(chunk);
      });
      stream.on('end', () => {
        if (status > 0) settle(() => resolve({ status, headers: resHeaders, body: Buffer.concat(chunks) }));
      });
      const fail = (err: unknown) => settle(() => reject(classifyError(err)));
      e.failers.add(fail);
      // A refused connection or a bad certificate reaches the stream (as a cancel) before the
      // session reports the cause: wait one turn so that the cause is what gets counted.
      const failSoon = (err: unknown) => setImmediate(() => fail(e.error ?? err));
      stream.on('error', failSoon);
      stream.on('close', () => {
        if (status > 0 && !settled) settle(() => resolve({ status, headers: resHeaders, body: Buffer.concat(chunks) }));
        failSoon(new TransportError('closed', `stream closed (HTTP/2 code ${stream.rstCode ?? 'none'})`));
      });
      if (r.body !== undefined) stream.end(r.body);
    });
  }

  /** Ends every session; requests after this fail at once. */
  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) {
      // Streams still open would hold a graceful close back: a stopping server does not wait for pushes.
      if (e.active === 0) e.session.close();
      else e.session.destroy();
    }
    this.entries.clear();
  }
}
