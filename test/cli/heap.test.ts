import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const root = fileURLToPath(new URL('../../', import.meta.url));
const OPTION = '--initial-old-space-size=128';

t.test('the portier executable, npm start and the Docker image start node with the same heap option', async (t) => {
  const shebang = readFileSync(root + 'src/cli/main.ts', 'utf8').split('\n')[0];
  t.equal(shebang, `#!/usr/bin/env -S node ${OPTION}`, 'the executable (what the systemd unit runs)');
  const pkg = JSON.parse(readFileSync(root + 'package.json', 'utf8')) as { scripts: Record<string, string> };
  t.match(pkg.scripts.start, new RegExp(`\\bnode ${OPTION} dist/src/cli/main\\.js$`), 'npm start');
  t.match(readFileSync(root + 'Dockerfile', 'utf8'), `ENTRYPOINT ["node", "${OPTION}", "/app/dist/src/cli/main.js"]`, 'the Docker image');
});

// What the option does, seen from outside: 72 MiB of objects kept alive make V8 run a full
// collection (Mark-Compact, in --trace-gc) with its default limits, and none under the 128 MiB the
// option sets. The child is started as the shebang starts it (env -S splits the line).
t.test('started as the shebang says, node runs no full collection below 128 MiB', async (t) => {
  const shebang = readFileSync(root + 'src/cli/main.ts', 'utf8').split('\n')[0].slice(2).split(' ');
  // Then short-lived garbage, so that a marking V8 started has the time to finish (a process that
  // exits first prints no Mark-Compact: plain node did so in 1 of 15 runs without it).
  const code =
    "const keep = []; for (let i = 0; i < 4e5; i++) keep.push({ a: i, b: [i, i], c: 'x' + i }); " +
    "let g; for (let i = 0; i < 3e6; i++) g = { i }; console.log('kept', keep.length, g.i)";
  const fullCollections = (command: string[]): number => {
    const out = execFileSync(command[0], [...command.slice(1), '--trace-gc', '-e', code], { maxBuffer: 16 << 20 }).toString();
    t.match(out, /kept 400000/, `${command.join(' ')}: the workload ran`);
    return out.split('\n').filter((l) => /Mark-Compact/.test(l)).length;
  };
  t.ok(fullCollections([process.execPath]) >= 1, 'plain node: at least one full collection');
  t.equal(fullCollections(shebang), 0, 'as the executable starts node: none');
});
