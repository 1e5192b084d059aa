// Types shared by the push provider clients and the service that drives them.

import type { PushTarget } from './params.js';

export type PushKind = 'call' | 'message' | 'wakeup' | 'call-end';

/** Why a call's pushes end; chooses the text of the last alert. */
export type CallEndReason = 'answered-elsewhere' | 'declined-elsewhere' | 'cancelled' | 'missed';

export interface PushRequest {
  target: PushTarget;
  kind: PushKind;
  /** Call-ID of the INVITE or MESSAGE (for wakeup: anything that identifies the push, e.g. the REGISTER's). */
  callId: string;
  fromUri: string;
  /** Display name of the caller; '' when none. */
  fromName: string;
  toUri: string;
  /** +sip.instance of the binding (`<urn:uuid:...>` or bare); sent as `uuid` without brackets or quotes. */
  instance: string;
  /** For kind 'call-end'. */
  endReason?: CallEndReason;
  /** Seconds the provider may keep the push for a device that is offline; default push.call-timeout. */
  ttl?: number;
  /** Handed back in the `onUnregistered` event so the registrar knows which binding to clear. */
  binding?: { aor: string; key: string };
}

export type PushResult = 'sent' | 'unregistered' | 'failed';

export interface PushOutcome {
  result: PushResult;
  /**
   * A short fixed code for metrics labels: for failed, one of not-configured,
   * queue-full, no-token, invalid-target, unreachable, tls, timeout, auth,
   * rejected, throttled, server-error, closed; for unregistered, the
   * provider's word (UNREGISTERED, INVALID_ARGUMENT, BadDeviceToken,
   * DeviceTokenNotForTopic, Unregistered, gone). Absent when sent.
   */
  reason?: string;
  /** Last HTTP status from the provider, when there was one. */
  status?: number;
  /** Which client carried (or would have carried) the push. */
  provider?: ProviderName;
  /** Human-readable detail for logs (the provider's error text); never a token. */
  detail?: string;
}

export type ProviderName = 'fcm' | 'apns' | 'generic';

/** One try at a provider, before the service's retry policy. */
export type Attempt =
  | { kind: 'sent'; status: number }
  | { kind: 'unregistered'; reason: string; status: number; detail?: string }
  | { kind: 'retry'; reason: string; status?: number; retryAfterMs?: number; detail?: string }
  | { kind: 'failed'; reason: string; status?: number; detail?: string };

/** How the service asked a client to deliver one push. */
export interface Delivery {
  req: PushRequest;
  /** The token this push goes to (the VoIP one for an APNs VoIP push). */
  token: string;
  /** APNs only: which kind of notification. */
  apnsType?: 'voip' | 'alert' | 'background';
  /** Seconds the provider may hold it. */
  ttl: number;
}

export interface ProviderClient {
  readonly name: ProviderName;
  send(d: Delivery): Promise<Attempt>;
  close(): void;
}

/** Time, injectable so that tests move it by hand. setTimeout returns a cancel function. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): () => void;
}

/** Real time; timers unref()ed so a pending retry or repeat never holds the process open. */
export const SYSTEM_CLOCK: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};

/** Logging, pino-shaped; optional. */
export interface PushLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export const SILENT_LOG: PushLog = { info() {}, warn() {}, debug() {} };

/** The +sip.instance without <> or quotes: `urn:uuid:...`. */
export function bareInstance(instance: string): string {
  return instance.replace(/^"|"$/g, '').replace(/^<|>$/g, '');
}

/** ISO time without milliseconds, as Flexisip's send-time. */
export function sendTime(now: number): string {
  return new Date(now).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Retry-After (RFC 9110 §10.2.3): seconds or an HTTP date; null when absent or unreadable. */
export function retryAfterMs(value: string | string[] | undefined, now: number): number | null {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v === '') return null;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** 429 and 5xx are worth another try (after Retry-After when the provider gave one); null for any other status. */
export function retryOf(status: number, headers: { 'retry-after'?: string | string[] }, now: number, detail?: string): Attempt | null {
  if (status !== 429 && status < 500) return null;
  return { kind: 'retry', reason: status === 429 ? 'throttled' : 'server-error', status, retryAfterMs: retryAfterMs(headers['retry-after'], now) ?? undefined, detail };
}

/** The localisation key an app shows for this push (Linphone's pn-*-str, Flexisip's defaults). */
export function locKey(req: PushRequest): string {
  const t = req.target;
  switch (req.kind) {
    case 'call':
      return t.callStr;
    case 'message':
      return t.msgStr;
    case 'wakeup':
      return '';
    case 'call-end':
      return req.endReason === 'answered-elsewhere' ? t.acceptedElsewhereStr : req.endReason === 'declined-elsewhere' ? t.declinedElsewhereStr : t.missedCallStr;
  }
}
