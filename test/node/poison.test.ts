// A poison-proof queue (SPEC section 7, issue 14 item 4): a row that breaks a claim or a record,
// or whose drains keep dying, ends with an error row while every other row goes on. Each case
// uses a real row that triggers it, a real drain against the loopback target and real PostgreSQL.
import postgres from 'postgres';
import { beforeEach, describe, expect, inject, it } from 'vitest';
import { DEFAULT_CLAIM_BYTES } from '../../src/core/claim.ts';
import { drain } from '../../src/core/drain.ts';
import { options } from '../support/drain-options.ts';
import { emptyQueue, useFreshDatabase } from '../support/db.ts';

const target = inject('targetUrl');
let sql: postgres.Sql;
useFreshDatabase((fresh) => {
  sql = fresh.sql;
});
beforeEach(() => emptyQueue(sql));

interface Row {
  id: string;
  status_code: number | null;
  error_msg: string | null;
  attempts: number | null;
}

async function results(): Promise<Map<string, Row>> {
  const rows = await sql<Row[]>`select id::text as id, status_code, error_msg, attempts from net._http_response`;
  return new Map(rows.map((r) => [r.id, r]));
}

async function one(text: string): Promise<string> {
  const rows = await sql.unsafe<{ v: string }[]>(`select (${text})::text as v`);
  return rows[0]!.v;
}

