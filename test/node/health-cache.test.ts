// GET /health's cache (pure, injected clock): one probe in flight however many callers, fresh
// for 15 s after a success and 5 s after a failure; the short body leaks nothing.
import { describe, expect, it } from 'vitest';
import { FRESH_FAILED_MS, FRESH_OK_MS, HealthCache, healthBody, STUCK_PROBE_MS, type Probe } from '../../src/worker/health.ts';

function setup(results: Array<Probe | Error>) {
  let clock = 1_000_000;
  let probes = 0;
  const release: Array<() => void> = [];
  const cache = new HealthCache(
    () => {
      const result = results[Math.min(probes, results.length - 1)]!;
      probes++;
      // Each probe waits until the test lets it finish, so callers pile up on the one in flight.
      return new Promise<Probe>((resolve, reject) => {
        release.push(() => (result instanceof Error ? reject(result) : resolve(result)));
      });
    },
    () => clock,
  );
  return {
    cache,
    probes: () => probes,
    advance: (ms: number) => (clock += ms),
    finish: async () => {
      while (release.length) release.shift()!();
      await new Promise((r) => setTimeout(r, 0));
    },
  };
}

const OK: Probe = { database: 'ok', details: { queue_depth: 3 } };
const DOWN: Probe = { database: 'unreachable', details: {}, error: 'too many connections for role "app_owner"' };

describe('HealthCache', () => {
  it('100 callers at once share one probe', async () => {
    const t = setup([OK]);
    const all = Promise.all(Array.from({ length: 100 }, () => t.cache.get()));
    await t.finish();
    const snapshots = await all;
    expect(t.probes()).toBe(1);
    expect(new Set(snapshots).size).toBe(1);
  });

  it('a success is fresh for 15 s, then probed again', async () => {
    const t = setup([OK]);
    const first = t.cache.get();
    await t.finish();
    await first;
    t.advance(FRESH_OK_MS - 1);
    await t.cache.get();
    expect(t.probes()).toBe(1);
    t.advance(1);
    const again = t.cache.get();
    await t.finish();
    await again;
    expect(t.probes()).toBe(2);
  });

  it('a failure (or a throwing probe) is fresh for 5 s only', async () => {
    const t = setup([new Error('boom'), DOWN]);
    const first = t.cache.get();
    await t.finish();
    expect(await first).toMatchObject({ database: 'unreachable', error: 'Error: boom' });
    t.advance(FRESH_FAILED_MS - 1);
    await t.cache.get();
    expect(t.probes()).toBe(1);
    t.advance(1);
    const second = t.cache.get();
    await t.finish();
    expect(await second).toMatchObject(DOWN);
    expect(t.probes()).toBe(2);
  });

  it('a probe that never settles is abandoned after STUCK_PROBE_MS', async () => {
    const t = setup([OK]);
    void t.cache.get(); // never finished
    t.advance(STUCK_PROBE_MS - 1);
    void t.cache.get();
    expect(t.probes()).toBe(1);
    t.advance(1);
    const next = t.cache.get();
    expect(t.probes()).toBe(2);
    await t.finish();
    expect(await next).toMatchObject({ database: 'ok' });
  });

  it('the unauthenticated body is ok/database/checked_at only; the secret unlocks details and the error', () => {
    const snapshot = { ...DOWN, checkedAt: Date.UTC(2026, 0, 1) };
    const open = healthBody(snapshot, false);
    expect(open).toEqual({ ok: false, database: 'unreachable', checked_at: '2026-01-01T00:00:00.000Z' });
    expect(JSON.stringify(open)).not.toContain('app_owner');
    expect(healthBody(snapshot, true)).toMatchObject({ error: DOWN.error, queue_depth: null });
    expect(healthBody({ ...OK, checkedAt: 0 }, true)).toMatchObject({ ok: true, queue_depth: 3, last_drain: null });
  });
});
