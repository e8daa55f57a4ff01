// Pure logic of pg_net compatibility: header-name capitalisation and failure classification
// (the runtime-facing parts are tested against real fetch in execute-node and test/worker).
import { describe, expect, it } from 'vitest';
import { classifyFailure, failureMessage, kindOfMessage, refineWithProbe } from '../../src/core/failures.ts';
import { canonicalHeaderName } from '../../src/core/header-names.ts';
import { isRetryable } from '../../src/core/retry.ts';

describe('canonicalHeaderName', () => {
  it.each([
    ['content-type', 'Content-Type'],
    ['x-request-id', 'X-Request-Id'],
    ['www-authenticate', 'WWW-Authenticate'],
    ['etag', 'ETag'],
    ['content-md5', 'Content-MD5'],
    ['dnt', 'DNT'],
    ['te', 'TE'],
    ['set-cookie', 'Set-Cookie'],
    ['x-api-key', 'X-API-Key'],
    ['date', 'Date'],
    ['x bad header', 'X Bad Header'],
    ['Content-TYPE', 'Content-Type'],
    ['constructor', 'Constructor'],
    ['__proto__', '__proto__'],
    ['x--y', 'X--Y'],
  ])('%s → %s', (name, expected) => {
    expect(canonicalHeaderName(name)).toBe(expected);
  });
});

const nodeError = (code: string, message: string) => Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error(message), { code }) });

describe('classifyFailure', () => {
  it.each([
    [nodeError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:1'), 'connect', "Couldn't connect to server: connection refused: connect ECONNREFUSED 127.0.0.1:1"],
    [nodeError('UND_ERR_SOCKET', 'other side closed'), 'no_response', 'Server returned nothing (no headers, no data): connection closed before a complete response: other side closed'],
    [nodeError('ECONNRESET', 'read ECONNRESET'), 'receive', 'Failure when receiving data from the peer: connection reset by peer: read ECONNRESET'],
    [nodeError('HPE_INVALID_HEADER_TOKEN', 'Invalid header value char'), 'malformed', 'Weird server reply: malformed HTTP response: Invalid header value char'],
    [nodeError('ENOTFOUND', 'getaddrinfo ENOTFOUND x.invalid'), 'dns', "Couldn't resolve host name: DNS lookup failed: getaddrinfo ENOTFOUND x.invalid"],
    [new Error('boom'), 'other', 'request failed: boom'],
  ])('%s', (error, kind, message) => {
    const failure = classifyFailure(error, 'http://127.0.0.1:1/');
    expect(failure.kind).toBe(kind);
    expect(failureMessage(failure.kind, failure.detail)).toBe(message);
  });

  it('a connection closed while reading the body is a receive failure', () => {
    expect(classifyFailure(nodeError('UND_ERR_SOCKET', 'other side closed'), 'http://x/', true).kind).toBe('receive');
    expect(classifyFailure(new Error('Network connection lost.'), 'http://x/', true).kind).toBe('receive');
  });

  it("workerd's vague errors are refined by the probe", () => {
    const lost = classifyFailure(new Error('Network connection lost.'), 'http://127.0.0.1:1/');
    expect(lost).toMatchObject({ kind: 'connect', ambiguous: 'lost' });
    expect(refineWithProbe(lost, false).kind).toBe('connect');
    expect(refineWithProbe(lost, true).kind).toBe('no_response');
    const internal = classifyFailure(new Error('internal error; reference = abc'), 'http://example.test/');
    expect(internal).toMatchObject({ kind: 'dns', ambiguous: 'internal' });
    expect(refineWithProbe(internal, true).kind).toBe('malformed');
    expect(refineWithProbe(internal, false).kind).toBe('dns');
    // An IP literal needs no DNS: the reply was malformed, no probe needed.
    expect(classifyFailure(new Error('internal error; reference = abc'), 'http://127.0.0.1:1/')).toEqual(
      expect.objectContaining({ kind: 'malformed' }),
    );
  });

  it('kinds decide retries; older messages without a kind still get one', () => {
    for (const kind of ['connect', 'no_response', 'receive', 'malformed', 'dns', 'timeout', 'other'] as const) {
      expect(isRetryable({ status_code: null, timed_out: false, error_msg: 'x', error_kind: kind }), kind).toBe(true);
    }
    for (const kind of ['tls', 'too_large', 'redirects', 'invalid_request', 'refused_destination', 'internal', 'cancelled'] as const) {
      expect(isRetryable({ status_code: null, timed_out: false, error_msg: 'x', error_kind: kind }), kind).toBe(false);
    }
    expect(kindOfMessage('Timeout of 5 ms reached')).toBe('timeout');
    expect(kindOfMessage('invalid request: x')).toBe('invalid_request');
    expect(kindOfMessage('something else')).toBe('other');
  });
});
