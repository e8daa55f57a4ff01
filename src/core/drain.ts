// The drain: a sliding window over the queue. Up to `concurrency` requests are in flight; as
// slots free up more rows are claimed (one claim statement at a time); finished outcomes are
// buffered and recorded in bulk (one record statement at a time) on a short timer, so a slow
// request never holds back the recording of fast ones. No transaction is open while fetching.
// If the database goes away, the drain stops and leaves its rows leased: they are claimed again
// after the lease expires (at-least-once, never lost).
import type postgres from 'postgres';
import { claim, release, type ClaimedRequest } from './claim.ts';
import { systemClock, type Clock } from './clock.ts';
import { aheadLimit } from './claim-ahead.ts';
import { localHorizon } from './spill.ts';
import { Deadlines } from './deadlines.ts';
import { FetchSlots, type Wait } from './fetch-slots.ts';
import { execute } from './execute.ts';
import { record } from './record.ts';
import { BUFFER_LIMIT_BYTES, bodyBytes, ByteBudget } from './byte-budget.ts';
import type { ErrorKind } from './failures.ts';
import { flushDelay, flushDue, RecordBuffer } from './record-buffer.ts';
import { type DrainOptions, type DrainStats, type ExecuteOptions, type Outcome } from './types.ts';
import { messageOf } from './errors.ts';

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
   * Of the drain's fetch slots, those it leaves free while the runner holds rows (a Worker: one,
   * through which executor lanes open; at once, with nothing spilled, the drain uses them all).
   */
  readonly slotsWhileRunning: number;
}

/** How often a busy drain checks for pokes when nothing else wakes it. */
const POKE_TICK_MS = 10;
/** Stop claiming while this many outcomes wait to be recorded (the database is lagging). */
const MAX_BUFFERED = 5000;
/**
 * Claims start after the highest id claimed so far (net._claim's after_id), except one in this
 * many ms and one before concluding the queue is empty: those look from the start, for rows
 * below the hint that an expired lease freed.
 */
const FULL_CLAIM_EVERY_MS = 5000;
/** A drain whose queue looked empty claims again after this long while requests are in flight, doubling up to the max. */
const SUSPECTED_GAP_MS = 250;
const SUSPECTED_GAP_MAX_MS = 4000;
/** Claim this long after a request's not_before, so the database's clock has surely passed it. */
const DUE_SLACK_MS = 25;

type EmptyState = 'no' | 'suspected' | 'confirmed';
/** See Drain.mode(). */
export type DrainMode = 'working' | 'check-due' | 'waiting-for-due' | 'lingering' | 'done';

export function errorOutcome(id: string, message: string, kind: ErrorKind = 'internal'): Outcome {
  return {
    id,
    status_code: null,
    content_type: null,
    headers: null,
    content: null,
    content_base64: null,
    timed_out: false,
    error_msg: message,
    // Outcomes made here are the drain's own failures (could not store, …) or unusable rows.
    error_kind: kind,
  };
}


/**
 * SQLSTATE classes where retrying the same data can't help (data exception, constraint, limits,
 * and a row that makes a function raise (P0) or the server fail internally (XX, e.g. "invalid
 * memory alloc request size")): the chunk is then recorded row by row, isolating the bad row.
 */
function isDataError(error: unknown): boolean {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^(22|23|54|P0|XX)[0-9A-Z]{3}$/.test(code);
}

/** a > b for ids as decimal text without leading zeros (bigint ids can exceed 2^53). */
function higherId(a: string, b: string): boolean {
  return a.length !== b.length ? a.length > b.length : a > b;
}

export class Drain {
  readonly owner: string;
  private readonly sql: postgres.Sql;
  private readonly rawFetch: typeof fetch;
  private readonly opts: DrainOptions;
  private readonly heartbeat: boolean;
  private readonly slackMs: number;
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private readonly waitForDue: boolean;
  private readonly lingerMs: number;
  /** Last time rows were claimed or a request finished (linger counts from here). */
  private lastActiveAt = 0;

  private started = 0;
  private startedIso = '';
  private running: Promise<DrainStats> | null = null;
  /** Set synchronously when the drain will claim no more (poke can't revive it). */
  private closed = false;

