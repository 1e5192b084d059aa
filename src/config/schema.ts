/**
 * A small declarative validator for configuration sections.
 *
 * A `Field<T>` turns one raw YAML value into a validated `T` (and back, for
 * `portier check`). `section({...})` combines fields keyed by their YAML
 * (kebab-case) names into an object with camelCase keys, refuses unknown keys,
 * fills defaults and runs cross-field checks. Problems are collected as
 * `Issue`s ({path, reason}) so that one run reports all of them.
 *
 * Adding a config section = writing `section({ 'some-key': integer({...}), ... })`
 * in src/config/index.ts and a matching interface in src/config/types.ts.
 */

export type Path = ReadonlyArray<string | number>;

export interface Issue {
  path: Path;
  reason: string;
}

/** `listen[1]`, `limits.message-size`, `` (root). */
export function formatPath(path: Path): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out;
}

/** Thrown by a field's `parse` for a problem with the value at its own path. */
export class Invalid extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'Invalid';
  }
}

/** Thrown by a composite field whose children already reported their issues. */
class Reported extends Error {
  constructor() {
    super('already reported');
  }
}

export interface Ctx {
  issues: Issue[];
}

export interface Field<T> {
  /** Validate and normalise `value` (never undefined here). Throw `Invalid` to refuse it. */
  parse(value: unknown, path: Path, ctx: Ctx): T;
  /** Plain data for YAML output. */
  format(value: T): unknown;
  /** Value used when the key is absent; `undefined` means the key is required. */
  default?: () => T;
  /** Appended to "required" when the key is missing, e.g. "e.g. [example.test]". */
  example?: string;
}

export type FieldType<F> = F extends Field<infer T> ? T : never;

export const FAILED: unique symbol = Symbol('failed');

/** Run a field, recording its problems in ctx. */
export function run<T>(field: Field<T>, value: unknown, path: Path, ctx: Ctx): T | typeof FAILED {
  try {
    return field.parse(value, path, ctx);
  } catch (err) {
    if (err instanceof Invalid) {
      ctx.issues.push({ path, reason: err.reason });
      return FAILED;
    }
    if (err instanceof Reported) return FAILED;
    throw err;
  }
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value);
  if (value instanceof Map) return 'a mapping';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return typeof value;
}

