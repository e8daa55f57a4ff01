// Crashes lose nothing (SPEC §3, drain semantics 4): a drain killed with SIGKILL mid-flight, and
// the database restarted while requests are in flight. After the leases expire the next drain
// finishes the work, and every request ends with exactly one response row.
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drain } from '../../src/core/drain.ts';
import type { DrainOptions, DrainStats } from '../../src/core/types.ts';
import { startEmbedded, type EmbeddedDatabase } from '../../src/node/embedded.ts';
import { install } from '../../src/node/install.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { until } from '../support/until.ts';

const BIN = new URL('../../bin/pg-net-edge.mjs', import.meta.url).pathname;

/** A target whose every reply takes `delayMs`; counts arrivals per path (the shared target's /delay doesn't). */
class SlowTarget {
  hits = new Map<string, number>();
  delayMs = 3000;
  /** When set, replies wait here until release(). */
  held: (() => void)[] | null = null;
  private server: Server | null = null;
  url = '';

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      this.hits.set(path, (this.hits.get(path) ?? 0) + 1);
      req.resume();
      const reply = () => {
        if (!res.destroyed) res.writeHead(200, { 'content-type': 'text/plain' }).end(`slow ${path}`);
      };
      if (this.held) {
        this.held.push(reply);
        return;
      }
      const timer = setTimeout(reply, this.delayMs);
      res.on('close', () => clearTimeout(timer));
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', () => done()));
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  release(): void {
    const held = this.held ?? [];
    this.held = null;
    for (const reply of held) reply();
  }

  get seen(): number {
    return this.hits.size;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((done) => (this.server ? this.server.close(() => done()) : done()));
  }
}

interface Counts {
  queued: number;
  leased: number;
  responses: number;
  distinct_ids: number;
  ok: number;
}

async function counts(sql: postgres.Sql, ids: string[]): Promise<Counts> {
  // fetch_types: false leaves postgres.js without array serializers: pass the ids as text.
  const list = ids.join(',');
  const [row] = await sql<Counts[]>`
    with ids as (select unnest(string_to_array(${list}::text, ','))::bigint as id)
    select (select count(*) from net.http_request_queue where id in (select id from ids))::int as queued,
           (select count(*) from net.http_request_queue
             where id in (select id from ids) and lease_expires > now())::int as leased,
           (select count(*) from net._http_response where id in (select id from ids))::int as responses,
           (select count(distinct id) from net._http_response where id in (select id from ids))::int as distinct_ids,
           (select count(*) from net._http_response
             where id in (select id from ids) and status_code = 200 and error_msg is null)::int as ok`;
  return row!;
}

async function queue(sql: postgres.Sql, base: string, n: number, timeoutMs: number): Promise<string[]> {
  return sql.begin(async (tx) => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const [row] = await tx<{ id: string }[]>`
        select net.http_get(${`${base}/slow/${i}`}, timeout_milliseconds := ${timeoutMs})::text as id`;
      ids.push(row!.id);
    }
    return ids;
  });
}

