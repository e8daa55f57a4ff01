// Who sees what (SPEC section 7, issue 14 items 1-2): real login roles holding only what the
// install grants PUBLIC, a real drain (as the owner of net, like the Worker) against the loopback
// target. Each role sees, collects and retries only its own requests; another role's id answers
// exactly like an unknown one; the admin role and the owner of net see all.
import postgres from 'postgres';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { drain } from '../../src/core/drain.ts';
import { options } from '../support/drain-options.ts';
import type { TestDatabase } from '../support/db.ts';
import { one, useRoles } from '../support/roles.ts';

const target = inject('targetUrl');
const roles = useRoles('pne_sec');
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

/** Runs the drain as the owner of net (the Worker's role) until the queue is empty. */
async function drainAll(): Promise<void> {
  await drain(db.sql, fetch, options());
}

interface Failure {
  code: string;
  message: string;
  hint?: string;
  detail?: string;
}

async function failure(s: postgres.Sql, text: string): Promise<Failure> {
  try {
    await s.unsafe(text);
  } catch (error) {
    const e = error as Failure;
    return { code: e.code, message: e.message, hint: e.hint, detail: e.detail };
  }
  throw new Error(`${text} should have failed`);
}

/** Everything a role can learn about an id through the API, with the id itself blanked out. */
async function answers(s: postgres.Sql, id: string): Promise<unknown> {
  const [collect] = await s.unsafe(`select (r).status::text as status, (r).message, (r).response::text as response
                                    from net._http_collect_response(${id}) r`);
  const [collect2] = await s.unsafe(`select (r).status::text as status, (r).message, (r).response::text as response
                                     from net.http_collect_response(${id}, async := false) r`);
  const [status] = await s.unsafe(`select net.request_status(${id}) as s`);
  const retry = await failure(s, `select net.retry(${id})`);
  const requeue = await failure(s, `select net._requeue(${id}, null, null)`);
  const [rows] = await s.unsafe(`select (select count(*) from net._http_response where id = ${id})::int as responses,
                                        (select count(*) from net.http_request_queue where id = ${id})::int as queued,
                                        (select count(*) from net.failed_requests where id = ${id})::int as failed`);
  const blank = (f: Failure) => ({ ...f, message: f.message.replace(`request ${id} `, 'request <id> ') });
  return { collect, collect2, status, retry: blank(retry), requeue: blank(requeue), rows };
}

