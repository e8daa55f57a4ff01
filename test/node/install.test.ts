// Installing: install() and `psql -f sql/install.sql` into empty databases, re-installs that keep
// data, concurrent installs, adopting a pg_net-era layout, refusing next to pg_net, and
// connection errors that say what to check without leaking the password.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { install, redact } from '../../src/node/install.ts';
import { MIGRATIONS, SCHEMA_VERSION } from '../support/schema.ts';
import { withDatabase } from '../support/urls.ts';

const run = promisify(execFile);
const INSTALL_SQL = fileURLToPath(new URL('../../sql/install.sql', import.meta.url));
const adminUrl = inject('adminUrl');
const closedPort = inject('closedPort');
const pid = inject('templateDb').replace('pne_template_', '');

let admin: postgres.Sql;
const created: string[] = [];
const open: postgres.Sql[] = [];

/** A new, empty database (no pg-net-edge); the global teardown drops pne_t_<pid>_* leftovers. */
async function emptyDatabase(): Promise<{ name: string; url: string; sql: postgres.Sql }> {
  const name = `pne_t_${pid}_inst_${Math.random().toString(36).slice(2, 10)}`;
  await admin.unsafe(`create database ${name}`);
  created.push(name);
  const url = withDatabase(adminUrl, name);
  const sql = postgres(url, { max: 2, fetch_types: false, onnotice: () => {} });
  open.push(sql);
  return { name, url, sql };
}

async function psqlInstall(url: string): Promise<{ stdout: string; stderr: string }> {
  return run('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', INSTALL_SQL, url], { timeout: 60_000 });
}

beforeAll(() => {
  admin = postgres(adminUrl, { max: 1, fetch_types: false, onnotice: () => {} });
});
afterAll(async () => {
  for (const sql of open) await sql.end();
  for (const name of created) await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
});

