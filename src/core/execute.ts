// Sends one claimed request with the web-standard fetch and turns whatever happens into an
// Outcome for net._record. Runtime-neutral (workerd and Node): only fetch, AbortSignal,
// TextDecoder, btoa and typed arrays. It never throws — one bad target must never break the
// batch — so every failure, including a malformed row inserted by hand, becomes an error outcome.
import { DEFAULT_POLICY } from './destination.ts';
import { Refused, sendChecked } from './redirects.ts';
import { classifyFailure, endpointOf, failureMessage, refineWithProbe, type ErrorKind, type Failure } from './failures.ts';
import { canonicalHeaderName } from './header-names.ts';
import { messageOf } from './errors.ts';
import { DEFAULT_RETRY_POLICY, retryDelay } from './retry.ts';
import { HEADER_BYTES, type ExecuteOptions, type Outcome, type QueuedRequest } from './types.ts';

const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS']);
/** Error messages are stored in the response row; a runaway message (e.g. a redirect list) is cut. */
const MAX_ERROR_CHARS = 1000;

type Prepared = { url: string; method: string; headers: Headers | Record<string, string>; body: Uint8Array | null; timeout: number };

// fatal: invalid UTF-8 must not be silently replaced; ignoreBOM: keep a BOM so the text is the
// exact body. One instance for all bodies: constructing one per body showed in profiles, and a
// non-streaming decode() starts from a clean state every call (even after a fatal error).
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Body bytes → what the response row holds: text when it is valid UTF-8 without NUL, else exact bytes as base64. */
export function decodeBody(bytes: Uint8Array): { content: string | null; content_base64: string | null } {
  if (bytes.length === 0) return { content: null, content_base64: null };
  let text: string | null = null;
  try {
    text = UTF8.decode(bytes);
  } catch {
    text = null;
  }
  // PostgreSQL text cannot hold NUL, so such bodies are kept as bytes too.
  if (text !== null && !text.includes('\u0000')) return { content: text, content_base64: null };
  return { content: null, content_base64: toBase64(bytes) };
}

function toBase64(bytes: Uint8Array): string {
  const parts: string[] = [];
  // Chunked: String.fromCharCode(...bytes) overflows the argument limit on large bodies.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    parts.push(String.fromCharCode(...bytes.subarray(i, i + 0x8000)));
  }
  return btoa(parts.join(''));
}

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

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * The request's headers as fetch takes them, when every value is a string (the usual case):
 * a plain record, no Headers object built and filled call by call. Null when a value needs the
 * checks in appendHeaders (null, numbers, booleans, objects); names and values fetch refuses
 * surface as a TypeError from fetch, and validate() then says which header is wrong.
 */
function plainHeaders(given: Record<string, unknown>, userAgent: string): Record<string, string> | null {
  for (const _ in given) return plainCopy(given, userAgent);
  return userAgentOnly(userAgent);
}

/** The headers of a request that gives none (the usual case): one shared record per user agent. */
let userAgentRecord: { userAgent: string; headers: Record<string, string> } | null = null;
function userAgentOnly(userAgent: string): Record<string, string> {
  if (userAgentRecord?.userAgent !== userAgent) {
    userAgentRecord = { userAgent, headers: Object.freeze({ 'user-agent': userAgent }) as Record<string, string> };
  }
  return userAgentRecord.headers;
}

function plainCopy(given: Record<string, unknown>, userAgent: string): Record<string, string> | null {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  let hasUserAgent = false;
  for (const name of Object.keys(given)) {
    const value = given[name];
    if (typeof value !== 'string') return null;
    if (!hasUserAgent && name.length === 10 && name.toLowerCase() === 'user-agent') hasUserAgent = true;
    out[name] = value;
  }
  if (!hasUserAgent) out['user-agent'] = userAgent;
  return out;
}

function appendHeaders(headers: Headers, given: Record<string, unknown>, userAgent: string): string | null {
  for (const [name, value] of Object.entries(given)) {
    if (value === null) continue; // a JSON null means "no such header"
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      return `header ${JSON.stringify(name)} must have a scalar value`;
    }
    try {
      headers.append(name, String(value));
    } catch (error) {
      return `header ${JSON.stringify(name)}: ${messageOf(error)}`;
    }
  }
  if (!headers.has('user-agent')) headers.set('user-agent', userAgent);
  return null;
}

/**
 * Builds the fetch inputs from a claimed row (rows may be inserted by hand), or says what is
 * wrong. The common case costs no URL parse and no Headers object: an http(s) URL and string
 * header values go to fetch as they are, and fetch parses them once. What fetch then refuses is
 * explained by validate().
 */
