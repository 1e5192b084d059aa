// Local stand-ins for the push providers: HTTP/2 servers over real TLS
// (certificates from the openssl CLI, made at test time) that record each
// request, and independent checks of the JWTs they receive.

import { generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import http2, { type Http2SecureServer, type IncomingHttpHeaders } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { PushConfig } from '../../src/config/types.js';
import type { Clock } from '../../src/push/index.js';
import type { PushTarget } from '../../src/push/params.js';
import type { TestCerts } from '../helpers/certs.js';

export interface Recorded {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** '2.0' or '1.1'. */
  httpVersion: string;
  /** Which connection it came on (1, 2, ...: HTTP/2 sessions and HTTP/1.1 sockets numbered apart). */
  connection: number;
  /** Subject CN of the client certificate, when one was sent. */
  clientCert: string | null;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string | object;
}

export type Handler = (req: Recorded) => Reply | Promise<Reply>;

export interface FakeProvider {
  server: Http2SecureServer;
  port: number;
  origin: string;
  requests: Recorded[];
  /** TLS connections accepted. */
  connections: () => number;
  /** HTTP/2 sessions open now. */
  sessions: Set<http2.ServerHttp2Session>;
  close(): Promise<void>;
}

/** An HTTP/2 (and, for token and gateway endpoints, HTTP/1.1) server over TLS on 127.0.0.1. */
export async function startProvider(
  t: Test,
  certs: TestCerts,
  handler: Handler,
  opts: { requestClientCert?: boolean; selfSigned?: boolean } = {},
): Promise<FakeProvider> {
  const server = http2.createSecureServer({
    key: opts.selfSigned ? certs.otherKey : certs.serverKey,
    cert: opts.selfSigned ? certs.otherCert : certs.serverCert,
    allowHTTP1: true,
    requestCert: opts.requestClientCert === true,
    rejectUnauthorized: opts.requestClientCert === true,
    ca: opts.requestClientCert ? certs.caCert : undefined,
  });
  const requests: Recorded[] = [];
  let connections = 0;
  const ids = new WeakMap<object, number>();
  // HTTP/2 requests are told apart by session, HTTP/1.1 ones by socket: each is one TLS connection.
  server.on('secureConnection', (sock) => ids.set(sock, ++connections));
  let sessionCount = 0;
  server.on('session', (sess) => ids.set(sess, ++sessionCount));
  server.on('request', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const sock = req.socket as unknown as import('node:tls').TLSSocket;
      const peer = typeof sock.getPeerCertificate === 'function' ? sock.getPeerCertificate() : null;
      const rec: Recorded = {
        method: req.method,
        path: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        httpVersion: req.httpVersion,
        connection: (req.httpVersion === '2.0' ? ids.get(req.stream.session as object) : ids.get(sock)) ?? 0,
        clientCert: peer && peer.subject ? String(peer.subject.CN) : null,
      };
      requests.push(rec);
      void Promise.resolve(handler(rec)).then((r) => {
        const body = r.body === undefined ? '' : typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
        res.writeHead(r.status, { ...(typeof r.body === 'object' ? { 'content-type': 'application/json' } : {}), ...r.headers });
        res.end(body);
      });
    });
  });
  server.on('sessionError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sessions) s.destroy();
      server.close(() => resolve());
    });
  t.teardown(close);
  return { server, port, origin: `https://127.0.0.1:${port}`, requests, connections: () => connections, sessions, close };
}

/** Decoded JWT parts; `valid` says whether the signature checks out with `publicKey`. */
export function checkJwt(jwt: string, alg: 'RS256' | 'ES256', publicKey: KeyObject): { header: Record<string, unknown>; claims: Record<string, unknown>; valid: boolean } {
  const [h, c, s] = jwt.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as Record<string, unknown>;
  const claims = JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as Record<string, unknown>;
  const data = Buffer.from(`${h}.${c}`);
  const sig = Buffer.from(s, 'base64url');
  const valid =
    header.alg === alg &&
    (alg === 'ES256' ? verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig) : verify('sha256', data, publicKey, sig));
  return { header, claims, valid };
}

export interface TestKeys {
  rsaPem: string;
  rsaPublic: KeyObject;
  ecPem: string;
  ecPublic: KeyObject;
}

export function makeKeys(): TestKeys {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    rsaPem: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    rsaPublic: rsa.publicKey,
    ecPem: ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    ecPublic: ec.publicKey,
  };
}

export const PROJECT = 'portier-test-1234';
export const CLIENT_EMAIL = 'portier-push@portier-test-1234.iam.gserviceaccount.com';

/** A service-account JSON as Firebase console gives it, pointing at a local token URI. */
export function writeServiceAccount(dir: string, keys: TestKeys, tokenUri: string): string {
  const file = join(dir, 'service-account.json');
  writeFileSync(
    file,
    JSON.stringify({
      type: 'service_account',
      project_id: PROJECT,
      private_key_id: 'a1b2c3d4e5',
      private_key: keys.rsaPem,
      client_email: CLIENT_EMAIL,
      client_id: '1234567890',
      auth_uri: 'https://accounts.google.com/o/oauth2/auth',
      token_uri: tokenUri,
    }),
  );
  return file;
}

export const NO_PUSH: PushConfig = { callTimeout: 30, response: 180, registerWakeup: null, ca: null, fcm: null, apns: null, generic: null };

/** A clock moved by hand: timers fire only through `advance`. */
export class ManualClock implements Clock {
  time = 1_700_000_000_000;
  timers: Array<{ at: number; fn: () => void; ms: number; live: boolean }> = [];
  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): () => void {
    const timer = { at: this.time + ms, fn, ms, live: true };
    this.timers.push(timer);
    return () => {
      timer.live = false;
    };
  }
  /** Pending timer delays, in ms. */
  pending(): number[] {
    return this.timers.filter((x) => x.live).map((x) => x.ms);
  }
  /** Moves time on and runs the timers that are due, in order. */
  advance(ms: number): void {
    this.time += ms;
    for (;;) {
      const due = this.timers.filter((x) => x.live && x.at <= this.time).sort((a, b) => a.at - b.at)[0];
      if (due === undefined) return;
      due.live = false;
      due.fn();
    }
  }
}

/** Real time, but every timer's delay recorded and shortened to 1 ms (retries without waiting). */
export class FastClock implements Clock {
  delays: number[] = [];
  time = Date.now();
  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): () => void {
    this.delays.push(ms);
    const h = setTimeout(fn, 1);
    return () => clearTimeout(h);
  }
}

const BASE_TARGET: PushTarget = {
  provider: 'fcm',
  sandbox: false,
  token: 'tok',
  voipToken: null,
  param: '',
  appId: '',
  teamId: null,
  callStr: 'IC_MSG',
  msgStr: 'IM_MSG',
  groupChatStr: 'GC_MSG',
  missedCallStr: 'Missing call',
  acceptedElsewhereStr: 'Accepted elsewhere',
  declinedElsewhereStr: 'Declined elsewhere',
  callSound: null,
  msgSound: null,
  silent: true,
  timeout: 0,
  remotePushInterval: null,
  legacy: false,
};

export function target(o: Partial<PushTarget>): PushTarget {
  return { ...BASE_TARGET, ...o };
}

export const CALL = {
  callId: 'c0ffee42@192.0.2.10',
  fromUri: 'sip:door-gate@school.example.test',
  fromName: 'Gate "North" é',
  toUri: 'sip:alice@school.example.test',
  instance: '<urn:uuid:0a1b2c3d-1111-2222-3333-444455556666>',
};
