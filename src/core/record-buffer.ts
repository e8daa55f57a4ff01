// The record batcher's buffer: finished outcomes wait here to be recorded in bulk (one record
// statement at a time, see drain-record.ts), so a slow request never holds back the recording of fast
// ones. When to flush is a pure decision (flushDue), tested with plain numbers for time.
import { HEADER_BYTES, type Outcome } from './types.ts';

/** Flush when this many outcomes are buffered… */
export const FLUSH_COUNT = 300;
/** …or this much content is buffered… (or flushMs after the oldest unflushed one). */
export const FLUSH_BYTES = 4 * 1024 * 1024;
/**
 * While the drain runs flat out (no free slot, rows waiting for one) outcomes wait up to this
 * long (or FLUSH_COUNT) rather than flushMs: every record statement costs the isolate time that
 * its fetch slots then wait through, so fewer, bigger records send more. 5 fetch slots on a slow
 * VM, N = 20,000: ~1,300 statements at 5 ms and 100 → ~420 at 50 ms → ~260 at 150 ms and 300;
 * 1,550 → 1,850 → 2,000 requests/s (57% → 63% → 68% of the 5-lane bare loop).
 */
export const FLUSH_BUSY_MS = 150;
/** Largest single record statement. */
const RECORD_MAX_COUNT = 1000;
const RECORD_MAX_BYTES = 8 * 1024 * 1024;

/** Bytes an outcome holds until recorded (content, headers twice, a little overhead). */
export function outcomeSize(outcome: Outcome): number {
  let size = 200 + (outcome.content?.length ?? 0) + (outcome.content_base64?.length ?? 0);
  // Headers are stored twice (the object and headers_all); execute counted them once already.
  const counted = outcome[HEADER_BYTES];
  if (counted !== undefined) return size + 2 * counted;
  if (outcome.headers) for (const [k, v] of Object.entries(outcome.headers)) size += k.length + v.length;
  if (outcome.headers_all) for (const [k, v] of outcome.headers_all) size += k.length + v.length;
  return size;
}

export class RecordBuffer {
  private items: Outcome[] = [];
  /** outcomeSize of each, computed once (Object.entries per outcome adds up). */
  private sizes: number[] = [];
  bytes = 0;
  /** When the oldest buffered outcome arrived (0: due at once, e.g. put back after a failure). */
  oldestAt = 0;

  get length(): number {
    return this.items.length;
  }

  push(outcome: Outcome, now: number): void {
    if (this.items.length === 0) this.oldestAt = now;
    const size = outcomeSize(outcome);
    this.items.push(outcome);
    this.sizes.push(size);
    this.bytes += size;
  }

  /** Enough for a statement of its own (FLUSH_COUNT or FLUSH_BYTES). */
  full(): boolean {
    return this.items.length >= FLUSH_COUNT || this.bytes >= FLUSH_BYTES;
  }

  /** The next record statement's outcomes: at most RECORD_MAX_COUNT / RECORD_MAX_BYTES (at least one). */
  take(now: number): { chunk: Outcome[]; bytes: number } {
    let count = 0;
    let bytes = 0;
    while (count < this.items.length && count < RECORD_MAX_COUNT) {
      const size = this.sizes[count]!;
      if (count > 0 && bytes + size > RECORD_MAX_BYTES) break;
      bytes += size;
      count++;
    }
    const chunk = this.items.splice(0, count);
    this.sizes.splice(0, count);
    this.bytes -= bytes;
    if (this.items.length > 0) this.oldestAt = now;
    return { chunk, bytes };
  }

  /** A chunk whose record failed, back at the front, due at once once its retry time comes. */
  putBack(chunk: Outcome[]): void {
    const sizes = chunk.map(outcomeSize);
    this.items.unshift(...chunk);
    this.sizes.unshift(...sizes);
    for (const size of sizes) this.bytes += size;
    this.oldestAt = 0;
  }
}

export interface FlushState {
  now: number;
  recordInFlight: boolean;
  /** No record before this (a failed one's backoff). */
  retryAt: number;
  databaseDown: boolean;
  /** How long the oldest outcome may wait (flushDelay). */
  delayMs: number;
  /** Nothing in flight, nothing waiting to start, no claim running: nothing else is coming soon. */
  idle: boolean;
}

/** Pure: should a record statement start now? */
export function flushDue(buffer: Pick<RecordBuffer, 'length' | 'oldestAt' | 'full'>, s: FlushState): boolean {
  if (s.recordInFlight || buffer.length === 0 || s.now < s.retryAt) return false;
  // Once the database has failed us, each record gets one attempt as soon as possible.
  if (s.databaseDown) return true;
  if (buffer.full()) return true;
  if (s.now - buffer.oldestAt >= s.delayMs) return true;
  // Nothing else is coming soon: don't sit on what we have.
  return s.idle;
}

/** Pure: flushMs, or FLUSH_BUSY_MS while the drain runs flat out — unless memory is what holds it back (recording frees it). */
export function flushDelay(flushMs: number, memoryFull: boolean, flatOut: boolean): number {
  if (memoryFull) return flushMs;
  return flatOut ? Math.max(flushMs, FLUSH_BUSY_MS) : flushMs;
}
