// retry.ts, the pure retry decisions, inside workerd (where the drain runs them): which outcomes
// are retryable, Retry-After parsing, exponential backoff with jitter and its caps.
import { describe, expect, it } from 'vitest';
import { backoffMs, DEFAULT_RETRY_POLICY, isRetryable, parseRetryAfter, retryDelay } from '../../src/core/retry.ts';
import type { Outcome } from '../../src/core/types.ts';

function outcome(overrides: Partial<Outcome>): Outcome {
  return {
    id: '1',
    status_code: null,
    content_type: null,
    headers: null,
    content: null,
    content_base64: null,
    timed_out: false,
    error_msg: null,
    ...overrides,
  };
}

describe('isRetryable', () => {
  it('429 and every 5xx are retried; other statuses are final', () => {
    for (const status of [429, 500, 502, 503, 504, 599]) expect(isRetryable(outcome({ status_code: status })), String(status)).toBe(true);
    for (const status of [200, 201, 204, 301, 304, 400, 401, 404, 409, 422, 428, 430, 600]) {
      expect(isRetryable(outcome({ status_code: status })), String(status)).toBe(false);
    }
  });

  it('timeouts and failures to get a reply are retried', () => {
    expect(isRetryable(outcome({ timed_out: true, error_msg: 'Timeout of 10 ms reached' }))).toBe(true);
    for (const message of [
      'connection refused: connect ECONNREFUSED 127.0.0.1:1',
      'connection reset by peer: read ECONNRESET',
      'DNS lookup failed: getaddrinfo ENOTFOUND nowhere.invalid',
      'connection failed: Network connection lost. (refused, reset, closed or TLS failure before a complete response)',
      'connection closed before a complete response: other side closed',
      'malformed HTTP response: Parse Error',
      'request failed: the runtime reported an internal error, typically a malformed HTTP reply (workerd reference x)',
      'reading the response body failed: connection reset by peer: x',
    ]) {
      expect(isRetryable(outcome({ error_msg: message })), message).toBe(true);
    }
  });

  it('failures that would fail again the same way are final', () => {
    for (const message of [
      'invalid request: method "FETCH" is not one of GET, POST',
      'internal error in execute: boom',
      'too many redirects starting at http://x/',
      'TLS failure: self-signed certificate',
      'could not store the response: invalid byte sequence',
    ]) {
      expect(isRetryable(outcome({ error_msg: message })), message).toBe(false);
    }
    // A 200 whose body is over the limit: the status says success, so not retried.
    expect(isRetryable(outcome({ status_code: 200, error_msg: 'response body exceeds the 10-byte limit' }))).toBe(false);
    // A success is never retried.
    expect(isRetryable(outcome({ status_code: 200 }))).toBe(false);
    // Nothing at all (a malformed outcome) is not retried either.
    expect(isRetryable(outcome({}))).toBe(false);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-11-26T03:00:00Z');

  it('delay-seconds', () => {
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('99999999999999999999', now)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('HTTP-dates in all three formats; a past date means now', () => {
    expect(parseRetryAfter('Thu, 26 Nov 2026 03:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Thursday, 26-Nov-26 03:01:00 GMT', now)).toBe(60_000);
    expect(parseRetryAfter('Thu Nov 26 03:00:05 2026', now)).toBe(5_000);
    expect(parseRetryAfter('Wed, 25 Nov 2026 03:00:00 GMT', now)).toBe(0);
  });

  it('absent or malformed values are ignored', () => {
    for (const value of [null, undefined, '', '-5', '1.5', 'soon', '5 seconds', '2026-11-26T03:00:30Z', 'Thu, 99 Foo 2026 GMT']) {
      expect(parseRetryAfter(value, now), String(value)).toBeNull();
    }
  });
});

describe('backoffMs', () => {
  const policy = { baseMs: 1000, maxMs: 30_000 };

  it('doubles per attempt, within the upper half of the nominal delay (equal jitter)', () => {
    expect([1, 2, 3, 4].map((a) => backoffMs(a, policy, () => 0))).toEqual([500, 1000, 2000, 4000]);
    expect([1, 2, 3, 4].map((a) => backoffMs(a, policy, () => 1))).toEqual([1000, 2000, 4000, 8000]);
    expect(backoffMs(2, policy, () => 0.5)).toBe(1500);
  });

  it('is capped at maxMs, also for absurd attempt counts', () => {
    expect(backoffMs(6, policy, () => 1)).toBe(30_000);
    expect(backoffMs(1000, policy, () => 1)).toBe(30_000);
    expect(backoffMs(0, policy, () => 1)).toBe(1000); // treated as the first attempt
  });

  it('real jitter spreads many requests over the interval', () => {
    const samples = Array.from({ length: 200 }, () => backoffMs(3, policy));
    for (const s of samples) {
      expect(s).toBeGreaterThanOrEqual(2000);
      expect(s).toBeLessThanOrEqual(4000);
    }
    expect(new Set(samples).size).toBeGreaterThan(20);
  });
});

describe('retryDelay', () => {
  const now = Date.parse('2026-11-26T03:00:00Z');
  const policy = { baseMs: 100, maxMs: 10_000 };

  it('null for outcomes that are not retried', () => {
    expect(retryDelay(outcome({ status_code: 404 }), 1, policy, now)).toBeNull();
    expect(retryDelay(outcome({ status_code: 200 }), 1, policy, now)).toBeNull();
  });

  it('backoff when there is no Retry-After', () => {
    expect(retryDelay(outcome({ status_code: 503 }), 3, policy, now, () => 1)).toBe(400);
    expect(retryDelay(outcome({ error_msg: 'connection refused: x' }), 1, policy, now, () => 0)).toBe(50);
  });

  it('Retry-After (any header case) is a lower bound, still capped by maxMs', () => {
    expect(retryDelay(outcome({ status_code: 429, headers: { 'retry-after': '2' } }), 1, policy, now, () => 1)).toBe(2000);
    expect(retryDelay(outcome({ status_code: 503, headers: { 'Retry-After': '1' } }), 1, policy, now, () => 1)).toBe(1000);
    expect(retryDelay(outcome({ status_code: 503, headers: { 'retry-after': '0' } }), 2, policy, now, () => 1)).toBe(200);
    expect(retryDelay(outcome({ status_code: 503, headers: { 'retry-after': '3600' } }), 1, policy, now)).toBe(10_000);
    expect(
      retryDelay(outcome({ status_code: 503, headers: { 'retry-after': 'Thu, 26 Nov 2026 03:00:03 GMT' } }), 1, policy, now, () => 0),
    ).toBe(3000);
    // Malformed Retry-After: plain backoff.
    expect(retryDelay(outcome({ status_code: 503, headers: { 'retry-after': 'later' } }), 1, policy, now, () => 1)).toBe(100);
  });

  it('the default policy starts at about a second', () => {
    const delay = retryDelay(outcome({ status_code: 500 }), 1)!;
    expect(delay).toBeGreaterThanOrEqual(DEFAULT_RETRY_POLICY.baseMs / 2);
    expect(delay).toBeLessThanOrEqual(DEFAULT_RETRY_POLICY.baseMs);
  });
});
