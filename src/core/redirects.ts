// Sending one request under the destination policy: each hop's URL is checked before it is sent
// (and, in Node, the addresses its host resolves to), and redirects are followed here
// (redirect: 'manual') rather than by fetch, so a redirect can't lead to a refused destination.
// Follows the fetch standard's rules: at most 20 hops; 303 (and 301/302 after a POST) become a
// GET without a body; Authorization, Cookie and Proxy-Authorization are dropped when a hop
// leaves the origin; only http(s) locations are followed.
import { refuseHost, refuseUrl, type DestinationPolicy } from './destination.ts';
import { failureMessage } from './failures.ts';

export const MAX_REDIRECTS = 20;

export interface SendPolicy {
  destinations: DestinationPolicy;
  /** Node: the addresses a host name resolves to, each checked against the denied list. */
  resolveHost?: ((host: string) => Promise<string[]>) | undefined;
}

/** A hop refused or a redirect that can't be followed: the message for the error row. */
export class Refused {
  constructor(
    readonly message: string,
    /** error_kind of the row: the policy refused a hop, or the redirect chain can't be followed. */
    readonly kind: 'refused_destination' | 'redirects' = 'redirects',
  ) {}
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const CREDENTIALS = ['authorization', 'cookie', 'proxy-authorization'];
const BODY_HEADERS = ['content-type', 'content-length', 'content-encoding', 'content-language', 'content-location'];

/** The Node check of the addresses url's host name resolves to (policy.resolveHost set). */
async function resolvedRefusal(url: string, policy: SendPolicy): Promise<string | null> {
  if (!policy.resolveHost) return null;
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return null; // fetch reports the bad URL
  }
  if (host.startsWith('[') || /^[0-9.]+$/.test(host)) return null; // a literal: checked above
  let addresses: string[];
  try {
    addresses = await policy.resolveHost(host);
  } catch {
    return null; // unresolvable: fetch fails with its own DNS error
  }
  for (const address of addresses) {
    const denied = refuseHost(address, policy.destinations, true);
    if (denied !== null) return denied.replace('refused destination: ', `refused destination: ${host} resolves to `);
  }
  return null;
}

/**
 * Sends `init` to `url` and follows redirects under the policy. Resolves with the final response,
 * or Refused (nothing sent for the refused hop). Rejects as fetch does (timeouts, network errors).
 */
export async function sendChecked(
  url: string,
  init: RequestInit,
  fetchFn: typeof fetch,
  policy: SendPolicy,
): Promise<Response | Refused> {
  let current = url;
  let request: RequestInit = { ...init, redirect: 'manual' };
  for (let hop = 0; ; hop++) {
    // Synchronous up to fetchFn unless names are resolved (Node): the drain counts a fetch slot
    // as taken when fetchFn is called, and starts requests in a loop that must see it at once.
    const refused = refuseUrl(current, policy.destinations) ?? (policy.resolveHost ? await resolvedRefusal(current, policy) : null);
    if (refused !== null) return new Refused(refused, 'refused_destination');
    const response = await fetchFn(current, request);
    const location = response.headers.get('location');
    if (!REDIRECTS.has(response.status) || location === null) return response;
    response.body?.cancel().catch(() => {});
    if (hop >= MAX_REDIRECTS) return new Refused(failureMessage('redirects', `too many redirects starting at ${url}`));
    let next: URL;
    try {
      next = new URL(location, current);
    } catch {
      return new Refused(`invalid redirect: ${JSON.stringify(location)} is not a URL`);
    }
    if (next.protocol !== 'http:' && next.protocol !== 'https:') {
      return new Refused(`invalid redirect: ${JSON.stringify(location)} is not http or https`);
    }
    request = nextRequest(request, response.status, new URL(current).origin !== next.origin);
    current = next.href;
  }
}

function nextRequest(previous: RequestInit, status: number, crossOrigin: boolean): RequestInit {
  const method = (previous.method ?? 'GET').toUpperCase();
  const toGet = (status === 303 && method !== 'HEAD') || ((status === 301 || status === 302) && method === 'POST');
  if (!toGet && !crossOrigin) return previous;
  const headers = new Headers(previous.headers);
  const next: RequestInit = { ...previous, headers };
  if (toGet) {
    next.method = 'GET';
    delete next.body;
    for (const name of BODY_HEADERS) headers.delete(name);
  }
  if (crossOrigin) for (const name of CREDENTIALS) headers.delete(name);
  return next;
}
