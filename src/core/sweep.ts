// Sweep: delete responses older than the TTL in bounded batches, so one run never holds a huge
// delete (long locks, WAL bursts) and always ends within its time budget.
import type postgres from 'postgres';

export interface SweepOptions {
  /** Rows deleted per statement. */
  batch?: number;
  /** Stop starting new batches after this many ms. */
  budgetMs?: number;
}

export async function sweep(sql: postgres.Sql, ttl: string, opts: SweepOptions = {}): Promise<number> {
  const batch = Math.max(1, Math.floor(opts.batch ?? 10_000));
  const budgetMs = opts.budgetMs ?? 20_000;
  const started = Date.now();
  let total = 0;
  for (;;) {
    const rows = await sql<{ n: number | string | null }[]>`select net._sweep(${ttl}::interval, ${batch}) as n`;
    const n = Number(rows[0]?.n ?? 0);
    total += n;
    if (n < batch || Date.now() - started >= budgetMs) return total;
  }
}
