// The drain's shared timeout timer (src/core/deadlines.ts), on a fake clock: time moves only
// when a test advances it, so "not before it is due" is checked exactly, with no timed assertions.
import { describe, expect, it } from 'vitest';
import { Deadlines, GRAIN_MS } from '../../src/core/deadlines.ts';
import { FakeClock } from '../support/fake-clock.ts';

/** A Deadlines on a fake clock starting at a window boundary. */
function fake(): { d: Deadlines; clock: FakeClock } {
  const clock = new FakeClock(1_000_000);
  return { d: new Deadlines(clock), clock };
}

describe('Deadlines', () => {
  it('fires each deadline once, in deadline order, not before it is due', async () => {
    const { d, clock } = fake();
    const fired: [string, number][] = [];
    const t0 = clock.now();
    d.schedule(60, () => fired.push(['b', clock.now() - t0]));
    d.schedule(20, () => fired.push(['a', clock.now() - t0]));
    d.schedule(100, () => fired.push(['c', clock.now() - t0]));
    await clock.advance(19);
    expect(fired).toEqual([]);
    await clock.advance(81);
    expect(fired).toEqual([['a', 20], ['b', 60], ['c', 100]]);
    expect(d.size).toBe(0);
  });

  it('a cancelled deadline never fires, and the others still do', async () => {
    const { d, clock } = fake();
    const fired: string[] = [];
    const cancelFirst = d.schedule(20, () => fired.push('first'));
    d.schedule(40, () => fired.push('second'));
    cancelFirst();
    expect(d.size).toBe(1);
    await clock.advance(40);
    expect(fired).toEqual(['second']);
  });

  it('cancelling the last pending deadline drops the timer (nothing left to keep a process alive)', async () => {
    const { d, clock } = fake();
    const fired: string[] = [];
    const cancel = d.schedule(30, () => fired.push('x'));
    cancel();
    cancel(); // twice is harmless
    expect(d.size).toBe(0);
    expect(clock.pendingTimers).toBe(0);
    await clock.advance(100);
    expect(fired).toEqual([]);
  });

  it('an earlier deadline added later re-arms the timer sooner', async () => {
    const { d, clock } = fake();
    const fired: string[] = [];
    d.schedule(5000, () => fired.push('late'));
    d.schedule(10, () => fired.push('early'));
    await clock.advance(10);
    expect(fired).toEqual(['early']);
    d.clear();
  });

  it('a deadline scheduled from inside a firing callback is honoured', async () => {
    const { d, clock } = fake();
    const fired: string[] = [];
    d.schedule(10, () => {
      fired.push('one');
      d.schedule(10, () => fired.push('two'));
    });
    await clock.advance(19);
    expect(fired).toEqual(['one']);
    await clock.advance(1);
    expect(fired).toEqual(['one', 'two']);
  });

  it('clear() cancels everything pending', async () => {
    const { d, clock } = fake();
    const fired: string[] = [];
    for (let i = 0; i < 5; i++) d.schedule(10 + i, () => fired.push(String(i)));
    d.clear();
    await clock.advance(50);
    expect(fired).toEqual([]);
    expect(d.size).toBe(0);
  });

  it('many requests sharing one timeout all fire on time', async () => {
    const { d, clock } = fake();
    let fired = 0;
    const cancels = Array.from({ length: 500 }, () => d.schedule(30, () => fired++));
    // Half finish before their timeout: only the other half time out.
    for (let i = 0; i < 250; i++) cancels[i]!();
    await clock.advance(29);
    expect(fired).toBe(0);
    await clock.advance(1);
    expect(fired).toBe(250);
  });

  describe('shared timeout signals (acquire/release)', () => {
    it('requests with deadlines in the same window share one signal; other windows get their own', async () => {
      const { d, clock } = fake(); // starts at a window boundary
      const a = d.acquire(1000);
      await clock.advance(GRAIN_MS - 1); // same window for a 1000 ms timeout
      const b = d.acquire(1001 - GRAIN_MS);
      const c = d.acquire(1000); // its deadline falls in the next window
      expect(b.signal).toBe(a.signal);
      expect(c.signal).not.toBe(a.signal);
      expect(d.size).toBe(2); // one timer entry per window, not per request
      d.clear();
    });

    it('a held signal aborts with a TimeoutError no earlier than its deadline and at most a window late', async () => {
      const { d, clock } = fake();
      await clock.advance(1); // off a window boundary: the window ends later than the deadline
      const t0 = clock.now();
      const lease = d.acquire(40);
      let abortedAt: number | undefined;
      lease.signal.addEventListener('abort', () => (abortedAt = clock.now() - t0));
      await clock.advance(39);
      expect(abortedAt).toBeUndefined();
      await clock.advance(GRAIN_MS);
      expect(abortedAt).toBeGreaterThanOrEqual(40);
      expect(abortedAt).toBeLessThanOrEqual(40 + GRAIN_MS);
      expect((lease.signal.reason as Error).name).toBe('TimeoutError');
      expect(lease.signal.aborted).toBe(true);
      d.release(lease); // after the abort: harmless
      expect(d.size).toBe(0);
    });

    it('a window released by every holder never aborts and leaves no timer behind', async () => {
      const { d, clock } = fake();
      const a = d.acquire(30);
      const b = d.acquire(30);
      d.release(a);
      expect(d.size).toBe(1); // b still holds it
      d.release(b);
      expect(d.size).toBe(0);
      expect(clock.pendingTimers).toBe(0);
      await clock.advance(100);
      expect(a.signal.aborted).toBe(false);
      expect(b.signal.aborted).toBe(false);
    });

    it('a window still held by one request aborts for it even after the others released', async () => {
      const { d, clock } = fake();
      const leases = Array.from({ length: 20 }, () => d.acquire(30));
      const signals = new Set(leases.map((l) => l.signal));
      for (const lease of leases.slice(0, 19)) d.release(lease);
      await clock.advance(30 + GRAIN_MS);
      const last = leases[19]!;
      expect(last.signal.aborted).toBe(true);
      // Every signal handed out was either aborted (still held) or released untouched.
      for (const signal of signals) if (signal !== last.signal) expect(signal.aborted).toBe(false);
    });

    it('a new request after a window fired gets a fresh signal, not an aborted one', async () => {
      const { d, clock } = fake();
      const first = d.acquire(10);
      await clock.advance(10 + GRAIN_MS);
      expect(first.signal.aborted).toBe(true);
      const next = d.acquire(10);
      expect(next.signal.aborted).toBe(false);
      d.release(first);
      d.release(next);
      expect(d.size).toBe(0);
    });
  });
});