  private inFlight = 0;
  /** Rows out at the runner. */
  private spilled = 0;
  private readonly slots: FetchSlots;
  private readonly runner: Runner | undefined;
  private readonly clock: Clock;
  /** Claimed ahead of free slots (see aheadLimit), started as slots free up. */
  private ready: { request: ClaimedRequest; claimedAt: number }[] = [];
  private completed = 0;
  private firstDoneAt = 0;
  private claimInFlight = false;
  private releaseInFlight = false;
  /** With the queue looking empty and requests in flight, the next claim waits until then. */
  private suspectedRetryAt = 0;
  /** Doubled before use: the first look after an empty claim waits SUSPECTED_GAP_MS. */
  private suspectedGapMs = SUSPECTED_GAP_MS / 2;
  /** Claimed rows this drain won't send, to give back (net._release). */
  private unsent: string[] = [];
  /** Highest id claimed so far (ids as decimal text: bigint). */
  private claimAfter: string | null = null;
  private lastFullClaimAt = 0;
  private recordInFlight = false;
  private readonly buffer = new RecordBuffer();
  private readonly bytes: ByteBudget;

  private empty: EmptyState = 'no';
  private pokes = 0;
  private claimFailures = 0;
  private claimRetryAt = 0;
  private recordFailures = 0;
  private recordRetryAt = 0;
  private databaseDown = false;

  private claimed = 0;
  private recorded = 0;
  private errors = 0;
  private lastError: string | undefined;

  /** When the next not-yet-due request (delayed, or an HTTP retry) comes due; 0: none within the budget. */
  private nextDueAt = 0;
  private dueCheckInFlight = false;
  /** net._next_due_ms was asked since the drain last claimed rows. */
  private dueChecked = false;

  private dirty = false;
  private wake: (() => void) | null = null;
  private timer: unknown;
  private timerAt = 0;
  private readonly executeOptions: ExecuteOptions;
  /** Every request's timeout on one timer (see deadlines.ts). */
  private readonly deadlines = new Deadlines();

  constructor(sql: postgres.Sql, fetchFn: typeof fetch, opts: DrainOptions, extras: DrainExtras = {}) {
    this.executeOptions = {
      maxResponseBytes: opts.maxResponseBytes,
      userAgent: opts.userAgent,
      ...(opts.retry ? { retry: opts.retry } : {}),
      ...(opts.destinations ? { destinations: opts.destinations } : {}),
      ...(opts.resolveHost ? { resolveHost: opts.resolveHost } : {}),
      ...(opts.canConnect ? { canConnect: opts.canConnect } : {}),
      deadlines: this.deadlines,
    };
    this.sql = sql;
    this.slots = new FetchSlots(opts.concurrency, opts.fetchSlots ?? Infinity);
    this.runner = extras.runner;
    this.clock = extras.clock ?? systemClock;
    this.rawFetch = fetchFn;
    this.opts = opts;
    this.owner = extras.owner ?? crypto.randomUUID();
    this.heartbeat = extras.heartbeat ?? true;
    this.slackMs = extras.recordSlackMs ?? 5000;
    this.retries = extras.retries ?? 4;
    this.retryBaseMs = extras.retryBaseMs ?? 200;
    this.waitForDue = extras.waitForDue ?? true;
    this.lingerMs = Math.max(0, extras.lingerMs ?? 0);
    this.bytes = new ByteBudget(extras.bufferLimitBytes ?? BUFFER_LIMIT_BYTES, extras.memoryLimitBytes ?? opts.concurrency * opts.maxResponseBytes);
  }

  /**
   * One request's fetch: counts it against the fetch slots until its headers arrive, and from
   * then on reserves the bytes its body may take (`reservation`, given back when it finishes).
   * One reaction per request does both.
   */
  private send(input: Parameters<typeof fetch>[0], init: RequestInit | undefined, reservation: { bytes: number }): Promise<Response> {
    const wait = this.slots.beginWait(this.clock.now());
    return this.rawFetch(input, init).then(
      (response) => {
        // Before headersArrived: the slot it frees is filled at once, against the new total.
        this.bytes.reserve(reservation, init?.method === 'HEAD' ? 0 : bodyBytes(response.headers, this.opts.maxResponseBytes));
        this.syncHeld();
        this.headersArrived(wait);
        return response;
      },
      (error: unknown) => {
        this.headersArrived(wait);
        throw error;
      },
    );
  }

