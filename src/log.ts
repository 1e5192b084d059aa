/**
 * Logging: pino, one JSON object per line on stdout (journald and `docker logs`
 * capture it; pipe through `npx pino-pretty` to read it by eye).
 *
 * Credentials are never logged: any key named in REDACTED_KEYS (compared
 * case-insensitively, at any depth of a logged object or of child-logger
 * bindings) has its value replaced by "[Redacted]". Raw SIP text is not
 * scanned; run it through `redactSipText` before logging it.
 */
import pino from 'pino';
import type { LogLevel } from './config/types.js';

export type Logger = pino.Logger;

export const REDACTED_KEYS: readonly string[] = ['authorization', 'proxy-authorization', 'password', 'nonce', 'ha1'];

export const REDACTED = '[Redacted]';

const redactedSet = new Set(REDACTED_KEYS);
const MAX_DEPTH = 8;

function isRedactedKey(key: string): boolean {
  return redactedSet.has(key.toLowerCase());
}

/**
 * A copy of `value` with every redacted key's value replaced; unchanged parts
 * are shared, and `value` itself is never modified.
 */
export function redact(value: unknown, depth = 0, seen: WeakSet<object> = new WeakSet()): unknown {
  if (value === null || typeof value !== 'object' || depth > MAX_DEPTH) return value;
  if (seen.has(value)) return value;
  seen.add(value);
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((v, i) => {
      const r = redact(v, depth + 1, seen);
      if (r !== v) (copy ??= [...value])[i] = r;
    });
    return copy ?? value;
  }
  if (value instanceof Map) {
    let copy: Map<unknown, unknown> | undefined;
    for (const [k, v] of value) {
      const r = typeof k === 'string' && isRedactedKey(k) ? REDACTED : redact(v, depth + 1, seen);
      if (r !== v) (copy ??= new Map(value)).set(k, r);
    }
    return copy ?? value;
  }
  const proto = Object.getPrototypeOf(value);
  const plain = proto === Object.prototype || proto === null;
  if (!plain && !(value instanceof Error)) return value;
  let copy: Record<string, unknown> | undefined;
  for (const key of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[key];
    const r = isRedactedKey(key) ? REDACTED : redact(v, depth + 1, seen);
    if (r !== v) {
      if (!copy) {
        if (!plain) {
          // An Error with a secret property: log a plain copy that keeps what pino's err serializer shows.
          const e = value as Error;
          copy = { type: e.name, message: e.message, stack: e.stack, ...(value as object) };
        } else {
          copy = { ...(value as Record<string, unknown>) };
        }
      }
      copy[key] = r;
    }
  }
  return copy ?? value;
}

const SIP_CREDENTIAL_LINE = /^((?:proxy-)?authorization[ \t]*:)[^\r\n]*/gim;

/** Mask Authorization and Proxy-Authorization header values in raw SIP text. */
export function redactSipText(text: string): string {
  return text.replace(SIP_CREDENTIAL_LINE, `$1 ${REDACTED}`);
}

// `sip:user:password@host` (RFC 3261 §19.1.1 allows it, deprecated): the password goes.
const URI_PASSWORD = /^((?:sips?):[^:@;?>]*):[^@;?>]*@/i;
// RFC 8599 and Linphone push parameters carry the device's push token.
const PUSH_PARAM = /;(?:pn-[^;?=>]*|app-id)(?:=[^;?>]*)?/gi;

/** A Contact URI fit for a log line: no password, no push token, no URI headers. */
export function safeContact(uri: string): string {
  const q = uri.indexOf('?');
  return (q === -1 ? uri : uri.slice(0, q)).replace(URI_PASSWORD, '$1@').replace(PUSH_PARAM, '');
}

/** What a registration line shows of a binding (src/registrar's Binding, structurally: log.ts imports no layer). */
export interface LoggedBinding {
  readonly aor: string;
  readonly contact: string;
  readonly expiresAt: number;
  readonly source: { readonly protocol: string; readonly address: string; readonly port: number };
  readonly userAgent: string | null;
  readonly pushParams: Readonly<Record<string, string>>;
}

export type RegistrationChange = 'added' | 'refreshed' | 'removed' | 'expired';

/**
 * One info line per registration change: `"msg":"registration"` with the
 * change, the AOR, the contact (safeContact), the seconds left, the
 * transport and source, the User-Agent, whether the device gave push
 * parameters, and for a removal its cause (unregistered, replaced, evicted,
 * removed).
 */
export function logRegistration(log: Logger, change: RegistrationChange, b: LoggedBinding, cause?: string, now = Date.now()): void {
  if (!log.isLevelEnabled('info')) return;
  const ended = change === 'removed' || change === 'expired';
  const src = b.source;
  log.info(
    {
      change,
      aor: b.aor,
      contact: safeContact(b.contact),
      expires: ended ? 0 : Math.max(0, Math.round((b.expiresAt - now) / 1000)),
      transport: src.protocol,
      source: `${src.address.includes(':') ? `[${src.address}]` : src.address}:${src.port}`,
      userAgent: b.userAgent ?? undefined,
      push: Object.keys(b.pushParams).length > 0 ? true : undefined,
      cause: change === 'removed' ? cause : undefined,
    },
    'registration',
  );
}

/**
 * A logger at `level`. Writes synchronously to stdout (so nothing is lost when
 * the process exits on a fatal error) unless `destination` is given (tests).
 */
export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  const logger = pino(
    {
      level,
      base: { name: 'portier' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        level: (label) => ({ level: label }),
        log: (object) => redact(object) as Record<string, unknown>,
      },
      serializers: {
        // The call line (src/proxy CallRecord): the device that answered is a Contact, push token included.
        call: (call: unknown) => {
          const c = call as { answeredBy?: unknown } | null;
          return c !== null && typeof c === 'object' && typeof c.answeredBy === 'string' ? { ...c, answeredBy: safeContact(c.answeredBy) } : call;
        },
      },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
  // Child loggers are created with Object.create(parent), so this override is
  // inherited by every descendant: their bindings are redacted too.
  const child = logger.child as unknown as (this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) => Logger;
  const setBindings = logger.setBindings as (this: Logger, bindings: pino.Bindings) => void;
  Object.assign(logger, {
    child(this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) {
      return child.call(this, redact(bindings) as pino.Bindings, options);
    },
    setBindings(this: Logger, bindings: pino.Bindings) {
      setBindings.call(this, redact(bindings) as pino.Bindings);
    },
  });
  return logger;
}
