// Listening and closing for the small HTTP servers (metrics, provisioning):
// a bind failure becomes one error naming the config key, and close ends
// keep-alive connections too.

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatHttpListen, type HttpListen } from './config/index.js';

const REASONS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied (ports below 1024 need privileges)',
};

/**
 * Binds `server` on `listen`; rejects with an error `<what> <host:port>: cannot listen: <why>`
 * (its `code` copied from the system error). `reasons` adds or replaces the why for an error code.
 */
export function listenHttp(server: Server, listen: HttpListen, what: string, reasons: Readonly<Record<string, string>> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const why = (err.code !== undefined ? (reasons[err.code] ?? REASONS[err.code]) : undefined) ?? err.message;
      reject(Object.assign(new Error(`${what} ${formatHttpListen(listen)}: cannot listen: ${why}`, { cause: err }), { code: err.code }));
    };
    server.once('error', onError);
    server.listen({ host: listen.host, port: listen.port, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** The bound address (port resolved when 0 was asked), or null when not listening. */
export function httpAddress(server: Server): { address: string; port: number } | null {
  const a = server.address() as AddressInfo | null;
  return a === null ? null : { address: a.address, port: a.port };
}

/** Stops listening and closes every connection, keep-alive ones included. */
export function closeHttp(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** The path of a request's URL, without its query. */
export function requestPath(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}
