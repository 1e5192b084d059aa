// A small STUN/TURN client for the coturn test (RFC 5389 messages, RFC 5766
// Allocate with the long-term credential mechanism): the first Allocate gets
// 401 with REALM and NONCE, the second carries USERNAME, REALM, NONCE and
// MESSAGE-INTEGRITY = HMAC-SHA1 over the message (its length counting the
// MESSAGE-INTEGRITY attribute) with key MD5(username:realm:password), then a
// FINGERPRINT. Every request is retransmitted and bounded in time.

import { createHash, createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';

const MAGIC = 0x2112a442;

export const BINDING_REQUEST = 0x0001;
export const ALLOCATE_REQUEST = 0x0003;
export const ALLOCATE_SUCCESS = 0x0103;
export const ALLOCATE_ERROR = 0x0113;

const ATTR = {
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  REALM: 0x0014,
  NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_TRANSPORT: 0x0019,
  XOR_MAPPED_ADDRESS: 0x0020,
  LIFETIME: 0x000d,
  FINGERPRINT: 0x8028,
} as const;

export interface StunMessage {
  type: number;
  id: Buffer;
  attrs: Map<number, Buffer>;
}

function attribute(type: number, value: Buffer): Buffer {
  const pad = (4 - (value.length % 4)) % 4;
  const head = Buffer.alloc(4);
  head.writeUInt16BE(type, 0);
  head.writeUInt16BE(value.length, 2);
  return Buffer.concat([head, value, Buffer.alloc(pad)]);
}

function header(type: number, length: number, id: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(type, 0);
  h.writeUInt16BE(length, 2);
  h.writeUInt32BE(MAGIC, 4);
  id.copy(h, 8);
  return h;
}

// CRC-32 (ISO-HDLC), for FINGERPRINT.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A request; with `key`, MESSAGE-INTEGRITY then FINGERPRINT are appended. */
export function encode(type: number, id: Buffer, attrs: Array<[number, Buffer]>, key?: Buffer): Buffer {
  let body = Buffer.concat(attrs.map(([t, v]) => attribute(t, v)));
  if (key !== undefined) {
    const withMi = body.length + 24;
    const mi = createHmac('sha1', key).update(Buffer.concat([header(type, withMi, id), body])).digest();
    body = Buffer.concat([body, attribute(ATTR.MESSAGE_INTEGRITY, mi)]);
  }
  const fpLength = body.length + 8;
  const fp = Buffer.alloc(4);
  fp.writeUInt32BE((crc32(Buffer.concat([header(type, fpLength, id), body])) ^ 0x5354554e) >>> 0, 0);
  body = Buffer.concat([body, attribute(ATTR.FINGERPRINT, fp)]);
  return Buffer.concat([header(type, body.length, id), body]);
}

export function decode(buf: Buffer): StunMessage | null {
  if (buf.length < 20 || buf.readUInt32BE(4) !== MAGIC) return null;
  const length = buf.readUInt16BE(2);
  if (buf.length < 20 + length) return null;
  const attrs = new Map<number, Buffer>();
  for (let i = 20; i + 4 <= 20 + length; ) {
    const t = buf.readUInt16BE(i);
    const l = buf.readUInt16BE(i + 2);
    if (!attrs.has(t)) attrs.set(t, buf.subarray(i + 4, i + 4 + l));
    i += 4 + l + ((4 - (l % 4)) % 4);
  }
  return { type: buf.readUInt16BE(0), id: buf.subarray(8, 20), attrs };
}

/** ERROR-CODE as a number (401, 438...), or null. */
export function errorCode(m: StunMessage): number | null {
  const v = m.attrs.get(ATTR.ERROR_CODE);
  return v === undefined || v.length < 4 ? null : (v[2] & 0x7) * 100 + v[3];
}

/** An XOR-…-ADDRESS attribute (IPv4) as ip:port. */
export function xorAddress(m: StunMessage, which: 'relayed' | 'mapped'): string | null {
  const v = m.attrs.get(which === 'relayed' ? ATTR.XOR_RELAYED_ADDRESS : ATTR.XOR_MAPPED_ADDRESS);
  if (v === undefined || v.length < 8 || v[1] !== 0x01) return null;
  const port = v.readUInt16BE(2) ^ (MAGIC >>> 16);
  const ip = (v.readUInt32BE(4) ^ MAGIC) >>> 0;
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}:${port}`;
}

/** Sends `msg` over `sock` to host:port until an answer with the same transaction ID, retransmitting; null after `ms`. */
export function transact(sock: dgram.Socket, host: string, port: number, msg: Buffer, ms = 3000): Promise<StunMessage | null> {
  const id = msg.subarray(8, 20);
  return new Promise((resolve) => {
    let done = false;
    const finish = (m: StunMessage | null) => {
      if (done) return;
      done = true;
      clearInterval(resend);
      clearTimeout(deadline);
      sock.off('message', onMessage);
      resolve(m);
    };
    const onMessage = (data: Buffer) => {
      const m = decode(data);
      if (m !== null && m.id.equals(id)) finish(m);
    };
    sock.on('message', onMessage);
    const send = () => sock.send(msg, port, host);
    send();
    const resend = setInterval(send, 250);
    const deadline = setTimeout(() => finish(null), ms);
  });
}

export interface AllocateResult {
  /** The final answer: ALLOCATE_SUCCESS or ALLOCATE_ERROR. */
  type: number;
  error: number | null;
  relayed: string | null;
  /** The realm of the 401 the first request got. */
  realm: string;
}

/** Allocate (UDP relay) with the long-term credential mechanism: the 401 round trip, then the authenticated request. */
export async function allocate(host: string, port: number, username: string, password: string): Promise<AllocateResult> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  try {
    const transport: [number, Buffer] = [ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0])];
    const first = await transact(sock, host, port, encode(ALLOCATE_REQUEST, randomBytes(12), [transport]));
    if (first === null) throw new Error('no answer to the first Allocate');
    if (first.type !== ALLOCATE_ERROR || errorCode(first) !== 401) throw new Error(`the first Allocate got type 0x${first.type.toString(16)} error ${errorCode(first)}, not a 401 challenge`);
    const realm = first.attrs.get(ATTR.REALM)?.toString('utf8') ?? '';
    const nonce = first.attrs.get(ATTR.NONCE) ?? Buffer.alloc(0);
    const key = createHash('md5').update(`${username}:${realm}:${password}`, 'utf8').digest();
    const second = await transact(
      sock,
      host,
      port,
      encode(ALLOCATE_REQUEST, randomBytes(12), [transport, [ATTR.USERNAME, Buffer.from(username, 'utf8')], [ATTR.REALM, Buffer.from(realm, 'utf8')], [ATTR.NONCE, nonce]], key),
    );
    if (second === null) throw new Error('no answer to the authenticated Allocate');
    return { type: second.type, error: errorCode(second), relayed: xorAddress(second, 'relayed'), realm };
  } finally {
    sock.close();
  }
}

/** A Binding request (no credentials): the server's mapped address for us, or null without an answer in `ms`. */
export async function binding(host: string, port: number, ms = 500): Promise<string | null> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  try {
    const m = await transact(sock, host, port, encode(BINDING_REQUEST, randomBytes(12), []), ms);
    return m === null ? null : xorAddress(m, 'mapped');
  } finally {
    sock.close();
  }
}
