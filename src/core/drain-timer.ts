// When the drain's loop should wake next, if nothing signals it sooner: a request turning slow
// (freeing a slot), a claim or record retry, a flush time, a request coming due, or the poke tick.
import type { Clock } from './clock.ts';
import type { Drain } from './drain.ts';
import { claimPossible } from './drain-claim.ts';
import { lingering } from './drain-idle.ts';
import { flushDelay } from './drain-record.ts';

/** How often a busy drain checks for pokes when nothing else wakes it. */
export const POKE_TICK_MS = 10;

/** When the next young request turns slow and frees a slot, if slots are what claiming waits for. */
export function nextSlowAt(d: Drain, now: number): number {
  if (d.freeSlots(now) > 0) return Infinity;
  if (d.ready.length === 0 && (d.claiming.inFlight || !claimPossible(d, now))) return Infinity;
  return d.slots.nextSlowAt(now);
}

/** Milliseconds the loop may sleep (0: go round again at once). */
export function nextTimer(d: Drain, now: number): number {
  let next = nextSlowAt(d, now);
  if (d.claiming.empty === 'suspected' && !d.claiming.inFlight && d.claiming.suspectedRetryAt > now && claimPossible(d, now)) {
    next = Math.min(next, d.claiming.suspectedRetryAt);
  }
  if (!d.claiming.inFlight && d.claiming.retryAt > now && claimPossible(d, now)) next = Math.min(next, d.claiming.retryAt);
  if (!d.recording.inFlight && d.buffer.length > 0) {
    next = Math.min(next, Math.max(d.recording.retryAt, d.buffer.oldestAt + flushDelay(d, now)));
  }
  // Waiting for a request to come due: keep the poke tick, so a nudge meanwhile isn't delayed.
  if (d.due.at > 0) return Math.max(0, Math.min(next, d.due.at, now + POKE_TICK_MS) - now);
  if (next === Infinity) {
    // Something in flight will signal; the short tick is how a poke is noticed while only slow
    // requests are in flight (pokes don't wake the loop, see Drain.poke()).
    return d.inFlight > 0 || d.ready.length > 0 || d.claiming.inFlight || d.recording.inFlight || d.due.checking || lingering(d, now)
      ? POKE_TICK_MS
      : 0;
  }
  return Math.max(0, next - now);
}

/**
 * The loop's sleep: until woken (wake()) or `ms` pass on the clock. One timer serves many turns:
 * the loop wakes on nearly every completion and then asks for the same ~10 ms tick again, so a
 * pending timer due no later than wanted is kept rather than cleared and re-armed per request.
 * Waking early is harmless (the loop re-checks).
 */
export class LoopSleep {
  private wakeUp: (() => void) | null = null;
  private timer: unknown;
  private timerAt = 0;

  constructor(private readonly clock: () => Clock) {}

  sleep(ms: number | null): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wakeUp = resolve;
      if (ms === null) return;
      const clock = this.clock();
      const at = clock.now() + Math.max(0, ms);
      if (this.timer !== undefined && this.timerAt <= at) return;
      if (this.timer !== undefined) clock.clearTimeout(this.timer);
      this.timerAt = at;
      this.timer = clock.setTimeout(() => {
        this.timer = undefined;
        this.wake();
      }, Math.max(0, ms));
    });
  }

  wake(): void {
    const wake = this.wakeUp;
    this.wakeUp = null;
    wake?.();
  }

  /** The drain stopped: drop the pending timer. */
  cancel(): void {
    if (this.timer !== undefined) this.clock().clearTimeout(this.timer);
    this.timer = undefined;
  }
}
