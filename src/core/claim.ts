// Claim: lease up to maxRows free queue rows in one short statement (net._claim does the
// FOR UPDATE SKIP LOCKED + lease stamp), so no transaction stays open while we fetch.
import type postgres from 'postgres';
import type { QueuedRequest } from './types.ts';

export interface ClaimOptions {
  /** Added to each request's timeout to make its lease. */
  leaseMarginMs: number;
  /** Only claim requests whose timeout is at most this (null: any). */
  maxTimeoutMs: number | null;
  /**
   * Start the id-ordered scan after this id (the highest this drain has claimed), so the claim
   * doesn't walk the entries of rows already drained (see net._claim). Null: from the start.
   */
  afterId?: string | null;
  /**
   * Body bytes one claim may bring into memory (net._claim's max_bytes): the claim stops adding
   * rows past it (always at least one), and a row whose body alone is larger ends with an error
   * response instead of being sent. Unset: DEFAULT_CLAIM_BYTES.
   */
  maxBytes?: number | null;
}

/** A claim's body budget unless the drain gives one: 16 MiB, an eighth of a Worker's 128 MB. */
export const DEFAULT_CLAIM_BYTES = 16 * 1024 * 1024;

/**
 * A claimed request. `invalid` is set when the row can't be executed as stored (e.g. a
 * hand-inserted row whose headers are not a JSON object): the drain records an error for it
 * instead of fetching, so it never stalls the queue.
 */
export interface ClaimedRequest extends QueuedRequest {
  invalid?: string;
}

interface ClaimRow {
  id: string;
  method: string | null;
  url: string | null;
  headers: unknown;
  body: Uint8Array | null;
  timeout_milliseconds: number | string | null;
  attempts: number | string | null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export async function claim(
  sql: postgres.Sql,
  owner: string,
  maxRows: number,
  opts: ClaimOptions,
): Promise<ClaimedRequest[]> {
  if (maxRows <= 0) return [];
  const maxTimeout = opts.maxTimeoutMs === null ? null : Math.max(0, Math.floor(opts.maxTimeoutMs));
  const maxBytes = opts.maxBytes === null ? null : Math.max(1, Math.floor(opts.maxBytes ?? DEFAULT_CLAIM_BYTES));
  // id as text: bigint ids can exceed 2^53.
  const rows = await sql<ClaimRow[]>`
    select id::text as id, method, url, headers, body, timeout_milliseconds, attempts
    from net._claim(${owner}, ${Math.floor(maxRows)}, ${Math.floor(opts.leaseMarginMs)}, ${maxTimeout},
                    ${opts.afterId ?? null}::bigint, ${maxBytes}::bigint)`;
  const out: ClaimedRequest[] = [];
  // for…of, not map: it visits empty slots too, and a row without an id (an empty slot a driver
  // bug left, see result-guard.ts) is skipped rather than crashing the drain.
  for (const row of rows) {
    if (typeof row?.id !== 'string' || row.id === '') continue;
    const problems: string[] = [];
    if (!isObject(row.headers) && row.headers !== null) problems.push('headers is not a JSON object');
    if (typeof row.method !== 'string' || row.method === '') problems.push('method is empty');
    if (typeof row.url !== 'string' || row.url === '') problems.push('url is empty');
    const timeout = Number(row.timeout_milliseconds);
    if (!Number.isFinite(timeout) || timeout <= 0) problems.push('timeout_milliseconds is not positive');
    const request: ClaimedRequest = {
      id: row.id,
      method: row.method ?? '',
      url: row.url ?? '',
      headers: isObject(row.headers) ? row.headers : {},
      // postgres.js hands bytea back as a Buffer; keep the core on plain Uint8Array.
      body: row.body === null ? null : new Uint8Array(row.body.buffer, row.body.byteOffset, row.body.byteLength),
      timeout_milliseconds: Number.isFinite(timeout) && timeout > 0 ? timeout : 1,
      attempts: Number(row.attempts ?? 0),
    };
    if (problems.length > 0) request.invalid = `unprocessable queue row: ${problems.join(', ')}`;
    out.push(request);
  }
  return out;
}

/**
 * Gives claimed rows back unsent (net._release): free for any drain at once, their claim's
 * attempt taken back. Returns how many this owner still held.
 */
export async function release(sql: postgres.Sql, owner: string, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const [row] = await sql<{ n: number }[]>`select net._release(${owner}, ${ids.join(',')}) as n`;
  return row?.n ?? 0;
}
