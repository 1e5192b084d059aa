// Who a request comes from, decided once per out-of-dialog request: a
// trusted source, an account that proved its password, or nobody (a
// challenge or 403). The proxy asks; this module knows nothing of routing.
//
// Unknown users and wrong passwords get the same 403 with the same headers,
// and cost the same hashing: an attacker cannot tell which accounts exist.

import type { HeaderField, SipMessage, Uri } from '../sip/index.js';
import { parseCredentials } from '../sip/index.js';
import { parseDigestCredentials, type DigestCredentials } from '../sip/credentials.js';
import { canonicalHost, normaliseEscapes } from '../registrar/aor.js';
import { URI_USER } from '../sip/chars.js';
import type { Source } from '../transport/index.js';
import type { Account, Accounts } from './users.js';
import type { AddressSet } from './cidr.js';
import type { Ban, SourceGuard } from './guard.js';
import type { DigestAuthenticator } from './digest.js';

/** Why an authentication did not succeed, as counted in portier_auth_failures_total{reason}. */
export type AuthFailureReason =
  | 'wrong_password'
  | 'unknown_user'
  | 'identity_mismatch'
  | 'malformed'
  | 'bad_nonce'
  | 'replay'
  | 'stale'
  | 'banned';

/**
 * Reasons that spend the source's failure budget: answers to a nonce this
 * source was given (so the source is real, not a forged UDP address), that
 * are wrong. Broken or replayed credentials and old nonces cost nothing:
 * anyone could send them in somebody else's name.
 */
const BUDGET: ReadonlySet<AuthFailureReason> = new Set(['wrong_password', 'unknown_user', 'identity_mismatch']);

export interface Identity {
  aor: string;
  kind: Account['kind'];
}

export type Gate =
  | { pass: true; identity: Identity | null; how: 'digest' | 'trusted' }
  | { pass: false; code: number; headers?: Array<[string, string]> };

export type GateKind = 'register' | 'request';

export interface AuthenticatorOptions {
  digest: DigestAuthenticator;
  /** The accounts now (the users file is reloaded on SIGHUP). */
  accounts: () => Accounts;
  trusted: AddressSet;
  guard: SourceGuard | null;
  /** A failure budget ran out: log it (once per ban). */
  onBan?: (ban: Ban, lastUsername: string | null) => void;
}

export class Authenticator {
  readonly failures: Record<AuthFailureReason, number> = {
    wrong_password: 0,
    unknown_user: 0,
    identity_mismatch: 0,
    malformed: 0,
    bad_nonce: 0,
    replay: 0,
    stale: 0,
    banned: 0,
  };

  constructor(private readonly options: AuthenticatorOptions) {}

  /**
   * REGISTER ('register': 401, the To is the identity) or another request
   * that starts something ('request': 407, the From is the identity).
   * Consumed credentials are removed from the request, so they are never
   * forwarded to the callee (RFC 3261 §22.3).
   */
  check(req: SipMessage, source: Source, kind: GateKind): Gate {
    const identityUri = kind === 'register' ? req.to().uri : req.from().uri;
    // Trust by address is for devices and servers on a trusted LAN, never for
    // WebSocket: any web page a browser on that LAN opens could speak it.
    if (source.protocol !== 'ws' && source.protocol !== 'wss' && this.options.trusted.has(source.address)) {
      const account = accountFor(this.options.accounts(), identityUri);
      return { pass: true, identity: account === undefined ? null : { aor: account.aor, kind: account.kind }, how: 'trusted' };
    }
    const guard = this.options.guard;
    if (guard !== null && guard.isBanned(source.address)) return this.fail('banned', source, null);

    const code = kind === 'register' ? 401 : 407;
    const key = kind === 'register' ? 'authorization' : 'proxy-authorization';
    const digest = this.options.digest;
    let field: HeaderField | null = null;
    let creds: DigestCredentials | null = null;
    const fields = req.headerFields();
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i];
      if (f.key !== key) continue;
      // Read in place: no copy of the value.
      const c = parseDigestCredentials(f.text, f.start, f.end);
      if (c === null) return this.fail('malformed', source, null);
      if (c.realm !== digest.realm) continue; // someone else's (§22.3)
      field = f;
      creds = c;
      break;
    }
    if (creds === null || field === null) return this.challenge(code, false, source);

    const domain = identityUri.isSip ? canonicalHost(identityUri) : '';
    const username = creds.username;
    // One lookup, made whether the user exists or not (the digest costs the same either way).
    const found = domain === '' || username === undefined ? undefined : this.options.accounts().find(username, domain);
    const account = found !== undefined && found.realm === digest.realm ? found : null;
    const result = digest.check(req.method, creds, account === null ? null : account.ha1, source.address);
    switch (result.kind) {
      case 'ok': {
        // 'ok' needs an HA1 to check against: the account found above.
        const known = account as Account;
        // No registering or calling as somebody else (§22: the identity is the To of a REGISTER, the From otherwise).
        if (userOf(identityUri.user) !== known.user) return this.fail('identity_mismatch', source, result.username);
        req.removeField(field);
        return { pass: true, identity: { aor: known.aor, kind: known.kind }, how: 'digest' };
      }
      case 'wrong':
        return this.fail(result.unknownUser ? 'unknown_user' : 'wrong_password', source, result.username);
      case 'stale':
        this.failures.stale++;
        return this.challenge(code, true, source);
      case 'unverifiable':
        // stale=true: a client whose nonce predates a restart retries without asking its user.
        this.failures[result.why === 'replay' ? 'replay' : 'bad_nonce']++;
        return this.challenge(code, true, source);
      case 'other-realm':
        return this.challenge(code, false, source);
      case 'malformed':
        return this.fail('malformed', source, creds.username ?? null);
    }
  }

  /**
   * Removes every Authorization and Proxy-Authorization for this realm from
   * a request about to be forwarded: credentials meant for Portier never
   * reach the callee, who could otherwise replay them (RFC 3261 §22.3).
   * Credentials for other realms stay.
   */
  scrub(req: SipMessage): void {
    if (!req.has('proxy-authorization') && !req.has('authorization')) return;
    const realm = this.options.digest.realm;
    for (const f of [...req.headerFields()]) {
      if (f.key !== 'proxy-authorization' && f.key !== 'authorization') continue;
      const c = parseCredentials(f.value);
      if (c === null || c.params.get('realm') === realm) req.removeField(f);
    }
  }

  private challenge(code: number, stale: boolean, source: Source): Gate {
    const name = code === 401 ? 'WWW-Authenticate' : 'Proxy-Authenticate';
    return { pass: false, code, headers: this.options.digest.challengeHeaders(name, stale, source.address) };
  }

  private fail(reason: AuthFailureReason, source: Source, username: string | null): Gate {
    this.failures[reason]++;
    if (BUDGET.has(reason) && this.options.guard !== null) {
      const ban = this.options.guard.authFailed(source.address);
      if (ban !== null) this.options.onBan?.(ban, username);
    }
    return { pass: false, code: 403 };
  }
}

/** The account a SIP URI names (user part and domain), if any. */
export function accountFor(accounts: Accounts, uri: Uri): Account | undefined {
  if (!uri.isSip) return undefined;
  return accounts.find(userOf(uri.user), canonicalHost(uri));
}

/** The user part as accounts store it: escapes of characters that may stand unescaped are decoded. */
function userOf(user: string | null): string {
  return user === null ? '' : normaliseEscapes(user, URI_USER);
}
