// net.cancel (SPEC section 7: a role cancels only the requests it queued): real login roles
// holding only what the install grants PUBLIC, claims and a real drain as the owner of net (the
// Worker's role) against the loopback target. A waiting request is cancelled with a response row;
// one a drain holds is not; another role's id answers like an unknown one; a claim and a cancel
// never both win; an install over schema v4 adds it.
import postgres from 'postgres';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { drain } from '../../src/core/drain.ts';
import { install } from '../../src/node/install.ts';
import { options } from '../support/drain-options.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { one, useRoles } from '../support/roles.ts';
import { SCHEMA_VERSION } from '../support/schema.ts';

const target = inject('targetUrl');
const roles = useRoles('pne_cancel');
const { tag } = roles;
const { a: roleA, b: roleB } = roles.names;
let db: TestDatabase;
let a: postgres.Sql;
let b: postgres.Sql;
let admin: postgres.Sql;
let member: postgres.Sql;
beforeAll(() => {
  ({ db, a, b, admin, member } = roles);
});

const cancel = (s: postgres.Sql, id: string) => one(s, `net.cancel(${id})`);
const status = (s: postgres.Sql, id: string) => one(s, `net.request_status(${id})`);
const unique = (label: string) => `/hits/cancel-${label}-${tag}`;

async function hits(prefix: string): Promise<Record<string, number>> {
  return (await (await fetch(`${target}/__hits?prefix=${encodeURIComponent(prefix)}`)).json()) as Record<string, number>;
}

interface Row {
  error_msg: string | null;
  error_kind: string | null;
  owner: string;
  attempts: number;
  method: string | null;
  url: string | null;
  status_code: number | null;
}

async function response(id: string): Promise<Row | undefined> {
  const [row] = await db.sql<Row[]>`
    select error_msg, error_kind, owner::text as owner, attempts, method, url, status_code
    from net._http_response where id = ${id}::bigint`;
  return row;
}

async function queued(id: string): Promise<boolean> {
  const rows = await db.sql`select 1 from net.http_request_queue where id = ${id}::bigint`;
  return rows.length === 1;
}

