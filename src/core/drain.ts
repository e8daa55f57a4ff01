// The drain: a sliding window over the queue. Up to `concurrency` requests are in flight; as
// slots free up more rows are claimed (one claim statement at a time); finished outcomes are
// buffered and recorded in bulk (one record statement at a time) on a short timer, so a slow
// request never holds back the recording of fast ones. No transaction is open while fetching.
// If the database goes away, the drain stops and leaves its rows leased: they are claimed again
// after the lease expires (at-least-once, never lost).
//
// This class is the orchestrator: its loop, its lifecycle mode() and the sending of requests.
// The pieces live beside it: claiming (drain-claim.ts), recording (drain-record.ts), giving rows
// back (drain-give-back.ts), the empty-queue wait for due rows and lingering (drain-idle.ts), and
// when to wake (drain-timer.ts); what the constructor takes besides DrainOptions is in
// drain-extras.ts. They read and change the drain's state, shared below.
import type postgres from 'postgres';
import type { ClaimedRequest } from './claim.ts';
import { systemClock, type Clock } from './clock.ts';
import { Deadlines } from './deadlines.ts';
import { FetchSlots, type Wait } from './fetch-slots.ts';
import { execute } from './execute.ts';
import { BUFFER_LIMIT_BYTES, bodyBytes, ByteBudget } from './byte-budget.ts';
import { RecordBuffer } from './record-buffer.ts';
import { type DrainOptions, type DrainStats, type ExecuteOptions, type Outcome } from './types.ts';
import { messageOf } from './errors.ts';
import { claimPossible, ClaimState, mayClaimNow, requestsLeft, startClaim } from './drain-claim.ts';
import { flushDue, RecordState, startRecord } from './drain-record.ts';
import { giveBack, releaseStuck } from './drain-give-back.ts';
import { DueState, dueArrived, dueCheckWanted, lingering, startDueCheck, withinBudget } from './drain-idle.ts';
import { LoopSleep, nextTimer } from './drain-timer.ts';
import { errorOutcome } from './error-outcome.ts';
import { writeHeartbeat } from './heartbeat.ts';
import { localHorizon } from './spill.ts';
import type { DrainExtras, Runner } from './drain-extras.ts';

export { errorOutcome } from './error-outcome.ts';
export { writeHeartbeat } from './heartbeat.ts';
export type { DrainExtras, Runner } from './drain-extras.ts';

/** See Drain.mode(). */
export type DrainMode = 'working' | 'check-due' | 'waiting-for-due' | 'lingering' | 'done';

export class Drain {
  readonly owner: string;
  private readonly rawFetch: typeof fetch;
  private readonly heartbeat: boolean;
  private startedIso = '';
  private running: Promise<DrainStats> | null = null;
  /** Set synchronously when the drain will claim no more (poke can't revive it). */
  private closed = false;
  private readonly runner: Runner | undefined;
  private dirty = false;
  private readonly sleeper = new LoopSleep(() => this.clock);
  private readonly executeOptions: ExecuteOptions;
  /** Every request's timeout on one timer (see deadlines.ts), on the drain's clock (looked up when used: it is set in the constructor). */
  private readonly deadlines = new Deadlines({
    now: () => this.clock.now(),
    setTimeout: (fn, ms) => this.clock.setTimeout(fn, ms),
    clearTimeout: (handle) => this.clock.clearTimeout(handle),
  });

  // Shared with the drain's pieces (drain-*.ts, see the top of this file); not for other callers.
  readonly sql: postgres.Sql;
  readonly opts: DrainOptions;
  readonly clock: Clock;
  readonly slackMs: number;
  readonly retries: number;
  readonly retryBaseMs: number;
  readonly waitForDue: boolean;
  readonly lingerMs: number;
  started = 0;
  /** Last time rows were claimed or a request finished (linger counts from here). */
  lastActiveAt = 0;
  databaseDown = false;
  lastError: string | undefined;

