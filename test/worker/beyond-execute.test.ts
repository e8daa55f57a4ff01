// Beyond pg_net, end to end inside workerd: requests queued with the v2 SQL API, drained by the
// core with workerd's fetch, seen by the real loopback target byte for byte; exact responses
// (binary bodies, every Set-Cookie line, one User-Agent line, the size limit).
import { beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { drain } from '../../src/core/drain.ts';
import { execute } from '../../src/core/execute.ts';
import { headerPairs } from '../../src/core/response.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { hits, options, target, uniquePrefix } from './helpers.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await freshDatabase();
});

interface Echo {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string>;
  raw_headers: string[];
  body_base64: string;
  body_text: string;
}

interface Row {
  status_code: number | null;
  content_type: string | null;
  headers: Record<string, string> | null;
  headers_all: [string, string][] | null;
  content: string | null;
  content_bytes: Uint8Array | null;
  error_msg: string | null;
  attempts: number | null;
  state: string;
}

async function queue(query: postgres.PendingQuery<{ id: string }[]>): Promise<string> {
  const [row] = await query;
  return row!.id;
}

async function row(id: string): Promise<Row> {
  const [r] = await db.sql<Row[]>`
    select status_code, content_type, headers, headers_all, content, content_bytes, error_msg, attempts,
           net.request_status(${id}::bigint) as state
    from net._http_response where id = ${id}::bigint`;
  if (!r) throw new Error(`no response for ${id}`);
  return r;
}

const echoOf = (r: Row) => JSON.parse(r.content ?? 'null') as Echo;
const bytesOf = (e: Echo) => [...Uint8Array.from(atob(e.body_base64), (c) => c.charCodeAt(0))];
/** Header lines with this name, exactly as the target received them. */
const rawLines = (e: Echo, name: string) =>
  e.raw_headers.filter((_, i) => i % 2 === 0 && e.raw_headers[i]!.toLowerCase() === name).length;

describe('any method, any body, seen byte for byte by the server', () => {
  it('every method with the body type it allows; Content-Type defaults per body type', async () => {
    const p = uniquePrefix('methods').replace('/hits/', '/echo/');
    const ids = {
      get: await queue(db.sql`select net.http_request('GET', ${`${target}${p}/get`}, params := '{"q": "a b"}')::text as id`),
      head: await queue(db.sql`select net.http_request('HEAD', ${`${target}${p}/head`})::text as id`),
      options: await queue(db.sql`select net.http_request('OPTIONS', ${`${target}${p}/options`})::text as id`),
      json: await queue(db.sql`select net.http_request('POST', ${`${target}${p}/json`}, '{"ü": [1, 2]}'::jsonb)::text as id`),
      text: await queue(db.sql`select net.http_request('PUT', ${`${target}${p}/text`}, 'plain text, ü')::text as id`),
      bytes: await queue(
        db.sql`select net.http_request('PATCH', ${`${target}${p}/bytes`}, '\\x00ff80c328fe'::bytea)::text as id`,
      ),
      delete: await queue(db.sql`select net.http_request('DELETE', ${`${target}${p}/delete`}, 'gone'::text)::text as id`),
      put: await queue(db.sql`select net.http_put(${`${target}${p}/put`}, '{"v": 1}')::text as id`),
      patch: await queue(db.sql`select net.http_patch(${`${target}${p}/patch`}, '{"op": "x"}')::text as id`),
      form: await queue(db.sql`select net.http_post_form(${`${target}${p}/form`}, '{"name": "Zoë & co", "tag": ["a", "b"]}')::text as id`),
      csv: await queue(
        db.sql`select net.http_request('POST', ${`${target}${p}/csv`}, 'a,b', headers := '{"Content-Type": "text/csv"}')::text as id`,
      ),
    };
    const stats = await drain(db.sql, fetch, options());
    expect(stats).toMatchObject({ claimed: 11, recorded: 11, errors: 0 });

    const get = echoOf(await row(ids.get));
    expect(get).toMatchObject({ method: 'GET', query: 'q=a%20b', body_base64: '' });
    expect(get.headers['content-type']).toBeUndefined();

    const head = await row(ids.head);
    expect(head).toMatchObject({ status_code: 200, content: null, state: 'succeeded' });
    expect(head.headers?.['Content-Type']).toBe('application/json');

    expect(echoOf(await row(ids.options))).toMatchObject({ method: 'OPTIONS', body_base64: '' });

    const json = echoOf(await row(ids.json));
    expect(json).toMatchObject({ method: 'POST', body_text: '{"ü": [1, 2]}' });
    expect(json.headers['content-type']).toBe('application/json');

    const text = echoOf(await row(ids.text));
    expect(text).toMatchObject({ method: 'PUT', body_text: 'plain text, ü' });
    expect(text.headers['content-type']).toBe('text/plain; charset=utf-8');

    const bytes = echoOf(await row(ids.bytes));
    expect(bytes.method).toBe('PATCH');
    expect(bytesOf(bytes)).toEqual([0x00, 0xff, 0x80, 0xc3, 0x28, 0xfe]);
    expect(bytes.headers['content-type']).toBe('application/octet-stream');
    expect(bytes.headers['content-length']).toBe('6');

    const del = echoOf(await row(ids.delete));
    expect(del).toMatchObject({ method: 'DELETE', body_text: 'gone' });

    expect(echoOf(await row(ids.put))).toMatchObject({ method: 'PUT', body_text: '{"v": 1}' });
    expect(echoOf(await row(ids.patch))).toMatchObject({ method: 'PATCH', body_text: '{"op": "x"}' });

    const form = echoOf(await row(ids.form));
    expect(form.headers['content-type']).toBe('application/x-www-form-urlencoded');
    const fields = new URLSearchParams(form.body_text);
    expect(fields.get('name')).toBe('Zoë & co');
    expect(fields.getAll('tag')).toEqual(['a', 'b']);

    const csv = echoOf(await row(ids.csv));
    expect(csv.headers['content-type']).toBe('text/csv');
    expect(rawLines(csv, 'content-type')).toBe(1);

    // HEAD reached the server too (its echo body was not sent back).
    expect(await hits(p)).toMatchObject({ [`${p}/head`]: 1 });
  });

  it('a large binary request body arrives intact', async () => {
    const body = new Uint8Array(300_000);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7919) % 256;
    const id = await queue(db.sql`select net.http_request('POST', ${`${target}/echo/big`}, ${body}::bytea)::text as id`);
    await drain(db.sql, fetch, options());
    const echo = echoOf(await row(id));
    const got = bytesOf(echo);
    expect(got.length).toBe(body.length);
    expect(got).toEqual([...body]);
  });
});

