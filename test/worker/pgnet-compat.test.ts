// Code written for pg_net, run against pg-net-edge inside workerd (issue 15): pg_net's documented
// calls, queued with the real SQL API, drained by the core with workerd's fetch and the Worker's
// TCP probe, checked for pg_net's observable results in net._http_response.
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { drain } from '../../src/core/drain.ts';
import { canConnect, probeWithBudget } from '../../src/worker/probe.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { options, target } from './helpers.ts';

const closedPort = inject('closedPort');
const ipv6OnlyPort = inject('ipv6OnlyPort');

let db: TestDatabase;
beforeAll(async () => {
  db = await freshDatabase();
});

interface Response {
  status_code: number | null;
  content: string | null;
  error_msg: string | null;
  error_kind: string | null;
  content_type_header: string | null;
  headers_all: [string, string][] | null;
}

/** net.http_get(url), drained as the Worker drains it, and its row as pg_net code reads it. */
async function getAndDrain(url: string): Promise<Response> {
  const [queued] = await db.sql<{ id: string }[]>`select net.http_get(${url})::text as id`;
  await drain(db.sql, fetch, options({ canConnect }));
  const [row] = await db.sql<Response[]>`
    select status_code, content, error_msg, error_kind, headers->>'Content-Type' as content_type_header, headers_all
    from net._http_response where id = ${queued!.id}::bigint`;
  if (!row) throw new Error(`no response for ${url}`);
  return row;
}

describe('response headers as pg_net stores them', () => {
  it("headers->>'Content-Type' finds the value (names in their usual capitalisation)", async () => {
    const r = await getAndDrain(`${target}/headers`);
    expect(r.status_code).toBe(200);
    expect(r.content_type_header).toBe('text/plain; charset=utf-8');
    const [row] = await db.sql<{ custom: string; cookie: string }[]>`
      select headers->>'X-Custom' as custom, headers->>'Set-Cookie' as cookie
      from net._http_response where status_code = 200 and headers ? 'X-Custom' limit 1`;
    expect(row).toEqual({ custom: 'custom-value', cookie: 'a=1; Path=/, b=2; Path=/' });
    // headers_all keeps the pairs, in the same capitalisation.
    expect(r.headers_all).toContainEqual(['Set-Cookie', 'a=1; Path=/']);
    expect(r.headers_all).toContainEqual(['Content-Type', 'text/plain; charset=utf-8']);
  });
});

describe("pg_net's error texts first in error_msg, and error_kind", () => {
  it.each([
    ['a refused connection', () => `http://127.0.0.1:${closedPort}/`, "Couldn't connect to server", 'connect'],
    ['a server that closes without answering', () => `${target}/drop`, 'Server returned nothing (no headers, no data)', 'no_response'],
    ['a reply with broken headers', () => `${target}/malformed`, 'Weird server reply', 'malformed'],
  ])('%s', async (_label, url, text, kind) => {
    const r = await getAndDrain(url());
    expect(r.status_code).toBeNull();
    expect(r.error_msg?.startsWith(`${text}: `)).toBe(true);
    expect(r.error_kind).toBe(kind);
    // pg_net code finds failures by error_msg: so can this.
    const [found] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from net._http_response where error_msg like ${`${text}%`}`;
    expect(found!.n).toBeGreaterThanOrEqual(1);
  });

  it('a timeout keeps pg_net\'s "Timeout of <N> ms reached" and timed_out', async () => {
    const [queued] = await db.sql<{ id: string }[]>`
      select net.http_get(${`${target}/delay/3000`}, timeout_milliseconds := 100)::text as id`;
    await drain(db.sql, fetch, options({ canConnect }));
    const [row] = await db.sql<{ timed_out: boolean; error_msg: string; error_kind: string }[]>`
      select timed_out, error_msg, error_kind from net._http_response where id = ${queued!.id}::bigint`;
    expect(row).toEqual({ timed_out: true, error_msg: 'Timeout of 100 ms reached', error_kind: 'timeout' });
  });

  it('a success has no error_kind', async () => {
    const r = await getAndDrain(`${target}/status/200`);
    expect(r).toMatchObject({ status_code: 200, error_msg: null, error_kind: null });
  });
});

describe('lenient like curl, where workerd allows', () => {
  it('http://localhost:<port> with the server only on ::1 is reached (localhost\'s other address is tried)', async () => {
    const r = await getAndDrain(`http://localhost:${ipv6OnlyPort}/`);
    expect(r).toMatchObject({ status_code: 200, content: 'ipv6 only', error_msg: null });
  });

  it('a header name with spaces: workerd refuses the reply (pg_net takes it; see the differences table)', async () => {
    const r = await getAndDrain(`${target}/header-spaces`);
    // workerd's HTTP parser has no lenient mode: the reply is a malformed one here.
    expect(r.status_code).toBeNull();
    expect(r.error_kind).toBe('malformed');
    expect(r.error_msg?.startsWith('Weird server reply: ')).toBe(true);
  });
});

describe('the TCP probe', () => {
  it('tells a listening port from a closed one', async () => {
    const port = Number(new URL(target).port);
    expect(await canConnect('127.0.0.1', port)).toBe(true);
    expect(await canConnect('127.0.0.1', closedPort)).toBe(false);
  });

  it('a drain probes at most its budget, once per host and port', async () => {
    const probe = probeWithBudget(1);
    expect(await probe('127.0.0.1', closedPort)).toBe(false);
    // The same endpoint again: the answer stands, no probe spent.
    expect(await probe('127.0.0.1', closedPort)).toBe(false);
    // Another endpoint: the budget is spent, so the failure stays as workerd reported it.
    await expect(probe('127.0.0.1', Number(new URL(target).port))).rejects.toThrow(/budget/);
  });
});
