// The drain's shared timeout timer (src/core/deadlines.ts): pure logic on real timers.
import { describe, expect, it, vi } from 'vitest';
import { Deadlines, GRAIN_MS } from '../../src/core/deadlines.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('Deadlines', () => {
  it('fires each deadline once, in deadline order, not before it is due', async () => {
    const d = new Deadlines();
    const fired: [string, number][] = [];
    const t0 = Date.now();
    d.schedule(60, () => fired.push(['b', Date.now() - t0]));
    d.schedule(20, () => fired.push(['a', Date.now() - t0]));
    d.schedule(100, () => fired.push(['c', Date.now() - t0]));
    // Generous waits throughout: a loaded CI machine delays timers, never advances them.
    await sleep(400);
    expect(fired.map(([name]) => name)).toEqual(['a', 'b', 'c']);
    // setTimeout may round down by a millisecond; never earlier than that.
    expect(fired[0]![1]).toBeGreaterThanOrEqual(19);
    expect(fired[1]![1]).toBeGreaterThanOrEqual(59);
    expect(fired[2]![1]).toBeGreaterThanOrEqual(99);
    expect(d.size).toBe(0);
  });

  it('a cancelled deadline never fires, and the others still do', async () => {
    const d = new Deadlines();
    const fired: string[] = [];
    const cancelFirst = d.schedule(20, () => fired.push('first'));
    d.schedule(40, () => fired.push('second'));
    cancelFirst();
    expect(d.size).toBe(1);
    await sleep(300);
    expect(fired).toEqual(['second']);
  });

  it('cancelling the last pending deadline drops the timer (nothing left to keep a process alive)', async () => {
    const d = new Deadlines();
    const fired: string[] = [];
    const cancel = d.schedule(30, () => fired.push('x'));
    cancel();
    cancel(); // twice is harmless
    expect(d.size).toBe(0);
    await sleep(200);
    expect(fired).toEqual([]);
  });

  it('an earlier deadline added later re-arms the timer sooner', async () => {
    const d = new Deadlines();
    const fired: string[] = [];
    d.schedule(5000, () => fired.push('late'));
    d.schedule(10, () => fired.push('early'));
    await sleep(300);
    expect(fired).toEqual(['early']);
    d.clear();
  });

  it('a deadline scheduled from inside a firing callback is honoured', async () => {
    const d = new Deadlines();
    const fired: string[] = [];
    d.schedule(10, () => {
      fired.push('one');
      d.schedule(10, () => fired.push('two'));
    });
    await sleep(300);
    expect(fired).toEqual(['one', 'two']);
  });

  it('clear() cancels everything pending', async () => {
    const d = new Deadlines();
    const fired: string[] = [];
    for (let i = 0; i < 5; i++) d.schedule(10 + i, () => fired.push(String(i)));
    d.clear();
    await sleep(50);
    expect(fired).toEqual([]);
    expect(d.size).toBe(0);
  });

  it('many requests sharing one timeout all fire on time', async () => {
    const d = new Deadlines();
    let fired = 0;
    const cancels = Array.from({ length: 500 }, () => d.schedule(30, () => fired++));
    // Half finish before their timeout: only the other half time out.
    for (let i = 0; i < 250; i++) cancels[i]!();
    await sleep(300);
    expect(fired).toBe(250);
  });

  describe('shared timeout signals (acquire/release)', () => {
    it('requests with deadlines in the same window share one signal; other windows get their own', () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      try {
        vi.setSystemTime(1_000_000); // a window boundary
        const d = new Deadlines();
        const a = d.acquire(1000);
        vi.setSystemTime(1_000_000 + GRAIN_MS - 1); // same window for a 1000 ms timeout
        const b = d.acquire(1001 - GRAIN_MS);
        const c = d.acquire(1000); // its deadline falls in the next window
        expect(b.signal).toBe(a.signal);
        expect(c.signal).not.toBe(a.signal);
        expect(d.size).toBe(2); // one timer entry per window, not per request
        d.clear();
      } finally {
        vi.useRealTimers();
      }
    });

    it('a held signal aborts with a TimeoutError no earlier than its deadline and at most a window late', async () => {
      const d = new Deadlines();
      const t0 = Date.now();
      const lease = d.acquire(40);
      const abortedAt = new Promise<number>((resolve) => lease.signal.addEventListener('abort', () => resolve(Date.now() - t0)));
      const at = await abortedAt;
      expect(at).toBeGreaterThanOrEqual(39);
      // Late only by the window and by a loaded machine's timer delay.
      expect(at).toBeLessThan(40 + GRAIN_MS + 250);
      expect((lease.signal.reason as Error).name).toBe('TimeoutError');
      expect(lease.signal.aborted).toBe(true);
      d.release(lease); // after the abort: harmless
      expect(d.size).toBe(0);
    });

    it('a window released by every holder never aborts and leaves no timer behind', async () => {
      const d = new Deadlines();
      const a = d.acquire(30);
      const b = d.acquire(30);
      d.release(a);
      expect(d.size).toBe(1); // b still holds it
      d.release(b);
      expect(d.size).toBe(0);
      await sleep(150);
      expect(a.signal.aborted).toBe(false);
      expect(b.signal.aborted).toBe(false);
    });

    it('a window still held by one request aborts for it even after the others released', async () => {
      const d = new Deadlines();
      const leases = Array.from({ length: 20 }, () => d.acquire(30));
      const signals = new Set(leases.map((l) => l.signal));
      for (const lease of leases.slice(0, 19)) d.release(lease);
      await sleep(200);
      const last = leases[19]!;
      expect(last.signal.aborted).toBe(true);
      // Every signal handed out was either aborted (still held) or released untouched.
      for (const signal of signals) if (signal !== last.signal) expect(signal.aborted).toBe(false);
    });

    it('a new request after a window fired gets a fresh signal, not an aborted one', async () => {
      const d = new Deadlines();
      const first = d.acquire(10);
      await sleep(100);
      expect(first.signal.aborted).toBe(true);
      const next = d.acquire(10);
      expect(next.signal.aborted).toBe(false);
      d.release(first);
      d.release(next);
      expect(d.size).toBe(0);
    });
  });
});
