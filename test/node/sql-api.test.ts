// The user-facing SQL API against real PostgreSQL: pg_net's signatures (positional and named),
// the pg_net documentation's examples verbatim, what gets stored, params encoding,
// commit/rollback, NOTIFY folding, and who may call what.
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useFreshDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let sql: postgres.Sql;
useFreshDatabase((fresh) => {
  db = fresh;
  sql = fresh.sql;
});

interface StoredRequest {
  id: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string | null;
  timeout_milliseconds: number;
  lease_owner: string | null;
  attempts: number;
}

async function stored(id: string | number): Promise<StoredRequest> {
  const [row] = await sql<StoredRequest[]>`
    select id, method, url, headers, convert_from(body, 'UTF8') as body, timeout_milliseconds, lease_owner, attempts
    from net.http_request_queue where id = ${String(id)}`;
  if (!row) throw new Error(`request ${id} is not in the queue`);
  return row;
}

async function one(text: string): Promise<string> {
  const rows = await sql.unsafe(text);
  const value = Object.values(rows[0] ?? {})[0];
  return String(value);
}

async function queueSize(): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
  return row!.n;
}

describe('net.http_get', () => {
  it('positional call with defaults stores GET, no body, empty headers, 2000 ms', async () => {
    const id = await one(`select net.http_get('https://news.ycombinator.com') as request_id`);
    expect(Number(id)).toBeGreaterThan(0);
    expect(await stored(id)).toMatchObject({
      method: 'GET',
      url: 'https://news.ycombinator.com',
      headers: {},
      body: null,
      timeout_milliseconds: 2000,
      lease_owner: null,
      attempts: 0,
    });
  });

  it('all positional arguments', async () => {
    const id = await one(
      `select net.http_get('http://example.com/x', '{"a": "1"}'::jsonb, '{"X-Token": "t", "X-N": 5, "X-B": true}'::jsonb, 1234)`,
    );
    expect(await stored(id)).toMatchObject({
      url: 'http://example.com/x?a=1',
      headers: { 'X-Token': 't', 'X-N': '5', 'X-B': 'true' },
      timeout_milliseconds: 1234,
    });
  });

  it('named arguments in any order', async () => {
    const id = await one(
      `select net.http_get(timeout_milliseconds := 500, headers := '{"Accept": "text/plain"}', url := 'https://example.com/n')`,
    );
    expect(await stored(id)).toMatchObject({
      method: 'GET',
      url: 'https://example.com/n',
      headers: { Accept: 'text/plain' },
      timeout_milliseconds: 500,
    });
  });

  it('null params and headers mean none', async () => {
    const id = await one(`select net.http_get('https://example.com/', null, null)`);
    expect(await stored(id)).toMatchObject({ url: 'https://example.com/', headers: {} });
  });

  it('returns distinct, increasing ids', async () => {
    const rows = await sql<{ id: string }[]>`select net.http_get('https://example.com/' || g) as id from generate_series(1, 5) g`;
    const ids = rows.map((r) => BigInt(r.id));
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
  });
});

describe('net.http_post', () => {
  it('pg_net doc usage: named url and body; Content-Type added; body is the jsonb text in UTF-8', async () => {
    const id = await one(`
      SELECT
        net.http_post(
          url:='https://httpbin.org/post',
          body:='{"hello": "world"}'::jsonb
        ) AS request_id;`);
    expect(await stored(id)).toMatchObject({
      method: 'POST',
      url: 'https://httpbin.org/post',
      headers: { 'Content-Type': 'application/json' },
      body: '{"hello": "world"}',
      timeout_milliseconds: 2000,
    });
  });

  it('defaults: body {} and Content-Type application/json', async () => {
    const id = await one(`select net.http_post('https://example.com/p')`);
    expect(await stored(id)).toMatchObject({ body: '{}', headers: { 'Content-Type': 'application/json' } });
  });

  it('all positional arguments', async () => {
    const id = await one(
      `select net.http_post('https://example.com/p', '{"k": [1, 2]}'::jsonb, '{"page": 2}'::jsonb, '{"X-Api-Key": "abc"}'::jsonb, 9000)`,
    );
    expect(await stored(id)).toMatchObject({
      url: 'https://example.com/p?page=2',
      body: '{"k": [1, 2]}',
      headers: { 'X-Api-Key': 'abc', 'Content-Type': 'application/json' },
      timeout_milliseconds: 9000,
    });
  });

  it('unicode body is stored as UTF-8 bytes', async () => {
    const id = await one(`select net.http_post('https://example.com/p', jsonb_build_object('name', 'Zoë ☃ 😀'))`);
    const [row] = await sql<{ hex: string }[]>`select encode(body, 'hex') as hex from net.http_request_queue where id = ${id}`;
    expect(Buffer.from(row!.hex, 'hex').toString('utf8')).toBe('{"name": "Zoë ☃ 😀"}');
  });

  it('a user Content-Type of application/json in any case, with parameters, is kept as given', async () => {
    const id = await one(
      `select net.http_post('https://example.com/p', headers := '{"content-TYPE": "Application/JSON; charset=utf-8"}')`,
    );
    expect((await stored(id)).headers).toEqual({ 'content-TYPE': 'Application/JSON; charset=utf-8' });
  });

  it('null body raises as in pg_net, and queues nothing', async () => {
    const [before] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
    await expect(sql`select net.http_post('https://example.com/p', null::jsonb)`).rejects.toThrow(/^body must not be null$/);
    await expect(sql`select net.http_post('https://example.com/p', body := null)`).rejects.toThrow(/^body must not be null$/);
    const [after] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
    expect(after!.n).toBe(before!.n);
  });

  it('null headers: Content-Type still added', async () => {
    const id = await one(`select net.http_post('https://example.com/p', headers := null)`);
    expect((await stored(id)).headers).toEqual({ 'Content-Type': 'application/json' });
  });
});

