// The Worker's PostgreSQL client in workerd: prepared statements by default (one round trip per
// statement), none with ?prepare=false (for poolers that can't keep them).
import { beforeAll, expect, it } from 'vitest';
import { connectDatabase } from '../../src/worker/db.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await freshDatabase();
});

/** Named prepared statements on one session after the same parameterized query ran twice. */
async function preparedAfterTwoRuns(url: string): Promise<number> {
  const sql = connectDatabase(url);
  // A transaction keeps every statement on one session.
  return sql.begin(async (tx) => {
    for (let i = 0; i < 2; i++) {
      const [row] = await tx<{ n: number }[]>`select ${i}::int + 1 as n`;
      expect(row?.n).toBe(i + 1);
    }
    const [count] = await tx<{ n: number }[]>`select count(*)::int as n from pg_prepared_statements`;
    return count!.n;
  });
}

it('prepares statements by default', async () => {
  expect(await preparedAfterTwoRuns(db.url)).toBeGreaterThanOrEqual(1);
});

it('?prepare=false in the URL turns prepared statements off', async () => {
  const url = new URL(db.url);
  url.searchParams.set('prepare', 'false');
  expect(await preparedAfterTwoRuns(url.toString())).toBe(0);
});

it('results stay dense after a statement failed part-way through its rows (postgres.js#1181, guarded)', async () => {
  // Statements one after another reuse the idle connection, the one the failed statement left stale.
  const sql = connectDatabase(db.url);
  for (let round = 0; round < 2; round++) {
    await expect(sql`select i, 1 / (5 - i) as boom from generate_series(1, 10) i`).rejects.toThrow(/division by zero/);
    const rows = await sql<{ x: number }[]>`select 42 as x`;
    expect([...rows]).toEqual([{ x: 42 }]);
  }
});
