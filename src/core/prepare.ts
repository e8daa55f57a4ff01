// Builds the fetch inputs from a claimed row, or says exactly what is wrong with it. Rows may
// be inserted by hand, so nothing here trusts their shape; it never throws on bad input and
// never touches the network. The usual row (http(s) URL, string headers) costs no URL parse
// and no Headers object.
import { messageOf } from './errors.ts';
import type { QueuedRequest } from './types.ts';

const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS']);

export type Prepared = { url: string; method: string; headers: Headers | Record<string, string>; body: Uint8Array | null; timeout: number };

export function isPlainObject(value: unknown): value is Record<string, unknown> {
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
export function prepare(request: QueuedRequest, userAgent: string): Prepared | string {
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
export function validate(request: QueuedRequest, method: string, given: Record<string, unknown>, userAgent: string): Prepared | string {
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
export function init(prepared: Prepared, signal: AbortSignal): RequestInit {
  const given: RequestInit = { headers: prepared.headers, signal };
  if (prepared.method !== 'GET') given.method = prepared.method;
  if (prepared.body !== null) given.body = prepared.body;
  return given;
}
