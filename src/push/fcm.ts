// Firebase Cloud Messaging, HTTP v1 API: an OAuth2 access token got from a
// service account (RFC 7523 JWT bearer grant, RS256), then one POST per push
// to /v1/projects/PROJECT/messages:send over HTTP/2.

import { readFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { privateKeyFor, signJwt } from './jwt.js';
import type { Http2Pool } from './http2-pool.js';
import type { Http1Client } from './http1.js';
import { bareInstance, locKey, retryOf, sendTime, type Attempt, type Clock, type Delivery, type ProviderClient } from './types.js';

export const FCM_ENDPOINT = 'https://fcm.googleapis.com';
export const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** FCM keeps a message four weeks at most. */
const FCM_MAX_TTL = 2419200;

export interface ServiceAccount {
  projectId: string;
  clientEmail: string;
  tokenUri: string;
  privateKeyId: string | null;
  privateKey: KeyObject;
}

/** The fields of a Google service-account JSON file that FCM needs; throws an Error naming what is wrong. */
export function parseServiceAccount(text: string): ServiceAccount {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON (${(err as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new Error('not a service-account JSON object');
  const o = json as Record<string, unknown>;
  const field = (k: string): string => {
    const v = o[k];
    if (typeof v !== 'string' || v === '') throw new Error(`${k} is missing (download the key from Firebase console > Project settings > Service accounts)`);
    return v;
  };
  const projectId = field('project_id');
  const clientEmail = field('client_email');
  const tokenUri = field('token_uri');
  let url: URL;
  try {
    url = new URL(tokenUri);
  } catch {
    throw new Error(`token_uri ${JSON.stringify(tokenUri)} is not a URL`);
  }
  if (url.protocol !== 'https:') throw new Error(`token_uri must be https (got ${JSON.stringify(tokenUri)})`);
  let privateKey: KeyObject;
  try {
    privateKey = privateKeyFor('RS256', field('private_key'));
  } catch (err) {
    throw new Error(`private_key: ${(err as Error).message}`);
  }
  const kid = o.private_key_id;
  return { projectId, clientEmail, tokenUri, privateKeyId: typeof kid === 'string' && kid !== '' ? kid : null, privateKey };
}

export function readServiceAccount(path: string): ServiceAccount {
  return parseServiceAccount(readFileSync(path, 'utf8'));
}

/** The token endpoint refused the service account: retrying cannot help. */
class AuthError extends Error {}
/** The token endpoint is overloaded or failing: worth another try later. */
class TokenUnavailable extends Error {}

interface FcmErrorBody {
  status?: string;
  message?: string;
  errorCode?: string;
}

function fcmError(body: Buffer): FcmErrorBody {
  try {
    const e = (JSON.parse(body.toString('utf8')) as { error?: Record<string, unknown> }).error;
    if (!e || typeof e !== 'object') return {};
    const details = Array.isArray(e.details) ? (e.details as Array<Record<string, unknown>>) : [];
    const fcm = details.find((d) => typeof d.errorCode === 'string');
    const violations = details.flatMap((d) => (Array.isArray(d.fieldViolations) ? (d.fieldViolations as Array<Record<string, unknown>>) : []));
    const tokenField = violations.some((v) => v.field === 'message.token');
    return {
      status: typeof e.status === 'string' ? e.status : undefined,
      message: `${typeof e.message === 'string' ? e.message : ''}${tokenField ? ' [message.token]' : ''}`,
      errorCode: typeof fcm?.errorCode === 'string' ? fcm.errorCode : undefined,
    };
  } catch {
    return {};
  }
}

export interface FcmOptions {
  account: ServiceAccount;
  /** Base URL of the send API; default https://fcm.googleapis.com. */
  endpoint?: string;
  pool: Http2Pool;
  http1: Http1Client;
  clock: Clock;
}

export class FcmClient implements ProviderClient {
  readonly name = 'fcm' as const;
  /** Access-token requests made (tests and logs). */
  tokenRequests = 0;
  private token: { value: string; renewAt: number } | null = null;
  private pending: Promise<string> | null = null;
  private readonly sendUrl: URL;

  constructor(private readonly o: FcmOptions) {
    const base = (o.endpoint ?? FCM_ENDPOINT).replace(/\/+$/, '');
    this.sendUrl = new URL(`${base}/v1/projects/${encodeURIComponent(o.account.projectId)}/messages:send`);
  }

  /** A cached access token, or a fresh one; concurrent callers share one token request. */
  accessToken(): Promise<string> {
    if (this.token !== null && this.o.clock.now() < this.token.renewAt) return Promise.resolve(this.token.value);
    this.pending ??= this.fetchToken().finally(() => (this.pending = null));
    return this.pending;
  }

  private async fetchToken(): Promise<string> {
    const { account, clock } = this.o;
    const iat = Math.floor(clock.now() / 1000);
    const assertion = signJwt(
      'RS256',
      account.privateKey,
      { iss: account.clientEmail, scope: FCM_SCOPE, aud: account.tokenUri, iat, exp: iat + 3600 },
      account.privateKeyId === null ? {} : { kid: account.privateKeyId },
    );
    this.tokenRequests++;
    const res = await this.o.http1.request(new URL(account.tokenUri), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({ grant_type: JWT_BEARER_GRANT, assertion }).toString(),
    });
    const text = res.body.toString('utf8');
    if (res.status === 429 || res.status >= 500) throw new TokenUnavailable(`token endpoint answered ${res.status}`);
    if (res.status !== 200) throw new AuthError(`token endpoint answered ${res.status}: ${text.slice(0, 200)}`);
    let json: { access_token?: unknown; expires_in?: unknown };
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      throw new AuthError('token endpoint answered something that is not JSON');
    }
    if (typeof json.access_token !== 'string' || json.access_token === '') throw new AuthError('token endpoint gave no access_token');
    const lifetime = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 3600;
    // Renewed five minutes before expiry (as Flexisip), or at half-life for short-lived tokens.
    const margin = Math.min(300, lifetime / 2);
    this.token = { value: json.access_token, renewAt: clock.now() + (lifetime - margin) * 1000 };
    return json.access_token;
  }

  /** The JSON body of one push. */
  message(d: Delivery): Record<string, unknown> {
    const req = d.req;
    const from = req.fromName !== '' ? req.fromName : req.fromUri;
    const data: Record<string, string> = {
      type: req.kind,
      'call-id': req.callId,
      uuid: bareInstance(req.instance),
      'from-uri': req.fromUri,
      'display-name': req.fromName,
      'to-uri': req.toUri,
      'sip-from': from,
      'loc-key': locKey(req),
      'loc-args': from,
      'send-time': sendTime(this.o.clock.now()),
    };
    if (req.kind === 'call-end' && req.endReason) data['end-reason'] = req.endReason;
    // Data messages only, high priority: a notification message would be shown by
    // Android itself instead of waking the app, and normal priority waits for Doze.
    return {
      message: {
        token: d.token,
        data,
        android: { priority: 'high', ttl: `${Math.min(Math.max(0, Math.round(d.ttl)), FCM_MAX_TTL)}s` },
      },
    };
  }

  async send(d: Delivery): Promise<Attempt> {
    const body = JSON.stringify(this.message(d));
    // A 401 means the cached token went bad early: one fresh token, one more try.
    for (let round = 0; round < 2; round++) {
      let bearer: string;
      try {
        bearer = await this.accessToken();
      } catch (err) {
        if (err instanceof AuthError) return { kind: 'failed', reason: 'auth', detail: err.message };
        if (err instanceof TokenUnavailable) return { kind: 'retry', reason: 'server-error', detail: err.message };
        throw err;
      }
      const res = await this.o.pool.request(this.sendUrl.origin, {
        method: 'POST',
        path: this.sendUrl.pathname + this.sendUrl.search,
        headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json; charset=UTF-8' },
        body,
      });
      if (res.status === 200) return { kind: 'sent', status: 200 };
      const e = fcmError(res.body);
      const detail = [e.status, e.errorCode, e.message].filter(Boolean).join(' ');
      if (res.status === 401) {
        this.token = null;
        if (round === 0) continue;
        return { kind: 'failed', reason: 'auth', status: 401, detail };
      }
      if (res.status === 404 || e.errorCode === 'UNREGISTERED') return { kind: 'unregistered', reason: 'UNREGISTERED', status: res.status, detail };
      if (res.status === 400 && (e.status === 'INVALID_ARGUMENT' || e.errorCode === 'INVALID_ARGUMENT') && /token/i.test(e.message ?? '')) {
        return { kind: 'unregistered', reason: 'INVALID_ARGUMENT', status: 400, detail };
      }
      const retry = retryOf(res.status, res.headers, this.o.clock.now(), detail);
      if (retry !== null) return retry;
      // 403 PERMISSION_DENIED: the service account may not send for this project; SENDER_ID_MISMATCH: another project's token.
      return { kind: 'failed', reason: res.status === 403 && e.errorCode !== 'SENDER_ID_MISMATCH' ? 'auth' : 'rejected', status: res.status, detail };
    }
    return { kind: 'failed', reason: 'auth' };
  }

  close(): void {
    // Sessions belong to the shared pool.
  }
}

