// The pg-net-edge command line: install, relay, drain, start. No dependencies beyond node:util.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runDrain } from './drain.ts';
import { install, probe } from './install.ts';
import { redactUrl } from '../core/redact.ts';
import { startRelay } from './relay.ts';
import { start } from './start.ts';

const USAGE = `pg-net-edge — pg_net's async HTTP from SQL, for any PostgreSQL, run by a Cloudflare Worker

Usage: pg-net-edge <command> [options]

Commands:
  install   install or upgrade the SQL API (schema net) in a database
  relay     LISTEN for committed requests and nudge the Worker at once
  drain     send queued requests from this machine (a self-hosted runner)
  start     the whole system locally: PostgreSQL, SQL, Worker (workerd), relay, crons

Run "pg-net-edge <command> --help" for a command's options.`;

const HELP: Record<string, string> = {
  install: `Usage: pg-net-edge install [--database-url-file FILE]     (or set DATABASE_URL)

Installs (or upgrades) the SQL API in the database: schema net, its tables and functions.
Idempotent: running it again keeps queued requests and responses.
Same as: psql URL -f sql/install.sql

Options:
  --database-url-file FILE  read the connection string from FILE (default: $DATABASE_URL)
  --database-url URL        the connection string itself (a password in it shows in ps)
  -h, --help                this help`,
  relay: `Usage: pg-net-edge relay --nudge-url URL      (with DATABASE_URL and NUDGE_SECRET set)

LISTENs on pg_net_edge_wake and POSTs the Worker's /nudge when requests are committed, so they
are sent at once instead of at the next cron tick. Needs a direct (session) connection: LISTEN
does not pass through transaction poolers or Hyperdrive. Reconnects with backoff; runs until
Ctrl-C / SIGTERM.

Secrets come from the environment or from files, never from the command line if you can help
it: arguments show in the process list (ps) to every user of the machine.

Options:
  --nudge-url URL           the Worker's nudge endpoint, e.g. https://pg-net-edge.example.workers.dev/nudge
                            (default: $NUDGE_URL)
  --database-url-file FILE  read the direct connection string from FILE (default: $DATABASE_URL)
  --secret-file FILE        read the Worker's NUDGE_SECRET from FILE (default: $NUDGE_SECRET)
  --database-url URL        the connection string itself (a password in it shows in ps)
  --secret S                the secret itself (shows in ps)
  -h, --help                this help`,
  drain: `Usage: pg-net-edge drain [--loop]      (with DATABASE_URL set)

Claims queued requests, sends them from this machine and records the responses — the same
code the Worker runs. Without --loop: drains until the queue is empty, prints its stats, exits.
With --loop: keeps draining (woken by NOTIFY, polling every second) until Ctrl-C / SIGTERM.

Tuning, from the same environment variables as the Worker: CONCURRENCY, BATCH_SIZE,
LEASE_MARGIN_MS, MAX_RESPONSE_BYTES, DRAIN_BUDGET_MS, FLUSH_MS, USER_AGENT.

Options:
  --database-url-file FILE  read the connection string from FILE (default: $DATABASE_URL)
  --database-url URL        the connection string itself (a password in it shows in ps)
  --loop                    keep running
  -h, --help                this help`,
  start: `Usage: pg-net-edge start [--port N] [--pg-port N]      (also: npm start -- --port N)

Runs the whole system on this machine: PostgreSQL (DATABASE_URL, or an embedded one with its
data in .pg-net-edge/pgdata), the SQL API, the Worker under workerd (wrangler dev), the relay,
and a ticker firing the crons. Prints where everything is, runs until Ctrl-C.
Both ports are checked before anything starts; a second checkout runs beside the first with
other ports. Secrets reach the Worker through its environment, never through a file.

Options:
  --port N                  the Worker's port (default: $PORT, else 8787)
  --pg-port N               the embedded PostgreSQL's port (default: $PG_PORT, else 54329)
  --database-url-file FILE  use the PostgreSQL whose connection string is in FILE
  -h, --help                this help

Environment:
  DATABASE_URL   PostgreSQL to use (default: embedded)
  PORT, PG_PORT  as --port, --pg-port
  NUDGE_SECRET   the relay's secret (default: generated for the run)`,
};

class UsageError extends Error {}

function need(value: string | undefined, flag: string, envName: string): string {
  if (!value) throw new UsageError(`missing ${flag} (or set ${envName}, or use ${flag}-file)`);
  return value;
}

/** The password of a connection string, '' when it has none (or is not a URL). */
function passwordOf(url: string): string {
  try {
    return new URL(url).password;
  } catch {
    return /password\s*=/i.test(url) ? 'yes' : '';
  }
}

