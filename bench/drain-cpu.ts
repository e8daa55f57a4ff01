// What a drain costs in CPU, for Workers Free (10 ms of CPU per invocation, 50 subrequests):
// the Worker under workerd (bench/stack.ts), small GET requests to the loopback target, one
// cron-started drain at a time (no relay, no helpers, no linger), workerd's CPU time read from
// /proc around many drains. /proc counts in 10 ms ticks, so the per-drain figure is a total over
// many drains divided by their number; it includes connecting to PostgreSQL and reading the
// settings, as every invocation does.
//   npx tsx bench/drain-cpu.ts [--drains 40] [--limits 5,40]
import { parseArgs } from 'node:util';
import { processCpuMs, until } from './measure.ts';
import { startStack } from './stack.ts';

const { values } = parseArgs({ options: { drains: { type: 'string', default: '40' }, limits: { type: 'string', default: '5,40' } } });
const drains = Number(values.drains);
const limits = values.limits.split(',').map(Number);
const progress = (line: string) => process.stderr.write(`drain-cpu: ${line}\n`);
const rows: string[] = [];

for (const limit of limits) {
  const stack = await startStack({
    progress,
    vars: { SUBREQUEST_LIMIT: String(limit), BATCH_SIZE: String(limit), DRAINS: '1', LINGER_MS: '0', CONCURRENCY: '8' },
  });
  try {
    await stack.relay.stop(); // only the cron starts drains here
    if (!stack.workerdPid) throw new Error('workerd process not found');
    const runDrains = async (count: number): Promise<{ cpuMs: number; requests: number; wallMs: number }> => {
      await stack.sql`select net.http_get(${`${stack.target.url}/hits/cpu-${limit}/`} || g) from generate_series(1, ${count * limit}) g`;
      const before = processCpuMs(stack.workerdPid!);
      const started = Date.now();
      let requests = 0;
      for (let i = 0; i < count; i++) {
        const seen = stack.drainLogs.length;
        await stack.fireCron();
        const log = await until('the drain log line', async () => stack.drainLogs.slice(seen).find((l) => l.trigger === 'cron'), 30_000);
        if (log.error || (log.errors ?? 0) > 0) throw new Error(`drain failed: ${log.error ?? log.last_error}`);
        requests += log.recorded ?? 0;
      }
      return { cpuMs: processCpuMs(stack.workerdPid!) - before, requests, wallMs: Date.now() - started };
    };
    await runDrains(5); // warm-up: JIT and connection code paths
    const { cpuMs, requests, wallMs } = await runDrains(drains);
    const perDrain = cpuMs / drains;
    rows.push(
      `| ${limit} | ${drains} | ${requests} | ${perDrain.toFixed(1)} | ${(cpuMs / requests).toFixed(2)} | ${(wallMs / drains).toFixed(0)} |`,
    );
    progress(`SUBREQUEST_LIMIT=${limit}: ${perDrain.toFixed(1)} ms CPU per drain, ${(cpuMs / requests).toFixed(2)} ms per request`);
  } finally {
    await stack.stop();
  }
}

console.log(`| SUBREQUEST_LIMIT = BATCH_SIZE | drains | requests | CPU ms per drain | CPU ms per request | wall ms per drain |
|---|---|---|---|---|---|
${rows.join('\n')}`);
