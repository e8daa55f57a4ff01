// The same execute() in Node with Node's own fetch (undici), against the shared loopback target:
// proves the core is runtime-neutral, and that undici's failure reasons (in error.cause) come
// out as clear messages.
import { describe, expect, inject, it } from 'vitest';
import { execute } from '../../src/core/execute.ts';
import type { ExecuteOptions, Outcome, QueuedRequest } from '../../src/core/types.ts';
import { queuedRequest } from '../support/requests.ts';

const target = inject('targetUrl');
const closedPort = inject('closedPort');
const opts: ExecuteOptions = { maxResponseBytes: 1_000_000, userAgent: 'pg-net-edge-node-test/1' };

const request = (path: string, overrides: Partial<QueuedRequest> = {}) => queuedRequest(target, path, overrides);
const run = (req: QueuedRequest, o: ExecuteOptions = opts) => execute(req, fetch, o);

function expectFailure(outcome: Outcome, pattern: RegExp) {
  expect(outcome).toMatchObject({ status_code: null, timed_out: false, content: null, content_base64: null });
  expect(outcome.error_msg).toMatch(pattern);
}

describe('execute in Node', () => {
  it('POST to /echo: method, body, headers, default User-Agent', async () => {
    const outcome = await run(
      request('/echo/node', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: new TextEncoder().encode('{"a":1}'),
      }),
    );
    expect(outcome).toMatchObject({ status_code: 200, content_type: 'application/json', error_msg: null });
    const echo = JSON.parse(outcome.content ?? '{}') as { method: string; body_text: string; headers: Record<string, string> };
    expect(echo.method).toBe('POST');
    expect(echo.body_text).toBe('{"a":1}');
    expect(echo.headers['user-agent']).toBe('pg-net-edge-node-test/1');
  });

  it('500 is a success outcome; redirects are followed; Set-Cookie joined', async () => {
    expect(await run(request('/status/500'))).toMatchObject({ status_code: 500, content: 'status 500', error_msg: null });
    expect(await run(request('/redirect/2'))).toMatchObject({ status_code: 200, content: 'redirected' });
    expect((await run(request('/headers'))).headers?.['set-cookie']).toBe('a=1; Path=/, b=2; Path=/');
  });

  it('binary body → exact bytes as base64', async () => {
    const outcome = await run(request('/binary'));
    expect(outcome.content).toBeNull();
    expect(outcome.content_base64).toBe(Buffer.from([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x61, 0xe2, 0x82]).toString('base64'));
  });

  it('body over the limit → error with status kept', async () => {
    const outcome = await run(request('/bytes/2048'), { ...opts, maxResponseBytes: 1024 });
    expect(outcome).toMatchObject({ status_code: 200, content: null });
    expect(outcome.error_msg).toBe('response body exceeds the 1024-byte limit (pg-net-edge MAX_RESPONSE_BYTES)');
  });

  it('timeout', async () => {
    const outcome = await run(request('/delay/3000', { timeout_milliseconds: 100 }));
    expect(outcome).toMatchObject({ status_code: null, timed_out: true, error_msg: 'Timeout of 100 ms reached' });
  });

  it('timeout during the body read', async () => {
    const outcome = await run(request('/slow-body/3000', { timeout_milliseconds: 100 }));
    expect(outcome).toMatchObject({ status_code: null, timed_out: true, error_msg: 'Timeout of 100 ms reached' });
  });

  it('refused connection says so', async () => {
    expectFailure(await run(request(`http://127.0.0.1:${closedPort}/`)), /^connection refused: .*ECONNREFUSED/);
  });

  it('dropped connection', async () => {
    expectFailure(await run(request('/drop')), /^connection closed before a complete response: other side closed/);
  });

  it('reset connection', async () => {
    expectFailure(await run(request('/reset')), /^connection reset by peer: .*ECONNRESET/);
  });

  it('malformed reply', async () => {
    expectFailure(await run(request('/malformed')), /^malformed HTTP response: /);
  });

  it('unknown host', async () => {
    expectFailure(await run(request('http://nonexistent.invalid/')), /^DNS lookup failed: .*nonexistent\.invalid/);
  });

  it('too many redirects', async () => {
    expectFailure(await run(request('/redirect/30')), /^too many redirects starting at .*\/redirect\/30$/);
  });

  it('invalid rows are refused before sending', async () => {
    expectFailure(await run(request('/echo/x', { method: 'TRACE' })), /^invalid request: method "TRACE"/);
    expectFailure(await run(request('/echo/x', { url: 'not a url' })), /^invalid request: url "not a url" is not an absolute URL/);
  });
});