/** Runs one command; resolves with the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 2;
  }
  const help = HELP[command];
  if (!help) {
    process.stderr.write(`pg-net-edge: "${command}" is not a command (not yet, at least).\n\n${USAGE}\n`);
    return 2;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: 'boolean', short: 'h' },
        'database-url': { type: 'string' },
        'nudge-url': { type: 'string' },
        'database-url-file': { type: 'string' },
        secret: { type: 'string' },
        'secret-file': { type: 'string' },
        port: { type: 'string' },
        'pg-port': { type: 'string' },
        loop: { type: 'boolean' },
      },
    }));
  } catch (error) {
    process.stderr.write(`pg-net-edge ${command}: ${(error as Error).message}\n\n${help}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  const flag = (name: string) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const env = process.env;
  const allowed: Record<string, string[]> = {
    install: ['database-url', 'database-url-file'],
    relay: ['database-url', 'database-url-file', 'nudge-url', 'secret', 'secret-file'],
    drain: ['database-url', 'database-url-file', 'loop'],
    start: ['database-url-file', 'port', 'pg-port'],
  };
  for (const name of Object.keys(values)) {
    if (name !== 'help' && values[name] !== undefined && !allowed[command]?.includes(name)) {
      process.stderr.write(`pg-net-edge ${command}: --${name} is not an option of ${command}\n\n${help}\n`);
      return 2;
    }
  }
  /**
   * A secret setting: from --NAME-file (trailing newline dropped), else --NAME (with a warning
   * when it holds a secret: arguments show in ps), else the environment variable.
   */
  const secretSetting = (name: string, envName: string, isSecret: (value: string) => boolean): string | undefined => {
    const file = flag(`${name}-file`);
    const given = flag(name);
    if (file !== undefined && given !== undefined) throw new UsageError(`give --${name} or --${name}-file, not both`);
    if (file !== undefined) {
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (error) {
        throw new UsageError(`cannot read --${name}-file ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
      }
      const value = text.replace(/\r?\n$/, '');
      if (!value.trim()) throw new UsageError(`--${name}-file ${file} is empty`);
      return value;
    }
    if (given !== undefined) {
      if (isSecret(given)) {
        process.stderr.write(
          `pg-net-edge ${command}: warning: --${name} shows in the process list (ps) to every user of this machine; ` +
            `set ${envName} or use --${name}-file instead\n`,
        );
      }
      return given;
    }
    return env[envName] || undefined;
  };
  const databaseUrlSetting = () =>
    need(secretSetting('database-url', 'DATABASE_URL', (url) => passwordOf(url) !== ''), '--database-url', 'DATABASE_URL');

  try {
    switch (command) {
      case 'install': {
        const url = databaseUrlSetting();
        try {
          await install(url, { log: (line: string) => process.stdout.write(`${line}\n`) });
        } catch (error) {
          // install()'s messages already say what to check; only make sure no password shows.
          process.stderr.write(`pg-net-edge install: ${scrub((error as Error).message, url)}\n`);
          return 1;
        }
        return 0;
      }
      case 'relay': {
        const databaseUrl = databaseUrlSetting();
        const nudgeUrl = need(flag('nudge-url') ?? env.NUDGE_URL, '--nudge-url', 'NUDGE_URL');
        const secret = need(secretSetting('secret', 'NUDGE_SECRET', () => true), '--secret', 'NUDGE_SECRET');
        try {
          new URL(nudgeUrl);
        } catch {
          throw new UsageError(`--nudge-url is not a URL: ${nudgeUrl}`);
        }
        if (!(await probed('relay', databaseUrl))) return 1;
        process.stdout.write(`relay: ${redactUrl(databaseUrl)} → ${redactUrl(nudgeUrl)}\n`);
        const relay = startRelay({
          databaseUrl,
          nudgeUrl,
          secret,
          log: (line) => process.stdout.write(`${line}\n`),
        });
        await untilSignal();
        await relay.stop();
        process.stdout.write(
          `relay: stopped (${relay.stats.notifications} notifications, ${relay.stats.nudgesSent} nudges sent)\n`,
        );
        return 0;
      }
      case 'drain': {
        const databaseUrl = databaseUrlSetting();
        if (!(await probed('drain', databaseUrl))) return 1;
        return await runDrain({ databaseUrl, loop: values.loop === true, env });
      }
      case 'start': {
        const file = flag('database-url-file');
        const databaseUrl = file === undefined ? undefined : secretSetting('database-url', 'DATABASE_URL', () => false);
        return await start({
          env: { ...env, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) },
          port: flag('port'),
          pgPort: flag('pg-port'),
        });
      }
    }
    return 2;
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`pg-net-edge ${command}: ${error.message}\n\n${help}\n`);
      return 2;
    }
    throw error;
  }
}

/** Error text with any connection string's password removed, whatever quoted it. */
function scrub(text: string, url: string): string {
  const hidePasswords = (t: string) => t.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@');
  let out = hidePasswords(text);
  try {
    // A password quoted on its own (not as part of the URL); too short ones would mangle words.
    const password = decodeURIComponent(new URL(url).password);
    if (password.length >= 6 && password !== 'postgres') out = out.split(password).join('***');
  } catch {
    /* not a parseable URL: the pattern above is all we can do */
  }
  return out;
}

/** Probes the database first, so a wrong address fails within ~10 s saying what to check. */
async function probed(command: string, url: string): Promise<boolean> {
  try {
    await probe(url);
    return true;
  } catch (error) {
    process.stderr.write(`pg-net-edge ${command}: ${scrub((error as Error).message, url)}\n`);
    return false;
  }
}

function untilSignal(): Promise<void> {
  return new Promise((done) => {
    const stop = () => {
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
      done();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
