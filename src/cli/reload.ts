/**
 * SIGHUP: the configuration file is read again and what can change live is
 * applied; every other change is named in one warning and waits for a
 * restart (the running value stays, so that the server never mixes two
 * configurations).
 *
 *   planReload(running, next)   which keys changed, which apply live, the effective config
 *   reloadConfig(...)           load, plan, apply through server.reload(effective), log
 *
 * A file that does not load, or a certificate or users file that cannot be
 * read, changes nothing: the reason is logged and the server goes on as it was.
 */
import { ConfigError, loadConfig, type Config } from '../config/index.js';
import { deepFreeze } from '../config/schema.js';
import type { Logger } from '../log.js';

/**
 * Keys (and whole sections) applied without a restart, as written in the
 * YAML. The users file and the TLS files are read again on every reload even
 * when their paths did not change (a renewed certificate at the same path).
 */
export const LIVE_KEYS: readonly string[] = Object.freeze([
  'log.level',
  'auth.users',
  'auth.trusted',
  'security',
  'limits.headers',
  'limits.line-length',
  'proxy.ring-timeout',
  'tls.cert',
  'tls.key',
  'tls.ca',
  'tls.min-version',
  'groups',
  'aliases',
  'policy',
  'routes',
  'push.call-timeout',
  'push.response',
]);

/** Values compared whole, not key by key. */
const ATOMIC = new Set(['metrics.listen']);

export interface ReloadPlan {
  /** `next` with every restart-only key set back to its running value: what the server applies. */
  effective: Config;
  /** Live keys (as in LIVE_KEYS) whose value changed. */
  live: string[];
  /** Changed keys that need a restart, e.g. `listen`, `storage.type`, `limits.connections`. */
  restart: string[];
}

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Paths (Config property names) whose values differ. */
function differences(a: unknown, b: unknown, path: string[], out: string[][]): void {
  const shown = path.map(kebab).join('.');
  if (isRecord(a) && isRecord(b) && !ATOMIC.has(shown)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) differences(a[k], b[k], [...path, k], out);
    return;
  }
  if (JSON.stringify(a) !== JSON.stringify(b)) out.push(path);
}

function liveKey(shown: string): string | undefined {
  return LIVE_KEYS.find((k) => shown === k || shown.startsWith(k + '.'));
}

export function planReload(running: Config, next: Config): ReloadPlan {
  const paths: string[][] = [];
  const { demo: _d, source: _s, ...a } = running;
  const { demo: _d2, source: _s2, ...b } = next;
  differences(a, b, [], paths);
  const live = new Set<string>();
  const restart: string[] = [];
  const effective = structuredClone(next) as Config;
  for (const path of paths) {
    const shown = path.map(kebab).join('.');
    const key = liveKey(shown);
    if (key !== undefined) {
      live.add(key);
      continue;
    }
    restart.push(shown);
    // Keep the running value: e.g. a new storage.type must not half-apply.
    let into = effective as unknown as Record<string, unknown>;
    let from = running as unknown as Record<string, unknown>;
    for (const k of path.slice(0, -1)) {
      into = into[k] as Record<string, unknown>;
      from = from[k] as Record<string, unknown>;
    }
    const last = path[path.length - 1];
    into[last] = structuredClone(from[last]);
  }
  return { effective: deepFreeze(effective), live: [...live], restart };
}

export interface Reloadable {
  reload?(next?: Config): void;
}

export interface ReloadResult {
  ok: boolean;
  /** The configuration now running (the old one when the reload failed). */
  config: Config;
  live: string[];
  restart: string[];
}

/**
 * Reads the configuration file of `running` again (or what `load` returns)
 * and applies it to `server`. Never throws: failures are logged (error) and
 * leave the server as it was.
 */
export function reloadConfig(server: Reloadable, running: Config, log: Logger, load: () => Config = () => loadConfig(running.source)): ReloadResult {
  const failed = (): ReloadResult => ({ ok: false, config: running, live: [], restart: [] });
  let next: Config;
  try {
    next = load();
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems : [err instanceof Error ? err.message : String(err)];
    log.error({ config: running.source, problems }, `cannot reload the configuration: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}; everything stays as it was`);
    return failed();
  }
  const plan = planReload(running, next);
  try {
    server.reload?.(plan.effective);
  } catch (err) {
    log.error({ config: running.source, err: err instanceof Error ? err.message : String(err) }, 'cannot reload the configuration; everything stays as it was');
    return failed();
  }
  for (const key of plan.restart) {
    log.warn({ config: running.source, key }, `${key} changed: it needs a restart to take effect (the running value stays until then)`);
  }
  log.info({ config: running.source, changed: plan.live, restartNeeded: plan.restart }, 'configuration reloaded');
  return { ok: true, config: plan.effective, live: plan.live, restart: plan.restart };
}
