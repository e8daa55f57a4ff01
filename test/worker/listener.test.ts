// The Listener Durable Object under Miniflare with a real PostgreSQL: commits wake a drain within
// milliseconds (p50 reported, not asserted: timing depends on the machine), a dropped session is
// re-established, and a database that went away (every backend terminated, connections refused
// for a while, as in a restart) is listened to again once it is back.
import { createExecutionContext, createScheduledController, env, runInDurableObject, waitOnExecutionContext } from 'cloudflare:test';
import type { DurableObjectState } from 'cloudflare:workers';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import worker, { type Env } from '../../src/worker/index.ts';
import { Listener, LISTENER_NAME, type ListenerStatus } from '../../src/worker/listener.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { target, uniquePrefix, until } from './helpers.ts';

let db: TestDatabase;
const bindings = env as unknown as Env;

beforeAll(async () => {
  db = await freshDatabase();
});

afterAll(async () => {
  // The database may still refuse connections if a test failed midway.
  await adminClient().unsafe(`alter database ${db.name} allow_connections true`).catch(() => {});
});

/**
 * Clients for code running inside the Durable Object: workerd binds a socket to the object (or
 * test) that opened it, so each side opens its own (and, in workerd, never ends them).
 */
function adminClient(): postgres.Sql {
  return postgres(inject('adminUrl'), { max: 1, fetch_types: false, onnotice: () => {} });
}
interface Clients {
  sql: postgres.Sql;
  admin: postgres.Sql;
}

function stub() {
  const namespace = bindings.LISTENER!;
  return namespace.get(namespace.idFromName(LISTENER_NAME));
}

async function arrivals(prefix: string): Promise<{ path: string; at: number }[]> {
  return (await (await fetch(`${target}/__arrivals?prefix=${encodeURIComponent(prefix)}`)).json()) as { path: string; at: number }[];
}

