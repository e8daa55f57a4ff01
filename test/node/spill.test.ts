// Spill (src/core/spill.ts): which ready rows a drain with a runner keeps for its own fetch
// slots, with plain numbers for time.
import { describe, expect, it } from 'vitest';
import { AHEAD_MS } from '../../src/core/claim-ahead.ts';
import { localHorizon, type HorizonInput } from '../../src/core/spill.ts';
import { FetchSlots } from '../../src/core/fetch-slots.ts';

const base: HorizonInput = { fetchSlots: 3, waitMs: 1, stuck: false, mostlyStuck: false, localLeft: 8000 };

describe('spill: the local horizon', () => {
  it('a target answering at once: the slots start hundreds of rows within AHEAD_MS, so a claim stays local', () => {
    expect(localHorizon(base)).toBe(3 * AHEAD_MS);
    // Whole-millisecond clocks read 0 for the fastest answers: counted as 1 ms, never Infinity.
    expect(localHorizon({ ...base, waitMs: 0 })).toBe(3 * AHEAD_MS);
    expect(localHorizon(base)).toBeGreaterThan(2 * 200); // claim-ahead's most (2 × batch_size)
  });

  it('slow targets: each slot starts one row per header wait; the rest spill', () => {
    expect(localHorizon({ ...base, waitMs: 50 })).toBe(Math.floor((3 * AHEAD_MS) / 50)); // 15
    expect(localHorizon({ ...base, waitMs: 200 })).toBe(3);
  });

  it('all slots but one stuck: one slot starts rows; all stuck: none stays', () => {
    expect(localHorizon({ ...base, waitMs: 10, mostlyStuck: true })).toBe(AHEAD_MS / 10);
    expect(localHorizon({ ...base, stuck: true })).toBe(0);
  });

  it('nothing measured yet: rows stay local (a first claim against a fast target opens no lanes)', () => {
    expect(localHorizon({ ...base, waitMs: null })).toBe(8000);
  });

  it('never more than the drain may still send itself (subrequests the runner leaves)', () => {
    expect(localHorizon({ ...base, localLeft: 40 })).toBe(40);
    expect(localHorizon({ ...base, localLeft: -3 })).toBe(0);
    expect(localHorizon({ ...base, waitMs: null, localLeft: 0 })).toBe(0);
  });
});

describe('FetchSlots.shortestWaitMs', () => {
  it('the shortest of the recent header waits, null before the first', () => {
    const slots = new FetchSlots(32, 3);
    expect(slots.shortestWaitMs()).toBeNull();
    // A busy event loop delays some answers; the quickest recent one says what the target takes.
    for (const [start, end] of [
      [0, 30],
      [5, 7],
      [10, 200],
    ] as const) {
      slots.endWait(slots.beginWait(start), end);
    }
    expect(slots.shortestWaitMs()).toBe(2);
    // Only the recent waits count: 16 slow ones push the quick one out.
    for (let i = 0; i < 16; i++) slots.endWait(slots.beginWait(1000 + i), 1200 + i);
    expect(slots.shortestWaitMs()).toBe(200);
  });
});
