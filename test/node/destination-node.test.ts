// The destination policy in Node: the Node drain also checks the addresses a host name resolves
// to (a name pointing at a denied address is refused), and a redirect to another origin drops
// Authorization and Cookie. Loopback only: a second loopback target is the "other origin".
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { destinationPolicy } from '../../src/core/destination.ts';
import { execute } from '../../src/core/execute.ts';
import { drainOnce } from '../../src/node/drain.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { queuedRequest } from '../support/requests.ts';
import { startTarget, type Target } from '../support/target.ts';

const target = inject('targetUrl');
const port = new URL(target).port;

async function hits(prefix: string): Promise<Record<string, number>> {
  return (await (await fetch(`${target}/__hits?prefix=${encodeURIComponent(prefix)}`)).json()) as Record<string, number>;
}
const unique = (label: string) => `/hits/${label}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

describe('redirects across origins', () => {
  let other: Target;
  beforeAll(async () => {
    other = await startTarget();
  });
  afterAll(async () => {
    await other.close();
  });

  it('Authorization and Cookie are dropped on a cross-origin hop, kept on a same-origin one', async () => {
    const headers = { authorization: 'Bearer secret-token', cookie: 'session=1', 'x-keep': 'yes' };
    const opts = { maxResponseBytes: 100_000, userAgent: 'pne-test' };
    const cross = await execute(queuedRequest(target, `/redirect-to?url=${encodeURIComponent(`${other.url}/echo/x`)}`, { headers }), fetch, opts);
    const crossEcho = JSON.parse(cross.content ?? '{}') as { headers: Record<string, string> };
    expect(crossEcho.headers).toMatchObject({ 'x-keep': 'yes' });
    expect(crossEcho.headers.authorization).toBeUndefined();
    expect(crossEcho.headers.cookie).toBeUndefined();
    const same = await execute(queuedRequest(target, `/redirect-to?url=${encodeURIComponent('/echo/y')}`, { headers }), fetch, opts);
    expect((JSON.parse(same.content ?? '{}') as { headers: Record<string, string> }).headers).toMatchObject(headers);
  });
});

describe('the Node drain checks resolved addresses', () => {
  let db: TestDatabase;
  const clients: postgres.Sql[] = [];
  beforeAll(async () => {
    db = await freshDatabase();
    clients.push(db.sql);
  });
  afterAll(async () => {
    for (const sql of clients) await sql.end({ timeout: 5 });
  });

  it('execute with resolveHost: a name resolving to a denied address is refused, nothing sent', async () => {
    const prefix = unique('resolved');
    const policy = destinationPolicy('127.0.0.0/8, ::1', null);
    const outcome = await execute(queuedRequest(target, `http://localhost:${port}${prefix}/x`), fetch, {
      maxResponseBytes: 100_000,
      userAgent: 'pne-test',
      destinations: policy,
      resolveHost: () => Promise.resolve(['127.0.0.1']),
    });
    expect(outcome.error_msg).toBe('refused destination: localhost resolves to 127.0.0.1 is denied (127.0.0.0/8, pg_net.denied_destinations)');
    expect(await hits(prefix)).toEqual({});
  });

  it('drainOnce reads the database setting and looks names up (localhost → loopback, denied)', async () => {
    const prefix = unique('drainonce');
    // The name is allowed at call time (net._check_destination can't resolve names)...
    await db.sql`select net.http_get(${`http://localhost:${port}${prefix}/x`})`;
    // ...then loopback is denied, and the drain resolves localhost before sending.
    await db.sql.unsafe(`alter database ${db.name} set pg_net.denied_destinations = '127.0.0.0/8, ::1'`);
    const stats = await drainOnce(db.sql, {});
    expect(stats).toMatchObject({ claimed: 1, errors: 1 });
    const [row] = await db.sql<{ error_msg: string }[]>`select error_msg from net._http_response`;
    expect(row!.error_msg).toMatch(/^refused destination: localhost resolves to (127\.0\.0\.1|::1) is denied/);
    expect(await hits(prefix)).toEqual({});
  });
});
