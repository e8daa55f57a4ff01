// Sends one claimed request with the web-standard fetch and turns whatever happens into an
// Outcome for net._record: timeout, size limit, retry flag and failure classification. It never
// throws — one bad target must never break the batch — so every failure, including a malformed
// row inserted by hand, becomes an error outcome. Runtime-neutral (workerd and Node). The row is
// turned into fetch inputs in prepare.ts, the reply read in response.ts.
import { DEFAULT_POLICY } from './destination.ts';
import { Refused, sendChecked } from './redirects.ts';
import { classifyFailure, endpointOf, failureMessage, refineWithProbe, type ErrorKind, type Failure } from './failures.ts';
import { messageOf } from './errors.ts';
import { init, isPlainObject, prepare, validate, type Prepared } from './prepare.ts';
import { decodeBody, readHeaders } from './response.ts';
import { DEFAULT_RETRY_POLICY, retryDelay } from './retry.ts';
import { HEADER_BYTES, type ExecuteOptions, type Outcome, type QueuedRequest } from './types.ts';

/** Error messages are stored in the response row; a runaway message (e.g. a redirect list) is cut. */
const MAX_ERROR_CHARS = 1000;

function failure(id: string, error_msg: string, kind: ErrorKind, status_code: number | null = null): Outcome {
  return {
    id,
    status_code,
    content_type: null,
    headers: null,
    content: null,
    content_base64: null,
    timed_out: false,
    error_msg: clip(error_msg),
    error_kind: kind,
  };
}

function clip(message: string): string {
  return message.length > MAX_ERROR_CHARS ? `${message.slice(0, MAX_ERROR_CHARS - 1)}…` : message;
}

function isTimeout(error: unknown, signal: AbortSignal): boolean {
  if (signal.aborted) return true;
  return typeof error === 'object' && error !== null && 'name' in error && error.name === 'TimeoutError';
}

/**
 * A failure from workerd's vague errors, refined by a TCP probe of the target when the runtime
 * gives one (ExecuteOptions.canConnect): the request has failed already, so the probe only costs
 * time on the failure path.
 */
async function refine(failed: Failure, url: string, opts: ExecuteOptions): Promise<Failure> {
  if (failed.ambiguous === undefined || opts.canConnect === undefined) return failed;
  const endpoint = endpointOf(url);
  if (endpoint === null) return failed;
  let reachable: boolean;
  try {
    reachable = await opts.canConnect(endpoint.hostname, endpoint.port);
  } catch {
    return failed;
  }
  return refineWithProbe(failed, reachable);
}

/**
 * curl tries every address of localhost (::1 and 127.0.0.1); a runtime that tries one and is
 * refused gets the others here. Only after a refused connection, so nothing was sent yet.
 */
function localhostAlternatives(url: string): string[] {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return [];
  }
  if (u.hostname !== 'localhost') return [];
  return ['[::1]', '127.0.0.1'].map((host) => {
    const alt = new URL(url);
    alt.hostname = host;
    return alt.href;
  });
}

export async function execute(request: QueuedRequest, fetchFn: typeof fetch, opts: ExecuteOptions): Promise<Outcome> {
  const outcome = await attempt(request, fetchFn, opts);
  try {
    // Flag retryable outcomes with the delay to wait; net._record retries only with attempts left.
    const delay = retryDelay(outcome, Number(request?.attempts) || 1, opts.retry ?? DEFAULT_RETRY_POLICY);
    if (delay !== null) outcome.retry_in_ms = delay;
  } catch {
    // A bad policy must not lose the outcome: without retry_in_ms it is simply final.
  }
  return outcome;
}