  /** Reports this drain's held bytes to the isolate-wide count (byte-budget.ts). */
  private syncHeld(): void {
    this.bytes.sync(this.buffer.bytes);
  }

  /** No request may start: too many bytes wait to be recorded, or the isolate holds its limit. */
  private memoryFull(): boolean {
    return this.bytes.full(this.buffer.bytes);
  }

  /** Runs the drain once; calling again returns the same result. */
  run(): Promise<DrainStats> {
    // However the loop ends (even by a bug), its bytes leave the isolate's count.
    this.running ??= this.loop().finally(() => this.bytes.release());
    return this.running;
  }

  /**
   * New work may have been queued: claim again even if the queue looked empty. Returns false
   * when this drain will claim nothing more (finished, out of budget, database down) — then
   * the caller should start a new drain instead.
   */
  poke(): boolean {
    if (this.closed || this.databaseDown || this.requestsLeft() <= 0) return false;
    if (this.running && this.clock.now() - this.started >= this.opts.budgetMs) return false;
    // Past half its claim window a drain would leave the new rows with longer timeouts unclaimed
    // (they must fit before its hard limit): a new drain takes this nudge instead. Lingering
    // drains (LINGER_MS) make old drains common enough for this to matter.
    const window = this.opts.hardLimitMs - this.slackMs;
    if (this.running && window - (this.clock.now() - this.started) < window / 2) return false;
    this.pokes++;
    this.empty = 'no';
    // Flags only, no wake-up: poke() runs in another request's context, and in workerd a drain
    // resumed from there ties its next timers and I/O to that request, which ends at once —
    // stalling the drain (seen as 1-20 s delays under a trickle). The drain's own tick notices.
    this.dirty = true;
    return true;
  }

