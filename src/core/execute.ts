// Sends one claimed request with the web-standard fetch and turns whatever happens into an
// Outcome for net._record. Runtime-neutral (workerd and Node): only fetch, AbortSignal,
// TextDecoder, btoa and typed arrays. It never throws — one bad target must never break the
// batch — so every failure, including a malformed row inserted by hand, becomes an error outcome.
import { DEFAULT_RETRY_POLICY, retryDelay } from './retry.ts';
import type { ExecuteOptions, Outcome, QueuedRequest } from './types.ts';

const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS']);
/** Error messages are stored in the response row; a runaway message (e.g. a redirect list) is cut. */
const MAX_ERROR_CHARS = 1000;

type Prepared = { url: string; method: string; headers: Headers; body: Uint8Array | null; timeout: number };

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

function failure(id: string, error_msg: string, status_code: number | null = null): Outcome {
  return {
    id,
    status_code,
    content_type: null,
    headers: null,
    content: null,
    content_base64: null,
    timed_out: false,
    error_msg: clip(error_msg),
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
 * URLs that new URL() surely accepts and serializes unchanged: http(s), a dotted-quad IPv4 or a
 * lowercase ASCII host name (last label not numeric, no punycode), a non-default port up to
 * 65535, a path of RFC 3986 characters (none that URL percent-encodes) without dot segments. Anything else goes through
 * new URL() for validation, normalization and a precise error.
 */
const PLAIN_URL = /^(https?):\/\/(?:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})|([a-z0-9-]+(?:\.[a-z0-9-]+)*))(?::([1-9]\d{0,4}))?\/[A-Za-z0-9\-._~:/?#[\]@!$&()*+,;=%]*$/;
function isPlainHttpUrl(text: string): boolean {
  const m = PLAIN_URL.exec(text);
  if (m === null || text.includes('/.') || text.includes('\\') || text.includes('%2e') || text.includes('%2E')) return false;
  const [, scheme, ip, name, port] = m;
  if (ip !== undefined && ip.split('.').some((octet) => Number(octet) > 255 || (octet.length > 1 && octet[0] === '0'))) return false;
  if (name !== undefined && (/(?:^|\.)(?:\d+|0x[0-9a-f]*)$/.test(name) || /(?:^|\.)(?:xn--|-)|-(?:\.|$)/.test(name))) return false;
  if (port === undefined) return true;
  return Number(port) <= 65535 && port !== (scheme === 'http' ? '80' : '443');
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

/** Checks a claimed row (rows may be inserted by hand) and builds the fetch inputs, or says what is wrong. */
function prepare(request: QueuedRequest, userAgent: string): Prepared | string {
  const method = typeof request.method === 'string' ? request.method.trim().toUpperCase() : '';
  if (!METHODS.has(method)) {
    return `method ${JSON.stringify(request.method)} is not one of ${[...METHODS].join(', ')}`;
  }

  if (typeof request.url !== 'string') return 'url is not a string';
  let href: string;
  if (isPlainHttpUrl(request.url)) {
    // fetch parses it the same way; skipping new URL() here saves a parse per request.
    href = request.url;
  } else {
    let url: URL;
    try {
      url = new URL(request.url);
    } catch {
      return `url ${JSON.stringify(request.url)} is not an absolute URL`;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return `url ${JSON.stringify(request.url)} is not http or https`;
    }
    href = url.href;
  }

  const given: unknown = request.headers ?? {};
  if (!isPlainObject(given)) return 'headers must be a JSON object';
  const headers = new Headers();
  const error = appendHeaders(headers, given, userAgent);
  if (error !== null) return error;

  const timeout = request.timeout_milliseconds;
  if (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout <= 0) {
    return `timeout_milliseconds ${JSON.stringify(timeout)} is not a positive integer`;
  }

  if (request.body !== null && request.body !== undefined && !(request.body instanceof Uint8Array)) {
    return 'body must be bytes or null';
  }
  // GET and HEAD cannot carry a body in fetch; pg_net never sends one either.
  const body = method === 'GET' || method === 'HEAD' ? null : (request.body ?? null);
  return { url: href, method, headers, body, timeout };
}

function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (typeof error === 'object' && error !== null && 'message' in error) return String(error.message);
  return String(error);
}

function isTimeout(error: unknown, signal: AbortSignal): boolean {
  if (signal.aborted) return true;
  return typeof error === 'object' && error !== null && 'name' in error && error.name === 'TimeoutError';
}

/**
 * A clear reason for a failed fetch. workerd says little ("Network connection lost." for refused,
 * reset, closed and TLS failures alike; "internal error; reference = …" for DNS failures and
 * malformed replies), while Node's undici wraps the real reason in `error.cause` with a code.
 */
export function describeFailure(error: unknown, url: string): string {
  const chain: unknown[] = [];
  for (let e: unknown = error; e !== undefined && e !== null && chain.length < 4; ) {
    chain.push(e);
    e = typeof e === 'object' && 'cause' in e ? e.cause : undefined;
  }
  const codes = chain.map((e) =>
    typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : '',
  );
  const names = chain.map((e) => (e instanceof Error ? e.name : ''));
  const messages = chain.map(messageOf);
  // The innermost message is the most specific (undici's outer one is just "fetch failed").
  const detail = messages[messages.length - 1] ?? String(error);
  const has = (pattern: RegExp) => codes.some((c) => pattern.test(c)) || messages.some((m) => pattern.test(m));

  if (has(/ECONNREFUSED/)) return `connection refused: ${detail}`;
  if (has(/ENOTFOUND|EAI_AGAIN|EAI_NONAME|DNS lookup failed/)) return `DNS lookup failed: ${detail}`;
  if (has(/ECONNRESET/)) return `connection reset by peer: ${detail}`;
  if (codes.some((c) => /^HPE_/.test(c)) || names.includes('HTTPParserError')) {
    return `malformed HTTP response: ${detail}`;
  }
  if (codes.some((c) => /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|EPROTO)/.test(c))) {
    return `TLS failure: ${detail}`;
  }
  if (has(/UND_ERR_SOCKET|other side closed/)) return `connection closed before a complete response: ${detail}`;
  if (has(/ETIMEDOUT|UND_ERR_CONNECT_TIMEOUT/)) return `connection timed out: ${detail}`;
  if (/^Too many redirects/i.test(detail) || has(/redirect count exceeded/)) {
    return `too many redirects starting at ${url}`;
  }
  if (detail === 'Network connection lost.') {
    return `connection failed: ${detail} (refused, reset, closed or TLS failure before a complete response)`;
  }
  const internal = /^internal error; reference = (\S+)/.exec(detail);
  if (internal) {
    const host = new URL(url).hostname;
    // An IP literal needs no DNS, so then the reply itself (or TLS) was at fault.
    const ipLiteral = /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.startsWith('[');
    const likely = ipLiteral ? 'a malformed HTTP reply' : 'a DNS lookup failure or a malformed HTTP reply';
    return `request failed: the runtime reported an internal error, typically ${likely} (workerd reference ${internal[1]})`;
  }
  return `request failed: ${detail}`;
}

