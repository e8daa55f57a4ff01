// Claim-ahead (src/core/claim-ahead.ts) with plain numbers for time.
import { describe, expect, it } from 'vitest';
import { AHEAD_MS, aheadLimit, type AheadInput } from '../../src/core/claim-ahead.ts';

const base: AheadInput = {
  now: 1000,
  started: 0,
  firstDoneAt: 100,
  completed: 100,
  concurrency: 32,
  fetchSlots: 5,
  batchSize: 200,
  budgetMs: 20_000,
  leaseMarginMs: 30_000,
  mostlyStuck: false,
  medianWaitMs: 0,
};

describe('claim-ahead', () => {
  it('none before there is a rate to go by, or with a tiny lease margin', () => {
    expect(aheadLimit({ ...base, completed: 4 })).toBe(0);
    expect(aheadLimit({ ...base, now: 100 })).toBe(0);
    expect(aheadLimit({ ...base, leaseMarginMs: 1999 })).toBe(0);
  });

  it('what the completion rate starts in AHEAD_MS, at most twice batch_size', () => {
    // 100 completed in the 900 ms since the first: 0.111/ms × 250 ms = 27.
    expect(aheadLimit(base)).toBe(Math.floor((100 / 900) * AHEAD_MS));
    expect(aheadLimit({ ...base, completed: 100_000 })).toBe(400);
  });

  it('never more than the budget has left to start', () => {
    expect(aheadLimit({ ...base, now: 19_950, completed: 19_850 })).toBe(Math.floor((19_850 / 19_850) * 50));
  });

  it('with all slots but one stuck: one request per median header wait', () => {
    expect(aheadLimit({ ...base, mostlyStuck: true, medianWaitMs: 10 })).toBe(Math.floor(AHEAD_MS / 10));
  });
});
