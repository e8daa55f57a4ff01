// Retries, delays and request status end to end inside workerd: SQL queues, the core drain runs
// with workerd's fetch against the loopback target, net._record requeues retryable failures
// with backoff (honouring Retry-After) until they succeed or run out of attempts.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import postgres from 'postgres';
import { Drain, drain } from '../../src/core/drain.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { hits, options, target, until } from './helpers.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await freshDatabase();
});

/** Short backoff so the tests don't sit through the production default of ~1 s, 2 s, … */
const fast = () => options({ retry: { baseMs: 100, maxMs: 5000 } });

async function queue(query: postgres.PendingQuery<{ id: string }[]>): Promise<string> {
  const [row] = await query;
  return row!.id;
}

async function status(id: string): Promise<string> {
  const [row] = await db.sql<{ s: string }[]>`select net.request_status(${id}::bigint) as s`;
  return row!.s;
}

interface Final {
  status_code: number | null;
  content: string | null;
  error_msg: string | null;
  timed_out: boolean | null;
  attempts: number;
}

async function final(id: string): Promise<Final> {
  const [row] = await db.sql<Final[]>`
    select status_code, content, error_msg, timed_out, attempts from net._http_response where id = ${id}::bigint`;
  if (!row) throw new Error(`no response for ${id}`);
  return row;
}