/** Waits until a session of this database waits for a row lock (the statement under test is blocked). */
async function untilSomeoneWaitsForALock(): Promise<void> {
  for (;;) {
    const rows = await db.sql`
      select 1 from pg_stat_activity where datname = ${db.name} and wait_event_type = 'Lock'`;
    if (rows.length > 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('net.cancel', () => {
  it('cancels its own queued request: a response row says so, collect and status answer at once, a second cancel is false', async () => {
    const url = `${target}${unique('own')}`;
    const id = await one(a, `net.http_get('${url}')`);
    expect(await cancel(a, id)).toBe('true');
    expect(await queued(id)).toBe(false);
    expect(await response(id)).toEqual({
      error_msg: 'Request cancelled before it was sent',
      error_kind: 'cancelled',
      owner: roleA,
      attempts: 0,
      method: 'GET',
      url,
      status_code: null,
    });
    expect(await status(a, id)).toBe('cancelled');
    const [collected] = await a.unsafe(`select (r).status::text as status, (r).message from net.http_collect_response(${id}, async := false) r`);
    expect(collected).toEqual({ status: 'ERROR', message: 'Request cancelled before it was sent' });
    // Deliberate, not a failure: net.failed_requests leaves it out.
    expect(await a`select 1 from net.failed_requests where id = ${id}::bigint`).toHaveLength(0);
    expect(await cancel(a, id)).toBe('false');
    expect(await cancel(a, '987654321')).toBe('false');
    expect(await cancel(a, 'null')).toBe('false');
  });

  it('a drain afterwards never sends a cancelled request', async () => {
    const prefix = unique('drain');
    const kept = await one(a, `net.http_get('${target}${prefix}/kept')`);
    const gone = await one(a, `net.http_get('${target}${prefix}/gone')`);
    expect(await cancel(a, gone)).toBe('true');
    await drain(db.sql, fetch, options());
    expect(await hits(prefix)).toEqual({ [`${prefix}/kept`]: 1 });
    expect(await status(a, kept)).toBe('succeeded');
    expect((await response(gone))!.error_kind).toBe('cancelled');
  });

  it('cancels a delayed request and one waiting to retry, saying which attempt failed; net.retry queues it again', async () => {
    const delayed = await one(a, `net.http_request('GET', '${target}${unique('delayed')}', delay := '1 hour')`);
    expect(await cancel(a, delayed)).toBe('true');
    expect((await response(delayed))!.error_msg).toBe('Request cancelled before it was sent');

    const retrying = await one(a, `net.http_request('GET', '${target}${unique('retrying')}', max_attempts := 3, retry_max_delay_ms := 86400000)`);
    // An attempt as the drain makes it: claimed, failed with 503, due again in an hour.
    await db.sql`select id from net._claim('drain-1', 100)`;
    await db.sql`select net._record('drain-1', ${db.sql.json([{ id: Number(retrying), status_code: 503, retry_in_ms: 3_600_000 }])})`;
    expect(await status(a, retrying)).toBe('waiting to retry');
    expect(await cancel(a, retrying)).toBe('true');
    expect(await response(retrying)).toMatchObject({
      error_msg: 'Request cancelled while waiting to retry (attempt 1 of 3 failed: HTTP 503)',
      error_kind: 'cancelled',
      attempts: 1,
    });
    expect(await one(a, `net.retry(${retrying})`)).toBe(retrying);
    expect(await status(a, retrying)).toBe('queued');
    expect(await cancel(a, retrying)).toBe('true');
  });

  it('a request a drain holds is not recalled: false, and it is recorded as usual', async () => {
    const id = await one(a, `net.http_get('${target}${unique('leased')}')`);
    await db.sql`select id from net._claim('drain-2', 100)`;
    expect(await status(a, id)).toBe('in flight');
    expect(await cancel(a, id)).toBe('false');
    expect(await cancel(admin, id)).toBe('false');
    expect(await cancel(db.sql, id)).toBe('false');
    // Nor can a role lock it (and so block the drain's record) by hand.
    expect(await a`select 1 from net.http_request_queue where id = ${id}::bigint for update`).toHaveLength(0);
    expect(await a`update net.http_request_queue set cancel_claim = now() where id = ${id}::bigint returning id`).toHaveLength(0);
    await db.sql`select net._record('drain-2', ${db.sql.json([{ id: Number(id), status_code: 200, content: 'sent' }])})`;
    expect(await status(a, id)).toBe('succeeded');
    expect(await cancel(a, id)).toBe('false');
  });

  it('a request whose drain died (lease expired) is not cancelled: the next claim sends it again', async () => {
    const id = await one(a, `net.http_get('${target}${unique('expired')}')`);
    await db.sql`select id from net._claim('drain-3', 100)`;
    await db.sql`update net.http_request_queue set lease_expires = now() - interval '1 second' where id = ${id}::bigint`;
    expect(await cancel(a, id)).toBe('false');
    const again = await db.sql<{ id: string }[]>`select id::text as id from net._claim('drain-4', 100)`;
    expect(again.map((r) => r.id)).toEqual([id]);
  });
});

describe('net.cancel and other roles', () => {
  it("another role's id answers false, exactly like an unknown one, and the request is untouched", async () => {
    const id = await one(a, `net.http_get('${target}${unique('theirs')}')`);
    expect(await cancel(b, id)).toBe(await cancel(b, '987654321'));
    expect(await cancel(b, id)).toBe('false');
    expect(await b`update net.http_request_queue set cancel_claim = now() where id = ${id}::bigint returning id`).toHaveLength(0);
    expect(await b`select 1 from net.http_request_queue where id = ${id}::bigint for update`).toHaveLength(0);
    // Stamping its own row proves nothing for another id.
    const own = await one(b, `net.http_get('${target}${unique('b-own')}')`);
    const proved = await b.begin(async (tx) => {
      await tx`update net.http_request_queue set cancel_claim = now() where id = ${own}::bigint`;
      const [r] = await tx<{ v: boolean }[]>`select net._cancel(${id}::bigint) as v`;
      return r!.v;
    });
    expect(proved).toBe(false);
    const [row] = await db.sql<{ cancel_claim: Date | null; owner: string }[]>`
      select cancel_claim, owner::text as owner from net.http_request_queue where id = ${id}::bigint`;
    expect(row).toEqual({ cancel_claim: null, owner: roleA });
    expect(await status(a, id)).toBe('queued');
    expect(await cancel(b, own)).toBe('true');
  });

  it("a member of the queuing role, net_edge_admin's members and the owner of net cancel others' requests", async () => {
    const byMember = await one(a, `net.http_get('${target}${unique('by-member')}')`);
    const byAdmin = await one(b, `net.http_get('${target}${unique('by-admin')}')`);
    const byOwner = await one(b, `net.http_get('${target}${unique('by-owner')}')`);
    expect(await cancel(member, byMember)).toBe('true');
    expect(await cancel(admin, byAdmin)).toBe('true');
    expect(await cancel(db.sql, byOwner)).toBe('true');
    // The response keeps the role that queued it: b sees its own cancelled requests.
    expect((await response(byAdmin))!.owner).toBe(roleB);
    expect(await status(b, byAdmin)).toBe('cancelled');
    expect(await status(b, byMember)).toBe('unknown');
  });
});

describe('net.cancel against a concurrent claim', () => {
  it('a claim that locked the row first wins: the cancel waits for it, then answers false', async () => {
    const id = await one(a, `net.http_get('${target}${unique('claim-first')}')`);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let claimed: string[] = [];
    const claim = db.sql.begin(async (tx) => {
      claimed = (await tx<{ id: string }[]>`select id::text as id from net._claim('drain-5', 100)`).map((r) => r.id);
      await held;
    });
    try {
      while (claimed.length === 0) await new Promise((r) => setTimeout(r, 10));
      expect(claimed).toContain(id);
      const cancelled = cancel(a, id);
      await untilSomeoneWaitsForALock();
      release();
      await claim;
      expect(await cancelled).toBe('false');
    } finally {
      release();
      await claim;
    }
    expect(await status(a, id)).toBe('in flight');
  });

  it('a cancel that locked the row first wins: a claim skips it, and after commit it is gone', async () => {
    const id = await one(a, `net.http_get('${target}${unique('cancel-first')}')`);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let answered: boolean | null = null;
    const cancelling = a.begin(async (tx) => {
      answered = (await tx<{ v: boolean }[]>`select net.cancel(${id}::bigint) as v`)[0]!.v;
      await held;
    });
    try {
      while (answered === null) await new Promise((r) => setTimeout(r, 10));
      expect(answered).toBe(true);
      const claimed = await db.sql<{ id: string }[]>`select id::text as id from net._claim('drain-6', 100)`;
      expect(claimed.map((r) => r.id)).not.toContain(id);
    } finally {
      release();
      await cancelling;
    }
    expect(await db.sql`select id from net._claim('drain-6', 100) where id = ${id}::bigint`).toHaveLength(0);
    expect(await status(a, id)).toBe('cancelled');
  });

  it('a cancel rolled back leaves the request queued, and it is sent', async () => {
    const path = unique('rolled-back');
    const id = await one(a, `net.http_get('${target}${path}')`);
    await a
      .begin(async (tx) => {
        await tx`select net.cancel(${id}::bigint)`;
        throw new Error('roll back');
      })
      .catch(() => {});
    expect(await status(a, id)).toBe('queued');
    await drain(db.sql, fetch, options());
    expect(await hits(path)).toEqual({ [path]: 1 });
  });
});

describe('upgrade from schema v4', () => {
  it('an install over v4 adds net.cancel, keeping queued requests', async () => {
    const up = await freshDatabase();
    try {
      // Make the clone look like a v4 install: drop what v5 added.
      await up.sql.unsafe(`
        drop function net.cancel(bigint);
        drop function net._cancel(bigint);
        drop policy cancel_unclaimed on net.http_request_queue;
        alter table net.http_request_queue drop column cancel_claim;
        delete from net._migrations where version = 5;
        insert into net.http_request_queue (method, url, headers, timeout_milliseconds) values ('GET', 'https://e.com/v4', '{}', 1000);`);
      const report = await install(up.url, { log: () => {} });
      expect(report).toEqual({ before: 4, after: SCHEMA_VERSION, queued: 1, responses: 0 });
      const [row] = await up.sql<{ id: string }[]>`select id::text as id from net.http_request_queue`;
      expect(await one(up.sql, `net.cancel(${row!.id})`)).toBe('true');
      expect(await one(up.sql, `net.request_status(${row!.id})`)).toBe('cancelled');
    } finally {
      await up.sql.end();
    }
  });
});
