import t from 'tap';
import fc from 'fast-check';
import { BlockList, isIP } from 'node:net';
import { AddressSet, parseCidr } from '../../src/auth/cidr.js';

t.test('parseCidr reads ranges and single hosts', async (t) => {
  t.same(parseCidr('10.20.0.0/16'), { address: '10.20.0.0', prefix: 16, family: 4 });
  t.same(parseCidr('192.0.2.10'), { address: '192.0.2.10', prefix: 32, family: 4 }, 'a bare IPv4 address is /32');
  t.same(parseCidr('0.0.0.0/0'), { address: '0.0.0.0', prefix: 0, family: 4 });
  t.same(parseCidr('255.255.255.255/32'), { address: '255.255.255.255', prefix: 32, family: 4 });
  t.same(parseCidr('2001:db8::/32'), { address: '2001:db8::', prefix: 32, family: 6 });
  t.same(parseCidr('::1'), { address: '::1', prefix: 128, family: 6 }, 'a bare IPv6 address is /128');
  t.same(parseCidr('::/0'), { address: '::', prefix: 0, family: 6 });
  t.same(parseCidr('2001:DB8:0:0:0:0:0:0/32'), { address: '2001:db8::', prefix: 32, family: 6 }, 'IPv6 written canonically');
  t.same(parseCidr('2001:db8:0:1:0:0:0:1'), { address: '2001:db8:0:1::1', prefix: 128, family: 6 }, 'longest zero run compressed');
  t.same(parseCidr('2001:db8:0:0:1:0:0:1'), { address: '2001:db8::1:0:0:1', prefix: 128, family: 6 }, 'first of equal runs');
  t.same(parseCidr('2001:db8:0:1:1:1:1:1'), { address: '2001:db8:0:1:1:1:1:1', prefix: 128, family: 6 }, 'a single zero group is not compressed');
  t.same(parseCidr('::ffff:10.0.0.0/104'), { address: '::ffff:10.0.0.0', prefix: 104, family: 6 }, 'mapped IPv4 range');
  t.same(parseCidr('::ffff:a00:1'), { address: '::ffff:10.0.0.1', prefix: 128, family: 6 }, 'mapped written in hex');
  t.same(parseCidr('1:2:3:4:5:6:7::'), { address: '1:2:3:4:5:6:7:0', prefix: 128, family: 6 });
  t.same(parseCidr('fe80::/10'), { address: 'fe80::', prefix: 10, family: 6 });
  t.same(parseCidr('2001:db8::1.2.3.4'), { address: '2001:db8::102:304', prefix: 128, family: 6 }, 'embedded dotted tail');
});

t.test('parseCidr refuses with a reason', async (t) => {
  const refuses = (text: string, reason: RegExp | string, what?: string): void => {
    t.throws(() => parseCidr(text), { message: reason }, what ?? text);
  };
  for (const text of ['', 'example.com', '10.20.0', '10.20.0.0.1', '256.0.0.0', '10.020.0.0', '1.2.3.-4', ' 10.0.0.1', '10.0.0.1 ',
    ':', ':::', '1:::2', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '12345::', 'g::', '::ffff:1.2.3', ':1::', '1::2:', '/16', '1:2:3:4:5:6:7:8::',
    '1:2:3:4:5:6:7:1.2.3.4', '::1.2.3.4.5', '::1.2.3.04']) {
    refuses(text, /must be an IP address or ADDRESS\/PREFIX/, JSON.stringify(text));
  }
  refuses('10.0.0.0/33', '"10.0.0.0/33": prefix 33 is too long for IPv4 (at most 32)');
  refuses('2001:db8::/129', '"2001:db8::/129": prefix 129 is too long for IPv6 (at most 128)');
  refuses('10.0.0.0/', /prefix "" must be a whole number from 0 to 32/);
  refuses('10.0.0.0/-1', /prefix "-1" must be a whole number from 0 to 32/);
  refuses('10.0.0.0/08', /prefix "08" must be a whole number/);
  refuses('10.0.0.0/1.5', /prefix "1.5" must be a whole number/);
  refuses('10.0.0.0/16/16', /prefix "16\/16" must be a whole number/);
  refuses('::/x', /prefix "x" must be a whole number from 0 to 128/);
  refuses('10.20.0.1/16', '"10.20.0.1/16" has host bits set; write 10.20.0.0/16');
  refuses('10.0.0.1/0', '"10.0.0.1/0" has host bits set; write 0.0.0.0/0');
  refuses('2001:db8::1/32', '"2001:db8::1/32" has host bits set; write 2001:db8::/32');
  refuses('fe80::1/10', /write fe80::\/10/);
  refuses('fe80::1%eth0', /zone index/);
});