/** Drains (as cron/nudges would) until the request is finished; returns the states seen between drains. */
async function drainUntilFinished(id: string, ms = 30_000): Promise<string[]> {
  const seen: string[] = [];
  const deadline = Date.now() + ms;
  for (;;) {
    await drain(db.sql, fetch, fast());
    const s = await status(id);
    if (seen[seen.length - 1] !== s) seen.push(s);
    if (s === 'succeeded' || s === 'failed') return seen;
    if (Date.now() > deadline) throw new Error(`request ${id} still ${s} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function arrivals(prefix: string): Promise<number[]> {
  const response = await fetch(`${target}/__arrivals?prefix=${encodeURIComponent(prefix)}`);
  return ((await response.json()) as { at: number }[]).map((a) => a.at);
}

const key = (label: string) => `/flaky/${label}-${crypto.randomUUID()}`;

describe('retries with backoff', () => {
  it('503 with Retry-After: 1, then 200: waits at least a second, then succeeds on attempt 2', async () => {
    const path = key('retry-after');
    const id = await queue(
      db.sql`select net.http_request('GET', ${`${target}${path}?fail=1&retry_after=1`}, max_attempts := 3)::text as id`,
    );
    expect(await status(id)).toBe('queued');

    const first = await drain(db.sql, fetch, fast(), { waitForDue: false });
    expect(first).toMatchObject({ claimed: 1, recorded: 1 });
    expect(await status(id)).toBe('waiting to retry');
    const [waiting] = await db.sql<{ last_error: string; attempts: number; wait_ms: number }[]>`
      select last_error, attempts, (extract(epoch from (not_before - clock_timestamp())) * 1000)::float8 as wait_ms
      from net.http_request_queue where id = ${id}::bigint`;
    expect(waiting).toMatchObject({ last_error: 'HTTP 503', attempts: 1 });
    expect(waiting!.wait_ms).toBeGreaterThan(500); // Retry-After (1 s), not the 100 ms backoff
    const [pending] = await db.sql<{ status: string; message: string }[]>`
      select (r).status::text as status, (r).message from net.http_collect_response(${id}::bigint) r`;
    expect(pending!.status).toBe('PENDING');
    expect(pending!.message).toMatch(/waiting to retry .* after attempt 1 of 3 failed: HTTP 503/);
    // Nothing is written to _http_response while it waits, and an early drain doesn't send it.
    const [none] = await db.sql<{ n: number }[]>`select count(*)::int as n from net._http_response where id = ${id}::bigint`;
    expect(none!.n).toBe(0);
    expect(await drain(db.sql, fetch, fast(), { waitForDue: false })).toMatchObject({ claimed: 0 });

    const states = await drainUntilFinished(id);
    expect(states[states.length - 1]).toBe('succeeded');
    expect(await final(id)).toMatchObject({ status_code: 200, content: 'ok after 1 failures', error_msg: null, attempts: 2 });
    const times = await arrivals(path);
    expect(times).toHaveLength(2);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(990);
  });

  it('a request that fails for good: 3 attempts, the last response is stored, listed as failed; net.retry sends it again', async () => {
    const path = key('for-good');
    const id = await queue(
      db.sql`select net.http_request('POST', ${`${target}${path}?fail=3&status=502`}, 'payload', max_attempts := 3)::text as id`,
    );
    // The retries come due within the drain's budget, so one drain run sees them through.
    expect(await drainUntilFinished(id)).toEqual(['failed']);
    expect(await final(id)).toMatchObject({ status_code: 502, content: 'failure 3 of 3', attempts: 3 });
    expect(await hits(path)).toEqual({ [path]: 3 });
    const listed = await db.sql<{ id: string; method: string; status_code: number }[]>`
      select id::text as id, method, status_code from net.failed_requests where id = ${id}::bigint`;
    expect(listed).toEqual([{ id, method: 'POST', status_code: 502 }]);
    // The backoff grew: the second gap is not shorter than the first one's lower bound.
    const times = await arrivals(path);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(50);
    expect(times[2]! - times[1]!).toBeGreaterThanOrEqual(100);

    // net.retry queues it again under the same id; the endpoint now succeeds.
    await db.sql`select net.retry(${id}::bigint)`;
    expect(await status(id)).toBe('queued');
    await drainUntilFinished(id);
    expect(await final(id)).toMatchObject({ status_code: 200, attempts: 1 });
    expect(await hits(path)).toEqual({ [path]: 4 });
    const [gone] = await db.sql<{ n: number }[]>`select count(*)::int as n from net.failed_requests where id = ${id}::bigint`;
    expect(gone!.n).toBe(0);
  });

  it('refused connections and timeouts are retried; the final row says why, with the attempt count', async () => {
    const refused = await queue(
      db.sql`select net.http_request('GET', ${`http://127.0.0.1:${inject('closedPort')}/x`}, max_attempts := 2)::text as id`,
    );
    const slow = await queue(
      db.sql`select net.http_request('GET', ${`${target}/delay/3000`}, timeout_milliseconds := 100, max_attempts := 2)::text as id`,
    );
    await drainUntilFinished(refused);
    await drainUntilFinished(slow);
    const r = await final(refused);
    expect(r).toMatchObject({ status_code: null, attempts: 2 });
    expect(r.error_msg).toBeTruthy();
    expect(await final(slow)).toMatchObject({ timed_out: true, error_msg: 'Timeout of 100 ms reached', attempts: 2 });
  });

  it('by default (max_attempts 1, as pg_net) a 503 is the final response at once', async () => {
    const path = key('default');
    const id = await queue(db.sql`select net.http_get(${`${target}${path}?fail=1`})::text as id`);
    await drain(db.sql, fetch, fast());
    expect(await status(id)).toBe('failed');
    expect(await final(id)).toMatchObject({ status_code: 503, attempts: 1 });
  });

  it('pg_net.max_attempts applies to the pg_net-shaped functions', async () => {
    const path = key('setting');
    const session = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
    await session`set pg_net.max_attempts = 2`;
    const [row] = await session<{ id: string }[]>`select net.http_get(${`${target}${path}?fail=1`})::text as id`;
    await drainUntilFinished(row!.id);
    expect(await final(row!.id)).toMatchObject({ status_code: 200, attempts: 2 });
  });

  it('4xx other than 429 is not retried', async () => {
    const id = await queue(db.sql`select net.http_request('GET', ${`${target}/status/404`}, max_attempts := 5)::text as id`);
    await drain(db.sql, fetch, fast());
    expect(await final(id)).toMatchObject({ status_code: 404, attempts: 1 });
  });
});

describe('status at each stage, delays', () => {
  it('queued → in flight → succeeded, unknown for ids that never existed', async () => {
    expect(await status('99999999')).toBe('unknown');
    const id = await queue(db.sql`select net.http_get(${`${target}/delay/600`})::text as id`);
    expect(await status(id)).toBe('queued');
    const running = new Drain(db.sql, fetch, fast()).run();
    await until('in flight', async () => (await status(id)) === 'in flight', 5000);
    await running;
    expect(await status(id)).toBe('succeeded');
  });

  it('a delayed request is not sent before its time', async () => {
    const path = key('delayed');
    const id = await queue(
      db.sql`select net.http_request('GET', ${`${target}${path}?fail=0`}, delay := '400 milliseconds')::text as id`,
    );
    const [due] = await db.sql<{ at: Date }[]>`select not_before as at from net.http_request_queue where id = ${id}::bigint`;
    expect(await drain(db.sql, fetch, fast(), { waitForDue: false })).toMatchObject({ claimed: 0 });
    expect(await status(id)).toBe('queued');
    // A drain that finds nothing due waits for it, since it comes due within its budget.
    expect(await drain(db.sql, fetch, fast())).toMatchObject({ claimed: 1, recorded: 1, stopped: 'empty' });
    expect(await status(id)).toBe('succeeded');
    const [arrived] = await arrivals(path);
    expect(arrived!).toBeGreaterThanOrEqual(due!.at.getTime() - 5);
  });

  it('a drain does not wait for requests due after its budget', async () => {
    const id = await queue(db.sql`select net.http_request('GET', ${`${target}/status/200`}, delay := '5 seconds')::text as id`);
    const started = Date.now();
    const stats = await drain(db.sql, fetch, options({ budgetMs: 1000 }));
    expect(stats).toMatchObject({ claimed: 0, stopped: 'empty' });
    expect(Date.now() - started).toBeLessThan(4000);
    expect(await status(id)).toBe('queued');
    await db.sql`delete from net.http_request_queue where id = ${id}::bigint`;
  });

  it('a drain waiting for a delayed request still takes new work when poked', async () => {
    const later = await queue(db.sql`select net.http_request('GET', ${`${target}/status/200`}, delay := '4 seconds')::text as id`);
    const running = new Drain(db.sql, fetch, fast());
    const done = running.run();
    await new Promise((r) => setTimeout(r, 300)); // it found nothing due and is waiting
    const now = await queue(db.sql`select net.http_get(${`${target}/status/201`})::text as id`);
    expect(running.poke()).toBe(true);
    // Served long before the delayed request comes due (generous bound: it must not wait for it).
    await until('the poked request', async () => (await status(now)) === 'succeeded', 2500);
    expect(await status(later)).toBe('queued');
    expect(await done).toMatchObject({ claimed: 2, recorded: 2, stopped: 'empty' });
    expect(await status(later)).toBe('succeeded');
  });

  it('one drain run carries a request through its retries when they fit its budget', async () => {
    const path = key('one-run');
    const id = await queue(
      db.sql`select net.http_request('GET', ${`${target}${path}?fail=2&status=500`}, max_attempts := 3)::text as id`,
    );
    const stats = await drain(db.sql, fetch, fast());
    expect(stats).toMatchObject({ claimed: 3, recorded: 3, stopped: 'empty' });
    expect(await status(id)).toBe('succeeded');
    expect(await final(id)).toMatchObject({ status_code: 200, attempts: 3 });
    expect(await hits(path)).toEqual({ [path]: 3 });
  });
});
