// The claiming side's decisions (src/core/drain-claim.ts) with plain numbers for time.
import { describe, expect, it } from 'vitest';
import {
  backoff,
  claimAfterId,
  FULL_CLAIM_EVERY_MS,
  higherId,
  judgeQueue,
  SUSPECTED_GAP_MAX_MS,
  SUSPECTED_GAP_MS,
} from '../../src/core/drain-claim.ts';
import { isDataError } from '../../src/core/drain-record.ts';

const base = { rows: 0, want: 10, idleAtIssue: true, hinted: false, poked: false, gapMs: SUSPECTED_GAP_MS / 2 };

describe('what a claim says about the queue', () => {
  it('an idle drain whose full claim finds nothing has an empty queue', () => {
    expect(judgeQueue(base)).toMatchObject({ empty: 'confirmed', fullClaimNext: false });
  });

  it('a hinted claim that finds nothing looks from the start once more before judging', () => {
    expect(judgeQueue({ ...base, hinted: true })).toEqual({ empty: 'no', fullClaimNext: true, gapMs: base.gapMs, retryInMs: null });
  });

  it('a poke during the claim means the claim may predate the new rows', () => {
    expect(judgeQueue({ ...base, poked: true })).toEqual({ empty: 'no', fullClaimNext: false, gapMs: base.gapMs, retryInMs: null });
  });

  it('a short claim with work in flight suspects an empty queue and backs off 250 ms, doubling to 4 s', () => {
    const busy = { ...base, idleAtIssue: false };
    let gapMs = base.gapMs;
    const gaps: number[] = [];
    for (let i = 0; i < 7; i++) {
      const verdict = judgeQueue({ ...busy, gapMs });
      expect(verdict.empty).toBe('suspected');
      expect(verdict.retryInMs).toBe(verdict.gapMs);
      gapMs = verdict.gapMs;
      gaps.push(gapMs);
    }
    expect(gaps).toEqual([250, 500, 1000, 2000, 4000, SUSPECTED_GAP_MAX_MS, SUSPECTED_GAP_MAX_MS]);
    // Some rows, but fewer than wanted: look again after the first gap.
    expect(judgeQueue({ ...busy, rows: 3, gapMs: 4000 })).toMatchObject({ empty: 'suspected', gapMs: SUSPECTED_GAP_MS });
  });

  it('a full claim means more may be waiting: the backoff resets', () => {
    expect(judgeQueue({ ...base, rows: 10, gapMs: 4000 })).toEqual({ empty: 'no', fullClaimNext: false, gapMs: SUSPECTED_GAP_MS / 2, retryInMs: null });
  });
});

describe('claim hints and retries', () => {
  it('claims after the highest id, but from the start once every FULL_CLAIM_EVERY_MS', () => {
    expect(claimAfterId(1000, 0, null)).toBeNull();
    expect(claimAfterId(1000 + FULL_CLAIM_EVERY_MS - 1, 1000, '42')).toBe('42');
    expect(claimAfterId(1000 + FULL_CLAIM_EVERY_MS, 1000, '42')).toBeNull();
  });

  it('compares bigint ids as text', () => {
    expect(higherId('10', '9')).toBe(true);
    expect(higherId('9', '10')).toBe(false);
    expect(higherId('9007199254740993', '9007199254740992')).toBe(true);
  });

  it('doubles the retry delay', () => {
    expect([1, 2, 3, 4].map((n) => backoff(200, n))).toEqual([200, 400, 800, 1600]);
  });

  it('isolates rows only for errors that retrying the same data cannot fix', () => {
    expect(isDataError({ code: '22P02' })).toBe(true);
    expect(isDataError({ code: 'XX000' })).toBe(true);
    expect(isDataError({ code: '08006' })).toBe(false);
    expect(isDataError(new Error('connection reset'))).toBe(false);
  });
});
