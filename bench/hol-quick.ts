// A quick head-of-line check (the bench's "head of line" row, alone): 50 requests answering after
// 5 s spread evenly among 2,000 fast ones in one statement; prints when the last fast and the last
// slow response were recorded, and the drains' own figures.
//   npx tsx bench/hol-quick.ts [slow] [fast]   (BENCH_VARS='{"EXECUTORS":"0"}' for Worker variables)
import { sleep } from './measure.ts';
import { startStack } from './stack.ts';

const slow = Number(process.argv[2] ?? 50);
const fast = Number(process.argv[3] ?? 2000);
const stack = await startStack({ progress: (line) => console.error(line), vars: JSON.parse(process.env.BENCH_VARS ?? '{}') as Record<string, string> });
try {
  const label = `hol${Date.now().toString(36)}`;
  const every = Math.floor((slow + fast) / slow);
  await stack.sql`delete from net._http_response`;
  stack.drainLogs.length = 0;
  const t0 = Date.now();
  await stack.sql`
    select case when g % ${every}::int = 0 and g / ${every}::int < ${slow}::int
                then net.http_get(${stack.target.url} || '/delay/5000?' || ${label} || g, timeout_milliseconds := 10000)
                else net.http_get(${stack.target.url} || '/hits/' || ${label} || '/' || g, timeout_milliseconds := 2000) end
    from generate_series(0, ${slow + fast - 1}::int) g`;
  for (;;) {
    const [row] = await stack.sql<{ n: number }[]>`select count(*)::int as n from net._http_response`;
    if (row!.n >= slow + fast) break;
    if (Date.now() - t0 > 90_000) {
      const queue = await stack.sql`select id, url, attempts, lease_owner is not null as leased, lease_expires, now() as now from net.http_request_queue order by id limit 5`;
      throw new Error(`only ${row!.n} of ${slow + fast} after 90 s; queue: ${JSON.stringify(queue)}; drains: ${JSON.stringify(stack.drainLogs)}`);
    }
    if (process.env.HOL_TRACE) {
      const [c] = await stack.sql<{ fast: number; slow: number }[]>`
        select count(*) filter (where content not like 'delayed%')::int as fast, count(*) filter (where content like 'delayed%')::int as slow from net._http_response`;
      console.error(`trace ${Date.now() - t0} ms: fast ${c!.fast}, slow ${c!.slow}`);
    }
    await sleep(50);
  }
  const [t] = await stack.sql<{ last_fast: number; last_slow: number; errors: number }[]>`
    select (extract(epoch from max(r.created) filter (where r.content not like 'delayed%')) * 1000)::float8 as last_fast,
           (extract(epoch from max(r.created) filter (where r.content like 'delayed%')) * 1000)::float8 as last_slow,
           count(*) filter (where r.error_msg is not null or r.status_code <> 200)::int as errors
    from net._http_response r`;
  await sleep(1500); // the drain's log line comes after its linger
  const logs = stack.drainLogs as unknown as Record<string, unknown>[];
  console.log(
    JSON.stringify({
      last_fast_ms: Math.round(t!.last_fast - t0),
      last_slow_ms: Math.round(t!.last_slow - t0),
      errors: t!.errors,
      drains: process.env.HOL_TRACE ? logs : logs.map((l) => ({ trigger: l.trigger, executors: l.executors, peak_in_flight: l.peak_in_flight, completed: l.completed, stopped: l.stopped })),
    }),
  );
} finally {
  await stack.stop();
}
