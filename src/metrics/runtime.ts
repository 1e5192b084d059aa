/**
 * The Node and process metrics of /metrics, under prom-client's default names
 * (dashboards and alerts written for Node services keep working), in place of
 * prom-client's collectDefaultMetrics(), whose event-loop collector computed
 * the standard deviation of an HDR histogram on every scrape: ~0.5 ms of the
 * main thread on the development machine, during which no SIP message is read.
 *
 * Kept: CPU, start time, RSS, file descriptors, V8 heap, event-loop delay
 * (min, max, mean, p50, p90, p99, and the lag seen by a setImmediate at scrape
 * time), GC durations by kind, the Node version. Left out: the stddev, the
 * per-space heap figures and the active handles/requests/resources lists.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { PerformanceObserver, constants as perfConstants, monitorEventLoopDelay } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

const GC_KINDS: ReadonlyMap<number, string> = new Map([
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR, 'major'],
  [perfConstants.NODE_PERFORMANCE_GC_MINOR, 'minor'],
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL, 'incremental'],
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB, 'weakcb'],
]);

/** The soft limit of open files from /proc/self/limits, or null where there is none (not Linux). */
function maxFds(): number | null {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const n = line === undefined ? NaN : Number(line.split(/\s+/)[3]);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

/** Open file descriptors (the directory's own one left out), or null where /proc is missing. */
function openFds(): number | null {
  try {
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return null;
  }
}

/**
 * Registers the runtime metrics on `register`. Returns a function that stops
 * the event-loop monitor and the GC observer (a registry that is thrown away
 * must not keep them running).
 */
export function registerRuntimeMetrics(register: Registry): () => void {
  const registers = [register];

  const cpu = { user: 0, system: 0 };
  const readCpu = () => {
    const u = process.cpuUsage();
    cpu.user = u.user / 1e6;
    cpu.system = u.system / 1e6;
  };
  new Counter({
    name: 'process_cpu_user_seconds_total',
    help: 'Total user CPU time spent in seconds.',
    registers,
    collect() {
      readCpu();
      this.reset();
      this.inc(cpu.user);
    },
  });
  new Counter({
    name: 'process_cpu_system_seconds_total',
    help: 'Total system CPU time spent in seconds.',
    registers,
    collect() {
      this.reset();
      this.inc(cpu.system);
    },
  });
  new Counter({
    name: 'process_cpu_seconds_total',
    help: 'Total user and system CPU time spent in seconds.',
    registers,
    collect() {
      this.reset();
      this.inc(cpu.user + cpu.system);
    },
  });

  const started = Math.round(Date.now() / 1000 - process.uptime());
  new Gauge({
    name: 'process_start_time_seconds',
    help: 'Start time of the process since unix epoch in seconds.',
    registers,
    collect() {
      this.set(started);
    },
  });
  new Gauge({
    name: 'process_resident_memory_bytes',
    help: 'Resident memory size in bytes.',
    registers,
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  const max = maxFds();
  if (max !== null) {
    new Gauge({
      name: 'process_max_fds',
      help: 'Maximum number of open file descriptors.',
      registers,
      collect() {
        this.set(max);
      },
    });
    new Gauge({
      name: 'process_open_fds',
      help: 'Number of open file descriptors.',
      registers,
      collect() {
        const n = openFds();
        if (n !== null) this.set(n);
      },
    });
  }

  const heap = { total: 0, used: 0, external: 0 };
  new Gauge({
    name: 'nodejs_heap_size_total_bytes',
    help: 'Process heap size from Node.js in bytes.',
    registers,
    collect() {
      const h = getHeapStatistics();
      heap.total = h.total_heap_size;
      heap.used = h.used_heap_size;
      heap.external = h.external_memory;
      this.set(heap.total);
    },
  });
  new Gauge({
    name: 'nodejs_heap_size_used_bytes',
    help: 'Process heap size used from Node.js in bytes.',
    registers,
    collect() {
      this.set(heap.used);
    },
  });
  new Gauge({
    name: 'nodejs_external_memory_bytes',
    help: 'Node.js external memory size in bytes.',
    registers,
    collect() {
      this.set(heap.external);
    },
  });

  // Event-loop delay since the previous scrape. Percentiles walk the histogram only up to the
  // percentile; the standard deviation (left out) walked all of it.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const lag = new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds: how late a setImmediate queued at the previous scrape ran.',
    registers,
    collect() {
      const start = process.hrtime.bigint();
      setImmediate(() => lag.set(Number(process.hrtime.bigint() - start) / 1e9));
    },
  });
  const delayValues = { min: 0, max: 0, mean: 0, p50: 0, p90: 0, p99: 0 };
  new Gauge({
    name: 'nodejs_eventloop_lag_min_seconds',
    help: 'The minimum recorded event loop delay.',
    registers,
    collect() {
      // Read all at once, then start the next interval.
      delayValues.min = delay.count > 0 ? delay.min / 1e9 : 0;
      delayValues.max = delay.count > 0 ? delay.max / 1e9 : 0;
      delayValues.mean = delay.count > 0 ? delay.mean / 1e9 : 0;
      delayValues.p50 = delay.percentile(50) / 1e9;
      delayValues.p90 = delay.percentile(90) / 1e9;
      delayValues.p99 = delay.percentile(99) / 1e9;
      delay.reset();
      this.set(delayValues.min);
    },
  });
  for (const [key, help] of [
    ['max', 'The maximum recorded event loop delay.'],
    ['mean', 'The mean of the recorded event loop delays.'],
    ['p50', 'The 50th percentile of the recorded event loop delays.'],
    ['p90', 'The 90th percentile of the recorded event loop delays.'],
    ['p99', 'The 99th percentile of the recorded event loop delays.'],
  ] as const) {
    new Gauge({
      name: `nodejs_eventloop_lag_${key}_seconds`,
      help,
      registers,
      collect() {
        this.set(delayValues[key]);
      },
    });
  }

  const gc = new Histogram({
    name: 'nodejs_gc_duration_seconds',
    help: 'Garbage collection duration by kind, one of major, minor, incremental or weakcb.',
    labelNames: ['kind'],
    buckets: [0.001, 0.01, 0.1, 1, 2, 5],
    registers,
  });
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const detail = (entry as { detail?: unknown }).detail as { kind?: number } | undefined;
      const kind = GC_KINDS.get(detail?.kind ?? -1) ?? 'unknown';
      gc.observe({ kind }, entry.duration / 1000);
    }
  });
  observer.observe({ entryTypes: ['gc'] });

  const [major = '0', minor = '0', patch = '0'] = process.versions.node.split('.');
  new Gauge({
    name: 'nodejs_version_info',
    help: 'Node.js version info.',
    labelNames: ['version', 'major', 'minor', 'patch'],
    registers,
    collect() {
      this.set({ version: process.version, major, minor, patch }, 1);
    },
  });

  return () => {
    delay.disable();
    observer.disconnect();
  };
}
