// Shared by the provisioning tests: reading Linphone's XML back with a real
// XML parser (fast-xml-parser), a digest client for HTTP, and a Portier
// configuration with provisioning on loopback.

import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { LPCONFIG_NS } from '../../src/provisioning/xml.js';

export type LpConfig = Record<string, Record<string, string>>;

/** Validates `xml` (well-formed, lpconfig namespace, every entry overwrite="true") and returns section → key → value. Throws saying what is wrong. */
export function parseLpConfig(xml: string): LpConfig {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new Error(`not well-formed XML: ${JSON.stringify(valid.err)}`);
  const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', isArray: (name) => name === 'section' || name === 'entry', parseTagValue: false, trimValues: false }).parse(xml) as {
    config?: { '@xmlns'?: string; section?: Array<{ '@name': string; entry?: Array<{ '@name': string; '@overwrite'?: string; '#text'?: string } | string> }> };
  };
  const config = doc.config;
  if (config === undefined) throw new Error('no <config> root element');
  if (config['@xmlns'] !== LPCONFIG_NS) throw new Error(`<config> namespace is ${String(config['@xmlns'])}, not ${LPCONFIG_NS}`);
  const out: LpConfig = {};
  for (const s of config.section ?? []) {
    const entries: Record<string, string> = {};
    for (const e of s.entry ?? []) {
      if (typeof e === 'string') throw new Error(`an entry of section ${s['@name']} has no name attribute`);
      if (e['@overwrite'] !== 'true') throw new Error(`entry ${s['@name']}.${e['@name']} is not overwrite="true"`);
      entries[e['@name']] = e['#text'] ?? '';
    }
    out[s['@name']] = entries;
  }
  return out;
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  /** Header lines as sent, name and value alternating (repeated headers kept apart). */
  raw: string[];
  body: string;
}

/** Every value of a header, repeated headers apart (Node joins them in `headers`). */
export function headerValues(a: HttpAnswer, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < a.raw.length; i += 2) if (a.raw[i].toLowerCase() === name) out.push(a.raw[i + 1]);
  return out;
}

export interface RequestOptions {
  ca?: string;
  headers?: Record<string, string>;
  method?: string;
  body?: string | Buffer;
}

/** One request, GET by default (http or https, `ca` trusted), bounded in time. */
export function get(url: string, o: RequestOptions = {}): Promise<HttpAnswer> {
  const u = new URL(url);
  const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, { method: o.method ?? 'GET', headers: o.headers, ca: o.ca, timeout: 10_000 } as never);
  return new Promise((resolve, reject) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: res.rawHeaders, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${o.method ?? 'GET'} ${u.pathname}: timed out`)));
    req.on('error', reject);
    req.end(o.body);
  });
}

/** The Authorization value answering the challenge of `algorithm` among `challenges` (qop=auth, nc 1). */
export function digestAuthorization(challenges: string[], o: { user: string; password: string; method: string; uri: string; algorithm?: 'SHA-256' | 'MD5' }): string {
  const alg = o.algorithm ?? 'SHA-256';
  const chosen = challenges.find((v) => new RegExp(`algorithm=${alg}\\b`, 'i').test(v));
  if (chosen === undefined) throw new Error(`no ${alg} challenge in ${JSON.stringify(challenges)}`);
  const param = (n: string) => new RegExp(`${n}="?([^",]*)"?`).exec(chosen)?.[1] ?? '';
  const h = (s: string) => createHash(alg === 'MD5' ? 'md5' : 'sha256').update(s).digest('hex');
  const realm = param('realm');
  const nonce = param('nonce');
  const cnonce = randomBytes(8).toString('hex');
  const nc = '00000001';
  const response = h(`${h(`${o.user}:${realm}:${o.password}`)}:${nonce}:${nc}:${cnonce}:auth:${h(`${o.method}:${o.uri}`)}`);
  return `Digest username="${o.user}", realm="${realm}", nonce="${nonce}", uri="${o.uri}", response="${response}", algorithm=${alg}, cnonce="${cnonce}", qop=auth, nc=${nc}`;
}

/** A request (GET by default) with HTTP digest (RFC 7616): the first challenge of the algorithm asked for (SHA-256 by default). */
export async function digestGet(url: string, user: string, password: string, o: RequestOptions & { algorithm?: 'SHA-256' | 'MD5' } = {}): Promise<HttpAnswer> {
  const first = await get(url, o);
  if (first.status !== 401) return first;
  const authorization = digestAuthorization(headerValues(first, 'www-authenticate'), { user, password, method: o.method ?? 'GET', uri: new URL(url).pathname, algorithm: o.algorithm });
  return get(url, { ...o, headers: { ...o.headers, Authorization: authorization } });
}

/** A configuration directory with users, TURN secret and portier.yaml (provisioning on loopback). Returns the yaml path. */
export function writeProvisioningConfig(dir: string, o: { baseUrl?: string; listen?: string; tls?: { cert: string; key: string }; extra?: string[]; sipListen?: string[]; turn?: string | null } = {}): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'users'), '');
  writeFileSync(join(dir, 'turn-secret'), 'north-gate-shared-secret\n', { mode: 0o600 });
  const lines = [
    'domains: [example.test]',
    `listen: [${(o.sipListen ?? ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0']).join(', ')}]`,
    'auth: {users: users, realm: example.test}',
    `storage: {type: memory, path: ${JSON.stringify(join(dir, 'state', 'portier.db'))}}`,
    ...(o.tls !== undefined ? [`tls: {cert: ${JSON.stringify(o.tls.cert)}, key: ${JSON.stringify(o.tls.key)}}`] : []),
    'groups:',
    '  ecole-jaures: {members: [directrice, gardien]}',
    '  securite: {members: [poste-securite, ecole-jaures]}',
    'provisioning:',
    `  listen: ${o.listen ?? '127.0.0.1:0'}`,
    `  base-url: ${o.baseUrl ?? 'http://127.0.0.1:8443'}`,
    '  token-ttl: 1h',
    '  devices:',
    '    - {account: portail-jaures, name: "Portail Jaurès", type: intercom, groups: [ecole-jaures], dtmf: sipinfo, actions: [{type: open-door, code: "*1"}]}',
    '    - {account: barriere, name: "Barrière, parking", type: gate, groups: [securite], dtmf: rfc2833, actions: [{type: open-gate, code: "#9"}, {type: light-up, code: "5"}]}',
    'media:',
    '  stun: stun:turn.example.test:3478',
    ...(o.turn === null ? [] : ['  turn:', `    url: ${o.turn ?? 'turn:turn.example.test:3478?transport=udp'}`, '    secret: turn-secret', '    ttl: 12h']),
    ...(o.extra ?? []),
  ];
  const path = join(dir, 'portier.yaml');
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
}

/** A CliIo that records. */
export function recorder(): { io: { stdout: { write(s: string): boolean }; stderr: { write(s: string): boolean } }; out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    io: { stdout: { write: (s: string) => ((out += s), true) }, stderr: { write: (s: string) => ((err += s), true) } },
    out: () => out,
    err: () => err,
  };
}

/** A TCP port free on 127.0.0.1 now (for a listener whose port must be known before the configuration is written). */
export async function freeTcpPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
