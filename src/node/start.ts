// `npm start` (SPEC §5): the whole system on one machine — PostgreSQL (DATABASE_URL or an embedded
// one), the SQL installed, the Worker under workerd (wrangler dev), the relay, and a ticker that
// fires the crons (they never fire under wrangler dev).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { freePort, startEmbedded, type EmbeddedDatabase } from './embedded.ts';
import { hyperdriveLocalUrl } from './hyperdrive-local.ts';
import { install } from './install.ts';
import { redactUrl, startRelay, type Relay } from './relay.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DRAIN_CRON = '* * * * *';
const SWEEP_CRON = '*/5 * * * *';
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  out?: (line: string) => void;
}

class StartupError extends Error {}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen(port, '127.0.0.1', () => server.close(() => done(true)));
  });
}

/** Shows that a secret is set without showing it. */
export function mask(secret: string): string {
  return secret.length <= 8 ? '********' : `${secret.slice(0, 4)}${'*'.repeat(12)}`;
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
  let envDir: string | undefined;
  const timers: NodeJS.Timeout[] = [];
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
    if (relay) await relay.stop();
    if (wrangler && wrangler.exitCode === null && wrangler.signalCode === null) {
      killWorker('SIGTERM');
      const killer = setTimeout(() => killWorker('SIGKILL'), 5_000);
      await wranglerExited;
      clearTimeout(killer);
    }
    if (envDir) rmSync(envDir, { recursive: true, force: true });
    if (embedded) {
      progress('stopping the embedded PostgreSQL');
      await embedded.stop().catch((error: unknown) => progress(`could not stop PostgreSQL: ${String(error)}`));
    }
  };

  // Signals during startup must also clean up: remember them and act once startup returns.
  let signalled: (() => void) | null = null;
  const stopRequested = new Promise<void>((done) => (signalled = done));
  // Stays installed until the end: a second Ctrl-C (or a supervisor signalling the whole group)
  // must not kill this process mid-cleanup and orphan workerd; it only hurries the cleanup.
  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) {
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
    // 1. PostgreSQL
    let databaseUrl = env.DATABASE_URL;
    if (databaseUrl) {
      progress(`using DATABASE_URL ${redactUrl(databaseUrl)}`);
    } else {
      const dir = resolve('.pg-net-edge/pgdata');
      const port = (await portIsFree(54329)) ? 54329 : await freePort();
      progress(
        `no DATABASE_URL: starting an embedded PostgreSQL (data in ${dir}${existsSync(dir) ? ', kept from the last run' : ''}, port ${port})`,
      );
      try {
        embedded = await abortable(startEmbedded({ dir, port }));
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
      throw new StartupError(
        `could not install the SQL API into ${redactUrl(databaseUrl)}: ${(error as Error).message}\n` +
          'Check that the database is reachable and that DATABASE_URL is right (user, password, database name).',
      );
    }

    // 3. Worker under workerd
    const secret = env.NUDGE_SECRET || randomBytes(24).toString('base64url');
    progress(`nudge secret ${mask(secret)} (${env.NUDGE_SECRET ? 'from NUDGE_SECRET' : 'generated for this run'})`);
    const port = Number(env.PORT || 8787);
    if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new StartupError(`PORT=${env.PORT} is not a TCP port`);
    if (!(await portIsFree(port))) {
      throw new StartupError(`port ${port} is already in use on 127.0.0.1; stop what uses it or set PORT to another port`);
    }
    // Secrets go in an env file (wrangler shows them as "(hidden)"); --var would print them.
    envDir = mkdtempSync(join(tmpdir(), 'pg-net-edge-env-'));
    const envFile = join(envDir, 'worker.env');
    writeFileSync(envFile, `DATABASE_URL=${JSON.stringify(databaseUrl)}\nNUDGE_SECRET=${JSON.stringify(secret)}\n`, {
      mode: 0o600,
    });
    const workerUrl = `http://127.0.0.1:${port}`;
    progress(`starting the Worker under workerd (wrangler dev) on ${workerUrl}`);
    const wranglerBin = join(ROOT, 'node_modules', '.bin', 'wrangler');
    if (!existsSync(wranglerBin)) throw new StartupError(`${wranglerBin} not found; run npm install first`);
    wrangler = spawn(
      wranglerBin,
      [
        'dev',
        '--port',
        String(port),
        '--ip',
        '127.0.0.1',
        '--env-file',
        envFile,
        '--show-interactive-dev-session=false',
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
          ...env,
          // Not the Worker's DATABASE_URL (that comes from the env file), and no network lookups.
          DATABASE_URL: undefined,
          NUDGE_SECRET: undefined,
          // If wrangler.toml binds [[hyperdrive]] (deploy step 2), it connects here locally.
          CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: hyperdriveLocalUrl(databaseUrl),
          WRANGLER_SEND_METRICS: 'false',
          CLOUDFLARE_CF_FETCH_ENABLED: 'false',
          FORCE_COLOR: '0',
          NO_COLOR: '1',
        },
      },
    );
    const child = wrangler;
    const recent: string[] = [];
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => {
        recent.push(line.replace(/\x1b\[[0-9;]*m/g, ''));
        if (recent.length > 30) recent.shift();
        // wrangler colours its output even when piped; keep the prefixed lines plain text.
        const plain = line.replace(/\x1b\[[0-9;]*m/g, '');
        if (plain.trim()) out(`[worker] ${plain}`);
      });
    }
    wranglerExited = new Promise<void>((done) => child.once('exit', () => done()));
    child.once('error', (error) => out(`[worker] could not run wrangler: ${error.message}`));
    void wranglerExited.then(() => {
      // Before the ready block, waitForHealth reports this with wrangler's last lines.
      if (stopping || !ready) return;
      workerDied = true;
      progress(`the Worker (wrangler dev) exited unexpectedly (${child.exitCode ?? child.signalCode}); stopping`);
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
      fetch(url, { signal: AbortSignal.timeout(55_000) })
        .then((response) => response.body?.cancel())
        .catch((error: unknown) => progress(`cron "${cron}" could not be fired: ${String(error)}`));
    };
    fire(DRAIN_CRON); // drains whatever was queued while nothing was running
    timers.push(setInterval(() => fire(DRAIN_CRON), 60_000));
    timers.push(setInterval(() => fire(SWEEP_CRON), 5 * 60_000));

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
        `  crons      "${DRAIN_CRON}" every minute, "${SWEEP_CRON}" every 5 minutes (fired locally)`,
        '  stop       Ctrl-C',
        '',
      ].join('\n'),
    );

    ready = true;
    await stopRequested;
    await stopAll();
    progress('stopped');
    return workerDied ? 1 : 0;
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
