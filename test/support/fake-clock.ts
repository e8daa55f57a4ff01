// A clock the test moves by hand (src/core/clock.ts): time stands still until advance(), which
// fires the timers that come due in order, letting the code they wake run between them.
import type { Clock } from '../../src/core/clock.ts';

interface Timer {
  at: number;
  fn: () => void;
}

/** Lets promise reactions and ready I/O callbacks run (an event-loop turn, no time passes). */
export function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock implements Clock {
  private t: number;
  private nextId = 1;
  private readonly timers = new Map<number, Timer>();

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  /** Timers set and not yet fired or cleared. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing each timer due by then at its own time. */
  async advance(ms: number): Promise<void> {
    const until = this.t + ms;
    for (;;) {
      let next: [number, Timer] | undefined;
      for (const entry of this.timers) if (entry[1].at <= until && (next === undefined || entry[1].at < next[1].at)) next = entry;
      if (next === undefined) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
      await turn();
    }
    this.t = until;
    await turn();
  }
}
