// postgres.js bug porsager/postgres#1181 (open in 3.4.9): after a statement fails part-way
// through its rows, the next statement on that connection resolves with leading empty slots.
// The first test proves the bug is still in the driver we ship (so the guard is still needed);
// the others prove guardResults hands back dense, correct results on the same connection.
import postgres from 'postgres';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { claim } from '../../src/core/claim.ts';
import { compactResult, guardResults } from '../../src/core/result-guard.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
const clients: postgres.Sql[] = [];
beforeAll(async () => {
  db = await freshDatabase();
});
afterAll(async () => {
  for (const sql of clients) await sql.end({ timeout: 5 });
});

function oneConnection(): postgres.Sql {
  const sql = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
  clients.push(sql);
  return sql;
}

/** Fails after sending 4 rows (1/(5-i) divides by zero at i = 5). */
async function failAfterRows(sql: postgres.Sql): Promise<void> {
  await expect(sql`select i, 1 / (5 - i) as boom from generate_series(1, 10) i`).rejects.toThrow(/division by zero/);
}

it('the bug: unguarded postgres.js returns leading empty slots after a statement failed mid-rows', async () => {
  const sql = oneConnection();
  await failAfterRows(sql);
  const rows = await sql<{ x: number }[]>`select 42 as x`;
  // If this starts failing, the driver is fixed: take the release and drop result-guard.ts.
  expect(rows.length).toBe(5);
  expect(0 in rows).toBe(false);
  expect(rows[4]).toEqual({ x: 42 });
});

it('guardResults: the next statement on the same connection is dense and correct', async () => {
  const sql = guardResults(oneConnection());
  await failAfterRows(sql);
  const rows = await sql<{ x: number }[]>`select 42 as x`;
  expect([...rows]).toEqual([{ x: 42 }]);
  expect(rows.count).toBe(1);
  // Several rows, unsafe() and a fragment too.
  await failAfterRows(sql);
  const many = await sql.unsafe<{ n: number }[]>('select n from generate_series(1, 3) n');
  expect([...many]).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
  await failAfterRows(sql);
  const filtered = await sql<{ n: number }[]>`select n from generate_series(1, 3) n ${sql`where n > 1`}`;
  expect([...filtered]).toEqual([{ n: 2 }, { n: 3 }]);
});

it('a claim after a failed statement returns real requests (the drain crashed on undefined rows)', async () => {
  const sql = guardResults(oneConnection());
  await db.sql`select net.http_get('http://127.0.0.1:9/driver-guard')`;
  await failAfterRows(sql);
  const claimed = await claim(sql, 'driver-guard-test', 10, { leaseMarginMs: 1000, maxTimeoutMs: null });
  expect(claimed.length).toBe(1);
  expect(claimed[0]!.url).toBe('http://127.0.0.1:9/driver-guard');
});

it('compactResult: leading holes go, other arrays are untouched', () => {
  const sparse: unknown[] = [];
  sparse[3] = 'a';
  sparse[4] = 'b';
  compactResult(sparse);
  expect(sparse).toEqual(['a', 'b']);
  const dense = [1, 2];
  compactResult(dense);
  expect(dense).toEqual([1, 2]);
  const multi: unknown[][] = [[], []];
  multi[1]![2] = 'z';
  compactResult(multi);
  expect(multi).toEqual([[], ['z']]);
});
