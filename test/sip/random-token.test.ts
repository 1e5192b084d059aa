import t from 'tap';
import { randomToken } from '../../src/sip/index.js';

t.test('randomToken: 64 bits of hex, never the same twice, across refills of its pool', async (t) => {
  const seen = new Set<string>();
  // 4 KiB of pool is 512 tokens: this crosses several refills.
  for (let i = 0; i < 5000; i++) {
    const tok = randomToken();
    if (!/^[0-9a-f]{16}$/.test(tok)) t.fail(`not 16 hex digits: ${tok}`);
    seen.add(tok);
  }
  t.equal(seen.size, 5000, 'all distinct');
  // Every nibble value shows up in every position: the bytes are used, not zeros.
  for (let pos = 0; pos < 16; pos++) {
    const digits = new Set([...seen].map((s) => s[pos]));
    t.equal(digits.size, 16, `position ${pos} takes all 16 values`);
  }
});
