// Schema v2 ("beyond pg_net") against real PostgreSQL: net.http_request with jsonb/text/bytea
// bodies (and how overloads resolve), http_put/http_patch, form posts, call-time errors,
// delays (not_before) honoured by net._claim, the retry policy and net._record's retry outcome,
// net.request_status at each stage, collect_response, net.retry, net.failed_requests, the
// pg_net.max_attempts setting, privileges and the v1 → v2 upgrade.
import postgres from 'postgres';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { install } from '../../src/node/install.ts';
import { emptyQueue, freshDatabase, useFreshDatabase, type TestDatabase } from '../support/db.ts';
import { SCHEMA_VERSION } from '../support/schema.ts';

let db: TestDatabase;
let sql: postgres.Sql;
const { session, endWithFile } = useFreshDatabase((fresh) => {
  db = fresh;
  sql = fresh.sql;
});
beforeEach(() => emptyQueue(sql));

interface Stored {
  id: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body: Buffer | null;
  timeout_milliseconds: number;
  not_before: Date | null;
  max_attempts: number;
  retry_max_delay_ms: number;
  attempts: number;
  last_error: string | null;
}

async function stored(id: string): Promise<Stored> {
  const [row] = await sql<Stored[]>`
    select id::text as id, method, url, headers, body, timeout_milliseconds, not_before, max_attempts,
           retry_max_delay_ms, attempts, last_error
    from net.http_request_queue where id = ${id}`;
  if (!row) throw new Error(`request ${id} is not in the queue`);
  return row;
}

/** Runs one SQL text and returns the first column of the first row as text. */
async function one(text: string, s: postgres.Sql = sql): Promise<string> {
  const rows = await s.unsafe(text);
  return String(Object.values(rows[0] ?? {})[0]);
}

async function queueSize(): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
  return row!.n;
}

async function status(id: string): Promise<string> {
  const [row] = await sql<{ s: string }[]>`select net.request_status(${id}::bigint) as s`;
  return row!.s;
}

async function claim(owner: string, n = 10): Promise<{ id: string; attempts: number }[]> {
  return sql<{ id: string; attempts: number }[]>`select id::text as id, attempts from net._claim(${owner}, ${n})`;
}