async function attempt(request: QueuedRequest, fetchFn: typeof fetch, opts: ExecuteOptions): Promise<Outcome> {
  const id = String(request?.id);
  try {
    const prepared = prepare(request, opts.userAgent);
    if (typeof prepared === 'string') return failure(id, `invalid request: ${prepared}`, 'invalid_request');

    // A timer cleared when the request ends, not AbortSignal.timeout(): workerd allows 10,000
    // active timers per invocation, and AbortSignal.timeout's stay active for the full timeout.
    // Aborting the signal rejects the fetch and, after the headers, the body read too (workerd
    // and Node both; tested for streamed and declared-length bodies). No Promise.race against a
    // timeout promise: in a loop of execute() calls in workerd that cost ~25% more CPU. In a
    // drain the signal is shared with requests whose deadlines are within a few ms (Deadlines).
    const deadlines = opts.deadlines;
    let signal: AbortSignal;
    let cancelTimeout: () => void;
    if (deadlines) {
      const lease = deadlines.acquire(prepared.timeout);
      signal = lease.signal;
      cancelTimeout = () => deadlines.release(lease);
    } else {
      const controller = new AbortController();
      const timer = setTimeout(() => {
        const reason = new Error(`Timeout of ${prepared.timeout} ms reached`);
        reason.name = 'TimeoutError';
        controller.abort(reason);
      }, prepared.timeout);
      signal = controller.signal;
      cancelTimeout = () => clearTimeout(timer);
    }
    const timedOut = (): Outcome => ({
      ...failure(id, `Timeout of ${prepared.timeout} ms reached`, 'timeout'),
      timed_out: true,
    });
    try {
      let response: Response | Outcome = await send(id, request, prepared, fetchFn, signal, opts, timedOut);
      if (!(response instanceof Response)) {
        // curl would have tried localhost's other addresses: so does this, after a refusal.
        for (const alternative of response.error_kind === 'connect' ? localhostAlternatives(prepared.url) : []) {
          const retried = await send(id, request, { ...prepared, url: alternative }, fetchFn, signal, opts, timedOut);
          if (retried instanceof Response || retried.error_kind !== 'connect') {
            response = retried;
            break;
          }
        }
        if (!(response instanceof Response)) return response;
      }

      const status = response.status;
      const { headers, headers_all, bytes: headerBytes, contentType: content_type, contentLength, contentEncoding } = readHeaders(response.headers);
      const tooLarge = () =>
        `response body exceeds the ${opts.maxResponseBytes}-byte limit (pg-net-edge MAX_RESPONSE_BYTES)`;
      const overLimit = (): Outcome => ({ ...failure(id, tooLarge(), 'too_large', status), headers, headers_all, content_type });
      const succeeded = (body: Uint8Array): Outcome => {
        const { content, content_base64 } = decodeBody(body);
        const outcome: Outcome = { id, status_code: status, content_type, headers, headers_all, content, content_base64, timed_out: false, error_msg: null };
        outcome[HEADER_BYTES] = headerBytes;
        return outcome;
      };

      // A declared length over the limit fails without downloading anything (a HEAD reply
      // declares the length of a body it does not send, so it is exempt).
      const declared = Number(contentLength ?? NaN);
      if (prepared.method !== 'HEAD' && Number.isFinite(declared) && declared > opts.maxResponseBytes) {
        response.body?.cancel().catch(() => {});
        return overLimit();
      }

      // Identity-encoded with a declared length within the limit: the body can't grow past it,
      // so read it whole (one read). A compressed body can decompress to
      // more than its Content-Length, so it is streamed against the limit below.
      // (`response.body` is not touched on this path: in workerd the getter makes a stream
      // object that arrayBuffer() doesn't need; a bodiless reply reads as empty.)
      if (
        Number.isFinite(declared) &&
        declared >= 0 &&
        (contentEncoding === null || contentEncoding.trim().toLowerCase() === 'identity')
      ) {
        let whole: ArrayBuffer;
        try {
          whole = await response.arrayBuffer();
        } catch (error) {
          response.body?.cancel().catch(() => {});
          if (isTimeout(error, signal)) return timedOut();
          return readFailure(id, error, prepared.url);
        }
        // Belt and braces: a runtime that handed over more than declared still meets the limit.
        if (whole.byteLength > opts.maxResponseBytes) return overLimit();
        return succeeded(new Uint8Array(whole));
      }

      const chunks: Uint8Array[] = [];
      let total = 0;
      if (response.body) {
        const reader = response.body.getReader();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            total += value.byteLength;
            if (total > opts.maxResponseBytes) {
              reader.cancel().catch(() => {});
              return overLimit();
            }
            chunks.push(value);
          }
        } catch (error) {
          reader.cancel().catch(() => {});
          if (isTimeout(error, signal)) return timedOut();
          return readFailure(id, error, prepared.url);
        }
      }

      const bytes = new Uint8Array(total);
      let offset = 0;
      for (const chunk of chunks) {
        bytes.set(chunk, offset);
        offset += chunk.byteLength;
      }
      return succeeded(bytes);
    } finally {
      cancelTimeout();
    }
  } catch (error) {
    // Not expected; the promise is that execute never throws, whatever it is handed.
    return failure(id, `internal error in execute: ${messageOf(error)}`, 'internal');
  }
}

/** One fetch: the response, or the failure outcome (a timeout, input fetch refused, or a classified failure). */
async function send(
  id: string,
  request: QueuedRequest,
  prepared: Prepared,
  fetchFn: typeof fetch,
  signal: AbortSignal,
  opts: ExecuteOptions,
  timedOut: () => Outcome,
): Promise<Response | Outcome> {
  try {
    // Destination policy and redirects: redirects.ts (each hop checked before it is sent).
    const sent = await sendChecked(prepared.url, init(prepared, signal), fetchFn, {
      destinations: opts.destinations ?? DEFAULT_POLICY,
      resolveHost: opts.resolveHost,
    });
    if (sent instanceof Refused) return failure(id, sent.message, sent.kind);
    return sent;
  } catch (error) {
    if (isTimeout(error, signal)) return timedOut();
    if (error instanceof TypeError) {
      // fetch refused the input (a URL or header it can't use): say exactly what is wrong.
      const problem = validate(request, prepared.method, isPlainObject(request.headers) ? request.headers : {}, opts.userAgent);
      if (typeof problem === 'string') return failure(id, `invalid request: ${problem}`, 'invalid_request');
    }
    const failed = await refine(classifyFailure(error, prepared.url), prepared.url, opts);
    // The probe may have outlasted the request's timeout: then it is a timeout, as curl would say.
    if (signal.aborted) return timedOut();
    return failure(id, failureMessage(failed.kind, failed.detail), failed.kind);
  }
}

/** A body read that failed after the headers arrived: pg_net's "Failure when receiving data from the peer". */
function readFailure(id: string, error: unknown, url: string): Outcome {
  const failed = classifyFailure(error, url, true);
  const kind: ErrorKind = failed.kind === 'connect' || failed.kind === 'no_response' || failed.kind === 'other' ? 'receive' : failed.kind;
  return failure(id, failureMessage(kind, `reading the response body failed: ${failed.detail}`), kind);
}
