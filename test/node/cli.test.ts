// The pg-net-edge CLI as a user runs it: a child process of bin/pg-net-edge.mjs, against the
// real test PostgreSQL and the loopback target.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../src/node/embedded.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { until } from '../support/until.ts';
import { withDatabase } from '../support/urls.ts';

const BIN = new URL('../../bin/pg-net-edge.mjs', import.meta.url).pathname;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, DATABASE_URL: undefined, NUDGE_URL: undefined, NUDGE_SECRET: undefined, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 50_000);
    child.on('error', fail);
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

describe('help and usage', () => {
  it('prints the commands with --help and exits 0', async () => {
    const run = await cli(['--help']);
    expect(run.code).toBe(0);
    for (const command of ['install', 'relay', 'drain', 'start']) expect(run.stdout).toContain(command);
  });

  it.each(['install', 'relay', 'drain', 'start'])('%s --help describes its options', async (command) => {
    const run = await cli([command, '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`Usage: pg-net-edge ${command}`);
  });

  it('rejects an unknown command with the usage and a non-zero exit', async () => {
    const run = await cli(['frobnicate']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('"frobnicate" is not a command');
    expect(run.stderr).toContain('Usage: pg-net-edge <command>');
  });

  it('rejects an unknown option', async () => {
    const run = await cli(['install', '--databse-url', 'x']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("Unknown option '--databse-url'");
  });

  it('says which setting is missing', async () => {
    const install = await cli(['install']);
    expect(install.code).toBe(2);
    expect(install.stderr).toContain('missing --database-url (or set DATABASE_URL, or use --database-url-file)');
    const relay = await cli(['relay', '--database-url', 'postgres://x@127.0.0.1/x', '--secret', 's']);
    expect(relay.code).toBe(2);
    expect(relay.stderr).toContain('missing --nudge-url (or set NUDGE_URL');
  });

  it("rejects another command's option", async () => {
    const run = await cli(['install', '--secret', 'x']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--secret is not an option of install');
  });
});

/** A file holding `text`, in a folder removed after the file's tests. */
const folders: string[] = [];
function fileWith(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'pg-net-edge-cli-'));
  folders.push(dir);
  const path = join(dir, 'value');
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}
afterAll(() => {
  for (const dir of folders) rmSync(dir, { recursive: true, force: true });
});

describe('connecting: clear failures within seconds', () => {
  it('install against a port that answers but is not PostgreSQL fails at once, saying so', async () => {
    let connections = 0;
    const http = createServer((_req, res) => res.end('not a database'));
    http.on('connection', () => connections++);
    await new Promise<void>((done) => http.listen(0, '127.0.0.1', () => done()));
    const port = (http.address() as AddressInfo).port;
    try {
      const run = await cli(['install'], { DATABASE_URL: `postgres://bob:Hidden9Pw@127.0.0.1:${port}/db` });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`cannot connect to PostgreSQL at postgres://bob:***@127.0.0.1:${port}/db`);
      expect(run.stderr).toContain(`127.0.0.1:${port} is not PostgreSQL`);
      expect(run.stdout + run.stderr).not.toContain('Hidden9Pw');
      // One look, not a reconnect loop (the driver alone made thousands of connections).
      expect(connections).toBe(1);
    } finally {
      http.close();
    }
  });

  it.each(['relay', 'drain'])('%s against a closed port says what to check and exits 1', async (command) => {
    const port = await freePort();
    const run = await cli([command], {
      DATABASE_URL: `postgres://bob@127.0.0.1:${port}/db`,
      NUDGE_URL: 'http://127.0.0.1:9/nudge',
      NUDGE_SECRET: 'x-secret-x',
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`pg-net-edge ${command}: cannot connect to PostgreSQL`);
    expect(run.stderr).toContain(`nothing listens on 127.0.0.1:${port} (connection refused)`);
  });
});

describe('secrets on the command line', () => {
  it('a password in --database-url works but warns that it shows in ps', async () => {
    const port = await freePort();
    const run = await cli(['install', '--database-url', `postgres://bob:Shown1InPs@127.0.0.1:${port}/db`]);
    expect(run.stderr).toContain('warning: --database-url shows in the process list (ps)');
    expect(run.stderr).toContain('set DATABASE_URL or use --database-url-file instead');
    expect(run.stdout + run.stderr).not.toContain('Shown1InPs');
  });

  it('--database-url-file is read (trailing newline dropped), without a warning', async () => {
    const port = await freePort();
    const run = await cli(['install', '--database-url-file', fileWith(`postgres://bob:FromFile7@127.0.0.1:${port}/db\n`)]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`postgres://bob:***@127.0.0.1:${port}/db`);
    expect(run.stderr).not.toContain('warning');
    expect(run.stdout + run.stderr).not.toContain('FromFile7');
  });

  it('refuses a missing or empty file, and both forms at once', async () => {
    const missing = await cli(['install', '--database-url-file', '/nonexistent/pg-net-edge-url']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('cannot read --database-url-file /nonexistent/pg-net-edge-url: ENOENT');
    const empty = await cli(['install', '--database-url-file', fileWith('\n')]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain('is empty');
    const both = await cli(['install', '--database-url', 'postgres://x@127.0.0.1/x', '--database-url-file', fileWith('x')]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('give --database-url or --database-url-file, not both');
  });
});

describe('install', () => {
  const adminUrl = inject('adminUrl');
  const name = `pne_t_cli_${process.pid}_${Date.now().toString(36)}`;
  let admin: postgres.Sql;

  beforeAll(async () => {
    admin = postgres(adminUrl, { max: 1, fetch_types: false, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
  });

  afterAll(async () => {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
  });

  it('installs into an empty database, then again idempotently keeping queued requests', async () => {
    const url = withDatabase(adminUrl, name);
    const first = await cli(['install', '--database-url-file', fileWith(url)]);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/installed pg-net-edge schema v\d+ into .* \(fresh\)/);

    const sql = postgres(url, { max: 1, fetch_types: false, onnotice: () => {} });
    try {
      await sql`select net.http_get('http://127.0.0.1:9/cli/kept')`;
      // The env fallback this time.
      const second = await cli(['install'], { DATABASE_URL: url });
      expect(second.code).toBe(0);
      expect(second.stdout).toContain('already at v');
      expect(second.stdout).toContain('kept 1 queued request');
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
      expect(row?.n).toBe(1);
    } finally {
      await sql.end();
    }
  });

  it('fails with a helpful message and no password when the server is unreachable', async () => {
    const port = await freePort();
    const password = 'Sup3rSecretPw';
    const run = await cli(['install', '--database-url', `postgres://bob:${password}@127.0.0.1:${port}/db`]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('cannot connect to PostgreSQL');
    expect(run.stderr).toContain(`postgres://bob:***@127.0.0.1:${port}/db`);
    expect(run.stdout + run.stderr).not.toContain(password);
  });

  it('fails with a helpful message and no password when the database does not exist', async () => {
    const password = 'An0therSecretPw';
    const u = new URL(withDatabase(adminUrl, 'pne_no_such_database'));
    u.password = password;
    const run = await cli(['install', '--database-url', u.toString()]);
    expect(run.code).toBe(1);
    // Under trust auth the server says the database is missing; under password auth (embedded) the
    // wrong password fails first. Either way the message says what to check.
    expect(run.stderr).toMatch(/does the database exist\?|are the user name and password right\?/);
    expect(run.stdout + run.stderr).not.toContain(password);
  });
});

describe('drain', () => {
  let db: TestDatabase;
  const target = inject('targetUrl');
  const prefix = `/hits/cli-${process.pid}-${Date.now().toString(36)}/`;

  beforeAll(async () => {
    db = await freshDatabase();
  });

  afterAll(async () => {
    await db?.sql.end();
  });

  it('drains the queue once and prints its stats', async () => {
    await db.sql.begin(async (tx) => {
      for (let i = 0; i < 20; i++) await tx`select net.http_get(${`${target}${prefix}${i}`})`;
    });
    const run = await cli(['drain'], { DATABASE_URL: db.url, CONCURRENCY: '4' });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const stats = JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}') as { claimed: number; recorded: number };
    expect(stats.claimed).toBe(20);
    expect(stats.recorded).toBe(20);
    const [queue] = await db.sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
    expect(queue?.n).toBe(0);
    const rows = await db.sql<{ status_code: number; content: string }[]>`
      select status_code, content from net._http_response`;
    expect(rows).toHaveLength(20);
    expect(rows.every((r) => r.status_code === 200 && r.content === 'hit')).toBe(true);
    const hits = (await (await fetch(`${target}/__hits?prefix=${encodeURIComponent(prefix)}`)).json()) as Record<string, number>;
    expect(Object.keys(hits)).toHaveLength(20);
    expect(Object.values(hits).every((n) => n === 1)).toBe(true);
  });

  it('refuses bad tuning, naming the variable', async () => {
    const run = await cli(['drain'], { DATABASE_URL: db.url, CONCURRENCY: 'lots' });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('CONCURRENCY must be a whole number');
  });

  it('fails clearly when the database is unreachable', async () => {
    const port = await freePort();
    const run = await cli(['drain', '--database-url', `postgres://bob:Pw0rdSecret1@127.0.0.1:${port}/db`]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('pg-net-edge drain:');
    expect(run.stdout + run.stderr).not.toContain('Pw0rdSecret1');
  });
});

/** A long-running command: its output so far, and a way to wait for a line. */
function background(args: string[], env: Record<string, string | undefined>) {
  const child: ChildProcess = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, DATABASE_URL: undefined, NUDGE_URL: undefined, NUDGE_SECRET: undefined, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout?.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (text += c.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  return { child, exited, output: () => text };
}

/** A loopback /nudge that answers 202 and keeps each request's Authorization header. */
async function nudgeReceiver() {
  const auths: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    auths.push(req.headers.authorization);
    req.resume();
    res.writeHead(202).end();
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', () => done()));
  const nudgeUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/nudge`;
  return { auths, nudgeUrl, server };
}

describe('long-running commands', () => {
  let db: TestDatabase;
  const target = inject('targetUrl');

  beforeAll(async () => {
    db = await freshDatabase();
  });

  afterAll(async () => {
    await db?.sql.end();
  });

  it('relay nudges with the secret from the environment and stops on SIGTERM', async () => {
    const { auths, nudgeUrl, server } = await nudgeReceiver();
    const secret = 'cli-relay-secret-77aa';
    const relay = background(['relay', '--nudge-url', nudgeUrl], { DATABASE_URL: db.url, NUDGE_SECRET: secret });
    try {
      await until('the re-listen nudge', () => auths.length >= 1);
      await db.sql`select net.http_get('http://127.0.0.1:9/cli-relay')`;
      await until('the commit nudge', () => auths.length >= 2);
      expect(auths.every((a) => a === `Bearer ${secret}`)).toBe(true);
      relay.child.kill('SIGTERM');
      expect(await relay.exited).toBe(0);
      expect(relay.output()).toContain('relay: listening on pg_net_edge_wake');
      expect(relay.output()).toMatch(/relay: stopped \(\d+ notifications, \d+ nudges sent\)/);
      expect(relay.output()).not.toContain(secret);
    } finally {
      relay.child.kill('SIGKILL');
      server.close();
    }
  });

  it.each([
    ['--secret-file', false],
    ['--secret', true],
  ] as const)('relay reads the secret from %s (warning only for the argument) and never prints it', async (flag, warns) => {
    const { auths, nudgeUrl, server } = await nudgeReceiver();
    const secret = `cli-relay-${flag.slice(2)}-9bd1e0`;
    const value = flag === '--secret-file' ? fileWith(`${secret}\n`) : secret;
    const relay = background(['relay', '--nudge-url', nudgeUrl, '--database-url-file', fileWith(db.url), flag, value], {});
    try {
      await until('the re-listen nudge', () => auths.length >= 1);
      expect(auths[0]).toBe(`Bearer ${secret}`);
      relay.child.kill('SIGTERM');
      expect(await relay.exited).toBe(0);
      expect(relay.output().includes('warning: --secret shows in the process list (ps)')).toBe(warns);
      expect(relay.output()).not.toContain(secret);
    } finally {
      relay.child.kill('SIGKILL');
      server.close();
    }
  });

  it('drain --loop sends requests as they are committed and stops on SIGINT', async () => {
    const prefix = `/hits/cli-loop-${process.pid}-${Date.now().toString(36)}/`;
    const loop = background(['drain', '--loop'], { DATABASE_URL: db.url });
    try {
      for (let i = 0; i < 3; i++) await db.sql`select net.http_get(${`${target}${prefix}${i}`})`;
      await until('three responses', async () => {
        const [row] = await db.sql<{ n: number }[]>`
          select count(*)::int as n from net._http_response where content = 'hit'`;
        const hits = (await (await fetch(`${target}/__hits?prefix=${encodeURIComponent(prefix)}`)).json()) as Record<string, number>;
        return (row?.n ?? 0) >= 3 && Object.keys(hits).length === 3;
      });
      loop.child.kill('SIGINT');
      expect(await loop.exited).toBe(0);
      expect(loop.output()).toContain('drain: stopping after the current drain');
      const [queue] = await db.sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
      expect(queue?.n).toBe(0);
    } finally {
      loop.child.kill('SIGKILL');
    }
  });
});
