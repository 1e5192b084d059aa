// Canonical forms the registrar indexes by: the address-of-record of a To
// URI (RFC 3261 §10.3 step 5), the comparison key of a Contact URI (§19.1.4,
// simplified) and the key of a +sip.instance value (RFC 5626 §4.1).

import { canonicalIPv6 } from '../config/hosts.js';
import { HEX, URI_USER } from '../sip/chars.js';
import { hostForUri, type Uri } from '../sip/index.js';

/** A host as the registrar compares it: lower-case, IPv6 without brackets and in canonical text. */
export function canonicalDomain(host: string): string {
  let h = host.toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  return h.includes(':') ? canonicalIPv6(h) : h;
}

/** The canonical host of a SIP URI (see canonicalDomain). */
export function canonicalHost(uri: Uri): string {
  return canonicalDomain(uri.hostname);
}

function hexValue(c: number): number {
  return c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57;
}

/**
 * One spelling per character: a %HH escape of a character that may stand
 * unescaped in `allowed` is decoded, every other escape keeps its '%' with
 * upper-case hex. `%61lice` and `alice` give the same text, and the result is
 * still valid URI syntax (an escaped '@' stays escaped).
 */
export function normaliseEscapes(s: string, allowed: Uint8Array): string {
  if (s.indexOf('%') === -1) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && i + 2 < s.length && isHex(s.charCodeAt(i + 1)) && isHex(s.charCodeAt(i + 2))) {
      const d = hexValue(s.charCodeAt(i + 1)) * 16 + hexValue(s.charCodeAt(i + 2));
      out += allowed[d] === 1 && d !== 0x25 ? String.fromCharCode(d) : '%' + s.slice(i + 1, i + 3).toUpperCase();
      i += 2;
    } else out += s[i];
  }
  return out;
}

function isHex(c: number): boolean {
  return c < 256 && HEX[c] === 1;
}

/** Decodes every %HH escape (one char per octet, as everywhere in src/sip). */
export function unescapeUri(s: string): string {
  if (s.indexOf('%') === -1) return s;
  return normaliseEscapes(s, ALL_OCTETS);
}

const ALL_OCTETS = new Uint8Array(256).fill(1);

/**
 * The address-of-record a SIP or SIPS URI names: `sip:user@host`.
 *
 * RFC 3261 §10.3 step 5 asks for all URI parameters to be removed and
 * escapes to be decoded. Beyond that, for Portier:
 * - the host is lower-cased (and IPv6 put in canonical form): host names are
 *   case-insensitive (§19.1.4);
 * - the user part keeps its case: it is case-sensitive (§19.1.4);
 * - the port is dropped: an AOR names a user in a domain, and a phone set up
 *   with `intercom.test:5080` as its domain means the same account;
 * - sips maps to sip: the SIPS form asks for TLS hop by hop, it does not name
 *   another user (RFC 5630). Bindings registered either way are one set.
 * Other schemes (tel, opaque URIs) come back as their raw text and never
 * match a binding.
 */
export function aorOf(uri: Uri): string {
  if (!uri.isSip) return uri.raw;
  const host = hostForUri(canonicalHost(uri));
  const user = uri.user;
  return user === null || user === '' ? 'sip:' + host : 'sip:' + normaliseEscapes(user, URI_USER) + '@' + host;
}

/** The domain part of a canonical AOR. */
export function domainOfAor(aor: string): string {
  const at = aor.lastIndexOf('@');
  const host = at === -1 ? aor.slice(aor.indexOf(':') + 1) : aor.slice(at + 1);
  return canonicalDomain(host);
}

// The URI parameters that take part in comparison wherever they appear
// (RFC 3261 §19.1.4): present in one URI and not the other means different.
const COMPARED_PARAMS = ['transport', 'user', 'method', 'maddr', 'ttl'] as const;

/**
 * The key under which a Contact URI is bound when no +sip.instance says which
 * device it is. Two URIs with the same key are the same binding (RFC 3261
 * §10.3 step 7 compares with the §19.1.4 rules), simplified: scheme, user
 * (case-sensitive, escapes normalised), password, host (case-insensitive),
 * port (absent differs from an explicit 5060, as §19.1.4 says), and the
 * transport, user, method, maddr and ttl parameters (values case-insensitive
 * except method). Other parameters, pn-* push parameters among them, do not
 * count: a phone whose push token changed still refreshes the same binding.
 * URI headers are ignored.
 */
export function contactKey(uri: Uri): string {
  let k = uri.scheme + ':';
  if (uri.user !== null) {
    k += normaliseEscapes(uri.user, URI_USER);
    if (uri.password !== null) k += ':' + uri.password;
    k += '@';
  }
  k += hostForUri(canonicalHost(uri)) + ':' + (uri.port ?? '');
  if (uri.params.size === 0) return k;
  for (let i = 0; i < COMPARED_PARAMS.length; i++) {
    const name = COMPARED_PARAMS[i];
    const v = uri.params.get(name);
    if (v === undefined) continue;
    const value = v === null ? '' : unescapeUri(v);
    k += ';' + name + '=' + (name === 'method' ? value : value.toLowerCase());
  }
  return k;
}

/**
 * The instance-id of a +sip.instance value (`<urn:uuid:...>`, already
 * unquoted) without its angle brackets: the `gr` value of the pub-gruu
 * (RFC 5627).
 */
export function instanceId(instance: string): string {
  return instance.length >= 2 && instance.startsWith('<') && instance.endsWith('>') ? instance.slice(1, -1) : instance;
}

/**
 * The comparison form of an instance-id, with or without brackets. RFC 5626
 * §4.1 compares instance URNs by URN equivalence; for urn:uuid (all that
 * real UAs send) that is case-insensitive (RFC 4122 §3), so those are
 * lower-cased. Other URNs are compared as written.
 */
export function instanceKey(instance: string): string {
  const id = instanceId(instance);
  return /^urn:uuid:/i.test(id) ? id.toLowerCase() : id;
}
