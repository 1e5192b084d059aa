// GRUUs (RFC 5627): the URIs the registrar hands out in the 200 to a
// REGISTER, and reading them back from a Request-URI.
//
// pub-gruu:  sip:alice@intercom.test;gr=urn:uuid:f81d4fae-...   (§3.1)
//            The AOR plus the instance-id: stable, so a phone may keep it.
// temp-gruu: sip:tgruu.<token>@intercom.test;gr                   (§3.1)
//            A random token that says nothing about the AOR. The store maps
//            it to its binding; nothing can be derived from it.

import { randomBytes } from 'node:crypto';
import { URI_PARAM } from '../sip/chars.js';
import { hostForUri, type Uri } from '../sip/index.js';
import { aorOf, unescapeUri } from './aor.js';
import type { GruuRef } from './location-store.js';

/** User-part prefix of every temp-gruu Portier issues. */
export const TEMP_GRUU_PREFIX = 'tgruu.';

/** A new temp-gruu token: 128 random bits in hex (user-part safe, and unguessable as a temp-gruu must be). */
export function mintTempGruuToken(): string {
  return randomBytes(16).toString('hex');
}

/** Escapes what may not stand in a URI parameter value (paramchar, RFC 3261 §25.1). */
function escapeParam(v: string): string {
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    out += c < 256 && URI_PARAM[c] === 1 ? v[i] : '%' + (c & 0xff).toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/**
 * The pub-gruu of an AOR's instance. `scheme` is that of the REGISTER's To
 * URI: a GRUU obtained with a SIPS AOR is a SIPS URI (RFC 5627). `domain` as in
 * a URI (IPv6 in brackets).
 */
export function pubGruuUri(scheme: 'sip' | 'sips', aor: string, pub: string): string {
  // A canonical AOR is `sip:` + [user@] + host: swap the scheme, add gr.
  return scheme + aor.slice(aor.indexOf(':')) + ';gr=' + escapeParam(pub);
}

/** The temp-gruu of a token in a domain (canonical, IPv6 without brackets). */
export function tempGruuUri(scheme: 'sip' | 'sips', domain: string, token: string): string {
  return scheme + ':' + TEMP_GRUU_PREFIX + token + '@' + hostForUri(domain) + ';gr';
}

/**
 * What a Request-URI with a `gr` parameter names, or null when it is no
 * GRUU of Portier's form (no `gr`, a valueless `gr` on a user part that is
 * not a temp-gruu). The domain is not checked here.
 */
export function gruuRefOf(uri: Uri): GruuRef | null {
  if (!uri.isSip) return null;
  const gr = uri.params.get('gr');
  if (gr === undefined) return null;
  if (gr === null || gr === '') {
    const user = uri.user === null ? '' : unescapeUri(uri.user);
    if (!user.startsWith(TEMP_GRUU_PREFIX) || user.length === TEMP_GRUU_PREFIX.length) return null;
    return { kind: 'temp', token: user.slice(TEMP_GRUU_PREFIX.length) };
  }
  return { kind: 'pub', aor: aorOf(uri), instance: unescapeUri(gr) };
}