describe('install()', () => {
  it('installs into an empty database and says so', async () => {
    const db = await emptyDatabase();
    const lines: string[] = [];
    const report = await install(db.url, { log: (l) => lines.push(l) });
    expect(report).toEqual({ before: null, after: SCHEMA_VERSION, queued: 0, responses: 0 });
    expect(lines).toEqual([`installed pg-net-edge schema v${SCHEMA_VERSION} into ${db.name} (fresh)`]);
    const tables = await db.sql<{ name: string; persistence: string }[]>`
      select c.relname as name, c.relpersistence as persistence from pg_class c
      join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'net' and c.relkind = 'r' order by 1`;
    expect(tables).toEqual([
      { name: '_http_response', persistence: 'p' },
      { name: '_migrations', persistence: 'p' },
      { name: '_worker_status', persistence: 'p' },
      { name: 'http_request_queue', persistence: 'p' },
    ]);
    const migrations = await db.sql<{ version: number; applied: boolean }[]>`
      select version, applied_at is not null as applied from net._migrations order by version`;
    expect(migrations.map((m) => m.applied)).not.toContain(false);
    expect(migrations.map((m) => m.version)).toEqual(MIGRATIONS);
  });

  it('installing again keeps queued requests, responses and the id sequence, and reports them', async () => {
    const db = await emptyDatabase();
    await install(db.url, { log: () => {} });
    const ids = (await db.sql<{ id: string }[]>`
      select net.http_get('https://example.com/' || g) as id from generate_series(1, 12) g`).map((r) => r.id);
    await db.sql`select * from net._claim('drain-a', 1)`;
    await db.sql`select net._record('drain-a', ${db.sql.json([{ id: ids[0]!, status_code: 200, content: 'kept' }])})`;
    await db.sql`select net._heartbeat(${db.sql.json({ claimed: 1 })})`;

    const lines: string[] = [];
    const report = await install(db.url, { log: (l) => lines.push(l) });
    expect(report).toEqual({ before: SCHEMA_VERSION, after: SCHEMA_VERSION, queued: 11, responses: 1 });
    expect(lines).toEqual([`pg-net-edge in ${db.name} already at v${SCHEMA_VERSION}; functions refreshed; kept 11 queued requests and 1 response`]);

    const queued = await db.sql<{ id: string }[]>`select id from net.http_request_queue order by id`;
    expect(queued.map((r) => r.id)).toEqual(ids.slice(1));
    const [response] = await db.sql<{ content: string }[]>`select content from net._http_response where id = ${ids[0]!}`;
    expect(response!.content).toBe('kept');
    const [status] = await db.sql<{ last_drain: unknown }[]>`select last_drain from net._worker_status`;
    expect(status!.last_drain).toEqual({ claimed: 1 });
    const [next] = await db.sql<{ id: string }[]>`select net.http_get('https://example.com/next') as id`;
    expect(BigInt(next!.id) > BigInt(ids[11]!)).toBe(true);
  });

  it('two installs at once both succeed (the advisory lock serializes them)', async () => {
    const db = await emptyDatabase();
    const reports = await Promise.all([install(db.url, { log: () => {} }), install(db.url, { log: () => {} }), install(db.url, { log: () => {} })]);
    expect(reports.map((r) => r.after)).toEqual([SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]);
    expect(reports.filter((r) => r.before === null).length).toBeGreaterThanOrEqual(1);
    const rows = await db.sql`select version from net._migrations`;
    expect(rows).toHaveLength(MIGRATIONS.length);
  });

  it('re-runs a missing migration over existing objects and reports the upgrade', async () => {
    const db = await emptyDatabase();
    await install(db.url, { log: () => {} });
    await db.sql`select net.http_get('https://example.com/kept')`;
    // Pretend the database is at an older version: versions 1 and 2 must apply cleanly over what exists.
    await db.sql`delete from net._migrations where version > 1`;
    await db.sql`update net._migrations set version = 0`;
    const lines: string[] = [];
    const report = await install(db.url, { log: (l) => lines.push(l) });
    expect(report).toEqual({ before: 0, after: SCHEMA_VERSION, queued: 1, responses: 0 });
    expect(lines).toEqual([`upgraded pg-net-edge in ${db.name} from v0 to v${SCHEMA_VERSION}; kept 1 queued request and 0 responses`]);
  });

  it('adopts tables left in pg_net’s layout (unlogged, no lease columns), keeping their rows', async () => {
    const db = await emptyDatabase();
    await db.sql.unsafe(`
      create schema net;
      create unlogged table net.http_request_queue (
        id bigserial not null, method text not null, url text not null, headers jsonb not null,
        body bytea null, timeout_milliseconds integer not null);
      create unlogged table net._http_response (
        id bigint null, status_code integer null, content_type text null, headers jsonb null,
        content text null, timed_out boolean null, error_msg text null,
        created timestamp with time zone not null default now());
      insert into net.http_request_queue (method, url, headers, timeout_milliseconds)
        values ('GET', 'https://example.com/old', '{}', 1000);
      insert into net._http_response (id, status_code, content) values (100, 200, 'old response');`);
    const report = await install(db.url, { log: () => {} });
    expect(report).toEqual({ before: null, after: SCHEMA_VERSION, queued: 1, responses: 1 });
    const claimed = await db.sql<{ url: string; attempts: number }[]>`select url, attempts from net._claim('drain-a', 10)`;
    expect(claimed).toEqual([{ url: 'https://example.com/old', attempts: 1 }]);
    const persistence = await db.sql<{ relpersistence: string }[]>`
      select relpersistence from pg_class where oid in ('net.http_request_queue'::regclass, 'net._http_response'::regclass)`;
    expect(persistence.map((r) => r.relpersistence)).toEqual(['p', 'p']);
  });

  it('refuses to install next to the pg_net extension, saying to drop it', async () => {
    const db = await emptyDatabase();
    // pg_net's binaries are not on this machine; a catalog row is what the check looks at.
    await db.sql`
      insert into pg_extension (oid, extname, extowner, extnamespace, extrelocatable, extversion)
      values (999999, 'pg_net', 10, 'public'::regnamespace, false, '0.14.0')`;
    await expect(install(db.url, { log: () => {} })).rejects.toThrow(
      /pg_net extension is installed in this database; pg-net-edge replaces it \(DROP EXTENSION pg_net first/,
    );
    const [schema] = await db.sql<{ present: boolean }[]>`select to_regnamespace('net') is not null as present`;
    expect(schema!.present).toBe(false); // the whole file is one transaction: nothing was left behind
    await db.sql`delete from pg_extension where oid = 999999`;
  });

  it('connection refused: says what to check, never prints the password', async () => {
    const url = `postgres://someone:hunter2-secret@127.0.0.1:${closedPort}/nowhere`;
    const error = await install(url, { log: () => {} }).then(
      () => null,
      (e: Error) => e,
    );
    // The probe answers before the driver tries (and would retry).
    expect(error?.message).toMatch(/^cannot connect to PostgreSQL at postgres:\/\/someone:\*\*\*@127\.0\.0\.1:\d+\/nowhere: /);
    expect(error?.message).toMatch(/nothing listens on 127\.0\.0\.1:\d+ \(connection refused\): is PostgreSQL running, and is the port right\?/);
    expect(error?.message).not.toContain('hunter2-secret');
  });

  it('a database that does not exist: says so, never prints the password', async () => {
    const u = new URL(withDatabase(adminUrl, `pne_missing_${pid}`));
    const secret = u.password || 'trust-ignores-this-secret';
    u.password = secret;
    const error = await install(u.toString(), { log: () => {} }).then(
      () => null,
      (e: Error) => e,
    );
    expect(error?.message).toMatch(/cannot connect to PostgreSQL at postgres:\/\/[^:]+:\*\*\*@.*\(3D000: .*does the database exist\?/);
    // (the embedded server's password equals its user name, so look for it where a password goes)
    expect(error?.message).not.toContain(`:${secret}@`);
  });
});

describe('psql -f sql/install.sql', () => {
  it('installs, is idempotent, and keeps data between runs', async () => {
    const db = await emptyDatabase();
    const first = await psqlInstall(db.url);
    expect(first.stderr).toBe('');
    const [row] = await db.sql<{ id: string }[]>`select net.http_post('https://example.com/psql') as id`;
    const second = await psqlInstall(db.url);
    expect(second.stderr).toBe('');
    const queued = await db.sql<{ id: string }[]>`select id from net.http_request_queue`;
    expect(queued.map((r) => r.id)).toEqual([row!.id]);
    // and install() agrees with what psql did
    const report = await install(db.url, { log: () => {} });
    expect(report).toEqual({ before: SCHEMA_VERSION, after: SCHEMA_VERSION, queued: 1, responses: 0 });
  });

  it('fails with a non-zero exit next to pg_net', async () => {
    const db = await emptyDatabase();
    await db.sql`
      insert into pg_extension (oid, extname, extowner, extnamespace, extrelocatable, extversion)
      values (999998, 'pg_net', 10, 'public'::regnamespace, false, '0.14.0')`;
    await expect(psqlInstall(db.url)).rejects.toMatchObject({ stderr: expect.stringMatching(/pg_net extension is installed/) });
    await db.sql`delete from pg_extension where oid = 999998`;
  });
});

describe('redact', () => {
  it.each([
    ['postgres://user:secret@host:5432/db', 'postgres://user:***@host:5432/db'],
    ['postgresql://user:p%40ss%3Aword@host/db?sslmode=require', 'postgresql://user:***@host/db?sslmode=require'],
    ['postgres://user@host/db', 'postgres://user@host/db'],
    ['host=h user=u password=secret dbname=d', 'host=h user=u password=*** dbname=d'],
    ["host=h password='with space' dbname=d", 'host=h password=*** dbname=d'],
  ])('%s → %s', (input, output) => {
    expect(redact(input)).toBe(output);
  });
});

describe('as a non-superuser (a managed database’s ordinary role)', () => {
  const role = `pne_owner_${pid}_${Math.random().toString(36).slice(2, 8)}`;
  const password = 'owner-pw-7c1e';
  let db: { name: string; url: string; sql: postgres.Sql };

  beforeAll(async () => {
    db = await emptyDatabase();
    await admin.unsafe(`create role ${role} login password '${password}' nosuperuser nocreatedb nocreaterole`);
    await admin.unsafe(`grant create, connect on database ${db.name} to ${role}`);
  });
  afterAll(async () => {
    for (const sql of open) await sql.end().catch(() => {});
    await admin.unsafe(`drop database if exists ${db.name} with (force)`);
    await admin.unsafe(`drop role if exists ${role}`);
  });

  it('installs with only CREATE on the database, and owns a working queue', async () => {
    const u = new URL(db.url);
    u.username = role;
    u.password = password;
    const report = await install(u.toString(), { log: () => {} });
    expect(report).toEqual({ before: null, after: SCHEMA_VERSION, queued: 0, responses: 0 });
    const owner = postgres(u.toString(), { max: 1, fetch_types: false, onnotice: () => {} });
    open.push(owner);
    const [row] = await owner<{ id: string }[]>`select net.http_post('https://example.com/managed') as id`;
    const claimed = await owner<{ id: string }[]>`select id from net._claim('drain-a', 10)`;
    expect(claimed.map((r) => r.id)).toEqual([row!.id]);
    const [recorded] = await owner<{ n: number }[]>`
      select net._record('drain-a', ${owner.json([{ id: row!.id, status_code: 200 }])}) as n`;
    expect(recorded!.n).toBe(1);
    const [config] = await owner<{ c: unknown }[]>`select net._config() as c`;
    expect(config!.c).toEqual({ ttl: '6 hours', batch_size: 200 });
    // psql -f as the same role is idempotent too
    await psqlInstall(u.toString());
  });
});
