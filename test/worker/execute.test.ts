// execute() inside workerd, with workerd's real fetch against the real loopback target:
// every kind of reply and failure a worker meets must become the right Outcome, never a throw.
import { describe, expect, inject, it } from 'vitest';
import { execute } from '../../src/core/execute.ts';
import { decodeBody } from '../../src/core/response.ts';
import type { ExecuteOptions, Outcome, QueuedRequest } from '../../src/core/types.ts';
import { canConnect } from '../../src/worker/probe.ts';
import { queuedRequest } from '../support/requests.ts';

const target = inject('targetUrl');
const closedPort = inject('closedPort');
const opts: ExecuteOptions = { maxResponseBytes: 1_000_000, userAgent: 'pg-net-edge-test/1' };

const request = (path: string, overrides: Partial<QueuedRequest> = {}) => queuedRequest(target, path, overrides);

const run = (req: QueuedRequest, o: ExecuteOptions = opts) => execute(req, fetch, o);

/** As the Worker runs it: with the TCP probe that refines workerd's vague errors. */
const probing: ExecuteOptions = { ...opts, canConnect };

function expectFailure(outcome: Outcome, pattern: RegExp, kind?: string) {
  if (kind !== undefined) expect(outcome.error_kind).toBe(kind);
  expect(outcome.status_code).toBeNull();
  expect(outcome.timed_out).toBe(false);
  expect(outcome.content).toBeNull();
  expect(outcome.content_base64).toBeNull();
  expect(outcome.error_msg).toMatch(pattern);
}

interface Echo {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string>;
  body_base64: string;
  body_text: string;
}
const echoOf = (outcome: Outcome) => JSON.parse(outcome.content ?? 'null') as Echo;