/** "a, b, c or d" */
export function alternatives(items: readonly string[], word = 'or'): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} ${word} ${items[items.length - 1]}`;
}

// ---------------------------------------------------------------- leaves

export function integer(opts: { min: number; max: number; default?: number }): Field<number> {
  const reason = `must be an integer between ${opts.min} and ${opts.max}`;
  return {
    parse(value) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < opts.min || value > opts.max) {
        throw new Invalid(reason);
      }
      return value;
    },
    format: (v) => v,
    default: opts.default === undefined ? undefined : () => opts.default as number,
  };
}

/** A number of seconds (fractions allowed). */
export function seconds(opts: { min: number; max: number; default?: number }): Field<number> {
  const reason = `must be a number of seconds between ${opts.min} and ${opts.max}`;
  return {
    parse(value) {
      if (typeof value !== 'number' || !Number.isFinite(value) || value < opts.min || value > opts.max) {
        throw new Invalid(reason);
      }
      return value;
    },
    format: (v) => v,
    default: opts.default === undefined ? undefined : () => opts.default as number,
  };
}

export function boolean(opts: { default?: boolean } = {}): Field<boolean> {
  return {
    parse(value) {
      if (typeof value !== 'boolean') throw new Invalid('must be true or false');
      return value;
    },
    format: (v) => v,
    default: opts.default === undefined ? undefined : () => opts.default as boolean,
  };
}

/** One of a fixed set of strings, matched case-insensitively and stored in the set's spelling. */
export function oneOf<T extends string>(values: readonly T[], opts: { default?: T } = {}): Field<T> {
  const reason = `must be one of ${alternatives(values)}`;
  return {
    parse(value) {
      if (typeof value !== 'string') throw new Invalid(reason);
      const found = values.find((v) => v.toLowerCase() === value.toLowerCase());
      if (found === undefined) throw new Invalid(`${reason} (got ${describe(value)})`);
      return found;
    },
    format: (v) => v,
    default: opts.default === undefined ? undefined : () => opts.default as T,
  };
}

/** A string turned into T by `convert`, which throws Invalid to refuse it. */
export function text<T>(opts: {
  convert: (s: string) => T;
  format: (v: T) => unknown;
  expected: string;
  default?: () => T;
  example?: string;
}): Field<T> {
  return {
    parse(value) {
      if (typeof value !== 'string') throw new Invalid(`must be ${opts.expected} (got ${describe(value)})`);
      return opts.convert(value);
    },
    format: opts.format,
    default: opts.default,
    example: opts.example,
  };
}

// ---------------------------------------------------------------- lists

export function list<T>(
  item: Field<T>,
  opts: {
    min?: number;
    default?: () => T[];
    example?: string;
    /** Called with the valid items when every item parsed; report problems with `report(index, reason)`. */
    check?: (items: T[], report: (index: number, reason: string) => void) => void;
  } = {},
): Field<T[]> {
  const min = opts.min ?? 0;
  return {
    parse(value, path, ctx) {
      if (!Array.isArray(value)) {
        throw new Invalid(`must be a list${opts.example ? ` (e.g. ${opts.example})` : ''}, not ${describe(value)}`);
      }
      if (value.length < min) {
        throw new Invalid(min === 1 ? 'must not be empty' : `must have at least ${min} entries`);
      }
      const out: T[] = [];
      let failed = false;
      value.forEach((v, i) => {
        const r = run(item, v, [...path, i], ctx);
        if (r === FAILED) failed = true;
        else out.push(r);
      });
      if (failed) throw new Reported();
      if (opts.check) {
        const before = ctx.issues.length;
        opts.check(out, (index, reason) => ctx.issues.push({ path: [...path, index], reason }));
        if (ctx.issues.length > before) throw new Reported();
      }
      return out;
    },
    format: (v) => v.map((x) => item.format(x)),
    default: opts.default,
    example: opts.example,
  };
}

// ---------------------------------------------------------------- sections

type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Fields = Record<string, Field<any>>;

export type SectionType<F extends Fields> = {
  [K in keyof F & string as Camel<K>]: FieldType<F[K]>;
};

export function camel(key: string): string {
  return key.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}

function unknownKeyReason(key: string, known: string[]): string {
  const norm = key.toLowerCase().replace(/_/g, '-');
  const close = known
    .map((k) => ({ k, d: k === norm || camel(k).toLowerCase() === key.toLowerCase() ? 0 : levenshtein(norm, k) }))
    .filter((x) => x.d <= Math.max(1, Math.floor(x.k.length / 4)))
    .sort((x, y) => x.d - y.d)[0];
  if (close) return `unknown key (did you mean "${close.k}"?)`;
  return `unknown key (expected ${alternatives(known)})`;
}

export interface SectionOptions<T> {
  /** Cross-field checks once every field is valid; report with the YAML key of the field at fault. */
  check?: (value: T, report: (key: string, reason: string) => void) => void;
}

/** Raw YAML mappings arrive as Map (parsed with mapAsMap) or, from code, as plain objects. */
function entries(value: unknown): Array<[unknown, unknown]> | undefined {
  if (value instanceof Map) return [...value.entries()];
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.entries(value);
  }
  return undefined;
}

export function section<F extends Fields>(fields: F, opts: SectionOptions<SectionType<F>> = {}): Field<SectionType<F>> {
  const known = Object.keys(fields);
  const field: Field<SectionType<F>> = {
    parse(value, path, ctx) {
      // `limits:` with every child commented out is null in YAML: treat as empty.
      const pairs = value === null ? [] : entries(value);
      if (pairs === undefined) {
        const what = path.length === 0 ? 'the top level must be a mapping' : 'must be a mapping';
        throw new Invalid(`${what} with the keys ${alternatives(known, 'and')}, not ${describe(value)}`);
      }
      const out: Record<string, unknown> = {};
      const seen = new Set<string>();
      let failed = false;
      for (const [k, v] of pairs) {
        if (typeof k !== 'string') {
          ctx.issues.push({ path, reason: `keys must be plain names, not ${describe(k)}` });
          failed = true;
          continue;
        }
        if (!Object.prototype.hasOwnProperty.call(fields, k)) {
          ctx.issues.push({ path: [...path, k], reason: unknownKeyReason(k, known) });
          failed = true;
          continue;
        }
        seen.add(k);
        const r = run(fields[k], v, [...path, k], ctx);
        if (r === FAILED) failed = true;
        else out[camel(k)] = r;
      }
      for (const k of known) {
        if (seen.has(k)) continue;
        const f = fields[k];
        if (f.default) out[camel(k)] = f.default();
        else {
          ctx.issues.push({ path: [...path, k], reason: `required${f.example ? ` (e.g. ${k}: ${f.example})` : ''}` });
          failed = true;
        }
      }
      if (failed) throw new Reported();
      const result = out as SectionType<F>;
      if (opts.check) {
        const before = ctx.issues.length;
        opts.check(result, (key, reason) => ctx.issues.push({ path: [...path, key], reason }));
        if (ctx.issues.length > before) throw new Reported();
      }
      return result;
    },
    format(value) {
      const out: Record<string, unknown> = {};
      const v = value as Record<string, unknown>;
      for (const k of known) out[k] = fields[k].format(v[camel(k)]);
      return out;
    },
  };
  if (known.every((k) => fields[k].default)) {
    field.default = () => field.parse(null, [], { issues: [] });
  }
  return field;
}

/** Recursively Object.freeze plain objects and arrays. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as object)) deepFreeze(v);
  }
  return value;
}

// ---------------------------------------------------------------- records

/**
 * A mapping whose keys are names the administrator chooses (ring groups,
 * aliases): every value parsed by `item`, keys checked by `key` (throw
 * Invalid to refuse one). Insertion order is kept.
 */
export function record<T>(item: Field<T>, opts: { key?: (k: string) => void; default?: () => Record<string, T> } = {}): Field<Record<string, T>> {
  return {
    parse(value, path, ctx) {
      const pairs = value === null ? [] : entries(value);
      if (pairs === undefined) throw new Invalid(`must be a mapping of names to entries, not ${describe(value)}`);
      const out: Record<string, T> = Object.create(null) as Record<string, T>;
      let failed = false;
      for (const [k, v] of pairs) {
        // YAML reads `100:` as a number; a dialled alias is a name all the same.
        const name = typeof k === 'number' ? String(k) : k;
        if (typeof name !== 'string') {
          ctx.issues.push({ path, reason: `keys must be plain names, not ${describe(k)}` });
          failed = true;
          continue;
        }
        try {
          opts.key?.(name);
        } catch (err) {
          if (!(err instanceof Invalid)) throw err;
          ctx.issues.push({ path: [...path, name], reason: err.reason });
          failed = true;
          continue;
        }
        const r = run(item, v, [...path, name], ctx);
        if (r === FAILED) failed = true;
        else out[name] = r;
      }
      if (failed) throw new Reported();
      return out;
    },
    format(value) {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) out[k] = item.format(v);
      return out;
    },
    default: opts.default,
  };
}
