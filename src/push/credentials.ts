// The files named by `push:` read and checked: the service-account JSON, the
// APNs .p8 key or certificate and key, the extra CA. Used by the config
// loader (so `portier check` reports a bad file) and by PushService.

import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { PushConfig } from '../config/types.js';
import { parseServiceAccount, type ServiceAccount } from './fcm.js';
import { privateKeyFor } from './jwt.js';
import type { ApnsAuth } from './apns.js';

export interface PushCredentials {
  /** PEM added to the system roots; null: the roots only. */
  ca: string | null;
  serviceAccount: ServiceAccount | null;
  apns: { auth: ApnsAuth; cert?: string; key?: string } | null;
}

export interface CredentialProblem {
  /** Config key path, e.g. ['push', 'fcm', 'service-account']. */
  path: string[];
  reason: string;
}

export class PushCredentialError extends Error {
  constructor(readonly problems: CredentialProblem[]) {
    super(problems.map((p) => `${p.path.join('.')}: ${p.reason}`).join('; '));
    this.name = 'PushCredentialError';
  }
}

function read(path: string, key: string[], problems: CredentialProblem[]): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    problems.push({ path: key, reason: `cannot read ${path}: ${(err as Error).message}` });
    return null;
  }
}

function attempt<T>(key: string[], file: string, problems: CredentialProblem[], fn: () => T): T | null {
  try {
    return fn();
  } catch (err) {
    problems.push({ path: key, reason: `${file}: ${(err as Error).message}` });
    return null;
  }
}

/** Reads and checks every file; the problems are listed (all of them) rather than thrown. */
export function readPushCredentials(cfg: PushConfig): { credentials: PushCredentials; problems: CredentialProblem[] } {
  const problems: CredentialProblem[] = [];
  let ca: string | null = null;
  if (cfg.ca !== null) {
    const pem = read(cfg.ca, ['push', 'ca'], problems);
    if (pem !== null && attempt(['push', 'ca'], cfg.ca, problems, () => new X509Certificate(pem)) !== null) ca = pem;
  }
  let serviceAccount: ServiceAccount | null = null;
  if (cfg.fcm !== null) {
    const key = ['push', 'fcm', 'service-account'];
    const text = read(cfg.fcm.serviceAccount, key, problems);
    if (text !== null) serviceAccount = attempt(key, cfg.fcm.serviceAccount, problems, () => parseServiceAccount(text));
  }
  let apns: PushCredentials['apns'] = null;
  const a = cfg.apns;
  if (a !== null) {
    const keyPath = ['push', 'apns', 'key'];
    const keyPem = read(a.key, keyPath, problems);
    if (a.cert === null) {
      const key = keyPem === null ? null : attempt(keyPath, a.key, problems, () => privateKeyFor('ES256', keyPem));
      if (key !== null && a.keyId !== null && a.teamId !== null) apns = { auth: { kind: 'token', key, keyId: a.keyId, teamId: a.teamId } };
    } else {
      const certPath = ['push', 'apns', 'cert'];
      const certPem = read(a.cert, certPath, problems);
      if (certPem !== null && keyPem !== null) {
        const cert = attempt(certPath, a.cert, problems, () => new X509Certificate(certPem));
        const key = attempt(keyPath, a.key, problems, () => createPrivateKey(keyPem));
        if (cert !== null && key !== null) {
          if (!cert.checkPrivateKey(key)) problems.push({ path: keyPath, reason: `${a.key}: is not the private key of ${a.cert}` });
          else apns = { auth: { kind: 'certificate' }, cert: certPem, key: keyPem };
        }
      }
    }
  }
  return { credentials: { ca, serviceAccount, apns }, problems };
}

/** As readPushCredentials, throwing a PushCredentialError on any problem. */
export function loadPushCredentials(cfg: PushConfig): PushCredentials {
  const { credentials, problems } = readPushCredentials(cfg);
  if (problems.length > 0) throw new PushCredentialError(problems);
  return credentials;
}
