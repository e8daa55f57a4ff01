// The worker-facing SQL (net._claim, _release, _record, _sweep, _config, _heartbeat, _health) and the
// functions that read what the worker wrote (collect_response, check_worker_is_up,
// wait_until_running, the settings view), against real PostgreSQL with real concurrent sessions.
import postgres from 'postgres';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { emptyQueue, useFreshDatabase, type TestDatabase } from '../support/db.ts';
import { SCHEMA_VERSION } from '../support/schema.ts';

let db: TestDatabase;
let sql: postgres.Sql;
const { session } = useFreshDatabase((fresh) => {
  db = fresh;
  sql = fresh.sql;
});
beforeEach(async () => {
  await emptyQueue(sql);
  await sql`update net._worker_status set last_seen = null, last_drain = null, restart_requested = null`;
});

interface Claimed {
  id: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body: Buffer | null;
  timeout_milliseconds: number;
  attempts: number;
}

/** Waits until another session is running a statement like pattern (so it is really waiting). */
async function activeQuery(pattern: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where datname = ${db.name} and state = 'active' and query like ${pattern} and pid <> pg_backend_pid()`;
    if (row!.n > 0) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no session ran ${pattern}`);
}

async function queue(n: number, timeout = 2000): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    select net.http_get('https://example.com/' || g, timeout_milliseconds := ${timeout}) as id
    from generate_series(1, ${n}) g`;
  return rows.map((r) => r.id);
}

async function claim(s: postgres.Sql | postgres.TransactionSql, owner: string, max: number, margin = 30000, maxTimeout: number | null = null) {
  return s<Claimed[]>`select * from net._claim(${owner}, ${max}, ${margin}, ${maxTimeout})`;
}

async function record(owner: string, responses: unknown[]): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select net._record(${owner}, ${sql.json(responses as postgres.JSONValue)}) as n`;
  return row!.n;
}

