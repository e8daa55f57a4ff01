// Request timeouts on one timer. A timer per request costs a setTimeout and a clearTimeout each
// (with nodejs_compat, workerd wraps both in Node-style Timeout objects): measured at ~10% of the
// drain's CPU in workerd. Here each request only adds and removes a map entry, and one timer is
// armed for the earliest deadline. It fires at that deadline (the same precision as a timer of
// its own); an entry removed before then makes it fire early, find nothing due and re-arm.
//
// Requests also share their AbortSignals (acquire/release): one AbortController per window of
// GRAIN_MS in which deadlines fall, not one per request. A window's signal aborts at the window's
// end, when every deadline in it has passed: at most GRAIN_MS late, never early.
import { systemClock, type Clock } from './clock.ts';

/** Width of a shared-signal window (ms): how late a timeout may fire at most. */
export const GRAIN_MS = 5;

/** A shared timeout signal, held by the requests whose deadlines fall in one window. */
export interface TimeoutLease {
  readonly signal: AbortSignal;
}

interface Window extends TimeoutLease {
  readonly at: number;
  holders: number;
  readonly cancel: () => void;
}

export class Deadlines {
  private readonly entries = new Map<number, { at: number; fire: () => void }>();
  private readonly windows = new Map<number, Window>();
  private nextId = 1;
  private timer: unknown;
  private timerAt = Infinity;

  /** Time and timers come from `clock` (tests pass a fake one). */
  constructor(private readonly clock: Clock = systemClock) {}

  /** Calls `fire` after `ms` unless the returned cancel function is called first. */
  schedule(ms: number, fire: () => void): () => void {
    const id = this.nextId++;
    const at = this.clock.now() + Math.max(0, ms);
    this.entries.set(id, { at, fire });
    if (at < this.timerAt) this.arm(at);
    return () => {
      this.entries.delete(id);
      // Nothing left to time: drop the timer so it holds nothing open (Node's event loop).
      if (this.entries.size === 0) this.disarm();
    };
  }

  /**
   * A signal that aborts with a TimeoutError no earlier than `ms` from now (and at most GRAIN_MS
   * later). Release it when the request ends, aborted or not.
   */
  acquire(ms: number): TimeoutLease {
    const now = this.clock.now();
    const at = Math.ceil((now + Math.max(0, ms)) / GRAIN_MS) * GRAIN_MS;
    let window = this.windows.get(at);
    if (window === undefined) {
      const controller = new AbortController();
      const cancel = this.schedule(at - now, () => {
        this.windows.delete(at);
        const reason = new Error('Timeout reached');
        reason.name = 'TimeoutError';
        controller.abort(reason);
      });
      window = { at, signal: controller.signal, holders: 0, cancel };
      this.windows.set(at, window);
    }
    window.holders++;
    return window;
  }

  /** The request holding `lease` has ended: its window's timer goes once nobody holds it. */
  release(lease: TimeoutLease): void {
    const window = lease as Window;
    if (--window.holders > 0 || this.windows.get(window.at) !== window) return;
    this.windows.delete(window.at);
    window.cancel();
  }

  /** Pending deadlines (for tests and stats). */
  get size(): number {
    return this.entries.size;
  }

  /** Cancels every pending deadline without firing it. */
  clear(): void {
    this.entries.clear();
    this.windows.clear();
    this.disarm();
  }

  private arm(at: number): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => this.run(), Math.max(0, at - this.clock.now()));
  }

  private disarm(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private run(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = this.clock.now();
    const due: (() => void)[] = [];
    let next = Infinity;
    for (const [id, entry] of this.entries) {
      if (entry.at <= now) {
        this.entries.delete(id);
        due.push(entry.fire);
      } else if (entry.at < next) {
        next = entry.at;
      }
    }
    if (next !== Infinity) this.arm(next);
    for (const fire of due) fire();
  }
}
