// A JIT warm-up before the sockets open.
//
// A fresh process runs its hot path in V8's interpreter, several times
// slower than once it is compiled: under load in its first second a fresh
// Portier fell behind (bench/README, "Cold start") and its overload control
// refused new requests with 503 until V8 caught up. The hottest steps are
// pure functions: parsing and validating a message, reading its headers,
// building a response, checking digest credentials. They run here on
// messages shaped like a device's, for a bounded time, with an authenticator
// and accounts of their own: nothing of the server's state is touched, no
// socket is used, no nonce of the real authenticator is made.

import { createHash, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Accounts, Authenticator, AddressSet, DigestAuthenticator } from './auth/index.js';
import { makeAccount } from './auth/users.js';
import { buildResponseBytes, parseAndValidate, SipParseError, stampedVia, type SipMessage } from './sip/index.js';
import type { Source } from './transport/index.js';

const REALM = 'warmup.invalid';
const USER = 'door-1';
const HOST = '192.0.2.10';
const SOURCE: Source = { protocol: 'udp', address: HOST, port: 5062, family: 4, local: { protocol: 'udp', address: '192.0.2.1', port: 5060 }, connectionId: 0 };

function register(n: number, authorization: string | null): Buffer {
  return Buffer.from(
    `REGISTER sip:${REALM} SIP/2.0\r\n` +
      `Via: SIP/2.0/UDP ${HOST}:5062;branch=z9hG4bK.w${n};rport\r\n` +
      `From: <sip:${USER}@${REALM}>;tag=w${n}\r\n` +
      `To: sip:${USER}@${REALM}\r\n` +
      `CSeq: ${n} REGISTER\r\n` +
      `Call-ID: warmup-${n}\r\n` +
      'Max-Forwards: 70\r\n' +
      'Supported: replaces, outbound, gruu, path\r\n' +
      (authorization === null ? '' : `Authorization: ${authorization}\r\n`) +
      `Contact: <sip:${USER}@${HOST}:5062;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-4000-8000-00000000000${n % 10}>"\r\n` +
      'Expires: 3600\r\n' +
      'User-Agent: Portier warm-up\r\n' +
      'Content-Length: 0\r\n\r\n',
    'latin1',
  );
}

function invite(n: number): Buffer {
  const sdp = `v=0\r\no=- ${n} ${n} IN IP4 ${HOST}\r\ns=-\r\nc=IN IP4 ${HOST}\r\nt=0 0\r\nm=audio 7078 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n`;
  return Buffer.from(
    `INVITE sip:phones@${REALM} SIP/2.0\r\n` +
      `Via: SIP/2.0/UDP ${HOST}:5062;branch=z9hG4bK.i${n};rport\r\n` +
      `From: <sip:${USER}@${REALM}>;tag=i${n}\r\n` +
      `To: <sip:phones@${REALM}>\r\n` +
      `CSeq: 20 INVITE\r\n` +
      `Call-ID: warmup-call-${n}\r\n` +
      'Max-Forwards: 70\r\n' +
      `Contact: <sip:${USER}@${HOST}:5062>\r\n` +
      'Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, INFO\r\n' +
      'Content-Type: application/sdp\r\n' +
      `Content-Length: ${sdp.length}\r\n\r\n${sdp}`,
    'latin1',
  );
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'latin1').digest('hex');
}

/** What a device answers to a 401: SHA-256 credentials for its nonce, qop=auth. */
function authorization(challenge: string, password: string, nc: number): string | null {
  const at = challenge.indexOf('nonce="');
  if (at < 0) return null;
  const nonce = challenge.slice(at + 7, challenge.indexOf('"', at + 7));
  const ncText = nc.toString(16).padStart(8, '0');
  const uri = `sip:${REALM}`;
  const ha1 = sha256(`${USER}:${REALM}:${password}`);
  const response = sha256(`${ha1}:${nonce}:${ncText}:c${nc}:auth:${sha256(`REGISTER:${uri}`)}`);
  return (
    `Digest realm="${REALM}", nonce="${nonce}", algorithm=SHA-256, username="${USER}", uri="${uri}", ` +
    `response="${response}", cnonce="c${nc}", nc=${ncText}, qop=auth`
  );
}

/** Reads what the server reads of a request before acting on it. */
function touch(msg: SipMessage): number {
  let n = msg.callId().length + msg.cseq().seq + (msg.maxForwards() ?? 0);
  const top = msg.topVia();
  if (top !== null) n += stampedVia(top, SOURCE.address, SOURCE.port)?.length ?? 0;
  n += msg.from().tag?.length ?? 0;
  if (msg.to().tag === null) n++;
  return n;
}

/**
 * Runs the hot path for about `budgetMs` (at most `rounds` rounds): a
 * REGISTER challenged then authenticated and answered, an INVITE answered
 * 100 and 180, and those responses parsed back. Returns the rounds run and
 * the time taken. Never throws: a warm-up that failed only leaves V8 cold.
 */
export function warmUp(budgetMs = 250, rounds = 3000): { rounds: number; ms: number } {
  const t0 = performance.now();
  let done = 0;
  try {
    const password = randomBytes(12).toString('hex');
    const digest = new DigestAuthenticator({ realm: REALM, algorithms: ['SHA-256', 'MD5'], nonceLifetimeMs: 300_000 });
    const accounts = new Accounts([makeAccount(`${USER}@${REALM}`, password, REALM, 'door')]);
    const auth = new Authenticator({ digest, accounts: () => accounts, trusted: new AddressSet([]), guard: null });
    let sink = 0;
    for (; done < rounds && performance.now() - t0 < budgetMs; done++) {
      const first = parseAndValidate(register(done, null), { transport: 'udp' });
      if (first instanceof SipParseError) break;
      sink += touch(first);
      const gate = auth.check(first, SOURCE, 'register');
      if (gate.pass) break;
      const challenged = buildResponseBytes(first, gate.code, { headers: gate.headers });
      const response = parseAndValidate(challenged, { transport: 'udp' });
      if (response instanceof SipParseError) break;
      const www = response.get('www-authenticate');
      const creds = www === undefined ? null : authorization(www, password, 1);
      if (creds === null) break;
      const second = parseAndValidate(register(done, creds), { transport: 'udp' });
      if (second instanceof SipParseError) break;
      sink += touch(second) + (second.contacts()?.length ?? 0);
      if (!auth.check(second, SOURCE, 'register').pass) break;
      sink += buildResponseBytes(second, 200, { headers: [['Contact', `<sip:${USER}@${HOST}:5062>;expires=3600`]] }).length;

      const inv = parseAndValidate(invite(done), { transport: 'udp' });
      if (inv instanceof SipParseError) break;
      sink += touch(inv) + inv.body.length;
      sink += buildResponseBytes(inv, 100).length;
      const ringing = parseAndValidate(buildResponseBytes(inv, 180, { toTag: `t${done}` }), { transport: 'udp' });
      if (ringing instanceof SipParseError) break;
      sink += ringing.status + (ringing.topVia()?.branch?.length ?? 0);
    }
    if (sink < 0) done = 0; // the results are used, so that none of the work is left out
  } catch {
    // A warm-up is an optimisation: whatever went wrong, the server starts as it would have.
  }
  return { rounds: done, ms: performance.now() - t0 };
}