describe('net.http_delete', () => {
  it('pg_net doc usage', async () => {
    const id = await one(`
      SELECT
        net.http_delete(
          'https://dummy.restapiexample.com/api/v1/delete/2'
        ) AS request_id;`);
    expect(await stored(id)).toMatchObject({
      method: 'DELETE',
      url: 'https://dummy.restapiexample.com/api/v1/delete/2',
      headers: {},
      body: null,
      timeout_milliseconds: 2000,
    });
  });

  it('positional with a body (5th argument) and named body', async () => {
    const a = await one(`select net.http_delete('https://example.com/d', '{"x": "y"}', '{"X-A": "1"}', 700, '{"ids": [1]}')`);
    expect(await stored(a)).toMatchObject({
      url: 'https://example.com/d?x=y',
      headers: { 'X-A': '1' },
      timeout_milliseconds: 700,
      body: '{"ids": [1]}',
    });
    const b = await one(`select net.http_delete(url := 'https://example.com/d', body := '[true]'::jsonb)`);
    expect((await stored(b)).body).toBe('[true]');
  });
});

describe('params encoding (RFC 3986)', () => {
  async function urlFor(url: string, params: unknown): Promise<string> {
    const [row] = await sql<{ id: string }[]>`select net.http_get(${url}, ${sql.json(params as postgres.JSONValue)}) as id`;
    return (await stored(row!.id)).url;
  }

  it('spaces, reserved characters and unreserved ones', async () => {
    expect(await urlFor('https://e.com/s', { q: 'a b+c&d=e/f?g#h%i' })).toBe(
      'https://e.com/s?q=a%20b%2Bc%26d%3De%2Ff%3Fg%23h%25i',
    );
    expect(await urlFor('https://e.com/s', { k: 'AZaz09-._~' })).toBe('https://e.com/s?k=AZaz09-._~');
    expect(await urlFor('https://e.com/s', { k: "!*'();:@$,[]" })).toBe('https://e.com/s?k=%21%2A%27%28%29%3B%3A%40%24%2C%5B%5D');
  });

  it('unicode as UTF-8 bytes, uppercase hex, keys encoded too', async () => {
    expect(await urlFor('https://e.com/', { 'clé é': 'ü€😀' })).toBe(
      'https://e.com/?cl%C3%A9%20%C3%A9=%C3%BC%E2%82%AC%F0%9F%98%80',
    );
  });

  it('numbers and booleans as their JSON text; empty string value', async () => {
    expect(await urlFor('https://e.com/', { n: 1.5, b: false, e: '' })).toMatch(/^https:\/\/e\.com\/\?/);
    const url = await urlFor('https://e.com/', { n: 1.5, b: false, e: '' });
    expect(new URL(url).searchParams.get('n')).toBe('1.5');
    expect(new URL(url).searchParams.get('b')).toBe('false');
    expect(new URL(url).searchParams.get('e')).toBe('');
  });

  it('appends with & to an existing query, before a fragment', async () => {
    expect(await urlFor('https://e.com/p?x=1', { y: '2' })).toBe('https://e.com/p?x=1&y=2');
    expect(await urlFor('https://e.com/p?x=1#top', { y: '2' })).toBe('https://e.com/p?x=1&y=2#top');
    expect(await urlFor('https://e.com/p#frag?not-a-query', { y: '2' })).toBe('https://e.com/p?y=2#frag?not-a-query');
    expect(await urlFor('https://e.com/p?', { y: '2' })).toBe('https://e.com/p?y=2');
    expect(await urlFor('https://e.com/p?x=1&', { y: '2' })).toBe('https://e.com/p?x=1&y=2');
  });

  it('empty params leave the URL untouched', async () => {
    expect(await urlFor('https://e.com/p?x=1#f', {})).toBe('https://e.com/p?x=1#f');
  });
});

