// A drain that reaches its request cap (a Worker invocation's subrequests) with rows still queued
// wakes a fresh drain at once (net.wake() → NOTIFY → the relay's nudge) instead of leaving them to
// the next cron. Real PostgreSQL, LISTEN, and the loopback target; the Drain runs in Node here.
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { drain } from '../../src/core/drain.ts';
import { options } from '../support/drain-options.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';

const target = inject('targetUrl');
let db: TestDatabase;
let listener: postgres.Sql;

beforeAll(async () => {
  db = await freshDatabase();
  listener = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
});

afterAll(async () => {
  await listener.end({ timeout: 1 });
  await db.sql.end({ timeout: 1 });
});

async function queue(n: number, label: string): Promise<void> {
  const prefix = `/hits/handover-${label}-${Date.now().toString(36)}`;
  await db.sql`select net.http_get(${target} || ${prefix} || '/' || g) from generate_series(1, ${n}) g`;
}

describe('hand-over at the request cap', () => {
  it('a capped drain with rows left wakes the next drain; one that finishes the queue does not', async () => {
    await queue(12, 'a');
    // Listen only after the enqueue committed: its own notification is not counted.
    let wakes = 0;
    const listening = await listener.listen('pg_net_edge_wake', () => wakes++);
    try {
      const capped = await drain(db.sql, fetch, options({ concurrency: 4, maxRequests: 5 }), { heartbeat: false });
      expect(capped).toMatchObject({ claimed: 5, recorded: 5, stopped: 'budget' });
      const deadline = Date.now() + 5000;
      while (wakes === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(wakes).toBe(1);

      wakes = 0;
      const rest = await drain(db.sql, fetch, options({ concurrency: 4, maxRequests: 100 }), { heartbeat: false });
      expect(rest).toMatchObject({ claimed: 7, recorded: 7, stopped: 'empty' });
      await new Promise((r) => setTimeout(r, 300));
      expect(wakes).toBe(0);
    } finally {
      await listening.unlisten();
    }
  });
});
