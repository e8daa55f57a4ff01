// The drain core inside workerd, against real PostgreSQL and the real loopback target.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import postgres from 'postgres';
import { Drain, drain, type Runner } from '../../src/core/drain.ts';
import { execute } from '../../src/core/execute.ts';
import { Deadlines } from '../../src/core/deadlines.ts';
import { heldBytes } from '../../src/core/memory.ts';
import { connectDatabase } from '../../src/worker/db.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { counts, heldMax, hits, options, target, uniquePrefix, until } from './helpers.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await freshDatabase();
});

interface ResponseRow {
  id: string;
  status_code: number | null;
  content_type: string | null;
  headers: Record<string, string> | null;
  content: string | null;
  timed_out: boolean | null;
  error_msg: string | null;
}

async function response(id: string): Promise<ResponseRow | undefined> {
  const rows = await db.sql<ResponseRow[]>`
    select id::text as id, status_code, content_type, headers, content, timed_out, error_msg
    from net._http_response where id = ${id}::bigint`;
  return rows[0];
}

/** Holds an exclusive lock on the response table (every record waits) until release(). */
async function lockResponses(): Promise<{ release: () => void; holding: Promise<unknown> }> {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const lockTaken = new Promise<void>((r) => (locked = r));
  const holding = db.sql.begin(async (tx) => {
    await tx`lock table net._http_response in exclusive mode`;
    locked();
    await released;
  });
  await lockTaken;
  return { release, holding };
}

/** A runner that sends rows itself (as executors would), at most `places` at once; the ids it took go to `taken`. */
function sendingRunner(places: number, taken: string[] = []): Runner {
  let out = 0;
  return {
    room: () => places - out,
    localLeft: () => 1000,
    reservedSlots: 0,
    tryRun: (request) => {
      if (out >= places) return null;
      out++;
      taken.push(request.id);
      return execute(request, fetch, { maxResponseBytes: 1000, userAgent: 'x', deadlines: new Deadlines() }).finally(() => out--);
    },
  };
}

async function queue(query: postgres.PendingQuery<{ id: string }[]>): Promise<string> {
  const [row] = await query;
  return row!.id;
}