describe('exact responses', () => {
  it('every Set-Cookie line is kept in headers_all; headers stays pg_net-shaped', async () => {
    const id = await queue(db.sql`select net.http_get(${`${target}/headers`})::text as id`);
    await drain(db.sql, fetch, options());
    const r = await row(id);
    expect(r.headers_all!.filter(([name]) => name === 'Set-Cookie')).toEqual([
      ['Set-Cookie', 'a=1; Path=/'],
      ['Set-Cookie', 'b=2; Path=/'],
    ]);
    expect(r.headers_all).toContainEqual(['X-Multi', 'one, two']);
    expect(r.headers_all).toContainEqual(['X-Custom', 'custom-value']);
    expect(r.headers).toMatchObject({ 'Set-Cookie': 'a=1; Path=/, b=2; Path=/', 'X-Multi': 'one, two' });
    // Same names in both views.
    expect(new Set(r.headers_all!.map(([n]) => n))).toEqual(new Set(Object.keys(r.headers!)));
  });

  it('a body that is not UTF-8, or has NUL, keeps its exact bytes in content_bytes', async () => {
    const bin = await queue(db.sql`select net.http_get(${`${target}/binary`})::text as id`);
    const nul = await queue(db.sql`select net.http_get(${`${target}/nul`})::text as id`);
    await drain(db.sql, fetch, options());
    const b = await row(bin);
    expect(b.content).toBeNull();
    expect([...b.content_bytes!]).toEqual([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x61, 0xe2, 0x82]);
    const n = await row(nul);
    expect(n.content).toBeNull();
    expect(new TextDecoder().decode(n.content_bytes!)).toBe('before\u0000after');
  });

  it('large bodies (sent to the database as their own parameter) are stored whole, text and bytes, beside small ones', async () => {
    const size = 300_001;
    const text = await queue(db.sql`select net.http_get(${`${target}/bytes/${size}`})::text as id`);
    const bytes = await queue(db.sql`select net.http_get(${`${target}/bytes/${size}?nul=1`})::text as id`);
    const small = await queue(db.sql`select net.http_get(${`${target}/nul`})::text as id`);
    const stats = await drain(db.sql, fetch, options());
    expect(stats).toMatchObject({ claimed: 3, recorded: 3, errors: 0 });
    const t = await row(text);
    expect(t).toMatchObject({ status_code: 200, content_bytes: null, error_msg: null, state: 'succeeded' });
    expect(t.content).toBe('x'.repeat(size));
    expect(t.headers?.['Content-Length']).toBe(String(size));
    const b = await row(bytes);
    expect(b.content).toBeNull();
    expect(b.content_bytes!.length).toBe(size);
    expect(b.content_bytes!.every((x) => x === 0)).toBe(true);
    expect(new TextDecoder().decode((await row(small)).content_bytes!)).toBe('before\u0000after');
  });

  it('a caller’s User-Agent replaces the default: exactly one User-Agent line is sent', async () => {
    const given = await queue(
      db.sql`select net.http_get(${`${target}/echo/ua`}, headers := '{"user-AGENT": "my-agent/2.0"}')::text as id`,
    );
    const dflt = await queue(db.sql`select net.http_get(${`${target}/echo/ua-default`})::text as id`);
    await drain(db.sql, fetch, options());
    const g = echoOf(await row(given));
    expect(rawLines(g, 'user-agent')).toBe(1);
    expect(g.headers['user-agent']).toBe('my-agent/2.0');
    const d = echoOf(await row(dflt));
    expect(rawLines(d, 'user-agent')).toBe(1);
    expect(d.headers['user-agent']).toBe('pg-net-edge-test/1');
  });

  it('a body over the limit is not stored: error_msg says so, the status is kept, it counts as failed and is not retried', async () => {
    const id = await queue(db.sql`select net.http_request('GET', ${`${target}/bytes/5000`}, max_attempts := 3)::text as id`);
    await drain(db.sql, fetch, options({ maxResponseBytes: 1000 }));
    const r = await row(id);
    expect(r).toMatchObject({ status_code: 200, content: null, content_bytes: null, attempts: 1, state: 'failed' });
    expect(r.error_msg).toMatch(/response body exceeds the 1000-byte limit/);
  });
});

