// Bad input to net.http_get/post/delete raises in the caller's transaction, with a message that
// names what is wrong and the right SQLSTATE, and queues nothing (no row, no notification).
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { useFreshDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let sql: postgres.Sql;
useFreshDatabase((fresh) => {
  db = fresh;
  sql = fresh.sql;
});

interface PgError {
  message: string;
  code: string;
}

async function queueState(): Promise<{ n: number; last: string | null }> {
  const [row] = await sql<{ n: number; last: string | null }[]>`
    select count(*)::int as n, (select last_value::text from net.http_request_queue_id_seq) as last
    from net.http_request_queue`;
  return row!;
}

/** Runs the call, expects it to fail with code and message, and checks nothing was queued. */
async function rejects(call: string, code: string, message: RegExp): Promise<void> {
  const before = await queueState();
  let caught: PgError | undefined;
  try {
    await sql.unsafe(`select ${call}`);
  } catch (error) {
    caught = error as PgError;
  }
  expect(caught, `${call} should fail`).toBeDefined();
  expect(caught!.message).toMatch(message);
  expect(caught!.code).toBe(code);
  expect((await queueState()).n).toBe(before.n);
}

const INVALID = '22023';
const NOT_NULL = '23502';
const NULL_VALUE = '22004';

describe('url', () => {
  it('null url raises for every method, as pg_net does (a not-null violation on "url")', async () => {
    for (const call of [
      `net.http_get(null)`,
      `net.http_post(null)`,
      `net.http_delete(null)`,
      `net.http_post(url := null, body := '{}')`,
    ]) {
      await rejects(call, NOT_NULL, /^null value in column "url"/);
    }
  });

  it.each([
    ['example.com/path', /must be an absolute URL starting with http:\/\/ or https:\/\//],
    ['/relative/path', /must be an absolute URL/],
    ['ftp://example.com/file', /must be an absolute URL starting with http/],
    ['file:///etc/passwd', /must be an absolute URL/],
    ['javascript:alert(1)', /must be an absolute URL/],
    ['', /must be an absolute URL/],
    ['http:/example.com', /must be an absolute URL/],
    ['http://', /missing host/],
    ['https:///path', /missing host/],
    ['http://user:pw@/x', /missing host/],
    ['http://:8080/x', /missing host/],
    ['http://exa mple.com/', /contains whitespace or control characters/],
    ['http://example.com/a b', /contains whitespace or control characters/],
    [' http://example.com/', /contains whitespace or control characters/],
    ['http://example.com/\tx', /contains whitespace or control characters/],
    ['http://example.com/\r\nX-Injected: 1', /contains whitespace or control characters/],
    ['http://example.com:99999/', /invalid port "99999"/],
    ['http://example.com:80a/', /invalid port "80a"/],
    ['http://[::1/', /malformed IPv6 address/],
    ['http://exa<mple.com/', /invalid character in host "exa<mple.com"/],
    ['http://example.com\\@evil.com/', /backslash/],
  ])('%j is rejected', async (url, message) => {
    const literal = `'${url.replace(/'/g, "''")}'`;
    for (const call of [`net.http_get(${literal})`, `net.http_post(${literal})`, `net.http_delete(${literal})`]) {
      // A wrong or missing scheme starts with pg_net's (curl's) text, "Unsupported URL scheme".
      const prefix = /must be an absolute URL/.test(message.source) ? 'Unsupported URL scheme: ' : '';
      await rejects(call, INVALID, new RegExp(`^${prefix}invalid URL "${escape(url)}": ${message.source.replace(/^\^/, '')}`));
    }
  });

  it.each([
    'http://example.com',
    'HTTPS://Example.COM/Path?q=1#f',
    'http://127.0.0.1:8080/x',
    'http://[::1]:3000/',
    'https://bücher.example/straße',
    'http://example.com:/',
  ])('%j is accepted', async (url) => {
    const [row] = await sql<{ id: string }[]>`select net.http_get(${url}) as id`;
    const [q] = await sql<{ url: string }[]>`select url from net.http_request_queue where id = ${row!.id}`;
    expect(q!.url).toBe(url);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('headers', () => {
  it.each([
    [`'[]'`, /^headers must be a JSON object of name\/value pairs, got a JSON array$/],
    [`'"x"'`, /^headers must be a JSON object .* got a JSON string$/],
    [`'5'`, /got a JSON number$/],
    [`'{"X-A": {"b": 1}}'`, /^header "X-A" must be a string, number or boolean, got a JSON object$/],
    [`'{"X-A": [1]}'`, /^header "X-A" must be a string, number or boolean, got a JSON array$/],
    [`'{"X-A": null}'`, /^header "X-A" must be a string, number or boolean, got a JSON null$/],
    [`'{"Bad Name": "v"}'`, /^invalid header name "Bad Name": must be an HTTP token/],
    [`'{"X-A:": "v"}'`, /^invalid header name "X-A:"/],
    [`'{"": "v"}'`, /^invalid header name "": must be an HTTP token/],
    [`'{"Été": "v"}'`, /^invalid header name "Été"/],
    [`'{"X-A": "v\\r\\nX-Injected: 1"}'`, /^header "X-A" value must not contain CR, LF or NUL characters$/],
    [`'{"X-A": "v\\nX"}'`, /CR, LF or NUL/],
  ])('headers %s are rejected', async (headers, message) => {
    await rejects(`net.http_get('https://e.com', headers := ${headers}::jsonb)`, INVALID, message);
    await rejects(`net.http_post('https://e.com', headers := ${headers}::jsonb)`, INVALID, message);
    await rejects(`net.http_delete('https://e.com', '{}', ${headers}::jsonb)`, INVALID, message);
  });

  it('JSON null as the whole headers value means none', async () => {
    const [row] = await sql<{ id: string }[]>`select net.http_get('https://e.com', headers := 'null'::jsonb) as id`;
    const [q] = await sql<{ headers: unknown }[]>`select headers from net.http_request_queue where id = ${row!.id}`;
    expect(q!.headers).toEqual({});
  });

  it('token characters are accepted in names; tabs and unicode in values are fine', async () => {
    const [row] = await sql<{ id: string }[]>`
      select net.http_get('https://e.com', headers := ${sql.json({ "X!#$%&'*+.^_`|~-9": 'a\tb ü' })}) as id`;
    const [q] = await sql<{ headers: unknown }[]>`select headers from net.http_request_queue where id = ${row!.id}`;
    expect(q!.headers).toEqual({ "X!#$%&'*+.^_`|~-9": 'a\tb ü' });
  });
});

describe('params', () => {
  it.each([
    [`'[1, 2]'`, /^params must be a JSON object of name\/value pairs, got a JSON array$/],
    [`'"a=b"'`, /^params must be a JSON object .* got a JSON string$/],
    [`'{"a": {"b": 1}}'`, /^param "a" must be a string, number or boolean, got a JSON object$/],
    [`'{"a": [1, 2]}'`, /^param "a" must be a string, number or boolean, got a JSON array$/],
    [`'{"a": null}'`, /^param "a" must be a string, number or boolean, got a JSON null$/],
  ])('params %s are rejected', async (params, message) => {
    await rejects(`net.http_get('https://e.com', ${params}::jsonb)`, INVALID, message);
    await rejects(`net.http_post('https://e.com', params := ${params}::jsonb)`, INVALID, message);
    await rejects(`net.http_delete('https://e.com', ${params}::jsonb)`, INVALID, message);
  });
});

describe('timeout_milliseconds', () => {
  it('null raises', async () => {
    await rejects(`net.http_get('https://e.com', timeout_milliseconds := null)`, NULL_VALUE, /^timeout_milliseconds must not be null$/);
    await rejects(`net.http_post('https://e.com', '{}', '{}', '{}', null)`, NULL_VALUE, /timeout_milliseconds must not be null/);
  });

  it.each([0, -1, 300001, 2147483647])('%i is out of range', async (timeout) => {
    const message = new RegExp(`^timeout_milliseconds must be between 1 and 300000 \\(5 minutes\\), got ${timeout}$`);
    await rejects(`net.http_get('https://e.com', timeout_milliseconds := ${timeout})`, INVALID, message);
    await rejects(`net.http_post('https://e.com', timeout_milliseconds := ${timeout})`, INVALID, message);
    await rejects(`net.http_delete('https://e.com', timeout_milliseconds := ${timeout})`, INVALID, message);
  });

  it('the bounds 1 and 300000 are accepted', async () => {
    await sql`select net.http_get('https://e.com', timeout_milliseconds := 1)`;
    await sql`select net.http_get('https://e.com', timeout_milliseconds := 300000)`;
  });
});

describe('http_post Content-Type', () => {
  it.each([
    'text/plain',
    'application/x-www-form-urlencoded',
    'application/jsonp',
    'multipart/form-data; boundary=x',
    '',
  ])('%j is rejected with a message that http_post sends JSON', async (type) => {
    await rejects(
      `net.http_post('https://e.com', headers := ${`'${JSON.stringify({ 'Content-Type': type })}'`}::jsonb)`,
      INVALID,
      new RegExp(`^net\\.http_post sends JSON: Content-Type must be application/json, got "${escape(type)}"$`),
    );
  });

  it('the lookup is case-insensitive', async () => {
    await rejects(`net.http_post('https://e.com', headers := '{"CONTENT-TYPE": "text/xml"}')`, INVALID, /sends JSON/);
    await rejects(
      `net.http_post('https://e.com', headers := '{"content-type": "application/json", "Content-Type": "text/csv"}')`,
      INVALID,
      /got "text\/csv"/,
    );
  });
});

describe('errors roll back with the caller', () => {
  it('an error after earlier good calls in the same transaction queues none of them', async () => {
    const before = await queueState();
    await expect(
      sql.begin(async (tx) => {
        await tx`select net.http_get('https://e.com/ok-1')`;
        await tx`select net.http_get('https://e.com/ok-2')`;
        await tx`select net.http_get('not a url')`;
      }),
    ).rejects.toThrow(/invalid URL "not a url"/);
    expect((await queueState()).n).toBe(before.n);
  });

  it('a caller may catch the error in a subtransaction and carry on', async () => {
    const before = await queueState();
    await sql.unsafe(`
      do $$
      begin
        begin
          perform net.http_get('nope');
        exception when invalid_parameter_value then
          null;
        end;
        perform net.http_get('https://e.com/after-catch');
      end $$`);
    const after = await queueState();
    expect(after.n).toBe(before.n + 1);
    const [row] = await sql<{ url: string }[]>`select url from net.http_request_queue order by id desc limit 1`;
    expect(row!.url).toBe('https://e.com/after-catch');
  });

  it('a rejected call sends no notification', async () => {
    const listener = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
    const payloads: string[] = [];
    let arrived: () => void = () => {};
    const marker = new Promise<void>((resolve) => (arrived = resolve));
    try {
      await listener.listen('pg_net_edge_wake', (payload) => {
        payloads.push(payload);
        if (payload === 'marker') arrived();
      });
      // Autocommit: the failed statement's transaction aborts, so its pg_notify is discarded.
      await sql`select net.http_get('https://e.com', timeout_milliseconds := 0)`.catch(() => {});
      await sql`select pg_notify('pg_net_edge_wake', 'marker')`;
      await marker;
      expect(payloads).toEqual(['marker']);
    } finally {
      await listener.end();
    }
  });
});