describe('net._claim', () => {
  it('claims the oldest free rows first, stamps the lease and counts the attempt', async () => {
    const ids = await queue(5, 4000);
    const claimed = await claim(sql, 'drain-a', 3, 10000);
    expect(claimed.map((r) => r.id)).toEqual(ids.slice(0, 3));
    expect(claimed[0]).toMatchObject({ method: 'GET', url: 'https://example.com/1', headers: {}, body: null, timeout_milliseconds: 4000, attempts: 1 });
    const rows = await sql<{ id: string; lease_owner: string | null; lease_ms: number | null; attempts: number }[]>`
      select id, lease_owner, attempts,
             extract(epoch from lease_expires - clock_timestamp()) * 1000 as lease_ms
      from net.http_request_queue order by id`;
    for (const row of rows.slice(0, 3)) {
      expect(row.lease_owner).toBe('drain-a');
      expect(row.attempts).toBe(1);
      // timeout (4000) + margin (10000), minus however long this test took to get here
      expect(Number(row.lease_ms)).toBeLessThanOrEqual(14000);
      expect(Number(row.lease_ms)).toBeGreaterThan(4000);
    }
    for (const row of rows.slice(3)) expect(row).toMatchObject({ lease_owner: null, lease_ms: null, attempts: 0 });
  });

  it('returns bodies as bytes and nothing when the queue is empty or max_rows <= 0', async () => {
    await sql`select net.http_post('https://example.com/p', '{"a": "é"}')`;
    expect(await claim(sql, 'drain-a', 0)).toEqual([]);
    const [row] = await claim(sql, 'drain-a', 10);
    expect(Buffer.from(row!.body!).toString('utf8')).toBe('{"a": "é"}');
    expect(await claim(sql, 'drain-a', 10)).toEqual([]);
  });

  it('a live lease is not claimed again, by the same or another owner', async () => {
    await queue(2);
    expect(await claim(sql, 'drain-a', 10)).toHaveLength(2);
    expect(await claim(sql, 'drain-b', 10)).toHaveLength(0);
    expect(await claim(sql, 'drain-a', 10)).toHaveLength(0);
  });

  it('skip locked: a concurrent claim takes other rows instead of waiting for an open claim', async () => {
    const ids = await queue(5);
    const other = session({ connection: { statement_timeout: 10000 } });
    await sql.begin(async (tx) => {
      const first = await claim(tx, 'drain-a', 2);
      expect(first.map((r) => r.id)).toEqual(ids.slice(0, 2));
      // drain-a's transaction is still open and holds its two rows locked.
      const second = await claim(other, 'drain-b', 10);
      expect(second.map((r) => r.id)).toEqual(ids.slice(2));
    });
    const owners = await sql<{ lease_owner: string }[]>`select lease_owner from net.http_request_queue order by id`;
    expect(owners.map((r) => r.lease_owner)).toEqual(['drain-a', 'drain-a', 'drain-b', 'drain-b', 'drain-b']);
  });

  it('many concurrent claimers never get the same row', async () => {
    await queue(200);
    const claimers = Array.from({ length: 6 }, () => session());
    const results = await Promise.all(claimers.map((s, i) => claim(s, `drain-${i}`, 50)));
    const all = results.flat().map((r) => r.id);
    expect(all).toHaveLength(200);
    expect(new Set(all).size).toBe(200);
  });

  it('an expired lease is claimed again as the same attempt (a crash re-send is not a retry), and counted', async () => {
    const [id] = await queue(1);
    await claim(sql, 'dead-drain', 10);
    await sql`update net.http_request_queue set lease_expires = clock_timestamp() - interval '1 second' where id = ${id!}`;
    const again = await claim(sql, 'drain-b', 10);
    expect(again.map((r) => [r.id, r.attempts])).toEqual([[id, 1]]);
    const [row] = await sql<{ lease_owner: string; expired_leases: number }[]>`
      select lease_owner, expired_leases from net.http_request_queue where id = ${id!}`;
    expect(row).toEqual({ lease_owner: 'drain-b', expired_leases: 1 });
  });

  it('max_timeout_ms claims only requests whose timeout fits', async () => {
    await queue(1, 1000);
    await queue(1, 5000);
    await queue(1, 10000);
    const fits = await claim(sql, 'drain-a', 10, 30000, 5000);
    expect(fits.map((r) => r.timeout_milliseconds)).toEqual([1000, 5000]);
    const rest = await claim(sql, 'drain-a', 10);
    expect(rest.map((r) => r.timeout_milliseconds)).toEqual([10000]);
  });

  it('rolled-back claim leaves the rows free', async () => {
    await queue(2);
    await sql
      .begin(async (tx) => {
        expect(await claim(tx, 'drain-a', 10)).toHaveLength(2);
        throw new Error('crash before commit');
      })
      .catch(() => {});
    expect(await claim(sql, 'drain-b', 10)).toHaveLength(2);
  });
});

