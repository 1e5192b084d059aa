// What the `portier user` and `portier provision` commands share.

import { ConfigError, loadConfig, type Config } from '../config/index.js';

/** A failure already worth one line on stderr, exit 1. */
export class Failure extends Error {}

/** Loads the config (the users file may be missing yet); a config error becomes a Failure. */
export function readConfig(path: string): Config {
  try {
    return loadConfig(path, { usersMayBeMissing: true });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const more = err.problems.length - 1;
    throw new Failure(`${err.message}${more > 0 ? ` (and ${more} more; see: portier check --config ${path})` : ''}`);
  }
}
