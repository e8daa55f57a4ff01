// The Worker module itself inside workerd: /nudge, /health and both crons, against real
// PostgreSQL and the real loopback target.
import { createExecutionContext, createScheduledController, env, waitOnExecutionContext } from 'cloudflare:test';
import { afterEach, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import worker, { type Env } from '../../src/worker/index.ts';
import { withDatabase } from '../support/urls.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { counts, heldMax, hits, target, uniquePrefix } from './helpers.ts';

const SECRET = 'nudge-secret-value-123';
let db: TestDatabase;
let workerEnv: Env;

beforeAll(async () => {
  db = await freshDatabase();
  workerEnv = { ...env, DATABASE_URL: db.url, NUDGE_SECRET: SECRET };
});

afterEach(() => {
  vi.restoreAllMocks();
});

function nudge(authorization: string | null, e: Env = workerEnv) {
  const headers: Record<string, string> = {};
  if (authorization !== null) headers.Authorization = authorization;
  const ctx = createExecutionContext();
  const response = worker.fetch(new Request('http://worker/nudge', { method: 'POST', headers }), e, ctx);
  return { ctx, response: Promise.resolve(response) };
}

async function health(e: Env, authorization: string | null = null) {
  const ctx = createExecutionContext();
  const headers: Record<string, string> = authorization === null ? {} : { Authorization: authorization };
  const response = await worker.fetch(new Request('http://worker/health', { headers }), e, ctx);
  await waitOnExecutionContext(ctx);
  return { status: response.status, text: await response.text() };
}

/** Captures the JSON lines the Worker logs. */
function captureLogs(): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  vi.spyOn(console, 'log').mockImplementation((line: unknown) => {
    if (typeof line === 'string' && line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  return lines;
}

/** One nudge with these variables, waited out: the queue must be empty after; returns the drains' log lines. */
async function drainWith(vars: Partial<Env>): Promise<Array<Record<string, unknown>>> {
  const logs = captureLogs();
  const { ctx, response } = nudge(`Bearer ${SECRET}`, { ...workerEnv, ...vars });
  expect((await response).status).toBe(202);
  await waitOnExecutionContext(ctx);
  expect((await counts(db.sql)).queued).toBe(0);
  return logs.filter((l) => l.event === 'drain');
}

describe('POST /nudge', () => {
  it('wrong or missing secret: 401 and nothing is drained', async () => {
    const prefix = uniquePrefix('unauth');
    await db.sql`select net.http_get(${`${target}${prefix}/1`})`;
    const logs = captureLogs();
    for (const auth of [null, 'Bearer wrong', `Bearer ${SECRET}x`, SECRET, `Basic ${SECRET}`, 'Bearer ']) {
      const { ctx, response } = nudge(auth);
      const r = await response;
      expect(r.status).toBe(401);
      expect(await r.text()).not.toContain(SECRET);
      await waitOnExecutionContext(ctx);
    }
    expect(logs.filter((l) => l.event === 'drain')).toEqual([]);
    expect((await counts(db.sql)).queued).toBe(1);
    expect(await hits(prefix)).toEqual({});
    await db.sql`delete from net.http_request_queue`;
  });

  it('no NUDGE_SECRET configured: 503 telling how to set it', async () => {
    const { ctx, response } = nudge(`Bearer ${SECRET}`, { ...workerEnv, NUDGE_SECRET: undefined });
    const r = await response;
    expect(r.status).toBe(503);
    expect(await r.text()).toMatch(/NUDGE_SECRET/);
    await waitOnExecutionContext(ctx);
  });

  it('right secret: 202 at once, then the queue is drained in waitUntil', async () => {
    const prefix = uniquePrefix('nudge');
    await db.sql`select net.http_get(${`${target}${prefix}/`} || g) from generate_series(1, 20) g`;
    const logs = captureLogs();
    const { ctx, response } = nudge(`Bearer ${SECRET}`);
    const r = await response;
    expect(r.status).toBe(202);
    expect(await r.json()).toEqual({ accepted: true, coalesced: false });
    await waitOnExecutionContext(ctx);
    expect(await counts(db.sql)).toMatchObject({ queued: 0 });
    const h = await hits(prefix);
    expect(Object.keys(h).length).toBe(20);
    expect(Object.values(h).every((n) => n === 1)).toBe(true);
    // One drain (the coordinator) claimed, sent and recorded every row: a target answering at
    // once is sent on its own fetch slots, no executor needed (spill.ts).
    const drains = logs.filter((l) => l.event === 'drain');
    expect(drains).toHaveLength(1);
    expect(drains[0]).toMatchObject({ trigger: 'nudge', stopped: 'empty', claimed: 20, recorded: 20, executors: 0 });
  });

  it('slow requests at one executor never hold back the rest: other executors send them meanwhile', async () => {
    const prefix = uniquePrefix('slowfirst');
    await db.sql`delete from net._http_response`;
    const slow = await db.sql<{ id: string }[]>`
      select net.http_get(${`${target}/delay/2500`}, timeout_milliseconds => 10000)::text as id from generate_series(1, 2)`;
    await db.sql`select net.http_get(${`${target}${prefix}/`} || g) from generate_series(1, 10) g`;
    const started = Date.now();
    const { ctx, response } = nudge(`Bearer ${SECRET}`);
    expect((await response).status).toBe(202);
    const slowIds = slow.map((r) => r.id).join(',');
    let fastDoneAt = 0;
    let slowWhenFastDone = -1;
    let slowDone = false;
    while (!slowDone) {
      const [row] = await db.sql<{ fast: number; slow: number }[]>`
        select count(*) filter (where id <> all(string_to_array(${slowIds}, ',')::bigint[]))::int as fast,
               count(*) filter (where id = any(string_to_array(${slowIds}, ',')::bigint[]))::int as slow
        from net._http_response`;
      if (fastDoneAt === 0 && row!.fast >= 10) {
        fastDoneAt = Date.now() - started;
        slowWhenFastDone = row!.slow;
      }
      slowDone = row!.slow === 2;
      if (!slowDone) await new Promise((r) => setTimeout(r, 20));
    }
    await waitOnExecutionContext(ctx);
    // The fast rows were all recorded before either slow one had answered.
    expect(fastDoneAt).toBeGreaterThan(0);
    expect(slowWhenFastDone).toBe(0);
    expect(Object.values(await hits(prefix))).toEqual(Array(10).fill(1));
  });

  it('slow targets: executors have more requests waiting for headers at once than one invocation may, each invocation within 6', async () => {
    // Each request takes 40 ms; EXECUTORS=3 sends up to 3 × 6 at once, the coordinator's own
    // slots up to 4 more.
    const label = `slowtargets${Date.now().toString(36)}`;
    await db.sql`select net.http_get(${`${target}/held/40/${label}/`} || g) from generate_series(1, 120) g`;
    const drains = await drainWith({ EXECUTORS: '3' });
    const held = await heldMax(label);
    expect(held).toBeGreaterThan(6);
    expect(held).toBeLessThanOrEqual(18 + 4);
    expect(drains).toHaveLength(1);
    expect(drains[0]).toMatchObject({ claimed: 120, recorded: 120, errors: 0 });
    expect(Number(drains[0]!.executors)).toBeGreaterThan(1);
    expect(Number(drains[0]!.peak_in_flight)).toBeLessThanOrEqual(18);
    expect(Number(drains[0]!.peak_header_waits)).toBeLessThanOrEqual(6);
    expect(Object.values(await hits(`/held/40/${label}/`))).toEqual(Array(120).fill(1));
  });

  it('ORIGIN_CONCURRENCY caps the requests out to one origin across all executors', async () => {
    const label = `origincap${Date.now().toString(36)}`;
    await db.sql`select net.http_get(${`${target}/held/30/${label}/`} || g) from generate_series(1, 100) g`;
    const drains = await drainWith({ EXECUTORS: '10', ORIGIN_CONCURRENCY: '8' });
    // The cap is on executors; the coordinator's own slots add at most 4 waiting for headers.
    expect(await heldMax(label)).toBeLessThanOrEqual(8 + 4);
    expect(drains[0]).toMatchObject({ claimed: 100, recorded: 100, errors: 0 });
    expect(Number(drains[0]!.peak_in_flight)).toBeLessThanOrEqual(8);
    expect(Object.values(await hits(`/held/30/${label}/`))).toEqual(Array(100).fill(1));
  });

  it('a heavy mixed load (slow and fast targets, many executors, the database) never has more than 6 waiting for headers in any invocation', async () => {
    const label = `mixed${Date.now().toString(36)}`;
    const prefix = uniquePrefix('mixedfast');
    await db.sql`select net.http_get(${`${target}/held/400/${label}s/`} || g, timeout_milliseconds => 10000) from generate_series(1, 40) g`;
    await db.sql`select net.http_get(${`${target}${prefix}/`} || g) from generate_series(1, 400) g`;
    await db.sql`select net.http_get(${`${target}/held/25/${label}m/`} || g) from generate_series(1, 200) g`;
    const drains = await drainWith({ EXECUTORS: '24', BATCH_SIZE: '100' });
    expect(drains).toHaveLength(1);
    expect(drains[0]).toMatchObject({ claimed: 640, recorded: 640, errors: 0 });
    // The accountant's recorded peak, over the coordinator (database sockets, executor calls)
    // and every executor (its fetches, probes): Cloudflare's limit, kept locally.
    expect(Number(drains[0]!.peak_header_waits)).toBeGreaterThan(1);
    expect(Number(drains[0]!.peak_header_waits)).toBeLessThanOrEqual(6);
    // …while the trigger as a whole had far more out at once.
    expect(Number(drains[0]!.peak_in_flight)).toBeGreaterThan(6);
    expect(Object.values(await hits(prefix))).toEqual(Array(400).fill(1));
    expect(Object.values(await hits(`/held/400/${label}s/`))).toEqual(Array(40).fill(1));
  });

  it('without ctx.exports (an old compatibility date) the drain says so and sends everything itself, within its slots', async () => {
    const label = `noexports${Date.now().toString(36)}`;
    await db.sql`select net.http_get(${`${target}/held/40/${label}/`} || g) from generate_series(1, 80) g`;
    const logs = captureLogs();
    const real = createExecutionContext();
    const ctx = { waitUntil: (p: Promise<unknown>) => real.waitUntil(p), passThroughOnException: () => {}, props: {} };
    const r = await worker.fetch(new Request('http://worker/nudge', { method: 'POST', headers: { Authorization: `Bearer ${SECRET}` } }), { ...workerEnv, FETCH_SLOTS: '2' }, ctx);
    expect(r.status).toBe(202);
    await waitOnExecutionContext(real);
    expect((await counts(db.sql)).queued).toBe(0);
    expect(logs.filter((l) => l.event === 'drain' && /ctx\.exports is unavailable/.test(String(l.warning)))).toHaveLength(1);
    const drains = logs.filter((l) => l.event === 'drain' && l.claimed !== undefined);
    expect(drains).toHaveLength(1);
    expect(drains[0]).toMatchObject({ claimed: 80, recorded: 80, errors: 0 });
    expect(Number(drains[0]!.peak_header_waits)).toBeLessThanOrEqual(6);
    expect(await heldMax(label)).toBeLessThanOrEqual(2);
  });

  it('two nudges at once coalesce into one drain', async () => {
    const prefix = uniquePrefix('coalesce');
    await db.sql`select net.http_get(${`${target}${prefix}/`} || g) from generate_series(1, 10) g`;
    const logs = captureLogs();
    const first = nudge(`Bearer ${SECRET}`);
    const second = nudge(`Bearer ${SECRET}`);
    expect(await (await first.response).json()).toEqual({ accepted: true, coalesced: false });
    expect(await (await second.response).json()).toEqual({ accepted: true, coalesced: true });
    await waitOnExecutionContext(first.ctx);
    await waitOnExecutionContext(second.ctx);
    expect(logs.filter((l) => l.event === 'drain')).toHaveLength(1);
    expect((await counts(db.sql)).queued).toBe(0);
    expect(Object.values(await hits(prefix))).toEqual(Array(10).fill(1));
  });

  it('a nudge during a running drain makes it pick up rows queued after it started', async () => {
    const prefix = uniquePrefix('poke');
    await db.sql`select net.http_get(${`${target}/delay/500`}, timeout_milliseconds => 5000)`;
    const logs = captureLogs();
    const first = nudge(`Bearer ${SECRET}`);
    expect((await first.response).status).toBe(202);
    // Wait until the drain has the slow request in flight, then queue more and nudge again.
    const deadline = Date.now() + 5000;
    for (;;) {
      const [row] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from net.http_request_queue where lease_owner is not null`;
      if (row!.n > 0 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await db.sql`select net.http_get(${`${target}${prefix}/`} || g) from generate_series(1, 5) g`;
    const second = nudge(`Bearer ${SECRET}`);
    expect(await (await second.response).json()).toEqual({ accepted: true, coalesced: true });
    await waitOnExecutionContext(first.ctx);
    await waitOnExecutionContext(second.ctx);
    const drains = logs.filter((l) => l.event === 'drain');
    expect(drains).toHaveLength(1);
    expect(drains[0]).toMatchObject({ claimed: 6, recorded: 6 });
    expect((await counts(db.sql)).queued).toBe(0);
    expect(Object.keys(await hits(prefix)).length).toBe(5);
  });
});

describe('GET /health', () => {
  it('ok: the short form for anyone; queue depth and last drain with the secret', async () => {
    await db.sql`select net.http_get(${`${target}/echo/h1`}), net.http_get(${`${target}/echo/h2`})`;
    const open = await health(workerEnv);
    expect(open.status).toBe(200);
    const openBody = JSON.parse(open.text) as Record<string, unknown>;
    expect(Object.keys(openBody).sort()).toEqual(['checked_at', 'database', 'ok']);
    expect(openBody).toMatchObject({ ok: true, database: 'ok' });
    const { status, text } = await health(workerEnv, `Bearer ${SECRET}`);
    expect(status).toBe(200);
    const body = JSON.parse(text) as Record<string, unknown>;
    // The same cached probe: taken before, or at, the first request above.
    expect(body).toMatchObject({ ok: true, database: 'ok', checked_at: openBody.checked_at, queue_depth: 2, in_flight: 0 });
    expect(typeof body.oldest_queued_age_ms).toBe('number');
    expect(typeof body.schema_version).toBe('number');
    expect(body.last_drain).toMatchObject({ stopped: 'empty' });
    expect(body.last_seen).toBeTruthy();
    expect(text).not.toContain(SECRET);
    // A wrong secret gets the short form.
    expect(Object.keys(JSON.parse((await health(workerEnv, 'Bearer wrong')).text) as object)).toHaveLength(3);
    await db.sql`delete from net.http_request_queue`;
  });

  it('unreachable database: 503; no error text without the secret, and neither password nor secret with it', async () => {
    const password = 'hunter2-very-secret';
    for (const url of [
      `postgres://postgres:${password}@127.0.0.1:${inject('closedPort')}/postgres`,
      // Reachable server, missing database: the server's own error message comes back.
      withDatabase(db.url.replace('postgres@', `postgres:${password}@`), 'pne_no_such_database'),
    ]) {
      const open = await health({ ...workerEnv, DATABASE_URL: url });
      expect(open.status).toBe(503);
      expect(JSON.parse(open.text)).toEqual({ ok: false, database: 'unreachable', checked_at: expect.any(String) as unknown });
      expect(open.text).not.toMatch(/postgres|pne_no_such|refused|database ".*"/);
      const { status, text } = await health({ ...workerEnv, DATABASE_URL: url }, `Bearer ${SECRET}`);
      expect(status).toBe(503);
      const body = JSON.parse(text) as Record<string, unknown>;
      expect(body).toMatchObject({ ok: false, database: 'unreachable', queue_depth: null });
      expect(typeof body.error).toBe('string');
      expect(text).not.toContain(password);
      expect(text).not.toContain(SECRET);
    }
  });

  it('no database configured: 503 "not configured"', async () => {
    const { status, text } = await health({ ...workerEnv, DATABASE_URL: undefined });
    expect(status).toBe(503);
    expect(JSON.parse(text)).toMatchObject({ ok: false, database: 'not configured' });
    expect(text).toMatch(/DATABASE_URL/);
  });

  it('1,000 requests, 100 at a time, open at most 2 connections, and a nudge drain works meanwhile', async () => {
    // A database of its own: its health cache starts cold.
    const flood = await freshDatabase();
    const e = { ...workerEnv, DATABASE_URL: flood.url };
    const prefix = uniquePrefix('flood');
    await flood.sql`select net.http_get(${`${target}${prefix}/1`})`;
    const nudged = nudge(`Bearer ${SECRET}`, e);
    expect((await nudged.response).status).toBe(202);
    let peak = 0;
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(Array.from({ length: 100 }, () => health(e)));
      for (const a of answers) {
        expect(a.status).toBe(200);
        expect(Object.keys(JSON.parse(a.text) as object)).toHaveLength(3);
      }
      const [row] = await flood.sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where datname = current_database() and application_name = 'pg-net-edge health'`;
      peak = Math.max(peak, row!.n);
    }
    expect(peak).toBeGreaterThanOrEqual(1);
    expect(peak).toBeLessThanOrEqual(2);
    await waitOnExecutionContext(nudged.ctx);
    expect(await hits(prefix)).toEqual({ [`${prefix}/1`]: 1 });
    expect((await counts(flood.sql)).queued).toBe(0);
  });
});

describe('scheduled', () => {
  it('"* * * * *" drains the queue and writes the heartbeat', async () => {
    const prefix = uniquePrefix('cron');
    await db.sql`select net.http_get(${`${target}${prefix}/`} || g) from generate_series(1, 15) g`;
    const logs = captureLogs();
    const ctx = createExecutionContext();
    worker.scheduled(createScheduledController({ cron: '* * * * *', scheduledTime: Date.now() }), workerEnv, ctx);
    await waitOnExecutionContext(ctx);
    expect((await counts(db.sql)).queued).toBe(0);
    expect(Object.keys(await hits(prefix)).length).toBe(15);
    const line = logs.find((l) => l.event === 'drain');
    expect(line).toMatchObject({ trigger: 'cron', stopped: 'empty' });
    // The heartbeat: the drain's stats, with its executors' figures.
    const [status] = await db.sql<{ last_drain: { claimed: number; owner: string } }[]>`
      select last_drain from net._worker_status where id = 1`;
    expect(status!.last_drain).toMatchObject({ claimed: 15, recorded: 15, owner: line!.owner });
    expect(status!.last_drain).toHaveProperty('executors');
    expect(status!.last_drain).toHaveProperty('peak_in_flight');
    expect(status!.last_drain).toHaveProperty('peak_header_waits');
  });

  it('net.settings names a Worker variable that overrides the database setting (TTL)', async () => {
    const settings = () => db.sql<{ name: string; setting: string; source: string }[]>`select * from net.settings where name = 'pg_net.ttl'`;
    const ctx = createExecutionContext();
    worker.scheduled(createScheduledController({ cron: '* * * * *', scheduledTime: Date.now() }), { ...workerEnv, TTL: '2 hours' }, ctx);
    await waitOnExecutionContext(ctx);
    expect(await settings()).toEqual([{ name: 'pg_net.ttl', setting: '2 hours', source: 'worker variable TTL (overrides default)' }]);
    // The next drain without the variable: the database's value again.
    const again = createExecutionContext();
    worker.scheduled(createScheduledController({ cron: '* * * * *', scheduledTime: Date.now() }), workerEnv, again);
    await waitOnExecutionContext(again);
    expect(await settings()).toEqual([{ name: 'pg_net.ttl', setting: '6 hours', source: 'default' }]);
  });

  it('"*/5 * * * *" (the old sweep cron, still a sweep) deletes only responses older than the TTL (ALTER ROLE … IN DATABASE … SET pg_net.ttl)', async () => {
    await db.sql`delete from net._http_response`;
    await db.sql`
      insert into net._http_response (id, status_code, created)
      select g, 200, now() - interval '3 hours' from generate_series(1000001, 1000005) g
      union all select g, 200, now() - interval '30 minutes' from generate_series(1000006, 1000008) g`;
    await db.sql.unsafe(`alter role current_user in database ${db.name} set pg_net.ttl = '1 hour'`);
    const logs = captureLogs();
    const ctx = createExecutionContext();
    worker.scheduled(createScheduledController({ cron: '*/5 * * * *', scheduledTime: Date.now() }), workerEnv, ctx);
    await waitOnExecutionContext(ctx);
    const left = await db.sql<{ id: string }[]>`select id::text as id from net._http_response order by id`;
    expect(left.map((r) => r.id)).toEqual(['1000006', '1000007', '1000008']);
    expect(logs.find((l) => l.event === 'sweep')).toMatchObject({ ttl: '1 hour', deleted: 5 });
    // The sweep never drains.
    expect(logs.filter((l) => l.event === 'drain')).toEqual([]);
    await db.sql.unsafe(`alter role current_user in database ${db.name} reset pg_net.ttl`);
  });

  it('"*/1 * * * *" (the every-minute sweep) honours pg_net.ttl = \'1 second\' as pg_net does, and never drains', async () => {
    await db.sql`delete from net._http_response`;
    await db.sql`
      insert into net._http_response (id, status_code, created)
      values (3000001, 200, now() - interval '5 seconds'), (3000002, 200, now() + interval '1 hour')`;
    // pg_net's documented form (ALTER ROLE … SET pg_net.ttl), for the worker's role in this database.
    await db.sql.unsafe(`alter role current_user in database ${db.name} set pg_net.ttl = '1 second'`);
    try {
      const logs = captureLogs();
      const ctx = createExecutionContext();
      worker.scheduled(createScheduledController({ cron: '*/1 * * * *', scheduledTime: Date.now() }), workerEnv, ctx);
      await waitOnExecutionContext(ctx);
      const left = await db.sql<{ id: string }[]>`select id::text as id from net._http_response`;
      expect(left.map((r) => r.id)).toEqual(['3000002']);
      expect(logs.find((l) => l.event === 'sweep')).toMatchObject({ ttl: '1 second', deleted: 1 });
      expect(logs.filter((l) => l.event === 'drain')).toEqual([]);
    } finally {
      await db.sql.unsafe(`alter role current_user in database ${db.name} reset pg_net.ttl`);
    }
  });

  it('the default TTL (6 hours) keeps a 3-hour-old response', async () => {
    await db.sql`delete from net._http_response`;
    await db.sql`
      insert into net._http_response (id, status_code, created)
      values (2000001, 200, now() - interval '3 hours'), (2000002, 200, now() - interval '7 hours')`;
    const logs = captureLogs();
    const ctx = createExecutionContext();
    worker.scheduled(createScheduledController({ cron: '*/5 * * * *', scheduledTime: Date.now() }), workerEnv, ctx);
    await waitOnExecutionContext(ctx);
    const left = await db.sql<{ id: string }[]>`select id::text as id from net._http_response`;
    expect(left.map((r) => r.id)).toEqual(['2000001']);
    expect(logs.find((l) => l.event === 'sweep')).toMatchObject({ ttl: '6 hours', deleted: 1 });
  });

  it('a cron with an unreachable database logs the error without secrets', async () => {
    const password = 'cron-secret-pw';
    const logs = captureLogs();
    const ctx = createExecutionContext();
    const e = { ...workerEnv, DATABASE_URL: `postgres://postgres:${password}@127.0.0.1:${inject('closedPort')}/x` };
    worker.scheduled(createScheduledController({ cron: '* * * * *', scheduledTime: Date.now() }), e, ctx);
    await waitOnExecutionContext(ctx);
    const line = logs.find((l) => l.event === 'drain');
    expect(line?.error).toBeTruthy();
    expect(JSON.stringify(logs)).not.toContain(password);
    expect(JSON.stringify(logs)).not.toContain(SECRET);
  });
});
