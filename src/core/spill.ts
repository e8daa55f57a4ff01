// Spill: in a drain with a runner (a Worker's executors), which ready rows stay for the drain's
// own fetch slots and which are handed over. A row goes to the runner only when the drain's own
// slots would not start it within the claim-ahead horizon (AHEAD_MS): against a target answering
// at once every row stays local (no encoding, no lanes), against slow ones the line beyond what
// the slots start in AHEAD_MS spills. A pure function; time comes in as numbers.
import { AHEAD_MS } from './claim-ahead.ts';

export interface HorizonInput {
  /** The drain's own header-wait slots. */
  fetchSlots: number;
  /**
   * The shortest of recent times to response headers, ms; null: none measured yet. Not the
   * median: with the slots always full, waits also grow with the isolate's load (a busy event
   * loop delays every response), and a row the target answers at once must not look slow.
   */
  waitMs: number | null;
  /** Every fetch slot held by a request older than the stuck threshold (FetchSlots.stuck). */
  stuck: boolean;
  /** All fetch slots but one stuck: one slot starts rows (FetchSlots.mostlyStuck). */
  mostlyStuck: boolean;
  /** Requests the drain may still send itself (a Worker invocation's subrequests). */
  localLeft: number;
}

/**
 * Ready rows the drain's own slots start within AHEAD_MS: each slot one per header wait (the rate
 * claim-ahead also assumes when mostly stuck); none while every slot is stuck. Before
 * any header wait is measured the rows stay local: a target that answers at once would
 * otherwise open lanes for its first claim.
 */
export function localHorizon(d: HorizonInput): number {
  const left = Math.max(0, d.localLeft);
  if (d.stuck) return 0;
  if (d.waitMs === null) return left;
  const slots = d.mostlyStuck ? 1 : d.fetchSlots;
  // Times are whole milliseconds (and workerd's clock moves only on I/O): a 0 ms wait counts as 1.
  return Math.min(left, Math.floor((slots * AHEAD_MS) / Math.max(1, d.waitMs)));
}