describe('pg_net documentation examples, verbatim', () => {
  it('Edge Function example: Content-Type and Authorization headers', async () => {
    const id = await one(`
      SELECT
        net.http_post(
          url:='https://project-ref.supabase.co/functions/v1/function-name',
          headers:='{"Content-Type": "application/json", "Authorization": "Bearer <YOUR_ANON_KEY>"}'::jsonb,
          body:='{"name": "pg_net"}'::jsonb
        ) AS request_id;`);
    expect(await stored(id)).toMatchObject({
      url: 'https://project-ref.supabase.co/functions/v1/function-name',
      headers: { 'Content-Type': 'application/json', Authorization: 'Bearer <YOUR_ANON_KEY>' },
      body: '{"name": "pg_net"}',
    });
  });

  it('the pg_cron job statement (quoted schema and function, named args)', async () => {
    const id = await one(`
        -- SQL query
        SELECT "net"."http_post"(
          -- URL of Edge function
          url:='https://project-ref.supabase.co/functions/v1/function-name',
          headers:='{"Authorization": "Bearer <YOUR_ANON_KEY>"}'::jsonb,
          body:='{"name": "pg_net"}'::jsonb
        ) AS "request_id";`);
    expect(await stored(id)).toMatchObject({
      method: 'POST',
      headers: { Authorization: 'Bearer <YOUR_ANON_KEY>', 'Content-Type': 'application/json' },
      body: '{"name": "pg_net"}',
    });
  });

  it('trigger function + AFTER UPDATE trigger: one request per updated row, with old and new rows', async () => {
    await sql.unsafe(`create table doc_items (id int primary key, name text)`);
    await sql.unsafe(`insert into doc_items values (1, 'a'), (2, 'b')`);
    await sql.unsafe(`
      -- function called by trigger
      CREATE OR REPLACE FUNCTION notify_item_change()
        RETURNS trigger
        LANGUAGE plpgSQL
      AS $$
      BEGIN
        -- calls pg_net function net.http_post
        -- sends request to postman API
        PERFORM "net"."http_post"(
          'https://postman-echo.com/post'::text,
          jsonb_build_object(
            'old_row', to_jsonb(old.*),
            'new_row', to_jsonb(new.*)
          ),
          headers:='{"Content-Type": "application/json"}'::jsonb
        ) AS request_id;
        RETURN new;
      END $$;`);
    await sql.unsafe(`
      -- trigger for table update
      CREATE TRIGGER item_changed
        AFTER UPDATE ON doc_items
        FOR EACH ROW
        EXECUTE FUNCTION notify_item_change();`);
    const [before] = await sql<{ max: string | null }[]>`select max(id)::text as max from net.http_request_queue`;
    await sql.unsafe(`update doc_items set name = name || '!'`);
    const rows = await sql<StoredRequest[]>`
      select id, method, url, headers, convert_from(body, 'UTF8') as body from net.http_request_queue
      where id > ${before?.max ?? '0'} order by id`;
    expect(rows).toHaveLength(2);
    const bodies = rows.map((r) => JSON.parse(r.body ?? 'null') as { old_row: { name: string }; new_row: { id: number; name: string } });
    expect(bodies.map((b) => b.new_row.name).sort()).toEqual(['a!', 'b!']);
    expect(bodies.map((b) => b.old_row.name).sort()).toEqual(['a', 'b']);
    expect(rows[0]).toMatchObject({ method: 'POST', url: 'https://postman-echo.com/post', headers: { 'Content-Type': 'application/json' } });
  });

  it('send multiple table rows in one request (CTE with jsonb_agg)', async () => {
    await sql.unsafe(`create table doc_rows (id int, label text)`);
    await sql.unsafe(`insert into doc_rows select g, 'row ' || g from generate_series(1, 3) g`);
    const id = await one(`
      WITH "selected_table_rows" AS (
        SELECT
          -- Converts all the rows into a JSONB array
          jsonb_agg(to_jsonb(doc_rows.*)) AS JSON_payload
        FROM doc_rows
        -- good practice to LIMIT the max amount of rows
      )
      SELECT
        net.http_post(
          url := 'https://postman-echo.com/post'::text,
          body := JSON_payload
        ) AS request_id
      FROM "selected_table_rows";`);
    const body = JSON.parse((await stored(id)).body ?? 'null') as { id: number; label: string }[];
    expect(body.map((r) => r.id).sort()).toEqual([1, 2, 3]);
  });

  it('debugging_example function (PERFORM … AS request_id inside an EXCEPTION block)', async () => {
    await sql.unsafe(`create table example_table (id int primary key, payload text)`);
    await sql.unsafe(`insert into example_table values (7, 'seven')`);
    await sql.unsafe(`
      CREATE OR REPLACE FUNCTION debugging_example (row_id int)
      RETURNS jsonb AS $$
      DECLARE
        -- Store payload data
        row_data_var jsonb;
      BEGIN
        -- Retrieve row data and convert to JSON
        SELECT to_jsonb("example_table".*) INTO row_data_var
        FROM "example_table"
        WHERE "example_table".id = row_id;

        -- Initiate HTTP POST request to URL
        PERFORM
          net.http_post(
            url := 'https://postman-echo.com/post',
            -- Use row data as payload
            body := row_data_var
          ) AS request_id;

        -- Optionally Log row data or other data for inspection in Supabase Dashboard's Postgres Logs
        RAISE LOG 'Logging an entire row as JSON (%)', row_data_var;

        -- return row data to inspect
        RETURN row_data_var;

      -- Handle exceptions here if needed
      EXCEPTION
        WHEN others THEN
          RAISE EXCEPTION 'An error occurred: %', SQLERRM;
      END;
      $$ LANGUAGE plpgsql;`);
    const [before] = await sql<{ max: string | null }[]>`select max(id)::text as max from net.http_request_queue`;
    const [result] = await sql<{ r: { id: number; payload: string } }[]>`select debugging_example(7) as r`;
    expect(result!.r).toEqual({ id: 7, payload: 'seven' });
    const rows = await sql<{ body: string }[]>`
      select convert_from(body, 'UTF8') as body from net.http_request_queue where id > ${before?.max ?? '0'}`;
    expect(rows.map((r) => JSON.parse(r.body))).toEqual([{ id: 7, payload: 'seven' }]);
  });

  it('the response-inspection queries run as written', async () => {
    await sql.unsafe(`SELECT * FROM net._http_response;`);
    await sql.unsafe(`
      SELECT
        *
      FROM net._http_response
      WHERE "status_code" >= 400 OR "error_msg" IS NOT NULL
      ORDER BY "created" DESC;`);
    await sql.unsafe(`SELECT "name", "setting" FROM pg_settings WHERE "name" LIKE 'pg_net%';`);
  });
});

