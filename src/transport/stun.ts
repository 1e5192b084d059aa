// The STUN server part of RFC 5626 §8: UAs with outbound UDP flows send STUN
// Binding requests (RFC 5389) to the SIP port to keep the NAT binding alive
// and to learn whether it changed. We answer with the mapped address only: no
// authentication, no other attributes but FINGERPRINT when the request had one.

import { isIPv4 } from 'node:net';

const HEADER = 20;
const MAGIC_COOKIE = 0x2112a442;
const BINDING_REQUEST = 0x0001;
const BINDING_INDICATION = 0x0011;
const BINDING_SUCCESS = 0x0101;
const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
const ATTR_FINGERPRINT = 0x8028;
const FINGERPRINT_XOR = 0x5354554e;

/**
 * True when the datagram looks like STUN: the two top bits of the type are
 * zero (a SIP message starts with a letter) and the magic cookie is in place.
 */
export function isStun(buf: Buffer): boolean {
  return buf.length >= HEADER && (buf[0] & 0xc0) === 0 && buf.readUInt32BE(4) === MAGIC_COOKIE;
}

/** A Binding indication: a keep-alive that needs no answer. */
export function isBindingIndication(buf: Buffer): boolean {
  return isStun(buf) && buf.readUInt16BE(0) === BINDING_INDICATION;
}

/**
 * Builds the Binding success response to `request` for a sender at
 * address:port, or returns null when `request` is not a well-formed Binding
 * request (wrong type, length field not matching the datagram, broken
 * attribute layout).
 */
export function bindingResponse(request: Buffer, address: string, port: number): Buffer | null {
  if (!isStun(request) || request.readUInt16BE(0) !== BINDING_REQUEST) return null;
  const bodyLen = request.readUInt16BE(2);
  if ((bodyLen & 3) !== 0 || HEADER + bodyLen !== request.length) return null;
  let fingerprint = false;
  let pos = HEADER;
  while (pos < request.length) {
    if (pos + 4 > request.length) return null;
    const type = request.readUInt16BE(pos);
    const len = request.readUInt16BE(pos + 2);
    const next = pos + 4 + ((len + 3) & ~3);
    if (next > request.length) return null;
    if (type === ATTR_FINGERPRINT) fingerprint = true;
    pos = next;
  }

  const v4 = isIPv4(address);
  const addrLen = v4 ? 4 : 16;
  const xorLen = 4 + addrLen;
  const length = 4 + xorLen + (fingerprint ? 8 : 0);
  const out = Buffer.alloc(HEADER + length);
  out.writeUInt16BE(BINDING_SUCCESS, 0);
  out.writeUInt16BE(length, 2);
  // Cookie and transaction id are echoed: bytes 4..20 of the request.
  request.copy(out, 4, 4, HEADER);

  let p = HEADER;
  out.writeUInt16BE(ATTR_XOR_MAPPED_ADDRESS, p);
  out.writeUInt16BE(xorLen, p + 2);
  out[p + 4] = 0;
  out[p + 5] = v4 ? 0x01 : 0x02;
  out.writeUInt16BE((port ^ (MAGIC_COOKIE >>> 16)) & 0xffff, p + 6);
  const a = p + 8;
  if (v4) {
    if (!writeIPv4(address, out, a)) return null;
  } else if (!writeIPv6(address, out, a)) {
    return null;
  }
  // X-Address: address XOR (cookie || transaction id); out[4..20] holds exactly that.
  for (let k = 0; k < addrLen; k++) out[a + k] ^= out[4 + k];
  p = a + addrLen;

  if (fingerprint) {
    out.writeUInt16BE(ATTR_FINGERPRINT, p);
    out.writeUInt16BE(4, p + 2);
    // The CRC covers the message up to the attribute, with the length field
    // already counting it (RFC 5389 §15.5).
    out.writeUInt32BE((crc32(out, 0, p) ^ FINGERPRINT_XOR) >>> 0, p + 4);
  }
  return out;
}

function writeIPv4(address: string, out: Buffer, at: number): boolean {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= address.length; i++) {
    const c = i < address.length ? address.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || value > 255 || part > 3) return false;
      out[at + part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      value = value * 10 + (c - 0x30);
      digits++;
    } else {
      return false;
    }
  }
  return part === 4;
}

// Writes the 16 bytes of an IPv6 literal (with "::", an embedded IPv4 tail,
// and a zone "%eth0", which is ignored).
function writeIPv6(address: string, out: Buffer, at: number): boolean {
  const zone = address.indexOf('%');
  const addr = zone === -1 ? address : address.slice(0, zone);
  const gap = addr.indexOf('::');
  const headPart = gap === -1 ? addr : addr.slice(0, gap);
  const tailPart = gap === -1 ? '' : addr.slice(gap + 2);
  const words: number[] = [];
  const tailWords: number[] = [];
  if (!parseGroups(headPart, words) || !parseGroups(tailPart, tailWords)) return false;
  const total = words.length + tailWords.length;
  if (gap === -1 ? total !== 8 : total > 7) return false;
  out.fill(0, at, at + 16);
  for (let i = 0; i < words.length; i++) out.writeUInt16BE(words[i], at + 2 * i);
  const tailAt = at + 16 - 2 * tailWords.length;
  for (let i = 0; i < tailWords.length; i++) out.writeUInt16BE(tailWords[i], tailAt + 2 * i);
  return true;
}

function parseGroups(s: string, words: number[]): boolean {
  if (s.length === 0) return true;
  const groups = s.split(':');
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i];
    if (i === groups.length - 1 && g.indexOf('.') !== -1) {
      const v4 = Buffer.allocUnsafe(4);
      if (!writeIPv4(g, v4, 0)) return false;
      words.push(v4.readUInt16BE(0), v4.readUInt16BE(2));
      continue;
    }
    if (g.length === 0 || g.length > 4) return false;
    const w = Number.parseInt(g, 16);
    if (Number.isNaN(w) || !isHex(g)) return false;
    words.push(w);
  }
  return true;
}

function isHex(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) | 0x20;
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

// zlib.crc32 only exists from Node 20.15/22.2; engines allows any Node 20.
let crcTable: Int32Array | null = null;

export function crc32(buf: Buffer, start: number, end: number): number {
  let table = crcTable;
  if (table === null) {
    table = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c;
    }
    crcTable = table;
  }
  let crc = -1;
  for (let i = start; i < end; i++) crc = table[(crc ^ buf[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}
