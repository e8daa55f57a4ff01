// Where the drain's workerd CPU goes: starts the bench stack with workerd's inspector open, queues
// N requests, takes a V8 CPU profile of the Worker over the drain (Chrome DevTools Protocol), and
// prints the top functions by self time. `npx tsx bench/profile.ts [N] [--ceiling] [--time [--in-memory]]`
// PROFILE_OUT=<file> also saves the raw profile (.cpuprofile, for DevTools). The sampler's time
// deltas are irregular on a busy 2-core VM (one sample once stood for 668 ms): compare sample
// counts, not only times.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { WebSocket } from 'undici';
import { startStack } from './stack.ts';

const n = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? '20000');
const ceiling = process.argv.includes('--ceiling');
// --time: no profiler, just throughput and workerd CPU per 1,000 requests over `rounds` runs (A/B checks).
const timeOnly = process.argv.includes('--time');
// --time --in-memory: the real Drain against an in-memory queue (no database) alternating with the
// bare loop, in the ceiling Worker: the drain's own cost apart from PostgreSQL's and the driver's.
const inMemory = process.argv.includes('--in-memory');
const port = 9300 + Math.floor(Math.random() * 500);

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface Profile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

async function connect(name: string): Promise<{ send(method: string, params?: object): Promise<unknown>; close(): void }> {
  const list = (await (await fetch(`http://127.0.0.1:${port}/json`)).json()) as { id: string; title: string; webSocketDebuggerUrl?: string }[];
  const target = list.find((t) => t.title.includes(name)) ?? list[0];
  if (!target) throw new Error('no inspector target');
  const url = target.webSocketDebuggerUrl ?? `ws://127.0.0.1:${port}/${target.id}`;
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve());
    ws.addEventListener('error', (e) => reject(new Error(String(e))));
  });
  let next = 1;
  const pending = new Map<number, (v: unknown) => void>();
  ws.addEventListener('message', (event) => {
    const msg = JSON.parse(String(event.data)) as { id?: number; result?: unknown };
    if (msg.id !== undefined) pending.get(msg.id)?.(msg.result);
  });
  return {
    send(method, params = {}) {
      const id = next++;
      ws.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve) => pending.set(id, resolve));
    },
    close: () => ws.close(),
  };
}

/** CPU time so far (user + system) of every process named `name`, ms. */
function cpuOfAll(name: string): number {
  let total = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (!stat.includes(`(${name})`)) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
    } catch {
      // the process ended meanwhile
    }
  }
  return total;
}

/** workerd's CPU time so far split as [user, system], ms. */
function cpuSplit(pid: number): [number, number] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [(Number(fields[11]) * 1000) / 100, (Number(fields[12]) * 1000) / 100];
}

/** workerd's CPU time so far (user + system), ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/**
 * Queues n requests in one transaction and waits for their response rows. Returns when the
 * enqueue committed and the workerd CPU then, so --time can measure as the bench does: from
 * commit to the last response row, not counting the enqueue (workerd idles through it).
 */