async function record(owner: string, outcomes: Record<string, unknown>[]): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select net._record(${owner}, ${JSON.stringify(outcomes)}::text::jsonb) as n`;
  return row!.n;
}

/** The SQL error a statement raises (fails the test if it succeeds). */
async function sqlError(text: string): Promise<postgres.PostgresError> {
  try {
    await sql.unsafe(text);
  } catch (error) {
    return error as postgres.PostgresError;
  }
  throw new Error(`expected an error from: ${text}`);
}

describe('net.http_request: any method, any body', () => {
  it('every method without a body; lowercase methods are normalized', async () => {
    for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'patch', ' head ']) {
      const id = await one(`select net.http_request('${method}', 'https://example.com/m')`);
      expect(await stored(id)).toMatchObject({ method: method.trim().toUpperCase(), headers: {}, body: null });
    }
  });

  it('a jsonb body (cast) is sent as its text with Content-Type application/json', async () => {
    const id = await one(`select net.http_request('PUT', 'https://example.com/j', '{"a": 1, "b": "ü"}'::jsonb)`);
    const row = await stored(id);
    expect(row.headers).toEqual({ 'Content-Type': 'application/json' });
    expect(row.body!.toString('utf8')).toBe('{"a": 1, "b": "ü"}');
  });

  it('an untyped literal resolves to the text overload (documented): text/plain; charset=utf-8, UTF-8 bytes', async () => {
    const id = await one(`select net.http_request('POST', 'https://example.com/t', 'héllo {"not": "json"}')`);
    const row = await stored(id);
    expect(row.headers).toEqual({ 'Content-Type': 'text/plain; charset=utf-8' });
    expect(row.body!.toString('utf8')).toBe('héllo {"not": "json"}');
    const typed = await one(`select net.http_request('POST', 'https://example.com/t', 'x'::text)`);
    expect((await stored(typed)).body!.toString('utf8')).toBe('x');
    const varchar = await one(`select net.http_request('POST', 'https://example.com/t', 'v'::varchar)`);
    expect((await stored(varchar)).body!.toString('utf8')).toBe('v');
  });

  it('a bytea body is stored byte for byte (NUL and invalid UTF-8 included) as application/octet-stream', async () => {
    const id = await one(`select net.http_request('POST', 'https://example.com/b', '\\x00ff80c328'::bytea)`);
    const row = await stored(id);
    expect(row.headers).toEqual({ 'Content-Type': 'application/octet-stream' });
    expect([...row.body!]).toEqual([0x00, 0xff, 0x80, 0xc3, 0x28]);
    // Bound as a parameter from a client, too.
    const bytes = Buffer.from([1, 2, 3, 0, 255]);
    const [bound] = await sql<{ id: string }[]>`select net.http_request('PUT', 'https://example.com/b', ${bytes}::bytea)::text as id`;
    expect([...(await stored(bound!.id)).body!]).toEqual([...bytes]);
  });

  it('the caller’s Content-Type (any case) replaces the default for every body type', async () => {
    const a = await one(
      `select net.http_request('POST', 'https://example.com/c', 'a,b', headers := '{"content-type": "text/csv"}')`,
    );
    expect((await stored(a)).headers).toEqual({ 'content-type': 'text/csv' });
    const b = await one(
      `select net.http_request('POST', 'https://example.com/c', '{}'::jsonb, headers := '{"Content-Type": "application/vnd.api+json"}')`,
    );
    expect((await stored(b)).headers).toEqual({ 'Content-Type': 'application/vnd.api+json' });
    const c = await one(
      `select net.http_request('POST', 'https://example.com/c', '\\x89504e47'::bytea, headers := '{"CONTENT-TYPE": "image/png"}')`,
    );
    expect((await stored(c)).headers).toEqual({ 'CONTENT-TYPE': 'image/png' });
  });

  it('no body (omitted or SQL null): no Content-Type added', async () => {
    const a = await one(`select net.http_request('DELETE', 'https://example.com/n')`);
    const b = await one(`select net.http_request('PUT', 'https://example.com/n', null)`);
    const c = await one(`select net.http_request('PATCH', 'https://example.com/n', null::bytea)`);
    for (const id of [a, b, c]) expect(await stored(id)).toMatchObject({ headers: {}, body: null });
  });

  it('named arguments in any order, params, headers and timeout like the pg_net functions', async () => {
    const id = await one(`
      select net.http_request(
        timeout_milliseconds := 1500, headers := '{"X-A": "1"}', params := '{"q": "a b"}',
        body := 'payload', url := 'https://example.com/named', method := 'PATCH')`);
    expect(await stored(id)).toMatchObject({
      method: 'PATCH',
      url: 'https://example.com/named?q=a%20b',
      headers: { 'X-A': '1', 'Content-Type': 'text/plain; charset=utf-8' },
      timeout_milliseconds: 1500,
    });
    const noBody = await one(`select net.http_request('GET', 'https://example.com/p', params := '{"k": 1}')`);
    expect((await stored(noBody)).url).toBe('https://example.com/p?k=1');
  });

  it('a json body (row_to_json, json columns) is sent exactly as written, as application/json', async () => {
    const id = await one(`select net.http_request('POST', 'https://example.com/j', '{"b":1,  "a" : [2]}'::json)`);
    const row = await stored(id);
    expect(row.headers).toEqual({ 'Content-Type': 'application/json' });
    expect(row.body!.toString('utf8')).toBe('{"b":1,  "a" : [2]}');
    const r2j = await one(`select net.http_request('POST', 'https://example.com/j', row_to_json(row(1, 'x')))`);
    expect(JSON.parse((await stored(r2j)).body!.toString('utf8'))).toEqual({ f1: 1, f2: 'x' });
  });

  it('the four overloads exist and a call without a body is not ambiguous', async () => {
    const rows = await sql<{ args: string }[]>`
      select pg_get_function_identity_arguments(p.oid) as args from pg_proc p
      join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'net' and p.proname = 'http_request' order by 1`;
    expect(rows.map((r) => r.args.split(',')[2]!.trim()).sort()).toEqual(['body bytea', 'body json', 'body jsonb', 'body text']);
    await expect(one(`select net.http_request('GET', 'https://example.com/')`)).resolves.toMatch(/^\d+$/);
  });
});

describe('call-time errors queue nothing', () => {
  const cases: [string, string, RegExp][] = [
    ['unknown method', `select net.http_request('FETCH', 'https://example.com/')`, /unknown HTTP method "FETCH": use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS/],
    ['empty method', `select net.http_request('', 'https://example.com/')`, /unknown HTTP method ""/],
    ['null method', `select net.http_request(null, 'https://example.com/')`, /method must not be null/],
    ['body on GET', `select net.http_request('GET', 'https://example.com/', 'x')`, /a GET request cannot carry a body/],
    ['body on HEAD', `select net.http_request('head', 'https://example.com/', '{}'::jsonb)`, /a HEAD request cannot carry a body/],
    ['empty body on GET', `select net.http_request('GET', 'https://example.com/', ''::bytea)`, /a GET request cannot carry a body/],
    ['bad URL', `select net.http_request('POST', 'ftp://example.com/', 'x')`, /invalid URL "ftp:\/\/example.com\/"/],
    ['bad header', `select net.http_request('POST', 'https://e.com/', 'x', headers := '{"A": "b\\nc"}')`, /must not contain CR, LF/],
    ['bad timeout', `select net.http_request('POST', 'https://e.com/', 'x', timeout_milliseconds := 0)`, /timeout_milliseconds must be between 1 and 300000/],
    ['max_attempts 0', `select net.http_request('GET', 'https://e.com/', max_attempts := 0)`, /max_attempts must be between 1 and 50, got 0/],
    ['max_attempts 51', `select net.http_request('GET', 'https://e.com/', max_attempts := 51)`, /max_attempts must be between 1 and 50, got 51/],
    ['retry delay', `select net.http_request('GET', 'https://e.com/', retry_max_delay_ms := -1)`, /retry_max_delay_ms must be between 0 and 86400000/],
    ['both schedules', `select net.http_request('GET', 'https://e.com/', not_before := now(), delay := '1 second')`, /either not_before or delay, not both/],
    ['negative delay', `select net.http_request('GET', 'https://e.com/', delay := '-1 second')`, /delay must not be negative/],
    ['put non-JSON type', `select net.http_put('https://e.com/', headers := '{"Content-Type": "text/plain"}')`, /net.http_put sends JSON: Content-Type must be application\/json, got "text\/plain"/],
    ['patch non-JSON type', `select net.http_patch('https://e.com/', headers := '{"content-type": "text/xml"}')`, /net.http_patch sends JSON/],
    ['form not an object', `select net.http_post_form('https://e.com/', '[1]')`, /form must be a JSON object/],
    ['form nested value', `select net.http_post_form('https://e.com/', '{"a": {"b": 1}}')`, /form field "a" must be a string, number, boolean or an array of them, got a JSON object/],
    ['text literal to http_put', `select net.http_put('https://e.com/', 'not json')`, /invalid input syntax for type json/],
  ];
  for (const [name, text, message] of cases) {
    it(name, async () => {
      const error = await sqlError(text);
      expect(error.message).toMatch(message);
      expect(await queueSize()).toBe(0);
    });
  }

  it('errors carry SQLSTATEs a caller can catch', async () => {
    expect((await sqlError(`select net.http_request('FETCH', 'https://e.com/')`)).code).toBe('22023');
    expect((await sqlError(`select net.http_request(null, 'https://e.com/')`)).code).toBe('22004');
  });
});

describe('net.http_put and net.http_patch (shaped like net.http_post)', () => {
  it('positional and named calls, defaults body {} and application/json', async () => {
    const put = await one(`select net.http_put('https://example.com/p', '{"v": 1}'::jsonb, '{"a": "b"}', '{"X-K": "k"}', 900)`);
    expect(await stored(put)).toMatchObject({
      method: 'PUT',
      url: 'https://example.com/p?a=b',
      headers: { 'X-K': 'k', 'Content-Type': 'application/json' },
      timeout_milliseconds: 900,
    });
    expect((await stored(put)).body!.toString()).toBe('{"v": 1}');
    const patch = await one(`select net.http_patch(url := 'https://example.com/q', body := '{"op": "x"}')`);
    expect(await stored(patch)).toMatchObject({ method: 'PATCH', headers: { 'Content-Type': 'application/json' } });
    expect((await stored(patch)).body!.toString()).toBe('{"op": "x"}');
    const bare = await one(`select net.http_patch('https://example.com/r')`);
    expect((await stored(bare)).body!.toString()).toBe('{}');
  });

  it('an application/json Content-Type with parameters is kept as given', async () => {
    const id = await one(`select net.http_put('https://e.com/', headers := '{"content-type": "application/json; charset=utf-8"}')`);
    expect((await stored(id)).headers).toEqual({ 'content-type': 'application/json; charset=utf-8' });
  });
});

describe('forms', () => {
  it('net.form_urlencode: RFC 3986 encoding, arrays repeat the name, nulls are left out', async () => {
    const [row] = await sql<{ f: string }[]>`
      select net.form_urlencode('{"name": "Zoë & co", "tag": ["a", "b c"], "n": 5, "ok": true, "skip": null}') as f`;
    expect(new URLSearchParams(row!.f).getAll('tag')).toEqual(['a', 'b c']);
    expect(Object.fromEntries(new URLSearchParams(row!.f))).toEqual({ name: 'Zoë & co', tag: 'b c', n: '5', ok: 'true' });
    expect(row!.f).toContain('name=Zo%C3%AB%20%26%20co');
    const [empty] = await sql<{ a: string; b: string }[]>`select net.form_urlencode('{}') as a, net.form_urlencode(null) as b`;
    expect(empty).toEqual({ a: '', b: '' });
  });

  it('net.http_post_form posts the encoded form as application/x-www-form-urlencoded, overridable', async () => {
    const id = await one(`select net.http_post_form('https://example.com/f', '{"user": "ann", "pw": "a=b"}')`);
    const row = await stored(id);
    expect(row).toMatchObject({ method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    expect(Object.fromEntries(new URLSearchParams(row.body!.toString()))).toEqual({ user: 'ann', pw: 'a=b' });
    const typed = await one(
      `select net.http_post_form('https://example.com/f', '{"a": 1}', headers := '{"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}')`,
    );
    expect((await stored(typed)).headers).toEqual({ 'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8' });
  });
});

describe('delays: not_before and delay', () => {
  it('stores not_before; delay is counted from the call', async () => {
    // (at most a year ahead: see security-limits.test.ts)
    const when = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 6, 1));
    const at = await one(`select net.http_request('GET', 'https://e.com/', not_before := '${when.toISOString()}')`);
    expect((await stored(at)).not_before!.toISOString()).toBe(when.toISOString());
    const id = await one(`select net.http_request('GET', 'https://e.com/', delay := '10 minutes')`);
    const [row] = await sql<{ id: string; ms: number }[]>`
      select id::text as id, (extract(epoch from (not_before - clock_timestamp())) * 1000)::float8 as ms
      from net.http_request_queue where id = ${id}`;
    expect(row!.ms).toBeGreaterThan(9.5 * 60_000);
    expect(row!.ms).toBeLessThanOrEqual(10 * 60_000);
    expect(await status(row!.id)).toBe('queued');
  });

  it('net._claim skips rows that are not due and keeps oldest first among due ones', async () => {
    const later = await one(`select net.http_request('GET', 'https://e.com/later', delay := '1 hour')`);
    const first = await one(`select net.http_get('https://e.com/first')`);
    const past = await one(`select net.http_request('GET', 'https://e.com/past', not_before := now() - interval '1 minute')`);
    const last = await one(`select net.http_get('https://e.com/last')`);
    expect((await claim('drain-a')).map((r) => r.id)).toEqual([first, past, last]);
    expect(await claim('drain-b')).toEqual([]);
    // Once due, it is claimed.
    await sql`update net.http_request_queue set not_before = now() - interval '1 second' where id = ${later}`;
    expect((await claim('drain-b')).map((r) => r.id)).toEqual([later]);
  });

  it('net._health counts delayed requests in the depth but ages them only from when they are due', async () => {
    await one(`select net.http_request('GET', 'https://e.com/', delay := '1 hour')`);
    const [h] = await sql<{ h: { queue_depth: number; oldest_queued_age_ms: number | null } }[]>`select net._health() as h`;
    expect(h!.h).toMatchObject({ queue_depth: 1, oldest_queued_age_ms: null });
    const due = await one(`select net.http_request('GET', 'https://e.com/', not_before := now() - interval '3 seconds')`);
    await sql`update net.http_request_queue set created = now() - interval '1 hour' where id = ${due}`;
    const [h2] = await sql<{ h: { queue_depth: number; oldest_queued_age_ms: number } }[]>`select net._health() as h`;
    expect(h2!.h.queue_depth).toBe(2);
    expect(h2!.h.oldest_queued_age_ms).toBeGreaterThanOrEqual(3000);
    expect(h2!.h.oldest_queued_age_ms).toBeLessThan(60_000);
  });

  it('net._next_due_ms: time until the next not-yet-due request, honouring max_timeout_ms', async () => {
    const next = async (max: number | null = null) => {
      const [row] = await sql<{ ms: string | null }[]>`select net._next_due_ms(${max}::int)::text as ms`;
      return row!.ms === null ? null : Number(row!.ms);
    };
    expect(await next()).toBeNull();
    await one(`select net.http_get('https://e.com/now')`); // due now: not "next"
    expect(await next()).toBeNull();
    await one(`select net.http_request('GET', 'https://e.com/', delay := '1 hour', timeout_milliseconds := 5000)`);
    await one(`select net.http_request('GET', 'https://e.com/', delay := '10 seconds', timeout_milliseconds := 60000)`);
    const soon = await next();
    expect(soon).toBeGreaterThan(9000);
    expect(soon).toBeLessThanOrEqual(10_000);
    const fitting = await next(5000);
    expect(fitting).toBeGreaterThan(3_500_000);
    expect(await next(1000)).toBeNull();
  });

  it('claims interleave plain and past-due rows by id, clear not_before, and concurrent claimers never share a row', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      ids.push(
        await one(
          i % 3 === 0
            ? `select net.http_request('GET', 'https://e.com/${i}', not_before := now() - interval '1 minute')`
            : i % 3 === 1
              ? `select net.http_get('https://e.com/${i}')`
              : `select net.http_request('GET', 'https://e.com/${i}', delay := '1 hour')`,
        ),
      );
    }
    const due = ids.filter((_, i) => i % 3 !== 2);
    const first = await claim('drain-a', 5);
    expect(first.map((r) => r.id)).toEqual(due.slice(0, 5));
    const [cleared] = await sql<{ n: number }[]>`
      select count(*)::int as n from net.http_request_queue where lease_owner = 'drain-a' and not_before is not null`;
    expect(cleared!.n).toBe(0);
    const sessions = Array.from({ length: 4 }, () => session());
    const results = await Promise.all(
      sessions.map((s, i) => s<{ id: string }[]>`select id::text as id from net._claim(${`c${i}`}, 3)`),
    );
    const got = results.flatMap((rows) => rows.map((r) => r.id));
    expect(new Set(got).size).toBe(got.length);
    // Whatever the concurrent claimers skipped, a last claim picks up; scheduled rows are never claimed.
    const rest = (await claim('drain-z', 100)).map((r) => r.id);
    expect([...got, ...rest].sort()).toEqual(due.slice(5).sort());
  });

  it('a delayed request becomes due by itself (short delay, real clock)', async () => {
    const id = await one(`select net.http_request('GET', 'https://e.com/soon', delay := '300 milliseconds')`);
    expect(await claim('drain-a')).toEqual([]);
    await new Promise((r) => setTimeout(r, 400));
    expect((await claim('drain-a')).map((r) => r.id)).toEqual([id]);
  });
});

describe('retries: policy, the retry outcome in net._record, status at each stage', () => {
  it('max_attempts defaults to 1 (no retries, as pg_net) and is stored per request', async () => {
    const a = await one(`select net.http_get('https://e.com/')`);
    const b = await one(`select net.http_request('GET', 'https://e.com/', max_attempts := 4, retry_max_delay_ms := 5000)`);
    expect(await stored(a)).toMatchObject({ max_attempts: 1, retry_max_delay_ms: 60000 });
    expect(await stored(b)).toMatchObject({ max_attempts: 4, retry_max_delay_ms: 5000 });
  });

  it('a retryable outcome with attempts left releases the lease, sets not_before and last_error; then the final one is recorded with its attempts', async () => {
    const id = await one(`select net.http_request('POST', 'https://e.com/r', 'data', headers := '{"X-K": "v"}', max_attempts := 3)`);
    expect(await status(id)).toBe('queued');
    expect(await claim('drain-a')).toEqual([{ id, attempts: 1 }]);
    expect(await status(id)).toBe('in flight');

    expect(await record('drain-a', [{ id, status_code: 503, content: 'busy', error_msg: null, retry_in_ms: 60_000 }])).toBe(1);
    let row = await stored(id);
    expect(row).toMatchObject({ attempts: 1, last_error: 'HTTP 503' });
    const [lease] = await sql<{ owner: string | null; expires: Date | null; wait_ms: number }[]>`
      select lease_owner as owner, lease_expires as expires,
             (extract(epoch from (not_before - clock_timestamp())) * 1000)::float8 as wait_ms
      from net.http_request_queue where id = ${id}`;
    expect(lease).toMatchObject({ owner: null, expires: null });
    expect(lease!.wait_ms).toBeGreaterThan(55_000);
    expect(lease!.wait_ms).toBeLessThanOrEqual(60_000);
    expect(await status(id)).toBe('waiting to retry');
    expect(await claim('drain-b')).toEqual([]); // not due yet
    const [pending] = await sql<{ status: string; message: string }[]>`
      select (r).status::text as status, (r).message as message from net.http_collect_response(${id}::bigint) r`;
    expect(pending!.status).toBe('PENDING');
    expect(pending!.message).toMatch(/^request is pending: waiting to retry at .* after attempt 1 of 3 failed: HTTP 503$/);
    const [none] = await sql<{ n: number }[]>`select count(*)::int as n from net._http_response`;
    expect(none!.n).toBe(0);

    // Second attempt: a connection error, retried again.
    await sql`update net.http_request_queue set not_before = now() where id = ${id}`;
    expect(await claim('drain-b')).toEqual([{ id, attempts: 2 }]);
    expect(await record('drain-b', [{ id, error_msg: 'connection refused: x', retry_in_ms: 10 }])).toBe(1);
    row = await stored(id);
    expect(row).toMatchObject({ attempts: 2, last_error: 'connection refused: x' });

    // Third and last attempt: even flagged for retry, no attempts are left, so it is final.
    await new Promise((r) => setTimeout(r, 20));
    expect(await claim('drain-c')).toEqual([{ id, attempts: 3 }]);
    expect(await record('drain-c', [{ id, status_code: 502, content: 'bad gateway', retry_in_ms: 10 }])).toBe(1);
    expect(await queueSize()).toBe(0);
    const [response] = await sql<Record<string, unknown>[]>`
      select status_code, content, attempts, method, url, request_headers, convert_from(request_body, 'UTF8') as request_body,
             timeout_milliseconds, max_attempts from net._http_response where id = ${id}`;
    expect(response).toEqual({
      status_code: 502,
      content: 'bad gateway',
      attempts: 3,
      method: 'POST',
      url: 'https://e.com/r',
      request_headers: { 'X-K': 'v', 'Content-Type': 'text/plain; charset=utf-8' },
      request_body: 'data',
      timeout_milliseconds: 2000,
      max_attempts: 3,
    });
    expect(await status(id)).toBe('failed');
  });

  it('the delay is capped by the request’s retry_max_delay_ms', async () => {
    const id = await one(`select net.http_request('GET', 'https://e.com/', max_attempts := 2, retry_max_delay_ms := 1000)`);
    await claim('drain-a');
    await record('drain-a', [{ id, status_code: 429, retry_in_ms: 3_600_000 }]);
    const [row] = await sql<{ wait_ms: number }[]>`
      select (extract(epoch from (not_before - clock_timestamp())) * 1000)::float8 as wait_ms from net.http_request_queue where id = ${id}`;
    expect(row!.wait_ms).toBeLessThanOrEqual(1000);
    expect(row!.wait_ms).toBeGreaterThan(0);
  });

  it('without retry_in_ms an outcome is final even with attempts left; a stale owner changes nothing', async () => {
    const [a, b] = [
      await one(`select net.http_request('GET', 'https://e.com/a', max_attempts := 5)`),
      await one(`select net.http_request('GET', 'https://e.com/b', max_attempts := 5)`),
    ];
    await claim('drain-a');
    expect(await record('drain-x', [{ id: b, status_code: 500, retry_in_ms: 10 }])).toBe(0);
    expect(await stored(b)).toMatchObject({ last_error: null });
    expect(await status(b)).toBe('in flight');
    expect(await record('drain-a', [{ id: a, status_code: 404 }, { id: b, status_code: 200, content: 'ok' }])).toBe(2);
    expect(await status(a)).toBe('failed');
    expect(await status(b)).toBe('succeeded');
    const [ok] = await sql<{ attempts: number; method: string | null; request_body: Buffer | null }[]>`
      select attempts, method, request_body from net._http_response where id = ${b}`;
    // Successful requests don't keep a copy of the request.
    expect(ok).toEqual({ attempts: 1, method: null, request_body: null });
  });

  it('headers_all is stored as given (every Set-Cookie line)', async () => {
    const id = await one(`select net.http_get('https://e.com/h')`);
    await claim('drain-a');
    const all = [['content-type', 'text/plain'], ['set-cookie', 'a=1; Path=/'], ['set-cookie', 'b=2; Path=/']];
    await record('drain-a', [{ id, status_code: 200, headers: { 'set-cookie': 'a=1; Path=/, b=2; Path=/' }, headers_all: all }]);
    const [row] = await sql<{ headers_all: unknown }[]>`select headers_all from net._http_response where id = ${id}`;
    expect(row!.headers_all).toEqual(all);
  });

  it('net.request_status: unknown ids, errors and 4xx/5xx are failed, 1xx-3xx succeeded', async () => {
    expect(await status('987654321')).toBe('unknown');
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(await one(`select net.http_get('https://e.com/${i}')`));
    await claim('drain-a');
    await record('drain-a', [
      { id: ids[0], status_code: 200 },
      { id: ids[1], status_code: 302 },
      { id: ids[2], status_code: 404 },
      { id: ids[3], error_msg: 'Timeout of 2000 ms reached', timed_out: true },
      { id: ids[4], status_code: 200, error_msg: 'response body exceeds the 10-byte limit' },
    ]);
    expect(await Promise.all(ids.map(status))).toEqual(['succeeded', 'succeeded', 'failed', 'failed', 'failed']);
    // An expired lease (a drain that died) is queued again, not in flight.
    const dead = await one(`select net.http_get('https://e.com/dead')`);
    await claim('drain-b');
    await sql`update net.http_request_queue set lease_expires = now() - interval '1 second' where id = ${dead}`;
    expect(await status(dead)).toBe('queued');
  });

  it('net.request_status sees only committed requests of other sessions (unknown until commit)', async () => {
    const other = session();
    await other.begin(async (tx) => {
      const [row] = await tx<{ id: string }[]>`select net.http_get('https://e.com/tx')::text as id`;
      expect(await status(row!.id)).toBe('unknown');
      const [mine] = await tx<{ s: string }[]>`select net.request_status(${row!.id}::bigint) as s`;
      expect(mine!.s).toBe('queued');
    });
  });
});

describe('net.http_collect_response with retries', () => {
  it('PENDING vs not found are told apart; ERROR/SUCCESS as in pg_net', async () => {
    const [unknown] = await sql<{ status: string; message: string }[]>`
      select (r).status::text as status, (r).message as message from net._http_collect_response(424242) r`;
    expect(unknown).toEqual({ status: 'ERROR', message: 'request matching request_id not found' });
    const id = await one(`select net.http_request('GET', 'https://e.com/', delay := '1 hour')`);
    const [pending] = await sql<{ status: string; message: string }[]>`
      select (r).status::text as status, (r).message as message from net._http_collect_response(${id}::bigint) r`;
    expect(pending).toEqual({ status: 'PENDING', message: 'request is pending' });
  });

  it('async := false waits through a retry and returns the final response', async () => {
    const id = await one(`select net.http_request('GET', 'https://e.com/', max_attempts := 2)`);
    const waiter = session();
    const result = waiter<{ status: string; code: number; body: string }[]>`
      select (r).status::text as status, ((r).response).status_code as code, ((r).response).body as body
      from net.http_collect_response(${id}::bigint, async := false) r`;
    await claim('drain-a');
    await record('drain-a', [{ id, status_code: 503, retry_in_ms: 0 }]);
    await new Promise((r) => setTimeout(r, 150)); // the waiter keeps waiting while the retry is due
    await claim('drain-b');
    await record('drain-b', [{ id, status_code: 200, content: 'second time lucky' }]);
    const [row] = await result;
    expect(row).toEqual({ status: 'SUCCESS', code: 200, body: 'second time lucky' });
  });
});

describe('net.retry and net.failed_requests', () => {
  async function failWith(outcome: Record<string, unknown>, text = `select net.http_request('PUT', 'https://e.com/x', '\\x0001ff'::bytea, headers := '{"X-T": "1"}', timeout_milliseconds := 1234, max_attempts := 2, retry_max_delay_ms := 777)`): Promise<string> {
    const id = await one(text);
    await claim('drain-a');
    await record('drain-a', [{ id, ...outcome }]);
    return id;
  }

  it('lists failures newest first; re-queues one with the same id, method, url, headers, body and policy', async () => {
    const ok = await failWith({ status_code: 200 }, `select net.http_get('https://e.com/ok')`);
    const a = await failWith({ error_msg: 'connection refused: x' });
    const b = await failWith({ status_code: 500 });
    const listed = await sql<{ id: string; method: string; url: string; attempts: number }[]>`
      select id::text as id, method, url, attempts from net.failed_requests`;
    expect(listed).toEqual([
      { id: b, method: 'PUT', url: 'https://e.com/x', attempts: 1 },
      { id: a, method: 'PUT', url: 'https://e.com/x', attempts: 1 },
    ]);
    expect(listed.map((r) => r.id)).not.toContain(ok);

    const [again] = await sql<{ id: string }[]>`select net.retry(${a}::bigint)::text as id`;
    expect(again!.id).toBe(a);
    expect(await status(a)).toBe('queued');
    const row = await stored(a);
    expect(row).toMatchObject({
      method: 'PUT',
      url: 'https://e.com/x',
      headers: { 'X-T': '1', 'Content-Type': 'application/octet-stream' },
      timeout_milliseconds: 1234,
      max_attempts: 2,
      retry_max_delay_ms: 777,
      attempts: 0,
      last_error: null,
      not_before: null,
    });
    expect([...row.body!]).toEqual([0, 1, 255]);
    const [gone] = await sql<{ n: number }[]>`select count(*)::int as n from net._http_response where id = ${a}`;
    expect(gone!.n).toBe(0);
    // It runs again like any request.
    expect((await claim('drain-z')).map((r) => r.id)).toEqual([a]);
  });

  it('max_attempts and delay can be given to net.retry', async () => {
    const id = await failWith({ status_code: 503 });
    await sql`select net.retry(${id}::bigint, max_attempts := 5, delay := '1 hour')`;
    const row = await stored(id);
    expect(row.max_attempts).toBe(5);
    expect(row.not_before!.getTime()).toBeGreaterThan(Date.now() + 59 * 60_000);
  });

  it('refuses succeeded, unknown and still-queued requests, and bad arguments', async () => {
    const ok = await failWith({ status_code: 201 });
    expect((await sqlError(`select net.retry(${ok})`)).message).toMatch(/request \d+ succeeded \(HTTP 201\); only failed requests can be retried/);
    expect((await sqlError(`select net.retry(99999999)`)).message).toMatch(/request 99999999 not found/);
    const queued = await one(`select net.http_get('https://e.com/q')`);
    expect((await sqlError(`select net.retry(${queued})`)).message).toMatch(/request \d+ is still queued; only finished requests can be retried/);
    const failed = await failWith({ status_code: 500 });
    expect((await sqlError(`select net.retry(${failed}, max_attempts := 0)`)).message).toMatch(/max_attempts must be between 1 and 10 for a retry/);
    expect((await sqlError(`select net.retry(${failed}, delay := '-1 minute')`)).message).toMatch(/delay must be between 0 and 1 day/);
    expect(await status(failed)).toBe('failed');
  });

  it('a failed row without a stored request (recorded before v2) cannot be re-sent', async () => {
    await sql`insert into net._http_response (id, status_code, error_msg) values (31337, null, 'old failure')`;
    expect((await sqlError(`select net.retry(31337)`)).message).toMatch(/has no stored request to send again/);
  });

  it('two concurrent retries of one request: one queues it, the other is told it is queued', async () => {
    const id = await failWith({ status_code: 500 });
    const other = session();
    const results = await Promise.allSettled([sql`select net.retry(${id}::bigint)`, other`select net.retry(${id}::bigint)`]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(String(rejected.reason)).toMatch(/is still queued|not found/);
    expect(await queueSize()).toBe(1);
  });
});

describe('the pg_net.max_attempts setting', () => {
  afterAll(async () => {
    await sql.unsafe(`alter role postgres in database ${db.name} reset pg_net.max_attempts`);
  });

  it('ALTER ROLE … IN DATABASE for the owner, else a session SET; the argument wins; invalid values are ignored', async () => {
    const s = session();
    const attempts = async (text: string) => (await stored(await one(text, s))).max_attempts;
    expect(await attempts(`select net.http_get('https://e.com/')`)).toBe(1);
    await s`set pg_net.max_attempts = 4`;
    expect(await attempts(`select net.http_get('https://e.com/')`)).toBe(4);
    expect(await attempts(`select net.http_post('https://e.com/')`)).toBe(4);
    expect(await attempts(`select net.http_request('GET', 'https://e.com/', max_attempts := 2)`)).toBe(2);
    await s`set pg_net.max_attempts = 'lots'`;
    expect(await attempts(`select net.http_get('https://e.com/')`)).toBe(1);
    await s`reset pg_net.max_attempts`;
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.max_attempts = 6`);
    expect(await attempts(`select net.http_delete('https://e.com/')`)).toBe(6);
    // As for every pg_net.* setting here, the catalog beats the session (see net.settings).
    await s`set pg_net.max_attempts = 3`;
    expect(await attempts(`select net.http_get('https://e.com/')`)).toBe(6);
    await s`reset pg_net.max_attempts`;
    const [view] = await sql<{ setting: string; source: string }[]>`select setting, source from net.settings where name = 'pg_net.max_attempts'`;
    expect(view).toEqual({ setting: '6', source: `ALTER ROLE postgres IN DATABASE ${db.name}` });
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.max_attempts = 99`);
    expect(await attempts(`select net.http_get('https://e.com/')`)).toBe(1);
    const [invalid] = await sql<{ setting: string; source: string }[]>`select setting, source from net.settings where name = 'pg_net.max_attempts'`;
    expect(invalid!.setting).toBe('1');
    expect(invalid!.source).toMatch(/invalid/);
  });

  it('the role/database value is looked up once per transaction (a change applies from the next one)', async () => {
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.max_attempts = 2`);
    const s = session();
    const seen = await s.begin(async (tx) => {
      const [a] = await tx<{ id: string }[]>`select net.http_get('https://e.com/a')::text as id`;
      await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.max_attempts = 7`);
      const [b] = await tx<{ id: string }[]>`select net.http_get('https://e.com/b')::text as id`;
      return [a!.id, b!.id];
    });
    expect((await stored(seen[0]!)).max_attempts).toBe(2);
    expect((await stored(seen[1]!)).max_attempts).toBe(2);
    const [c] = await s<{ id: string }[]>`select net.http_get('https://e.com/c')::text as id`;
    expect((await stored(c!.id)).max_attempts).toBe(7);
  });
});

describe('privileges', () => {
  const role = `pne_v2_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  beforeAll(async () => {
    await sql.unsafe(`create role ${role} nologin`);
  });
  afterAll(async () => {
    await sql.unsafe(`drop owned by ${role}`);
    await sql.unsafe(`drop role ${role}`);
  });
  const asRole = <T>(work: (tx: postgres.TransactionSql) => Promise<T>) =>
    sql.begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      return work(tx);
    }) as Promise<T>;

  it('a role with no grants can use the new API and list and retry its own failures, not touch the worker side', async () => {
    const other = await (async () => {
      const id = await one(`select net.http_get('https://e.com/f')`);
      await claim('drain-a');
      await record('drain-a', [{ id, status_code: 500 }]);
      return id;
    })();
    const own = await asRole(async (tx) => {
      await tx`select net.http_request('PUT', 'https://e.com/', 'x')`;
      await tx`select net.http_put('https://e.com/')`;
      await tx`select net.http_patch('https://e.com/')`;
      await tx`select net.http_post_form('https://e.com/', '{"a": 1}')`;
      await tx`select net.form_urlencode('{"a": 1}')`;
      const [row] = await tx<{ id: string }[]>`select net.http_get('https://e.com/mine')::text as id`;
      return row!.id;
    });
    await claim('drain-a');
    await record('drain-a', [{ id: own, status_code: 500 }]);
    await asRole(async (tx) => {
      // Another role's failure is unknown to this one (security-roles.test.ts has the rest).
      const [s] = await tx<{ mine: string; theirs: string }[]>`
        select net.request_status(${own}::bigint) as mine, net.request_status(${other}::bigint) as theirs`;
      expect(s).toEqual({ mine: 'failed', theirs: 'unknown' });
      const listed = await tx<{ id: string }[]>`select id::text as id from net.failed_requests`;
      expect(listed.map((r) => r.id)).toEqual([own]);
      await tx`select net.retry(${own}::bigint)`;
    });
    expect(await status(own)).toBe('queued');
    for (const text of [`select net._next_due_ms()`, `select * from net._claim('thief', 1)`]) {
      await expect(asRole((tx) => tx.unsafe(text))).rejects.toThrow(/permission denied/);
    }
  });
});