function prepare(request: QueuedRequest, userAgent: string): Prepared | string {
  const method = typeof request.method === 'string' ? request.method.trim().toUpperCase() : '';
  if (!METHODS.has(method)) {
    return `method ${JSON.stringify(request.method)} is not one of ${[...METHODS].join(', ')}`;
  }
  const given: unknown = request.headers ?? {};
  if (!isPlainObject(given)) return 'headers must be a JSON object';
  const url = request.url;
  const plain = typeof url === 'string' && /^https?:\/\//i.test(url) ? plainHeaders(given, userAgent) : null;
  let prepared: Prepared | string;
  if (plain !== null) {
    prepared = { url: url, method, headers: plain, body: null, timeout: 0 };
  } else {
    prepared = validate(request, method, given, userAgent);
    if (typeof prepared === 'string') return prepared;
  }

  const timeout = request.timeout_milliseconds;
  if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout <= 0) {
    return `timeout_milliseconds ${JSON.stringify(timeout)} is not a positive integer`;
  }
  if (request.body !== null && request.body !== undefined && !(request.body instanceof Uint8Array)) {
    return 'body must be bytes or null';
  }
  prepared.timeout = timeout;
  // GET and HEAD cannot carry a body in fetch; pg_net never sends one either.
  prepared.body = method === 'GET' || method === 'HEAD' ? null : (request.body ?? null);
  return prepared;
}

/**
 * The thorough check of url and headers, with a precise message for what is wrong: used when
 * the fast path of prepare() doesn't apply, and to explain a TypeError from fetch.
 */
function validate(request: QueuedRequest, method: string, given: Record<string, unknown>, userAgent: string): Prepared | string {
  if (typeof request.url !== 'string') return 'url is not a string';
  let url: URL;
  try {
    url = new URL(request.url);
  } catch {
    return `url ${JSON.stringify(request.url)} is not an absolute URL`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return `url ${JSON.stringify(request.url)} is not http or https`;
  }
  const headers = new Headers();
  const error = appendHeaders(headers, given, userAgent);
  if (error !== null) return error;
  return { url: url.href, method, headers, body: null, timeout: 0 };
}

/**
 * fetch's init with only what differs from its defaults (GET, no body): every member given is
 * converted by the runtime, measurably so per request. (sendChecked adds redirect: 'manual'.)
 */
function init(prepared: Prepared, signal: AbortSignal): RequestInit {
  const given: RequestInit = { headers: prepared.headers, signal };
  if (prepared.method !== 'GET') given.method = prepared.method;
  if (prepared.body !== null) given.body = prepared.body;
  return given;
}


function isTimeout(error: unknown, signal: AbortSignal): boolean {
  if (signal.aborted) return true;
  return typeof error === 'object' && error !== null && 'name' in error && error.name === 'TimeoutError';
}

/** error_msg for a failed fetch: pg_net's text for its class first, then the detail (see failures.ts). */
export function describeFailure(error: unknown, url: string): string {
  const classified = classifyFailure(error, url);
  return failureMessage(classified.kind, classified.detail);
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

/**
 * The response headers twice, in one pass: as an object (repeated names joined with ", ", every
 * Set-Cookie line joined too) and as [name, value] pairs (in the runtime's sorted order), names in
 * their usual capitalisation (Content-Type, as pg_net stores them; see header-names.ts). fetch already joins repeated headers with ", " — lossless for all but
 * Set-Cookie, whose values may contain commas, so each Set-Cookie line stays its own pair.
 */
export function readHeaders(headers: Headers): ReadHeaders {
  const object: Record<string, string> = {};
  const pairs: [string, string][] = [];
  let cookiesDone = false;
  let bytes = 0;
  let contentType: string | null = null;
  let contentLength: string | null = null;
  let contentEncoding: string | null = null;
  for (const [lowerName, value] of headers) {
    bytes += lowerName.length + value.length;
    if (lowerName !== 'set-cookie') {
      const name = canonicalHeaderName(lowerName);
      pairs.push([name, value]);
      // The three headers execute looks at, picked up here rather than by three get() calls.
      if (lowerName === 'content-type') contentType = value;
      else if (lowerName === 'content-length') contentLength = value;
      else if (lowerName === 'content-encoding') contentEncoding = value;
      // Headers iteration yields each name once (repeats joined), except Set-Cookie.
      if (name !== '__proto__') object[name] = value;
      // A valid header name: keep it an own property (plain assignment would set the prototype).
      else Object.defineProperty(object, name, { value, enumerable: true, writable: true, configurable: true });
    } else if (!cookiesDone) {
      cookiesDone = true;
      const cookies = typeof headers.getSetCookie === 'function' ? headers.getSetCookie() : [value];
      for (const cookie of cookies) pairs.push(['Set-Cookie', cookie]);
      const joined = cookies.length > 0 ? cookies.join(', ') : headers.get('set-cookie');
      if (joined !== null) {
        object['Set-Cookie'] = joined;
        bytes += joined.length;
      }
    }
  }
  return { headers: object, headers_all: pairs, bytes, contentType, contentLength, contentEncoding };
}

interface ReadHeaders {
  headers: Record<string, string>;
  headers_all: [string, string][];
  /** Characters in all names and values (to size record batches). */
  bytes: number;
  contentType: string | null;
  contentLength: string | null;
  contentEncoding: string | null;
}

/** Every header as [name, value] pairs (see readHeaders). */
export function headerPairs(headers: Headers): [string, string][] {
  return readHeaders(headers).headers_all;
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