function runDrainCli(url: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    // The URL through the environment, as the README says (an argument would warn: it shows in ps).
    const child = spawn(process.execPath, [BIN, 'drain'], {
      env: { ...process.env, ...env, DATABASE_URL: url },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

const options = (over: Partial<DrainOptions> = {}): DrainOptions => ({
  concurrency: 64,
  batchSize: 200,
  budgetMs: 30_000,
  hardLimitMs: 400_000,
  leaseMarginMs: 500,
  flushMs: 5,
  maxResponseBytes: 1 << 20,
  userAgent: 'pg-net-edge-crash-test',
  ...over,
});

describe('a drain killed mid-flight', () => {
  let db: TestDatabase;
  const target = new SlowTarget();

  beforeAll(async () => {
    db = await freshDatabase();
    await target.start();
  });

  afterAll(async () => {
    await target.stop();
    await db?.sql.end();
  });

  it('leaves its rows leased, then the next drain after lease expiry sends them: one response each', async () => {
    const ids = await queue(db.sql, target.url, 50, 6000);
    const child = spawn(process.execPath, [BIN, 'drain', '--database-url', db.url], {
      env: { ...process.env, LEASE_MARGIN_MS: '500', CONCURRENCY: '20' },
      stdio: 'ignore',
    });
    const exited = new Promise<NodeJS.Signals | null>((done) => child.once('exit', (_code, signal) => done(signal)));
    await until('the target to see requests', () => target.seen >= 10);
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');

    // Killed before any reply (they take 3 s): nothing recorded, the in-flight rows still leased.
    const afterKill = await counts(db.sql, ids);
    expect(afterKill.responses).toBe(0);
    expect(afterKill.queued).toBe(50);
    expect(afterKill.leased).toBeGreaterThanOrEqual(target.seen);
    expect(afterKill.leased).toBeLessThan(50); // CONCURRENCY=20: the rest were never claimed

    // A drain now must not touch the live leases: it sends only the unclaimed rows.
    target.delayMs = 0;
    const leasedIds = (
      await db.sql<{ id: string }[]>`
        select id::text as id from net.http_request_queue where lease_expires > now() order by id`
    ).map((r) => r.id);
    const early = await runDrainCli(db.url, { LEASE_MARGIN_MS: '500' });
    expect(early.stderr).toBe('');
    expect(early.code).toBe(0);
    const mid = await counts(db.sql, ids);
    expect(mid.queued).toBe(leasedIds.length);
    expect(mid.responses).toBe(50 - leasedIds.length);

    // After the leases expire the same rows are claimed again and finished.
    await until('the leases to expire', async () => (await counts(db.sql, ids)).leased === 0, 15_000);
    const late = await runDrainCli(db.url, { LEASE_MARGIN_MS: '500' });
    expect(late.code).toBe(0);
    const end = await counts(db.sql, ids);
    expect(end).toEqual({ queued: 0, leased: 0, responses: 50, distinct_ids: 50, ok: 50 });
    // At-least-once: the rows in flight at the kill were sent twice, every other one once.
    for (let i = 0; i < 50; i++) expect(target.hits.get(`/slow/${i}`)).toBeGreaterThanOrEqual(1);
    const twice = [...target.hits.values()].filter((n) => n === 2).length;
    expect(twice).toBeGreaterThanOrEqual(10);
    const [attempts] = await db.sql<{ n: number }[]>`select count(*)::int as n from net._http_response`;
    expect(attempts?.n).toBe(50);
  });
});

describe('the database restarted mid-drain', () => {
  let pg: EmbeddedDatabase;
  let sql: postgres.Sql;
  const target = new SlowTarget();

  beforeAll(async () => {
    pg = await startEmbedded();
    await install(pg.url, { log: () => {} });
    sql = postgres(pg.url, { max: 4, fetch_types: false, onnotice: () => {} });
    await target.start();
  });

  afterAll(async () => {
    await sql?.end({ timeout: 1 });
    await target.stop();
    await pg?.stop();
  });

  // retries 0: the first failed statement ends the drain, leaving its rows leased for the next
  // one; retries 4: the drain rides out the restart. Either way nothing is lost or doubled.
  it.each([0, 4])('loses nothing (retries %i): every request ends with exactly one response row', async (retries) => {
    target.held = [];
    target.hits.clear();
    const ids = await queue(sql, target.url, 30, 5000);
    // A drain with its own pool, as a Worker invocation would have.
    const drainSql = postgres(pg.url, { max: 4, fetch_types: false, onnotice: () => {} });
    const first: Promise<DrainStats> = drain(drainSql, fetch, options(), { retries, retryBaseMs: 100 });
    await until('all 30 requests in flight', () => target.seen === 30);
    // Replies arrive while the server is going down, so recording them meets a dead connection.
    const restarted = pg.restart();
    await new Promise((r) => setTimeout(r, 20));
    target.release();
    await restarted;
    const stats = await first;
    expect(stats.claimed).toBe(30);
    await drainSql.end({ timeout: 1 });
    const afterRestart = await counts(sql, ids);
    expect(afterRestart.responses + afterRestart.queued).toBe(30);
    expect(afterRestart.distinct_ids).toBe(afterRestart.responses);

    // Whatever the first drain managed to record, later drains finish the rest once leases expire.
    target.delayMs = 0;
    await until(
      'the queue to empty',
      async () => {
        const next = postgres(pg.url, { max: 2, fetch_types: false, onnotice: () => {} });
        try {
          await drain(next, fetch, options());
        } finally {
          await next.end({ timeout: 1 });
        }
        return (await counts(sql, ids)).queued === 0;
      },
      30_000,
    );
    const end = await counts(sql, ids);
    expect(end).toEqual({ queued: 0, leased: 0, responses: 30, distinct_ids: 30, ok: 30 });
  });
});
