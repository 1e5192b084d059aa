/**
 * IP address ranges for the exempt and trusted source lists.
 *
 * `parseCidr` validates one configured entry ('10.20.0.0/16', '2001:db8::/32',
 * a bare address meaning a single host). `AddressSet` answers "is this source
 * address in any of these ranges" on every received request, so it parses the
 * address itself without allocating and compares integers. (Measured against
 * node:net BlockList with ten entries: the JS matcher is several times faster,
 * because BlockList crosses into C++ and re-parses per check, and it needs the
 * family passed in anyway.)
 *
 * IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports for an
 * IPv4 peer) is the same host as `a.b.c.d`: such addresses match IPv4 entries,
 * and entries written inside ::ffff:0:0/96 are kept as IPv4 entries. Wider IPv6
 * entries (`::/0`) cover IPv6 sources only; write 0.0.0.0/0 for all of IPv4.
 */

export interface Cidr {
  /** The network address in canonical text (IPv6 compressed per RFC 5952). */
  readonly address: string;
  readonly prefix: number;
  readonly family: 4 | 6;
}

const scratch = new Uint16Array(8);

/** `text[start, end)` as a dotted-quad IPv4 address, or -1. No leading zeros (they would read as octal elsewhere). */
function parseIPv4(text: string, start: number, end: number): number {
  let value = 0;
  let octets = 0;
  let i = start;
  while (true) {
    const first = i;
    let octet = 0;
    while (i < end) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      octet = octet * 10 + (c - 48);
      i++;
    }
    const digits = i - first;
    if (digits === 0 || digits > 3 || octet > 255) return -1;
    if (digits > 1 && text.charCodeAt(first) === 48) return -1;
    value = value * 256 + octet;
    octets++;
    if (i === end) break;
    if (octets === 4 || text.charCodeAt(i) !== 46) return -1;
    i++;
  }
  return octets === 4 ? value : -1;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** `text[start, end)` as an IPv6 address into `out` (eight 16-bit groups). False when it is not one. */
function parseIPv6(text: string, start: number, end: number, out: Uint16Array): boolean {
  let n = 0;
  let gap = -1;
  let i = start;
  if (end - start < 2) return false;
  if (text.charCodeAt(i) === 58) {
    if (text.charCodeAt(i + 1) !== 58) return false;
    gap = 0;
    i += 2;
  }
  while (i < end) {
    const first = i;
    let value = 0;
    while (i < end) {
      const h = hexValue(text.charCodeAt(i));
      if (h < 0) break;
      value = value * 16 + h;
      i++;
    }
    if (i < end && text.charCodeAt(i) === 46) {
      if (n > 6) return false;
      const v4 = parseIPv4(text, first, end);
      if (v4 < 0) return false;
      out[n++] = v4 >>> 16;
      out[n++] = v4 & 0xffff;
      i = end;
      break;
    }
    const digits = i - first;
    if (digits === 0 || digits > 4 || n === 8) return false;
    out[n++] = value;
    if (i === end) break;
    if (text.charCodeAt(i) !== 58) return false;
    i++;
    if (i < end && text.charCodeAt(i) === 58) {
      if (gap >= 0) return false;
      gap = n;
      i++;
    } else if (i === end) {
      return false;
    }
  }
  if (gap < 0) return n === 8;
  if (n > 7) return false;
  const tail = n - gap;
  for (let k = 1; k <= tail; k++) out[8 - k] = out[n - k];
  for (let k = gap; k < 8 - tail; k++) out[k] = 0;
  return true;
}

/** A zone index (after '%'), as node:net isIP takes it: one or more of [0-9A-Za-z.:-]. The zone does not take part in matching. */
function validZone(text: string, start: number): boolean {
  if (start >= text.length) return false;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const ok = (c >= 48 && c <= 58) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46;
    if (!ok) return false;
  }
  return true;
}

function isMapped(g: Uint16Array): boolean {
  return g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff;
}

