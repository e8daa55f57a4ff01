// The whole drain on a fake clock (issue 16 item 3): real PostgreSQL, a fetch the test answers by
// hand, and time that moves only when the test says. Checks the lifecycle decisions — claim,
// record in a batch when the flush time comes (not before), linger then stop, wait for a delayed
// row that comes due within the budget, stop at the budget — with no timed assertions: every
// duration below is fake time.
import postgres from 'postgres';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { Drain, type DrainExtras } from '../../src/core/drain.ts';
import { GRAIN_MS } from '../../src/core/deadlines.ts';
import { POKE_TICK_MS } from '../../src/core/drain-timer.ts';
import type { DrainOptions, DrainStats } from '../../src/core/types.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { options } from '../support/drain-options.ts';
import { FakeClock } from '../support/fake-clock.ts';

let db: TestDatabase;
let sql: postgres.Sql;

beforeAll(async () => {
  db = await freshDatabase();
  sql = db.sql;
});

afterAll(async () => {
  await sql.end();
});

beforeEach(async () => {
  await sql`delete from net.http_request_queue`;
  await sql`delete from net._http_response`;
});

/** A request the drain sent, waiting for the test to answer it. */
interface Call {
  url: string;
  respond: (status?: number) => void;
}

/** A fetch whose responses come when the test calls respond(). */
function handFetch(): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = [];
  const fetchFn = ((input: Parameters<typeof fetch>[0], init?: RequestInit) =>
    new Promise<Response>((resolve, reject) => {
      const url = input instanceof Request ? input.url : String(input);
      // Like a real fetch, an aborted signal (the request's timeout) rejects it.
      init?.signal?.addEventListener('abort', () => reject(init.signal!.reason));
      calls.push({ url, respond: (status = 200) => resolve(new Response(`done ${url}`, { status })) });
    })) as typeof fetch;
  return { fetch: fetchFn, calls };
}

async function queue(path: string, delay?: string, timeoutMs = 30_000): Promise<string> {
  const [row] = await sql<{ id: string }[]>`
    select net.http_request('GET', ${'http://drain.test/' + path}, timeout_milliseconds => ${timeoutMs}::int,
                            delay => ${delay ?? null}::interval)::text as id`;
  return row!.id;
}

