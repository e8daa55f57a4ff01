// A QueuedRequest as net._claim would hand it over, for tests that call execute() directly in
// workerd or Node. Runtime-neutral: the target URL comes from the caller (inject('targetUrl')).
import type { QueuedRequest } from '../../src/core/types.ts';

let next = 1;

/** GET <target><path> (or the absolute URL given) with a 5 s timeout; overrides win. */
export function queuedRequest(target: string, path: string, overrides: Partial<QueuedRequest> = {}): QueuedRequest {
  return {
    id: String(next++),
    method: 'GET',
    url: path.startsWith('http') ? path : `${target}${path}`,
    headers: {},
    body: null,
    timeout_milliseconds: 5000,
    attempts: 1,
    ...overrides,
  };
}
