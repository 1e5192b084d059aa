// TURN credentials in coturn's TURN REST API scheme (`use-auth-secret` with
// `static-auth-secret`; draft-uberti-behave-turn-rest): the username is
// `EXPIRY:USER`, EXPIRY the UNIX time in seconds after which coturn refuses
// it, and the password is base64(HMAC-SHA1(secret, username)). coturn
// recomputes the password from the username, so Portier and coturn share the
// secret and nothing else: no database, no per-user state.

import { createHmac } from 'node:crypto';
import { parseIceUrl } from '../config/provisioning.js';

export interface TurnCredentials {
  username: string;
  password: string;
  /** UNIX time in seconds after which coturn refuses them. */
  expires: number;
}

/** Credentials for `user` valid `ttlSeconds` from `nowMs`. */
export function turnCredentials(secret: string, user: string, ttlSeconds: number, nowMs = Date.now()): TurnCredentials {
  const expires = Math.floor(nowMs / 1000) + ttlSeconds;
  const username = `${expires}:${user}`;
  return { username, password: turnPassword(secret, username), expires };
}

/** base64(HMAC-SHA1(secret, username)), as coturn computes it. */
export function turnPassword(secret: string, username: string): string {
  return createHmac('sha1', secret).update(username, 'utf8').digest('base64');
}

/** The ICE server of a `turn:`/`turns:`/`stun:` URL, as liblinphone's NAT policy wants it. */
export interface IceServer {
  /** `host:port` (IPv6 in brackets). */
  hostPort: string;
  host: string;
  port: number;
  transport: 'udp' | 'tcp' | 'tls';
}

export function iceServer(url: string): IceServer {
  const u = parseIceUrl(url, ['stun', 'stuns', 'turn', 'turns']);
  const transport = u.scheme.endsWith('s') ? 'tls' : u.transport;
  return { hostPort: `${u.host}:${u.port}`, host: u.host, port: u.port, transport };
}
