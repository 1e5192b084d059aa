/**
 * The `portier` command line, as a function that tests can call in-process:
 * `runCli(argv, io)` resolves to the exit status. src/cli/main.ts is the thin
 * executable wrapper around it.
 *
 *   portier [--config FILE]        run the server (embedded demo config without --config)
 *   portier check --config FILE    validate FILE and print the effective configuration
 *   portier user add|del|list      manage the users file (src/cli/user.ts)
 *   portier provision AOR          a one-time QR-code link that sets up an app (src/cli/provision.ts)
 *   portier --version | --help
 *
 * Exit status: 0 ok, 1 configuration or start-up error, 2 usage error;
 * after a second SIGTERM/SIGINT during shutdown, 128 + signal number.
 */
import { version } from '../version.js';
import { parseArgs } from 'node:util';
import type pino from 'pino';
import { ConfigError, demoConfig, formatConfig, loadConfig, type Config } from '../config/index.js';
import { createLogger, type Logger } from '../log.js';
import { reloadConfig } from './reload.js';
import { runUser, type CliStdin } from './user.js';
import { runProvision } from './provision.js';
import { joinPrimary, runPrimary, workerConfig, workerFromEnv, type WorkerEnv } from './workers.js';

export { version };

export interface RunningServer {
  stop(): Promise<void>;
  /**
   * SIGHUP: read the users file again and, given `next` (src/cli/reload.ts),
   * apply what changes live. Throws, changing nothing, when it cannot.
   */
  reload?(next?: Config): void;
  /** A worker of several (config `workers`): its relay, and where its metrics are. */
  readonly transport?: { readonly relayPort: number | null; setRelayPeers(ports: Array<number | null>): void };
  metricsAddress?(): { port: number } | null;
}

/** A worker's seat (src/cli/workers.ts), as startServer takes it. */
export interface WorkerSeatOptions extends WorkerEnv {
  usersChanged?: () => void;
}

/** The contract of `startServer` in src/server.ts. */
export type StartServer = (config: Config, log: Logger, seat?: WorkerSeatOptions) => Promise<RunningServer>;

/** The parts of `process` the CLI uses; tests pass an EventEmitter with a recording `exit`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Listener = (...args: any[]) => void;

export interface ProcessLike {
  on(event: string, listener: Listener): unknown;
  off(event: string, listener: Listener): unknown;
  exit(code: number): void;
}

export interface CliIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  /** Signals and fatal-error events come from here, and a second signal calls its exit(). Default: process. */
  process?: ProcessLike;
  /** Default: startServer exported by src/server.ts. */
  startServer?: StartServer;
  /** Where log lines go. Default: stdout. */
  logDestination?: pino.DestinationStream;
  /** How long a graceful stop may take before exiting with status 1. Default 10 000 ms. */
  stopTimeoutMs?: number;
  /** Where `user add` reads the password. Default: process.stdin. */
  stdin?: CliStdin;
}

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

export const DEMO_WARNING =
  'no --config given: running the embedded demo configuration, which listens on 127.0.0.1 only (udp and tcp port 5060, metrics on http port 9090), ' +
  'serves the domain localhost and has no authentication; it is for trying Portier on one machine, ' +
  'not for deployment (start from conf/portier.yaml and pass --config FILE)';