/** Commits one request and waits for the target to receive it; the commit-to-arrival time in ms. */
async function commitAndWait({ sql }: Clients, path: string): Promise<number> {
  await sql`select net.http_get(${`${target}${path}`})`;
  const committed = Date.now();
  const [arrival] = await until(`${path} to arrive`, async () => {
    const found = await arrivals(path);
    return found.length > 0 ? found : null;
  });
  return arrival!.at - committed;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function terminateListener({ admin }: Clients): Promise<number> {
  const rows = await admin<{ pid: number }[]>`
    select pid from pg_stat_activity
    where datname = ${db.name} and application_name = 'pg-net-edge listener' and pid <> pg_backend_pid()`;
  for (const { pid } of rows) await admin`select pg_terminate_backend(${pid})`;
  return rows.length;
}

/** Runs `body` with a Listener built on the real object's state (alarms, ctx.exports) and this file's database. */
function withListener<R>(body: (listener: Listener, clients: Clients, state: DurableObjectState) => Promise<R>): Promise<R> {
  return runInDurableObject(stub(), (_instance: Listener, state) => {
    const clients = { sql: postgres(db.url, { max: 2, fetch_types: false, onnotice: () => {} }), admin: adminClient() };
    return body(new Listener(state, { ...bindings, LISTEN_DATABASE_URL: db.url, DATABASE_URL: db.url }), clients, state);
  });
}

describe('the Listener Durable Object', () => {
  it('without a direct connection string it says what to set and does not keep itself alive', async () => {
    const status = await stub().ping();
    expect(status).toMatchObject({ configured: false, listening: false });
    expect(status.lastError).toMatch(/LISTEN_DATABASE_URL/);
  });

  it('the every-minute cron pings it (and the sweep cron does not)', async () => {
    const lines: Record<string, unknown>[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((line: unknown) => {
      if (typeof line === 'string' && line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
    });
    try {
      for (const cron of ['*/5 * * * *', '* * * * *']) {
        const ctx = createExecutionContext();
        worker.scheduled(createScheduledController({ cron }), { ...bindings, DATABASE_URL: db.url }, ctx);
        await waitOnExecutionContext(ctx);
      }
    } finally {
      spy.mockRestore();
    }
    const pings = lines.filter((l) => l.event === 'listener');
    expect(pings).toHaveLength(1);
    expect(pings[0]).toMatchObject({ configured: false });
  });

  it('listens, sets its alarm, and each commit wakes a drain within milliseconds', async () => {
    const prefix = uniquePrefix('listener');
    const { latencies, status, alarm } = await withListener(async (listener, clients, state) => {
      const status = await listener.ping();
      const alarm = await state.storage.getAlarm();
      const latencies: number[] = [];
      for (let i = 0; i < 30; i++) latencies.push(await commitAndWait(clients, `${prefix}/${i}`));
      return { latencies, status, alarm, after: listener.status() };
    });
    expect(status).toMatchObject({ configured: true, listening: true, listens: 1, lastError: null });
    expect(alarm).not.toBeNull();
    // Measured, not asserted (the issue's goal is p50 < 20 ms; a loaded machine can be slower).
    console.log(
      `listener: commit → arrival over ${latencies.length} commits: p50 ${median(latencies)} ms, max ${Math.max(...latencies)} ms`,
    );
    expect(latencies).toHaveLength(30);
    // The last arrival is seen before its drain records it: wait for the queue to empty.
    await until('every request to be recorded', async () => {
      const [row] = await db.sql<{ queued: number }[]>`select count(*)::int as queued from net.http_request_queue`;
      return row?.queued === 0;
    });
  });

  it('keeps waking drains after the call that started it has returned (no request open in the object)', async () => {
    const prefix = uniquePrefix('listener-idle');
    const status = await withListener(async (listener) => listener.ping());
    expect(status).toMatchObject({ listening: true });
    // Committed from outside the object, with nothing running in it: only the session's
    // notification can start these drains (no cron here).
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) latencies.push(await commitAndWait({ sql: db.sql, admin: db.sql }, `${prefix}/${i}`));
    console.log(`listener (idle object): commit → arrival p50 ${median(latencies)} ms`);
    expect(await arrivals(prefix)).toHaveLength(5);
  });

  it("pg_net's begin; worker_restart(); wait_until_running(); commit; returns: the listener sees the waiting session", async () => {
    const result = await withListener(async (listener, clients) => {
      await listener.ping();
      await until('the listener to listen', async () => listener.status().listening);
      // Connecting wakes one drain (for notifications missed meanwhile): let it check in first.
      await until('the first drain to check in', async () => {
        const [row] = await clients.sql<{ seen: boolean }[]>`select last_seen is not null as seen from net._worker_status`;
        return row?.seen === true;
      });
      await clients.sql`update net._worker_status set last_seen = null`;
      const wakesBefore = listener.status().wakes;
      // Inside the transaction the NOTIFY of worker_restart() is held until commit, and no cron
      // runs here: only the waiting session's application_name can bring a drain.
      const outcome = await clients.sql
        .begin(async (tx) => {
          await tx`select net.worker_restart()`;
          await tx`select net.wait_until_running(20)`;
          return 'running';
        })
        .catch((error: unknown) => String(error));
      return { outcome, wakes: listener.status().wakes - wakesBefore };
    });
    expect(result.outcome).toBe('running');
    expect(result.wakes).toBeGreaterThanOrEqual(1);
  });

  it('listening without a database for the drains: each wake fails saying what to configure', async () => {
    const status = await runInDurableObject(stub(), async (_instance: Listener, state) => {
      const listener = new Listener(state, { ...bindings, LISTEN_DATABASE_URL: db.url, DATABASE_URL: undefined, HYPERDRIVE: undefined });
      await listener.ping();
      // Connecting wakes a drain once (for notifications missed meanwhile): that wake fails.
      return until('the first wake to fail', async () => (listener.status().wakesFailed > 0 ? listener.status() : null));
    });
    expect(status).toMatchObject({ listening: true, wakes: 0 });
    expect(status.lastError).toMatch(/503.*no database configured/);
  });

  it('a dropped session (pg_terminate_backend) is re-established, by its retry and by the alarm', async () => {
    const prefix = uniquePrefix('listener-drop');
    const result = await withListener(async (listener, clients) => {
      await listener.ping();
      // 1. Dropped: the retry timer reconnects on its own.
      expect(await terminateListener(clients)).toBeGreaterThanOrEqual(1);
      await until('the listener to reconnect', async () => listener.status().listens >= 2 && listener.status().listening);
      const afterRetry = await commitAndWait(clients, `${prefix}/after-retry`);
      // 2. Dropped, then the alarm runs before anything else noticed: it checks and reconnects.
      expect(await terminateListener(clients)).toBeGreaterThanOrEqual(1);
      await listener.alarm();
      const afterAlarm: ListenerStatus = listener.status();
      await commitAndWait(clients, `${prefix}/after-alarm`);
      return { afterRetry, afterAlarm, final: listener.status() };
    });
    expect(result.afterAlarm).toMatchObject({ listening: true });
    expect(result.final.listens).toBeGreaterThanOrEqual(3);
    expect(await arrivals(prefix)).toHaveLength(2);
  });

  it('a database that went away and came back (every backend terminated, connections refused meanwhile) is listened to again', async () => {
    const prefix = uniquePrefix('listener-restart');
    const final = await withListener(async (listener, clients) => {
      await listener.ping();
      const listensBefore = listener.status().listens;
      await clients.admin.unsafe(`alter database ${db.name} allow_connections false`);
      await clients.admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${db.name} and pid <> pg_backend_pid()`;
      // Down for a while: the listener's retries fail meanwhile.
      await until('a failed reconnect', async () => !listener.status().listening && listener.status().lastError !== 'database connection lost');
      const down = listener.status();
      await clients.admin.unsafe(`alter database ${db.name} allow_connections true`);
      await until('the listener to be back', async () => listener.status().listening && listener.status().listens > listensBefore, 30_000);
      // Commits after the comeback wake drains again.
      await commitAndWait(clients, `${prefix}/after-restart`);
      return { down, up: listener.status() };
    });
    expect(final.down.listening).toBe(false);
    expect(final.up).toMatchObject({ listening: true, lastError: null });
  });
});
