// Response header names in their usual HTTP/1.1 capitalisation. fetch hands every name over
// lower-cased; pg_net stores them as the server sent them, which for nearly every server is this
// form, so `headers->>'Content-Type'` written for pg_net finds its value here too.

/** Names whose usual form is not "each dash-separated word capitalised". */
const SPECIAL = new Map<string, string>(Object.entries({
  'www-authenticate': 'WWW-Authenticate',
  'proxy-authenticate': 'Proxy-Authenticate',
  etag: 'ETag',
  'content-md5': 'Content-MD5',
  dnt: 'DNT',
  te: 'TE',
  'x-xss-protection': 'X-XSS-Protection',
  'x-ua-compatible': 'X-UA-Compatible',
  'x-dns-prefetch-control': 'X-DNS-Prefetch-Control',
  'content-security-policy': 'Content-Security-Policy',
  'content-security-policy-report-only': 'Content-Security-Policy-Report-Only',
  'strict-transport-security': 'Strict-Transport-Security',
  'sec-websocket-key': 'Sec-WebSocket-Key',
  'sec-websocket-accept': 'Sec-WebSocket-Accept',
  'sec-websocket-version': 'Sec-WebSocket-Version',
  'sec-websocket-protocol': 'Sec-WebSocket-Protocol',
  'sec-websocket-extensions': 'Sec-WebSocket-Extensions',
  'x-request-id': 'X-Request-Id',
  'x-correlation-id': 'X-Correlation-Id',
  nel: 'NEL',
}));

/** A few dash-separated words that are acronyms wherever they appear (X-Amz-Id-2 stays; X-API-Key). */
// Maps, not objects: a header named "constructor" must not find Object.prototype's.
const WORDS = new Map<string, string>(Object.entries({ api: 'API', id: 'Id', md5: 'MD5', www: 'WWW', xss: 'XSS', dns: 'DNS', ua: 'UA' }));

// Every response costs a lookup per header: remember the forms already worked out.
const cache = new Map<string, string>();
const CACHE_LIMIT = 2000;

export function canonicalHeaderName(name: string): string {
  const known = cache.get(name);
  if (known !== undefined) return known;
  const lower = name.toLowerCase();
  const result =
    SPECIAL.get(lower) ??
    // Words split at "-" (and at spaces, which a lenient runtime lets through in a name).
    lower
      .split(/([- ])/)
      .map((word) => WORDS.get(word) ?? (word.length === 0 ? word : word[0]!.toUpperCase() + word.slice(1)))
      .join('');
  if (cache.size < CACHE_LIMIT) cache.set(name, result);
  return result;
}