/**
 * The response headers twice, in one pass: as an object (repeated names joined with ", ", every
 * Set-Cookie line joined too) and as [name, value] pairs (names lowercased, in the runtime's
 * sorted order). fetch already joins repeated headers with ", " — lossless for all but
 * Set-Cookie, whose values may contain commas, so each Set-Cookie line stays its own pair.
 */
export function readHeaders(headers: Headers): { headers: Record<string, string>; headers_all: [string, string][] } {
  const object: Record<string, string> = {};
  const pairs: [string, string][] = [];
  let cookiesDone = false;
  for (const [name, value] of headers) {
    if (name !== 'set-cookie') {
      pairs.push([name, value]);
      // Headers iteration yields each name once (repeats joined), except Set-Cookie.
      if (name !== '__proto__') object[name] = value;
      // A valid header name: keep it an own property (plain assignment would set the prototype).
      else Object.defineProperty(object, name, { value, enumerable: true, writable: true, configurable: true });
    } else if (!cookiesDone) {
      cookiesDone = true;
      const cookies = typeof headers.getSetCookie === 'function' ? headers.getSetCookie() : [value];
      for (const cookie of cookies) pairs.push(['set-cookie', cookie]);
      const joined = cookies.length > 0 ? cookies.join(', ') : headers.get('set-cookie');
      if (joined !== null) object['set-cookie'] = joined;
    }
  }
  return { headers: object, headers_all: pairs };
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
    if (typeof prepared === 'string') return failure(id, `invalid request: ${prepared}`);

    // A timer cleared when the request ends, not AbortSignal.timeout(): workerd allows 10,000
    // active timers per invocation, and AbortSignal.timeout's stay active for the full timeout.
    // `aborted` rejects at the timeout too, so a body read that the runtime doesn't abort still
    // ends then; rejected by the timer itself (no abort listener to add and remove per request).
    const controller = new AbortController();
    let fail: (reason: unknown) => void = () => {};
    const aborted = new Promise<never>((_, reject) => {
      fail = reject;
    });
    aborted.catch(() => {}); // observed only when a read loses the race
    const timer = setTimeout(() => {
      const reason = new Error(`Timeout of ${prepared.timeout} ms reached`);
      reason.name = 'TimeoutError';
      controller.abort(reason);
      fail(reason);
    }, prepared.timeout);
    const signal = controller.signal;
    const timedOut = (): Outcome => ({
      ...failure(id, `Timeout of ${prepared.timeout} ms reached`),
      timed_out: true,
    });
    try {
      let response: Response;
      try {
        response = await Promise.race([
          fetchFn(prepared.url, {
            method: prepared.method,
            headers: prepared.headers,
            body: prepared.body,
            redirect: 'follow',
            signal,
          }),
          aborted,
        ]);
      } catch (error) {
        return isTimeout(error, signal) ? timedOut() : failure(id, describeFailure(error, prepared.url));
      }

      const status = response.status;
      const { headers, headers_all } = readHeaders(response.headers);
      const content_type = response.headers.get('content-type');
      const tooLarge = () =>
        `response body exceeds the ${opts.maxResponseBytes}-byte limit (pg-net-edge MAX_RESPONSE_BYTES)`;
      const overLimit = (): Outcome => ({ ...failure(id, tooLarge(), status), headers, headers_all, content_type });
      const succeeded = (body: Uint8Array): Outcome => ({
        id,
        status_code: status,
        content_type,
        headers,
        headers_all,
        ...decodeBody(body),
        timed_out: false,
        error_msg: null,
      });

      // A declared length over the limit fails without downloading anything (a HEAD reply
      // declares the length of a body it does not send, so it is exempt).
      const declared = Number(response.headers.get('content-length') ?? NaN);
      if (prepared.method !== 'HEAD' && Number.isFinite(declared) && declared > opts.maxResponseBytes) {
        response.body?.cancel().catch(() => {});
        return overLimit();
      }

      // Identity-encoded with a declared length within the limit: the body can't grow past it,
      // so read it whole (one read, no per-chunk race). A compressed body can decompress to
      // more than its Content-Length, so it is streamed against the limit below.
      const encoding = response.headers.get('content-encoding');
      if (
        response.body &&
        Number.isFinite(declared) &&
        declared >= 0 &&
        (encoding === null || encoding.trim().toLowerCase() === 'identity')
      ) {
        let whole: ArrayBuffer;
        try {
          whole = await Promise.race([response.arrayBuffer(), aborted]);
        } catch (error) {
          response.body.cancel().catch(() => {});
          if (isTimeout(error, signal)) return timedOut();
          return failure(id, `reading the response body failed: ${describeFailure(error, prepared.url)}`);
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
            const { done, value } = await Promise.race([reader.read(), aborted]);
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
          return failure(id, `reading the response body failed: ${describeFailure(error, prepared.url)}`);
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
      clearTimeout(timer);
    }
  } catch (error) {
    // Not expected; the promise is that execute never throws, whatever it is handed.
    return failure(id, `internal error in execute: ${messageOf(error)}`);
  }
}
