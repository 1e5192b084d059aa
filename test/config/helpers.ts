// Shared by the configuration tests.
import type { Test } from 'tap';
import { ConfigError, parseConfig } from '../../src/config/index.js';

export const F = 'conf/x.yaml';
export const MIN = 'domains: [example.test]\nlisten: [udp:127.0.0.1:5060]\n';

/** `security:` with nothing set. */
export const DEFAULT_OVERLOAD = { enabled: true, retryAfter: 2, warmUp: 500 };

export const DEFAULT_SECURITY = {
  rate: { perSource: 100, burst: 400 },
  authFailures: { max: 10, window: 600, ban: 300, maxBan: 86400 },
  exempt: [],
  dropScanners: true,
  relayToLoopback: false,
};

/** The ConfigError thrown by parsing `text` as F, or a test failure. */
export function refusal(t: Test, text: string): ConfigError {
  try {
    parseConfig(text, F);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  t.fail(`expected a ConfigError for:\n${text}`);
  return new ConfigError(F, ['(none)']);
}
