// The /metrics registry itself: rendered one family per event-loop turn, the same text as
// prom-client's own rendering, the device snapshot computed once per scrape, the runtime metrics.
import t from 'tap';
import { Registry } from 'prom-client';
import { SipCounters, createRegistry, type MetricsSources } from '../../src/metrics/index.js';
import type { DeviceSnapshot } from '../../src/metrics/index.js';

function sources(snapshot: () => Promise<DeviceSnapshot>): MetricsSources {
  return {
    counters: new SipCounters(),
    protocols: ['udp', 'tcp'],
    domains: ['example.test'],
    version: '0.0.0-test',
    transport: {
      stats: { dropped: { oversize: 0, framing: 0, 'connection-limit': 0, timeout: 0, stun: 0, 'send-error': 0, 'tls-handshake': 0, 'ws-handshake': 0 } } as never,
      connectionCount: () => 0,
    },
    transactions: { stats: () => ({ serverInvite: 0, serverNonInvite: 0, clientInvite: 0, clientNonInvite: 0, retransmissionsSent: 0, retransmissionsAbsorbed: 0 }) as never },
    registrations: async () => ({ bindings: 2, byDomain: { 'example.test': 2 } }) as never,
    calls: () => null,
    devices: { snapshot },
  };
}

const SNAPSHOT: DeviceSnapshot = {
  at: 0,
  devices: new Map([['example.test', { door: 1, phone: 1 }]]) as never,
  registrations: null,
  doors: [],
  doorsUnknown: 0,
  guessedDoors: [],
  error: null,
};

/** The series of a text exposition without their values (CPU, lag and memory move between two scrapes). */
function series(text: string): string[] {
  return text.split('\n').map((l) => (l.startsWith('#') || l === '' ? l : l.slice(0, l.lastIndexOf(' '))));
}

t.test('a scrape yields to the event loop between families and renders what prom-client renders', async (t) => {
  let computed = 0;
  const registry = createRegistry(
    sources(async () => {
      computed++;
      return SNAPSHOT;
    }),
  );
  t.teardown(() => registry.close());

  // Timers and I/O callbacks (here: immediates queued while the scrape runs) get turns during it.
  let turns = 0;
  let rendering = true;
  const spin = (): void => {
    if (!rendering) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  const text = await registry.metrics();
  rendering = false;
  const families = registry.getMetricsAsArray().length;
  t.ok(families > 30, `${families} families`);
  t.ok(turns >= families - 1, `the event loop turned ${turns} times during a scrape of ${families} families`);
  t.equal(computed, 1, 'portier_registered_devices and portier_door_stations share one snapshot per scrape');

  const whole = await Registry.prototype.metrics.call(registry);
  t.same(series(text), series(whole), 'same families, series and order as Registry.metrics()');
  t.match(text, /^portier_registered_devices\{domain="example.test",kind="door"\} 1$/m);
  t.match(text, /^portier_registrations_active\{domain="example.test"\} 2$/m);
  t.ok(text.endsWith('\n') && !text.endsWith('\n\n'), 'one final newline');

  computed = 0;
  await Promise.all([registry.metrics(), registry.metrics()]);
  t.equal(computed, 1, 'overlapping scrapes share one snapshot');
  computed = 0;
  await registry.metrics();
  t.equal(computed, 1, 'a later scrape computes a fresh snapshot');
});

t.test('runtime metrics under the names dashboards use, without the costly stddev', async (t) => {
  const registry = createRegistry(sources(async () => SNAPSHOT));
  t.teardown(() => registry.close());
  // Something for the GC histogram and the event-loop monitor to see.
  let junk: unknown[] = [];
  for (let i = 0; i < 200_000; i++) junk.push({ i });
  junk = [];
  await new Promise((r) => setTimeout(r, 60));
  const text = await registry.metrics();
  const value = (name: string): number => {
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return m === null ? NaN : Number(m[1]);
  };
  t.ok(value('process_cpu_user_seconds_total') > 0);
  t.equal(value('process_cpu_seconds_total'), value('process_cpu_user_seconds_total') + value('process_cpu_system_seconds_total'));
  t.ok(value('process_resident_memory_bytes') > 10 * 1024 * 1024);
  t.ok(value('process_start_time_seconds') <= Date.now() / 1000 && value('process_start_time_seconds') > Date.now() / 1000 - 3600);
  if (process.platform === 'linux') {
    t.ok(value('process_open_fds') > 2);
    t.ok(value('process_max_fds') >= value('process_open_fds'));
  }
  t.ok(value('nodejs_heap_size_used_bytes') > 0 && value('nodejs_heap_size_used_bytes') <= value('nodejs_heap_size_total_bytes'));
  t.ok(value('nodejs_external_memory_bytes') >= 0);
  t.ok(value('nodejs_eventloop_lag_p99_seconds') > 0, 'the event-loop monitor ran');
  t.ok(value('nodejs_eventloop_lag_max_seconds') >= value('nodejs_eventloop_lag_p50_seconds'));
  t.match(text, /^nodejs_eventloop_lag_seconds /m);
  t.match(text, /^nodejs_gc_duration_seconds_count\{kind="minor"\} [1-9]/m, 'scavenges observed');
  t.match(text, new RegExp(`^nodejs_version_info\\{version="${process.version}",major="\\d+",minor="\\d+",patch="\\d+"\\} 1$`, 'm'));
  t.notMatch(text, /stddev/, 'no standard deviation: it walked the whole histogram on every scrape');
});

t.test('the event-loop figures cover the interval since the previous scrape', async (t) => {
  const registry = createRegistry(sources(async () => SNAPSHOT));
  t.teardown(() => registry.close());
  const maxOf = (text: string): number => Number(/^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text)?.[1]);
  await new Promise((r) => setTimeout(r, 30));
  const busyUntil = performance.now() + 250;
  while (performance.now() < busyUntil); // the loop held for 250 ms
  await new Promise((r) => setTimeout(r, 30));
  const first = maxOf(await registry.metrics());
  t.ok(first >= 0.2, `the stall is seen: max ${first} s`);
  await new Promise((r) => setTimeout(r, 60));
  const second = maxOf(await registry.metrics());
  t.ok(second < first, `the next scrape starts afresh: max ${second} s`);
});