  // Sending.
  inFlight = 0;
  readonly slots: FetchSlots;
  readonly bytes: ByteBudget;
  /** Claimed ahead of free slots (see aheadLimit), started as slots free up. */
  ready: { request: ClaimedRequest; claimedAt: number }[] = [];
  completed = 0;
  firstDoneAt = 0;
  errors = 0;

  readonly claiming = new ClaimState();
  readonly recording = new RecordState();
  readonly due = new DueState();
  /** Claimed rows this drain won't send, to give back (net._release, drain-give-back.ts). */
  unsent: string[] = [];
  releaseInFlight = false;
  /** Rows given back unsent (net._release), for the stats. */
  givenBack = 0;
  /** Finished outcomes waiting to be recorded (drain-record.ts). */
  readonly buffer = new RecordBuffer();

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
    // The runner's slots (a Worker opens executor lanes through one) are always kept free: once
    // slow requests hold every slot of the drain's own, a lane could not open until one answered
    // (head of line: 50 × 5 s among 2,000 fast ones held every fast one for 5 s).
    if (this.runner) this.slots.reserved = this.runner.reservedSlots;
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
  syncHeld(): void {
    this.bytes.sync(this.buffer.bytes);
  }

  /** No request may start: too many bytes wait to be recorded, or the isolate holds its limit. */
  memoryFull(): boolean {
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
    if (this.closed || this.databaseDown || requestsLeft(this) <= 0) return false;
    if (this.running && this.clock.now() - this.started >= this.opts.budgetMs) return false;
    // Past half its claim window a drain would leave the new rows with longer timeouts unclaimed
    // (they must fit before its hard limit): a new drain takes this nudge instead. Lingering
    // drains (lingerMs) make old drains common enough for this to matter.
    const window = this.opts.hardLimitMs - this.slackMs;
    if (this.running && window - (this.clock.now() - this.started) < window / 2) return false;
    this.claiming.pokes++;
    this.claiming.empty = 'no';
    // Flags only, no wake-up: poke() runs in another request's context, and in workerd a drain
    // resumed from there ties its next timers and I/O to that request, which ends at once —
    // stalling the drain (seen as 1-20 s delays under a trickle). The drain's own tick notices.
    this.dirty = true;
    return true;
  }

  /** Wakes the loop now: something it waits for happened. */
  signal(): void {
    this.dirty = true;
    this.sleeper.wake();
  }

  private async sleep(ms: number | null): Promise<void> {
    if (!this.dirty) await this.sleeper.sleep(ms);
    this.dirty = false;
  }

