// `npm start` end to end: the real bin spawns wrangler dev (workerd), installs the SQL, starts the
// relay; a committed net.http_get reaches the loopback target through relay → /nudge → Worker.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../src/node/embedded.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { until } from '../support/until.ts';

const BIN = new URL('../../bin/pg-net-edge.mjs', import.meta.url).pathname;
const ROOT = new URL('../..', import.meta.url).pathname;
// Unique per run, so a search of the disk and the process list finds only this run's copies.
const SECRET = `Qx7${randomBytes(12).toString('hex')}`;

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  waitFor: (text: string, timeoutMs?: number) => Promise<void>;
}

function startCli(env: Record<string, string | undefined>, cwd?: string, args: string[] = [], viaNpm = false): Started {
  const child = spawn(viaNpm ? 'npm' : process.execPath, viaNpm ? ['start', '--silent', '--', ...args] : [BIN, 'start', ...args], {
    cwd: viaNpm ? ROOT : cwd,
    env: { ...process.env, DATABASE_URL: undefined, NUDGE_SECRET: undefined, PORT: undefined, PG_PORT: undefined, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Through npm, in its own process group, so a test can signal npm and its child at once as a
    // terminal's Ctrl-C does.
    detached: viaNpm,
  });
  let text = '';
  child.stdout?.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (text += c.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  return {
    child,
    output: () => text,
    exited,
    waitFor: async (needle, timeoutMs = 90_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!text.includes(needle)) {
        if (gone) throw new Error(`start exited before printing "${needle}":\n${text}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for "${needle}":\n${text}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen(port, '127.0.0.1', () => server.close(() => done(true)));
  });
}

/** Processes whose command line mentions the Worker's port: wrangler and workerd, if still alive. */
function workerProcesses(port: number): string[] {
  const lines = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n');
  return lines.filter((l) => l.includes(`--port ${port} `) || l.includes(`entry=127.0.0.1:${port} `));
}

/** Files under the folders holding `needle` (grep -r): where a secret written to disk would be. */
function filesHolding(needle: string, folders: string[]): string[] {
  const found = spawnSync('grep', ['-rlsF', '--exclude-dir=node_modules', needle, ...folders.filter(existsSync)], {
    encoding: 'utf8',
  });
  return found.stdout.split('\n').filter(Boolean);
}

describe('npm start with DATABASE_URL', () => {
  let db: TestDatabase;
  let port: number;
  let run: Started | undefined;
  const target = inject('targetUrl');

  beforeAll(async () => {
    db = await freshDatabase();
    port = await freePort();
  });

  afterAll(async () => {
    if (run && run.child.exitCode === null) {
      run.child.kill('SIGTERM');
      await run.exited;
    }
    await db?.sql.end();
  });

  it('runs the whole system, relays a committed request, and stops cleanly on SIGINT', { timeout: 120_000 }, async () => {
    run = startCli({ DATABASE_URL: db.url, PORT: String(port), NUDGE_SECRET: SECRET });
    await run.waitFor('pg-net-edge is ready');
    await run.waitFor('  stop       Ctrl-C');
    const text = run.output();
    expect(text).toContain(`worker     http://127.0.0.1:${port}`);
    const shown = new URL(db.url);
    if (shown.password) shown.password = '***'; // printed redacted
    expect(text).toContain(`database   ${shown.toString()}`);
    expect(text).toContain(`select net.http_get('http://127.0.0.1:${port}/health');`);
    expect(text).toContain('select * from net._http_response;');
    expect(text).toMatch(/\[worker\] .*Ready on http:\/\/127\.0\.0\.1:/);
    expect(text).toContain('relay: listening on pg_net_edge_wake');
    // No part of the secret is printed (wrangler shows it as "(hidden)"), none is on disk (it
    // reaches wrangler through its environment) and none is in the process list.
    expect(text).toContain('nudge secret: from NUDGE_SECRET (never shown)');
    expect(text).not.toContain(SECRET.slice(0, 6));
    expect(filesHolding(SECRET, [tmpdir(), join(ROOT, '.wrangler'), ROOT])).toEqual([]);
    expect(execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })).not.toContain(SECRET);
    // Our ticker fires the crons, and wrangler does not say otherwise.
    expect(text).toContain('(fired by pg-net-edge, as Cloudflare would)');
    expect(text).not.toContain('not automatically triggered');

    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);
    expect(((await health.json()) as { ok?: boolean }).ok).toBe(true);

    // No cron tick is due for a minute: a response within seconds came via the relay's nudge.
    const key = `/hits/start-${process.pid}-${Date.now().toString(36)}/1`;
    const [row] = await db.sql<{ id: string }[]>`select net.http_get(${target + key})::text as id`;
    const id = row!.id;
    await until(
      'the response row',
      async () => (await db.sql`select 1 from net._http_response where id = ${id}::bigint`).length === 1,
      15_000,
    );
    const [response] = await db.sql<{ status_code: number; content: string }[]>`
      select status_code, content from net._http_response where id = ${id}::bigint`;
    expect(response).toEqual({ status_code: 200, content: 'hit' });
    const hits = (await (await fetch(`${target}/__hits?prefix=${encodeURIComponent(key)}`)).json()) as Record<string, number>;
    expect(hits[key]).toBe(1);

    // A wrong secret is refused by the Worker it started.
    const refused = await fetch(`http://127.0.0.1:${port}/nudge`, {
      method: 'POST',
      headers: { authorization: 'Bearer not-the-secret' },
    });
    expect(refused.status).toBe(401);

    run.child.kill('SIGINT');
    expect(await run.exited).toBe(0);
    expect(run.output()).toContain('pg-net-edge: stopped');
    expect(run.output()).not.toContain('could not be fired');
    await until('the port to be free', () => portIsFree(port), 10_000);
    expect(workerProcesses(port)).toEqual([]);
  });

  it('Ctrl-C through `npm start` (npm and start signalled together) prints "stopped" and exits 0', { timeout: 120_000 }, async () => {
    const p = await freePort();
    const npm = startCli({ DATABASE_URL: db.url, NUDGE_SECRET: SECRET }, undefined, ['--port', String(p)], true);
    try {
      await npm.waitFor('pg-net-edge is ready');
      expect(npm.output()).toContain(`worker     http://127.0.0.1:${p}`); // --port reached start through npm
      process.kill(-npm.child.pid!, 'SIGINT'); // what a terminal does: the whole foreground group
      expect(await npm.exited).toBe(0);
      const text = npm.output();
      expect(text).toContain('pg-net-edge: stopped');
      expect(text).not.toContain('stopping now'); // npm's forwarded copy is the same Ctrl-C
      expect(text).not.toMatch(/npm (ERR|error)/);
      expect(text).not.toContain('could not be fired');
      await until('the port to be free', () => portIsFree(p), 10_000);
      expect(workerProcesses(p)).toEqual([]);
    } finally {
      if (npm.child.exitCode === null) process.kill(-npm.child.pid!, 'SIGKILL');
    }
  });

  it('a second signal during shutdown still stops wrangler and exits', { timeout: 120_000 }, async () => {
    const p = await freePort();
    const second = startCli({ DATABASE_URL: db.url, PORT: String(p), NUDGE_SECRET: SECRET });
    await second.waitFor('pg-net-edge is ready');
    second.child.kill('SIGINT');
    await second.waitFor('stopping…');
    await new Promise((r) => setTimeout(r, 1_100)); // past the window that merges npm's forwarded copy
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    await until('the port to be free', () => portIsFree(p), 10_000);
    expect(workerProcesses(p)).toEqual([]);
  });

  it('killed with SIGKILL, it leaves no wrangler or workerd behind', { timeout: 120_000 }, async () => {
    const p = await freePort();
    const run = startCli({ DATABASE_URL: db.url, NUDGE_SECRET: SECRET }, undefined, ['--port', String(p)]);
    await run.waitFor('pg-net-edge is ready');
    expect(workerProcesses(p)).not.toEqual([]);
    run.child.kill('SIGKILL');
    await run.exited;
    // The watchdog notices the closed pipe and ends wrangler's process group.
    await until('wrangler and workerd to be gone', async () => workerProcesses(p).length === 0 && (await portIsFree(p)), 20_000);
  });

  it('when workerd dies, start says so and exits 1', { timeout: 120_000 }, async () => {
    const p = await freePort();
    const run = startCli({ DATABASE_URL: db.url, NUDGE_SECRET: SECRET }, undefined, ['--port', String(p)]);
    await run.waitFor('pg-net-edge is ready');
    const workerd = workerProcesses(p).find((line) => line.includes('workerd serve'));
    expect(workerd).toBeDefined();
    process.kill(Number(workerd!.trim().split(/\s+/)[0]), 'SIGKILL');
    expect(await run.exited).toBe(1);
    const text = run.output();
    expect(text).toContain(`the Worker (workerd) died: nothing answers on http://127.0.0.1:${p} any more`);
    expect(text).toContain('pg-net-edge: stopped because the Worker died (exit 1)');
    await until('wrangler to be gone', async () => workerProcesses(p).length === 0, 15_000);
  });
});

