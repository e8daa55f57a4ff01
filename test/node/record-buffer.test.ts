// The record batcher's decisions (src/core/record-buffer.ts) with plain numbers for time.
import { describe, expect, it } from 'vitest';
import { FLUSH_BUSY_MS, FLUSH_COUNT, flushDelay, flushDue, RecordBuffer } from '../../src/core/record-buffer.ts';
import type { Outcome } from '../../src/core/types.ts';

function outcome(id: number, content = 'ok'): Outcome {
  return { id: String(id), status_code: 200, content_type: null, headers: {}, content, content_base64: null, timed_out: false, error_msg: null };
}

const base = { now: 0, recordInFlight: false, retryAt: 0, databaseDown: false, delayMs: 5, idle: false };

describe('record buffer', () => {
  it('flushes flushMs after the oldest outcome, not before (fake time)', () => {
    const buffer = new RecordBuffer();
    buffer.push(outcome(1), 1000);
    buffer.push(outcome(2), 1003);
    expect(flushDue(buffer, { ...base, now: 1004 })).toBe(false);
    expect(flushDue(buffer, { ...base, now: 1005 })).toBe(true);
    // One statement at a time; none during a failed record's backoff.
    expect(flushDue(buffer, { ...base, now: 1005, recordInFlight: true })).toBe(false);
    expect(flushDue(buffer, { ...base, now: 1005, retryAt: 2000 })).toBe(false);
  });

  it('flushes at once when full, when the database failed, or when nothing else is coming', () => {
    const buffer = new RecordBuffer();
    for (let i = 0; i < FLUSH_COUNT; i++) buffer.push(outcome(i), 0);
    expect(flushDue(buffer, { ...base, now: 0 })).toBe(true);
    const one = new RecordBuffer();
    one.push(outcome(1), 0);
    expect(flushDue(one, { ...base, now: 0 })).toBe(false);
    expect(flushDue(one, { ...base, now: 0, databaseDown: true })).toBe(true);
    expect(flushDue(one, { ...base, now: 0, idle: true })).toBe(true);
    expect(flushDue(new RecordBuffer(), { ...base, now: 99, idle: true })).toBe(false);
  });

  it('waits longer while running flat out, unless memory is what holds the drain back', () => {
    expect(flushDelay(5, false, false)).toBe(5);
    expect(flushDelay(5, false, true)).toBe(FLUSH_BUSY_MS);
    expect(flushDelay(5, true, true)).toBe(5);
  });

  it('takes chunks in order, counts bytes, and a failed chunk goes back to the front, due at once', () => {
    const buffer = new RecordBuffer();
    for (let i = 0; i < 5; i++) buffer.push(outcome(i, 'x'.repeat(100)), 10);
    const before = buffer.bytes;
    const { chunk, bytes } = buffer.take(20);
    expect(chunk.map((o) => o.id)).toEqual(['0', '1', '2', '3', '4']);
    expect(bytes).toBe(before);
    expect(buffer.length).toBe(0);
    expect(buffer.bytes).toBe(0);
    buffer.push(outcome(9), 30);
    buffer.putBack(chunk);
    expect(buffer.take(40).chunk.map((o) => o.id)).toEqual(['0', '1', '2', '3', '4', '9']);
    buffer.putBack([outcome(7)]);
    expect(buffer.oldestAt).toBe(0);
  });
});
