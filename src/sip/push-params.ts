// RFC 8599 push parameters (pn-provider, pn-prid, pn-param and the other
// pn-* keys Linphone adds, plus its legacy app-id) are for the proxy that
// registered them: never sent on to the device nor to the other party (a
// push token is a device's address for waking it). One rule, here, for the
// proxy that strips them and for src/push that reads them.

import type { SipMessage } from './message.js';
import { parseUri } from './uri.js';

/** RFC 8599 parameters (pn-*, and Linphone's app-id) are for the proxy: never sent to the device or the other party. */
export function isPushParam(name: string): boolean {
  name = name.toLowerCase();
  return name.startsWith('pn-') || name === 'app-id';
}

/** The URI without its push parameters. */
export function withoutPushParams(uri: string): string {
  const u = parseUri(uri);
  if (u === null || !u.isSip) return uri;
  let params = '';
  let dropped = false;
  for (const [name, value] of u.params) {
    if (isPushParam(name)) dropped = true;
    else params += ';' + name + (value === null ? '' : '=' + value);
  }
  if (!dropped) return uri;
  const userinfo = u.user === null ? '' : u.user + (u.password === null ? '' : ':' + u.password) + '@';
  return u.scheme + ':' + userinfo + (u.port === null ? u.host : u.host + ':' + u.port) + params + (u.headers === null ? '' : '?' + u.headers);
}

/** A Contact carrying push parameters (a Linphone app calling or answering) loses them: a push token is not the other side's business. */
export function scrubContactPush(msg: SipMessage): void {
  // Every forwarded message passes here: look before building anything.
  let dirty = false;
  for (const f of msg.headerFields()) {
    if (f.key !== 'contact') continue;
    const v = f.value;
    if (v.includes('pn-') || v.includes('app-id')) dirty = true;
  }
  if (!dirty) return;
  const values = msg.getAll('contact');
  // Every Contact line (a 3xx has several), inside <> or, written bare, as the header's own parameters.
  const clean = values.map((v) => v.replace(/<([^>]*)>/g, (_all, uri: string) => '<' + withoutPushParams(uri) + '>').replace(PUSH_PARAM_TEXT, ''));
  msg.setHeader('contact', clean.join(', '));
}

/** `;pn-...=...` or `;app-id=...` left outside angle brackets. */
const PUSH_PARAM_TEXT = /;\s*(?:pn-[A-Za-z0-9-]+|app-id)(?:=(?:"[^"]*"|[^;,>\s]*))?/gi;
