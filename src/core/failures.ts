// Failure classification: what went wrong with a request, as a machine-readable kind (stored in
// net._http_response.error_kind) and an error_msg that starts with pg_net's (curl's) own text for
// the classes pg_net has, so SQL written against pg_net's messages keeps matching, followed by
// pg-net-edge's detail. Runtime-neutral: Node's undici names the cause (error.cause.code);
// workerd says little ("Network connection lost.", "internal error; reference = …"), which a TCP
// probe (ExecuteOptions.canConnect) refines after the fact.

import { messageOf } from './errors.ts';

export type ErrorKind =
  | 'timeout'
  | 'connect'
  | 'no_response'
  | 'receive'
  | 'malformed'
  | 'dns'
  | 'tls'
  | 'too_large'
  | 'redirects'
  | 'invalid_request'
  | 'refused_destination'
  | 'internal'
  | 'other'
  // Set only by net.cancel (schema v5), never by a drain: the request was not sent.
  | 'cancelled';

/** curl's messages (curl_easy_strerror) that pg_net stores in error_msg, per kind. */
export const PG_NET_TEXT: Partial<Record<ErrorKind, string>> = {
  connect: "Couldn't connect to server",
  no_response: 'Server returned nothing (no headers, no data)',
  receive: 'Failure when receiving data from the peer',
  malformed: 'Weird server reply',
  dns: "Couldn't resolve host name",
  tls: 'SSL connect error',
  redirects: 'Number of redirects hit maximum amount',
};

/** Kinds worth retrying: the request may well succeed next time. */
const RETRYABLE: ReadonlySet<ErrorKind> = new Set<ErrorKind>(['timeout', 'connect', 'no_response', 'receive', 'malformed', 'dns', 'other']);

export function isRetryableKind(kind: ErrorKind): boolean {
  return RETRYABLE.has(kind);
}

export interface Failure {
  kind: ErrorKind;
  /** pg-net-edge's own account, without pg_net's text (see failureMessage). */
  detail: string;
  /** workerd's vague errors: the probe may tell connect from no_response/receive, dns from malformed. */
  ambiguous?: 'lost' | 'internal';
}

/** error_msg for a failure: pg_net's text first when pg_net has one for the kind, then the detail. */
export function failureMessage(kind: ErrorKind, detail: string): string {
  const text = PG_NET_TEXT[kind];
  return text === undefined ? detail : `${text}: ${detail}`;
}


/**
 * What a failed fetch (or body read) means. `reading`: the headers had arrived, so a lost
 * connection is a receive failure, not a connect one.
 */
export function classifyFailure(error: unknown, url: string, reading = false): Failure {
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

  if (has(/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL/)) return { kind: 'connect', detail: `connection refused: ${detail}` };
  if (has(/ENOTFOUND|EAI_AGAIN|EAI_NONAME|DNS lookup failed/)) return { kind: 'dns', detail: `DNS lookup failed: ${detail}` };
  if (has(/ECONNRESET/)) return { kind: 'receive', detail: `connection reset by peer: ${detail}` };
  if (codes.some((c) => /^HPE_/.test(c)) || names.includes('HTTPParserError')) {
    return { kind: 'malformed', detail: `malformed HTTP response: ${detail}` };
  }
  if (codes.some((c) => /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|EPROTO)/.test(c))) {
    return { kind: 'tls', detail: `TLS failure: ${detail}` };
  }
  if (has(/UND_ERR_SOCKET|other side closed/)) {
    // Closed before any reply is curl's "Server returned nothing"; closed mid-body a receive failure.
    return { kind: reading ? 'receive' : 'no_response', detail: `connection closed before a complete response: ${detail}` };
  }
  if (has(/ETIMEDOUT|UND_ERR_CONNECT_TIMEOUT/)) return { kind: 'connect', detail: `connection timed out: ${detail}` };
  if (/^Too many redirects/i.test(detail) || has(/redirect count exceeded/)) {
    return { kind: 'redirects', detail: `too many redirects starting at ${url}` };
  }
  if (detail === 'Network connection lost.') {
    if (reading) return { kind: 'receive', detail: `connection lost while reading the body: ${detail}` };
    return {
      kind: 'connect',
      detail: `connection failed: ${detail} (refused, reset, closed or TLS failure before a complete response)`,
      ambiguous: 'lost',
    };
  }
  const internal = /^internal error; reference = (\S+)/.exec(detail);
  if (internal) {
    let host = '';
    try {
      host = new URL(url).hostname;
    } catch {
      // leave host empty: then the reply is the suspect
    }
    // An IP literal needs no DNS, so then the reply itself (or TLS) was at fault.
    const ipLiteral = host === '' || /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.startsWith('[');
    const likely = ipLiteral ? 'a malformed HTTP reply' : 'a DNS lookup failure or a malformed HTTP reply';
    return {
      kind: ipLiteral ? 'malformed' : 'dns',
      detail: `request failed: the runtime reported an internal error, typically ${likely} (workerd reference ${internal[1]})`,
      ...(ipLiteral ? {} : { ambiguous: 'internal' as const }),
    };
  }
  return { kind: 'other', detail: `request failed: ${detail}` };
}

/**
 * A workerd failure refined by a TCP probe of the target (true: something accepts connections
 * there). "Network connection lost." with a listening target means the server took the request
 * and closed or reset without a reply; an internal error for a host that resolves and accepts
 * connections means its reply was malformed.
 */
export function refineWithProbe(failure: Failure, reachable: boolean): Failure {
  if (failure.ambiguous === 'lost') {
    return reachable
      ? { kind: 'no_response', detail: 'connection closed or reset before any reply (Network connection lost.)' }
      : { kind: 'connect', detail: 'connection refused (Network connection lost.; nothing accepts connections there)' };
  }
  if (failure.ambiguous === 'internal') {
    return reachable
      ? { kind: 'malformed', detail: failure.detail.replace('typically a DNS lookup failure or a malformed HTTP reply', 'the host answers, so a malformed HTTP reply') }
      : { kind: 'dns', detail: failure.detail.replace('typically a DNS lookup failure or a malformed HTTP reply', 'the host cannot be reached, typically a DNS lookup failure') };
  }
  return failure;
}

/** The host and port a URL connects to (for the probe), or null. */
export function endpointOf(url: string): { hostname: string; port: number } | null {
  try {
    const u = new URL(url);
    const port = u.port !== '' ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
    const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    return { hostname, port };
  } catch {
    return null;
  }
}

/**
 * The kind of an error_msg without one (outcomes made before kinds existed, or by hand): by the
 * wording pg-net-edge has always used.
 */
export function kindOfMessage(message: string): ErrorKind {
  if (/^Timeout of \d+ ms reached/.test(message)) return 'timeout';
  if (/^invalid request:/.test(message)) return 'invalid_request';
  if (/^internal error/.test(message)) return 'internal';
  if (/^(too many redirects|Number of redirects)/.test(message)) return 'redirects';
  if (/^(TLS failure|SSL connect error)/.test(message)) return 'tls';
  if (/^could not store/.test(message)) return 'internal';
  if (/^response body exceeds/.test(message)) return 'too_large';
  return 'other';
}
