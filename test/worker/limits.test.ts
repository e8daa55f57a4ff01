// The per-invocation accountant (src/worker/limits.ts) and the fan-out's decisions
// (src/worker/fanout.ts) with fake fetches, a fake executor and a fake clock: no timing.
import { describe, expect, it } from 'vitest';
import { HEADER_WAIT_LIMIT, InvocationLimits, SubrequestLimitError } from '../../src/worker/limits.ts';
import { Fanout } from '../../src/worker/fanout.ts';
import type { ClaimedRequest } from '../../src/core/claim.ts';
import type { Outcome } from '../../src/core/types.ts';

/** A fetch whose answers the test releases by hand. */
function heldFetch() {
  const waiting: (() => void)[] = [];
  const fetchFn = (() =>
    new Promise<Response>((resolve) => waiting.push(() => resolve(new Response('ok'))))) as unknown as typeof fetch;
  return { fetchFn, waiting };
}

const tick = () => new Promise<void>((r) => setTimeout(r, 0));

describe('InvocationLimits', () => {
  it('never has more than 6 waiting for headers; the 7th starts, in order, when one answers', async () => {
    const limits = new InvocationLimits({ subrequestLimit: 1000 });
    const { fetchFn, waiting } = heldFetch();
    const limited = limits.fetchWith(fetchFn);
    const order: number[] = [];
    const calls = Array.from({ length: 20 }, (_, i) => limited(`http://t/${i}`).then(() => order.push(i)));
    await tick();
    expect(waiting.length).toBe(HEADER_WAIT_LIMIT);
    expect(limits.waiting).toBe(6);
    for (let answered = 0; answered < 20; answered++) {
      waiting.shift()!();
      await tick();
      expect(limits.waiting).toBeLessThanOrEqual(6);
    }
    await Promise.all(calls);
    expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(limits.peak).toBe(6);
    expect(limits.subrequests).toBe(20);
  });

  it('a database socket holds its slot until it closes', async () => {
    const limits = new InvocationLimits({ subrequestLimit: 1000 });
    const closeA = await limits.socketSlot();
    await limits.socketSlot();
    expect(limits.free).toBe(4);
    closeA();
    closeA(); // idempotent
    expect(limits.free).toBe(5);
  });

  it('refuses past the subrequest limit, sending nothing', async () => {
    const limits = new InvocationLimits({ subrequestLimit: 2 });
    let sent = 0;
    const limited = limits.fetchWith((async () => {
      sent++;
      return new Response('ok');
    }) as unknown as typeof fetch);
    await limited('http://t/1');
    await limited('http://t/2');
    await expect(limited('http://t/3')).rejects.toThrow(SubrequestLimitError);
    expect(sent).toBe(2);
    expect(limits.waiting).toBe(0);
  });
});

function row(id: number, origin = 'http://a.test'): ClaimedRequest {
  return { id: String(id), method: 'GET', url: `${origin}/${id}`, headers: {}, body: null, timeout_milliseconds: 1000, attempts: 1 };
}

function outcome(id: string): Outcome {
  return { id, status_code: 200, content_type: null, headers: {}, content: null, content_base64: null, timed_out: false, error_msg: null };
}

/** A fake executor: records the rows each lane receives; the test answers them. */
function fakeExecutors() {
  const lanes: { rows: string[]; answer: (id: string) => void; end: () => void; unsent: (id: string) => void }[] = [];
  const encoder = new TextEncoder();
  const call = async (body: ReadableStream<Uint8Array>): Promise<Response> => {
    const out = new TransformStream<Uint8Array, Uint8Array>();
    const writer = out.writable.getWriter();
    const lane = {
      rows: [] as string[],
      answer: (id: string) => void writer.write(encoder.encode(`${JSON.stringify({ outcome: outcome(id) })}\n`)),
      unsent: (id: string) => void writer.write(encoder.encode(`${JSON.stringify({ unsent: id })}\n`)),
      end: () => {
        void writer.write(encoder.encode(`${JSON.stringify({ done: { peak_header_waits: 6, subrequests: 0 } })}\n`)).then(() => writer.close());
      },
    };
    lanes.push(lane);
    void (async () => {
      const reader = body.pipeThrough(new TextDecoderStream()).getReader();
      let first = true;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const line of value.split('\n').filter(Boolean)) {
          if (first) first = false;
          else lane.rows.push((JSON.parse(line) as { id: string }).id);
        }
      }
    })();
    return new Response(out.readable);
  };
  return { call, lanes };
}

