// Contact header field values of a REGISTER read into what the registrar
// needs to bind them (RFC 3261 §10.3 steps 6-7, RFC 5626, RFC 8599), and the
// Contact values of the 200 OK written back.

import { MAX_UINT32, parseDigits } from '../sip/chars.js';
import { quote, unquote, type NameAddr, type Uri } from '../sip/index.js';
import { contactKey, instanceKey } from './aor.js';
import type { Binding } from './location-store.js';
import { NO_PARAMS, setParam } from './plan.js';

/** One Contact of a REGISTER, checked and read. */
const OWN_FIELDS = new Set(['q', 'expires', '+sip.instance', 'reg-id']);

export interface ContactIntent {
  /** The binding key (see Binding.key). */
  readonly key: string;
  /** contactKey of the URI, whatever the binding key. */
  readonly uriKey: string;
  /** The URI text as written. */
  readonly contact: string;
  readonly uri: Uri;
  readonly params: Readonly<Record<string, string | null>>;
  /** Seconds asked for: the expires parameter, else the Expires header, else the default. 0 asks for removal. */
  readonly requested: number;
  readonly q: number;
  readonly instance: string | null;
  readonly regId: number | null;
  readonly pushParams: Readonly<Record<string, string>>;
}

/** Why a Contact cannot be bound: the request gets a 400 with this text in a Warning. */
export interface ContactProblem {
  readonly problem: string;
}

// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )  (RFC 3261 §25.1)
const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

/** A q parameter's value as a number; null when it is not a qvalue. */
export function parseQ(v: string): number | null {
  return QVALUE.test(v) ? Number(v) : null;
}

/** q as written in a Contact: up to three decimals, no trailing zeros. */
export function formatQ(q: number): string {
  return String(Math.round(q * 1000) / 1000);
}

/** RFC 5626 grammar: reg-id = 1*DIGIT, 1 to 2^31-1. */
function parseRegId(v: string): number | null {
  const n = parseDigits(v, 0, v.length, 0x7fffffff);
  return n < 1 ? null : n;
}

/**
 * RFC 8599 parameters (pn-provider, pn-prid, pn-param) and any other
 * pn-* on the Contact URI, as Linphone adds its own (pn-silent, pn-timeout,
 * pn-msg-str, pn-call-str, pn-groupchat-str; older versions pn-type and
 * pn-tok), plus Linphone's app-id. Kept as written: what each value means is
 * up to the push gateway that will use it.
 */
export function pushParamsOf(uri: Uri): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of uri.params) {
    if (name.startsWith('pn-') || name === 'app-id') out[name] = value ?? '';
  }
  return out;
}

/** pushParamsOf, or the shared empty record when the URI has no parameters (the usual Contact). */
function pushParamsIn(uri: Uri): Readonly<Record<string, string>> {
  return uri.params.size === 0 ? NO_PARAMS : pushParamsOf(uri);
}

/** Reads one Contact of a REGISTER. `headerExpires` is the Expires header (null when absent). */
export function readContact(c: NameAddr, headerExpires: number | null, defaultExpires: number): ContactIntent | ContactProblem {
  if (!c.uriIsValid) return { problem: 'malformed Contact URI' };
  const uri = c.uri;
  // A registrar binds SIP and SIPS contacts only: the proxy can reach nothing else.
  if (!uri.isSip) return { problem: 'Contact URI scheme must be sip or sips' };

  let requested: number;
  const ex = c.params.get('expires');
  if (ex !== undefined) {
    // RFC 3261 §20.19 would have a malformed value read as 3600; a 400 tells
    // the UA instead of binding it for an hour it did not ask for.
    requested = ex === null ? -1 : parseDigits(ex, 0, ex.length, MAX_UINT32);
    if (requested < 0) return { problem: 'malformed expires parameter' };
  } else if (headerExpires !== null) {
    if (headerExpires < 0) return { problem: 'malformed Expires header' };
    requested = headerExpires;
  } else requested = defaultExpires;

  let q = 1;
  const qv = c.params.get('q');
  if (qv !== undefined) {
    const parsed = qv === null ? null : parseQ(qv);
    if (parsed === null) return { problem: 'q must be a qvalue between 0 and 1' };
    q = parsed;
  }

  let instance: string | null = null;
  const iv = c.params.get('+sip.instance');
  if (iv !== undefined) {
    instance = iv === null ? '' : unquote(iv);
    if (instance === '' || instanceKey(instance) === '') return { problem: 'malformed +sip.instance' };
  }

  let regId: number | null = null;
  const rv = c.params.get('reg-id');
  if (rv !== undefined) {
    regId = rv === null ? null : parseRegId(rv);
    if (regId === null) return { problem: 'malformed reg-id' };
    // RFC 5626 ties a reg-id to an instance-id: without one it names no
    // flow, and the Contact is bound as any other.
    if (instance === null) regId = null;
  }

  const uriKey = contactKey(uri);
  // q, expires, +sip.instance and reg-id have fields of their own: a Contact with no others shares one empty record.
  const ownFields = (ex !== undefined ? 1 : 0) + (qv !== undefined ? 1 : 0) + (iv !== undefined ? 1 : 0) + (rv !== undefined ? 1 : 0);
  let params: Readonly<Record<string, string | null>> = NO_PARAMS;
  if (c.params.size > ownFields) {
    const out: Record<string, string | null> = {};
    for (const [k, v] of c.params) if (!OWN_FIELDS.has(k)) setParam(out, k, v);
    params = out;
  }
  return {
    key: instance === null ? 'u:' + uriKey : 'i:' + instanceKey(instance) + '|' + (regId ?? ''),
    uriKey,
    contact: c.uriText,
    uri,
    params,
    requested,
    q,
    instance,
    regId,
    pushParams: pushParamsIn(uri),
  };
}

/** GRUUs to list with a binding in a 200 (full URIs). */
export interface ContactGruus {
  pub: string;
  temp: string | null;
}

/**
 * One Contact value of the 200 OK (RFC 3261 §10.3 step 8): the URI as
 * registered, the seconds left (rounded up: a live binding never shows 0,
 * which would read as removed), q when not the default, the instance and
 * reg-id that identify it, and its GRUUs when the UA supports them.
 */
export function formatContact(b: Binding, now: number, gruus: ContactGruus | null): string {
  let v = '<' + b.contact + '>;expires=' + Math.max(1, Math.ceil((b.expiresAt - now) / 1000));
  if (b.q !== 1) v += ';q=' + formatQ(b.q);
  if (b.instance !== null) v += ';+sip.instance=' + quote(b.instance);
  if (b.regId !== null) v += ';reg-id=' + b.regId;
  if (gruus !== null) {
    v += ';pub-gruu=' + quote(gruus.pub);
    if (gruus.temp !== null) v += ';temp-gruu=' + quote(gruus.temp);
  }
  return v;
}
