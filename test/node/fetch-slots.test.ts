// The drain's slot decisions (src/core/fetch-slots.ts) with plain numbers for time.
import { describe, expect, it } from 'vitest';
import { FetchSlots, SLOW_AFTER_MS, SLOW_CAP } from '../../src/core/fetch-slots.ts';

describe('fetch slots', () => {
  it('never more waiting for headers than fetchSlots, nor more in flight than concurrency', () => {
    const slots = new FetchSlots(4, 2);
    expect(slots.free(0)).toBe(2);
    slots.start('1', 0);
    const a = slots.beginWait(0);
    slots.start('2', 0);
    slots.beginWait(0);
    expect(slots.free(0)).toBe(0);
    slots.endWait(a, 3); // headers arrived: the body read goes on, the slot is free
    expect(slots.free(3)).toBe(1);
    expect(slots.headerWaits).toBe(1);
    expect(slots.headerWaitTotal).toBe(3);
  });

  it('reserved slots are never used by the drain, and stuck counts only the rest (lanes open through a reserved one)', () => {
    const slots = new FetchSlots(32, 4);
    slots.reserved = 1;
    for (let i = 0; i < 16; i++) slots.endWait(slots.beginWait(0), 2);
    expect(slots.free(0)).toBe(3);
    for (const id of ['a', 'b', 'c']) {
      slots.start(id, 1000);
      slots.beginWait(1000);
    }
    expect(slots.free(1000)).toBe(0);
    // Three slow requests hold every usable slot: stuck, though a 4th slot is free (kept for lanes).
    expect(slots.stuck(1099)).toBe(false);
    expect(slots.stuck(1100)).toBe(true);
  });

  it('a request in flight past SLOW_AFTER_MS stops holding a concurrency slot, up to SLOW_CAP × concurrency', () => {
    const slots = new FetchSlots(2, Infinity);
    slots.start('1', 0);
    slots.start('2', 0);
    expect(slots.free(SLOW_AFTER_MS - 1)).toBe(0);
    expect(slots.nextSlowAt(10)).toBe(SLOW_AFTER_MS);
    expect(slots.free(SLOW_AFTER_MS)).toBe(2);
    slots.start('3', SLOW_AFTER_MS);
    slots.start('4', SLOW_AFTER_MS);
    expect(slots.inFlight).toBe(SLOW_CAP * 2);
    expect(slots.free(10 * SLOW_AFTER_MS)).toBe(0);
    expect(slots.nextSlowAt(SLOW_AFTER_MS)).toBe(Infinity);
  });

  it('stuck: every slot waited 10× the median header wait (at least 100 ms); mostly stuck: all but one', () => {
    const slots = new FetchSlots(10, 3);
    // 16 quick responses: median 2 ms, so stuck after 100 ms (the floor).
    for (let i = 0; i < 16; i++) slots.endWait(slots.beginWait(0), 2);
    expect(slots.stuckAfterMs()).toBe(100);
    slots.start('a', 1000);
    slots.beginWait(1000);
    slots.start('b', 1000);
    slots.beginWait(1000);
    slots.start('c', 1090);
    slots.beginWait(1090);
    expect(slots.stuck(1099)).toBe(false);
    expect(slots.mostlyStuck(1099)).toBe(false);
    expect(slots.mostlyStuck(1100)).toBe(true);
    expect(slots.stuck(1189)).toBe(false);
    expect(slots.stuck(1190)).toBe(true);
  });
});