  /** Starts the rows waiting for a slot, as far as slots allow, and spills what they won't start soon. */
  fill(): void {
    // Without a database their outcomes can't be recorded: leave them leased for a later drain.
    if (this.databaseDown) this.ready = [];
    const now = this.clock.now();
    while (this.ready.length > 0 && this.freeSlots(now) > 0) {
      const { request, claimedAt } = this.ready.shift()!;
      if (this.sendable(request, claimedAt, now)) this.launch(request);
    }
    if (this.runner && this.ready.length > 0 && !this.memoryFull()) this.spill(this.runner, now);
    if (this.unsent.length > 0) giveBack(this);
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
      fetchSlots: this.slots.usable,
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
   * Rows to claim for the runner (for the pieces: drain-claim.ts): its room, once the rows this
   * drain would hold for its own slots (`local`: free slots and claim-ahead) or already holds are
   * more than those slots start within AHEAD_MS. Otherwise none, so against a target answering at
   * once the drain claims as it would without a runner and every row stays local.
   */
  spillRoom(now: number, local: number): number {
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
  freeSlots(now: number): number {
    // Recording lags behind, or the isolate holds its memory limit: wait (each record that ends
    // signals the loop, which fills; other drains' releases are seen at the loop's next tick).
    if (this.memoryFull()) return 0;
    const free = this.slots.free(now);
    // With a runner, requests of its own only while the runner leaves it some (subrequests).
    return this.runner ? Math.max(0, Math.min(free, this.localLeft())) : free;
  }


  /** Requests this drain may still start itself beside those waiting for headers (the runner's localLeft). */
  private localLeft(): number {
    return this.runner ? this.runner.localLeft() - this.slots.waiting.size : Infinity;
  }

  /** Starts a row on this drain's own slots, or follows one the runner started (`sent`). */
  private launch(request: ClaimedRequest, sent?: Promise<Outcome | null>): void {
    this.inFlight++;
    // Rows at the runner hold none of this drain's slots.
    if (sent === undefined) this.slots.start(request.id, this.clock.now());
    const reservation = { bytes: 0 };
    const done: Promise<Outcome | null> = request.invalid
      ? Promise.resolve(errorOutcome(request.id, request.invalid, 'invalid_request'))
      : (sent ?? execute(request, (input, init) => this.send(input, init, reservation), this.executeOptions));
    const finish = (outcome: Outcome | null): void => {
      if (outcome === null) {
        // Not sent (it waited too long, or its executor failed before answering): give it back.
        this.inFlight--;
        this.slots.finish(request.id);
        this.unsent.push(request.id);
        giveBack(this);
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
        mayClaimNow(this, this.clock.now())
      ) {
        this.signal();
      } else {
        this.dirty = true;
      }
    };
    // One reaction for both outcomes (execute never rejects; a rejection still becomes an error).
    void done.then(finish, (error: unknown) => finish(errorOutcome(request.id, `internal error: ${messageOf(error)}`)));
  }

  /**
   * The drain's lifecycle mode, decided here only: 'working' while anything is in flight, waiting
   * or claimable; then once 'check-due' (ask when the next delayed request or retry comes due);
   * 'waiting-for-due' for it within the budget; 'lingering' for a poke (lingerMs); else 'done'.
   */
  mode(now: number): DrainMode {
    const busy =
      this.claiming.inFlight ||
      this.releaseInFlight ||
      this.recording.inFlight ||
      this.due.checking ||
      this.inFlight > 0 ||
      this.ready.length > 0 ||
      this.buffer.length > 0;
    if (busy || mayClaimNow(this, now) || (this.claiming.retryAt > now && claimPossible(this, now))) return 'working';
    if (dueCheckWanted(this, now)) return 'check-due';
    if (this.due.at > 0 && withinBudget(this, now)) return 'waiting-for-due';
    if (lingering(this, now)) return 'lingering';
    return 'done';
  }

  private async loop(): Promise<DrainStats> {
    this.started = this.clock.now();
    this.lastActiveAt = this.started;
    this.startedIso = new Date(this.started).toISOString();
    for (;;) {
      this.dirty = false;
      const now = this.clock.now();
      if (this.due.at > 0 && now >= this.due.at) dueArrived(this);
      if (mayClaimNow(this, now)) startClaim(this, now);
      if (flushDue(this, now)) startRecord(this);
      this.fill();
      if (!this.runner) releaseStuck(this, now);
      const mode = this.mode(this.clock.now());
      if (mode === 'check-due') {
        startDueCheck(this, this.clock.now());
        continue;
      }
      if (mode === 'done') break;
      await this.sleep(nextTimer(this, this.clock.now()));
    }

    this.closed = true;
    this.deadlines.clear();
    this.sleeper.cancel();

    const stats: DrainStats = {
      owner: this.owner,
      started: this.startedIso,
      duration_ms: this.clock.now() - this.started,
      claimed: this.claiming.claimed,
      recorded: this.recording.recorded,
      errors: this.errors,
      stopped: this.databaseDown ? 'database' : this.claiming.empty === 'confirmed' ? 'empty' : 'budget',
    };
    if (this.opts.fetchSlots !== undefined && this.slots.headerWaits > 0) stats.header_wait_ms = Math.round(this.slots.headerWaitTotal / this.slots.headerWaits);
    if (this.givenBack > 0) stats.given_back = this.givenBack;
    if (this.lastError !== undefined) stats.last_error = this.lastError;
    if (this.heartbeat && !this.databaseDown) await writeHeartbeat(this.sql, stats);
    return stats;
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
