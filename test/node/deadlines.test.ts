// The drain's shared timeout timer (src/core/deadlines.ts): pure logic on real timers.
import { describe, expect, it } from 'vitest';
import { Deadlines } from '../../src/core/deadlines.ts';

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
});