async function recordedIds(): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id::text as id from net._http_response order by id`;
  return rows.map((r) => r.id);
}

/** Starts a drain on the fake clock; `stats` is set once it stops. */
function start(opts: Partial<DrainOptions>, extras: DrainExtras = {}) {
  const clock = new FakeClock();
  const { fetch, calls } = handFetch();
  const drain = new Drain(sql, fetch, options(opts), { heartbeat: false, clock, ...extras });
  const run: { stats?: DrainStats; done: Promise<DrainStats> } = { done: drain.run() };
  void run.done.then((stats) => (run.stats = stats));
  return { clock, calls, drain, run };
}

/** Waits (in real time, for database round trips) until `check` passes. */
function until(check: () => void | Promise<void>): Promise<void> {
  return vi.waitFor(check, { timeout: 10_000, interval: 5 });
}

describe('drain lifecycle on a fake clock', () => {
  it('claims, then records finished requests in one batch when the flush time comes, not before', async () => {
    const a = await queue('a');
    const b = await queue('b');
    const { clock, calls, drain, run } = start({ flushMs: 100 });
    // Both are claimed and sent without any time passing.
    await until(() => expect(calls.map((c) => c.url).sort()).toEqual(['http://drain.test/a', 'http://drain.test/b']));
    expect(drain.claiming.claimed).toBe(2);

    calls.find((c) => c.url.endsWith('/a'))!.respond();
    await until(() => expect(drain.buffer.length).toBe(1));
    // b is still in flight, so a waits for the flush time (flushMs after it finished).
    await clock.advance(99);
    expect(drain.recording.inFlight).toBe(false);
    expect(drain.buffer.length).toBe(1);
    expect(await recordedIds()).toEqual([]);
    expect(drain.mode(clock.now())).toBe('working');

    await clock.advance(1);
    await until(async () => expect(await recordedIds()).toEqual([a]));

    // The last one: nothing else is coming, so it is recorded at once; then the queue is empty.
    calls.find((c) => c.url.endsWith('/b'))!.respond();
    const stats = await run.done;
    expect(await recordedIds()).toEqual([a, b].sort());
    expect(stats).toMatchObject({ claimed: 2, recorded: 2, errors: 0, stopped: 'empty', duration_ms: 100 });
  });

  it('times a request out on the drain clock and records it as timed out', async () => {
    const id = await queue('never', undefined, 1000);
    const { clock, calls, drain, run } = start({});
    await until(() => expect(calls).toHaveLength(1));
    await clock.advance(999);
    expect(drain.inFlight).toBe(1);
    expect(drain.buffer.length + drain.recording.recorded).toBe(0);
    // Timeouts share a signal per GRAIN_MS window (deadlines.ts): due at most that much later.
    await clock.advance(GRAIN_MS + 1);
    const stats = await run.done;
    const [row] = await sql<{ id: string; timed_out: boolean; status_code: number | null }[]>`
      select id::text as id, timed_out, status_code from net._http_response`;
    expect(row).toEqual({ id, timed_out: true, status_code: null });
    expect(stats).toMatchObject({ claimed: 1, recorded: 1, errors: 1, stopped: 'empty' });
  });

  it('lingers lingerMs on an empty queue, then stops', async () => {
    const { clock, drain, run } = start({}, { lingerMs: 500 });
    await until(() => expect(drain.mode(clock.now())).toBe('lingering'));
    await clock.advance(499);
    expect(run.stats).toBeUndefined();
    expect(drain.mode(clock.now())).toBe('lingering');
    await clock.advance(1);
    const stats = await run.done;
    expect(stats).toMatchObject({ claimed: 0, stopped: 'empty', duration_ms: 500 });
  });

  it('takes a poke while lingering: the next tick claims the new row', async () => {
    const { clock, calls, drain, run } = start({}, { lingerMs: 500 });
    await until(() => expect(drain.mode(clock.now())).toBe('lingering'));
    const id = await queue('poked');
    expect(drain.poke()).toBe(true);
    // Pokes only set a flag (see Drain.poke); the loop's tick notices.
    await clock.advance(10);
    await until(() => expect(calls).toHaveLength(1));
    calls[0]!.respond();
    await until(async () => expect(await recordedIds()).toEqual([id]));
    // Lingering counts from the last work (the finished request, at 10 ms), and ends at the
    // first tick after that (the ticks now run off the flush timer's phase).
    await until(() => expect(drain.mode(clock.now())).toBe('lingering'));
    await clock.advance(499);
    expect(drain.mode(clock.now())).toBe('lingering');
    await clock.advance(POKE_TICK_MS);
    const stats = await run.done;
    expect(stats).toMatchObject({ claimed: 1, recorded: 1, stopped: 'empty' });
    expect(stats.duration_ms).toBeGreaterThanOrEqual(510);
    expect(stats.duration_ms).toBeLessThanOrEqual(510 + POKE_TICK_MS);
  });

  it('waits for a delayed row that comes due within the budget, then sends it', async () => {
    const id = await queue('later', '2 seconds');
    const { clock, calls, drain, run } = start({ budgetMs: 20_000 });
    await until(() => expect(drain.mode(clock.now())).toBe('waiting-for-due'));
    await clock.advance(1000);
    expect(drain.mode(clock.now())).toBe('waiting-for-due');
    expect(calls).toHaveLength(0);
    // The database's clock is real: move the row's due time instead of waiting for it.
    await sql`update net.http_request_queue set not_before = clock_timestamp() - interval '1 second' where id = ${id}`;
    await clock.advance(1100);
    await until(() => expect(calls).toHaveLength(1));
    calls[0]!.respond();
    const stats = await run.done;
    expect(await recordedIds()).toEqual([id]);
    expect(stats).toMatchObject({ claimed: 1, recorded: 1, stopped: 'empty' });
  });

  it('leaves a row that comes due after the budget to a later drain', async () => {
    await queue('too-late', '2 seconds');
    const { calls, run } = start({ budgetMs: 1000 });
    // No time passes: it asks when the row comes due, finds that past its budget, and stops.
    const stats = await run.done;
    expect(calls).toHaveLength(0);
    expect(stats).toMatchObject({ claimed: 0, stopped: 'empty', duration_ms: 0 });
  });

  it('stops claiming at the budget, finishes what is in flight, and leaves the rest queued', async () => {
    const first = await queue('first');
    const second = await queue('second');
    const { clock, calls, drain, run } = start({ budgetMs: 1000, concurrency: 1 });
    await until(() => expect(calls).toHaveLength(1));
    await clock.advance(999);
    // One slot, held by the first request: the second waits in the queue.
    expect(calls).toHaveLength(1);
    await clock.advance(1);
    expect(drain.mode(clock.now())).toBe('working');
    calls[0]!.respond();
    const stats = await run.done;
    expect(calls).toHaveLength(1);
    expect(await recordedIds()).toEqual([first]);
    expect(stats).toMatchObject({ claimed: 1, recorded: 1, stopped: 'budget', duration_ms: 1000 });
    const [left] = await sql<{ id: string; lease_owner: string | null }[]>`
      select id::text as id, lease_owner from net.http_request_queue`;
    expect(left).toEqual({ id: second, lease_owner: null });
  });
});