describe('drain end to end', () => {
  it('GET, POST and DELETE produce exact response rows and empty the queue', async () => {
    const get = await queue(db.sql`select net.http_get(${`${target}/echo/get`}, '{"q":"a b"}', '{"X-Test":"yes"}')::text as id`);
    const post = await queue(db.sql`select net.http_post(${`${target}/echo/post`}, '{"hello":"wörld"}')::text as id`);
    const del = await queue(
      db.sql`select net.http_delete(${`${target}/echo/del`}, body => '{"gone":true}'::jsonb)::text as id`,
    );
    const missing = await queue(db.sql`select net.http_get(${`${target}/status/404`})::text as id`);

    const stats = await drain(db.sql, fetch, options());
    expect(stats).toMatchObject({ claimed: 4, recorded: 4, errors: 0, stopped: 'empty' });
    expect(await counts(db.sql)).toEqual({ queued: 0, responses: 4 });

    const g = (await response(get))!;
    expect(g).toMatchObject({ status_code: 200, content_type: 'application/json', timed_out: false, error_msg: null });
    expect(g.headers?.['Content-Type']).toBe('application/json');
    const gEcho = JSON.parse(g.content!) as { method: string; query: string; headers: Record<string, string> };
    expect(gEcho).toMatchObject({ method: 'GET', query: 'q=a%20b' });
    expect(gEcho.headers['x-test']).toBe('yes');
    expect(gEcho.headers['user-agent']).toBe('pg-net-edge-test/1');

    const p = (await response(post))!;
    expect(p).toMatchObject({ status_code: 200, timed_out: false, error_msg: null });
    const pEcho = JSON.parse(p.content!) as { method: string; body_text: string; headers: Record<string, string> };
    expect(pEcho.method).toBe('POST');
    expect(JSON.parse(pEcho.body_text)).toEqual({ hello: 'wörld' });
    expect(pEcho.headers['content-type']).toBe('application/json');

    const d = (await response(del))!;
    const dEcho = JSON.parse(d.content!) as { method: string; body_text: string };
    expect(dEcho.method).toBe('DELETE');
    expect(JSON.parse(dEcho.body_text)).toEqual({ gone: true });

    expect(await response(missing)).toMatchObject({
      status_code: 404,
      content: 'status 404',
      timed_out: false,
      error_msg: null,
    });
  });

  it('timeouts and refused connections become error rows without breaking the batch', async () => {
    const slow = await queue(db.sql`select net.http_get(${`${target}/delay/5000`}, timeout_milliseconds => 200)::text as id`);
    const refused = await queue(db.sql`select net.http_get(${`http://127.0.0.1:${inject('closedPort')}/x`})::text as id`);
    const fine = await queue(db.sql`select net.http_get(${`${target}/echo/fine`})::text as id`);
    const stats = await drain(db.sql, fetch, options());
    expect(stats).toMatchObject({ claimed: 3, recorded: 3, errors: 2, stopped: 'empty' });
    const s = (await response(slow))!;
    expect(s).toMatchObject({ status_code: null, timed_out: true });
    expect(s.error_msg).toMatch(/^Timeout of 200 ms reached/);
    const r = (await response(refused))!;
    expect(r).toMatchObject({ status_code: null, timed_out: false });
    expect(r.error_msg).toBeTruthy();
    expect((await response(fine))?.status_code).toBe(200);
    expect((await counts(db.sql)).queued).toBe(0);
  });

  it('each request times out at its own timeout (one shared timer serves them all)', async () => {
    const timeouts = [150, 400, 800];
    const slow: string[] = [];
    for (const t of timeouts) slow.push(await queue(db.sql`select net.http_get(${`${target}/delay/6000`}, timeout_milliseconds => ${t}::int)::text as id`));
    const fast: string[] = [];
    for (let i = 0; i < 3; i++) fast.push(await queue(db.sql`select net.http_get(${`${target}/echo/deadline${i}`})::text as id`));
    const stats = await drain(db.sql, fetch, options());
    expect(stats).toMatchObject({ claimed: 6, recorded: 6, errors: 3, stopped: 'empty' });
    for (const [i, id] of slow.entries()) {
      const row = (await response(id))!;
      expect(row).toMatchObject({ status_code: null, timed_out: true });
      expect(row.error_msg).toBe(`Timeout of ${timeouts[i]} ms reached`);
    }
    for (const id of fast) expect((await response(id))?.status_code).toBe(200);
    // Ended by the longest timeout (800 ms), not by the 6 s the target would take.
    expect(stats.duration_ms).toBeLessThan(4000);
  });

  it('a lingering drain stays after the queue empties, and a poke then makes it send what was queued since', async () => {
    const first = await queue(db.sql`select net.http_get(${`${target}/echo/linger-1`})::text as id`);
    const lingering = new Drain(db.sql, fetch, options(), { lingerMs: 1500 });
    let finished = false;
    const running = lingering.run().then((stats) => {
      finished = true;
      return stats;
    });
    await until('the first response', async () => (await response(first)) !== undefined);
    await new Promise((r) => setTimeout(r, 200));
    expect(finished).toBe(false); // still lingering, though the queue is empty
    const second = await queue(db.sql`select net.http_get(${`${target}/echo/linger-2`})::text as id`);
    expect(lingering.poke()).toBe(true);
    await until('the second response', async () => (await response(second)) !== undefined);
    expect(finished).toBe(false);
    const stats = await running;
    expect(stats).toMatchObject({ claimed: 2, recorded: 2, errors: 0, stopped: 'empty' });
    expect((await response(second))?.status_code).toBe(200);
  });

  it('past half its claim window a drain refuses pokes, so a new drain takes long-timeout requests', async () => {
    await queue(db.sql`select net.http_get(${`${target}/echo/half-window`})::text as id`);
    // Claim window: hard limit 4 s − 1 s kept for recording = 3 s; pokes accepted for 1.5 s.
    const old = new Drain(db.sql, fetch, options({ hardLimitMs: 4000, budgetMs: 3500 }), { lingerMs: 3000, recordSlackMs: 1000 });
    const running = old.run();
    await new Promise((r) => setTimeout(r, 300));
    expect(old.poke()).toBe(true);
    await new Promise((r) => setTimeout(r, 1500));
    expect(old.poke()).toBe(false);
    await running;
  });

  it('without a poke a lingering drain stops about lingerMs after its last work', async () => {
    await queue(db.sql`select net.http_get(${`${target}/echo/linger-alone`})::text as id`);
    const stats = await new Drain(db.sql, fetch, options(), { lingerMs: 300 }).run();
    expect(stats).toMatchObject({ claimed: 1, recorded: 1, stopped: 'empty' });
    expect(stats.duration_ms).toBeGreaterThanOrEqual(300);
    expect(stats.duration_ms).toBeLessThan(5000);
  });

  it('a slow request does not delay recording the fast ones', async () => {
    const slow = await queue(db.sql`select net.http_get(${`${target}/delay/3000`}, timeout_milliseconds => 10000)::text as id`);
    const fast: string[] = [];
    for (let i = 0; i < 5; i++) fast.push(await queue(db.sql`select net.http_get(${`${target}/echo/fast${i}`})::text as id`));
    const running = new Drain(db.sql, fetch, options()).run();
    // The fast rows must appear while the slow request is still in flight.
    await until('fast responses', async () => {
      const [row] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from net._http_response where id = any(string_to_array(${fast.join(',')}, ',')::bigint[])`;
      return row!.n === fast.length;
    }, 2500);
    expect(await response(slow)).toBeUndefined();
    const [leased] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from net.http_request_queue where id = ${slow}::bigint and lease_owner is not null`;
    expect(leased!.n).toBe(1);
    const stats = await running;
    expect(stats).toMatchObject({ claimed: 6, recorded: 6, stopped: 'empty' });
    expect((await response(slow))?.content).toBe('delayed 3000');
  });

  it('while recording lags, finished responses held in memory stay under the byte limit: no request starts', async () => {
    // 40 bodies of ~100 KB; the response table is locked, so every record waits. Without the
    // limit all 40 would be fetched and held; with 1 MB, about 10 (plus the 4 in flight).
    const size = 100_003;
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await queue(db.sql`select net.http_get(${`${target}/bytes/${size}`})::text as id`));
    const before = (await hits(`/bytes/${size}`))[`/bytes/${size}`] ?? 0;
    const { release, holding } = await lockResponses();
    const sql = connectDatabase(db.url);
    const running = new Drain(sql, fetch, options({ concurrency: 4 }), { bufferLimitBytes: 1_000_000 }).run();
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const fetched = ((await hits(`/bytes/${size}`))[`/bytes/${size}`] ?? 0) - before;
      expect(fetched).toBeGreaterThanOrEqual(10);
      expect(fetched).toBeLessThanOrEqual(16);
    } finally {
      release();
      await holding;
    }
    const stats = await running;
    expect(stats).toMatchObject({ claimed: 40, recorded: 40, errors: 0 });
    const [row] = await db.sql<{ n: number; ok: number }[]>`
      select count(*)::int as n, count(*) filter (where status_code = 200 and length(content) = ${size})::int as ok
      from net._http_response where id = any(string_to_array(${ids.join(',')}, ',')::bigint[])`;
    expect(row).toEqual({ n: 40, ok: 40 });
    expect(((await hits(`/bytes/${size}`))[`/bytes/${size}`] ?? 0) - before).toBe(40);
  });

  it('drains in one isolate share its memory limit: together they hold no more response bytes than it', async () => {
    // 40 bodies of ~300 KB and two drains (as a cron's drain and a helper in one isolate),
    // records held back by a lock. Each drain's own limits (16 slots, 16 MB waiting to be
    // recorded) would let them fetch all 40 (~12 MB); the isolate's limit of 1 MB stops both
    // after a few, whichever holds the bytes.
    const size = 300_007;
    const path = `/bytes/${size}`;
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await queue(db.sql`select net.http_get(${`${target}${path}`})::text as id`));
    const before = (await hits(path))[path] ?? 0;
    const { release, holding } = await lockResponses();
    const limit = 1_000_000;
    heldBytes.peak = heldBytes.total;
    const start = () =>
      new Drain(connectDatabase(db.url), fetch, options({ concurrency: 16, batchSize: 20, fetchSlots: 2 }), {
        memoryLimitBytes: limit,
      }).run();
    const running = [start(), start()];
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const fetched = ((await hits(path))[path] ?? 0) - before;
      // Starts stop once 1 MB is held (4 bodies); requests already waiting for headers (2 slots
      // per drain) still arrive: at most 4 + 4 = 8.
      expect(fetched).toBeGreaterThanOrEqual(4);
      expect(fetched).toBeLessThanOrEqual(8);
      expect(heldBytes.peak).toBeLessThan(limit + 4 * size + 1);
    } finally {
      release();
      await holding;
    }
    const stats = await Promise.all(running);
    expect(stats[0]!.recorded + stats[1]!.recorded).toBe(40);
    // Ended drains count nothing: the next drain in this isolate isn't held back.
    expect(heldBytes.total).toBe(0);
    const [row] = await db.sql<{ n: number; ok: number }[]>`
      select count(*)::int as n, count(*) filter (where status_code = 200 and length(content) = ${size})::int as ok
      from net._http_response where id = any(string_to_array(${ids.join(',')}, ',')::bigint[])`;
    expect(row).toEqual({ n: 40, ok: 40 });
    expect(((await hits(path))[path] ?? 0) - before).toBe(40);
  });

  it('rows leased by a dead drain are drained after the lease expires, with exactly one response each', async () => {
    const prefix = uniquePrefix('lease');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push(await queue(db.sql`select net.http_get(${`${target}${prefix}/${i}`}, timeout_milliseconds => 300)::text as id`));
    }
    // A "dead" owner claims them (lease = 300 ms timeout + 1 ms margin) and never records.
    const dead = await db.sql`select id from net._claim('dead-owner', 10, 1)`;
    expect(dead.length).toBe(3);
    // While the lease is live nobody else may take them.
    const early = await drain(db.sql, fetch, options());
    expect(early.claimed).toBe(0);
    await new Promise((r) => setTimeout(r, 500));
    const late = await drain(db.sql, fetch, options());
    expect(late).toMatchObject({ claimed: 3, recorded: 3 });
    // The dead owner waking up and recording must not add second rows.
    const [zombie] = await db.sql<{ n: number }[]>`
      select net._record('dead-owner', ${JSON.stringify(ids.map((id) => ({ id, status_code: 500 })))}::text::jsonb) as n`;
    expect(zombie!.n).toBe(0);
    const [row] = await db.sql<{ n: number; ok: number }[]>`
      select count(*)::int as n, count(*) filter (where status_code = 200)::int as ok
      from net._http_response where id = any(string_to_array(${ids.join(',')}, ',')::bigint[])`;
    expect(row).toEqual({ n: 3, ok: 3 });
    const h = await hits(prefix);
    expect(Object.values(h)).toEqual([1, 1, 1]);
  });

  it('a row below its claim hint, freed by an expired lease mid-drain, is still sent before the drain stops', async () => {
    const prefix = uniquePrefix('below-hint');
    // The lowest id, leased by a dead owner for ~300 ms (its timeout plus a 1 ms margin).
    const ghost = await queue(db.sql`select net.http_get(${`${target}${prefix}/ghost`}, timeout_milliseconds => 300)::text as id`);
    const [taken] = await db.sql`select id from net._claim('ghost-owner', 1, 1)`;
    expect(taken).toBeDefined();
    // Later rows keep the drain busy well past that lease: after its first claim the drain
    // claims after the highest id it has seen, where the freed row is not.
    for (let i = 0; i < 12; i++) await queue(db.sql`select net.http_get(${`${target}/delay/150?${prefix}-${i}`})::text as id`);
    const stats = await drain(db.sql, fetch, options({ concurrency: 2 }));
    expect(stats).toMatchObject({ claimed: 13, recorded: 13, stopped: 'empty' });
    expect((await response(ghost))?.status_code).toBe(200);
    expect(Object.values(await hits(prefix))).toEqual([1]);
  });

  it('hand-inserted unprocessable rows get error rows and do not stall the queue', async () => {
    // Since schema v3 a trigger refuses such rows at INSERT; rows from before it (or written with
    // triggers off, as here) must still not stall the queue.
    const [badUrl, badHeaders, badMethod] = await db.sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      return tx<{ id: string }[]>`
        insert into net.http_request_queue (method, url, headers, timeout_milliseconds)
        values ('GET', 'not a url', '{}', 1000),
               ('GET', ${`${target}/echo/x`}, '[1, 2]', 1000),
               ('NOT A METHOD', ${`${target}/echo/y`}, '{}', 1000)
        returning id::text as id`;
    });
    const good = await queue(db.sql`select net.http_get(${`${target}/echo/after-bad`})::text as id`);
    const stats = await drain(db.sql, fetch, options());
    expect(stats).toMatchObject({ claimed: 4, recorded: 4, errors: 3, stopped: 'empty' });
    for (const id of [badUrl!.id, badHeaders!.id, badMethod!.id]) {
      const row = (await response(id))!;
      expect(row.status_code).toBeNull();
      expect(row.error_msg).toBeTruthy();
    }
    expect((await response(good))?.status_code).toBe(200);
    expect((await counts(db.sql)).queued).toBe(0);
  });

  it('stops claiming at its budget; unclaimed rows stay free for the next drain', async () => {
    const prefix = uniquePrefix('budget');
    await db.sql`select net.http_get(${`${target}/delay/400?`} || g, timeout_milliseconds => 5000) from generate_series(1, 6) g`;
    const stats = await drain(db.sql, fetch, options({ concurrency: 2, budgetMs: 200 }));
    // The first two were claimed at once and finished after the budget: nothing more claimed.
    expect(stats).toMatchObject({ claimed: 2, recorded: 2, stopped: 'budget' });
    const [row] = await db.sql<{ free: number }[]>`
      select count(*) filter (where lease_owner is null)::int as free from net.http_request_queue`;
    expect(row!.free).toBe(4);
    const rest = await drain(db.sql, fetch, options());
    expect(rest).toMatchObject({ claimed: 4, recorded: 4, stopped: 'empty' });
    expect(await hits(prefix)).toEqual({});
  });

  it('sends at most maxRequests (a Worker invocation\'s subrequests), leaves the rest free, and refuses pokes then', async () => {
    const prefix = uniquePrefix('subrequests');
    for (let i = 0; i < 12; i++) await queue(db.sql`select net.http_get(${`${target}${prefix}/${i}`})::text as id`);
    const capped = new Drain(db.sql, fetch, options({ maxRequests: 5 }), { lingerMs: 2000 });
    const stats = await capped.run();
    expect(stats).toMatchObject({ claimed: 5, recorded: 5, errors: 0, stopped: 'budget' });
    // It stopped at once (no lingering) and can't take a nudge: a new drain must.
    expect(stats.duration_ms).toBeLessThan(1500);
    expect(capped.poke()).toBe(false);
    const [free] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from net.http_request_queue where url like ${`${target}${prefix}/%`} and lease_owner is null`;
    expect(free!.n).toBe(7);
    expect(Object.keys(await hits(prefix)).length).toBe(5);
    const rest = await drain(db.sql, fetch, options());
    expect(rest).toMatchObject({ claimed: 7, recorded: 7, errors: 0 });
    const h = await hits(prefix);
    expect(Object.keys(h).length).toBe(12);
    expect(Object.values(h).every((n) => n === 1)).toBe(true);
  });

  it('never has more than fetchSlots requests waiting for headers; a waiting row\'s timeout has not started', async () => {
    const label = `slots${Date.now().toString(36)}`;
    const held = async () => (await (await fetch(`${target}/__held?label=${label}`)).json()) as { now: number; max: number };
    // 8 requests held 300 ms each with 2 slots: 4 rounds, ~1.2 s. Each times out after 700 ms:
    // started all at once behind the platform's queue they would time out; here each starts its
    // clock when it gets a slot.
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      ids.push(await queue(db.sql`select net.http_get(${`${target}/held/300/${label}/${i}`}, timeout_milliseconds => 700)::text as id`));
    }
    const stats = await drain(db.sql, fetch, options({ concurrency: 16, fetchSlots: 2 }));
    expect(stats).toMatchObject({ claimed: 8, recorded: 8, errors: 0, stopped: 'empty' });
    expect(stats.duration_ms).toBeGreaterThanOrEqual(1150);
    expect(await held()).toEqual({ now: 0, max: 2 });
    for (const id of ids) expect(await response(id)).toMatchObject({ status_code: 200, content: 'held 300', timed_out: false });

    // The same without fetchSlots: all 8 at once (what the cap is for; workerd doesn't cap locally).
    const free = `${label}-free`;
    for (let i = 0; i < 8; i++) await queue(db.sql`select net.http_get(${`${target}/held/300/${free}/${i}`})::text as id`);
    await drain(db.sql, fetch, options({ concurrency: 16 }));
    expect(await heldMax(free)).toBe(8);
  });

  it('with a runner: a target answering at once gets every row from the drain\'s own slots', async () => {
    const prefix = uniquePrefix('nospill');
    const spilled: string[] = [];
    const runner: Runner = {
      room: () => 100,
      localLeft: () => 1000,
      reservedSlots: 1,
      tryRun: (request) => {
        spilled.push(request.id);
        return Promise.resolve(null);
      },
    };
    await db.sql`select net.http_get(${`${target}${prefix}/`} || g) from generate_series(1, 40) g`;
    const stats = await drain(db.sql, fetch, options({ concurrency: 16, fetchSlots: 4 }), { runner });
    expect(stats).toMatchObject({ claimed: 40, recorded: 40, errors: 0 });
    expect(spilled).toEqual([]);
    expect(Object.keys(await hits(prefix)).length).toBe(40);
  });

  it('with a runner: slow targets spill the rows its own slots would not start soon; every row sent once', async () => {
    const label = `spill${Date.now().toString(36)}`;
    // A runner with room for 12 that sends rows itself, as executors would.
    const spilled: string[] = [];
    const runner = sendingRunner(12, spilled);
    // 30 requests answered after 200 ms, 2 slots of its own: those start ~2 rows in AHEAD_MS.
    for (let i = 0; i < 30; i++) await queue(db.sql`select net.http_get(${`${target}/held/200/${label}/${i}`})::text as id`);
    const stats = await drain(db.sql, fetch, options({ concurrency: 16, fetchSlots: 2 }), { runner });
    expect(stats).toMatchObject({ claimed: 30, recorded: 30, errors: 0, stopped: 'empty' });
    expect(spilled.length).toBeGreaterThan(0);
    expect(spilled.length).toBeLessThan(30);
    // Own slots never held more than 2 at once; the runner its 12 beside them.
    expect(await heldMax(label)).toBeLessThanOrEqual(14);
    const [row] = await db.sql<{ n: number; ok: number }[]>`
      select count(*)::int as n, count(*) filter (where content = 'held 200')::int as ok from net._http_response
      where id = any(${`{${spilled.join(',')}}`}::bigint[])`;
    expect(row).toEqual({ n: spilled.length, ok: spilled.length });
  });

  it('running flat out, the drain records in fewer, bigger statements than flushMs alone would make', async () => {
    const prefix = uniquePrefix('bunched');
    const ids = (await db.sql<{ id: string }[]>`
      select net.http_get(${`${target}${prefix}/`} || g::text)::text as id from generate_series(1, 500) as g`).map((r) => r.id);
    // One fetch slot and fast targets: rows always wait for the slot. With flushMs 5 alone that
    // is a record statement every ~5 ms (~60 here); flat out they wait up to 150 ms or 300.
    const stats = await drain(db.sql, fetch, options({ concurrency: 8, fetchSlots: 1, flushMs: 5 }));
    expect(stats).toMatchObject({ claimed: 500, recorded: 500, errors: 0 });
    // Each record statement is its own transaction: its rows share `created` (now()).
    const [row] = await db.sql<{ statements: number; rows: number }[]>`
      select count(distinct created)::int as statements, count(*)::int as rows
      from net._http_response where id = any(string_to_array(${ids.join(',')}, ',')::bigint[])`;
    expect(row!.rows).toBe(500);
    expect(row!.statements).toBeLessThan(20);
    expect(Object.values(await hits(prefix)).every((n) => n === 1)).toBe(true);
  });

  it('a drain whose fetch slots are all held by slow requests gives its claimed-ahead rows back (attempts restored) for other drains', async () => {
    const prefix = uniquePrefix('release');
    for (let i = 0; i < 8; i++) await queue(db.sql`select net.http_get(${`${target}${prefix}/a${i}`})::text as id`);
    const slow = await queue(db.sql`select net.http_get(${`${target}/delay/2500`}, timeout_milliseconds => 10000)::text as id`);
    for (let i = 0; i < 20; i++) await queue(db.sql`select net.http_get(${`${target}${prefix}/b${i}`})::text as id`);
    const stuck = new Drain(db.sql, fetch, options({ concurrency: 4, fetchSlots: 1, batchSize: 10 }));
    const running = stuck.run();
    // It claims ahead: some rows behind the slow one are leased to it, waiting for the only slot…
    await until('rows claimed ahead', async () => {
      const [row] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from net.http_request_queue
        where url like ${`${target}${prefix}/b%`} and lease_owner = ${stuck.owner}`;
      return row!.n > 0;
    }, 2000);
    // …and once the slow request has held it past SLOW_AFTER_MS, nothing but it is leased.
    const rest = await until('rows given back', async () => {
      const rows = await db.sql<{ id: string; lease_owner: string | null; attempts: number }[]>`
        select id::text as id, lease_owner, attempts from net.http_request_queue where url like ${`${target}${prefix}/b%`}`;
      return rows.length > 0 && rows.every((r) => r.lease_owner === null) ? rows : null;
    }, 2400);
    expect(rest.every((r) => r.attempts === 0)).toBe(true);
    const [slowRow] = await db.sql<{ lease_owner: string | null }[]>`select lease_owner from net.http_request_queue where id = ${slow}::bigint`;
    expect(slowRow!.lease_owner).toBe(stuck.owner);
    // Another drain sends them while the slow one is still in flight.
    const other = await drain(db.sql, fetch, options());
    expect(other).toMatchObject({ claimed: rest.length, recorded: rest.length, errors: 0 });
    expect(await response(slow)).toBeUndefined();
    const first = await running;
    expect(first.claimed + other.claimed).toBe(29);
    // Some of the rest were given back, the others never claimed.
    expect(first.given_back).toBeGreaterThan(0);
    expect(first.given_back).toBeLessThanOrEqual(rest.length);
    expect(first.recorded).toBe(first.claimed);
    const h = await hits(prefix);
    expect(Object.keys(h).length).toBe(28);
    expect(Object.values(h).every((n) => n === 1)).toBe(true);
    expect((await response(slow))?.content).toBe('delayed 2500');
  });

  it('with a runner, a drain whose own slots are stuck keeps its claimed-ahead rows for the runner: each row claimed once', async () => {
    const label = `keep${Date.now().toString(36)}`;
    // A runner with 2 places, each row held 300 ms: its places are full most of the time.
    const runner = sendingRunner(2);
    // Fast rows first (the drain learns its slot's pace and claims ahead), then one slow row takes
    // the drain's only slot while rows wait claimed behind it.
    for (let i = 0; i < 8; i++) await queue(db.sql`select net.http_get(${`${target}/${label}/a${i}`})::text as id`);
    const slow = await queue(db.sql`select net.http_get(${`${target}/delay/1500`}, timeout_milliseconds => 10000)::text as id`);
    for (let i = 0; i < 12; i++) await queue(db.sql`select net.http_get(${`${target}/held/300/${label}/${i}`})::text as id`);
    const stats = await drain(db.sql, fetch, options({ concurrency: 4, fetchSlots: 1, batchSize: 10 }), { runner });
    // None given back (net._release) while the runner's places were full: this drain would only
    // claim them again after its empty-queue pause.
    expect(stats).toMatchObject({ claimed: 21, recorded: 21, errors: 0, stopped: 'empty' });
    expect(stats.given_back).toBeUndefined();
    expect((await response(slow))?.content).toBe('delayed 1500');
    expect(await heldMax(label)).toBeLessThanOrEqual(3);
  });

  it('while a slow request keeps a drain busy, it looks for new rows now and then without a poke', async () => {
    const prefix = uniquePrefix('suspected');
    const slow = await queue(db.sql`select net.http_get(${`${target}/delay/2500`}, timeout_milliseconds => 10000)::text as id`);
    const running = new Drain(db.sql, fetch, options()).run();
    await until('the slow request in flight', async () => (await db.sql`
      select 1 from net.http_request_queue where id = ${slow}::bigint and lease_owner is not null`).length === 1);
    const queuedAt = Date.now();
    for (let i = 0; i < 3; i++) await queue(db.sql`select net.http_get(${`${target}${prefix}/${i}`})::text as id`);
    // The drain's last claim came back short (the queue looked empty); these arrive later, with
    // no poke: it still sends them within about a second, not after the slow request.
    await until('new rows sent', async () => Object.keys(await hits(prefix)).length === 3, 2000);
    expect(Date.now() - queuedAt).toBeLessThan(2000);
    expect(await response(slow)).toBeUndefined();
    expect(await running).toMatchObject({ claimed: 4, recorded: 4, errors: 0 });
  });

  it('a give-back that fails leaves the rows leased, never lost: a later drain sends each once after the lease', async () => {
    const prefix = uniquePrefix('releasefails');
    for (let i = 0; i < 8; i++) await queue(db.sql`select net.http_get(${`${target}${prefix}/a${i}`}, timeout_milliseconds => 1000)::text as id`);
    await queue(db.sql`select net.http_get(${`${target}/delay/1500`}, timeout_milliseconds => 3000)::text as id`);
    for (let i = 0; i < 20; i++) await queue(db.sql`select net.http_get(${`${target}${prefix}/b${i}`}, timeout_milliseconds => 1000)::text as id`);
    await db.sql`alter function net._release(text, text) rename to _release_gone`;
    let first;
    try {
      first = await drain(db.sql, fetch, options({ concurrency: 4, fetchSlots: 1, batchSize: 10, leaseMarginMs: 2000 }));
    } finally {
      await db.sql`alter function net._release_gone(text, text) rename to _release`;
    }
    expect(first.last_error).toMatch(/release: .*_release/);
    // What it couldn't give back stays leased to it until timeout + margin (3 s), then is sent.
    const [leased] = await db.sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue where lease_owner is not null`;
    expect(leased!.n).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 3200));
    const rest = await drain(db.sql, fetch, options());
    expect(first.recorded + rest.recorded).toBe(29);
    expect((await counts(db.sql)).queued).toBe(0);
    const h = await hits(prefix);
    expect(Object.keys(h).length).toBe(28);
    expect(Object.values(h).every((n) => n === 1)).toBe(true);
  });

  it('never claims a request whose timeout cannot finish before the hard limit', async () => {
    const long = await queue(db.sql`select net.http_get(${`${target}/echo/long`}, timeout_milliseconds => 60000)::text as id`);
    const short = await queue(db.sql`select net.http_get(${`${target}/echo/short`}, timeout_milliseconds => 1000)::text as id`);
    const stats = await drain(db.sql, fetch, options({ hardLimitMs: 20_000 }));
    expect(stats).toMatchObject({ claimed: 1, recorded: 1 });
    expect((await response(short))?.status_code).toBe(200);
    expect(await response(long)).toBeUndefined();
    const [row] = await db.sql<{ attempts: number; lease_owner: string | null }[]>`
      select attempts, lease_owner from net.http_request_queue where id = ${long}::bigint`;
    expect(row).toEqual({ attempts: 0, lease_owner: null });
    expect(await drain(db.sql, fetch, options({ hardLimitMs: 120_000 }))).toMatchObject({ claimed: 1, recorded: 1 });
  });

  it('an unreachable database stops the drain with stopped = "database" and nothing recorded', async () => {
    const dead = connectDatabase(`postgres://postgres@127.0.0.1:${inject('closedPort')}/nope`);
    const stats = await drain(dead, fetch, options({ budgetMs: 5000 }), { retries: 2, retryBaseMs: 50 });
    expect(stats.stopped).toBe('database');
    expect(stats.claimed).toBe(0);
    expect(stats.last_error).toMatch(/claim/);
  });

  it('connections killed mid-drain: every request still ends with exactly one response row', async () => {
    const prefix = uniquePrefix('kill');
    const queued = await db.sql<{ id: string }[]>`
      select net.http_get(${`${target}${prefix}/`} || g, timeout_milliseconds => 5000)::text as id
      from generate_series(1, 60) g`;
    const ids = queued.map((r) => r.id).join(',');
    // A name of its own: only the drain's sessions are killed (the test's client must survive).
    const own = connectDatabase(`${db.url}?application_name=pne-kill-test`);
    const running = new Drain(own, fetch, options({ concurrency: 8, batchSize: 8 })).run();
    // Kill the drain's sessions a few times while it works; postgres.js
    // reconnects and the drain retries (a record that committed before the kill is not repeated).
    let killed = 0;
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 30));
      const rows = await db.sql<{ ok: boolean }[]>`
        select pg_terminate_backend(pid) as ok from pg_stat_activity
        where datname = ${db.name} and application_name = 'pne-kill-test'`;
      killed += rows.filter((r) => r.ok).length;
    }
    const stats = await running;
    expect(killed).toBeGreaterThan(0);
    expect(stats.claimed).toBeGreaterThan(0);
    // Whatever this drain could not record is still queued (leased); a later drain finishes it.
    await db.sql`update net.http_request_queue set lease_expires = now() where lease_owner is not null`;
    await drain(db.sql, fetch, options());
    expect((await counts(db.sql)).queued).toBe(0);
    const [row] = await db.sql<{ n: number; ok: number }[]>`
      select count(*)::int as n, count(*) filter (where status_code = 200)::int as ok
      from net._http_response where id = any(string_to_array(${ids}, ',')::bigint[])`;
    expect(row).toEqual({ n: 60, ok: 60 });
    expect(Object.keys(await hits(prefix)).length).toBe(60);
  });
});
