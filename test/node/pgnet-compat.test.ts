// Code written for pg_net, run against pg-net-edge's SQL (issue 15): pg_net's documented calls
// and helper functions, checked for pg_net's observable results against real PostgreSQL; the
// worker_restart-in-a-transaction pattern with the real relay and the real Node drain.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drainOnce, SWEEP_EVERY_MS, sweepIfDue } from '../../src/node/drain.ts';
import { startRelay, WAITING_APPLICATION_NAME } from '../../src/node/relay.ts';
import { useFreshDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let sql: postgres.Sql;
const { session } = useFreshDatabase((fresh) => {
  db = fresh;
  sql = fresh.sql;
});

async function sqlError(text: string): Promise<{ code: string; message: string; column?: string }> {
  const error = await sql.unsafe(text).then(
    () => null,
    (e: unknown) => e as { code: string; message: string; column_name?: string },
  );
  if (error === null) throw new Error(`expected an error from ${text}`);
  return { code: error.code, message: error.message, ...(error.column_name ? { column: error.column_name } : {}) };
}

describe("pg_net's URL helpers", () => {
  it('net._urlencode_string(varchar) percent-encodes as curl_escape does', async () => {
    const [row] = await sql<{ a: string; b: string; c: string | null; empty: string }[]>`
      select net._urlencode_string('a b&c=d/é~._-') as a,
             net._urlencode_string('AZaz09'::varchar) as b,
             net._urlencode_string(null) as c,
             net._urlencode_string('') as empty`;
    expect(row).toEqual({ a: 'a%20b%26c%3Dd%2F%C3%A9~._-', b: 'AZaz09', c: null, empty: '' });
  });

  it("net._encode_url_with_params_array builds the URL as pg_net's http_get does", async () => {
    // pg_net's own call (sql/pg_net.sql, net.http_get): encoded key=value pairs, then the URL.
    const [row] = await sql<{ url: string }[]>`
      select net._encode_url_with_params_array('https://example.com/path', (
        select coalesce(array_agg(net._urlencode_string(key) || '=' || net._urlencode_string(value)), '{}')
        from jsonb_each_text('{"q": "a b", "n": "1"}'::jsonb))) as url`;
    expect(row!.url).toBe('https://example.com/path?n=1&q=a%20b');
    // [url, params_array as an SQL array literal, expected]
    const cases: [string, string, string | null][] = [
      ['http://example.com', `'{}'`, 'http://example.com/'],
      ['HTTP://example.com/x?a=1', `array['b=2']`, 'http://example.com/x?a=1&b=2'],
      ['http://example.com/x?a=1#frag', `array['b=2', 'c=3']`, 'http://example.com/x?a=1&b=2&c=3#frag'],
      ['http://example.com/x?', `array['b=2']`, 'http://example.com/x?b=2'],
      ['http://example.com/x', `array['b=2', null]`, 'http://example.com/x?b=2'],
      ['http://example.com/x', 'null', null], // strict, as pg_net's
    ];
    for (const [url, params, expected] of cases) {
      const [r] = await sql.unsafe<{ url: string | null }[]>(
        `select net._encode_url_with_params_array('${url}', ${params}::text[]) as url`,
      );
      expect(r!.url, url).toBe(expected);
    }
    expect((await sqlError(`select net._encode_url_with_params_array('ftp://example.com/', '{}')`)).message).toMatch(
      /^Unsupported URL scheme/,
    );
  });

  it('any role may call them, as in pg_net', async () => {
    const role = `pne_compat_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    await sql.unsafe(`create role ${role}`);
    try {
      const rows = await sql.begin(async (tx) => {
        await tx.unsafe(`set local role ${role}`);
        return tx<{ u: string }[]>`select net._encode_url_with_params_array('http://e.com', array[net._urlencode_string('k k') || '=v']) as u`;
      });
      expect(rows[0]!.u).toBe('http://e.com/?k%20k=v');
    } finally {
      await sql.unsafe(`drop role ${role}`);
    }
  });
});

describe("pg_net's errors at call time", () => {
  it('a null URL is a not-null violation on "url" (23502)', async () => {
    for (const call of [`select net.http_get(null)`, `select net.http_post(null, '{}'::jsonb)`, `select net.http_delete(null)`]) {
      const error = await sqlError(call);
      expect(error.code, call).toBe('23502');
      expect(error.message, call).toMatch(/^null value in column "url"/);
      expect(error.column, call).toBe('url');
    }
  });

  it('a bad scheme says "Unsupported URL scheme", then why', async () => {
    const error = await sqlError(`select net.http_get('ftp://example.com/file')`);
    expect(error.message).toMatch(/^Unsupported URL scheme: invalid URL "ftp:\/\/example.com\/file": must be an absolute URL/);
  });
});

describe('error_kind (schema v4)', () => {
  it('net._record stores the kind; a failure without one is "other", a success none', async () => {
    const ids = await sql<{ id: string }[]>`
      select net.http_get('http://127.0.0.1:9/' || g)::text as id from generate_series(1, 3) g`;
    await sql`select * from net._claim('compat-owner', 10)`;
    const outcomes = [
      { id: ids[0]!.id, status_code: null, timed_out: false, error_msg: "Couldn't connect to server: x", error_kind: 'connect' },
      { id: ids[1]!.id, status_code: null, timed_out: false, error_msg: 'from an older worker' },
      { id: ids[2]!.id, status_code: 200, timed_out: false, error_msg: null },
    ];
    await sql`select net._record('compat-owner', ${JSON.stringify(outcomes)}::text::jsonb)`;
    const rows = await sql<{ error_kind: string | null }[]>`
      select error_kind from net._http_response where id = any(string_to_array(${ids.map((r) => r.id).join(',')}, ',')::bigint[]) order by id`;
    expect(rows.map((r) => r.error_kind)).toEqual(['connect', 'other', null]);
  });
});

describe('net.worker_restart() inside a transaction (pg_net: returns within seconds)', () => {
  let nudges: Server;
  let nudgeUrl = '';
  let drains = 0;
  let draining = 0;

  beforeAll(async () => {
    // The Worker's /nudge, played by the real Node drain: each nudge drains once and checks in.
    nudges = createServer((req, res) => {
      req.resume();
      draining++;
      drainOnce(sql, {})
        .then(() => drains++)
        .finally(() => {
          draining--;
          res.writeHead(202).end();
        });
    });
    await new Promise<void>((done) => nudges.listen(0, '127.0.0.1', () => done()));
    nudgeUrl = `http://127.0.0.1:${(nudges.address() as AddressInfo).port}/nudge`;
  });
  afterAll(async () => {
    nudges.closeAllConnections();
    await new Promise<void>((done) => nudges.close(() => done()));
  });

  it('begin; worker_restart(); wait_until_running(); commit — the relay sees the waiting session and wakes the worker', async () => {
    const relay = startRelay({ databaseUrl: db.url, nudgeUrl, secret: 'compat-secret', log: () => {} });
    try {
      await relay.ready;
      // The relay nudges once on LISTEN: let that drain check in first.
      for (let i = 0; i < 500 && drains === 0; i++) await new Promise((r) => setTimeout(r, 20));
      const before = drains;
      // As right after an install: no worker has checked in yet.
      await sql`update net._worker_status set last_seen = null`;
      const waiter = session({ connection: { application_name: 'my app' } });
      const appNames = await waiter.begin(async (tx) => {
        await tx`select net.worker_restart()`;
        // Raises after 30 s if no worker checks in (the old row lock made that certain).
        await tx`select net.wait_until_running(30)`;
        const [after] = await tx<{ name: string }[]>`select current_setting('application_name') as name`;
        return after!.name;
      });
      expect(appNames).toBe('my app'); // the caller's application_name is given back
      expect(relay.stats.waitersSeen).toBeGreaterThanOrEqual(1);
      expect(drains).toBeGreaterThan(before);
      const [status] = await sql<{ seen: boolean }[]>`select last_seen is not null as seen from net._worker_status`;
      expect(status!.seen).toBe(true);
    } finally {
      await relay.stop();
    }
  });

  it('while waiting, the session shows the application_name the relay looks for', async () => {
    // A drain the previous test's relay started must not check in during this one.
    for (let i = 0; i < 500 && draining > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(draining).toBe(0);
    await sql`update net._worker_status set last_seen = null`;
    const waiter = session();
    const waiting = waiter`select net.wait_until_running(2)`.catch((e: Error) => e);
    let seen = false;
    for (let i = 0; i < 100 && !seen; i++) {
      const [row] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where datname = current_database() and application_name = ${WAITING_APPLICATION_NAME}`;
      seen = row!.n > 0;
      if (!seen) await new Promise((r) => setTimeout(r, 20));
    }
    expect(seen).toBe(true);
    // Nothing wakes a worker here: it gives up with pg-net-edge's advice, and the name is gone.
    expect(String(await waiting)).toMatch(/no pg-net-edge worker has checked in/);
    const [app] = await waiter<{ name: string }[]>`select current_setting('application_name') as name`;
    expect(app!.name).not.toBe(WAITING_APPLICATION_NAME);
  });
});

describe('net.settings says where each value came from', () => {
  it('the statement that set it, or default', async () => {
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.ttl = '1 second'`);
    await sql.unsafe(`alter database ${db.name} set pg_net.batch_size = 50`);
    try {
      const rows = await sql<{ name: string; setting: string; source: string }[]>`select * from net.settings`;
      expect(rows).toEqual([
        { name: 'pg_net.ttl', setting: '1 second', source: `ALTER ROLE postgres IN DATABASE ${db.name}` },
        { name: 'pg_net.batch_size', setting: '50', source: `ALTER DATABASE ${db.name}` },
        { name: 'pg_net.max_attempts', setting: '1', source: 'default' },
      ]);
    } finally {
      await sql.unsafe(`alter role postgres in database ${db.name} reset pg_net.ttl`);
      await sql.unsafe(`alter database ${db.name} reset pg_net.batch_size`);
    }
  });
});

describe('the sweep runs every minute', () => {
  it("the self-hosted runner (drain --loop) sweeps too: pg_net.ttl = '1 second' honoured, at most once a minute", async () => {
    await sql`delete from net._http_response`;
    await sql`insert into net._http_response (id, status_code, created) values (9000001, 200, now() - interval '5 seconds')`;
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.ttl = '1 second'`);
    try {
      let clock = 1_000_000;
      const state = { lastAt: null as number | null };
      expect(await sweepIfDue(sql, {}, state, () => clock)).toBe(1);
      await sql`insert into net._http_response (id, status_code, created) values (9000002, 200, now() - interval '5 seconds')`;
      clock += SWEEP_EVERY_MS - 1;
      expect(await sweepIfDue(sql, {}, state, () => clock)).toBeNull(); // not due yet
      clock += 1;
      expect(await sweepIfDue(sql, {}, state, () => clock)).toBe(1);
      expect((await sql`select id from net._http_response where id >= 9000001`).length).toBe(0);
    } finally {
      await sql.unsafe(`alter role postgres in database ${db.name} reset pg_net.ttl`);
    }
  });

  it('wrangler.toml schedules a drain cron and a separate every-minute sweep cron', () => {
    const toml = readFileSync(new URL('../../wrangler.toml', import.meta.url), 'utf8');
    const crons = /^crons = (\[.*\])$/m.exec(toml);
    expect(JSON.parse(crons![1]!)).toEqual(['* * * * *', '*/1 * * * *']);
  });
});
