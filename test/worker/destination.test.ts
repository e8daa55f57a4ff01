// The destination policy inside workerd, end to end and with loopback only: a database that
// denies loopback (pg_net.denied_destinations) refuses every spelling of 127.0.0.1 at call time
// and in the drain, redirects to denied addresses stop before the hop is sent, /cdn-cgi/ paths
// are never sent, and 0.0.0.0 is refused by default. The target's hit counters prove nothing
// arrived.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { destinationPolicy, DEFAULT_POLICY } from '../../src/core/destination.ts';
import { drain } from '../../src/core/drain.ts';
import { execute } from '../../src/core/execute.ts';
import { loadSettings } from '../../src/core/settings.ts';
import type { ExecuteOptions } from '../../src/core/types.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { queuedRequest } from '../support/requests.ts';
import { hits, options, target, uniquePrefix } from './helpers.ts';

const port = new URL(inject('targetUrl')).port;
/** Every spelling of 127.0.0.1 a URL parser accepts. */
const SPELLINGS = ['127.1', '2130706433', '0x7f000001', '0177.0.0.1', '[::ffff:127.0.0.1]', '127.0.0.1'];
const opts = (destinations = DEFAULT_POLICY): ExecuteOptions => ({ maxResponseBytes: 100_000, userAgent: 'pne-test', destinations });

describe('execute under a policy (workerd fetch)', () => {
  const noLoopback = destinationPolicy('127.0.0.0/8', null);

  it('every spelling of a denied address: an error outcome, nothing sent', async () => {
    const prefix = uniquePrefix('spelling');
    for (const host of SPELLINGS) {
      const outcome = await execute(queuedRequest(target, `http://${host}:${port}${prefix}/x`), fetch, opts(noLoopback));
      expect(outcome).toMatchObject({ status_code: null });
      expect(outcome.error_msg).toMatch(/^refused destination: .* is denied \(127\.0\.0\.0\/8, pg_net\.denied_destinations\)$/);
    }
    // Allowed by default, so the same URL does arrive: the counter works.
    expect(await hits(prefix)).toEqual({});
    expect((await execute(queuedRequest(target, `${prefix}/x`), fetch, opts())).status_code).toBe(200);
    expect(await hits(prefix)).toEqual({ [`${prefix}/x`]: 1 });
  });

  it('0.0.0.0 is refused by default (it reaches the local host)', async () => {
    const prefix = uniquePrefix('zero');
    const outcome = await execute(queuedRequest(target, `http://0.0.0.0:${port}${prefix}/x`), fetch, opts());
    expect(outcome.error_msg).toMatch(/^refused destination: 0\.0\.0\.0 is denied \(0\.0\.0\.0\/8, built-in\)$/);
    expect(await hits(prefix)).toEqual({});
  });

  it('a redirect to a denied address (any spelling) stops before the hop is sent', async () => {
    const prefix = uniquePrefix('redirect');
    const deny2 = destinationPolicy('127.0.0.2', null);
    for (const [policy, to] of [
      [deny2, `http://0x7f000002:${port}${prefix}/a`],
      [DEFAULT_POLICY, `http://0.0.0.0:${port}${prefix}/b`],
      [deny2, `http://[::ffff:127.0.0.2]:${port}${prefix}/c`],
    ] as const) {
      const outcome = await execute(queuedRequest(target, `/redirect-to?url=${encodeURIComponent(to)}`), fetch, opts(policy));
      expect(outcome.error_msg).toMatch(/^refused destination: /);
    }
    expect(await hits(prefix)).toEqual({});
  });

  it('/cdn-cgi/ paths are never sent, directly or by a redirect', async () => {
    const prefix = uniquePrefix('cdncgi');
    const direct = await execute(queuedRequest(target, `${prefix}/cdn-cgi/handler/scheduled`), fetch, opts());
    expect(direct.error_msg).toMatch(/is a \/cdn-cgi\/ control path$/);
    const via = await execute(queuedRequest(target, `/redirect-to?url=${encodeURIComponent(`${prefix}/cdn-cgi/x`)}`), fetch, opts());
    expect(via.error_msg).toMatch(/is a \/cdn-cgi\/ control path$/);
    expect(await hits(prefix)).toEqual({});
  });

  it('a redirect to a non-http(s) scheme is an invalid redirect', async () => {
    const outcome = await execute(queuedRequest(target, `/redirect-to?url=${encodeURIComponent('file:///etc/passwd')}`), fetch, opts());
    expect(outcome.error_msg).toBe('invalid redirect: "file:///etc/passwd" is not http or https');
  });

  it('allowed redirects still work: a 303 after a POST becomes a GET without the body', async () => {
    const outcome = await execute(
      queuedRequest(target, `/redirect-to?url=${encodeURIComponent('/echo/after')}`, {
        method: 'POST',
        body: new TextEncoder().encode('payload'),
        headers: { 'content-type': 'text/plain', authorization: 'Bearer same-origin' },
      }),
      fetch,
      opts(),
    );
    const echo = JSON.parse(outcome.content ?? '{}') as { method: string; body_text: string; headers: Record<string, string> };
    // 302 after POST → GET, body and its headers dropped; same origin keeps Authorization.
    expect(echo).toMatchObject({ method: 'GET', body_text: '' });
    expect(echo.headers['content-type']).toBeUndefined();
    expect(echo.headers.authorization).toBe('Bearer same-origin');
  });
});