describe('net._record', () => {
  it('records the owner’s rows: deletes them from the queue and inserts one response each', async () => {
    const ids = await queue(3);
    await claim(sql, 'drain-a', 3);
    const n = await record('drain-a', [
      { id: ids[0], status_code: 200, content_type: 'text/plain', headers: { 'content-type': 'text/plain' }, content: 'hello', timed_out: false, error_msg: null },
      { id: ids[1], status_code: null, timed_out: true, error_msg: 'Timeout of 2000 ms reached' },
      { id: ids[2], status_code: 200, content_type: 'application/octet-stream', content: null, content_base64: Buffer.from([0, 1, 0xff, 0xfe]).toString('base64') },
    ]);
    expect(n).toBe(3);
    const [left] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
    expect(left!.n).toBe(0);
    const rows = await sql<Record<string, unknown>[]>`
      select id, status_code, content_type, headers, content, timed_out, error_msg, encode(content_bytes, 'hex') as hex
      from net._http_response order by id`;
    expect(rows).toEqual([
      { id: ids[0], status_code: 200, content_type: 'text/plain', headers: { 'content-type': 'text/plain' }, content: 'hello', timed_out: false, error_msg: null, hex: null },
      { id: ids[1], status_code: null, content_type: null, headers: null, content: null, timed_out: true, error_msg: 'Timeout of 2000 ms reached', hex: null },
      { id: ids[2], status_code: 200, content_type: 'application/octet-stream', headers: null, content: null, timed_out: null, error_msg: null, hex: '0001fffe' },
    ]);
  });

  it('a wrong owner records nothing and the row stays queued', async () => {
    const [id] = await queue(1);
    await claim(sql, 'drain-a', 1);
    expect(await record('drain-b', [{ id, status_code: 200 }])).toBe(0);
    const [row] = await sql<{ lease_owner: string }[]>`select lease_owner from net.http_request_queue where id = ${id!}`;
    expect(row!.lease_owner).toBe('drain-a');
    const [responses] = await sql<{ n: number }[]>`select count(*)::int as n from net._http_response`;
    expect(responses!.n).toBe(0);
  });

  it('a drain whose lease was taken over records nothing; the new owner records exactly once', async () => {
    const [id] = await queue(1);
    await claim(sql, 'slow-drain', 1);
    await sql`update net.http_request_queue set lease_expires = clock_timestamp() - interval '1 second'`;
    await claim(sql, 'new-drain', 1);
    expect(await record('slow-drain', [{ id, status_code: 500 }])).toBe(0);
    expect(await record('new-drain', [{ id, status_code: 200 }])).toBe(1);
    expect(await record('new-drain', [{ id, status_code: 200 }])).toBe(0);
    const rows = await sql<{ status_code: number }[]>`select status_code from net._http_response where id = ${id!}`;
    expect(rows).toEqual([{ status_code: 200 }]);
  });

  it('unclaimed rows, unknown ids, duplicates and empty arrays', async () => {
    const ids = await queue(2);
    await claim(sql, 'drain-a', 1);
    expect(await record('drain-a', [])).toBe(0);
    expect(await record('drain-a', [{ id: ids[1], status_code: 200 }])).toBe(0); // never claimed
    expect(await record('drain-a', [{ id: '999999999', status_code: 200 }])).toBe(0);
    expect(await record('drain-a', [{ id: ids[0], status_code: 201 }, { id: ids[0], status_code: 201 }])).toBe(1);
    const [row] = await sql<{ n: number }[]>`select count(*)::int as n from net._http_response`;
    expect(row!.n).toBe(1);
  });

  it('records a large batch in one call', async () => {
    const ids = await queue(500);
    await claim(sql, 'drain-a', 500);
    expect(await record('drain-a', ids.map((id) => ({ id, status_code: 204 })))).toBe(500);
  });
});

