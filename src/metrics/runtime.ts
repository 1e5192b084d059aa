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
import { PerformanceObserver, constants as perfConstants, monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { Counter, Gauge, Histogram } from 'prom-client';
import type { PortierRegistry } from './registry.js';

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
 * Registers the runtime metrics on `register`. Values several families read
 * (CPU, heap, event-loop delay) are taken once per scrape (register.perScrape).
 * Returns a function that stops the event-loop monitor and the GC observer (a
 * registry that is thrown away must not keep them running).
 */
export function registerRuntimeMetrics(register: PortierRegistry): () => void {
  const registers = [register];
  const gauge = (name: string, help: string, read: () => number | null): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const v = read();
        if (v !== null) this.set(v);
      },
    });
  };
  const counter = (name: string, help: string, read: () => number): void => {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  };

  const cpu = register.perScrape(() => process.cpuUsage());
  counter('process_cpu_user_seconds_total', 'Total user CPU time spent in seconds.', () => cpu().user / 1e6);
  counter('process_cpu_system_seconds_total', 'Total system CPU time spent in seconds.', () => cpu().system / 1e6);
  counter('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', () => cpu().user / 1e6 + cpu().system / 1e6);

  const started = Math.round(Date.now() / 1000 - process.uptime());
  gauge('process_start_time_seconds', 'Start time of the process since unix epoch in seconds.', () => started);
  gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () => process.memoryUsage.rss());
  const max = maxFds();
  if (max !== null) {
    gauge('process_max_fds', 'Maximum number of open file descriptors.', () => max);
    gauge('process_open_fds', 'Number of open file descriptors.', openFds);
  }

  const heap = register.perScrape(getHeapStatistics);
  gauge('nodejs_heap_size_total_bytes', 'Process heap size from Node.js in bytes.', () => heap().total_heap_size);
  gauge('nodejs_heap_size_used_bytes', 'Process heap size used from Node.js in bytes.', () => heap().used_heap_size);
  gauge('nodejs_external_memory_bytes', 'Node.js external memory size in bytes.', () => heap().external_memory);

  // Event-loop delay since the previous scrape. Percentiles walk the histogram only up to the
  // percentile; the standard deviation (left out) walked all of it.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  // rate() of it is the loop's utilization, the signal overload control acts on.
  counter('portier_event_loop_busy_seconds_total', 'Time the event loop spent running callbacks (not waiting for I/O), in seconds.', () => performance.eventLoopUtilization().active / 1000);
  const lag = new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds: how late a setImmediate queued at the previous scrape ran.',
    registers,
    collect() {
      const start = process.hrtime.bigint();
      setImmediate(() => lag.set(Number(process.hrtime.bigint() - start) / 1e9));
    },
  });
  const delays = register.perScrape(() => {
    const any = delay.count > 0;
    const d = {
      min: any ? delay.min / 1e9 : 0,
      max: any ? delay.max / 1e9 : 0,
      mean: any ? delay.mean / 1e9 : 0,
      p50: delay.percentile(50) / 1e9,
      p90: delay.percentile(90) / 1e9,
      p99: delay.percentile(99) / 1e9,
    };
    delay.reset(); // the next scrape sees the interval from here
    return d;
  });
  for (const [key, help] of [
    ['min', 'The minimum recorded event loop delay.'],
    ['max', 'The maximum recorded event loop delay.'],
    ['mean', 'The mean of the recorded event loop delays.'],
    ['p50', 'The 50th percentile of the recorded event loop delays.'],
    ['p90', 'The 90th percentile of the recorded event loop delays.'],
    ['p99', 'The 99th percentile of the recorded event loop delays.'],
  ] as const) {
    gauge(`nodejs_eventloop_lag_${key}_seconds`, help, () => delays()[key]);
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
      gc.observe({ kind: GC_KINDS.get(detail?.kind ?? -1) ?? 'unknown' }, entry.duration / 1000);
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
