// The drain's claiming side: whether it may claim now, how many rows, and what a claim's result
// says about the queue (empty, suspected empty, or more to come). One claim statement at a time;
// a failing claim is retried with backoff until the drain gives up on the database.
import type postgres from 'postgres';
import { aheadLimit as aheadLimitOf } from './claim-ahead.ts';
import { claim, type ClaimedRequest } from './claim.ts';
import type { Drain } from './drain.ts';
import { messageOf } from './errors.ts';

/** Stop claiming while this many outcomes wait to be recorded (the database is lagging). */
export const MAX_BUFFERED = 5000;
/**
 * Claims start after the highest id claimed so far (net._claim's after_id), except one in this
 * many ms and one before concluding the queue is empty: those look from the start, for rows
 * below the hint that an expired lease freed.
 */
export const FULL_CLAIM_EVERY_MS = 5000;
/** A drain whose queue looked empty claims again after this long while requests are in flight, doubling up to the max. */
export const SUSPECTED_GAP_MS = 250;
export const SUSPECTED_GAP_MAX_MS = 4000;

/** What the last claims said about the queue: 'suspected' empty with work in flight, 'confirmed' when idle. */
export type EmptyState = 'no' | 'suspected' | 'confirmed';

/** a > b for ids as decimal text without leading zeros (bigint ids can exceed 2^53). */
export function higherId(a: string, b: string): boolean {
  return a.length !== b.length ? a.length > b.length : a > b;
}

/** Delay before retry number `failures` (1, 2, …): baseMs, doubled each time. */
export function backoff(baseMs: number, failures: number): number {
  return baseMs * 2 ** Math.max(0, failures - 1);
}

/** The full-claim hint: claim after this id, or from the start (null) once every FULL_CLAIM_EVERY_MS. */
export function claimAfterId(now: number, lastFullClaimAt: number, claimAfter: string | null): string | null {
  return now - lastFullClaimAt < FULL_CLAIM_EVERY_MS ? claimAfter : null;
}

export interface ClaimResult {
  rows: number;
  want: number;
  /** Nothing was in flight or waiting when the claim was issued. */
  idleAtIssue: boolean;
  /** The claim started after an id hint (not from the start of the queue). */
  hinted: boolean;
  /** A poke arrived while claiming. */
  poked: boolean;
  /** The current gap between looks at a queue that seems empty. */
  gapMs: number;
}

export interface QueueVerdict {
  empty: EmptyState;
  /** Look from the start of the queue next time (a hinted claim found nothing). */
  fullClaimNext: boolean;
  /** The gap to keep, and when to look again (relative to now) while 'suspected'; null: unchanged. */
  gapMs: number;
  retryInMs: number | null;
}

/** Pure: what a claim's result says about the queue. */
export function judgeQueue(r: ClaimResult): QueueVerdict {
  // A nudge arrived while claiming: this claim may predate the new rows.
  if (r.poked) return { empty: 'no', fullClaimNext: false, gapMs: r.gapMs, retryInMs: null };
  // Nothing after the hint: look from the start once more before judging the queue empty.
  if (r.rows === 0 && r.idleAtIssue && r.hinted) return { empty: 'no', fullClaimNext: true, gapMs: r.gapMs, retryInMs: null };
  if (r.rows < r.want) {
    // Back off while the queue stays empty: 250 ms, 500 ms, … up to 4 s between looks.
    const gap = r.rows > 0 ? SUSPECTED_GAP_MS : Math.min(SUSPECTED_GAP_MAX_MS, 2 * r.gapMs);
    return { empty: r.rows === 0 && r.idleAtIssue ? 'confirmed' : 'suspected', fullClaimNext: false, gapMs: gap, retryInMs: gap };
  }
  return { empty: 'no', fullClaimNext: false, gapMs: SUSPECTED_GAP_MS / 2, retryInMs: null };
}

/** The drain's claiming state. */
export class ClaimState {
  /** Rows claimed and not given back: counted against opts.maxRequests and in the stats. */
  claimed = 0;
  /** A claim statement is running (one at a time). */
  inFlight = false;
  failures = 0;
  /** After a failed claim, the next waits until then (backoff). */
  retryAt = 0;
  empty: EmptyState = 'no';
  /** Pokes so far: one arriving during a claim means the claim may predate new rows. */
  pokes = 0;
  /** With the queue looking empty and requests in flight, the next claim waits until then. */
  suspectedRetryAt = 0;
  /** Doubled before use: the first look after an empty claim waits SUSPECTED_GAP_MS. */
  suspectedGapMs = SUSPECTED_GAP_MS / 2;
  /** Highest id claimed so far (ids as decimal text: bigint): the next claim's after_id hint. */
  after: string | null = null;
  /** When a claim last looked from the start of the queue (see FULL_CLAIM_EVERY_MS). */
  lastFullAt = 0;
}

/** Rows this drain may still claim under opts.maxRequests (Infinity without a cap). */
export function requestsLeft(d: Drain): number {
  return d.opts.maxRequests === undefined ? Infinity : d.opts.maxRequests - d.claiming.claimed;
}

/** Could this drain still claim (ignoring a claim in flight or a pending retry)? */
export function claimPossible(d: Drain, now: number): boolean {
  if (d.databaseDown || requestsLeft(d) <= 0) return false;
  const elapsed = now - d.started;
  if (elapsed >= d.opts.budgetMs) return false;
  if (d.opts.hardLimitMs - elapsed - d.slackMs <= 0) return false;
  if (d.claiming.empty === 'confirmed') return false;
  return true;
}

