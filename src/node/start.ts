// `npm start` (SPEC §5): the whole system on one machine — PostgreSQL (DATABASE_URL or an embedded
// one), the SQL installed, the Worker under workerd (wrangler dev), the relay, and a ticker that
// fires the crons (they never fire under wrangler dev).
//
// Processes: wrangler (and its workerd) runs in its own process group, and a watchdog
// (watchdog.mjs) ends that group and the embedded PostgreSQL if this process dies without
// cleaning up, even by SIGKILL. Secrets reach the Worker through wrangler's environment, never
// through a file, and are never printed.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { freePort, startEmbedded, type EmbeddedDatabase } from './embedded.ts';
import { hyperdriveLocalUrl } from './hyperdrive-local.ts';
import { install } from './install.ts';
import { redactUrl } from '../core/redact.ts';
import { startRelay, type Relay } from './relay.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DRAIN_CRON = '* * * * *';
// Every minute too (a short pg_net.ttl is honoured within a minute); see SWEEP_CRONS in the Worker.
const SWEEP_CRON = '*/1 * * * *';
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const DEFAULT_PORT = 8787;
const DEFAULT_PG_PORT = 54329;
/** How often the Worker's port is checked, and how many refusals in a row mean workerd is gone. */
const LIVENESS_MS = 1_000;
const LIVENESS_FAILURES = 3;
/**
 * The only variables wrangler (and so the Worker: wrangler turns its whole environment into
 * bindings) gets from ours, besides the two secrets: what it needs to run.
 */
const PASSED_ENV = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'USER', 'XDG_CONFIG_HOME', 'NODE_EXTRA_CA_CERTS'];

const PLUMBING_ENV = {
  CLOUDFLARE_INCLUDE_PROCESS_ENV: 'true', // the secrets below come from wrangler's environment
  WRANGLER_SEND_METRICS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false', // no network lookups
  NO_COLOR: '1',
};
// wrangler's lines about where secrets come from, and the bindings it makes of the plumbing
// variables above: noise to a reader (the secrets' own lines, "(hidden)", stay).
const HIDDEN_LINE = new RegExp(
  `^(Using secrets defined in |env\\.(${[...PASSED_ENV, ...Object.keys(PLUMBING_ENV), 'CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE'].join('|')}) \\()`,
);

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  out?: (line: string) => void;
  /** --port: the Worker's port (else PORT, else 8787). */
  port?: string | undefined;
  /** --pg-port: the embedded PostgreSQL's port (else PG_PORT, else 54329). */
  pgPort?: string | undefined;
}

class StartupError extends Error {}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen(port, '127.0.0.1', () => server.close(() => done(true)));
  });
}

/** A port from a flag or a variable; `label` names where it came from, for the message. */
export function parsePort(value: string, label: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new StartupError(`${label} is not a TCP port (1-65535)`);
  }
  return port;
}

/** Resolves when a TCP connection to 127.0.0.1:port is accepted; false when refused or silent. */
function answers(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket: Socket = connect({ host: '127.0.0.1', port });
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      done(ok);
    };
    const timer = setTimeout(() => finish(false), 2_000);
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

interface Watchdog {
  tell(line: string): void;
  /** Normal exit: we cleaned up ourselves. */
  dismiss(): Promise<void>;
}

/** Starts watchdog.mjs, detached, talking to it through a pipe that closes when we die. */
function startWatchdog(): Watchdog {
  const child = spawn(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), 'watchdog.mjs')], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  child.unref();
  const pipe = child.stdin as Socket | null;
  pipe?.on('error', () => {}); // a watchdog that died leaves us unwatched, not broken
  pipe?.unref();
  return {
    tell: (line) => void pipe?.write(`${line}\n`),
    dismiss: () => new Promise((done) => (pipe ? pipe.end('done\n', () => done()) : done())),
  };
}