const job = { maxResponseBytes: 1000, userAgent: 'x', denied: null, allowed: null, subrequestLimit: 1000, maxWaitMs: 15_000, memoryLimitBytes: 64_000 };

describe('Fanout', () => {
  it('opens lanes as the rows need them (rows / rows per executor), up to EXECUTORS; refuses at once beyond', async () => {
    const { call, lanes } = fakeExecutors();
    const limits = new InvocationLimits({ subrequestLimit: 1000 });
    const fanout = new Fanout(call, limits, { executors: 3, rowsPerExecutor: 6, originConcurrency: 100, job });
    expect(fanout.room()).toBe(18);
    const results = Array.from({ length: 10 }, (_, i) => fanout.tryRun(row(i))!);
    await tick();
    await tick();
    expect(lanes.length).toBe(2); // 10 rows: 6 + 4
    expect(lanes.map((l) => l.rows.length)).toEqual([6, 4]);
    expect(fanout.room()).toBe(8);
    const more = Array.from({ length: 8 }, (_, i) => fanout.tryRun(row(100 + i))!);
    // Every place taken: the next row is refused at once, nothing sent (the drain keeps it).
    expect(fanout.tryRun(row(200))).toBeNull();
    expect(fanout.room()).toBe(0);
    await tick();
    await tick();
    expect(lanes.length).toBe(3); // capped
    expect(lanes.map((l) => l.rows.length)).toEqual([6, 6, 6]);
    // An answer frees a place in its lane: the next row goes there.
    lanes[0]!.answer(lanes[0]!.rows[0]!);
    expect(await results[0]).toMatchObject({ id: '0', status_code: 200 });
    expect(fanout.room()).toBe(1);
    const last = fanout.tryRun(row(300))!;
    await tick();
    await tick();
    expect(lanes[0]!.rows.length).toBe(7);
    fanout.close();
    for (const lane of lanes) lane.end();
    // Rows never answered come back as not sent (given back to the queue by the drain).
    expect((await Promise.all([...results.slice(1), ...more, last])).every((o) => o === null)).toBe(true);
    expect(fanout.stats()).toMatchObject({ executors: 3, peak_in_flight: 18, peak_header_waits: 6 });
  });

  it('keeps at most ORIGIN_CONCURRENCY rows of one origin out, while other origins go on', async () => {
    const { call, lanes } = fakeExecutors();
    const fanout = new Fanout(call, new InvocationLimits({ subrequestLimit: 1000 }), { executors: 10, rowsPerExecutor: 6, originConcurrency: 4, job });
    const taken = Array.from({ length: 10 }, (_, i) => fanout.tryRun(row(i, 'http://a.test')));
    const others = Array.from({ length: 3 }, (_, i) => fanout.tryRun(row(50 + i, 'http://b.test')));
    expect(taken.map((p) => p !== null)).toEqual([true, true, true, true, false, false, false, false, false, false]);
    expect(others.every((p) => p !== null)).toBe(true);
    await tick();
    await tick();
    const sent = lanes.flatMap((l) => l.rows);
    expect(sent.filter((id) => Number(id) < 50)).toHaveLength(4);
    expect(sent.filter((id) => Number(id) >= 50)).toHaveLength(3);
    fanout.close();
  });

  it("leaves the coordinator's own requests the subrequests lanes don't need", () => {
    const { call } = fakeExecutors();
    const limits = new InvocationLimits({ subrequestLimit: 100 });
    const fanout = new Fanout(call, limits, { executors: 4, rowsPerExecutor: 6, originConcurrency: 100, job });
    // 4 lanes and a reserve of 10 kept back.
    expect(fanout.localLeft()).toBe(86);
    limits.spend();
    expect(fanout.localLeft()).toBe(85);
  });

  it('opens no lane without a subrequest left', () => {
    const { call, lanes } = fakeExecutors();
    const limits = new InvocationLimits({ subrequestLimit: 1 });
    limits.spend();
    const fanout = new Fanout(call, limits, { executors: 4, rowsPerExecutor: 6, originConcurrency: 100, job });
    expect(fanout.room()).toBe(0);
    expect(fanout.tryRun(row(1))).toBeNull();
    expect(lanes).toHaveLength(0);
    fanout.close();
  });
});
