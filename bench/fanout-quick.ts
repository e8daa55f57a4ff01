// A quick before/after check for the fan-out (issue 16): N GETs queued in one statement against
// a loopback target answering at once (/hits/) and after a delay (/held/<ms>/), drained as in
// production (commit → NOTIFY → relay → /nudge). Prints requests/s, workerd CPU per request, the
// most requests the target held at once, and the drain's own figures (executors, peaks).
//   node --experimental-strip-types bench/fanout-quick.ts [N] [delays, e.g. 0,200]
import { processCpuMs, sleep } from './measure.ts';
import { startStack } from './stack.ts';

const n = Number(process.argv[2] ?? 5000);
const delays = (process.argv[3] ?? '0,200').split(',').map(Number);
const stack = await startStack({ progress: (line) => console.error(line), vars: JSON.parse(process.env.BENCH_VARS ?? "{}") as Record<string, string> });
try {
  for (const delay of delays) {
    const label = `q${delay}x${Date.now().toString(36)}`;
    const path = delay === 0 ? `/hits/${label}/` : `/held/${delay}/${label}/`;
    await stack.sql`delete from net._http_response`;
    stack.drainLogs.length = 0;
    const cpu0 = stack.workerdPid === null ? 0 : processCpuMs(stack.workerdPid);
    const t0 = Date.now();
    await stack.sql`select net.http_get(${stack.target.url + path} || g, timeout_milliseconds := 10000) from generate_series(1, ${n}::int) g`;
    for (;;) {
      const [row] = await stack.sql<{ n: number }[]>`select count(*)::int as n from net._http_response`;
      if (row!.n >= n) break;
      if (Date.now() - t0 > 120_000) throw new Error(`only ${row!.n} of ${n} after 120 s: ${JSON.stringify(stack.relay)} ${JSON.stringify(stack.drainLogs)} ${stack.otherLines.slice(-5).join(" | ")}`);
      await sleep(50);
    }
    const [last] = await stack.sql<{ last: number; errors: number }[]>`
      select (extract(epoch from max(created)) * 1000)::float8 as last,
             count(*) filter (where error_msg is not null or status_code <> 200)::int as errors
      from net._http_response`;
    const cpu = stack.workerdPid === null ? 0 : processCpuMs(stack.workerdPid) - cpu0;
    const elapsed = last!.last - t0;
    await sleep(1500); // the drain's log line comes after its linger
    const held = delay === 0 ? null : ((await (await fetch(`${stack.target.url}/__held?label=${label}`)).json()) as { max: number }).max;
    const logs = stack.drainLogs as unknown as Record<string, unknown>[];
    const figures = logs.map((l) => ({
      executors: l.executors,
      peak_in_flight: l.peak_in_flight,
      peak_header_waits: l.peak_header_waits,
      helper: l.helper,
    }));
    console.log(
      JSON.stringify({
        delay_ms: delay,
        n,
        req_per_s: Math.round((n / elapsed) * 1000),
        workerd_cpu_ms_per_req: Number((cpu / n).toFixed(3)),
        errors: last!.errors,
        target_held_max: held,
        drains: logs.length,
        drain_figures: figures.slice(0, 4),
      }),
    );
  }
} finally {
  await stack.stop();
}
