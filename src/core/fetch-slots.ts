// The drain's slots: `concurrency` requests in flight (slow ones stop counting, up to a cap) and
// at most `fetchSlots` of them waiting for response headers (Cloudflare: 6 per invocation). Also
// tells when the slots are stuck on slow requests. Every answer takes the time as an argument, so
// the decisions are tested with plain numbers (test/node/fetch-slots.test.ts).

/**
 * A request in flight longer than this stops holding one of the `concurrency` slots (up to
 * SLOW_CAP × concurrency in flight in all), so a few slow targets can't stall the fast ones.
 */
export const SLOW_AFTER_MS = 1000;
export const SLOW_CAP = 2;
/** The least time every fetch slot must have waited for headers before a drain counts as stuck. */
const STUCK_MIN_MS = 100;
/** Header waits stuckAfterMs looks at (the most recent). */
const RECENT_WAITS = 16;

export interface Wait {
  readonly at: number;
}

export class FetchSlots {
  /** Requests whose fetch has not yet resolved, by when they started waiting, in start order. */
  readonly waiting = new Set<Wait>();
  /** Start time of each request in flight, by id, in start order (a Map keeps insertion order). */
  private readonly startedAt = new Map<string, number>();
  /** Times to response headers (ms): the last RECENT_WAITS, and the count and total of all. */
  private readonly recentWaits: number[] = [];
  headerWaits = 0;
  headerWaitTotal = 0;
  /** The median of recent header waits when stuckAfterMs last computed it. */
  medianWait = 0;
  private stuckAfter = SLOW_AFTER_MS;
  /**
   * Of `fetchSlots`, how many are kept free for someone else (a Worker's executor lanes open
   * through one). free(), stuck() and mostlyStuck() count only the rest.
   */
  reserved = 0;
  private stuckAfterAt = -1;

  constructor(
    readonly concurrency: number,
    readonly fetchSlots: number,
  ) {}

  /** Fetch slots this drain's own requests may use now. */
  get usable(): number {
    return Math.max(1, this.fetchSlots - this.reserved);
  }

  get inFlight(): number {
    return this.startedAt.size;
  }

  start(id: string, now: number): void {
    this.startedAt.set(id, now);
  }

  finish(id: string): void {
    this.startedAt.delete(id);
  }

  beginWait(now: number): Wait {
    const wait = { at: now };
    this.waiting.add(wait);
    return wait;
  }

  endWait(wait: Wait, now: number): void {
    this.waiting.delete(wait);
    const waited = now - wait.at;
    this.recentWaits[this.headerWaits % RECENT_WAITS] = waited;
    this.headerWaits++;
    this.headerWaitTotal += waited;
  }

  /** Requests that may start now: `concurrency` minus those in flight (slow ones not counted, capped), never past `fetchSlots` waiting. */
  free(now: number): number {
    const headerRoom = this.usable - this.waiting.size;
    if (headerRoom <= 0) return 0;
    return Math.min(headerRoom, this.concurrencySlots(now));
  }

  /** Free slots by `concurrency` alone (slow requests not counted, up to SLOW_CAP × concurrency). */
  private concurrencySlots(now: number): number {
    const inFlight = this.startedAt.size;
    const cap = SLOW_CAP * this.concurrency - inFlight;
    if (inFlight < this.concurrency) return Math.min(cap, this.concurrency - inFlight);
    // The slow ones come first: counting stops at the first young one instead of visiting every request.
    let slow = 0;
    for (const at of this.startedAt.values()) {
      if (now - at < SLOW_AFTER_MS) break;
      slow++;
    }
    return Math.max(0, Math.min(cap, this.concurrency - (inFlight - slow)));
  }

  /** When the next young request turns slow (freeing a `concurrency` slot); Infinity if none would. */
  nextSlowAt(now: number): number {
    if (this.waiting.size >= this.usable || this.startedAt.size >= SLOW_CAP * this.concurrency) return Infinity;
    for (const at of this.startedAt.values()) if (now - at < SLOW_AFTER_MS) return at + SLOW_AFTER_MS;
    return Infinity;
  }

  /**
   * Every fetch slot taken, all but one stuck (waiting for headers longer than stuckAfterMs()):
   * a few slow targets mixed with many fast ones. Rows claimed ahead would queue behind the one
   * slot left (waiting until the last is stuck too had fast rows trickle through it for seconds).
   */
  mostlyStuck(now: number): boolean {
    if (this.waiting.size < this.usable || this.usable < 2) return false;
    const after = this.stuckAfterMs();
    let stuck = 0;
    for (const wait of this.waiting) {
      if (now - wait.at < after) break;
      stuck++;
    }
    return stuck === this.usable - 1;
  }

  /** The shortest of recent header waits (what a slot takes when the target answers at once); null before the first. */
  shortestWaitMs(): number | null {
    if (this.recentWaits.length === 0) return null;
    let least = Infinity;
    for (const wait of this.recentWaits) if (wait < least) least = wait;
    return least;
  }

  /** Every fetch slot taken and every request in flight older than stuckAfterMs(). */
  stuck(now: number): boolean {
    if (this.waiting.size < this.usable) return false;
    let youngest = 0;
    for (const at of this.startedAt.values()) youngest = at;
    return youngest > 0 && now - youngest >= this.stuckAfterMs();
  }

  /**
   * How long every slot must have waited to count as stuck: ten times the usual (median recent)
   * header wait, between STUCK_MIN_MS and SLOW_AFTER_MS. Against ~1 ms targets a 5 s one shows
   * in 100 ms; against 100 ms targets it takes a second.
   */
  stuckAfterMs(): number {
    if (this.recentWaits.length === 0) return SLOW_AFTER_MS;
    // Re-sorted every few responses, not on every loop turn (this runs whenever the slots are full).
    if (this.stuckAfterAt < 0 || this.headerWaits - this.stuckAfterAt >= RECENT_WAITS / 4) {
      const sorted = [...this.recentWaits].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)]!;
      this.medianWait = median;
      this.stuckAfter = Math.min(SLOW_AFTER_MS, Math.max(STUCK_MIN_MS, 10 * median));
      this.stuckAfterAt = this.headerWaits;
    }
    return this.stuckAfter;
  }
}