describe('ownership and visibility', () => {
  let aOk: string;
  let aFailed: string;
  let bOwn: string;
  const unknown = '987654321';

  beforeAll(async () => {
    aOk = await one(a, `net.http_get('${target}/echo/a-secret?api_key=a-key', headers := '{"Authorization": "Bearer a-token"}')`);
    aFailed = await one(a, `net.http_get('${target}/status/500?api_key=a-key')`);
    bOwn = await one(b, `net.http_get('${target}/status/503')`);
    await db.sql`select net._heartbeat(null)`; // a worker is about: sync collects don't answer early
    await drainAll();
  });

  it('each request records the role that queued it, and its response keeps it', async () => {
    const rows = await db.sql<{ id: string; owner: string }[]>`
      select id::text as id, owner::text as owner from net._http_response where id in (${aOk}, ${aFailed}, ${bOwn}) order by id`;
    expect(rows).toEqual([
      { id: aOk, owner: roleA },
      { id: aFailed, owner: roleA },
      { id: bOwn, owner: roleB },
    ]);
  });

  it('a reads its own response rows directly, as with pg_net, and collects them', async () => {
    const rows = await a<{ id: string; status_code: number; content: string }[]>`
      select id::text as id, status_code, content from net._http_response order by id`;
    expect(rows.map((r) => [r.id, r.status_code])).toEqual([
      [aOk, 200],
      [aFailed, 500],
    ]);
    expect(rows[0]!.content).toContain('a-token'); // the echo of its own Authorization header
    const [collected] = await a<{ status: string }[]>`select (net._http_collect_response(${aOk}::bigint)).status::text as status`;
    expect(collected!.status).toBe('SUCCESS');
    const failed = await a<{ id: string; url: string }[]>`select id::text as id, url from net.failed_requests`;
    expect(failed.map((r) => r.id)).toEqual([aFailed]);
  });

  it("b sees none of a's rows, in the tables or the views", async () => {
    const responses = await b<{ id: string }[]>`select id::text as id from net._http_response`;
    expect(responses.map((r) => r.id)).toEqual([bOwn]);
    const failed = await b<{ id: string }[]>`select id::text as id from net.failed_requests`;
    expect(failed.map((r) => r.id)).toEqual([bOwn]);
    // a queued request is invisible too
    const pending = await one(a, `net.http_request('GET', '${target}/echo/a-pending', delay := '1 hour')`);
    expect(await b`select 1 from net.http_request_queue where id = ${pending}::bigint`).toHaveLength(0);
    expect(await a`select 1 from net.http_request_queue where id = ${pending}::bigint`).toHaveLength(1);
    expect(await answers(b, pending)).toEqual(await answers(b, unknown));
  });

  it("a's ids answer b exactly like an unknown id, messages and SQLSTATEs included", async () => {
    const asUnknown = await answers(b, unknown);
    expect(asUnknown).toMatchObject({
      collect: { status: 'ERROR', message: 'request matching request_id not found', response: null },
      status: { s: 'unknown' },
      retry: { code: 'P0002', message: 'request <id> not found (never queued, or its response was deleted after pg_net.ttl)' },
      requeue: { code: 'P0002' },
      rows: { responses: 0, queued: 0, failed: 0 },
    });
    expect(await answers(b, aOk)).toEqual(asUnknown);
    expect(await answers(b, aFailed)).toEqual(asUnknown);
  });

  it("b cannot retry a's failed request; a can, and it goes out again as a's", async () => {
    await failure(b, `select net.retry(${aFailed})`);
    expect(await one(db.sql, `net.request_status(${aFailed})`)).toBe('failed');
    expect(await one(a, `net.retry(${aFailed})`)).toBe(aFailed);
    const [row] = await db.sql<{ owner: string }[]>`select owner::text as owner from net.http_request_queue where id = ${aFailed}::bigint`;
    expect(row!.owner).toBe(roleA);
    await drainAll();
    expect(await one(a, `net.request_status(${aFailed})`)).toBe('failed');
    const [stored] = await db.sql<{ owner: string }[]>`select owner::text as owner from net._http_response where id = ${aFailed}::bigint`;
    expect(stored!.owner).toBe(roleA);
  });

  it("b can neither queue a row as a, nor touch a's rows or the worker's columns", async () => {
    expect((await failure(b, `insert into net.http_request_queue (method, url, timeout_milliseconds, owner)
                               values ('GET', '${target}/x', 1000, '${roleA}')`)).message).toMatch(/permission denied/);
    expect((await failure(b, `insert into net.http_request_queue (method, url, timeout_milliseconds, lease_owner)
                               values ('GET', '${target}/x', 1000, 'me')`)).message).toMatch(/permission denied/);
    const stamped = await b.unsafe(`update net._http_response set retry_claim = now() where id = ${aOk} returning id`);
    expect(stamped).toHaveLength(0);
    expect((await failure(b, `delete from net._http_response where id = ${aOk}`)).message).toMatch(/permission denied/);
    // A direct INSERT of its own request works (the request columns only) and belongs to b.
    const [direct] = await b<{ id: string; owner: string }[]>`
      insert into net.http_request_queue (method, url, timeout_milliseconds)
      values ('GET', ${`${target}/echo/direct`}, 1000) returning id::text as id, owner::text as owner`;
    expect(direct!.owner).toBe(roleB);
    // Stamping retry_claim on its own row is allowed, but proves nothing for another id.
    await expect(
      b.begin(async (tx) => {
        await tx`update net._http_response set retry_claim = now() where id = ${bOwn}::bigint`;
        await tx`select net._requeue(${aOk}::bigint, null, null)`;
      }),
    ).rejects.toThrow(/^request \d+ not found/);
  });

  it('error messages never show another role\'s URL', async () => {
    for (const text of [`select net.retry(${aFailed})`, `select net.retry(${aOk})`, `select net._requeue(${aOk}, null, null)`]) {
      const f = await failure(b, text);
      expect(JSON.stringify(f)).not.toContain('a-key');
      expect(JSON.stringify(f)).not.toContain('a-secret');
    }
    const answer = JSON.stringify(await answers(b, aOk));
    expect(answer).not.toContain('a-key');
  });

  it('members of a role see its requests; members of net_edge_admin and the owner of net see all', async () => {
    const seen = async (s: postgres.Sql) =>
      (await s<{ id: string }[]>`select id::text as id from net._http_response where id in (${aOk}, ${bOwn}) order by id`).map((r) => r.id);
    expect(await seen(member)).toEqual([aOk]);
    expect(await seen(admin)).toEqual([aOk, bOwn]);
    expect(await seen(db.sql)).toEqual([aOk, bOwn]);
    const [collected] = await admin<{ status: string }[]>`select (net.http_collect_response(${aOk}::bigint)).status::text as status`;
    expect(collected!.status).toBe('SUCCESS');
    const failed = await admin<{ id: string }[]>`select id::text as id from net.failed_requests where id = ${bOwn}::bigint`;
    expect(failed).toHaveLength(1);
  });

  it('a BYPASSRLS role (e.g. Supabase\'s service_role) sees all, in the tables and in failed_requests', async () => {
    const bypass = `pne_sec_bypass_${tag}`;
    await db.sql.unsafe(`create role ${bypass} login bypassrls password '${roles.password}'`);
    const s = roles.connectAs(bypass);
    try {
      const failed = await s<{ id: string }[]>`select id::text as id from net.failed_requests where id = ${bOwn}::bigint`;
      expect(failed).toHaveLength(1);
      expect(await s`select 1 from net._http_response where id = ${aOk}::bigint`).toHaveLength(1);
    } finally {
      await s.end();
      await db.sql.unsafe(`drop role ${bypass}`);
    }
  });

  it('inside a SECURITY DEFINER function the request belongs to the function owner', async () => {
    await db.sql.unsafe(`create schema app_${tag} authorization ${roleA}`);
    await a.unsafe(`
      create function app_${tag}.notify() returns bigint language sql security definer
      set search_path = pg_catalog as $$ select net.http_get('${target}/echo/from-definer') $$`);
    await a.unsafe(`grant usage on schema app_${tag} to ${roleB}`);
    await a.unsafe(`grant execute on function app_${tag}.notify() to ${roleB}`);
    try {
      const id = await one(b, `app_${tag}.notify()`);
      const [row] = await db.sql<{ owner: string }[]>`select owner::text as owner from net.http_request_queue where id = ${id}::bigint`;
      expect(row!.owner).toBe(roleA);
      expect(await one(a, `net.request_status(${id})`)).toBe('queued');
      expect(await one(b, `net.request_status(${id})`)).toBe('unknown');
    } finally {
      await db.sql.unsafe(`drop schema app_${tag} cascade`);
    }
  });

  it('the worker (owner of net) is not restricted: the tables are not FORCE ROW LEVEL SECURITY', async () => {
    const rows = await db.sql<{ name: string; rls: boolean; force: boolean }[]>`
      select relname as name, relrowsecurity as rls, relforcerowsecurity as force from pg_class
      where oid in ('net.http_request_queue'::regclass, 'net._http_response'::regclass) order by 1`;
    expect(rows).toEqual([
      { name: '_http_response', rls: true, force: false },
      { name: 'http_request_queue', rls: true, force: false },
    ]);
  });
});
