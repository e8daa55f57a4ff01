// Many drains at once over one queue (cron + nudges + several isolates in production): every
// request is sent exactly once and gets exactly one response row.
import { beforeAll, expect, it } from 'vitest';
import { Drain } from '../../src/core/drain.ts';
import { connectDatabase } from '../../src/worker/db.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { counts, hits, options, target, uniquePrefix } from './helpers.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await freshDatabase();
});

it('10 drains started at once over 1,000 queued requests: each sent once, 1,000 response rows, empty queue', async () => {
  const prefix = uniquePrefix('many');
  await db.sql`select net.http_get(${`${target}${prefix}/`} || g) from generate_series(1, 1000) g`;
  // Own client per drain, as separate invocations have; small batches so the drains interleave.
  const drains = Array.from(
    { length: 10 },
    () => new Drain(connectDatabase(db.url), fetch, options({ concurrency: 16, batchSize: 25 })),
  );
  const stats = await Promise.all(drains.map((d) => d.run()));

  expect(stats.reduce((n, s) => n + s.claimed, 0)).toBe(1000);
  expect(stats.reduce((n, s) => n + s.recorded, 0)).toBe(1000);
  expect(stats.every((s) => s.errors === 0 && s.stopped === 'empty')).toBe(true);
  // More than one drain did real work (otherwise this proves nothing about concurrency).
  expect(stats.filter((s) => s.claimed > 0).length).toBeGreaterThan(1);

  expect(await counts(db.sql)).toEqual({ queued: 0, responses: 1000 });
  const [row] = await db.sql<{ n: number; ok: number }[]>`
    select count(distinct id)::int as n, count(*) filter (where status_code = 200 and content = 'hit')::int as ok
    from net._http_response`;
  expect(row).toEqual({ n: 1000, ok: 1000 });

  const h = await hits(prefix);
  expect(Object.keys(h).length).toBe(1000);
  expect(Object.entries(h).filter(([, n]) => n !== 1)).toEqual([]);
});
