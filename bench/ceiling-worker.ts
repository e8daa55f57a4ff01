// The ceiling: a bare fetch loop in workerd with the drain's concurrency, against the same target.
// No database, no claim, no record: the most any Worker-based drain could do on this machine.
// GET /run?target=<base>&prefix=<path prefix>&n=<count>&concurrency=<lanes>
//   → {n, concurrency, elapsed_ms, errors, first_error}
// GET /in-memory?…&slots=<FETCH_SLOTS> (same parameters): the real Drain and execute against an
// in-memory queue, for bench/profile.ts --in-memory — what the drain costs apart from its database.
import type postgres from 'postgres';
import { Drain } from '../src/core/drain.ts';

/** Just enough of postgres.js's tagged template for the drain's claim, record and due check. */
function inMemoryQueue(target: string, prefix: string, n: number): postgres.Sql {
  let next = 0;
  const query = (strings: TemplateStringsArray, ...values: unknown[]): Promise<unknown[]> => {
    const text = strings.join('$');
    if (text.includes('net._claim(')) {
      const rows = [];
      for (const want = Number(values[1]); rows.length < want && next < n; next++) {
        rows.push({ id: String(next + 1), method: 'GET', url: `${target}${prefix}${next}`, headers: {}, body: null, timeout_milliseconds: 2000, attempts: 0 });
      }
      return Promise.resolve(rows);
    }
    // net._record: JSON.stringify has already run in record(), as for the database.
    if (text.includes('net._record(')) return Promise.resolve([{ n: 0 }]);
    return Promise.resolve([{ ms: null }]);
  };
  return query as unknown as postgres.Sql;
}

async function inMemory(target: string, prefix: string, n: number, concurrency: number, fetchSlots: number | undefined): Promise<Response> {
  const started = Date.now();
  const drain = new Drain(inMemoryQueue(target, prefix, n), (input, init) => fetch(input, init), {
    concurrency,
    ...(fetchSlots !== undefined ? { fetchSlots } : {}),
    batchSize: 200,
    budgetMs: 600_000,
    hardLimitMs: 900_000,
    leaseMarginMs: 30_000,
    flushMs: 5,
    maxResponseBytes: 2 * 1024 * 1024,
    userAgent: 'pg-net-edge',
  }, { heartbeat: false });
  const stats = await drain.run();
  return Response.json({ n, concurrency, elapsed_ms: Date.now() - started, errors: stats.errors, first_error: stats.last_error ?? null });
}

export default {
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const target = url.searchParams.get('target') ?? '';
    const prefix = url.searchParams.get('prefix') ?? '/hits/ceiling-';
    const n = Number(url.searchParams.get('n') ?? '0');
    const concurrency = Number(url.searchParams.get('concurrency') ?? '32');
    const slots = url.searchParams.get('slots');
    if (url.pathname === '/in-memory') return inMemory(target, prefix, n, concurrency, slots === null ? undefined : Number(slots));
    if (url.pathname !== '/run') return new Response('not found', { status: 404 });
    let next = 0;
    let errors = 0;
    let firstError: string | null = null;
    // Same shape as the drain's work per request: fetch with a timeout, read the whole body.
    const lane = async (): Promise<void> => {
      for (;;) {
        const i = next++;
        if (i >= n) return;
        // A cleared timer, not AbortSignal.timeout(): workerd allows 10,000 active timeouts per
        // invocation, and AbortSignal.timeout's stay active for their full 2 s.
        const abort = new AbortController();
        const timer = setTimeout(() => abort.abort(new Error('timeout')), 2000);
        try {
          const response = await fetch(`${target}${prefix}${i}`, { signal: abort.signal });
          await response.arrayBuffer();
          if (!response.ok) {
            errors++;
            firstError ??= `status ${response.status}`;
          }
        } catch (error) {
          errors++;
          firstError ??= error instanceof Error ? error.message : String(error);
        } finally {
          clearTimeout(timer);
        }
      }
    };
    const started = Date.now();
    await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
    const elapsed = Date.now() - started;
    return new Response(JSON.stringify({ n, concurrency, elapsed_ms: elapsed, errors, first_error: firstError }), {
      headers: { 'content-type': 'application/json' },
    });
  },
};