t.test('parseCidr: host bits at the exact prefix boundary', async (t) => {
  t.same(parseCidr('2001:db8:8000::/33').prefix, 33, 'bit 33 set with /33 is the network');
  t.throws(() => parseCidr('2001:db8:4000::/33'), { message: /host bits set; write 2001:db8::\/33/ });
  t.same(parseCidr('10.0.0.128/25').prefix, 25);
  t.throws(() => parseCidr('10.0.0.64/25'), { message: /write 10\.0\.0\.0\/25/ });
});

t.test('AddressSet matching', async (t) => {
  const set = new AddressSet(['10.20.0.0/16', '192.0.2.10', '2001:db8::/32', '::1', '198.51.100.128/25', '::ffff:203.0.113.0/120']);
  t.equal(set.size, 6);
  const yes = ['10.20.0.0', '10.20.255.255', '10.20.1.2', '192.0.2.10', '2001:db8::', '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', '2001:DB8::1', '::1',
    '198.51.100.128', '198.51.100.255', '::ffff:10.20.1.2', '::FFFF:10.20.1.2', '::ffff:a14:102', '0:0:0:0:0:ffff:10.20.1.2', '203.0.113.77',
    '::ffff:203.0.113.1', '2001:db8::1%eth0'];
  const no = ['10.19.255.255', '10.21.0.0', '192.0.2.11', '192.0.2.9', '2001:db9::', '2001:db7:ffff::', '::2', '::', '198.51.100.127',
    '::ffff:10.21.0.1', '203.0.114.0', '', 'garbage', '10.20.1', '10.20.1.2.3', '10.20.1.256', '2001:db8::g', '::ffff:10.20.1', '2001:db8:::1',
    '10.20.1.2/32', ' 10.20.1.2', '::1 ', '::1%', '::1%a%b', '::1%/x', '10.20.1.2%eth0'];
  for (const a of yes) t.ok(set.has(a), `has ${JSON.stringify(a)}`);
  for (const a of no) t.notOk(set.has(a), `has not ${JSON.stringify(a)}`);
  t.notOk(set.has(undefined as unknown as string), 'a non-string is not an address, and no throw');
  t.notOk(set.has(null as unknown as string));
});

t.test('AddressSet edges: /0, /32, /128, empty, duplicates', async (t) => {
  const all4 = new AddressSet(['0.0.0.0/0']);
  t.ok(all4.has('0.0.0.0') && all4.has('255.255.255.255') && all4.has('::ffff:1.2.3.4'), '0.0.0.0/0 covers IPv4 and mapped');
  t.notOk(all4.has('2001:db8::1'), 'but not IPv6');
  const all6 = new AddressSet(['::/0']);
  t.ok(all6.has('::') && all6.has('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff') && all6.has('2001:db8::1'));
  t.notOk(all6.has('10.0.0.1'), '::/0 does not cover IPv4');
  t.notOk(all6.has('::ffff:10.0.0.1'), 'nor mapped IPv4, which is IPv4');
  const host = new AddressSet(['192.0.2.1/32', '2001:db8::1/128']);
  t.ok(host.has('192.0.2.1') && host.has('2001:db8::1') && host.has('2001:db8:0:0:0:0:0:1'));
  t.notOk(host.has('192.0.2.0') || host.has('192.0.2.2') || host.has('2001:db8::') || host.has('2001:db8::2'));
  const half = new AddressSet(['128.0.0.0/1', '8000::/1']);
  t.ok(half.has('128.0.0.0') && half.has('255.1.1.1') && half.has('8000::') && half.has('ffff::'));
  t.notOk(half.has('127.255.255.255') || half.has('7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'));
  const empty = new AddressSet([]);
  t.equal(empty.size, 0);
  t.notOk(empty.has('10.0.0.1'));
  t.equal(new AddressSet(['10.0.0.0/8', '10.0.0.0/8', '::ffff:10.0.0.0/104']).size, 1, 'duplicates, also as mapped, count once');
  t.throws(() => new AddressSet(['10.0.0.0/8', 'nope']), { message: /"nope" must be an IP address/ }, 'a bad entry refuses the whole set');
});