async function claimIds(owner: string, max = 10, maxBytes: number | null = null): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id::text as id from net._claim(${owner}, ${max}, 30000, null, null, ${maxBytes}::bigint)`;
  return rows.map((r) => r.id);
}

async function expireLeases(): Promise<void> {
  await sql`update net.http_request_queue set lease_expires = clock_timestamp() - interval '1 second' where lease_owner is not null`;
}

async function queueDepth(): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
  return row!.n;
}

describe('claim body budget (max_bytes)', () => {
  it('the default is 16 MiB', () => {
    expect(DEFAULT_CLAIM_BYTES).toBe(16 * 1024 * 1024);
  });

  it('a claim stops adding rows once their bodies would pass max_bytes, always taking one', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push(await one(`net.http_request('POST', 'https://e.com/${i}', convert_to(repeat('x', 600), 'UTF8'))`));
    }
    expect(await claimIds('d', 10, 1000)).toEqual([ids[0]]);
    expect(await claimIds('d', 10, 1200)).toEqual([ids[1], ids[2]]);
    expect(await queueDepth()).toBe(3);
  });

  it('a row whose body alone is over the worker limit ends with an error row; the rest are sent', async () => {
    const before = await one(`net.http_get('${target}/echo/before-big')`);
    const big = await one(`net.http_request('POST', '${target}/echo/big', convert_to(repeat('x', 5000), 'UTF8'))`);
    const after = await one(`net.http_request('POST', '${target}/echo/after-big', convert_to(repeat('y', 500), 'UTF8'))`);
    const stats = await drain(sql, fetch, options({ claimBytes: 1000 }));
    expect(stats.stopped).toBe('empty');
    const got = await results();
    expect(got.get(before)).toMatchObject({ status_code: 200, error_msg: null });
    expect(got.get(after)).toMatchObject({ status_code: 200, error_msg: null });
    expect(got.get(big)).toMatchObject({
      status_code: null,
      error_msg:
        "request not sent: its body is 5000 bytes, more than this worker claims at once (1000 bytes); lower pg_net.max_body_bytes or raise the worker's claim limit",
    });
    expect(await queueDepth()).toBe(0);
    // It is kept for net.retry, like any failure.
    expect(await one(`net.request_status(${big})`)).toBe('failed');
  });

  it('a claim whose first rows are all poison looks again instead of answering "empty"', async () => {
    const big = [];
    for (let i = 0; i < 3; i++) big.push(await one(`net.http_request('PUT', 'https://e.com/b${i}', convert_to(repeat('x', 2000), 'UTF8'))`));
    const small = await one(`net.http_get('https://e.com/small')`);
    expect(await claimIds('d', 3, 1000)).toEqual([small]);
    const got = await results();
    for (const id of big) expect(got.get(id)?.error_msg).toMatch(/^request not sent: its body is 2000 bytes/);
  });
});

describe('expired leases (drains that died)', () => {
  it('a crash re-send keeps its attempt; after the 3rd expired lease the row ends with an error, others go on', async () => {
    const doomed = await one(`net.http_get('${target}/echo/doomed', timeout_milliseconds := 1000)`);
    // Three drains claim it and die (never record); each time its lease runs out.
    for (const [i, drainName] of ['dead-1', 'dead-2', 'dead-3'].entries()) {
      expect(await claimIds(drainName)).toEqual([doomed]);
      const [row] = await sql<{ attempts: number; expired_leases: number }[]>`
        select attempts, expired_leases from net.http_request_queue where id = ${doomed}::bigint`;
      expect(row).toEqual({ attempts: 1, expired_leases: i });
      await expireLeases();
    }
    const other = await one(`net.http_get('${target}/echo/healthy')`);
    const stats = await drain(sql, fetch, options());
    expect(stats).toMatchObject({ claimed: 1, recorded: 1, stopped: 'empty' });
    const got = await results();
    expect(got.get(other)).toMatchObject({ status_code: 200, error_msg: null });
    expect(got.get(doomed)?.status_code).toBeNull();
    expect(got.get(doomed)?.error_msg).toBe(
      "request abandoned: its lease expired 3 times (its drain died 3 times while sending it, e.g. the response was too large for the worker's memory or the worker was stopped); it is not sent again",
    );
    expect(got.get(doomed)?.attempts).toBe(1);
    expect(await queueDepth()).toBe(0);
  });

  it('a row whose lease expired twice is still sent, and succeeds', async () => {
    const id = await one(`net.http_get('${target}/echo/twice')`);
    for (const drainName of ['dead-1', 'dead-2']) {
      expect(await claimIds(drainName)).toEqual([id]);
      await expireLeases();
    }
    await drain(sql, fetch, options());
    expect((await results()).get(id)).toMatchObject({ status_code: 200, error_msg: null, attempts: 1 });
  });
});

describe('max_attempts', () => {
  it('a row that has used its attempts is not claimed again but ends with an error row', async () => {
    const spent = await one(`net.http_request('GET', '${target}/echo/spent', max_attempts := 2)`);
    const fresh = await one(`net.http_get('${target}/echo/fresh')`);
    // e.g. left by an older version, whose crash re-sends counted as attempts
    await sql`update net.http_request_queue set attempts = 2 where id = ${spent}::bigint`;
    const stats = await drain(sql, fetch, options());
    expect(stats).toMatchObject({ claimed: 1, recorded: 1 });
    const got = await results();
    expect(got.get(fresh)).toMatchObject({ status_code: 200 });
    expect(got.get(spent)).toMatchObject({
      status_code: null,
      error_msg: 'request not sent again: it already used its 2 of 2 attempts',
    });
  });
});

describe('record', () => {
  it('a row that breaks the record statement ends with an error row; the rest of its batch is recorded', async () => {
    // A real row the database refuses to store: this database rejects responses whose content
    // mentions "poison-record" (a stand-in for any row-specific failure of net._record).
    await sql.unsafe(`
      create or replace function public.refuse_poison() returns trigger language plpgsql as $$
      begin
        if new.content like '%poison-record%' then
          raise exception 'this database refuses that response';
        end if;
        return new;
      end $$;
      create or replace trigger refuse_poison before insert on net._http_response
        for each row execute function public.refuse_poison()`);
    try {
      const ids = [
        await one(`net.http_get('${target}/echo/fine-1')`),
        await one(`net.http_get('${target}/echo/poison-record')`),
        await one(`net.http_get('${target}/echo/fine-2')`),
      ];
      const stats = await drain(sql, fetch, options({ flushMs: 200 }));
      expect(stats).toMatchObject({ claimed: 3, recorded: 3, stopped: 'empty' });
      const got = await results();
      expect(got.get(ids[0]!)).toMatchObject({ status_code: 200, error_msg: null });
      expect(got.get(ids[2]!)).toMatchObject({ status_code: 200, error_msg: null });
      expect(got.get(ids[1]!)?.error_msg).toBe('could not store the response: this database refuses that response');
      expect(await queueDepth()).toBe(0);
    } finally {
      await sql.unsafe(`drop trigger refuse_poison on net._http_response; drop function public.refuse_poison()`);
    }
  });
});
