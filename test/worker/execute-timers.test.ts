// workerd allows 10,000 active timers per invocation. execute() must release its timeout timer
// when a request ends: a drain that ran >10,000 requests with long timeouts within one
// invocation used to fail every further request ("exceeded the number of active timeouts").
import { expect, inject, it } from 'vitest';
import { execute } from '../../src/core/execute.ts';
import type { QueuedRequest } from '../../src/core/types.ts';

const target = inject('targetUrl');

it('more than 10,000 requests with long timeouts in one invocation all succeed', async () => {
  const total = 10_050;
  const lanes = 50;
  const prefix = `/hits/timers-${Date.now().toString(36)}-`;
  let next = 0;
  const failures: string[] = [];
  const lane = async () => {
    for (let i = next++; i < total; i = next++) {
      const request: QueuedRequest = {
        id: String(i + 1),
        method: 'GET',
        url: `${target}${prefix}${i}`,
        headers: {},
        body: null,
        timeout_milliseconds: 60_000,
        attempts: 1,
      };
      const outcome = await execute(request, fetch, { maxResponseBytes: 1_000_000, userAgent: 'pg-net-edge-test/1' });
      if (outcome.status_code !== 200) failures.push(outcome.error_msg ?? `status ${outcome.status_code}`);
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  expect(failures.slice(0, 3)).toEqual([]);
  expect(failures.length).toBe(0);
}, 120_000);