t.test('AddressSet agrees with node:net BlockList (IPv4 and IPv6, random)', async (t) => {
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
  const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':'));
  const entry = fc.oneof(
    fc.tuple(v4, fc.integer({ min: 0, max: 32 })).map(([a, p]) => ({ a, p, f: 'ipv4' as const })),
    fc.tuple(v6, fc.integer({ min: 0, max: 128 })).map(([a, p]) => ({ a, p, f: 'ipv6' as const })),
  );
  fc.assert(
    fc.property(fc.array(entry, { maxLength: 6 }), fc.array(fc.oneof(v4, v6), { minLength: 1, maxLength: 10 }), (entries, probes) => {
      // One BlockList per family: BlockList matches an IPv4 address against IPv6 ranges
      // covering ::ffff:0:0/96 (so ::/0 holds all of IPv4); AddressSet keeps the families apart.
      const bl = { ipv4: new BlockList(), ipv6: new BlockList() };
      const cidrs: string[] = [];
      for (const e of entries) {
        bl[e.f].addSubnet(e.a, e.p, e.f);
        // Normalised to the network so that parseCidr accepts it.
        cidrs.push(network(e.a, e.p, e.f));
      }
      const set = new AddressSet(cidrs);
      for (const p of probes) {
        const family = isIP(p) === 6 ? 'ipv6' : 'ipv4';
        const expected = bl[family].check(p, family);
        if (set.has(p) !== expected) return false;
      }
      // Random probes rarely fall inside narrow ranges: each entry's own address must match.
      for (const e of entries) if (!set.has(e.a)) return false;
      return true;
    }),
    { seed: 20240513, numRuns: 500 },
  );
  t.pass('500 random sets agree');
  const both = new BlockList();
  both.addSubnet('::', 0, 'ipv6');
  t.ok(both.check('10.0.0.1', 'ipv4'), 'the documented difference: BlockList puts IPv4 inside ::/0');
  t.notOk(new AddressSet(['::/0']).has('10.0.0.1'), 'AddressSet does not');
});

t.test('AddressSet reads addresses exactly as node:net isIP does (random text)', async (t) => {
  const any = new AddressSet(['0.0.0.0/0', '::/0']);
  const chars = fc.constantFrom(...'0123456789abcdefABCDEF:.'.split(''), '1', '0', ':', '.', 'f', '%', 'g', '/');
  const text = fc.oneof(
    fc.array(chars, { maxLength: 40 }).map((c) => c.join('')),
    fc.ipV4().map(String),
    fc.ipV6().map(String),
    fc.ipV4Extended().map(String),
    fc.tuple(fc.ipV6(), fc.array(chars, { maxLength: 3 })).map(([a, c]) => a + c.join('')),
  );
  fc.assert(
    fc.property(text, (s) => any.has(s) === (isIP(s) !== 0)),
    { seed: 4475, numRuns: 20000 },
  );
  t.pass('20000 strings agree');
});

/** `address/prefix` with the host bits cleared, computed independently of the module under test. */
function network(address: string, prefix: number, family: 'ipv4' | 'ipv6'): string {
  if (family === 'ipv4') {
    const n = address.split('.').reduce((acc, o) => acc * 256n + BigInt(o), 0n);
    const masked = prefix === 0 ? 0n : (n >> BigInt(32 - prefix)) << BigInt(32 - prefix);
    return `${[24n, 16n, 8n, 0n].map((s) => (masked >> s) & 255n).join('.')}/${prefix}`;
  }
  const n = address.split(':').reduce((acc, g) => acc * 65536n + BigInt(`0x${g}`), 0n);
  const masked = prefix === 0 ? 0n : (n >> BigInt(128 - prefix)) << BigInt(128 - prefix);
  const groups = [112n, 96n, 80n, 64n, 48n, 32n, 16n, 0n].map((s) => ((masked >> s) & 0xffffn).toString(16));
  return `${groups.join(':')}/${prefix}`;
}
