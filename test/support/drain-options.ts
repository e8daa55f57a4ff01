// Drain options for tests (workerd and Node alike): small budgets, a test User-Agent.
import type { DrainOptions } from '../../src/core/types.ts';

export function options(overrides: Partial<DrainOptions> = {}): DrainOptions {
  return {
    concurrency: 16,
    batchSize: 200,
    budgetMs: 20_000,
    hardLimitMs: 60_000,
    leaseMarginMs: 30_000,
    flushMs: 5,
    maxResponseBytes: 2_097_152,
    userAgent: 'pg-net-edge-test/1',
    ...overrides,
  };
}
