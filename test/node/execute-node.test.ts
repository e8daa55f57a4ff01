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

function expectFailure(outcome: Outcome, pattern: RegExp, kind?: string) {
  expect(outcome).toMatchObject({ status_code: null, timed_out: false, content: null, content_base64: null });
  expect(outcome.error_msg).toMatch(pattern);
  if (kind !== undefined) expect(outcome.error_kind).toBe(kind);
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
    expect((await run(request('/headers'))).headers?.['Set-Cookie']).toBe('a=1; Path=/, b=2; Path=/');
  });

  it('binary body → exact bytes as base64', async () => {
    const outcome = await run(request('/binary'));
    expect(outcome.content).toBeNull();
    expect(outcome.content_base64).toBe(Buffer.from([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x61, 0xe2, 0x82]).toString('base64'));
  });

  it('body over the limit → error with status kept', async () => {
    const outcome = await run(request('/bytes/2048'), { ...opts, maxResponseBytes: 1024 });
    expect(outcome).toMatchObject({ status_code: 200, content: null, error_kind: 'too_large' });
    expect(outcome.error_msg).toBe('response body exceeds the 1024-byte limit (pg-net-edge MAX_RESPONSE_BYTES)');
  });

  it('timeout', async () => {
    const outcome = await run(request('/delay/3000', { timeout_milliseconds: 100 }));
    expect(outcome).toMatchObject({ status_code: null, timed_out: true, error_msg: 'Timeout of 100 ms reached', error_kind: 'timeout' });
  });

  it('timeout during the body read', async () => {
    const outcome = await run(request('/slow-body/3000', { timeout_milliseconds: 100 }));
    expect(outcome).toMatchObject({ status_code: null, timed_out: true, error_msg: 'Timeout of 100 ms reached' });
  });

  // pg_net's (curl's) text first, then the detail; error_kind for new code.
  it('refused connection says so', async () => {
    expectFailure(await run(request(`http://127.0.0.1:${closedPort}/`)), /^Couldn't connect to server: connection refused: .*ECONNREFUSED/, 'connect');
  });

  it('dropped connection', async () => {
    expectFailure(
      await run(request('/drop')),
      /^Server returned nothing \(no headers, no data\): connection closed before a complete response: other side closed/,
      'no_response',
    );
  });

  it('reset connection', async () => {
    expectFailure(await run(request('/reset')), /^Failure when receiving data from the peer: connection reset by peer: .*ECONNRESET/, 'receive');
  });

  it('malformed reply', async () => {
    expectFailure(await run(request('/malformed')), /^Weird server reply: malformed HTTP response: /, 'malformed');
  });

  it('unknown host', async () => {
    expectFailure(await run(request('http://nonexistent.invalid/')), /^Couldn't resolve host name: DNS lookup failed: .*nonexistent\.invalid/, 'dns');
  });

  it('too many redirects', async () => {
    expectFailure(
      await run(request('/redirect/30')),
      /^Number of redirects hit maximum amount: too many redirects starting at .*\/redirect\/30$/,
      'redirects',
    );
  });

  it('lenient like curl: a header name with spaces is a success (Node\'s fetch takes it)', async () => {
    const outcome = await run(request('/header-spaces'));
    expect(outcome).toMatchObject({ status_code: 200, content: 'ok', error_msg: null });
    expect(outcome.headers?.['X Bad Header']).toBe('1');
  });

  it('lenient like curl: http://localhost:<port> reaches a server on ::1 only', async () => {
    const outcome = await run(request(`http://localhost:${inject('ipv6OnlyPort')}/`));
    expect(outcome).toMatchObject({ status_code: 200, content: 'ipv6 only', error_msg: null });
  });

  it('invalid rows are refused before sending', async () => {
    expectFailure(await run(request('/echo/x', { method: 'TRACE' })), /^invalid request: method "TRACE"/, 'invalid_request');
    expectFailure(await run(request('/echo/x', { url: 'not a url' })), /^invalid request: url "not a url" is not an absolute URL/);
  });
});
