// An executor's outcome stays in its isolate's byte count (memory.ts) until the coordinator's
// stream has taken its line: the encoded body is still in memory until then, and no row may
// start past the limit because of it. A fake fetch and a coordinator that reads by hand: no timing.
import { describe, expect, it } from 'vitest';
import { runExecutor, type ExecutorJob, type WireRow } from '../../src/worker/executor.ts';
import { heldBytes } from '../../src/core/memory.ts';

const MiB = 1024 * 1024;
const tick = () => new Promise<void>((r) => setTimeout(r, 1));

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 5000; i++) {
    if (check()) return;
    await tick();
  }
  throw new Error(`never: ${what}`);
}

function row(id: number): WireRow {
  return { id: String(id), method: 'GET', url: `https://example.com/${id}`, headers: {}, body: null, timeout_milliseconds: 10_000, attempts: 0 };
}

const job: Omit<ExecutorJob, 'rows'> = {
  maxResponseBytes: 2 * MiB,
  userAgent: 'test',
  denied: null,
  allowed: null,
  subrequestLimit: 1000,
  maxWaitMs: 60_000,
  memoryLimitBytes: MiB,
};

describe('executor memory', () => {
  it('counts an outcome until the coordinator has read its line, and starts no row past the limit meanwhile', async () => {
    const base = heldBytes.total;
    const fetched: string[] = [];
    let bodyRead = false;
    let firstLineRead = false;
    let firstLineReadAtSecondFetch: boolean | null = null;
    const fetchFn = (async (input: Parameters<typeof fetch>[0]) => {
      const url = String(input instanceof Request ? input.url : input);
      fetched.push(url);
      if (fetched.length === 2) firstLineReadAtSecondFetch = firstLineRead;
      const chunk = new Uint8Array(64 * 1024).fill(0x78);
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent >= MiB) {
            bodyRead = true;
            controller.close();
            return;
          }
          controller.enqueue(chunk.slice());
          sent += chunk.length;
        },
      });
      return new Response(body, { headers: { 'content-length': String(MiB) } });
    }) as typeof fetch;

    const input = new TransformStream<Uint8Array, Uint8Array>();
    const rows = input.writable.getWriter();
    const encoder = new TextEncoder();
    void rows.write(encoder.encode(`${JSON.stringify(job)}\n${JSON.stringify(row(1))}\n`));
    const work: Promise<unknown>[] = [];
    const response = await runExecutor(input.readable, fetchFn, (p) => work.push(p));

    // Row 1's body is read; its bytes move from the body's reservation (exactly 1 MiB) to its line.
    await until('row 1 read', () => bodyRead);
    await until('row 1 answered', () => heldBytes.total !== base + MiB);
    // Nobody has read the response yet: the line (over 1 MiB of content) is still held here.
    expect(heldBytes.total - base).toBeGreaterThanOrEqual(MiB);

    // Row 2 arrives while the isolate holds its limit: it starts only once line 1 was taken.
    void rows.write(encoder.encode(`${JSON.stringify(row(2))}\n`));
    void rows.close();
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      if (text.includes('"id":"1"')) firstLineRead = true;
    }
    await Promise.all(work);
    const lines = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, { id?: string; content?: string }>);
    expect(lines.filter((l) => l.outcome).map((l) => [l.outcome!.id, l.outcome!.content?.length])).toEqual([
      ['1', MiB],
      ['2', MiB],
    ]);
    expect(fetched).toHaveLength(2);
    expect(firstLineReadAtSecondFetch).toBe(true);
    // Everything taken: nothing stays counted.
    expect(heldBytes.total).toBe(base);
  });
});
