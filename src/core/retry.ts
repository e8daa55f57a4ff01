// Retry decisions, as pure functions: which outcomes are worth another attempt, and how long to
// wait before it (exponential backoff with jitter, never sooner than the server's Retry-After,
// capped). Whether the request has attempts left is decided by net._record (it knows the row's
// max_attempts), which also caps the delay by the request's own retry_max_delay_ms.
import { isRetryableKind, kindOfMessage } from './failures.ts';
import type { Outcome } from './types.ts';

export interface RetryPolicy {
  /** Delay before the second attempt; doubled for each later one. */
  baseMs: number;
  /** Longest delay the drain asks for (net._record caps it again per request). */
  maxMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { baseMs: 1000, maxMs: 86_400_000 };

/**
 * Worth retrying: a 429 or 5xx reply, a timeout, or a failure to get any reply (refused, reset,
 * DNS, closed early, malformed reply). Not: other statuses, a body over the size limit, a request
 * that can't be sent as stored, too many redirects, TLS failures (certificates don't heal).
 */
export function isRetryable(outcome: Pick<Outcome, 'status_code' | 'timed_out' | 'error_msg' | 'error_kind'>): boolean {
  const status = outcome.status_code;
  if (status !== null) return status === 429 || (status >= 500 && status <= 599);
  if (outcome.timed_out) return true;
  const message = outcome.error_msg;
  if (message === null) return false;
  // An outcome without a kind (made by hand, or by an older drain) is judged by its wording.
  return isRetryableKind(outcome.error_kind ?? kindOfMessage(message));
}

/**
 * Retry-After (RFC 9110 §10.2.3) as milliseconds from now: delay-seconds or an HTTP-date (a
 * past date is 0). Anything else, including negative or fractional seconds, is ignored (null).
 */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | null {
  if (value === null || value === undefined) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) {
    const seconds = Number(text);
    return Number.isSafeInteger(seconds * 1000) ? seconds * 1000 : Number.MAX_SAFE_INTEGER;
  }
  // An HTTP-date always names a weekday and GMT; Date.parse alone accepts too much ("1", "soon 5").
  if (!/^[A-Za-z]{3,9}, .*\bGMT$/i.test(text) && !/^[A-Za-z]{3} [A-Za-z]{3} +\d/.test(text)) return null;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - nowMs);
}

/**
 * Backoff before attempt `attempt + 1`, after `attempt` attempts (1-based): base × 2^(attempt−1),
 * "equal jitter" (a random point in its upper half, so retries of many requests spread out but
 * never come sooner than half the nominal delay), capped at maxMs.
 */
export function backoffMs(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(Math.floor(attempt) - 1, 0), 40);
  const nominal = Math.min(policy.baseMs * 2 ** exponent, policy.maxMs);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(nominal / 2 + (nominal / 2) * r);
}

/** Header value by case-insensitive name from a response's headers object. */
function header(headers: Record<string, string> | null, name: string): string | null {
  if (!headers) return null;
  for (const [key, value] of Object.entries(headers)) if (key.toLowerCase() === name) return value;
  return null;
}

/**
 * How long to wait before retrying this outcome (ms), or null when it should not be retried.
 * A Retry-After header is honoured as a lower bound; the result never exceeds policy.maxMs.
 */
export function retryDelay(
  outcome: Pick<Outcome, 'status_code' | 'timed_out' | 'error_msg' | 'error_kind' | 'headers'>,
  attempt: number,
  policy: RetryPolicy = DEFAULT_RETRY_POLICY,
  nowMs: number = Date.now(),
  random: () => number = Math.random,
): number | null {
  if (!isRetryable(outcome)) return null;
  const backoff = backoffMs(attempt, policy, random);
  const after = parseRetryAfter(header(outcome.headers, 'retry-after'), nowMs);
  return Math.min(Math.max(backoff, after ?? 0), policy.maxMs);
}