describe('npm start failures', () => {
  it('exits non-zero with a clear message when the database is unreachable', async () => {
    const dbPort = await freePort();
    const run = startCli({
      DATABASE_URL: `postgres://postgres:TopSecretPw9@127.0.0.1:${dbPort}/postgres`,
      PORT: String(await freePort()),
    });
    expect(await run.exited).toBe(1);
    const text = run.output();
    expect(text).toContain('pg-net-edge: could not start');
    expect(text).toContain('cannot connect to PostgreSQL');
    expect(text).not.toContain('TopSecretPw9');
  });

  it('--database-url-file: a port that is not PostgreSQL fails at once, saying so, password hidden', async () => {
    const http = createHttpServer((_req, res) => res.end('hello'));
    await new Promise<void>((done) => http.listen(0, '127.0.0.1', () => done()));
    const dbPort = (http.address() as AddressInfo).port;
    const dir = mkdtempSync(join(tmpdir(), 'pg-net-edge-start-url-'));
    try {
      const file = join(dir, 'url');
      writeFileSync(file, `postgres://postgres:FileSecret42@127.0.0.1:${dbPort}/postgres\n`, { mode: 0o600 });
      const run = startCli({ PORT: String(await freePort()) }, undefined, ['--database-url-file', file]);
      expect(await run.exited).toBe(1);
      const text = run.output();
      expect(text).toContain(`pg-net-edge: could not start: cannot connect to PostgreSQL at postgres://postgres:***@127.0.0.1:${dbPort}/postgres`);
      expect(text).toContain(`127.0.0.1:${dbPort} is not PostgreSQL`);
      expect(text).not.toContain('FileSecret42');
      expect(text).not.toContain('starting the Worker');
    } finally {
      http.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits non-zero when the Worker port is taken, saying so', async () => {
    const db = await freshDatabase();
    const blocker = createServer();
    await new Promise<void>((done) => blocker.listen(0, '127.0.0.1', () => done()));
    const address = blocker.address();
    const taken = typeof address === 'object' && address ? address.port : 0;
    try {
      const run = startCli({ DATABASE_URL: db.url }, undefined, ['--port', String(taken)]);
      expect(await run.exited).toBe(1);
      expect(run.output()).toContain(`port ${taken} (the Worker's) is already in use on 127.0.0.1; stop what uses it, or pass --port N`);
      // Found before anything started.
      expect(run.output()).not.toContain('installing the SQL API');
    } finally {
      blocker.close();
      await db.sql.end();
    }
  });

  it('rejects a PORT that is not a port', async () => {
    const db = await freshDatabase();
    try {
      const run = startCli({ DATABASE_URL: db.url, PORT: 'eighty' });
      expect(await run.exited).toBe(1);
      expect(run.output()).toContain('PORT=eighty is not a TCP port');
      const flag = startCli({ DATABASE_URL: db.url }, undefined, ['--port', '70000']);
      expect(await flag.exited).toBe(1);
      expect(flag.output()).toContain('--port 70000 is not a TCP port');
    } finally {
      await db.sql.end();
    }
  });
});

describe('npm start: the embedded PostgreSQL\'s port', () => {
  it('fails at once, naming --pg-port, when the port is taken; nothing is started', async () => {
    const blocker = createServer();
    await new Promise<void>((done) => blocker.listen(0, '127.0.0.1', () => done()));
    const address = blocker.address();
    const taken = typeof address === 'object' && address ? address.port : 0;
    const cwd = mkdtempSync(join(tmpdir(), 'pg-net-edge-start-port-'));
    try {
      for (const [env, args] of [[{ PG_PORT: String(taken) }, []], [{}, ['--pg-port', String(taken)]]] as const) {
        const run = startCli({ ...env, PORT: String(await freePort()) }, cwd, [...args]);
        expect(await run.exited).toBe(1);
        expect(run.output()).toContain(
          `port ${taken} (the embedded PostgreSQL's) is already in use on 127.0.0.1; stop what uses it (another pg-net-edge?), or pass --pg-port N (or set PG_PORT)`,
        );
        expect(run.output()).not.toContain('starting an embedded PostgreSQL');
      }
      expect(existsSync(join(cwd, '.pg-net-edge'))).toBe(false);
    } finally {
      blocker.close();
      rmSync(cwd, { recursive: true, force: true });
    }
  });
});

describe('npm start without DATABASE_URL', () => {
  let cwd: string;
  const runs: Started[] = [];

  beforeAll(() => {
    cwd = mkdtempSync(join(tmpdir(), 'pg-net-edge-start-'));
    // mkdtemp makes it 0700; as root, the embedded server runs as a `postgres` user that must enter it.
    chmodSync(cwd, 0o755);
  });

  afterAll(async () => {
    // A failed test must not leave its PostgreSQL holding the data folder for the next one.
    for (const run of runs) {
      if (run.child.exitCode === null && run.child.signalCode === null) {
        run.child.kill('SIGTERM');
        await run.exited;
      }
    }
    rmSync(cwd, { recursive: true, force: true });
  });

  it('starts an embedded PostgreSQL with its data in .pg-net-edge/pgdata and stops it on SIGTERM', { timeout: 180_000 }, async () => {
    const port = await freePort();
    const pgPort = await freePort();
    const run = startCli({ PORT: String(port) }, cwd, ['--pg-port', String(pgPort)]);
    runs.push(run);
    await run.waitFor('pg-net-edge is ready', 150_000);
    const text = run.output();
    expect(text).toContain('no DATABASE_URL: starting an embedded PostgreSQL');
    expect(text).toContain('nudge secret');
    expect(text).toContain('nudge secret: generated for this run (never shown)');
    const psql = /psql +psql (postgres:\/\/\S+)/.exec(text)?.[1];
    expect(psql).toBeDefined();
    // The database line hides the password; the psql line is the one to copy.
    expect(text).toMatch(/database +postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/postgres/);
    expect(existsSync(join(cwd, '.pg-net-edge', 'pgdata', 'PG_VERSION'))).toBe(true);
    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);

    const dbPort = Number(new URL(psql!).port);
    expect(dbPort).toBe(pgPort);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    expect(run.output()).toContain('stopping the embedded PostgreSQL');
    await until('both ports to be free', async () => (await portIsFree(port)) && (await portIsFree(dbPort)), 15_000);
    // Data kept for the next run.
    expect(existsSync(join(cwd, '.pg-net-edge', 'pgdata', 'PG_VERSION'))).toBe(true);
  });

  it('killed with SIGKILL, it leaves no PostgreSQL, wrangler or workerd behind', { timeout: 180_000 }, async () => {
    const port = await freePort();
    const pgPort = await freePort();
    const run = startCli({ PG_PORT: String(pgPort) }, cwd, ['--port', String(port)]);
    await run.waitFor('pg-net-edge is ready', 150_000);
    expect(await portIsFree(pgPort)).toBe(false);
    run.child.kill('SIGKILL');
    await run.exited;
    await until(
      'PostgreSQL, wrangler and workerd to be gone',
      async () => (await portIsFree(port)) && (await portIsFree(pgPort)) && workerProcesses(port).length === 0,
      30_000,
    );
    expect(existsSync(join(cwd, '.pg-net-edge', 'pgdata', 'postmaster.pid'))).toBe(false);
  });
});
