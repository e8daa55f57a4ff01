// How net._claim reads the queue: with a deep queue a claim must read about the rows it takes,
// not the whole queue. Checked on the real plan (auto_explain, shipped with PostgreSQL) rather
// than on timings.
import postgres from 'postgres';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let plans: string[] = [];
let explain: postgres.Sql;

beforeAll(async () => {
  db = await freshDatabase();
  // One session with auto_explain logging every nested statement's plan back to this client.
  explain = postgres(db.url, {
    max: 1,
    fetch_types: false,
    onnotice: (notice) => {
      if (typeof notice.message === 'string' && notice.message.includes('plan:')) plans.push(notice.message);
    },
  });
  await explain`load 'auto_explain'`;
  await explain`set auto_explain.log_min_duration = 0`;
  await explain`set auto_explain.log_nested_statements = on`;
  await explain`set auto_explain.log_analyze = on`;
  await explain`set auto_explain.log_buffers = on`;
  await explain`set client_min_messages = log`;
});
afterAll(async () => {
  await explain?.end();
  await db?.sql.end();
});

it('a claim from a 3,000-row queue reads about the rows it takes, through the two partial indexes', async () => {
  await db.sql`select count(net.http_get('http://127.0.0.1:9/plan/' || g)) from generate_series(1, 3000) g`;
  // A few retries waiting to come due, and one already due.
  await db.sql`update net.http_request_queue set not_before = now() + interval '1 hour' where id in (select id from net.http_request_queue order by id desc limit 5)`;
  await db.sql`update net.http_request_queue set not_before = now() - interval '1 second' where id = (select max(id) from net.http_request_queue where not_before is null)`;
  // No ANALYZE: statistics as right after a burst, before autovacuum catches up (when the
  // planner preferred walking the primary key).

  plans = [];
  const rows = await explain<{ id: string }[]>`select id::text as id from net._claim('plan-test', 10, 30000, null)`;
  expect(rows).toHaveLength(10);
  const claimPlan = plans.find((p) => p.includes('CTE due'));
  expect(claimPlan, 'auto_explain logged the plan of net._claim').toBeDefined();
  const due = claimPlan!.slice(claimPlan!.indexOf('CTE due'), claimPlan!.indexOf('CTE claimed'));
  expect(due).toContain('http_request_queue_not_before_idx');
  const plain = claimPlan!.slice(claimPlan!.indexOf('CTE plain'), claimPlan!.indexOf('CTE due'));
  expect(plain).toContain('http_request_queue_plain_idx');
  // Nothing filtered row by row beyond a handful (a full walk would filter ~3,000).
  const filtered = [...claimPlan!.matchAll(/Rows Removed by Filter: (\d+)/g)].map((m) => Number(m[1]));
  expect(Math.max(0, ...filtered)).toBeLessThan(50);
});

it('with an old transaction open, a claim after its hint skips the rows already drained instead of walking them', async () => {
  await db.sql`delete from net.http_request_queue`;
  // A transaction older than everything below (a long report, pg_dump): the drained rows stay
  // visible to it, so their index entries can't be skipped as dead.
  const old = postgres(db.url, { max: 1, fetch_types: false });
  let finish: () => void = () => {};
  const held = old.begin('isolation level repeatable read', async (tx) => {
    await tx`select 1`;
    await new Promise<void>((resolve) => (finish = resolve));
  });
  try {
    await new Promise((r) => setTimeout(r, 100));
    await db.sql`select count(net.http_get('http://127.0.0.1:9/hint/' || g)) from generate_series(1, 2100) g`;
    // Drain 2,000 of them: claimed and recorded, as a drain does.
    let last = '0';
    for (let i = 0; i < 20; i++) {
      const rows = await db.sql<{ id: string }[]>`select id::text as id from net._claim('hint-test', 100, 30000, null, ${last}::bigint)`;
      last = rows[rows.length - 1]!.id;
      await db.sql`select net._record('hint-test', ${JSON.stringify(rows.map((r) => ({ id: r.id, status_code: 200 })))}::text::jsonb)`;
    }
    const plainBuffers = async (after: string | null): Promise<number> => {
      plans = [];
      const rows = await explain<{ id: string }[]>`select id::text as id from net._claim('hint-test', 10, 30000, null, ${after}::bigint)`;
      expect(rows).toHaveLength(10);
      await db.sql`select net._record('hint-test', ${JSON.stringify(rows.map((r) => ({ id: r.id, status_code: 200 })))}::text::jsonb)`;
      const plan = plans.find((p) => p.includes('CTE plain'))!;
      const plain = plan.slice(plan.indexOf('CTE plain'), plan.indexOf('CTE due'));
      return Number(/shared hit=(\d+)/.exec(plain)?.[1] ?? 0) + Number(/read=(\d+)/.exec(plain)?.[1] ?? 0);
    };
    const hinted = await plainBuffers(last);
    const fromStart = await plainBuffers(null);
    // From the start the scan visits the 2,000 drained rows (~140 pages here, growing with every
    // row drained while the old transaction lasts); after the hint, about the ten rows it takes.
    expect(hinted).toBeLessThan(30);
    expect(fromStart).toBeGreaterThan(5 * hinted);
  } finally {
    finish();
    await held;
    await old.end();
  }
});
