// The ceiling: a bare fetch loop in workerd with the drain's concurrency, against the same target.
// No database, no claim, no record: the most any Worker-based drain could do on this machine.
// GET /run?target=<base>&prefix=<path prefix>&n=<count>&concurrency=<lanes>
//   → {n, concurrency, elapsed_ms, errors, first_error}
export default {
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname !== '/run') return new Response('not found', { status: 404 });
    const target = url.searchParams.get('target') ?? '';
    const prefix = url.searchParams.get('prefix') ?? '/hits/ceiling-';
    const n = Number(url.searchParams.get('n') ?? '0');
    const concurrency = Number(url.searchParams.get('concurrency') ?? '32');
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
