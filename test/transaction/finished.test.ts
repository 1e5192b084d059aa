import t from 'tap';
import { prng } from './helpers.js';
import { FinishedTable } from '../../src/transaction/finished.js';
import type { Destination } from '../../src/transport/index.js';

const dest = (port: number): Destination => ({ protocol: 'udp', address: '127.0.0.1', port });

t.test('finds what was added, until its due time, and answers the same octets to the same place', async (t) => {
  const table = new FinishedTable();
  const d = dest(5060);
  const answer = Buffer.from('SIP/2.0 200 OK\r\nContent-Length: 3\r\n\r\n\u00e9\u00ff\u0000', 'latin1');
  t.ok(table.add('z9hG4bKa 10.0.0.1:5060 REGISTER', answer, d, 1000));
  t.equal(table.size, 1);
  const found = table.find('z9hG4bKa 10.0.0.1:5060 REGISTER', 999);
  t.ok(found !== null && found.bytes.equals(answer), 'octet for octet, beyond ASCII too');
  t.equal(found?.dest, d);
  t.equal(table.find('z9hG4bKa 10.0.0.1:5060 OPTIONS', 999), null, 'another method');
  t.equal(table.find('z9hG4bKa 10.0.0.1:5060 REGISTE', 999), null, 'a prefix');
  t.equal(table.find('z9hG4bKa 10.0.0.1:5060 REGISTER', 1001), null, 'past its due, even before expire()');
  t.equal(table.expire(999), 0);
  t.equal(table.expire(1000), 1);
  t.equal(table.size, 0);
  t.equal(table.find('z9hG4bKa 10.0.0.1:5060 REGISTER', 0), null);
});

t.test('a key beyond latin1 is refused, not mangled', async (t) => {
  const table = new FinishedTable();
  t.notOk(table.add('z9hG4bK\u20ac 10.0.0.1:5060 BYE', Buffer.from('x'), dest(1), 10));
  t.equal(table.size, 0);
  t.ok(table.add('z9hG4bK\u00e9 10.0.0.1:5060 BYE', Buffer.from('x'), dest(1), 10), 'latin1 is fine');
  t.equal(table.find('z9hG4bK\u20ac 10.0.0.1:5060 BYE', 0), null);
  t.ok(table.find('z9hG4bK\u00e9 10.0.0.1:5060 BYE', 0));
});

t.test('against a Map: random adds and expiries through growth, wrap-around and index deletions', async (t) => {
  const table = new FinishedTable();
  const reference = new Map<string, { answer: Buffer; due: number; dest: Destination }>();
  const order: string[] = [];
  const rnd = prng(7);
  let now = 0;
  let mismatches = 0;
  let checks = 0;
  let n = 0;
  for (let step = 0; step < 40_000; step++) {
    now += rnd() * 2;
    if (rnd() < 0.55) {
      // Keys that collide in their low bits now and then: short, similar ones.
      const key = `z9hG4bK${(n++ * 7919) % 100_003} 127.0.0.${n % 7}:${5060 + (n % 3)} ${rnd() < 0.5 ? 'BYE' : 'REGISTER'}`;
      if (reference.has(key)) continue;
      // Answers of 1 octet to 9 KB: the byte ring wraps and grows.
      const size = rnd() < 0.02 ? 4000 + Math.floor(rnd() * 5000) : 1 + Math.floor(rnd() * 600);
      const answer = Buffer.alloc(size, n & 0xff);
      if (size >= 4) answer.writeUInt32LE(n, 0);
      const due = now + (step < 20_000 ? 300 : 4000); // then ~2,000 live: the records and the octets grow
      const d = dest(n);
      if (!table.add(key, answer, d, due)) mismatches++;
      reference.set(key, { answer, due, dest: d });
      order.push(key);
    } else {
      const dropped = table.expire(now);
      let expected = 0;
      while (order.length > 0 && reference.get(order[0])!.due <= now) {
        reference.delete(order.shift()!);
        expected++;
      }
      if (dropped !== expected) mismatches++;
    }
    if (step % 97 === 0) {
      for (const [key, v] of reference) {
        if (v.due < now) continue; // past its due: find() no longer answers, expire() has not run yet
        checks++;
        const f = table.find(key, now);
        if (f === null || !f.bytes.equals(v.answer) || f.dest !== v.dest) mismatches++;
      }
      if (table.size !== reference.size) mismatches++;
      if (table.find(`z9hG4bKnot-there ${step}`, now) !== null) mismatches++;
    }
  }
  t.equal(mismatches, 0, `${checks} lookups against the reference`);
  t.ok(checks > 10_000);
  t.ok(table.chunkCount > 1, 'the octets took several chunks');
  t.equal(table.expire(now + 10_000), reference.size, 'the rest ends in order');
  t.equal(table.chunkCount, 1, 'every chunk let go but the newest');
});

t.test('an answer bigger than a chunk gets one of its own', async (t) => {
  const table = new FinishedTable();
  const big = Buffer.alloc(1_500_000, 0x61);
  t.ok(table.add('a h:1 MESSAGE', Buffer.from('small'), dest(1), 10));
  t.ok(table.add('b h:1 MESSAGE', big, dest(2), 20));
  t.ok(table.add('c h:1 MESSAGE', Buffer.from('after'), dest(3), 30));
  t.ok(table.find('b h:1 MESSAGE', 0)?.bytes.equals(big));
  t.equal(table.find('c h:1 MESSAGE', 0)?.bytes.toString(), 'after');
  t.equal(table.chunkCount, 3);
  t.equal(table.expire(20), 2);
  t.equal(table.chunkCount, 1);
  t.equal(table.find('c h:1 MESSAGE', 25)?.bytes.toString(), 'after');
});

t.test('clear() drops everything and the table is usable again', async (t) => {
  const table = new FinishedTable();
  for (let i = 0; i < 5000; i++) table.add(`k${i} h:1 BYE`, Buffer.alloc(300, i & 0xff), dest(i), 100);
  t.equal(table.size, 5000);
  t.equal(table.find('k4999 h:1 BYE', 0)?.bytes[0], 4999 & 0xff);
  table.clear();
  t.equal(table.size, 0);
  t.equal(table.find('k4999 h:1 BYE', 0), null);
  t.ok(table.add('again h:1 BYE', Buffer.from('ok'), dest(1), 5));
  t.equal(table.find('again h:1 BYE', 0)?.bytes.toString(), 'ok');
  t.equal(table.expire(5), 1);
});
