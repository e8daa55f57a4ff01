// The outcome the drain stores for a request it could not send or store (its own failures, or an
// unusable row), in place of a response.
import type { ErrorKind } from './failures.ts';
import type { Outcome } from './types.ts';

export function errorOutcome(id: string, message: string, kind: ErrorKind = 'internal'): Outcome {
  return {
    id,
    status_code: null,
    content_type: null,
    headers: null,
    content: null,
    content_base64: null,
    timed_out: false,
    error_msg: message,
    // Outcomes made here are the drain's own failures (could not store, …) or unusable rows.
    error_kind: kind,
  };
}
