import { createHmac } from 'node:crypto';
import t from 'tap';
import { HmacSha256, INPUT_AT } from '../src/hmac.js';

const reference = (key: Buffer, input: string, encoding: 'base64url' | 'hex'): string => createHmac('sha256', key).update(input).digest(encoding);

const inputs = [
  '',
  'a',
  'call-id-1@10.0.0.1\nfrom-tag',
  'é, ü, 中文, 😀 and a lone surrogate \ud800 end',
  'x'.repeat(63),
  'x'.repeat(64),
  'x'.repeat(65),
  // Around the one-shot path's room (1,024 octets, a UTF-16 unit counting 3): 341 fits, 342 does not.
  'y'.repeat(341),
  'y'.repeat(342),
  '€'.repeat(341),
  '€'.repeat(342),
  'z'.repeat(5000),
];
const keys = [Buffer.alloc(0), Buffer.from('k'), Buffer.alloc(32, 7), Buffer.alloc(64, 0xa5), Buffer.alloc(65, 3), Buffer.alloc(200, 0xff)];

t.test('the same MAC as createHmac, for every key length and input, in hex and base64url', async (t) => {
  let wrong = 0;
  let checked = 0;
  for (const key of keys) {
    const mac = new HmacSha256(key);
    for (const input of inputs) {
      for (const encoding of ['base64url', 'hex'] as const) {
        checked++;
        if (mac.digest(input, encoding) !== reference(key, input, encoding)) {
          wrong++;
          t.fail(`key of ${key.length} octets, input of ${input.length} units, ${encoding}`);
        }
      }
    }
  }
  t.equal(checked, keys.length * inputs.length * 2);
  t.equal(wrong, 0);
});

t.test('a short input after a long one: nothing of the earlier input is hashed', async (t) => {
  const key = Buffer.alloc(32, 9);
  const mac = new HmacSha256(key);
  t.equal(mac.digest('q'.repeat(300), 'hex'), reference(key, 'q'.repeat(300), 'hex'));
  t.equal(mac.digest('short', 'hex'), reference(key, 'short', 'hex'));
  t.equal(mac.digest('', 'hex'), reference(key, '', 'hex'));
});

t.test('the key is copied: changing the caller buffer later changes nothing', async (t) => {
  const key = Buffer.alloc(32, 1);
  const mac = new HmacSha256(key);
  const before = mac.digest('z'.repeat(2000), 'hex'); // the createHmac path keeps the key too
  const shortBefore = mac.digest('abc', 'hex');
  key.fill(2);
  t.equal(mac.digest('z'.repeat(2000), 'hex'), before);
  t.equal(mac.digest('abc', 'hex'), shortBefore);
  t.equal(shortBefore, reference(Buffer.alloc(32, 1), 'abc', 'hex'));
});

t.test('digestScratch(): input the caller wrote into the scratch, kept in part from one MAC to the next', async (t) => {
  const key = Buffer.alloc(32, 5);
  const mac = new HmacSha256(key, 64);
  t.equal(mac.scratch.length, INPUT_AT + 64);
  const head = Buffer.from('realm\n');
  head.copy(mac.scratch, INPUT_AT);
  // The same length twice with other octets (the view of the scratch is reused), then a longer one.
  for (const tail of ['10.0.0.1', '10.0.0.2', '2001:db8::1']) {
    const end = INPUT_AT + head.length + mac.scratch.write(tail, INPUT_AT + head.length, 'latin1');
    t.equal(mac.digestScratch(end, 'hex'), createHmac('sha256', key).update(head).update(tail).digest('hex'), tail);
  }
  t.equal(mac.slow([head, '10.0.0.1'], 'hex'), createHmac('sha256', key).update('realm\n10.0.0.1').digest('hex'), 'slow(): the parts one after the other');
});
