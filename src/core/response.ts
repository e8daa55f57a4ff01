// Reads a fetch reply into what the response row holds: the body as text or exact bytes
// (base64), the headers as an object and as [name, value] pairs. Pure functions of a Headers
// object or bytes; runtime-neutral (TextDecoder, btoa, typed arrays).
import { canonicalHeaderName } from './header-names.ts';

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

export interface ReadHeaders {
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
