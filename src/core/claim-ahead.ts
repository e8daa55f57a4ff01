// Claim-ahead: how many rows a drain holds claimed beyond its free slots, so a freed slot starts
// its next request without waiting for a claim round trip (and claims come in bigger, cheaper
// batches). A pure function of the drain's figures; time comes in as numbers.

/**
 * Rows claimed ahead of free slots: what the drain starts in this long at its completion rate,
 * at most twice batch_size. A claim under load takes 5-30 ms (up to ~150 ms), so the rows
 * waiting must outlast it (with 4 × concurrency ahead, 15% of freed slots found nothing to
 * start); by time rather than by `concurrency`, because a drain with few fetch slots and fast
 * targets starts thousands per second, and one with slow targets should not hold rows other
 * drains could send.
 */
export const AHEAD_MS = 250;
const MIN_AHEAD_WAIT_MS = 1000;

export interface AheadInput {
  now: number;
  /** When the drain started, and when its first request completed (0: none yet). */
  started: number;
  firstDoneAt: number;
  completed: number;
  concurrency: number;
  fetchSlots: number;
  batchSize: number;
  budgetMs: number;
  leaseMarginMs: number;
  /** All fetch slots but one stuck: the rate is the last slot's, one per median header wait. */
  mostlyStuck: boolean;
  medianWaitMs: number;
}

/** Rows to hold claimed ahead (0 until there is a rate to go by, so a short budget never claims rows it won't start). */
export function aheadLimit(d: AheadInput): number {
  // A rate to go by: as many completions as requests may be in flight (or wait for headers).
  if (d.completed < Math.min(d.concurrency, d.fetchSlots) || d.now <= d.firstDoneAt) return 0;
  // Rows may wait up to half the lease margin (see fill in drain.ts): with a tiny margin, don't wait at all.
  if (d.leaseMarginMs < 2 * MIN_AHEAD_WAIT_MS) return 0;
  // Measured from the first completion once `concurrency` have completed; before that from the
  // start (lower, never wild: two completions a millisecond apart made a rate that claimed the
  // whole queue, leaving other drains nothing).
  const since = d.completed < d.concurrency ? d.started : d.firstDoneAt;
  const perMs = d.mostlyStuck ? 1 / Math.max(1, d.medianWaitMs) : d.completed / Math.max(1, d.now - since);
  const remaining = d.budgetMs - (d.now - d.started);
  return Math.max(0, Math.min(2 * d.batchSize, Math.floor(perMs * Math.min(AHEAD_MS, remaining))));
}