describe('transactions', () => {
  it('a committed transaction queues its requests; a rolled-back one queues nothing', async () => {
    const start = await queueSize();
    await sql.begin(async (tx) => {
      await tx`select net.http_get('https://example.com/commit-1')`;
      await tx`select net.http_post('https://example.com/commit-2')`;
    });
    expect(await queueSize()).toBe(start + 2);
    await expect(
      sql.begin(async (tx) => {
        await tx`select net.http_get('https://example.com/rollback-1')`;
        await tx`select net.http_delete('https://example.com/rollback-2')`;
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await queueSize()).toBe(start + 2);
    const [left] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue where url like '%rollback%'`;
    expect(left!.n).toBe(0);
  });

  it('uncommitted requests are invisible to other sessions (the worker cannot claim them early)', async () => {
    const other = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
    try {
      await sql.begin(async (tx) => {
        const [row] = await tx<{ id: string }[]>`select net.http_get('https://example.com/invisible') as id`;
        const seen = await other`select count(*)::int as n from net.http_request_queue where id = ${row!.id}`;
        expect(seen[0]!.n).toBe(0);
      });
    } finally {
      await other.end();
    }
  });
});

describe('NOTIFY pg_net_edge_wake', () => {
  it('one notification per committed transaction, even with 100 requests; none on rollback', async () => {
    const listener = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
    const payloads: string[] = [];
    let onPayload: () => void = () => {};
    try {
      await listener.listen('pg_net_edge_wake', (payload) => {
        payloads.push(payload);
        onPayload();
      });
      // Notifications arrive in commit order: once the marker (sent in a later transaction)
      // is in, everything the earlier transactions sent is in too.
      const marker = async (name: string) => {
        const arrived = new Promise<void>((resolve) => {
          onPayload = () => {
            if (payloads.includes(name)) resolve();
          };
        });
        await sql`select pg_notify('pg_net_edge_wake', ${name})`;
        await arrived;
      };

      await sql.begin(async (tx) => {
        await tx`select net.http_get('https://example.com/n/' || g) from generate_series(1, 100) g`;
        await tx`select net.http_post('https://example.com/n')`;
      });
      await marker('m1');
      expect(payloads).toEqual(['', 'm1']);

      await sql
        .begin(async (tx) => {
          await tx`select net.http_get('https://example.com/n/' || g) from generate_series(1, 10) g`;
          throw new Error('roll back');
        })
        .catch(() => {});
      await marker('m2');
      expect(payloads).toEqual(['', 'm1', 'm2']);

      // Separate transactions each notify.
      await sql`select net.http_get('https://example.com/a')`;
      await sql`select net.http_delete('https://example.com/b')`;
      await marker('m3');
      expect(payloads).toEqual(['', 'm1', 'm2', '', '', 'm3']);
    } finally {
      await listener.end();
    }
  });
});

describe('privileges', () => {
  const role = `pne_caller_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

  beforeAll(async () => {
    await sql.unsafe(`create role ${role} nologin`);
  });
  afterAll(async () => {
    await sql.unsafe(`drop owned by ${role}`);
    await sql.unsafe(`drop role ${role}`);
  });

  async function asRole<T>(work: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
    return (await sql.begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      return work(tx);
    })) as T;
  }

  it('a role with no grants can queue through the API, read results and the settings view', async () => {
    const id = await asRole(async (tx) => {
      const [row] = await tx<{ id: string; me: string }[]>`
        select net.http_post('https://example.com/anyone', '{"a": 1}') as id, current_user as me`;
      expect(row!.me).toBe(role);
      await tx`select net.http_get('https://example.com/anyone')`;
      await tx`select net.http_delete('https://example.com/anyone')`;
      const [result] = await tx<{ status: string }[]>`select (net.http_collect_response(${row!.id})).status`;
      expect(result!.status).toBe('PENDING');
      await tx`select * from net.settings`;
      await tx`select net.wake()`;
      await tx`select net.worker_restart()`;
      return row!.id;
    });
    expect((await stored(id)).method).toBe('POST');
  });

  it('the same role cannot call the worker-facing functions or touch the tables', async () => {
    const denied = async (text: string) => {
      await expect(asRole((tx) => tx.unsafe(text))).rejects.toThrow(/permission denied/);
    };
    await denied(`select * from net._claim('thief', 10)`);
    await denied(`select net._record('thief', '[]')`);
    await denied(`select net._config()`);
    await denied(`select net._sweep('0 seconds')`);
    await denied(`select net._heartbeat(null)`);
    await denied(`select net._health()`);
    await denied(`select net._next_due_ms()`);
    await denied(`select * from net._worker_status`);
    // The tables are readable (row-level security: own rows only) and requests can be queued
    // directly, but not with the worker's columns or another owner (see security-roles.test.ts).
    await denied(`insert into net.http_request_queue (method, url, timeout_milliseconds, lease_owner) values ('GET', 'https://e.com', 1, 'x')`);
    await denied(`insert into net.http_request_queue (method, url, timeout_milliseconds, owner) values ('GET', 'https://e.com', 1, 'postgres')`);
    await denied(`update net.http_request_queue set url = 'https://evil.example/'`);
    await denied(`delete from net.http_request_queue`);
    await denied(`delete from net._http_response`);
  });

  it('every function in net pins search_path; only those that touch no request rows are SECURITY DEFINER', async () => {
    const rows = await sql<{ name: string; definer: boolean; config: string[] | null }[]>`
      select p.proname as name, p.prosecdef as definer, p.proconfig as config
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'net'`;
    expect(rows.length).toBeGreaterThan(15);
    for (const row of rows) expect(row.config, row.name).toContain('search_path=pg_catalog, pg_temp');
    const definers = rows.filter((r) => r.definer).map((r) => r.name).sort();
    // The request API runs as the caller (its requests are its own; row-level security decides
    // what it sees). net._requeue and net._cancel check for themselves that the caller may see
    // the row (net.retry, net.cancel).
    expect(definers).toEqual(['_cancel', '_requeue', '_worker_last_seen', 'check_worker_is_up', 'wait_until_running', 'wake', 'worker_restart']);
  });
});
