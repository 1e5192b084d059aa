import { formatPath, type Issue } from './schema.js';

/**
 * A configuration that cannot be used. `message` is one line:
 * `FILE: KEY.PATH: reason` for a bad value, `FILE:LINE:COL: reason` for YAML syntax,
 * `FILE: reason` for the file as a whole. `problems` lists every problem found, in the same form.
 */
export class ConfigError extends Error {
  readonly problems: readonly string[];

  constructor(
    readonly source: string,
    problems: string[],
  ) {
    super(problems[0] ?? `${source}: invalid configuration`);
    this.name = 'ConfigError';
    this.problems = Object.freeze([...problems]);
  }

  static fromIssues(source: string, issues: Issue[]): ConfigError {
    return new ConfigError(
      source,
      issues.map((i) => {
        const path = formatPath(i.path);
        return path === '' ? `${source}: ${i.reason}` : `${source}: ${path}: ${i.reason}`;
      }),
    );
  }
}

/** Why a file could not be read, in words: "no such file", "permission denied", ... */
export function unreadableReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory, not a file';
    default:
      return e.message;
  }
}