export const HELP = `Usage: portier [--config FILE]
       portier check --config FILE
       portier user add AOR [--users FILE] [--config FILE] [--realm REALM] [--kind door|phone]
       portier user del AOR [--users FILE] [--config FILE]
       portier user list [--users FILE] [--config FILE]
       portier provision AOR --config FILE [--png FILE]
       portier --version | --help

Portier is a SIP proxy and registrar for connected intercoms.

Commands:
  (none)    run the server with FILE. Without --config it runs an embedded demo
            configuration: 127.0.0.1:5060 (udp, tcp) only, domain localhost,
            no authentication, for trying Portier on one machine.
  check     validate FILE and print the effective configuration (defaults
            filled in) as YAML; exit 1 with one line per problem if invalid.
  user      manage the accounts (HA1 digests only) of the users file: the
            --users FILE, else auth.users of --config, else conf/users.
            add: create an account or change its password, read from standard
            input (asked twice without echo on a terminal); del: remove it;
            list: one line per account. See: portier user --help
  provision a one-time link and QR code that sets up a Linhome or Linphone
            app for the account (fresh password, push, STUN/TURN, door
            stations). See: portier provision --help

Options:
  -c, --config FILE   configuration file (YAML; commented example: conf/portier.yaml)
  -h, --help          show this help and exit
  -v, --version       print the version and exit

Signals: SIGTERM or SIGINT stop gracefully (a second one exits at once);
SIGHUP reads FILE and the users file again and applies live what can change
live (users, auth.trusted, security, log.level, TLS certificates, ring groups,
aliases, policy, routes, ...); other changes are logged as needing a restart.

Exit status: 0 ok, 1 configuration or start-up error, 2 usage error.
`;


async function importStartServer(): Promise<StartServer> {
  // Resolved at run time so that `check`, `--help` and `--version` never load the server.
  const url = new URL('../server.js', import.meta.url).href;
  const mod = (await import(url)) as { startServer?: unknown; warmUp?: unknown };
  if (typeof mod.startServer !== 'function') throw new Error(`${url} does not export startServer()`);
  const start = mod.startServer as StartServer;
  const warmUp = typeof mod.warmUp === 'function' ? (mod.warmUp as (budgetMs: number) => { rounds: number; ms: number }) : null;
  // The process that will serve SIP compiles its hot path first (src/warmup.ts): a
  // fresh one under load would otherwise refuse its first second's requests with 503.
  return (config, log, seat) => {
    if (warmUp !== null && config.overload.warmUp > 0) {
      const w = warmUp(config.overload.warmUp);
      log.info({ rounds: w.rounds, ms: Math.round(w.ms) }, 'hot path warmed up');
    }
    return start(config, log, seat);
  };
}

function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0];
}

const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

interface Parsed {
  command: 'serve' | 'check' | 'help' | 'version';
  config?: string;
}

function parse(argv: string[]): Parsed {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  if (values.help) return { command: 'help' };
  if (values.version) return { command: 'version' };
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
  const [command] = positionals;
  if (command === 'user') throw new UsageError('write the user command first: portier user add|del|list ...');
  if (command !== undefined && command !== 'check') throw new UsageError(`unknown command "${command}"`);
  if (values.config === '') throw new UsageError('--config needs a FILE');
  if (command === 'check') {
    if (values.config === undefined) throw new UsageError('check needs --config FILE');
    return { command: 'check', config: values.config };
  }
  return { command: 'serve', config: values.config };
}

class UsageError extends Error {}

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  if (argv[0] === 'user') return runUser(argv.slice(1), io);
  if (argv[0] === 'provision') return runProvision(argv.slice(1), io);
  let args: Parsed;
  try {
    args = parse(argv);
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      const unknown = /^Unknown option '([^']+)'/.exec(oneLine(err));
      const why = unknown ? `unknown option '${unknown[1]}'` : oneLine(err);
      io.stderr.write(`portier: ${why}\nTry 'portier --help'.\n`);
      return EXIT_USAGE;
    }
    throw err;
  }

  switch (args.command) {
    case 'help':
      io.stdout.write(HELP);
      return EXIT_OK;
    case 'version':
      io.stdout.write(`portier ${version()}\n`);
      return EXIT_OK;
    case 'check':
      try {
        io.stdout.write(formatConfig(loadConfig(args.config as string)));
        return EXIT_OK;
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        for (const problem of err.problems) io.stderr.write(`${problem}\n`);
        return EXIT_ERROR;
      }
    case 'serve':
      return serve(args.config, io);
  }
}

