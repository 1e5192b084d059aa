// The Call-ID hash that says which worker owns a message (src/sip/owner.ts):
// the same for every spelling of one Call-ID, read from the head only.
import t from 'tap';
import { callIdHash, ownerOf } from '../../src/sip/index.js';

const msg = (headers: string[], body = '') => Buffer.from(['INVITE sip:a@example.test SIP/2.0', ...headers, '', body].join('\r\n'), 'latin1');

t.test('one Call-ID hashes the same however it is written', async (t) => {
  const h = callIdHash(msg(['Via: SIP/2.0/UDP h;branch=z9hG4bK1', 'Call-ID: abc@host', 'CSeq: 1 INVITE']));
  t.ok(h >= 0, 'found');
  t.equal(callIdHash(msg(['i: abc@host'])), h, 'compact form');
  t.equal(callIdHash(msg(['CALL-ID:abc@host'])), h, 'upper case, no space');
  t.equal(callIdHash(msg(['call-id \t:   abc@host  \t'])), h, 'spaces and tabs around the colon and after the value');
  t.equal(callIdHash(Buffer.from('SIP/2.0 200 OK\r\nCall-ID: abc@host\r\n\r\n')), h, 'in a response');
  t.not(callIdHash(msg(['Call-ID: abd@host'])), h, 'another Call-ID, another hash');
});

t.test('headers that only look like it are not it', async (t) => {
  t.equal(callIdHash(msg(['Call-Info: <http://x>', 'In-Reply-To: x', 'Identity: y'])), -1, 'Call-Info, In-Reply-To, Identity');
  t.equal(callIdHash(msg(['From: <sip:a@b>'], 'Call-ID: in-the-body\r\n')), -1, 'a Call-ID in the body does not count');
  t.equal(callIdHash(Buffer.from('garbage')), -1, 'no head at all');
  t.equal(callIdHash(Buffer.alloc(0)), -1, 'empty');
  t.equal(callIdHash(msg(['Call-ID: x']), 10), -1, 'beyond the head limit');
});

t.test('ownerOf spreads Call-IDs over the workers', async (t) => {
  const counts = [0, 0, 0];
  for (let i = 0; i < 3000; i++) counts[ownerOf(msg([`Call-ID: ${i}-${i * 7919}@door.example`]), 3, 0)]++;
  t.ok(counts.every((c) => c > 800), `3000 Call-IDs over 3 workers: ${counts.join(', ')}`);
  t.equal(ownerOf(msg(['From: <sip:a@b>']), 3, 2), 2, 'no Call-ID: the fallback');
});