async function drainOnce(stack: Awaited<ReturnType<typeof startStack>>, prefix: string): Promise<{ committedAt: number; cpuAtCommit: number }> {
  const items = JSON.stringify(Array.from({ length: n }, (_, i) => `${stack.target.url}${prefix}${i}`));
  const [before] = await stack.sql<{ c: string }[]>`select count(*)::text as c from net._http_response`;
  await stack.sql`select net.http_get(u.value, timeout_milliseconds := 2000)
    from jsonb_array_elements_text(${items}::text::jsonb) as u(value)`;
  const committed = { committedAt: Date.now(), cpuAtCommit: stack.workerdPid === null ? 0 : cpuMs(stack.workerdPid) };
  for (;;) {
    const [r] = await stack.sql<{ c: string }[]>`select count(*)::text as c from net._http_response`;
    if (Number(r!.c) - Number(before!.c) >= n) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return committed;
}

// VARS='{"FLUSH_MS":"20"}' overrides the Worker's [vars] (experiments).
const vars = process.env.VARS ? (JSON.parse(process.env.VARS) as Record<string, string>) : undefined;
const stack = await startStack({ progress: (l) => process.stderr.write(`${l}\n`), ...(vars ? { vars } : {}), ...(timeOnly ? {} : { inspectorPort: port }) });
if (timeOnly) {
  const seen = new Map<string, { rate: number[]; cpu: number[] }>();
  // WHICH=drain,in-memory,slots,ceiling: any of these, alternating in that order.
  const kinds = process.env.WHICH?.split(',') ?? (inMemory ? ['in-memory', 'ceiling'] : ceiling ? ['drain', 'ceiling'] : ['drain']);
  try {
    for (let round = 0; round < Number(process.env.ROUNDS ?? '3'); round++) {
      for (const which of kinds) {
        const xacts = async () =>
          Number((await stack.sql<{ x: string }[]>`select xact_commit::text as x from pg_stat_database where datname = current_database()`)[0]!.x);
        const x0 = await xacts();
        const c0 = cpuMs(stack.workerdPid!);
        const split0 = cpuSplit(stack.workerdPid!);
        const pg0 = cpuOfAll('postgres');
        const node0 = process.cpuUsage();
        const t0 = Date.now();
        let ms: number;
        let cpu: number;
        if (which === 'drain') {
          const { committedAt, cpuAtCommit } = await drainOnce(stack, `/hits/t-${Date.now()}-`);
          // As the bench: commit → last response row (the 200 ms polls would blur it otherwise).
          const [last] = await stack.sql<{ t: string }[]>`select (extract(epoch from max(created)) * 1000)::text as t from net._http_response`;
          ms = Number(last!.t) - committedAt;
          cpu = cpuMs(stack.workerdPid!) - cpuAtCommit;
        } else {
          // 'slots': the bare loop with FETCH_SLOTS lanes (what one invocation may have waiting deployed).
          await stack.ceiling(n, `/hits/t-${Date.now()}-`, which === 'in-memory', which === 'slots' ? stack.fetchSlots : undefined);
          ms = Date.now() - t0;
          cpu = cpuMs(stack.workerdPid!) - c0;
        }
        const split1 = cpuSplit(stack.workerdPid!);
        const sysShare = (split1[1] - split0[1]) / Math.max(1, cpu);
        const pg = cpuOfAll('postgres') - pg0;
        const nodeUsage = process.cpuUsage(node0);
        const nodeMs = (nodeUsage.user + nodeUsage.system) / 1000;
        // Transactions committed meanwhile (claims, records, the driver's polls): the drain's statement count, roughly.
        const statements = (await xacts()) - x0;
        const kind = seen.get(which) ?? { rate: [], cpu: [] };
        seen.set(which, kind);
        kind.rate.push(n / (ms / 1000));
        kind.cpu.push((cpu * 1000) / n);
        // The Worker's drains meanwhile: helper drains (FETCH_SLOTS) and their mean header waits.
        const logs = which === 'drain' ? stack.drainLogs.filter((d) => d.at >= t0) : [];
        const helpers = logs.filter((d) => d.helper === true).length;
        const waits = logs.map((d) => d.header_wait_ms).filter((w) => w !== undefined).join('/');
        const drains = which === 'drain' ? `; ${logs.length} drains (${helpers} helpers), header wait ms ${waits || '-'}` : '';
        console.log(`${which} N=${n}: ${Math.round(n / (ms / 1000))} req/s, workerd CPU ${Math.round((cpu * 1000) / n)} ms per 1000 (${Math.round(sysShare * 100)}% in the kernel), ${statements} transactions; PostgreSQL (enqueue included) ${Math.round((pg * 1000) / n)} ms, bench+target ${Math.round((nodeMs * 1000) / n)} ms per 1000${drains}`);
        await stack.sql`truncate net._http_response`.catch(() => {});
      }
    }
    // Medians and the best run of each kind: on a noisy machine the best is the least disturbed.
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    for (const [which, { rate, cpu }] of seen) {
      console.log(`${which}: req/s median ${Math.round(median(rate))} best ${Math.round(Math.max(...rate))}; CPU per 1000 median ${Math.round(median(cpu))} best ${Math.round(Math.min(...cpu))}`);
    }
    // Each kind against the last one of the same round (neighbours in time share the machine's mood).
    const base = seen.get(kinds[kinds.length - 1]!)!;
    for (const which of kinds.slice(0, -1)) {
      const { rate, cpu } = seen.get(which)!;
      const rateRatios = rate.map((r, i) => r / base.rate[i]!);
      const cpuRatios = cpu.map((c, i) => c / base.cpu[i]!);
      console.log(`${which} / ${kinds[kinds.length - 1]} per round: req/s ${rateRatios.map((x) => `${Math.round(x * 100)}%`).join(' ')} (median ${Math.round(median(rateRatios) * 100)}%); CPU ${cpuRatios.map((x) => x.toFixed(2)).join(' ')} (median ${median(cpuRatios).toFixed(2)})`);
    }
  } finally {
    await stack.stop();
  }
  process.exit(0);
}
try {
  // --in-memory without --time profiles the in-memory drain (it runs in the ceiling Worker).
  const inCeilingWorker = ceiling || inMemory;
  const cdp = await connect(inCeilingWorker ? 'ceiling' : 'pg-net-edge');
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
  const prefix = `/hits/prof-${Date.now()}-`;
  // Warm up once so compilation isn't in the profile.
  if (inCeilingWorker) await stack.ceiling(2000, `${prefix}w`, inMemory);
  await cdp.send('Profiler.start');
  const t0 = Date.now();
  if (inCeilingWorker) {
    await stack.ceiling(n, prefix, inMemory);
  } else {
    await drainOnce(stack, prefix);
  }
  const elapsed = Date.now() - t0;
  const { profile } = (await cdp.send('Profiler.stop')) as { profile: Profile };
  cdp.close();
  if (process.env.PROFILE_OUT) writeFileSync(process.env.PROFILE_OUT, JSON.stringify(profile));
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? 0));
  }
  const byFn = new Map<string, number>();
  let total = 0;
  for (const node of profile.nodes) {
    const t = self.get(node.id) ?? 0;
    const f = node.callFrame;
    const file = f.url.split('/').pop() ?? '';
    const key = `${f.functionName || '(anon)'} ${file}:${f.lineNumber + 1}`;
    byFn.set(key, (byFn.get(key) ?? 0) + t);
    if (f.functionName !== '(idle)' && f.functionName !== '(program)') total += t;
  }
  console.log(`N=${n} ${inMemory ? 'in-memory drain' : ceiling ? 'ceiling' : 'drain'}: ${elapsed} ms, ${Math.round(n / (elapsed / 1000))} req/s; sampled non-idle ${Math.round(total / 1000)} ms`);
  // Native frames (no url) charged to their nearest caller in the bundle, to see who pays for them.
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const c of node.children ?? []) parent.set(c, node.id);
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const owner = new Map<string, number>();
  for (const node of profile.nodes) {
    const t = self.get(node.id) ?? 0;
    if (t === 0 || node.callFrame.url !== '') continue;
    let p = parent.get(node.id);
    while (p !== undefined && nodes.get(p)!.callFrame.url === '') p = parent.get(p);
    const f = p === undefined ? null : nodes.get(p)!.callFrame;
    const key = `${node.callFrame.functionName || '(anon)'} <- ${f ? `${f.functionName || '(anon)'}:${f.lineNumber + 1}` : '(root)'}`;
    owner.set(key, (owner.get(key) ?? 0) + t);
  }
  if (process.env.NATIVE) {
    for (const [k, t] of [...owner.entries()].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${(t / 1000).toFixed(1).padStart(8)} ms  native ${k}`);
  }
  if (process.env.CALLERS) {
    // The call paths that lead to a function: CALLERS=<function name>.
    const paths = new Map<string, number>();
    for (let i = 0; i < profile.samples.length; i++) {
      const node = nodes.get(profile.samples[i]!)!;
      if (node.callFrame.functionName !== process.env.CALLERS) continue;
      const chain: string[] = [];
      for (let id: number | undefined = node.id; id !== undefined && chain.length < 12; id = parent.get(id)) {
        const f = nodes.get(id)!.callFrame;
        chain.push(`${f.functionName || '(anon)'}:${f.lineNumber + 1}`);
      }
      const key = chain.join(' < ');
      paths.set(key, (paths.get(key) ?? 0) + (profile.timeDeltas[i + 1] ?? 0));
    }
    for (const [k, t] of [...paths.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`${(t / 1000).toFixed(1).padStart(8)} ms  ${k}`);
  }
  if (process.env.INCLUSIVE) {
    // Inclusive time: each sample charged once to every distinct function on its stack.
    const incl = new Map<string, number>();
    const keyOf = (node: ProfileNode) => `${node.callFrame.functionName || '(anon)'} ${(node.callFrame.url.split('/').pop() ?? '')}:${node.callFrame.lineNumber + 1}`;
    for (let i = 0; i < profile.samples.length; i++) {
      const dt = profile.timeDeltas[i + 1] ?? 0;
      const seen = new Set<string>();
      for (let id: number | undefined = profile.samples[i]; id !== undefined; id = parent.get(id)) {
        const key = keyOf(nodes.get(id)!);
        if (!seen.has(key)) { seen.add(key); incl.set(key, (incl.get(key) ?? 0) + dt); }
      }
    }
    for (const [k, t] of [...incl.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.INCLUSIVE))) console.log(`${(t / 1000).toFixed(1).padStart(8)} ms  incl ${k}`);
  }
  const top = [...byFn.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.TOP ?? 40));
  for (const [k, t] of top) console.log(`${(t / 1000).toFixed(1).padStart(8)} ms  ${k}`);
} finally {
  await stack.stop();
}