/** Runs until SIGINT/SIGTERM; resolves with the exit code. */
export async function start(options: StartOptions = {}): Promise<number> {
  const env = options.env ?? process.env;
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const progress = (line: string) => out(`pg-net-edge: ${line}`);

  let embedded: EmbeddedDatabase | undefined;
  let wrangler: ChildProcess | undefined;
  let wranglerExited: Promise<void> = Promise.resolve();
  let relay: Relay | undefined;
  let watchdog: Watchdog | undefined;
  const timers: NodeJS.Timeout[] = [];
  // Aborts the ticker's cron requests in flight: stopping the Worker under them would fail them.
  const ticker = new AbortController();
  let stopping = false;
  let ready = false;
  let workerDied = false;

  // wrangler runs workerd as its own child: signal the whole process group.
  const killWorker = (signal: NodeJS.Signals) => {
    if (!wrangler?.pid || wrangler.exitCode !== null || wrangler.signalCode !== null) return;
    try {
      process.kill(-wrangler.pid, signal);
    } catch {
      /* already gone */
    }
  };

  const stopAll = async () => {
    stopping = true;
    for (const timer of timers) clearInterval(timer);
    ticker.abort();
    if (relay) await relay.stop();
    if (wrangler && wrangler.exitCode === null && wrangler.signalCode === null) {
      killWorker('SIGTERM');
      const killer = setTimeout(() => killWorker('SIGKILL'), 5_000);
      await wranglerExited;
      clearTimeout(killer);
    }
    if (embedded) {
      progress('stopping the embedded PostgreSQL');
      await embedded.stop().catch((error: unknown) => progress(`could not stop PostgreSQL: ${String(error)}`));
    }
    await watchdog?.dismiss();
  };

  // Signals during startup must also clean up: remember them and act once startup returns.
  let signalled: (() => void) | null = null;
  const stopRequested = new Promise<void>((done) => (signalled = done));
  // Stays installed until the end: a second Ctrl-C (or a supervisor signalling the whole group)
  // must not kill this process mid-cleanup and orphan workerd; it only hurries the cleanup.
  let signals = 0;
  let firstSignalAt = 0;
  const onSignal = () => {
    // Ctrl-C under npm arrives twice: from the terminal and forwarded by npm. One press, one stop.
    if (signals === 1 && Date.now() - firstSignalAt < 1_000) return;
    signals++;
    if (signals === 1) {
      firstSignalAt = Date.now();
      out('');
      progress('stopping…');
      signalled?.();
    } else {
      progress('stopping now');
      killWorker('SIGKILL');
    }
  };
  for (const signal of SIGNALS) process.on(signal, onSignal);
  const abortable = <T>(work: Promise<T>): Promise<T> =>
    Promise.race([
      work,
      stopRequested.then(() => {
        throw new StartupError('interrupted');
      }),
    ]);

  try {
    // 0. A checkout with wrangler, and free ports, before anything starts: a missing piece must
    //    not cost a PostgreSQL start and an install.
    const wranglerBin = join(ROOT, 'node_modules', '.bin', 'wrangler');
    if (!existsSync(join(ROOT, 'wrangler.toml'))) {
      throw new StartupError(
        'start runs the whole system from a checkout of the repository (it needs wrangler.toml): clone it, then `npm install && npm start`. The installed package provides `relay`, `install` and `drain`.',
      );
    }
    if (!existsSync(wranglerBin)) throw new StartupError(`${wranglerBin} not found; run npm install first`);
    const port = options.port !== undefined ? parsePort(options.port, `--port ${options.port}`)
      : env.PORT ? parsePort(env.PORT, `PORT=${env.PORT}`) : DEFAULT_PORT;
    if (!(await portIsFree(port))) {
      throw new StartupError(
        `port ${port} (the Worker's) is already in use on 127.0.0.1; stop what uses it, or pass --port N (or set PORT)`,
      );
    }
    let databaseUrl = env.DATABASE_URL;
    let pgPort = DEFAULT_PG_PORT;
    if (!databaseUrl) {
      pgPort = options.pgPort !== undefined ? parsePort(options.pgPort, `--pg-port ${options.pgPort}`)
        : env.PG_PORT ? parsePort(env.PG_PORT, `PG_PORT=${env.PG_PORT}`) : DEFAULT_PG_PORT;
      if (pgPort === port) throw new StartupError(`--port and --pg-port are both ${port}; give them different ports`);
      if (!(await portIsFree(pgPort))) {
        throw new StartupError(
          `port ${pgPort} (the embedded PostgreSQL's) is already in use on 127.0.0.1; stop what uses it ` +
            '(another pg-net-edge?), or pass --pg-port N (or set PG_PORT)',
        );
      }
    } else if (options.pgPort !== undefined || env.PG_PORT) {
      progress('DATABASE_URL is set, so no embedded PostgreSQL: --pg-port / PG_PORT is ignored');
    }
    watchdog = startWatchdog();

    // 1. PostgreSQL
    if (databaseUrl) {
      progress(`using DATABASE_URL ${redactUrl(databaseUrl)}`);
    } else {
      const dir = resolve('.pg-net-edge/pgdata');
      watchdog.tell(`pidfile ${join(dir, 'postmaster.pid')}`);
      progress(
        `no DATABASE_URL: starting an embedded PostgreSQL (data in ${dir}${existsSync(dir) ? ', kept from the last run' : ''}, port ${pgPort})`,
      );
      try {
        embedded = await abortable(startEmbedded({ dir, port: pgPort }));
      } catch (error) {
        if (error instanceof StartupError) throw error;
        throw new StartupError(
          `${(error as Error).message}\nIf another pg-net-edge is still running from this folder, stop it first.` +
            (/Permission denied/.test((error as Error).message)
              ? `\nRunning as root, PostgreSQL runs as the "postgres" user, which must be able to enter ${dir}.`
              : ''),
        );
      }
      databaseUrl = embedded.url;
    }

    // 2. SQL
    progress('installing the SQL API (schema net)');
    try {
      await abortable(install(databaseUrl, { log: (line: string) => out(`  ${line}`) }));
    } catch (error) {
      if (error instanceof StartupError) throw error;
      const reason = (error as Error).message;
      // install()'s connection errors already name the address and what to check.
      if (reason.startsWith('cannot connect to PostgreSQL')) throw new StartupError(reason);
      throw new StartupError(
        `could not install the SQL API into ${redactUrl(databaseUrl)}: ${reason}\n` +
          'Check that the database is reachable and that DATABASE_URL is right (user, password, database name).',
      );
    }

    // 3. Worker under workerd
    const secret = env.NUDGE_SECRET || randomBytes(24).toString('base64url');
    progress(`nudge secret: ${env.NUDGE_SECRET ? 'from NUDGE_SECRET' : 'generated for this run'} (never shown)`);
    if (!(await portIsFree(port))) {
      throw new StartupError(
        `port ${port} (the Worker's) was taken while PostgreSQL started; stop what uses it, or pass --port N (or set PORT)`,
      );
    }
    const workerEnv: NodeJS.ProcessEnv = {};
    for (const name of PASSED_ENV) if (env[name] !== undefined) workerEnv[name] = env[name];
    const workerUrl = `http://127.0.0.1:${port}`;
    progress(`starting the Worker under workerd (wrangler dev) on ${workerUrl}`);
    wrangler = spawn(
      wranglerBin,
      [
        'dev',
        '--port',
        String(port),
        '--ip',
        '127.0.0.1',
        // No .env/.dev.vars file: the secrets come from wrangler's environment (below), so none
        // is ever written to disk. /dev/null also keeps a .dev.vars in the checkout from
        // overriding them.
        '--env-file',
        '/dev/null',
        '--show-interactive-dev-session=false',
        // Our ticker fires the crons; this also silences wrangler's "not triggered locally".
        '--test-scheduled',
        // wrangler's devtools port defaults to 9229: a second pg-net-edge (or a debugger) holding
        // it would stop this one from starting.
        '--inspector-port',
        String(await freePort()),
      ],
      {
        cwd: ROOT,
        detached: true, // its own process group, so workerd is stopped with it
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...workerEnv,
          DATABASE_URL: databaseUrl,
          NUDGE_SECRET: secret,
          ...PLUMBING_ENV,
          // If wrangler.toml binds [[hyperdrive]] (deploy step 2), it connects here locally.
          CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: hyperdriveLocalUrl(databaseUrl),
        },
      },
    );
    const child = wrangler;
    if (child.pid) watchdog.tell(`group ${child.pid}`);
    const recent: string[] = [];
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => {
        recent.push(line.replace(/\x1b\[[0-9;]*m/g, ''));
        if (recent.length > 30) recent.shift();
        // wrangler colours its output even when piped; keep the prefixed lines plain text.
        const plain = line.replace(/\x1b\[[0-9;]*m/g, '');
        if (plain.trim() && !HIDDEN_LINE.test(plain)) out(`[worker] ${plain}`);
      });
    }
    wranglerExited = new Promise<void>((done) => child.once('exit', () => done()));
    child.once('error', (error) => out(`[worker] could not run wrangler: ${error.message}`));
    void wranglerExited.then(() => {
      // Before the ready block, waitForHealth reports this with wrangler's last lines.
      if (stopping || !ready) return;
      workerDied = true;
      progress(
        `the Worker (wrangler dev) exited unexpectedly (${child.exitCode ?? child.signalCode}; its output is above); stopping`,
      );
      signalled?.();
    });

    await abortable(waitForHealth(workerUrl, child, recent));

    // 4. Relay and crons
    relay = startRelay({
      databaseUrl,
      nudgeUrl: `${workerUrl}/nudge`,
      secret,
      log: (line) => out(line),
    });
    await abortable(relay.ready);
    const fire = (cron: string) => {
      const url = `${workerUrl}/cdn-cgi/handler/scheduled?${new URLSearchParams({ cron })}`;
      fetch(url, { signal: AbortSignal.any([ticker.signal, AbortSignal.timeout(55_000)]) })
        .then((response) => response.body?.cancel())
        .catch((error: unknown) => {
          if (!stopping) progress(`cron "${cron}" could not be fired: ${String(error)}`);
        });
    };
    fire(DRAIN_CRON); // drains whatever was queued while nothing was running
    timers.push(setInterval(() => fire(DRAIN_CRON), 60_000));
    timers.push(setInterval(() => fire(SWEEP_CRON), 60_000));

    // wrangler stays up when workerd dies, with nothing on the port: notice it and say so.
    let refusals = 0;
    let checking = false;
    timers.push(
      setInterval(() => {
        if (checking || stopping) return;
        checking = true;
        void answers(port).then((ok) => {
          checking = false;
          refusals = ok ? 0 : refusals + 1;
          if (refusals < LIVENESS_FAILURES || stopping || workerDied) return;
          workerDied = true;
          progress(
            `the Worker (workerd) died: nothing answers on ${workerUrl} any more (wrangler's output is above); stopping`,
          );
          signalled?.();
        });
      }, LIVENESS_MS),
    );

    const shown = redactUrl(databaseUrl);
    out(
      [
        '',
        'pg-net-edge is ready',
        `  worker     ${workerUrl}   (GET /health, POST /nudge)`,
        `  database   ${shown}`,
        `  psql       psql ${embedded ? databaseUrl : shown}`,
        `  try        select net.http_get('${workerUrl}/health');`,
        '             select * from net._http_response;',
        `  crons      "${DRAIN_CRON}" (drain) and "${SWEEP_CRON}" (sweep) every minute (fired by pg-net-edge, as Cloudflare would)`,
        '  stop       Ctrl-C',
        '',
      ].join('\n'),
    );

    ready = true;
    await stopRequested;
    await stopAll();
    if (workerDied) {
      progress('stopped because the Worker died (exit 1); run it again to restart');
      return 1;
    }
    progress('stopped');
    return 0;
  } catch (error) {
    const interrupted = error instanceof StartupError && error.message === 'interrupted';
    if (!interrupted) {
      out(`pg-net-edge: could not start: ${error instanceof Error ? error.message : String(error)}`);
    }
    await stopAll();
    return interrupted ? 0 : 1;
  } finally {
    for (const signal of SIGNALS) process.removeListener(signal, onSignal);
  }
}

async function waitForHealth(workerUrl: string, child: ChildProcess, recent: string[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new StartupError(
        `wrangler dev exited (${child.exitCode ?? child.signalCode}) before the Worker was up. Its last lines:\n${recent.join('\n')}`,
      );
    }
    try {
      const response = await fetch(`${workerUrl}/health`, { signal: AbortSignal.timeout(5_000) });
      const body = await response.text();
      if (response.ok) return;
      last = `${response.status} ${body.slice(0, 300)}`;
    } catch (error) {
      last = String((error as Error).cause ?? error);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new StartupError(
    `the Worker did not answer GET ${workerUrl}/health within 60 s (last: ${last}).\n` +
      'If it reports the database unreachable, check DATABASE_URL; wrangler output is above.',
  );
}