describe('upgrade from schema v1', () => {
  it('a v1 database (no v2 columns) is upgraded in place, keeping queued requests and responses', async () => {
    const up = await freshDatabase();
    endWithFile(up.sql);
    // Make the clone look like a v1 install: drop what v2 added.
    await up.sql.unsafe(`
      drop view net.failed_requests;
      alter table net.http_request_queue drop column not_before, drop column max_attempts,
        drop column retry_max_delay_ms, drop column last_error;
      alter table net._http_response drop column attempts, drop column headers_all, drop column method,
        drop column url, drop column request_headers, drop column request_body, drop column timeout_milliseconds,
        drop column max_attempts, drop column retry_max_delay_ms, drop column if exists error_kind;
      delete from net._migrations where version in (2, 4);
      -- … and what v3 added.
      drop trigger http_request_queue_check on net.http_request_queue;
      drop policy own_requests on net.http_request_queue;
      drop policy own_responses on net._http_response;
      alter table net.http_request_queue disable row level security, drop column owner, drop column expired_leases;
      alter table net._http_response disable row level security, drop column owner, drop column retry_claim;
      delete from net._migrations where version = 3;
      -- … and what v5 added.
      drop policy cancel_unclaimed on net.http_request_queue;
      alter table net.http_request_queue drop column cancel_claim;
      delete from net._migrations where version = 5;
      insert into net.http_request_queue (method, url, headers, timeout_milliseconds) values ('GET', 'https://e.com/v1', '{}', 1000);
      insert into net._http_response (id, status_code, content) values (777, 200, 'v1 response');`);
    const report = await install(up.url, { log: () => {} });
    expect(report).toEqual({ before: 1, after: SCHEMA_VERSION, queued: 1, responses: 1 });
    // Rows from before v3 belong to the owner of net.
    const owners = await up.sql<{ owner: string }[]>`
      select owner::text as owner from net.http_request_queue union all select owner::text from net._http_response`;
    expect(owners).toEqual([{ owner: 'postgres' }, { owner: 'postgres' }]);
    const [queued] = await up.sql<{ url: string; max_attempts: number; not_before: Date | null }[]>`
      select url, max_attempts, not_before from net.http_request_queue`;
    expect(queued).toEqual({ url: 'https://e.com/v1', max_attempts: 1, not_before: null });
    const [s] = await up.sql<{ a: string; b: string }[]>`select net.request_status(777) as a, net.request_status(1) as b`;
    expect(s).toEqual({ a: 'succeeded', b: 'queued' });
    const claimed = await up.sql<{ url: string }[]>`select url from net._claim('d', 10)`;
    expect(claimed).toEqual([{ url: 'https://e.com/v1' }]);
  });
});