  private signal(): void {
    this.dirty = true;
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async sleep(ms: number | null): Promise<void> {
    if (!this.dirty) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        if (ms === null) return;
        // One timer serves many turns: the loop wakes on nearly every completion and then asks for
        // the same ~10 ms tick again, so a pending timer due no later than wanted is kept rather
        // than cleared and re-armed per request. Waking early is harmless (the loop re-checks).
        const at = this.clock.now() + Math.max(0, ms);
        if (this.timer !== undefined && this.timerAt <= at) return;
        if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
        this.timerAt = at;
        this.timer = this.clock.setTimeout(() => {
          this.timer = undefined;
          const wake = this.wake;
          this.wake = null;
          wake?.();
        }, Math.max(0, ms));
      });
    }
    this.dirty = false;
  }

  /** Best effort: a failed wake only means the next cron takes the rest. */
  private handOver(): void {
    this.sql`select net.wake()`.then(
      () => {},
      (error: unknown) => {
        this.lastError = `wake: ${messageOf(error)}`;
      },
    );
  }

  /** Rows this drain may still claim under opts.maxRequests (Infinity without a cap). */
  private requestsLeft(): number {
    return this.opts.maxRequests === undefined ? Infinity : this.opts.maxRequests - this.claimed;
  }

  /** Could this drain still claim (ignoring a claim in flight or a pending retry)? */
  private claimPossible(now: number): boolean {
    if (this.databaseDown || this.requestsLeft() <= 0) return false;
    const elapsed = now - this.started;
    if (elapsed >= this.opts.budgetMs) return false;
    if (this.opts.hardLimitMs - elapsed - this.slackMs <= 0) return false;
    if (this.empty === 'confirmed') return false;
    return true;
  }

  private mayClaimNow(now: number): boolean {
    if (this.claimInFlight || now < this.claimRetryAt || !this.claimPossible(now)) return false;
    if (this.room(now) <= 0 || this.buffer.length >= MAX_BUFFERED) return false;
    // Every fetch slot held by a slow request: rows claimed now would only wait (see saturated).
    if (this.slots.stuck(now) && this.spillRoom(now, 0) <= 0) return false;
    // Claim in big batches: while half the allowance still waits, the next claim can wait too,
    // so a claim takes about batch_size rows. Claims of ~50 rows (the rule was 3/4 of an
    // allowance of batch_size) cost ~10% of the throughput in statements on both sides.
    if (this.ready.length >= Math.max(this.opts.concurrency, this.aheadLimit(now) / 2)) return false;
    // The queue looked empty: wait for in-flight work to finish, then claim once more to be sure;
    // while slow requests keep it in flight, look again now and then (rows another drain gave
    // back, or whose lease expired, would otherwise wait for them).
    if (this.empty === 'suspected' && (this.inFlight > 0 || this.ready.length > 0) && now < this.suspectedRetryAt) return false;
    return true;
  }

  private backoff(failures: number): number {
    return this.retryBaseMs * 2 ** Math.max(0, failures - 1);
  }

  private startClaim(now: number): void {
    const elapsed = now - this.started;
    const want = Math.min(this.room(now), this.opts.batchSize, this.requestsLeft());
    const maxTimeoutMs = this.opts.hardLimitMs - elapsed - this.slackMs;
    const idleAtIssue = this.inFlight === 0 && this.ready.length === 0;
    const pokesAtIssue = this.pokes;
    const afterId = now - this.lastFullClaimAt < FULL_CLAIM_EVERY_MS ? this.claimAfter : null;
    if (afterId === null) this.lastFullClaimAt = now;
    this.claimInFlight = true;
    claim(this.sql, this.owner, want, { leaseMarginMs: this.opts.leaseMarginMs, maxTimeoutMs, afterId, maxBytes: this.opts.claimBytes })
      .then(
        (rows) => {
          this.claimFailures = 0;
          this.claimed += rows.length;
          // Rows come in id order: the last has the highest id.
          const last = rows[rows.length - 1]?.id;
          if (last !== undefined && (this.claimAfter === null || higherId(last, this.claimAfter))) this.claimAfter = last;
          // At its request cap with a full claim (more rows are likely waiting): wake a fresh drain
          // now, through NOTIFY and the relay, rather than leave them to the next cron.
          if (this.requestsLeft() <= 0 && rows.length === want && want > 0) this.handOver();
          if (rows.length > 0) this.lastActiveAt = this.clock.now();
          // Their outcomes may schedule HTTP retries: ask for the next due time again before stopping.
          if (rows.length > 0) this.dueChecked = false;
          const claimedAt = this.clock.now();
          for (const request of rows) this.ready.push({ request, claimedAt });
          this.fill();
          if (this.pokes !== pokesAtIssue) {
            // A nudge arrived while claiming: this claim may predate the new rows.
            this.empty = 'no';
          } else if (rows.length === 0 && idleAtIssue && afterId !== null) {
            // Nothing after the hint: look from the start once more before judging the queue empty.
            this.lastFullClaimAt = 0;
            this.empty = 'no';
          } else if (rows.length < want) {
            this.empty = rows.length === 0 && idleAtIssue ? 'confirmed' : 'suspected';
            // Back off while the queue stays empty: 250 ms, 500 ms, … up to 4 s between looks.
            const gap = rows.length > 0 ? SUSPECTED_GAP_MS : Math.min(SUSPECTED_GAP_MAX_MS, 2 * this.suspectedGapMs);
            this.suspectedGapMs = gap;
            this.suspectedRetryAt = this.clock.now() + gap;
          } else {
            this.empty = 'no';
            this.suspectedGapMs = SUSPECTED_GAP_MS / 2;
          }
        },
        (error: unknown) => {
          this.claimFailures++;
          this.lastError = `claim: ${messageOf(error)}`;
          const delay = this.backoff(this.claimFailures);
          const at = this.clock.now() + delay;
          if (this.claimFailures > this.retries || at - this.started >= this.opts.budgetMs) {
            this.databaseDown = true;
          } else {
            this.claimRetryAt = at;
          }
        },
      )
      .finally(() => {
        this.claimInFlight = false;
        this.signal();
      });
  }

  /**
   * How many rows to hold claimed ahead of free slots, so a freed slot starts its next request
   * without waiting for a claim round trip (and claims come in bigger, cheaper batches): what the
   * completion rate will start in AHEAD_MS (claim-ahead.ts) (and before the budget ends), at most twice batch_size
   * (one claim's worth waiting while the next is taken); none until there is a rate to go by, so
   * a short budget never claims rows it won't start.
   */
  private aheadLimit(now: number): number {
    const mostlyStuck = this.slots.mostlyStuck(now);
    return aheadLimit({
      now,
      started: this.started,
      firstDoneAt: this.firstDoneAt,
      completed: this.completed,
      concurrency: this.opts.concurrency,
      fetchSlots: this.slots.fetchSlots,
      batchSize: this.opts.batchSize,
      budgetMs: this.opts.budgetMs,
      leaseMarginMs: this.opts.leaseMarginMs,
      mostlyStuck,
      medianWaitMs: this.slots.medianWait,
    });
  }

  /** Rows a claim may take now: free slots plus the claim-ahead allowance, minus rows waiting. */
  private room(now: number): number {
    const free = this.freeSlots(now);
    const ahead = this.aheadLimit(now);
    return free + this.spillRoom(now, free + ahead) + ahead - this.ready.length;
  }

  private fill(): void {
    // Without a database their outcomes can't be recorded: leave them leased for a later drain.
    if (this.databaseDown) this.ready = [];
    const now = this.clock.now();
    while (this.ready.length > 0 && this.freeSlots(now) > 0) {
      const { request, claimedAt } = this.ready.shift()!;
      if (this.sendable(request, claimedAt, now)) this.launch(request);
    }
    if (this.runner && this.ready.length > 0 && !this.memoryFull()) this.spill(this.runner, now);
    if (this.unsent.length > 0) this.giveBack();
  }

  /**
   * A row that waited too long is given back unsent (a later drain takes it) rather than sent
   * late: its lease could end mid-flight (a second drain would send it again), or it would no
   * longer finish before the hard limit.
   */
  private sendable(request: ClaimedRequest, claimedAt: number, now: number): boolean {
    const stale = now - claimedAt > this.opts.leaseMarginMs / 2;
    const tooLate = now - this.started + request.timeout_milliseconds + this.slackMs > this.opts.hardLimitMs;
    if (stale || tooLate) this.unsent.push(request.id);
    return !(stale || tooLate);
  }

  /** Rows this drain's own slots start within AHEAD_MS (spill.ts). */
  private localHorizon(now: number): number {
    return localHorizon({
      fetchSlots: this.slots.fetchSlots - (this.spilled > 0 ? this.runner!.slotsWhileRunning : 0),
      waitMs: this.slots.shortestWaitMs(),
      stuck: this.slots.stuck(now),
      mostlyStuck: this.slots.mostlyStuck(now),
      localLeft: this.localLeft(),
    });
  }

  /** Hands the runner the ready rows beyond what this drain's own slots start within AHEAD_MS. */
  private spill(runner: Runner, now: number): void {
    const keep = this.localHorizon(now);
    while (this.ready.length > keep) {
      const { request, claimedAt } = this.ready[0]!;
      if (!this.sendable(request, claimedAt, now)) {
        this.ready.shift();
        continue;
      }
      // An unusable row's error outcome is made here, not sent anywhere.
      const sent = request.invalid ? undefined : runner.tryRun(request);
      if (sent === null) break;
      this.ready.shift();
      this.launch(request, sent);
    }
  }

  /**
   * Rows to claim for the runner: its room, once the rows this drain would hold for its own
   * slots (`local`: free slots and claim-ahead) or already holds are more than those slots
   * start within AHEAD_MS. Otherwise none, so against a target answering at once the drain
   * claims as it would without a runner and every row stays local.
   */
  private spillRoom(now: number, local: number): number {
    if (!this.runner || this.memoryFull()) return 0;
    const horizon = this.localHorizon(now);
    return Math.max(local, this.ready.length) >= horizon ? this.runner.room() : 0;
  }

  /** A fetch slot freed: start the next waiting row at once (its body read goes on meanwhile). */
  private headersArrived(wait: Wait): void {
    this.slots.endWait(wait, this.clock.now());
    if (this.ready.length > 0) this.fill();
  }

  /**
   * Requests that may start now: `concurrency` minus those in flight, slow ones not counted
   * (capped), and never more waiting for headers than `fetchSlots`.
   */
  private freeSlots(now: number): number {
    // Recording lags behind, or the isolate holds its memory limit: wait (each record that ends
    // signals the loop, which fills; other drains' releases are seen at the loop's next tick).
    if (this.memoryFull()) return 0;
    const free = this.slots.free(now) - (this.spilled > 0 ? this.runner!.slotsWhileRunning : 0);
    // With a runner, requests of its own only while the runner leaves it some (subrequests).
    return this.runner ? Math.max(0, Math.min(free, this.localLeft())) : free;
  }

  /** Requests this drain may still start itself beside those waiting for headers (the runner's localLeft). */
  private localLeft(): number {
    return this.runner ? this.runner.localLeft() - this.slots.waiting.size : Infinity;
  }

  /** Gives back the rows claimed ahead beyond the first `keep`: stuck slots would hold them up. */
  private releaseReady(keep: number): void {
    for (const { request } of this.ready.splice(keep)) this.unsent.push(request.id);
    this.giveBack();
  }

  /** Gives the unsent rows back to the queue (net._release), one statement at a time. */
  private giveBack(): void {
    if (this.releaseInFlight || this.unsent.length === 0 || this.databaseDown) return;
    const ids = this.unsent.splice(0);
    // Not sent by this drain: they don't count against its request cap or in its stats.
    this.claimed -= ids.length;
    this.releaseInFlight = true;
    release(this.sql, this.owner, ids)
      .then(
        () => {},
        (error: unknown) => {
          // They stay leased to this drain, unsent: claimed again once the lease expires.
          this.lastError = `release: ${messageOf(error)}`;
        },
      )
      .finally(() => {
        this.releaseInFlight = false;
        // Rows given up on meanwhile go in the next statement.
        this.giveBack();
        this.signal();
      });
  }

  /** When the next young request turns slow and frees a slot, if slots are what claiming waits for. */
  private nextSlowAt(now: number): number {
    if (this.freeSlots(now) > 0) return Infinity;
    if (this.ready.length === 0 && (this.claimInFlight || !this.claimPossible(now))) return Infinity;
    return this.slots.nextSlowAt(now);
  }

  /** Starts a row on this drain's own slots, or follows one the runner started (`sent`). */
  private launch(request: ClaimedRequest, sent?: Promise<Outcome | null>): void {
    this.inFlight++;
    // Rows at the runner hold none of this drain's slots.
    if (sent === undefined) this.slots.start(request.id, this.clock.now());
    else this.spilled++;
    const reservation = { bytes: 0 };
    const done: Promise<Outcome | null> = request.invalid
      ? Promise.resolve(errorOutcome(request.id, request.invalid, 'invalid_request'))
      : (sent ?? execute(request, (input, init) => this.send(input, init, reservation), this.executeOptions));
    const finish = (outcome: Outcome | null): void => {
      if (sent !== undefined) this.spilled--;
      if (outcome === null) {
        // Not sent (it waited too long, or its executor failed before answering): give it back.
        this.inFlight--;
        this.slots.finish(request.id);
        this.unsent.push(request.id);
        this.giveBack();
        this.signal();
        return;
      }
      this.inFlight--;
      // The body's reservation becomes the outcome's size (synced below).
      this.bytes.finish(reservation);
      this.slots.finish(request.id);
      this.completed++;
      this.lastActiveAt = this.clock.now();
      if (this.firstDoneAt === 0) this.firstDoneAt = this.lastActiveAt;
      if (outcome.error_msg !== null) this.errors++;
      this.buffer.push(outcome, this.clock.now());
      this.syncHeld();
      this.fill();
      // Wake the loop only when a completion gives it something to do at once: the last request
      // ended, a flush timer is to be set or a flush is due, or a claim should start. Otherwise
      // its tick (POKE_TICK_MS) is soon enough, and a turn of the loop per request is saved.
      if (
        this.inFlight === 0 ||
        this.buffer.length === 1 ||
        this.buffer.full() ||
        this.mayClaimNow(this.clock.now())
      ) {
        this.signal();
      } else {
        this.dirty = true;
      }
    };
    // One reaction for both outcomes (execute never rejects; a rejection still becomes an error).
    void done.then(finish, (error: unknown) => finish(errorOutcome(request.id, `internal error: ${messageOf(error)}`)));
  }

  private flushDue(now: number): boolean {
    return flushDue(this.buffer, {
      now,
      recordInFlight: this.recordInFlight,
      retryAt: this.recordRetryAt,
      databaseDown: this.databaseDown,
      delayMs: this.flushDelay(now),
      idle: this.inFlight === 0 && this.ready.length === 0 && !this.claimInFlight,
    });
  }

  /** How long the oldest buffered outcome may wait (see flushDelay in record-buffer.ts). */
  private flushDelay(now: number): number {
    const memoryFull = this.memoryFull();
    return flushDelay(this.opts.flushMs, memoryFull, !memoryFull && this.ready.length > 0 && this.freeSlots(now) === 0);
  }

  private startRecord(): void {
    const { chunk, bytes } = this.buffer.take(this.clock.now());
    this.recordInFlight = true;
    this.bytes.recording = bytes;
    this.recordChunk(chunk)
      .catch((error: unknown) => {
        this.recordFailures++;
        this.lastError = `record: ${messageOf(error)}`;
        const delay = this.backoff(this.recordFailures);
        const at = this.clock.now() + delay;
        if (
          this.databaseDown ||
          this.recordFailures > this.retries ||
          at - this.started >= this.opts.hardLimitMs - this.slackMs
        ) {
          // Give up: these rows stay leased and are claimed again after the lease expires.
          this.databaseDown = true;
        } else {
          this.buffer.putBack(chunk);
          this.recordRetryAt = at;
        }
      })
      .finally(() => {
        this.recordInFlight = false;
        this.bytes.recording = 0;
        this.syncHeld();
        this.signal();
      });
  }

  private async recordChunk(chunk: Outcome[]): Promise<void> {
    try {
      this.recorded += await record(this.sql, this.owner, chunk);
      this.recordFailures = 0;
      return;
    } catch (error) {
      if (!isDataError(error)) throw error;
      this.lastError = `record: ${messageOf(error)}`;
    }
    // One outcome the database refuses (e.g. a value it can't store) must not block the others:
    // record them one by one and store an error in place of any that still fail.
    for (const outcome of chunk) {
      try {
        this.recorded += await record(this.sql, this.owner, [outcome]);
      } catch (error) {
        if (!isDataError(error)) throw error;
        const replacement = errorOutcome(outcome.id, `could not store the response: ${messageOf(error)}`);
        this.recorded += await record(this.sql, this.owner, [replacement]);
        if (outcome.error_msg === null) this.errors++;
      }
    }
    this.recordFailures = 0;
  }

  /** Within the budget (time and requests), ignoring whether the queue looked empty. */
  private withinBudget(now: number): boolean {
    if (this.databaseDown || this.requestsLeft() <= 0) return false;
    const elapsed = now - this.started;
    return elapsed < this.opts.budgetMs && this.opts.hardLimitMs - elapsed - this.slackMs > 0;
  }

  /** About to stop: should the drain first ask when the next delayed request or retry comes due? */
  private dueCheckWanted(now: number): boolean {
    if (!this.waitForDue || this.dueChecked || this.dueCheckInFlight || this.nextDueAt > 0) return false;
    return this.withinBudget(now);
  }

  private startDueCheck(now: number): void {
    this.dueCheckInFlight = true;
    const maxTimeoutMs = Math.max(0, Math.floor(this.opts.hardLimitMs - (now - this.started) - this.slackMs));
    this.sql<{ ms: string | null }[]>`select net._next_due_ms(${maxTimeoutMs}::int)::text as ms`
      .then(
        (rows) => {
          const ms = rows[0]?.ms;
          if (ms === null || ms === undefined) return;
          const at = this.clock.now() + Math.max(0, Number(ms)) + DUE_SLACK_MS;
          // Only worth waiting for if it can still be claimed within the budget.
          if (Number.isFinite(at) && at - this.started < this.opts.budgetMs) this.nextDueAt = at;
        },
        (error: unknown) => {
          // Best effort (e.g. an older schema without net._next_due_ms): the next cron sends it.
          this.lastError = `next due: ${messageOf(error)}`;
        },
      )
      .finally(() => {
        this.dueChecked = true;
        this.dueCheckInFlight = false;
        this.signal();
      });
  }

  /** Idle after the queue emptied, but within lingerMs of the last work and within the budget. */
  private lingering(now: number): boolean {
    return this.lingerMs > 0 && now - this.lastActiveAt < this.lingerMs && this.withinBudget(now);
  }

  private nextTimer(now: number): number | null {
    let next = this.nextSlowAt(now);
    if (this.empty === 'suspected' && !this.claimInFlight && this.suspectedRetryAt > now && this.claimPossible(now)) {
      next = Math.min(next, this.suspectedRetryAt);
    }
    if (!this.claimInFlight && this.claimRetryAt > now && this.claimPossible(now)) next = Math.min(next, this.claimRetryAt);
    if (!this.recordInFlight && this.buffer.length > 0) {
      next = Math.min(next, Math.max(this.recordRetryAt, this.buffer.oldestAt + this.flushDelay(now)));
    }
    // Waiting for a request to come due: keep the poke tick, so a nudge meanwhile isn't delayed.
    if (this.nextDueAt > 0) return Math.max(0, Math.min(next, this.nextDueAt, now + POKE_TICK_MS) - now);
    if (next === Infinity) {
      // Something in flight will signal; the short tick is how a poke is noticed while only slow
      // requests are in flight (pokes don't wake the loop, see poke()).
      return this.inFlight > 0 || this.ready.length > 0 || this.claimInFlight || this.recordInFlight || this.dueCheckInFlight || this.lingering(now)
        ? POKE_TICK_MS
        : 0;
    }
    return Math.max(0, next - now);
  }

  /**
   * The drain's lifecycle mode, decided here only: 'working' while anything is in flight, waiting
   * or claimable; then once 'check-due' (ask when the next delayed request or retry comes due);
   * 'waiting-for-due' for it within the budget; 'lingering' for a poke (LINGER_MS); else 'done'.
   */
  private mode(now: number): DrainMode {
    const busy =
      this.claimInFlight ||
      this.releaseInFlight ||
      this.recordInFlight ||
      this.dueCheckInFlight ||
      this.inFlight > 0 ||
      this.ready.length > 0 ||
      this.buffer.length > 0;
    if (busy || this.mayClaimNow(now) || (this.claimRetryAt > now && this.claimPossible(now))) return 'working';
    if (this.dueCheckWanted(now)) return 'check-due';
    if (this.nextDueAt > 0 && this.withinBudget(now)) return 'waiting-for-due';
    if (this.lingering(now)) return 'lingering';
    return 'done';
  }

  private async loop(): Promise<DrainStats> {
    this.started = this.clock.now();
    this.lastActiveAt = this.started;
    this.startedIso = new Date(this.started).toISOString();
    for (;;) {
      this.dirty = false;
      const now = this.clock.now();
      if (this.nextDueAt > 0 && now >= this.nextDueAt) {
        // A delayed request or HTTP retry is due: claim again, as after a poke.
        this.nextDueAt = 0;
        this.dueChecked = false;
        if (this.empty === 'confirmed') this.empty = 'no';
      }
      if (this.mayClaimNow(now)) this.startClaim(now);
      if (this.flushDue(now)) this.startRecord();
      this.fill();
      const stuck = this.slots.stuck(now);
      if (stuck && this.ready.length > 0) this.releaseReady(0);
      else if (this.ready.length > 0 && this.slots.mostlyStuck(now)) {
        const keep = this.aheadLimit(now);
        if (this.ready.length > keep) this.releaseReady(keep);
      }
      const mode = this.mode(this.clock.now());
      if (mode === 'check-due') {
        this.startDueCheck(this.clock.now());
        continue;
      }
      if (mode === 'done') break;
      await this.sleep(this.nextTimer(this.clock.now()));
    }
    this.closed = true;
    this.deadlines.clear();
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;

    const stats: DrainStats = {
      owner: this.owner,
      started: this.startedIso,
      duration_ms: this.clock.now() - this.started,
      claimed: this.claimed,
      recorded: this.recorded,
      errors: this.errors,
      stopped: this.databaseDown ? 'database' : this.empty === 'confirmed' ? 'empty' : 'budget',
    };
    if (this.opts.fetchSlots !== undefined && this.slots.headerWaits > 0) stats.header_wait_ms = Math.round(this.slots.headerWaitTotal / this.slots.headerWaits);
    if (this.lastError !== undefined) stats.last_error = this.lastError;
    if (this.heartbeat && !this.databaseDown) await writeHeartbeat(this.sql, stats);
    return stats;
  }
}

/** Records a drain's stats as the worker's last sign of life (net._worker_status); best effort. */
export async function writeHeartbeat(sql: postgres.Sql, stats: DrainStats): Promise<void> {
  try {
    await sql`select net._heartbeat(${JSON.stringify(stats)}::text::jsonb)`;
  } catch (error) {
    stats.last_error ??= `heartbeat: ${messageOf(error)}`;
  }
}

/** One drain, start to finish (for callers that don't need poke()). */
export function drain(
  sql: postgres.Sql,
  fetchFn: typeof fetch,
  opts: DrainOptions,
  extras: DrainExtras = {},
): Promise<DrainStats> {
  return new Drain(sql, fetchFn, opts, extras).run();
}