function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/** RFC 5952 text: lower case, longest run of two or more zero groups as '::', mapped IPv4 dotted. */
function formatIPv6(g: Uint16Array): string {
  if (isMapped(g)) return `::ffff:${formatIPv4(g[6] * 65536 + g[7])}`;
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => Array.from(g.subarray(from, to), (x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}

function mask32(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

/** The four 32-bit words of an IPv6 address. */
function words(g: Uint16Array): [number, number, number, number] {
  return [g[0] * 65536 + g[1], g[2] * 65536 + g[3], g[4] * 65536 + g[5], g[6] * 65536 + g[7]];
}

/**
 * One configured range. A bare address is a single host (/32 or /128). A
 * range with host bits set ('10.20.0.1/16') is refused rather than silently
 * widened or narrowed: it is usually a typo for either.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? null : text.slice(slash + 1);
  if (addressText.includes('%')) {
    throw new Error(`${JSON.stringify(text)}: a zone index (%...) is not allowed in an address range`);
  }
  let family: 4 | 6;
  const groups = new Uint16Array(8);
  const v4 = parseIPv4(addressText, 0, addressText.length);
  if (v4 >= 0) {
    family = 4;
  } else if (parseIPv6(addressText, 0, addressText.length, groups)) {
    family = 6;
  } else {
    throw new Error(`${JSON.stringify(text)} must be an IP address or ADDRESS/PREFIX`);
  }
  const bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (prefixText !== null) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) {
      throw new Error(`${JSON.stringify(text)}: prefix ${JSON.stringify(prefixText)} must be a whole number from 0 to ${bits}`);
    }
    prefix = Number(prefixText);
    if (prefix > bits) throw new Error(`${JSON.stringify(text)}: prefix ${prefix} is too long for IPv${family} (at most ${bits})`);
  }
  let address: string;
  let network: string;
  if (family === 4) {
    address = formatIPv4(v4);
    network = formatIPv4((v4 & mask32(prefix)) >>> 0);
  } else {
    address = formatIPv6(groups);
    const masked = new Uint16Array(8);
    for (let k = 0; k < 8; k++) {
      const keep = Math.max(0, Math.min(16, prefix - 16 * k));
      masked[k] = keep === 0 ? 0 : groups[k] & ((0xffff << (16 - keep)) & 0xffff);
    }
    network = formatIPv6(masked);
  }
  if (network !== address) {
    throw new Error(`${JSON.stringify(text)} has host bits set; write ${network}/${prefix}`);
  }
  return { address, prefix, family };
}

/**
 * A fixed set of address ranges, built once from configuration. `has` never
 * throws: anything that is not an IP address is simply not in the set.
 */
export class AddressSet {
  /** Number of distinct ranges. */
  readonly size: number;
  /** IPv4 entries: pairs of (network, mask). */
  private readonly v4: Uint32Array;
  /** IPv6 entries: eight words each, four of network then four of mask. */
  private readonly v6: Uint32Array;

  constructor(cidrs: readonly string[]) {
    const v4 = new Map<string, [number, number]>();
    const v6 = new Map<string, number[]>();
    for (const text of cidrs) {
      const cidr = parseCidr(text);
      const g = scratch;
      if (cidr.family === 4) {
        v4.set(`${cidr.address}/${cidr.prefix}`, [parseIPv4(cidr.address, 0, cidr.address.length), mask32(cidr.prefix)]);
        continue;
      }
      parseIPv6(cidr.address, 0, cidr.address.length, g);
      if (isMapped(g) && cidr.prefix >= 96) {
        const net = g[6] * 65536 + g[7];
        v4.set(`${formatIPv4(net)}/${cidr.prefix - 96}`, [net, mask32(cidr.prefix - 96)]);
        continue;
      }
      const w = words(g);
      const m = [0, 1, 2, 3].map((k) => mask32(cidr.prefix - 32 * k));
      v6.set(`${cidr.address}/${cidr.prefix}`, [...w, ...m]);
    }
    this.v4 = Uint32Array.from([...v4.values()].flat());
    this.v6 = Uint32Array.from([...v6.values()].flat());
    this.size = v4.size + v6.size;
  }

  has(address: string): boolean {
    if (this.size === 0 || typeof address !== 'string') return false;
    let end = address.length;
    if (address.indexOf(':') < 0) return this.hasV4(parseIPv4(address, 0, end));
    const zone = address.indexOf('%');
    if (zone >= 0) {
      if (!validZone(address, zone + 1)) return false;
      end = zone;
    }
    const g = scratch;
    if (!parseIPv6(address, 0, end, g)) return false;
    if (isMapped(g)) return this.hasV4(g[6] * 65536 + g[7]);
    const v6 = this.v6;
    if (v6.length === 0) return false;
    const w0 = g[0] * 65536 + g[1];
    const w1 = g[2] * 65536 + g[3];
    const w2 = g[4] * 65536 + g[5];
    const w3 = g[6] * 65536 + g[7];
    for (let i = 0; i < v6.length; i += 8) {
      if (
        (w0 & v6[i + 4]) >>> 0 === v6[i] &&
        (w1 & v6[i + 5]) >>> 0 === v6[i + 1] &&
        (w2 & v6[i + 6]) >>> 0 === v6[i + 2] &&
        (w3 & v6[i + 7]) >>> 0 === v6[i + 3]
      ) {
        return true;
      }
    }
    return false;
  }

  private hasV4(value: number): boolean {
    if (value < 0) return false;
    const v4 = this.v4;
    for (let i = 0; i < v4.length; i += 2) {
      if ((value & v4[i + 1]) >>> 0 === v4[i]) return true;
    }
    return false;
  }
}