describe('execute in workerd: successes', () => {
  it('GET /echo: method, path, query, default User-Agent, no body', async () => {
    const req = request('/echo/get?a=1&b=two', { headers: { 'X-Test': 'yes', 'X-Num': 42, 'X-Bool': true } });
    const outcome = await run(req);
    expect(outcome).toMatchObject({ id: req.id, status_code: 200, timed_out: false, error_msg: null });
    expect(outcome.content_type).toBe('application/json');
    expect(outcome.headers?.['Content-Type']).toBe('application/json');
    const echo = echoOf(outcome);
    expect(echo).toMatchObject({ method: 'GET', path: '/echo/get', query: 'a=1&b=two', body_text: '' });
    expect(echo.headers['user-agent']).toBe('pg-net-edge-test/1');
    expect(echo.headers['x-test']).toBe('yes');
    expect(echo.headers['x-num']).toBe('42');
    expect(echo.headers['x-bool']).toBe('true');
  });

  it('a User-Agent of the request wins, whatever its case', async () => {
    const echo = echoOf(await run(request('/echo/ua', { headers: { 'user-AGENT': 'mine/2' } })));
    expect(echo.headers['user-agent']).toBe('mine/2');
  });

  it('POST sends the body bytes and headers exactly; lower-case method is accepted', async () => {
    const body = new TextEncoder().encode('{"hello": "wörld"}');
    const outcome = await run(
      request('/echo/post', { method: 'post', headers: { 'Content-Type': 'application/json' }, body }),
    );
    expect(outcome.status_code).toBe(200);
    const echo = echoOf(outcome);
    expect(echo.method).toBe('POST');
    expect(echo.body_text).toBe('{"hello": "wörld"}');
    expect(echo.headers['content-type']).toBe('application/json');
  });

  it('PUT, PATCH, DELETE (with body), OPTIONS reach the target with their method', async () => {
    for (const method of ['PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      const outcome = await run(request('/echo/m', { method, body: new TextEncoder().encode(method) }));
      const echo = echoOf(outcome);
      expect(echo.method).toBe(method);
      if (method !== 'OPTIONS') expect(echo.body_text).toBe(method);
    }
  });

  it('a body on a GET is not sent (fetch cannot), the request still succeeds', async () => {
    const outcome = await run(request('/echo/getbody', { body: new TextEncoder().encode('ignored') }));
    expect(outcome.status_code).toBe(200);
    expect(echoOf(outcome).body_text).toBe('');
  });

  it('binary request body arrives byte for byte', async () => {
    const body = Uint8Array.from([0, 1, 2, 0xff, 0xfe, 0x80]);
    const echo = echoOf(await run(request('/echo/bin', { method: 'POST', body })));
    expect(echo.body_base64).toBe(btoa(String.fromCharCode(...body)));
  });

  it('HEAD: status and headers, no content', async () => {
    const outcome = await run(request('/status/200', { method: 'HEAD' }));
    expect(outcome).toMatchObject({ status_code: 200, content: null, content_base64: null, error_msg: null });
  });

  it.each([200, 201, 404, 500, 503])('status %i is a success outcome with its body', async (code) => {
    const outcome = await run(request(`/status/${code}`));
    expect(outcome).toMatchObject({
      status_code: code,
      content: `status ${code}`,
      content_base64: null,
      timed_out: false,
      error_msg: null,
      content_type: 'text/plain; charset=utf-8',
    });
  });

  it('204: empty body → content null', async () => {
    const outcome = await run(request('/status/204'));
    expect(outcome).toMatchObject({ status_code: 204, content: null, content_base64: null, error_msg: null });
    expect(outcome.content_type).toBeNull();
  });

  it('a delay shorter than the timeout succeeds', async () => {
    const outcome = await run(request('/delay/50', { timeout_milliseconds: 5000 }));
    expect(outcome).toMatchObject({ status_code: 200, content: 'delayed 50', timed_out: false });
  });

  it('redirect chains are followed; the final response is recorded', async () => {
    const outcome = await run(request('/redirect/3'));
    expect(outcome).toMatchObject({ status_code: 200, content: 'redirected', error_msg: null });
    expect(outcome.headers?.['Location']).toBeUndefined();
  });

  it('redirect-to another URL lands on it', async () => {
    const to = encodeURIComponent(`${target}/echo/landed?x=1`);
    const outcome = await run(request(`/redirect-to?url=${to}`));
    expect(echoOf(outcome)).toMatchObject({ method: 'GET', path: '/echo/landed', query: 'x=1' });
  });

  it('multi-valued headers: Set-Cookie and X-Multi joined with ", "', async () => {
    const outcome = await run(request('/headers'));
    expect(outcome.status_code).toBe(200);
    expect(outcome.headers?.['Set-Cookie']).toBe('a=1; Path=/, b=2; Path=/');
    expect(outcome.headers?.['X-Multi']).toBe('one, two');
    expect(outcome.headers?.['X-Custom']).toBe('custom-value');
    // Names in their usual capitalisation, as pg_net stores them (fetch hands them over lower-cased).
    expect(Object.keys(outcome.headers ?? {}).sort()).toEqual(['Connection', 'Content-Length', 'Content-Type', 'Date', 'Keep-Alive', 'Set-Cookie', 'X-Custom', 'X-Multi']);
  });

  it('binary body → content null and the exact bytes in content_base64', async () => {
    const outcome = await run(request('/binary'));
    expect(outcome).toMatchObject({ status_code: 200, content: null, error_msg: null });
    expect(outcome.content_type).toBe('application/octet-stream');
    expect(outcome.content_base64).toBe(btoa(String.fromCharCode(0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x61, 0xe2, 0x82)));
  });

  it('a NUL byte in text → base64 (PostgreSQL text cannot hold NUL)', async () => {
    const outcome = await run(request('/nul'));
    expect(outcome.content).toBeNull();
    expect(atob(outcome.content_base64 ?? '')).toBe('before\u0000after');
  });

  it('a large body under the limit arrives intact', async () => {
    const outcome = await run(request('/bytes/500000'));
    expect(outcome.status_code).toBe(200);
    expect(outcome.content?.length).toBe(500_000);
    expect(/^x+$/.test(outcome.content ?? '')).toBe(true);
  });

  it('a body of exactly the limit is kept', async () => {
    const outcome = await run(request('/bytes/1000'), { ...opts, maxResponseBytes: 1000 });
    expect(outcome).toMatchObject({ status_code: 200, error_msg: null });
    expect(outcome.content?.length).toBe(1000);
  });
});

describe('execute in workerd: failures', () => {
  it('a body over the limit → error outcome, status kept, no content', async () => {
    const outcome = await run(request('/bytes/1001'), { ...opts, maxResponseBytes: 1000 });
    expect(outcome).toMatchObject({ status_code: 200, content: null, content_base64: null, timed_out: false });
    expect(outcome.error_msg).toBe('response body exceeds the 1000-byte limit (pg-net-edge MAX_RESPONSE_BYTES)');
  });

  it('HEAD of a large resource is not over the limit: no body is sent', async () => {
    const outcome = await run(request('/bytes/5000', { method: 'HEAD' }), { ...opts, maxResponseBytes: 1000 });
    expect(outcome).toMatchObject({ status_code: 200, content: null, error_msg: null });
    expect(outcome.headers?.['Content-Length']).toBe('5000');
  });

  it('a streamed body far over the limit is cut off too', async () => {
    const outcome = await run(request('/bytes/5000000'), { ...opts, maxResponseBytes: 100_000 });
    expect(outcome.status_code).toBe(200);
    expect(outcome.error_msg).toMatch(/exceeds the 100000-byte limit/);
  });

  it('delay beyond the timeout → timed_out with pg_net’s message', async () => {
    const outcome = await run(request('/delay/3000', { timeout_milliseconds: 200 }));
    expect(outcome).toMatchObject({ status_code: null, timed_out: true, content: null });
    expect(outcome.error_msg).toMatch(/^Timeout of 200 ms reached/);
  });

  it('the timeout covers the body read too (headers arrived in time, body did not)', async () => {
    const outcome = await run(request('/slow-body/3000', { timeout_milliseconds: 200 }));
    expect(outcome).toMatchObject({ status_code: null, timed_out: true, content: null, content_base64: null });
    expect(outcome.error_msg).toMatch(/^Timeout of 200 ms reached/);
  });

  it('the timeout covers a body of declared length too (read whole, not streamed)', async () => {
    const started = Date.now();
    const outcome = await run(request('/slow-declared/3000', { timeout_milliseconds: 200 }));
    expect(outcome).toMatchObject({ status_code: null, timed_out: true, content: null, content_base64: null });
    expect(outcome.error_msg).toMatch(/^Timeout of 200 ms reached/);
    expect(Date.now() - started).toBeLessThan(2500); // ended by the timeout, not by the server
  });

  it('a slow body of declared length within the timeout is read whole', async () => {
    const outcome = await run(request('/slow-declared/50', { timeout_milliseconds: 5000 }));
    expect(outcome).toMatchObject({ status_code: 200, content: 'start end', timed_out: false });
  });

  it('a slow body within the timeout is read whole', async () => {
    const outcome = await run(request('/slow-body/50', { timeout_milliseconds: 5000 }));
    expect(outcome).toMatchObject({ status_code: 200, content: 'start end', timed_out: false });
  });

  // pg_net's (curl's) text first, then the detail, and error_kind. workerd says "Network
  // connection lost." for refused, closed and reset alike: the probe tells refused apart.
  it('refused connection (closed port): "Couldn\'t connect to server"', async () => {
    const outcome = await run(request(`http://127.0.0.1:${closedPort}/`), probing);
    expectFailure(outcome, /^Couldn't connect to server: connection refused/, 'connect');
    // Without the probe workerd's text can't tell; the guess is a connect failure.
    expectFailure(await run(request(`http://127.0.0.1:${closedPort}/`)), /^Couldn't connect to server: connection failed: Network connection lost\./, 'connect');
  });

  it('connection dropped before headers: "Server returned nothing (no headers, no data)"', async () => {
    expectFailure(await run(request('/drop'), probing), /^Server returned nothing \(no headers, no data\): /, 'no_response');
  });

  it('connection reset (TCP RST) before any reply: told apart from refused (workerd can\'t tell it from closed)', async () => {
    expectFailure(await run(request('/reset'), probing), /^Server returned nothing \(no headers, no data\): connection closed or reset/, 'no_response');
  });

  it('malformed HTTP reply: "Weird server reply"', async () => {
    expectFailure(await run(request('/malformed'), probing), /^Weird server reply: request failed: .*internal error.*malformed HTTP reply/, 'malformed');
  });

  it('unknown host (DNS fails): "Couldn\'t resolve host name"', async () => {
    expectFailure(await run(request('http://nonexistent.invalid/'), probing), /^Couldn't resolve host name: request failed: .*DNS lookup failure/, 'dns');
  });

  it('too many redirects → a short, clear message', async () => {
    const outcome = await run(request('/redirect/30'));
    expectFailure(
      outcome,
      /^Number of redirects hit maximum amount: too many redirects starting at http:\/\/127\.0\.0\.1:\d+\/redirect\/30$/,
      'redirects',
    );
  });

  it('a redirect to a non-http scheme fails clearly', async () => {
    const outcome = await run(request(`/redirect-to?url=${encodeURIComponent('ftp://example.invalid/x')}`));
    expectFailure(outcome, /^invalid redirect: .*ftp:\/\/example\.invalid\/x.* is not http or https$/, 'redirects');
  });

  it('one failure does not disturb concurrent requests', async () => {
    const outcomes = await Promise.all([
      run(request('/drop')),
      run(request('/status/201')),
      run(request('/delay/2000', { timeout_milliseconds: 100 })),
      run(request('/echo/together')),
    ]);
    expect(outcomes.map((o) => [o.status_code, o.timed_out, o.error_msg === null])).toEqual([
      [null, false, false],
      [201, false, true],
      [null, true, false],
      [200, false, true],
    ]);
  });
});

describe('execute in workerd: invalid rows → invalid request outcomes (nothing sent)', () => {
  const cases: [string, Partial<QueuedRequest>, RegExp][] = [
    ['unknown method', { method: 'FETCH' }, /^invalid request: method "FETCH"/],
    ['CONNECT', { method: 'CONNECT' }, /^invalid request: method "CONNECT"/],
    ['empty method', { method: '' }, /^invalid request: method ""/],
    ['relative url', { url: '/echo/relative' }, /^invalid request: url "\/echo\/relative" is not an absolute URL/],
    ['ftp url', { url: 'ftp://127.0.0.1/x' }, /^invalid request: url "ftp:\/\/127\.0\.0\.1\/x" is not http or https/],
    ['headers array', { headers: ['a'] as unknown as Record<string, unknown> }, /^invalid request: headers must be a JSON object/],
    ['headers string', { headers: 'x' as unknown as Record<string, unknown> }, /^invalid request: headers must be a JSON object/],
    ['nested header value', { headers: { 'X-A': { b: 1 } } }, /^invalid request: header "X-A" must have a scalar value/],
    ['bad header name', { headers: { 'bad name': 'x' } }, /^invalid request: header "bad name"/],
    // These pass the fast path (http URL, string values) and are refused by fetch itself; the
    // outcome still says what is wrong rather than fetch's generic TypeError.
    ['http url with a space in the host', { url: 'http://exa mple.invalid/x' }, /^invalid request: url "http:\/\/exa mple\.invalid\/x" is not an absolute URL/],
    ['http url with a port out of range', { url: 'http://127.0.0.1:99999/x' }, /^invalid request: url "http:\/\/127\.0\.0\.1:99999\/x" is not an absolute URL/],
    ['header value with a line break', { headers: { 'X-A': 'a\r\nb' } }, /^invalid request: header "X-A"/],
    ['bad header name among good ones', { headers: { 'Content-Type': 'text/plain', 'x(y)': 'z' } }, /^invalid request: header "x\(y\)"/],
    ['zero timeout', { timeout_milliseconds: 0 }, /^invalid request: timeout_milliseconds 0 is not a positive integer/],
    ['fractional timeout', { timeout_milliseconds: 1.5 }, /^invalid request: timeout_milliseconds 1.5/],
  ];
  let caseNumber = 0;
  it.each(cases)('%s', async (_name, overrides, pattern) => {
    const key = `/hits/execute-invalid/${caseNumber++}`;
    const req = request(key, overrides);
    const outcome = await run(req);
    expect(outcome.id).toBe(req.id);
    expectFailure(outcome, pattern);
    const hits = (await (await fetch(`${target}/__hits?prefix=${key}`)).json()) as Record<string, number>;
    expect(hits).toEqual({});
  });

  it('a null header value means no such header', async () => {
    const echo = echoOf(await run(request('/echo/nullheader', { headers: { 'X-Gone': null, 'X-Kept': 'k' } })));
    expect(echo.headers['x-gone']).toBeUndefined();
    expect(echo.headers['x-kept']).toBe('k');
  });

  it('a fetch that throws synchronously still yields an outcome', async () => {
    const throwing = (() => {
      throw new Error('boom');
    }) as unknown as typeof fetch;
    const outcome = await execute(request('/echo/x'), throwing, opts);
    expectFailure(outcome, /^request failed: boom$/);
  });
});

describe('decodeBody', () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  it('empty → both null', () => {
    expect(decodeBody(new Uint8Array(0))).toEqual({ content: null, content_base64: null });
  });
  it('UTF-8 text → content', () => {
    expect(decodeBody(enc('héllo ✓ 😀'))).toEqual({ content: 'héllo ✓ 😀', content_base64: null });
  });
  it('invalid UTF-8 → exact bytes as base64', () => {
    expect(decodeBody(Uint8Array.from([0x61, 0xc3, 0x28]))).toEqual({ content: null, content_base64: 'YcMo' });
  });
  it('a truncated multi-byte sequence at the end is not valid text', () => {
    expect(decodeBody(Uint8Array.from([0x61, 0xe2, 0x82])).content).toBeNull();
  });
  it('NUL → base64', () => {
    expect(decodeBody(Uint8Array.from([0x61, 0x00, 0x62]))).toEqual({ content: null, content_base64: 'YQBi' });
  });
  it('a BOM is kept, so content is the exact body', () => {
    expect(decodeBody(Uint8Array.from([0xef, 0xbb, 0xbf, 0x61])).content).toBe('\ufeffa');
  });
  it('large binary bodies round-trip through base64', () => {
    const bytes = new Uint8Array(300_000).map((_, i) => (i * 7 + 3) & 0xff);
    const { content, content_base64 } = decodeBody(bytes);
    expect(content).toBeNull();
    const back = Uint8Array.from(atob(content_base64 ?? ''), (c) => c.charCodeAt(0));
    expect(back).toEqual(bytes);
  });
});
