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
  it('opens lanes as the backlog needs (rows / rows per executor), up to EXECUTORS', async () => {
    const { call, lanes } = fakeExecutors();
    const limits = new InvocationLimits({ subrequestLimit: 1000 });
    const fanout = new Fanout(call, limits, { executors: 3, rowsPerExecutor: 6, originConcurrency: 100, job });
    const results = Array.from({ length: 10 }, (_, i) => fanout.run(row(i)));
    await tick();
    await tick();
    expect(lanes.length).toBe(2); // 10 rows: 6 + 4
    expect(lanes.map((l) => l.rows.length)).toEqual([6, 4]);
    const more = Array.from({ length: 20 }, (_, i) => fanout.run(row(100 + i)));
    await tick();
    await tick();
    expect(lanes.length).toBe(3); // capped
    expect(lanes.map((l) => l.rows.length)).toEqual([6, 6, 6]);
    // An answer frees room in its lane: the next waiting row goes there.
    lanes[0]!.answer(lanes[0]!.rows[0]!);
    await tick();
    await tick();
    expect(lanes[0]!.rows.length).toBe(7);
    expect(await results[0]).toMatchObject({ id: '0', status_code: 200 });
    fanout.close();
    for (const lane of lanes) lane.end();
    // Rows never answered come back as not sent (given back to the queue by the drain).
    expect((await Promise.all([...results.slice(1), ...more])).every((o) => o === null)).toBe(true);
    expect(fanout.stats()).toMatchObject({ executors: 3, peak_in_flight: 18, peak_header_waits: 6 });
  });

  it('keeps at most ORIGIN_CONCURRENCY rows of one origin out, while other origins go on', async () => {
    const { call, lanes } = fakeExecutors();
    const fanout = new Fanout(call, new InvocationLimits({ subrequestLimit: 1000 }), { executors: 10, rowsPerExecutor: 6, originConcurrency: 4, job });
    for (let i = 0; i < 10; i++) void fanout.run(row(i, 'http://a.test'));
    for (let i = 0; i < 3; i++) void fanout.run(row(50 + i, 'http://b.test'));
    await tick();
    await tick();
    const sent = lanes.flatMap((l) => l.rows);
    expect(sent.filter((id) => Number(id) < 50)).toHaveLength(4);
    expect(sent.filter((id) => Number(id) >= 50)).toHaveLength(3);
    fanout.close();
  });

  it('a row that waited past maxWaitMs (fake clock) is given back unsent', async () => {
    const { call } = fakeExecutors();
    let now = 0;
    const fanout = new Fanout(call, new InvocationLimits({ subrequestLimit: 1000 }), { executors: 0, rowsPerExecutor: 6, originConcurrency: 4, job }, () => now);
    const result = fanout.run(row(1));
    await tick();
    now = job.maxWaitMs + 1;
    void fanout.run(row(2));
    expect(await result).toBeNull();
    fanout.close();
  });

  it("uses the coordinator's own free slots first, keeping one for opening lanes", async () => {
    const { call, lanes } = fakeExecutors();
    const limits = new InvocationLimits({ subrequestLimit: 1000 });
    await limits.socketSlot(); // the database
    await limits.socketSlot();
    const local: string[] = [];
    const fanout = new Fanout(call, limits, {
      executors: 4,
      rowsPerExecutor: 6,
      originConcurrency: 100,
      job,
      local: (r) => {
        local.push(r.id);
        return new Promise<Outcome>(() => {});
      },
    });
    for (let i = 0; i < 9; i++) void fanout.run(row(i));
    await tick();
    await tick();
    expect(local).toEqual(['0', '1', '2']);
    expect(lanes.flatMap((l) => l.rows)).toEqual(['3', '4', '5', '6', '7', '8']);
    fanout.close();
  });
});
