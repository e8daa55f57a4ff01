// What a Drain takes beyond DrainOptions: its collaborators and test hooks (drain.ts).
import type { ClaimedRequest } from './claim.ts';
import type { Clock } from './clock.ts';
import type { Outcome } from './types.ts';

export interface DrainExtras {
  /** Lease owner; default crypto.randomUUID(). */
  owner?: string;
  /** Write net._heartbeat(stats) at the end (best effort). Default true. */
  heartbeat?: boolean;
  /**
   * Time kept free before hardLimitMs to record a request's outcome: a request is claimed only
   * if now + its timeout + this fits before the hard limit. Default 5000.
   */
  recordSlackMs?: number;
  /** Retries of a failing claim/record before the drain gives up on the database. Default 4. */
  retries?: number;
  /** First retry delay, doubled each time. Default 200 ms. */
  retryBaseMs?: number;
  /**
   * Before stopping on an empty queue, ask when the next delayed request or HTTP retry comes due
   * (net._next_due_ms) and, if that fits the budget, wait for it instead of leaving it to the
   * next cron. Default true.
   */
  waitForDue?: boolean;
  /**
   * Once the queue is empty, stay this long after the last work (within the budget) so that a
   * poke finds this drain running: its connection and prepared statements are warm, where a new
   * drain would first connect and read settings. Default 0 (stop at once).
   */
  lingerMs?: number;
  /** Response bytes held for recording (buffered or being written) above which no request starts. Default BUFFER_LIMIT_BYTES. */
  bufferLimitBytes?: number;
  /**
   * Response bytes held by all drains of this isolate or process (memory.ts) at which this drain
   * starts no request. Default concurrency × maxResponseBytes.
   */
  memoryLimitBytes?: number;
  /**
   * Another way to send requests (a Worker's executors), for the rows this drain's own fetch
   * slots would not start soon (see spill.ts). Without it every row goes through `fetchFn`.
   */
  runner?: Runner;
  /** Time for every decision (default the system clock; tests pass a fake one). */
  clock?: Clock;
}

/** Sends rows some other way than the drain's own fetch slots (a Worker's executors). */
export interface Runner {
  /** Rows it could start now (for claiming; a row may still be refused by tryRun). */
  room(): number;
  /**
   * Starts the row now: its outcome, or null when it was not sent (the row is given back to
   * the queue). Null at once instead of a promise when it can't start this row now (the drain
   * keeps the row).
   */
  tryRun(request: ClaimedRequest): Promise<Outcome | null> | null;
  /** Requests the drain may still send itself (a Worker: subrequests the runner doesn't need). */
  localLeft(): number;
  /**
   * Of the drain's fetch slots, those it always leaves free for the runner (a Worker: one,
   * through which executor lanes open).
   */
  readonly reservedSlots: number;
}
