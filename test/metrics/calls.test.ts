// Calls move the call metrics: an answered call, a busy one and one nobody
// answers, placed with the test UA over real UDP, then scraped over HTTP.
import t from 'tap';
import { parseConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { startServer } from '../../src/server.js';
import { UA } from '../helpers/ua.js';

const config = parseConfig(
  ['domains: [example.test]', 'storage: {type: memory}', 'listen: [udp:127.0.0.1:0]', 'metrics: {listen: 127.0.0.1:0}', 'proxy: {ring-timeout: 1}', 'timers: {t1: 100, t2: 400, t4: 500}', 'log: {level: fatal}'].join('\n'),
  'metrics-calls.yaml',
);

function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(name + (labels ? `{${labels}}` : ' ')) || (labels === '' && l.startsWith(name + ' ')));
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

t.test('answered, busy and unanswered calls are counted; setup and processing times observed', { timeout: 20000 }, async (t) => {
  const server = await startServer(config, createLogger('fatal'));
  t.teardown(() => server.stop());
  const port = server.listening()[0].port;
  const door = await UA.create({ transport: 'udp', user: 'door', domain: 'example.test', proxyPort: port });
  const alice = await UA.create({ transport: 'udp', user: 'alice', domain: 'example.test', proxyPort: port });
  t.teardown(() => {
    door.close();
    alice.close();
  });
  t.equal((await door.register({})).status, 200);
  t.equal((await alice.register({})).status, 200);

  alice.onInvite = () => ({ action: 'answer', ring: true, after: 100 });
  const answered = door.call(alice.aor);
  t.equal((await answered.final(5000)).status, 200, 'answered');
  alice.onInvite = () => ({ action: 'reject', code: 486, ring: true, after: 50 });
  t.equal((await door.call(alice.aor).final(5000)).status, 486, 'busy');
  alice.onInvite = () => ({ action: 'ring' });
  t.equal((await door.call(alice.aor).final(5000)).status, 408, 'nobody answered within the ring timeout');

  const m = server.metricsAddress()!;
  const text = await (await fetch(`http://127.0.0.1:${m.port}/metrics`)).text();
  t.equal(sample(text, 'portier_calls_total', 'result="answered"'), 1, 'one answered');
  t.equal(sample(text, 'portier_calls_total', 'result="busy"'), 1, 'one busy');
  t.equal(sample(text, 'portier_calls_total', 'result="no_answer"'), 1, 'one not answered');
  t.equal(sample(text, 'portier_calls_total', 'result="failed"'), 0, 'none failed');
  t.equal(sample(text, 'portier_calls_active'), 1, 'the answered call is up (no BYE yet)');
  t.equal(sample(text, 'portier_call_setup_seconds_count'), 1, 'one setup time observed');
  const setup = sample(text, 'portier_call_setup_seconds_sum');
  t.ok(setup >= 0.1 && setup < 5, `setup time includes the 100 ms of ringing (${setup} s)`);
  t.equal(sample(text, 'portier_proxy_processing_seconds_count'), 3, 'processing time observed for each forwarded INVITE');
  t.ok(sample(text, 'portier_proxy_processing_seconds_sum') < 1, 'and it is small');
  await answered.bye();
  const after = await (await fetch(`http://127.0.0.1:${m.port}/metrics`)).text();
  t.equal(sample(after, 'portier_calls_active'), 0, 'BYE ends the active call');
});
