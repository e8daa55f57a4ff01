// The drain's recording side: finished outcomes wait in the RecordBuffer and are recorded in bulk,
// one record statement at a time, when the flush time comes (record-buffer.ts decides when). A
// failing record is retried with backoff; an outcome the database refuses is isolated and stored
// as an error, so it never blocks the others.
import type { Drain } from './drain.ts';
import { backoff } from './drain-claim.ts';
import { errorOutcome } from './error-outcome.ts';
import { messageOf } from './errors.ts';
import { record } from './record.ts';
import { flushDelay as flushDelayOf, flushDue as flushDueOf } from './record-buffer.ts';
import type { Outcome } from './types.ts';

/** The drain's recording state (the outcomes themselves wait in Drain.buffer). */
export class RecordState {
  /** A record statement is running (one at a time). */
  inFlight = false;
  failures = 0;
  /** After a failed record, the next waits until then (backoff). */
  retryAt = 0;
  /** Outcomes recorded so far. */
  recorded = 0;
}

/**
 * SQLSTATE classes where retrying the same data can't help (data exception, constraint, limits,
 * and a row that makes a function raise (P0) or the server fail internally (XX, e.g. "invalid
 * memory alloc request size")): the chunk is then recorded row by row, isolating the bad row.
 */
export function isDataError(error: unknown): boolean {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^(22|23|54|P0|XX)[0-9A-Z]{3}$/.test(code);
}

export function flushDue(d: Drain, now: number): boolean {
  return flushDueOf(d.buffer, {
    now,
    recordInFlight: d.recording.inFlight,
    retryAt: d.recording.retryAt,
    databaseDown: d.databaseDown,
    delayMs: flushDelay(d, now),
    idle: d.inFlight === 0 && d.ready.length === 0 && !d.claiming.inFlight,
  });
}

/** How long the oldest buffered outcome may wait (see flushDelay in record-buffer.ts). */
export function flushDelay(d: Drain, now: number): number {
  const memoryFull = d.memoryFull();
  return flushDelayOf(d.opts.flushMs, memoryFull, !memoryFull && d.ready.length > 0 && d.freeSlots(now) === 0);
}

export function startRecord(d: Drain): void {
  const { chunk, bytes } = d.buffer.take(d.clock.now());
  d.recording.inFlight = true;
  d.bytes.recording = bytes;
  recordChunk(d, chunk)
    .catch((error: unknown) => {
      d.recording.failures++;
      d.lastError = `record: ${messageOf(error)}`;
      const at = d.clock.now() + backoff(d.retryBaseMs, d.recording.failures);
      if (d.databaseDown || d.recording.failures > d.retries || at - d.started >= d.opts.hardLimitMs - d.slackMs) {
        // Give up: these rows stay leased and are claimed again after the lease expires.
        d.databaseDown = true;
      } else {
        d.buffer.putBack(chunk);
        d.recording.retryAt = at;
      }
    })
    .finally(() => {
      d.recording.inFlight = false;
      d.bytes.recording = 0;
      d.syncHeld();
      d.signal();
    });
}

async function recordChunk(d: Drain, chunk: Outcome[]): Promise<void> {
  try {
    d.recording.recorded += await record(d.sql, d.owner, chunk);
    d.recording.failures = 0;
    return;
  } catch (error) {
    if (!isDataError(error)) throw error;
    d.lastError = `record: ${messageOf(error)}`;
  }
  // One outcome the database refuses (e.g. a value it can't store) must not block the others:
  // record them one by one and store an error in place of any that still fail.
  for (const outcome of chunk) {
    try {
      d.recording.recorded += await record(d.sql, d.owner, [outcome]);
    } catch (error) {
      if (!isDataError(error)) throw error;
      const replacement = errorOutcome(outcome.id, `could not store the response: ${messageOf(error)}`);
      d.recording.recorded += await record(d.sql, d.owner, [replacement]);
      if (outcome.error_msg === null) d.errors++;
    }
  }
  d.recording.failures = 0;
}