describe('the database setting, at call time and in the drain', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await freshDatabase();
    await db.sql.unsafe(`alter database ${db.name} set pg_net.denied_destinations = '127.0.0.0/8, ::1'`);
  });

  it('net.http_get refuses every spelling with 42501 and queues nothing', async () => {
    for (const host of SPELLINGS) {
      const error = await db.sql`select net.http_get(${`http://${host}:${port}/hits/x`})`.catch((e: unknown) => e);
      expect(error).toMatchObject({ code: '42501' });
      expect(String((error as Error).message)).toMatch(/^refused destination: .* is denied \(127\.0\.0\.0\/8, pg_net\.denied_destinations\)$/);
    }
    const error = await db.sql`select net.http_get(${`http://0.0.0.0:${port}/x`})`.catch((e: unknown) => e);
    expect(error).toMatchObject({ code: '42501', message: 'refused destination: 0.0.0.0 is denied (0.0.0.0/8, built-in)' });
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
    expect(row!.n).toBe(0);
  });

  it("a session's SET can't loosen the policy (only the owner's catalog settings count)", async () => {
    const error = await db.sql
      .begin(async (tx) => {
        await tx`set local pg_net.denied_destinations = ''`;
        return tx`select net.http_get(${`http://127.0.0.1:${port}/hits/x`})`;
      })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: '42501' });
  });

  it('a row queued before the setting (or by hand) ends with an error row in the drain, never sent', async () => {
    const prefix = uniquePrefix('drainrefused');
    // Queued "before the setting": the call-time trigger would refuse it now, so insert it with
    // triggers off, as a row from an older install or a hand-made one would be.
    const [queued] = await db.sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      return tx<{ id: string }[]>`
        insert into net.http_request_queue (method, url, headers, timeout_milliseconds)
        values ('GET', ${`${target}${prefix}/x`}, '{}', 5000) returning id::text as id`;
    });
    const settings = await loadSettings(db.sql, {});
    const stats = await drain(db.sql, fetch, options({ destinations: settings.destinations }));
    expect(stats).toMatchObject({ claimed: 1, errors: 1 });
    const [response] = await db.sql<{ error_msg: string; status_code: number | null }[]>`
      select error_msg, status_code from net._http_response where id = ${queued!.id}`;
    expect(response).toEqual({ status_code: null, error_msg: expect.stringMatching(/^refused destination: 127\.0\.0\.1 is denied/) as unknown });
    expect(await hits(prefix)).toEqual({});
  });
});
