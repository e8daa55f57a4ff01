// The pg-net-edge command line: install, relay, drain, start. No dependencies beyond node:util.
import { parseArgs } from 'node:util';
import { runDrain } from './drain.ts';
import { install } from './install.ts';
import { redactUrl, startRelay } from './relay.ts';
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
  install: `Usage: pg-net-edge install --database-url URL

Installs (or upgrades) the SQL API in the database: schema net, its tables and functions.
Idempotent: running it again keeps queued requests and responses.
Same as: psql URL -f sql/install.sql

Options:
  --database-url URL   connection string (default: $DATABASE_URL)
  -h, --help           this help`,
  relay: `Usage: pg-net-edge relay --database-url URL --nudge-url URL --secret S

LISTENs on pg_net_edge_wake and POSTs the Worker's /nudge when requests are committed, so they
are sent at once instead of at the next cron tick. Needs a direct (session) connection: LISTEN
does not pass through transaction poolers or Hyperdrive. Reconnects with backoff; runs until
Ctrl-C / SIGTERM.

Options:
  --database-url URL   direct connection string (default: $DATABASE_URL)
  --nudge-url URL      the Worker's nudge endpoint, e.g. https://pg-net-edge.example.workers.dev/nudge
                       (default: $NUDGE_URL)
  --secret S           the Worker's NUDGE_SECRET (default: $NUDGE_SECRET)
  -h, --help           this help`,
  drain: `Usage: pg-net-edge drain --database-url URL [--loop]

Claims queued requests, sends them from this machine and records the responses — the same
code the Worker runs. Without --loop: drains until the queue is empty, prints its stats, exits.
With --loop: keeps draining (woken by NOTIFY, polling every second) until Ctrl-C / SIGTERM.

Tuning, from the same environment variables as the Worker: CONCURRENCY, BATCH_SIZE,
LEASE_MARGIN_MS, MAX_RESPONSE_BYTES, DRAIN_BUDGET_MS, FLUSH_MS, USER_AGENT.

Options:
  --database-url URL   connection string (default: $DATABASE_URL)
  --loop               keep running
  -h, --help           this help`,
  start: `Usage: pg-net-edge start      (also: npm start)

Runs the whole system on this machine: PostgreSQL (DATABASE_URL, or an embedded one with its
data in .pg-net-edge/pgdata), the SQL API, the Worker under workerd (wrangler dev), the relay,
and a ticker firing the crons. Prints where everything is, runs until Ctrl-C.

Environment:
  DATABASE_URL   PostgreSQL to use (default: embedded)
  PORT           the Worker's port (default 8787)
  NUDGE_SECRET   the relay's secret (default: generated for the run)`,
};

class UsageError extends Error {}

function need(value: string | undefined, flag: string, envName: string): string {
  if (!value) throw new UsageError(`missing ${flag} (or set ${envName})`);
  return value;
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
        secret: { type: 'string' },
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

  try {
    switch (command) {
      case 'install': {
        const url = need(flag('database-url') ?? env.DATABASE_URL, '--database-url', 'DATABASE_URL');
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
        const databaseUrl = need(flag('database-url') ?? env.DATABASE_URL, '--database-url', 'DATABASE_URL');
        const nudgeUrl = need(flag('nudge-url') ?? env.NUDGE_URL, '--nudge-url', 'NUDGE_URL');
        const secret = need(flag('secret') ?? env.NUDGE_SECRET, '--secret', 'NUDGE_SECRET');
        try {
          new URL(nudgeUrl);
        } catch {
          throw new UsageError(`--nudge-url is not a URL: ${nudgeUrl}`);
        }
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
        const databaseUrl = need(flag('database-url') ?? env.DATABASE_URL, '--database-url', 'DATABASE_URL');
        return await runDrain({ databaseUrl, loop: values.loop === true, env });
      }
      case 'start':
        return await start();
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