export function mayClaimNow(d: Drain, now: number): boolean {
  if (d.claiming.inFlight || now < d.claiming.retryAt || !claimPossible(d, now)) return false;
  if (room(d, now) <= 0 || d.buffer.length >= MAX_BUFFERED) return false;
  // Every fetch slot held by a slow request: rows claimed now would only wait (see saturated).
  if (d.slots.stuck(now) && d.spillRoom(now, 0) <= 0) return false;
  // Claim in big batches: while half the allowance still waits, the next claim can wait too,
  // so a claim takes about batch_size rows. Claims of ~50 rows (the rule was 3/4 of an
  // allowance of batch_size) cost ~10% of the throughput in statements on both sides.
  if (d.ready.length >= Math.max(d.opts.concurrency, aheadLimit(d, now) / 2)) return false;
  // The queue looked empty: wait for in-flight work to finish, then claim once more to be sure;
  // while slow requests keep it in flight, look again now and then (rows another drain gave
  // back, or whose lease expired, would otherwise wait for them).
  if (d.claiming.empty === 'suspected' && (d.inFlight > 0 || d.ready.length > 0) && now < d.claiming.suspectedRetryAt) return false;
  return true;
}

/** Rows a claim may take now: free slots plus the claim-ahead allowance, minus rows waiting. */
export function room(d: Drain, now: number): number {
  const free = d.freeSlots(now);
  const ahead = aheadLimit(d, now);
  // With a runner (executors), its room too once the drain's own slots can't keep up (spill.ts).
  return free + d.spillRoom(now, free + ahead) + ahead - d.ready.length;
}

/**
 * How many rows to hold claimed ahead of free slots, so a freed slot starts its next request
 * without waiting for a claim round trip (and claims come in bigger, cheaper batches): what the
 * completion rate will start in AHEAD_MS (claim-ahead.ts) (and before the budget ends), at most twice batch_size
 * (one claim's worth waiting while the next is taken); none until there is a rate to go by, so
 * a short budget never claims rows it won't start.
 */
export function aheadLimit(d: Drain, now: number): number {
  const mostlyStuck = d.slots.mostlyStuck(now);
  return aheadLimitOf({
    now,
    started: d.started,
    firstDoneAt: d.firstDoneAt,
    completed: d.completed,
    concurrency: d.opts.concurrency,
    fetchSlots: d.slots.usable,
    batchSize: d.opts.batchSize,
    budgetMs: d.opts.budgetMs,
    leaseMarginMs: d.opts.leaseMarginMs,
    mostlyStuck,
    medianWaitMs: d.slots.medianWait,
  });
}

export function startClaim(d: Drain, now: number): void {
  const elapsed = now - d.started;
  const want = Math.min(room(d, now), d.opts.batchSize, requestsLeft(d));
  const maxTimeoutMs = d.opts.hardLimitMs - elapsed - d.slackMs;
  const idleAtIssue = d.inFlight === 0 && d.ready.length === 0;
  const pokesAtIssue = d.claiming.pokes;
  const afterId = claimAfterId(now, d.claiming.lastFullAt, d.claiming.after);
  if (afterId === null) d.claiming.lastFullAt = now;
  d.claiming.inFlight = true;
  claim(d.sql, d.owner, want, { leaseMarginMs: d.opts.leaseMarginMs, maxTimeoutMs, afterId, maxBytes: d.opts.claimBytes })
    .then(
      (rows) => {
        d.claiming.failures = 0;
        claimed(d, rows, want);
        const verdict = judgeQueue({
          rows: rows.length,
          want,
          idleAtIssue,
          hinted: afterId !== null,
          poked: d.claiming.pokes !== pokesAtIssue,
          gapMs: d.claiming.suspectedGapMs,
        });
        d.claiming.empty = verdict.empty;
        d.claiming.suspectedGapMs = verdict.gapMs;
        if (verdict.fullClaimNext) d.claiming.lastFullAt = 0;
        if (verdict.retryInMs !== null) d.claiming.suspectedRetryAt = d.clock.now() + verdict.retryInMs;
      },
      (error: unknown) => {
        d.claiming.failures++;
        d.lastError = `claim: ${messageOf(error)}`;
        const at = d.clock.now() + backoff(d.retryBaseMs, d.claiming.failures);
        if (d.claiming.failures > d.retries || at - d.started >= d.opts.budgetMs) {
          d.databaseDown = true;
        } else {
          d.claiming.retryAt = at;
        }
      },
    )
    .finally(() => {
      d.claiming.inFlight = false;
      d.signal();
    });
}

/** Takes in a claim's rows: counts them, moves the id hint, and starts what slots allow. */
function claimed(d: Drain, rows: ClaimedRequest[], want: number): void {
  d.claiming.claimed += rows.length;
  // Rows come in id order: the last has the highest id.
  const last = rows[rows.length - 1]?.id;
  if (last !== undefined && (d.claiming.after === null || higherId(last, d.claiming.after))) d.claiming.after = last;
  // At its request cap with a full claim (more rows are likely waiting): wake a fresh drain
  // now, through NOTIFY and the relay, rather than leave them to the next cron.
  if (requestsLeft(d) <= 0 && rows.length === want && want > 0) handOver(d.sql, d);
  if (rows.length > 0) d.lastActiveAt = d.clock.now();
  // Their outcomes may schedule HTTP retries: ask for the next due time again before stopping.
  if (rows.length > 0) d.due.checked = false;
  const claimedAt = d.clock.now();
  for (const request of rows) d.ready.push({ request, claimedAt });
  d.fill();
}

/** Wakes a fresh drain (net.wake). Best effort: a failed wake only means the next cron takes the rest. */
function handOver(sql: postgres.Sql, d: { lastError: string | undefined }): void {
  sql`select net.wake()`.then(
    () => {},
    (error: unknown) => {
      d.lastError = `wake: ${messageOf(error)}`;
    },
  );
}