describe('net._release', () => {
  it('frees the owner\'s claimed rows at once with the claim\'s attempt taken back; others\' leases and unknown ids are untouched', async () => {
    const ids = await queue(4);
    await claim(sql, 'drain-a', 3);
    await claim(sql, 'drain-b', 1);
    const given = `${ids[0]},${ids[1]},${ids[3]},999999`;
    const [row] = await sql<{ n: number }[]>`select net._release('drain-a', ${given}) as n`;
    // ids[3] is drain-b's, 999999 doesn't exist: only two released.
    expect(row!.n).toBe(2);
    const rows = await sql<{ lease_owner: string | null; lease_expires: Date | null; attempts: number }[]>`
      select lease_owner, lease_expires, attempts from net.http_request_queue order by id`;
    expect(rows).toEqual([
      { lease_owner: null, lease_expires: null, attempts: 0 },
      { lease_owner: null, lease_expires: null, attempts: 0 },
      expect.objectContaining({ lease_owner: 'drain-a', attempts: 1 }),
      expect.objectContaining({ lease_owner: 'drain-b', attempts: 1 }),
    ]);
    // Free for anyone now, oldest first, even for a claim whose after_id hint is past them
    // (they are due now, so the claim's due path finds them).
    const hinted = await sql<Claimed[]>`select * from net._claim('drain-c', 5, 30000, null, ${ids[3]!}::bigint)`;
    expect(hinted.map((r) => r.id)).toEqual([ids[0], ids[1]]);
    expect(hinted.map((r) => r.attempts)).toEqual([1, 1]);
    const [cleared] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue where not_before is not null`;
    expect(cleared!.n).toBe(0);
  });

  it('a malformed id list is an error and releases nothing', async () => {
    await queue(1);
    const [claimed] = await claim(sql, 'drain-a', 1);
    await expect(sql`select net._release('drain-a', ${`${claimed!.id},x`})`).rejects.toThrow(/invalid input syntax for type bigint/);
    const [row] = await sql<{ lease_owner: string | null }[]>`select lease_owner from net.http_request_queue`;
    expect(row!.lease_owner).toBe('drain-a');
  });
});

describe('net._sweep', () => {
  it('deletes responses older than the ttl, oldest first, at most max_rows per call', async () => {
    await sql`
      insert into net._http_response (id, status_code, created)
      values (1, 200, now() - interval '3 hours'), (2, 200, now() - interval '2 hours'),
             (3, 200, now() - interval '90 minutes'), (4, 200, now() - interval '10 minutes'), (5, 200, now())`;
    const [first] = await sql<{ n: number }[]>`select net._sweep('1 hour', 2) as n`;
    expect(first!.n).toBe(2);
    let left = await sql<{ id: string }[]>`select id from net._http_response order by id`;
    expect(left.map((r) => Number(r.id))).toEqual([3, 4, 5]);
    const [second] = await sql<{ n: number }[]>`select net._sweep('1 hour') as n`;
    expect(second!.n).toBe(1);
    const [third] = await sql<{ n: number }[]>`select net._sweep('1 hour') as n`;
    expect(third!.n).toBe(0);
    left = await sql<{ id: string }[]>`select id from net._http_response order by id`;
    expect(left.map((r) => Number(r.id))).toEqual([4, 5]);
  });

  it('never touches the queue', async () => {
    await queue(2);
    await sql`update net.http_request_queue set created = now() - interval '1 day'`;
    await sql`select net._sweep('1 second')`;
    const [row] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
    expect(row!.n).toBe(2);
  });
});

describe('net._heartbeat and net._health', () => {
  it('heartbeat sets last_seen and last_drain; null keeps the previous drain', async () => {
    await sql`select net._heartbeat(${sql.json({ claimed: 3 })})`;
    await sql`select net._heartbeat(null)`;
    const [row] = await sql<{ last_seen: Date | null; last_drain: unknown }[]>`select last_seen, last_drain from net._worker_status`;
    expect(row!.last_seen).toBeInstanceOf(Date);
    expect(row!.last_drain).toEqual({ claimed: 3 });
  });

  it('heartbeat recreates a missing status row', async () => {
    await sql`delete from net._worker_status`;
    await sql`select net._heartbeat(null)`;
    const rows = await sql`select id from net._worker_status`;
    expect(rows).toHaveLength(1);
  });

  it('health reports depth, in-flight, oldest age, heartbeat and schema version', async () => {
    let [health] = await sql<{ h: Record<string, unknown> }[]>`select net._health() as h`;
    expect(health!.h).toEqual({ queue_depth: 0, in_flight: 0, oldest_queued_age_ms: null, last_seen: null, last_drain: null, schema_version: SCHEMA_VERSION });
    await queue(3);
    await sql`update net.http_request_queue set created = now() - interval '5 seconds' where id = (select min(id) from net.http_request_queue)`;
    await claim(sql, 'drain-a', 1);
    await sql`select net._heartbeat(${sql.json({ recorded: 7 })})`;
    [health] = await sql<{ h: Record<string, unknown> }[]>`select net._health() as h`;
    expect(health!.h).toMatchObject({ queue_depth: 3, in_flight: 1, last_drain: { recorded: 7 }, schema_version: SCHEMA_VERSION });
    expect(Number(health!.h.oldest_queued_age_ms)).toBeGreaterThanOrEqual(5000);
    expect(typeof health!.h.last_seen).toBe('string');
  });
});

describe('net._config and net.settings', () => {
  const role = `pne_cfg_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

  beforeAll(async () => {
    await sql.unsafe(`create role ${role} nologin`);
    await sql.unsafe(`grant execute on function net._config() to ${role}`);
  });
  afterAll(async () => {
    await sql.unsafe(`alter database ${db.name} reset all`);
    await sql.unsafe(`alter role postgres in database ${db.name} reset all`);
    await sql.unsafe(`drop owned by ${role}`);
    await sql.unsafe(`alter role ${role} reset all`);
    await sql.unsafe(`drop role ${role}`);
  });
  beforeEach(async () => {
    await sql.unsafe(`alter database ${db.name} reset all`);
    await sql.unsafe(`alter role postgres in database ${db.name} reset all`);
    await sql.unsafe(`alter role ${role} reset all`);
  });

  const config = async (s: postgres.Sql | postgres.TransactionSql = sql) =>
    (await s<{ c: { ttl: string; batch_size: number } }[]>`select net._config() as c`)[0]!.c;
  const asRole = async <T>(work: (tx: postgres.TransactionSql) => Promise<T>) =>
    (await sql.begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      return work(tx);
    })) as T;
  const view = async () =>
    Object.fromEntries(
      (await sql<{ name: string; setting: string; source: string }[]>`select * from net.settings`).map((r) => [r.name, [r.setting, r.source]]),
    );

  it('defaults: 6 hours and 200', async () => {
    expect(await config()).toEqual({ ttl: '6 hours', batch_size: 200 });
    expect(await view()).toEqual({
      'pg_net.ttl': ['6 hours', 'default'],
      'pg_net.batch_size': ['200', 'default'],
      'pg_net.max_attempts': ['1', 'default'],
    });
  });

  it('an existing session sees ALTER DATABASE / ALTER ROLE … SET at once, most specific first', async () => {
    const existing = session();
    expect(await config(existing)).toEqual({ ttl: '6 hours', batch_size: 200 });
    await sql.unsafe(`alter database ${db.name} set pg_net.ttl to '12 hours'`);
    await sql.unsafe(`alter database ${db.name} set pg_net.batch_size to 300`);
    expect(await config(existing)).toEqual({ ttl: '12 hours', batch_size: 300 });
    expect(await view()).toEqual({
      'pg_net.ttl': ['12 hours', `ALTER DATABASE ${db.name}`],
      'pg_net.batch_size': ['300', `ALTER DATABASE ${db.name}`],
      'pg_net.max_attempts': ['1', 'default'],
    });
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.ttl to '24 hours'`);
    expect(await config(existing)).toEqual({ ttl: '24 hours', batch_size: 300 });
    expect((await view())['pg_net.ttl']).toEqual(['24 hours', `ALTER ROLE postgres IN DATABASE ${db.name}`]);
    // The catalog beats the session's own (login-time) value.
    expect(await config(existing)).toEqual({ ttl: '24 hours', batch_size: 300 });
  });

  it('ALTER ROLE … SET (role only) applies to that role and beats the database setting', async () => {
    await sql.unsafe(`alter database ${db.name} set pg_net.ttl to '12 hours'`);
    await sql.unsafe(`alter role ${role} set pg_net.ttl to '24 hours'`);
    await sql.unsafe(`alter role ${role} set pg_net.batch_size to 500`);
    expect(await asRole((tx) => config(tx))).toEqual({ ttl: '24 hours', batch_size: 500 });
    // postgres (the owner, i.e. the worker) is unaffected by another role's settings.
    expect(await config()).toEqual({ ttl: '12 hours', batch_size: 200 });
    // net.worker_restart() is the pg_net way to apply them: it must keep working.
    const [row] = await sql<{ ok: boolean }[]>`select net.worker_restart() as ok`;
    expect(row!.ok).toBe(true);
  });

  it('a session SET is used when the catalog has nothing', async () => {
    const got = await sql.begin(async (tx) => {
      await tx.unsafe(`set local pg_net.ttl = '3 hours'`);
      await tx.unsafe(`set local pg_net.batch_size = '42'`);
      return config(tx);
    });
    expect(got).toEqual({ ttl: '3 hours', batch_size: 42 });
  });

  it('a role whose name needs quoting is found (mixed case, a space)', async () => {
    const odd = `Pne Odd ${process.pid}`;
    await sql.unsafe(`create role "${odd}" nologin`);
    try {
      await sql.unsafe(`alter role "${odd}" set pg_net.batch_size to 77`);
      const rows = await sql<{ name: string; setting: string; source: string }[]>`select * from net._settings(${odd})`;
      expect(rows.find((r) => r.name === 'pg_net.batch_size')).toEqual({ name: 'pg_net.batch_size', setting: '77', source: `ALTER ROLE "${odd}"` });
      // An unknown role sees only database-wide and default settings.
      const none = await sql<{ name: string; setting: string; source: string }[]>`select * from net._settings(${'no such role'})`;
      expect(none.map((r) => r.source)).toEqual(['default', 'default', 'default']);
    } finally {
      await sql.unsafe(`drop role "${odd}"`);
    }
  });

  it('a number with a plus sign or surrounding spaces is a valid setting', async () => {
    await sql.unsafe(`alter database ${db.name} set pg_net.batch_size to ' +42 '`);
    expect(await config()).toEqual({ ttl: '6 hours', batch_size: 42 });
  });

  it.each([
    ['pg_net.ttl', `'forever'`],
    ['pg_net.ttl', `'-1 hour'`],
    ['pg_net.ttl', `'0'`],
    ['pg_net.batch_size', `'abc'`],
    ['pg_net.batch_size', `'-5'`],
    ['pg_net.batch_size', `'0'`],
    ['pg_net.batch_size', `'99999999999'`],
  ])('invalid %s = %s falls back to the default', async (name, value) => {
    await sql.unsafe(`alter database ${db.name} set ${name} to ${value}`);
    expect(await config()).toEqual({ ttl: '6 hours', batch_size: 200 });
    const [setting, source] = (await view())[name]!;
    expect(setting).toBe(name === 'pg_net.ttl' ? '6 hours' : '200');
    expect(source).toMatch(new RegExp(`^default \\(invalid value '.*' from ALTER DATABASE ${db.name} ignored\\)$`));
  });
});

describe('net.http_collect_response', () => {
  it('PENDING while queued, SUCCESS with the response, ERROR with the error, ERROR when unknown', async () => {
    const [a, b, c] = await queue(3);
    const collect = async (id: string, fn = 'http_collect_response') =>
      (await sql.unsafe<{ status: string; message: string; response: string | null }[]>(
        `select (r).status::text as status, (r).message, (r).response::text as response from net.${fn}(${id}) r`,
      ))[0]!;
    expect(await collect(a!)).toEqual({ status: 'PENDING', message: 'request is pending', response: null });
    expect(await collect(a!, '_http_collect_response')).toEqual({ status: 'PENDING', message: 'request is pending', response: null });
    await claim(sql, 'drain-a', 3);
    expect(await collect(a!)).toMatchObject({ status: 'PENDING' }); // claimed, not yet recorded
    await record('drain-a', [
      { id: a, status_code: 200, headers: { 'x-a': '1' }, content: 'body a' },
      { id: b, status_code: 404, headers: {}, content: 'nope' },
      { id: c, timed_out: true, error_msg: 'Timeout of 2000 ms reached' },
    ]);
    const [success] = await sql<{ status: string; message: string; code: number; headers: unknown; body: string }[]>`
      select (r).status::text as status, (r).message, ((r).response).status_code as code,
             ((r).response).headers, ((r).response).body
      from net.http_collect_response(${a!}) r`;
    expect(success).toEqual({ status: 'SUCCESS', message: 'ok', code: 200, headers: { 'x-a': '1' }, body: 'body a' });
    expect(await collect(b!)).toMatchObject({ status: 'SUCCESS', message: 'ok' });
    expect(await collect(c!, '_http_collect_response')).toEqual({ status: 'ERROR', message: 'Timeout of 2000 ms reached', response: null });
    expect(await collect('123456789')).toEqual({ status: 'ERROR', message: 'request matching request_id not found', response: null });
    // pg_net's usual call style: named async argument
    const [named] = await sql<{ s: string }[]>`select (net.http_collect_response(request_id := ${a!}, async := true)).status::text as s`;
    expect(named!.s).toBe('SUCCESS');
  });

  it('async := false waits and sees a response recorded by another session', async () => {
    const [id] = await queue(1);
    await sql`select net._heartbeat(null)`;  // a worker is about (else it answers at once: see below)
    const waiter = session();
    const worker = session();
    // postgres.js queries are lazy: execute() sends it now.
    const waiting = waiter<{ status: string; body: string }[]>`
      select (r).status::text as status, ((r).response).body as body
      from net.http_collect_response(${id!}, async := false) r`.execute();
    // Make sure the waiter really is inside its loop before the response appears.
    await activeQuery('%http_collect_response%async := false%');
    await claim(worker, 'drain-w', 1);
    await worker`select net._record('drain-w', ${worker.json([{ id: id!, status_code: 200, content: 'late' }])})`;
    const [result] = await waiting;
    expect(result).toEqual({ status: 'SUCCESS', body: 'late' });
  });

  it('async := false answers at once when no worker has checked in lately (instead of waiting ~65 s)', async () => {
    const [id] = await queue(1);
    await sql`update net.http_request_queue set created = now() - interval '1 minute' where id = ${id!}`;
    const check = async () => {
      const [row] = await sql<{ status: string; message: string }[]>`
        select (r).status::text as status, (r).message from net.http_collect_response(${id!}, async := false) r`;
      return row!;
    };
    // Never checked in: no waiting (the test's own timeout would catch a 65 s wait).
    const never = await check();
    expect(never.status).toBe('PENDING');
    expect(never.message).toMatch(/^request is pending, and no pg-net-edge worker has checked in yet; check that the Worker is deployed/);
    await sql`update net._worker_status set last_seen = now() - interval '3 minutes'`;
    const stale = await check();
    expect(stale.message).toMatch(/^request is pending, and no pg-net-edge worker has checked in since .* ago\)/);
    // A request a drain holds right now is waited for even so (its drain checks in when done).
    await sql`update net._worker_status set last_seen = null`;
    await claim(sql, 'drain-a', 1);
    const waiting = sql<{ status: string }[]>`
      select (r).status::text as status from net.http_collect_response(${id!}, async := false) r`.execute();
    await activeQuery('%http_collect_response%async := false%');
    await record('drain-a', [{ id, status_code: 200 }]);
    expect((await waiting)[0]!.status).toBe('SUCCESS');
    // A request that just came due is given a few seconds for a drain woken at its commit to claim
    // it, even on a fresh install where no worker has checked in yet.
    const [fresh] = await queue(1);
    const patient = sql<{ status: string }[]>`
      select (r).status::text as status from net.http_collect_response(${fresh!}, async := false) r`.execute();
    await activeQuery('%http_collect_response%async := false%');
    await claim(sql, 'drain-b', 1);
    await record('drain-b', [{ id: fresh, status_code: 200 }]);
    expect((await patient)[0]!.status).toBe('SUCCESS');
    // … and a request due later can't be sent by a worker that isn't there: at once.
    const [later] = await sql<{ id: string }[]>`select net.http_request('GET', 'https://e.com/later', delay := '1 hour')::text as id`;
    const [row] = await sql<{ status: string; message: string }[]>`
      select (r).status::text as status, (r).message from net.http_collect_response(${later!.id}::bigint, async := false) r`;
    expect(row!.message).toMatch(/^request is pending, and no pg-net-edge worker has checked in yet/);
  });

  it('async := false returns at once when already recorded or unknown', async () => {
    const [id] = await queue(1);
    await claim(sql, 'drain-a', 1);
    await record('drain-a', [{ id, status_code: 200 }]);
    const [done] = await sql<{ s: string }[]>`select (net.http_collect_response(${id!}, false)).status::text as s`;
    expect(done!.s).toBe('SUCCESS');
    const [unknown] = await sql<{ s: string }[]>`select (net.http_collect_response(987654321, false)).status::text as s`;
    expect(unknown!.s).toBe('ERROR');
  });

  it('async := false on a request queued by the same transaction raises instead of hanging', async () => {
    await expect(
      sql.begin(async (tx) => {
        const [row] = await tx<{ id: string }[]>`select net.http_get('https://example.com/same-tx') as id`;
        await tx`select net.http_collect_response(${row!.id}, async := false)`;
      }),
    ).rejects.toThrow(/queued by the current transaction; requests are sent only after commit/);
    // … also when it was queued inside a subtransaction (a plpgsql EXCEPTION block).
    await expect(
      sql.unsafe(`
        do $$
        declare id bigint;
        begin
          begin
            id := net.http_get('https://example.com/same-tx-sub');
          exception when others then raise;
          end;
          perform net.http_collect_response(id, async := false);
        end $$`),
    ).rejects.toThrow(/queued by the current transaction/);
  });

  it('async := false in a transaction that wrote something else still waits normally', async () => {
    const [id] = await queue(1);
    await claim(sql, 'drain-a', 1);
    await record('drain-a', [{ id, status_code: 202 }]);
    const status = await sql.begin(async (tx) => {
      await tx`select net.http_get('https://example.com/other-write')`;
      const [row] = await tx<{ s: string }[]>`select (net.http_collect_response(${id!}, false)).status::text as s`;
      return row!.s;
    });
    expect(status).toBe('SUCCESS');
  });
});

describe('worker liveness', () => {
  it('worker_restart returns true and locks nothing the worker needs (its check-in goes through)', async () => {
    await sql.begin(async (tx) => {
      const [row] = await tx<{ ok: boolean }[]>`select net.worker_restart() as ok`;
      expect(row!.ok).toBe(true);
      // Another session (the worker) checks in while the transaction is still open.
      const worker = session();
      await worker.unsafe(`set lock_timeout = '2s'`);
      await worker`select net._heartbeat(null)`;
    });
  });

  it('worker_restart and wake notify pg_net_edge_wake', async () => {
    const listener = session();
    const payloads: string[] = [];
    let done: () => void = () => {};
    const marker = new Promise<void>((resolve) => (done = resolve));
    await listener.listen('pg_net_edge_wake', (payload) => {
      payloads.push(payload);
      if (payload === 'marker') done();
    });
    await sql`select net.worker_restart()`;
    await sql`select net.wake()`;
    await sql`select pg_notify('pg_net_edge_wake', 'marker')`;
    await marker;
    expect(payloads).toEqual(['', '', 'marker']);
  });

  it('check_worker_is_up raises until the worker checks in, and again when it goes quiet', async () => {
    await expect(sql`select net.check_worker_is_up()`).rejects.toThrow(
      /no pg-net-edge worker has checked in yet; check that the Worker is deployed with its cron triggers .* DATABASE_URL secret or Hyperdrive binding reaches this database/,
    );
    await sql`select net._heartbeat(null)`;
    await sql`select net.check_worker_is_up()`;
    await sql`update net._worker_status set last_seen = now() - interval '3 minutes'`;
    await expect(sql`select net.check_worker_is_up()`).rejects.toThrow(/has checked in since .* ago/);
  });

  it('wait_until_running raises with the same advice after its timeout', async () => {
    await expect(sql`select net.wait_until_running(1)`).rejects.toThrow(/^waited 1 s: no pg-net-edge worker has checked in yet; check that the Worker is deployed/);
  });

  it('wait_until_running returns once a worker checks in from another session', async () => {
    const waiting = session()`select net.wait_until_running(60)`.execute();
    await activeQuery('%wait_until_running(60)%');
    await session()`select net._heartbeat(null)`;
    await waiting; // well before its 60 s timeout (the test's own timeout is the upper bound)
  });

  it('wait_until_running returns at once when the worker was seen recently', async () => {
    await sql`select net._heartbeat(null)`;
    await sql`select net.wait_until_running()`;
  });
});
