// The worker's last sign of life: a drain's stats in net._worker_status.
import type postgres from 'postgres';
import { messageOf } from './errors.ts';
import type { DrainStats } from './types.ts';

/** Records a drain's stats as the worker's last sign of life (net._worker_status); best effort. */
export async function writeHeartbeat(sql: postgres.Sql, stats: DrainStats): Promise<void> {
  try {
    await sql`select net._heartbeat(${JSON.stringify(stats)}::text::jsonb)`;
  } catch (error) {
    stats.last_error ??= `heartbeat: ${messageOf(error)}`;
  }
}
