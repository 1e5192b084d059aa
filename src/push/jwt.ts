// Compact JWS (RFC 7515/7519) signing with node:crypto: RS256 for Google's
// service-account assertion, ES256 for the APNs provider token.

import { createPrivateKey, sign, type KeyObject } from 'node:crypto';

export type JwtAlgorithm = 'RS256' | 'ES256';

export function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** A private key from PEM text, checked to suit `alg` (RSA for RS256, P-256 for ES256). */
export function privateKeyFor(alg: JwtAlgorithm, pem: string): KeyObject {
  const key = createPrivateKey(pem);
  if (alg === 'RS256' && key.asymmetricKeyType !== 'rsa') throw new Error(`an RSA private key is needed, not ${key.asymmetricKeyType}`);
  if (alg === 'ES256') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (key.asymmetricKeyType !== 'ec' || (curve !== 'prime256v1' && curve !== 'P-256')) {
      throw new Error(`an EC P-256 private key is needed, not ${key.asymmetricKeyType}${curve ? ` ${curve}` : ''}`);
    }
  }
  return key;
}

/** header.payload.signature; `header` adds fields such as kid to {alg, typ}. */
export function signJwt(alg: JwtAlgorithm, key: KeyObject, claims: Record<string, unknown>, header: Record<string, string> = {}): string {
  const input = `${base64url(JSON.stringify({ alg, typ: 'JWT', ...header }))}.${base64url(JSON.stringify(claims))}`;
  // JWS ES256 is the raw r||s pair (RFC 7518 §3.4), not the DER that OpenSSL produces by default.
  const signature =
    alg === 'ES256' ? sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }) : sign('sha256', Buffer.from(input), key);
  return `${input}.${base64url(signature)}`;
}
