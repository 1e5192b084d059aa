import t from 'tap';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mmapThresholdPinnedAt, retained } from '../../src/transaction/retained.js';

t.test('retained() keeps a copy: later changes to the original do not reach it', async (t) => {
  const original = Buffer.from('SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n');
  const kept = retained(original);
  original.fill(0x78);
  t.equal(kept.toString('latin1'), 'SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n');
});

t.test('kept messages never share octets, across slab boundaries too', async (t) => {
  // 64 or 128 KiB slabs: 600 messages of ~300-4,000 octets fill several.
  const kept: { bytes: Buffer; fill: number; length: number }[] = [];
  for (let i = 0; i < 600; i++) {
    const length = 300 + ((i * 977) % 3700);
    const fill = i % 251;
    kept.push({ bytes: retained(Buffer.alloc(length, fill)), fill, length });
  }
  let wrong = 0;
  for (const k of kept) {
    if (k.bytes.length !== k.length || k.bytes.some((b) => b !== k.fill)) wrong++;
  }
  t.equal(wrong, 0, 'each kept message still holds its own octets');
  t.ok(new Set(kept.map((k) => k.bytes.buffer)).size > 1, 'more than one slab was used');
});

t.test('a message over 4 KiB gets a buffer of its own', async (t) => {
  const big = retained(Buffer.alloc(5000, 0x41));
  t.equal(big.length, 5000);
  t.equal(big.byteOffset, 0);
  t.equal(big.buffer.byteLength, 5000, 'not a view of a slab');
  const small = retained(Buffer.alloc(100, 0x42));
  t.ok(small.buffer.byteLength >= 64 * 1024, 'a small one is a view of a slab');
  t.equal(big.toString('latin1'), 'A'.repeat(5000));
});

t.test('the kept buffers are 128 KiB only where glibc maps them on their own (its mmap threshold pinned at or below)', async (t) => {
  const at = (v: string | undefined): boolean => mmapThresholdPinnedAt(128 * 1024, v === undefined ? {} : { MALLOC_MMAP_THRESHOLD_: v });
  t.notOk(at(undefined), 'not set: glibc moves its threshold');
  t.ok(at('131072'), 'pinned at 128 KiB (the systemd unit, the Docker image)');
  t.ok(at('65536'), 'pinned lower');
  t.notOk(at('262144'), 'pinned higher: 128 KiB would come from the heap');
  t.notOk(at('0'), '0 maps everything, but is not what we asked for');
  t.notOk(at(''), 'empty');
  t.notOk(at('128k'), 'not a number glibc reads');
});

t.test('a process started with the variable keeps its bytes in 128 KiB slabs, one without it in 64 KiB ones', async (t) => {
  const module = JSON.stringify(new URL('../../src/transaction/retained.ts', import.meta.url).href);
  const code = `const m = await import(${module}); console.log(m.KEPT_BUFFER_SIZE, m.retained(Buffer.from('x')).buffer.byteLength)`;
  const run = (threshold: string | undefined): string => {
    const env = { ...process.env };
    if (threshold === undefined) delete env.MALLOC_MMAP_THRESHOLD_;
    else env.MALLOC_MMAP_THRESHOLD_ = threshold;
    return execFileSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', code], { env, cwd: fileURLToPath(new URL('.', import.meta.url)) }).toString().trim();
  };
  t.equal(run('131072'), '131072 131072', 'pinned (the systemd unit, the Docker image, npm start)');
  t.equal(run(undefined), '65536 65536', 'not set');
  t.equal(run('262144'), '65536 65536', 'pinned above 128 KiB');
});
