// A quick check of memory with large response bodies through the fan-out (issue 16's "1 MB
// bodies" rows): the bare fetch loop reading N × 1 MB first (workerd's own cost), then N GETs of
// 1 MB queued in one statement and drained as in production. Prints workerd's RSS rise and the
// time to record them all; optionally (3rd arg) N small GETs answered at once, for req/s and CPU.
//   npx tsx bench/big-quick.ts [bigN=64] [rounds=1] [fastN=0]
import { mib, processCpuMs, rssKb, Sampler, sleep } from './measure.ts';
import { startStack } from './stack.ts';

const bigN = Number(process.argv[2] ?? 64);
const rounds = Number(process.argv[3] ?? 1);
const fastN = Number(process.argv[4] ?? 0);
const stack = await startStack({ progress: (line) => console.error(line), vars: JSON.parse(process.env.BENCH_VARS ?? '{}') as Record<string, string> });
const pid = stack.workerdPid;

async function waitFor(n: number, t0: number, what: string): Promise<{ last: number; errors: number }> {
  for (;;) {
    const [row] = await stack.sql<{ n: number }[]>`select count(*)::int as n from net._http_response`;
    if (row!.n >= n) break;
    if (Date.now() - t0 > 180_000) throw new Error(`${what}: only ${row!.n} of ${n} after 180 s: ${stack.otherLines.slice(-5).join(' | ')}`);
    await sleep(20);
  }
  const [last] = await stack.sql<{ last: number; errors: number }[]>`
    select (extract(epoch from max(created)) * 1000)::float8 as last,
           count(*) filter (where error_msg is not null or status_code <> 200)::int as errors
    from net._http_response`;
  return last!;
}

try {
  {
    const base = pid === null ? 0 : rssKb(pid);
    const sampler = new Sampler(pid);
    sampler.start();
    const r = await stack.ceiling(bigN, `/bytes/1048576?bare=${Date.now()}-`);
    await sleep(300);
    const m = sampler.stop();
    console.log(JSON.stringify({ phase: 'bare', n: bigN, rise_mib: Number(mib(m.peakRssKb - base).toFixed(1)), errors: r.errors, elapsed_ms: r.elapsed_ms }));
  }
  for (let round = 0; round < rounds; round++) {
    await stack.sql`delete from net._http_response`;
    await sleep(1500);
    const base = pid === null ? 0 : rssKb(pid);
    const sampler = new Sampler(pid);
    sampler.start();
    const t0 = Date.now();
    const prefix = `${stack.target.url}/bytes/1048576?big=${Date.now()}-`;
    await stack.sql`select net.http_get(${prefix} || g, timeout_milliseconds := 10000) from generate_series(1, ${bigN}::int) g`;
    const last = await waitFor(bigN, t0, '1 MB bodies');
    const m = sampler.stop();
    console.log(JSON.stringify({ phase: 'drain', round, n: bigN, rise_mib: Number(mib(m.peakRssKb - base).toFixed(1)), hwm_mib: Number(mib(m.hwmKb).toFixed(1)), elapsed_ms: Math.round(last.last - t0), errors: last.errors, cpu_ms: m.workerdCpuMs }));
  }
  if (fastN > 0) {
    await stack.sql`delete from net._http_response`;
    await sleep(1500);
    const label = `f${Date.now().toString(36)}`;
    const cpu0 = pid === null ? 0 : processCpuMs(pid);
    const t0 = Date.now();
    await stack.sql`select net.http_get(${stack.target.url + `/hits/${label}/`} || g, timeout_milliseconds := 10000) from generate_series(1, ${fastN}::int) g`;
    const last = await waitFor(fastN, t0, 'at once');
    const cpu = pid === null ? 0 : processCpuMs(pid) - cpu0;
    console.log(JSON.stringify({ phase: 'at-once', n: fastN, req_per_s: Math.round((fastN / (last.last - t0)) * 1000), workerd_cpu_ms_per_req: Number((cpu / fastN).toFixed(3)), errors: last.errors }));
  }
} finally {
  await stack.stop();
}
