// A generic HTTP push gateway (ntfy, a UnifiedPush server, a city's own
// relay), as Flexisip's external-push-uri: one request per push, to a URL
// template with $placeholders filled in.
//
// Substitution: in the URL every value is percent-encoded (encodeURIComponent);
// in the body a value is JSON-string-escaped (no quotes added: write "$call-id")
// when the body template is JSON (starts with { or [ after blanks, sent as
// application/json), and inserted raw otherwise (sent as text/plain).

import type { Http1Client } from './http1.js';
import { bareInstance, locKey, retryOf, type Attempt, type Clock, type Delivery, type ProviderClient } from './types.js';

export type GenericMethod = 'GET' | 'POST' | 'PUT';

export const GENERIC_PLACEHOLDERS: readonly string[] = [
  'token',
  'app-id',
  'from-uri',
  'from-name',
  'to-uri',
  'call-id',
  'event',
  'uid',
  'type',
  'sound',
  'msgid',
];

// No name is a prefix of another, so the alternation's order does not matter.
const PLACEHOLDER = new RegExp(`\\$(${GENERIC_PLACEHOLDERS.join('|')})`, 'g');

/** Replaces each $name of `template` by `encode(values[name])`; unknown $words stay as written. */
export function substitute(template: string, values: Readonly<Record<string, string>>, encode: (v: string) => string): string {
  return template.replace(PLACEHOLDER, (_, name: string) => encode(values[name] ?? ''));
}

export function isJsonTemplate(body: string): boolean {
  return /^\s*[[{]/.test(body);
}

const jsonEscape = (v: string) => JSON.stringify(v).slice(1, -1);

/** The placeholder values for one push. */
export function placeholderValues(d: Delivery): Record<string, string> {
  const { req } = d;
  const t = req.target;
  return {
    token: d.token,
    'app-id': t.appId,
    'from-uri': req.fromUri,
    'from-name': req.fromName,
    'to-uri': req.toUri,
    'call-id': req.callId,
    event: req.kind,
    uid: bareInstance(req.instance),
    // Flexisip's names for the two native families.
    type: t.provider === 'apns' ? 'apple' : t.provider === 'fcm' ? 'firebase' : t.provider,
    sound: (req.kind === 'message' ? t.msgSound : req.kind === 'call' ? t.callSound : null) ?? '',
    msgid: locKey(req),
  };
}

export interface GenericOptions {
  url: string;
  method: GenericMethod;
  body: string | null;
  http1: Http1Client;
  clock: Clock;
}

export class GenericClient implements ProviderClient {
  readonly name = 'generic' as const;

  constructor(private readonly o: GenericOptions) {}

  /** The URL, headers and body one push is sent with. */
  build(d: Delivery): { url: URL; headers: Record<string, string>; body: string | undefined } {
    const values = placeholderValues(d);
    const url = new URL(substitute(this.o.url, values, encodeURIComponent));
    const template = this.o.method === 'GET' ? null : this.o.body;
    if (template === null) return { url, headers: {}, body: this.o.method === 'GET' ? undefined : '' };
    const json = isJsonTemplate(template);
    return {
      url,
      headers: { 'content-type': json ? 'application/json' : 'text/plain; charset=utf-8' },
      body: substitute(template, values, json ? jsonEscape : (v) => v),
    };
  }

  async send(d: Delivery): Promise<Attempt> {
    const { url, headers, body } = this.build(d);
    const res = await this.o.http1.request(url, { method: this.o.method, headers, body });
    if (res.status >= 200 && res.status < 300) return { kind: 'sent', status: res.status };
    const detail = res.body.toString('utf8').slice(0, 200);
    // UnifiedPush and ntfy answer 404/410 for an endpoint that no longer exists.
    if (res.status === 404 || res.status === 410) return { kind: 'unregistered', reason: 'gone', status: res.status, detail };
    const retry = retryOf(res.status, res.headers, this.o.clock.now(), detail);
    if (retry !== null) return retry;
    return { kind: 'failed', reason: res.status === 401 || res.status === 403 ? 'auth' : 'rejected', status: res.status, detail };
  }

  close(): void {}
}
