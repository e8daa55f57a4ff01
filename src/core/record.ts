// Record: store a batch of outcomes in ONE round trip. net._record deletes only the queue rows
// this owner still leases and inserts a response for exactly those, so a retry after an
// ambiguous failure (statement committed, reply lost) can never create a second response row.
import type postgres from 'postgres';
import type { Outcome } from './types.ts';

export async function record(sql: postgres.Sql, owner: string, outcomes: Outcome[]): Promise<number> {
  if (outcomes.length === 0) return 0;
  // JSON text cast to jsonb: independent of postgres.js type fetching (fetch_types: false).
  const rows = await sql<{ n: number | string | null }[]>`
    select net._record(${owner}, ${JSON.stringify(outcomes)}::text::jsonb) as n`;
  return Number(rows[0]?.n ?? 0);
}