async function serve(configPath: string | undefined, io: CliIo): Promise<number> {
  let config: Config;
  try {
    config = configPath === undefined ? demoConfig() : loadConfig(configPath);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const more = err.problems.length - 1;
    const hint = more > 0 ? ` (and ${more} more; see: portier check --config ${configPath})` : '';
    io.stderr.write(`portier: ${err.message}${hint}\n`);
    return EXIT_ERROR;
  }

  const proc: ProcessLike = io.process ?? process;
  const seat = workerFromEnv();
  let log = createLogger(config.log.level, io.logDestination);
  const listeners: Array<[string, Listener]> = [];
  const listen = (event: string, fn: Listener) => {
    proc.on(event, fn);
    listeners.push([event, fn]);
  };
  const unlisten = () => {
    for (const [event, fn] of listeners) proc.off(event, fn);
  };

  // Never silent: anything that escapes is logged, then the process exits (systemd/Docker restart it).
  listen('uncaughtException', (err: unknown) => {
    log.fatal({ err }, 'uncaught exception; exiting');
    proc.exit(EXIT_ERROR);
  });
  listen('unhandledRejection', (reason: unknown) => {
    log.fatal({ err: reason }, 'unhandled promise rejection; exiting');
    proc.exit(EXIT_ERROR);
  });

  if (config.demo && seat === null) log.warn(DEMO_WARNING);

  if (seat === null && config.workers > 1) {
    // The primary runs no SIP: it forks the workers and watches them (src/cli/workers.ts).
    const code = await runPrimary(config, log, proc, io.stopTimeoutMs ?? 10_000);
    unlisten();
    return code;
  }
  if (seat !== null) {
    config = workerConfig(config);
    log = log.child({ worker: seat.index });
  }
  let hooks: { usersChanged(): void } | null = null;
  let server: RunningServer;
  try {
    const start = io.startServer ?? (await importStartServer());
    server = await start(config, log, seat === null ? undefined : { ...seat, usersChanged: () => hooks?.usersChanged() });
    if (seat !== null) hooks = joinPrimary(server);
  } catch (err) {
    log.fatal({ err }, 'cannot start');
    io.stderr.write(`portier: cannot start: ${oneLine(err)}\n`);
    unlisten();
    return EXIT_ERROR;
  }
  log.info({ version: version(), config: config.source }, 'portier started');

  const code = await new Promise<number>((resolve) => {
    let stopping = false;
    const onStop = (signal: string) => {
      if (stopping) {
        log.warn({ signal }, 'second signal during shutdown; exiting now');
        proc.exit(128 + (SIGNAL_NUMBERS[signal] ?? 0));
        return;
      }
      stopping = true;
      log.info({ signal }, 'stopping');
      const limit = io.stopTimeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((r) => {
        // Not unref'd: the deadline must fire even if nothing else keeps the process alive.
        timer = setTimeout(() => r('timeout'), limit);
      });
      Promise.race([server.stop().then(() => 'stopped' as const), timeout]).then(
        (outcome) => {
          clearTimeout(timer);
          if (outcome === 'timeout') {
            log.error({ timeoutMs: limit }, 'stop did not finish in time; exiting anyway');
            resolve(EXIT_ERROR);
          } else {
            log.info('stopped');
            resolve(EXIT_OK);
          }
        },
        (err: unknown) => {
          clearTimeout(timer);
          log.error({ err }, 'error while stopping');
          resolve(EXIT_ERROR);
        },
      );
    };
    listen('SIGTERM', () => onStop('SIGTERM'));
    listen('SIGINT', () => onStop('SIGINT'));
    listen('SIGHUP', () => {
      if (stopping) return;
      if (config.demo) {
        log.info({ signal: 'SIGHUP' }, 'reloading: the embedded demo configuration has no file to read again');
        return;
      }
      log.info({ signal: 'SIGHUP', config: config.source }, 'reloading the configuration');
      // Synchronous and never throws: a second SIGHUP waits for this one.
      config = reloadConfig(server, config, log, seat === null ? undefined : () => workerConfig(loadConfig(config.source))).config;
    });
  });
  unlisten();
  return code;
}
