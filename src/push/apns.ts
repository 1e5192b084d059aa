// Apple Push Notification service, HTTP/2 provider API: POST /3/device/TOKEN
// with a provider token (ES256 JWT: kid = key id, iss = team id) or over a
// TLS session authenticated by the provider's client certificate.

import { createHash, randomUUID, type KeyObject } from 'node:crypto';
import { signJwt } from './jwt.js';
import type { Http2Pool } from './http2-pool.js';
import type { PushTarget } from './params.js';
import { bareInstance, locKey, retryOf, sendTime, type Attempt, type Clock, type Delivery, type ProviderClient } from './types.js';

export const APNS_PRODUCTION = 'https://api.push.apple.com';
export const APNS_SANDBOX = 'https://api.sandbox.push.apple.com';

/** Apple refuses a provider token older than an hour and renewals closer than 20 minutes: 40 minutes sits between. */
export const PROVIDER_TOKEN_LIFETIME_MS = 40 * 60 * 1000;
const MIN_RENEWAL_MS = 20 * 60 * 1000;

export type ApnsAuth = { kind: 'token'; key: KeyObject; keyId: string; teamId: string } | { kind: 'certificate' };

export interface ApnsOptions {
  auth: ApnsAuth;
  /** false: every push goes to the sandbox (development builds). */
  production: boolean;
  /** Overrides both Apple origins (tests, a private relay). */
  endpoint: string | null;
  pool: Http2Pool;
  clock: Clock;
}

/** Where a push for this target goes: apns.dev targets and production: false use the sandbox. */
export function apnsOrigin(target: PushTarget, production: boolean, endpoint: string | null): string {
  if (endpoint !== null) return endpoint.replace(/\/+$/, '');
  return target.sandbox || !production ? APNS_SANDBOX : APNS_PRODUCTION;
}

/** apns-collapse-id is at most 64 bytes: a longer Call-ID is replaced by its SHA-256 in hex (64 characters). */
function collapseId(callId: string): string {
  return Buffer.byteLength(callId) <= 64 ? callId : createHash('sha256').update(callId).digest('hex');
}

function reasonOf(body: Buffer): string {
  try {
    const r = (JSON.parse(body.toString('utf8')) as { reason?: unknown }).reason;
    return typeof r === 'string' ? r : '';
  } catch {
    return '';
  }
}

const UNREGISTERED_400 = new Set(['BadDeviceToken', 'DeviceTokenNotForTopic']);

export class ApnsClient implements ProviderClient {
  readonly name = 'apns' as const;
  private providerToken: { jwt: string; issuedAt: number } | null = null;

  constructor(private readonly o: ApnsOptions) {}

  /** The current provider token, signed again once it is 40 minutes old. */
  bearer(forceRenew = false): string | null {
    const auth = this.o.auth;
    if (auth.kind !== 'token') return null;
    const now = this.o.clock.now();
    const t = this.providerToken;
    if (t !== null && !forceRenew && now - t.issuedAt < PROVIDER_TOKEN_LIFETIME_MS) return t.jwt;
    const jwt = signJwt('ES256', auth.key, { iss: auth.teamId, iat: Math.floor(now / 1000) }, { kid: auth.keyId });
    this.providerToken = { jwt, issuedAt: now };
    return jwt;
  }

  /** The JSON payload of one push. */
  payload(d: Delivery): Record<string, unknown> {
    const { req } = d;
    const t = req.target;
    const from = req.fromName !== '' ? req.fromName : req.fromUri;
    const fields: Record<string, unknown> = {
      'call-id': req.callId,
      uuid: bareInstance(req.instance),
      'from-uri': req.fromUri,
      'display-name': req.fromName,
      'send-time': sendTime(this.o.clock.now()),
      pn_ttl: d.ttl,
      type: req.kind,
    };
    if (req.kind === 'call-end' && req.endReason) fields['end-reason'] = req.endReason;
    switch (d.apnsType) {
      case 'voip':
        // liblinphone's PushKit handler reads the call fields inside aps (where Flexisip puts them); others read them at the top.
        return { aps: { 'loc-key': locKey(req), 'loc-args': [from], 'call-id': req.callId, uuid: fields.uuid, 'send-time': fields['send-time'] }, ...fields };
      case 'background':
        return { aps: { 'content-available': 1 }, ...fields };
      default: {
        const sound = req.kind === 'call' ? t.callSound : req.kind === 'message' ? t.msgSound : null;
        // mutable-content lets Linhome's notification service extension rewrite the alert; it needs call-id to do so.
        return { aps: { alert: { 'loc-key': locKey(req), 'loc-args': [from] }, sound: sound ?? 'default', 'mutable-content': 1 }, ...fields };
      }
    }
  }

  headers(d: Delivery, bearer: string | null): Record<string, string> {
    const type = d.apnsType ?? 'alert';
    const h: Record<string, string> = {
      'apns-push-type': type,
      'apns-topic': type === 'voip' ? `${d.req.target.appId}.voip` : d.req.target.appId,
      // Apple's rule: background pushes at priority 5, or they are refused.
      'apns-priority': type === 'background' ? '5' : '10',
      // 0 asks for one delivery attempt only; otherwise Apple stores the push until then.
      'apns-expiration': d.ttl > 0 ? String(Math.floor(this.o.clock.now() / 1000) + Math.round(d.ttl)) : '0',
      'apns-id': randomUUID(),
      'content-type': 'application/json',
    };
    // Repeated call alerts and the final one replace each other on the lock screen (as Flexisip does).
    if (type === 'alert' && (d.req.kind === 'call' || d.req.kind === 'call-end')) h['apns-collapse-id'] = collapseId(d.req.callId);
    if (bearer !== null) h.authorization = `bearer ${bearer}`;
    return h;
  }

  async send(d: Delivery): Promise<Attempt> {
    const origin = apnsOrigin(d.req.target, this.o.production, this.o.endpoint);
    const body = JSON.stringify(this.payload(d));
    for (let round = 0; round < 2; round++) {
      const res = await this.o.pool.request(origin, {
        method: 'POST',
        path: `/3/device/${encodeURIComponent(d.token)}`,
        headers: this.headers(d, this.bearer()),
        body,
      });
      if (res.status === 200) return { kind: 'sent', status: 200 };
      const reason = reasonOf(res.body);
      if (res.status === 410) return { kind: 'unregistered', reason: reason || 'Unregistered', status: 410, detail: reason };
      if (res.status === 400 && UNREGISTERED_400.has(reason)) return { kind: 'unregistered', reason, status: 400, detail: reason };
      if (res.status === 403 && reason === 'ExpiredProviderToken' && round === 0) {
        // Renewing sooner than 20 minutes would get TooManyProviderTokenUpdates.
        const t = this.providerToken;
        if (t !== null && this.o.clock.now() - t.issuedAt >= MIN_RENEWAL_MS) {
          this.bearer(true);
          continue;
        }
      }
      if (res.status === 403) return { kind: 'failed', reason: 'auth', status: 403, detail: reason };
      const retry = retryOf(res.status, res.headers, this.o.clock.now(), reason);
      if (retry !== null) return retry;
      return { kind: 'failed', reason: 'rejected', status: res.status, detail: reason };
    }
    return { kind: 'failed', reason: 'auth', status: 403, detail: 'ExpiredProviderToken' };
  }

  close(): void {}
}
