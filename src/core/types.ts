// Types at the edges of the core: what a claim hands to execute, what execute hands to record.
import type { Deadlines } from './deadlines.ts';
import type { DestinationPolicy } from './destination.ts';
import type { ErrorKind } from './failures.ts';
import type { RetryPolicy } from './retry.ts';

/** A queued request as claimed from net.http_request_queue (see net._claim). */
export interface QueuedRequest {
  id: string; // bigint as text: ids can exceed 2^53
  method: string;
  url: string;
  headers: Record<string, unknown>;
  body: Uint8Array | null;
  timeout_milliseconds: number;
  attempts: number;
}

/** What one request ended with; the shape net._record takes (one JSON object per request). */
/**
 * Bytes of an outcome's response headers, counted while execute reads them, so the drain can
 * size its record batches without walking every header again. A symbol: JSON.stringify skips it.
 */
export const HEADER_BYTES: unique symbol = Symbol('headerBytes');

export interface Outcome {
  [HEADER_BYTES]?: number;
  id: string;
  status_code: number | null;
  content_type: string | null;
  headers: Record<string, string> | null;
  /** Body as text when it is valid UTF-8 without NUL; empty body → null. */
  content: string | null;
  /** Exact body bytes, base64, when the body is not valid UTF-8 or contains NUL. */
  content_base64: string | null;
  timed_out: boolean;
  error_msg: string | null;
  /** What kind of failure error_msg describes (schema v4's error_kind; see failures.ts). */
  error_kind?: ErrorKind | null;
  /** Every response header line as [name, value], Set-Cookie lines kept apart (schema v2). */
  headers_all?: [string, string][] | null;
  /**
   * Set when the outcome is worth retrying: the delay the drain asks for. net._record retries
   * only if the request has attempts left (max_attempts); otherwise the outcome is final.
   */
  retry_in_ms?: number | null;
}

export interface ExecuteOptions {
  /** Largest response body kept; a larger one becomes an error outcome. */
  maxResponseBytes: number;
  /** Sent when the request has no User-Agent of its own. */
  userAgent: string;
  /** Backoff for retryable outcomes (default: 1 s base, doubling; see retry.ts). */
  retry?: RetryPolicy;
  /**
   * Times requests out with shared signals on one timer (the drain's Deadlines); default an
   * AbortController and a timer per request.
   */
  deadlines?: Pick<Deadlines, 'acquire' | 'release'>;
  /** Where requests may go (pg_net.denied/allowed_destinations); default: the built-in denied list. */
  destinations?: DestinationPolicy;
  /** Node: resolves a host name so its addresses are checked against the denied list too. */
  resolveHost?: (host: string) => Promise<string[]>;
  /**
   * Whether something accepts TCP connections at hostname:port (workerd: a cloudflare:sockets
   * probe). Asked only after a failure the runtime reported vaguely, to tell a refused
   * connection from a server that closed without replying (see failures.ts).
   */
  canConnect?: (hostname: string, port: number) => Promise<boolean>;
}

export interface DrainOptions extends ExecuteOptions {
  /** Requests in flight at most. */
  concurrency: number;
  /** Rows claimed per claim at most (pg_net.batch_size). */
  batchSize: number;
  /** Stop claiming new work this many ms after the drain starts. */
  budgetMs: number;
  /** Hard end of the invocation, ms after start: never claim a request whose timeout won't fit. */
  hardLimitMs: number;
  /** Added to each request's timeout to make its lease. */
  leaseMarginMs: number;
  /** Longest a finished outcome waits before it is recorded while a fetch slot is free (flat out: see FLUSH_BUSY_MS in record-buffer.ts). */
  flushMs: number;
  /**
   * Rows this drain claims (requests it sends) at most, then it stops claiming and leaves the
   * rest to the next drain: a Worker invocation may make only so many subrequests. Unset: no cap.
   */
  maxRequests?: number;
  /**
   * Requests waiting for response headers at once, at most (unset: no cap). A Workers
   * invocation has 6 connections waiting for headers at a time and queues the rest, with their
   * timeouts running: the drain keeps the rest unstarted instead, timers not yet running.
   */
  fetchSlots?: number;
  /** Request body bytes one claim may take (net._claim's max_bytes). Unset: DEFAULT_CLAIM_BYTES (16 MiB). */
  claimBytes?: number;
}

export interface DrainStats {
  owner: string;
  started: string; // ISO time
  duration_ms: number;
  claimed: number;
  recorded: number;
  errors: number; // outcomes with error_msg
  stopped: 'empty' | 'budget' | 'database';
  last_error?: string;
  /** Claimed rows given back to the queue unsent (net._release), for another drain or a later claim. */
  given_back?: number;
  /** Mean time from sending a request to its response headers (only with fetchSlots), ms. */
  header_wait_ms?: number;
  /** A Worker drain: executor invocations it used (requests to itself, see src/worker/fanout.ts). */
  executors?: number;
  /** A Worker drain: rows out at its executors at once, at most. */
  peak_in_flight?: number;
  /** A Worker drain: the most connections waiting for headers in any one of its invocations (Cloudflare allows 6). */
  peak_header_waits?: number;
  /**
   * pg_net.* settings a Worker variable overrode for this drain (name → variable and value), so
   * net.settings can say the database's value is not the one in use.
   */
  overrides?: Record<string, { variable: string; value: string }>;
}