describe('execute() flags retryable outcomes', () => {
  const base = { headers: {}, body: null, timeout_milliseconds: 5000, attempts: 1 };
  const opts = { maxResponseBytes: 100_000, userAgent: 'x', retry: { baseMs: 100, maxMs: 5000 } };

  it('503 with Retry-After → retry_in_ms honours it; 200 and 404 → none', async () => {
    const unavailable = await execute(
      { ...base, id: '1', method: 'GET', url: `${target}/flaky/${crypto.randomUUID()}?fail=5&retry_after=2` },
      fetch,
      opts,
    );
    expect(unavailable).toMatchObject({ status_code: 503, retry_in_ms: 2000 });
    const ok = await execute({ ...base, id: '2', method: 'GET', url: `${target}/status/200` }, fetch, opts);
    expect(ok.retry_in_ms).toBeUndefined();
    const missing = await execute({ ...base, id: '3', method: 'GET', url: `${target}/status/404` }, fetch, opts);
    expect(missing.retry_in_ms).toBeUndefined();
  });

  it('timeouts and refused connections are flagged with backoff by attempt', async () => {
    const slow = await execute(
      { ...base, id: '4', method: 'GET', url: `${target}/delay/2000`, timeout_milliseconds: 50, attempts: 3 },
      fetch,
      opts,
    );
    expect(slow.timed_out).toBe(true);
    expect(slow.retry_in_ms).toBeGreaterThanOrEqual(200);
    expect(slow.retry_in_ms).toBeLessThanOrEqual(400);
    const invalid = await execute({ ...base, id: '5', method: 'FETCH', url: `${target}/x` }, fetch, opts);
    expect(invalid.error_msg).toMatch(/^invalid request/);
    expect(invalid.retry_in_ms).toBeUndefined();
  });

  it('headerPairs keeps Set-Cookie lines apart', () => {
    const h = new Headers();
    h.append('Set-Cookie', 'a=1, with comma; Expires=Wed, 21 Oct 2015 07:28:00 GMT');
    h.append('set-cookie', 'b=2');
    h.append('X-Y', '1');
    h.append('x-y', '2');
    expect(headerPairs(h)).toEqual([
      ['Set-Cookie', 'a=1, with comma; Expires=Wed, 21 Oct 2015 07:28:00 GMT'],
      ['Set-Cookie', 'b=2'],
      ['X-Y', '1, 2'],
    ]);
  });
});
