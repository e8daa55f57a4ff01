// `npm run bench`: measures pg-net-edge against the targets of SPEC §6 on this machine, in one run:
// ceiling (bare workerd fetch loop), throughput, latency (idle and trickle), head of line, memory.
// It reports figures and marks each target met/missed; it asserts nothing.
// Slow receivers (answering after 50 and 200 ms) with pg_net's quoted figures beside them: receivers.ts.
// Flags: --n 5000,20000   --rx-n 5000,20000   --only latency   --quick   --out bench/results.md   --help
import { cpus, totalmem, release } from 'node:os';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { mib, percentile, Sampler, sleep, until, type MemorySample, rssKb } from './measure.ts';
import { startStack, type DrainLog, type Stack } from './stack.ts';
import { model, PG_NET_QUOTED, PG_NET_SOURCE, receiverCeiling, receiverRun, type CeilingRun, type ReceiverDeps, type ReceiverRun } from './receivers.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const SECTIONS = ['at-once', 'latency', 'other'] as const;
type Section = (typeof SECTIONS)[number];

const USAGE = `npm run bench -- [--n 5000,20000] [--rx-n 5000,20000] [--rounds 3] [--only at-once,latency,other] [--quick] [--out bench/results.md]

Starts PostgreSQL (DATABASE_URL's server, else an embedded one; a fresh database is created and
dropped), the loopback target, the Worker and a ceiling Worker under workerd, and the relay; then
measures ceiling, throughput, slow receivers (50 and 200 ms, pg_net's quoted figures beside them), latency,
head of line and memory, prints a table and writes it to
--out (default bench/results.md).
  --n LIST   request counts for the throughput runs (default 5000,20000; --quick: 1000)
  --rx-n LIST  request counts for the slow receivers, 50 and 200 ms (default 5000,20000; --quick: 1000)
  --only LIST  run only these sections: at-once (ceiling, throughput, CPU, memory vs N), latency
             (the slow receivers), other (commit → arrival, head of line, 1 MB bodies); with
             --only the table is printed and written only if --out is given
  --rounds R ceiling and drain runs per N, alternating; the best of each is compared (default 3; --quick: 1)
  --quick    smaller runs (a smoke test, well under a minute of measuring)`;

interface Plan {
  ns: number[];
  rxNs: number[];
  sections: Set<Section>;
  latencyCount: number;
  coldCount: number;
  trickleSeconds: number;
  pairs: number;
  holSlow: number;
  holFast: number;
  bigCounts: number[];
  rounds: number;
  quick: boolean;
}

function counts(flag: string, text: string): number[] {
  const ns = text.split(',').map((part) => Number(part.trim()));
  if (ns.length === 0 || ns.some((n) => !Number.isSafeInteger(n) || n < 1 || n > 1_000_000)) {
    process.stderr.write(`${flag} must be a comma-separated list of counts between 1 and 1000000, got ${JSON.stringify(text)}\n`);
    process.exit(2);
  }
  return ns;
}

function plan(): { plan: Plan; out: string | null } {
  const { values } = parseArgs({
    options: {
      n: { type: 'string' },
      'rx-n': { type: 'string' },
      only: { type: 'string' },
      rounds: { type: 'string' },
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const quick = values.quick ?? false;
  const ns = values.n === undefined ? (quick ? [1000] : [5000, 20000]) : counts('--n', values.n);
  const rxNs = values['rx-n'] === undefined ? (quick ? [1000] : [5000, 20000]) : counts('--rx-n', values['rx-n']);
  const sections = new Set<Section>(SECTIONS);
  if (values.only !== undefined) {
    sections.clear();
    for (const part of values.only.split(',').map((x) => x.trim())) {
      const known = SECTIONS.find((name) => name === part);
      if (!known) {
        process.stderr.write(`--only takes a comma-separated list of ${SECTIONS.join(', ')}; got ${JSON.stringify(part)}\n`);
        process.exit(2);
      }
      sections.add(known);
    }
  }
  const rounds = values.rounds === undefined ? (quick ? 1 : 3) : Number(values.rounds);
  if (!Number.isSafeInteger(rounds) || rounds < 1 || rounds > 20) {
    process.stderr.write(`--rounds must be a whole number from 1 to 20, got ${JSON.stringify(values.rounds)}\n`);
    process.exit(2);
  }
  return {
    plan: {
      ns,
      rxNs,
      sections,
      rounds,
      latencyCount: quick ? 20 : 50,
      coldCount: quick ? 5 : 15,
      trickleSeconds: quick ? 4 : 15,
      pairs: quick ? 50 : 150,
      holSlow: 50,
      holFast: quick ? 500 : 2000,
      bigCounts: quick ? [32, 96] : [64, 192],
      quick,
    },
    // A partial run doesn't overwrite the full run's results unless asked to.
    out: values.out !== undefined ? resolve(values.out) : values.only !== undefined ? null : join(ROOT, 'bench', 'results.md'),
  };
}

const started = Date.now();
function progress(line: string): void {
  const s = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  process.stdout.write(`[${s}s] ${line}\n`);
}

const runId = Date.now().toString(36);
const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

// ---------------------------------------------------------------------------------------------
// Results

interface Row {
  figure: string;
  value: string;
  target: string;
  met: boolean | null; // null = reported only
}
const rows: Row[] = [];
const notes: string[] = [];
function row(figure: string, value: string, target = '', met: boolean | null = null): void {
  rows.push({ figure, value, target, met });
  progress(`${figure}: ${value}${target ? `  (target ${target}: ${met ? 'met' : 'MISSED'})` : ''}`);
}

// ---------------------------------------------------------------------------------------------
// Helpers against the stack

async function hitsFor(stack: Stack, prefix: string): Promise<Record<string, number>> {
  const response = await fetch(`${stack.target.url}/__hits?prefix=${encodeURIComponent(prefix)}`);
  return (await response.json()) as Record<string, number>;
}

async function arrivalsFor(stack: Stack, prefix: string): Promise<Map<string, number>> {
  const response = await fetch(`${stack.target.url}/__arrivals?prefix=${encodeURIComponent(prefix)}`);
  const list = (await response.json()) as { path: string; at: number }[];
  const first = new Map<string, number>();
  for (const a of list) if (!first.has(a.path)) first.set(a.path, a.at);
  return first;
}

function duplicatesOf(hits: Record<string, number>): { distinct: number; duplicates: number } {
  let duplicates = 0;
  for (const count of Object.values(hits)) duplicates += Math.max(0, count - 1);
  return { distinct: Object.keys(hits).length, duplicates };
}

async function queueDepth(sql: postgres.Sql): Promise<number> {
  const [r] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
  return r?.n ?? 0;
}

/** Waits (bounded) until the queue is empty and no drain is running, so the next phase starts idle. */
async function settle(stack: Stack): Promise<void> {
  await until('the queue to empty', async () => (await queueDepth(stack.sql)) === 0, 120_000, 100);
  await sleep(300);
}

async function enqueue(
  sql: postgres.Sql,
  urls: string[],
  timeoutMs: number[] | null = null,
): Promise<{ ids: string[]; committedAt: number }> {
  const timeouts = timeoutMs ?? urls.map(() => 2000);
  // One statement = one transaction: every request is committed at once (one NOTIFY).
  // JSON, not sql.array: with fetch_types off postgres.js can't serialize arrays.
  const items = JSON.stringify(urls.map((url, i) => ({ url, t: timeouts[i] })));
  const rows = await sql<{ id: string }[]>`
    select net.http_get(u.value->>'url', timeout_milliseconds := (u.value->>'t')::int)::text as id
    from jsonb_array_elements(${items}::text::jsonb) with ordinality as u(value, ord)
    order by u.ord`;
  return { ids: rows.map((r) => r.id), committedAt: Date.now() };
}

interface Finished {
  /** Responses recorded for the ids. */
  recorded: number;
  /** created of the last response row (ms since epoch, database clock = this machine's clock). */
  lastCreated: number;
  errors: number;
  firstError: string | null;
}

async function finished(sql: postgres.Sql, lo: string, hi: string): Promise<Finished> {
  const [r] = await sql<{ recorded: number; last: number | null; errors: number; first_error: string | null }[]>`
    select count(*)::int as recorded,
           (extract(epoch from max(created)) * 1000)::float8 as last,
           count(*) filter (where error_msg is not null or status_code is distinct from 200)::int as errors,
           min(coalesce(error_msg, 'status ' || status_code)) filter (where error_msg is not null or status_code is distinct from 200) as first_error
    from net._http_response where id between ${lo}::bigint and ${hi}::bigint`;
  return { recorded: r?.recorded ?? 0, lastCreated: r?.last ?? 0, errors: r?.errors ?? 0, firstError: r?.first_error ?? null };
}

/** Waits for all n responses in [lo, hi], printing progress every 2 s; bounded. */
async function waitRecorded(stack: Stack, lo: string, hi: string, n: number, label: string, limitMs: number): Promise<{ done: Finished; seenAt: number }> {
  let lastPrint = Date.now();
  const deadline = Date.now() + limitMs;
  for (;;) {
    const [r] = await stack.sql<{ c: number }[]>`select count(*)::int as c from net._http_response where id between ${lo}::bigint and ${hi}::bigint`;
    const count = r?.c ?? 0;
    if (count >= n) {
      const seenAt = Date.now();
      return { done: await finished(stack.sql, lo, hi), seenAt };
    }
    if (Date.now() - lastPrint >= 2000) {
      lastPrint = Date.now();
      progress(`  ${label}: ${count}/${n} recorded`);
    }
    if (Date.now() > deadline) {
      progress(`  ${label}: gave up after ${limitMs} ms with ${count}/${n} recorded`);
      return { done: await finished(stack.sql, lo, hi), seenAt: Number.NaN };
    }
    // The figure comes from the rows' created times, not from this poll: poll gently, since
    // PostgreSQL shares the second core with the target and every count(*) slows both.
    await sleep(200);
  }
}

function drainsSince(stack: Stack, since: number): DrainLog[] {
  return stack.drainLogs.filter((d) => d.at >= since);
}

function describeDrains(logs: DrainLog[]): string {
  const byTrigger = new Map<string, number>();
  for (const d of logs) {
    const kind = `${d.trigger ?? '?'}${d.helper ? ' helper' : ''}`;
    if ((d.claimed ?? 0) > 0) byTrigger.set(kind, (byTrigger.get(kind) ?? 0) + 1);
  }
  const parts = [...byTrigger].map(([t, c]) => `${c} ${t}`);
  const failed = logs.filter((d) => d.error || d.stopped === 'database');
  return `${parts.join(' + ') || 'none'} drain(s) did work${failed.length ? `; ${failed.length} failed: ${failed[0]?.error ?? failed[0]?.last_error}` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Phases

async function warmUp(stack: Stack): Promise<void> {
  progress('warm-up: 500 through the ceiling and 500 through the drain (not reported)');
  await stack.ceiling(500, `/hits/warm-ceiling-${runId}-`);
  const urls = Array.from({ length: 500 }, (_, i) => `${stack.target.url}/hits/warm-${runId}-${i}`);
  const { ids } = await enqueue(stack.sql, urls);
  await waitRecorded(stack, ids[0]!, ids[ids.length - 1]!, ids.length, 'warm-up', 60_000);
  await settle(stack);
}

function cpuText(m: MemorySample, n: number): string {
  return `workerd CPU ${fmt((m.workerdCpuMs / n) * 1000)} ms per 1000 requests, machine ${fmt(m.machineBusy * 100)}% busy`;
}

async function ceilingRate(
  stack: Stack,
  n: number,
  round: number,
  lanes = stack.concurrency,
  inMemory = false,
): Promise<{ rate: number; elapsed: number; errors: number; cpu: MemorySample }> {
  const prefix = `/hits/ceiling-${runId}-${n}-${round}-${lanes}-${inMemory ? 'mem-' : ''}`;
  progress(
    inMemory
      ? `in-memory drain N=${n} (round ${round}): the Worker's Drain over a queue in memory, no database`
      : `ceiling N=${n} (round ${round}): bare fetch loop in workerd, ${lanes} at once`,
  );
  const sampler = new Sampler(stack.workerdPid, 200);
  sampler.start();
  const result = await stack.ceiling(n, prefix, inMemory, lanes);
  const cpu = sampler.stop();
  const hits = duplicatesOf(await hitsFor(stack, prefix));
  if (result.errors > 0) notes.push(`ceiling N=${n}: ${result.errors} fetch errors (first: ${result.first_error})`);
  if (hits.distinct !== n || hits.duplicates !== 0) notes.push(`ceiling N=${n}: target saw ${hits.distinct} distinct, ${hits.duplicates} duplicates`);
  const rate = n / (result.elapsed_ms / 1000);
  progress(`  ${n} in ${result.elapsed_ms} ms = ${fmt(rate)} req/s, ${result.errors} errors; ${cpuText(cpu, n)}`);
  return { rate, elapsed: result.elapsed_ms, errors: result.errors, cpu };
}

interface ThroughputResult {
  n: number;
  elapsedMs: number;
  rate: number;
  errors: number;
  duplicates: number;
  missing: number;
  memory: MemorySample;
  baselineKb: number;
}

async function throughput(stack: Stack, n: number, round: number, label = ''): Promise<ThroughputResult> {
  const prefix = `/hits/tp-${runId}-${n}-${round}${label ? `-${label.replace(/\W/g, '')}` : ''}-`;
  const urls = Array.from({ length: n }, (_, i) => `${stack.target.url}${prefix}${i}`);
  const baselineKb = stack.workerdPid === null ? 0 : rssKb(stack.workerdPid);
  const sampler = new Sampler(stack.workerdPid);
  sampler.start();
  const phaseStart = Date.now();
  progress(`throughput N=${n} (round ${round}${label ? `, ${label}` : ''}): enqueueing ${n} requests in one transaction`);
  const { ids, committedAt } = await enqueue(stack.sql, urls);
  progress(`  committed in ${committedAt - phaseStart} ms; waiting for every response row`);
  const { done } = await waitRecorded(stack, ids[0]!, ids[ids.length - 1]!, n, `N=${n}`, Math.max(120_000, n * 20));
  const memory = sampler.stop();
  const elapsedMs = Math.round(done.lastCreated - committedAt);
  const hits = duplicatesOf(await hitsFor(stack, prefix));
  // A drain logs when it ends, after LINGER_MS: wait for that before describing the drains.
  for (let waited = 0; waited < 3000 && !stack.drainLogs.some((d) => d.at >= done.lastCreated); waited += 100) await sleep(100);
  const what = `throughput N=${n}${label ? ` (${label})` : ''}`;
  notes.push(`${what}: ${describeDrains(drainsSince(stack, phaseStart))}`);
  if (done.firstError) notes.push(`${what}: first error: ${done.firstError}`);
  const result: ThroughputResult = {
    n,
    elapsedMs,
    rate: done.recorded === n ? n / (elapsedMs / 1000) : Number.NaN,
    errors: done.errors + (n - done.recorded),
    duplicates: hits.duplicates,
    missing: n - hits.distinct,
    memory,
    baselineKb,
  };
  progress(`  ${done.recorded}/${n} recorded in ${elapsedMs} ms = ${fmt(result.rate)} req/s; errors ${result.errors}, duplicates ${result.duplicates}, never arrived ${result.missing}; ${cpuText(memory, n)}`);
  await settle(stack);
  return result;
}

/** How long a latency probe waits for its response row before counting it as not visible. */
const VISIBLE_LIMIT_MS = 10_000;
const stuck: { id: string; path: string; sentAt: number }[] = [];

interface LatencyResult {
  arrival: number[];
  visible: number[];
}

/** Commits one request and measures commit → arrival at the target and commit → response row visible. */
async function oneRequest(
  stack: Stack,
  writer: postgres.Sql,
  poller: postgres.Sql,
  path: string,
): Promise<{ id: string; sentAt: number; visibleAt: number }> {
  // The clock starts before the committing statement is sent: an upper bound on commit → x.
  const sentAt = Date.now();
  const [r] = await writer<{ id: string }[]>`select net.http_get(${stack.target.url + path})::text as id`;
  const id = r!.id;
  let visibleAt = Number.NaN;
  try {
    visibleAt = await until(
      `response ${id}`,
      async () => {
        const found = await poller<{ one: number }[]>`select 1 as one from net._http_response where id = ${id}::bigint`;
        return found.length > 0 ? Date.now() : null;
      },
      VISIBLE_LIMIT_MS,
      2,
    );
  } catch {
    // Not visible in time: reported as such (and left for the cron tick), not fatal.
    stuck.push({ id, path, sentAt });
  }
  return { id, sentAt, visibleAt };
}

async function latencyIdle(stack: Stack, count: number, writer: postgres.Sql, poller: postgres.Sql, gapMs = 200): Promise<LatencyResult> {
  const prefix = `/hits/lat-${gapMs}-${runId}-`;
  progress(`latency (idle): ${count} single requests, one at a time, ${gapMs} ms apart`);
  const sent: { path: string; sentAt: number; visibleAt: number }[] = [];
  for (let k = 0; k < count; k++) {
    const path = `${prefix}${k}`;
    const r = await oneRequest(stack, writer, poller, path);
    sent.push({ path, sentAt: r.sentAt, visibleAt: r.visibleAt });
    if ((k + 1) % 10 === 0) progress(`  ${k + 1}/${count}`);
    // Each request meets an empty queue: within LINGER_MS the last drain is still there (warm),
    // after it a new drain starts (cold: its own connection and settings first).
    await sleep(gapMs);
  }
  const arrivals = await arrivalsFor(stack, prefix);
  return {
    arrival: sent.map((s) => (arrivals.get(s.path) ?? Number.NaN) - s.sentAt),
    visible: sent.map((s) => s.visibleAt - s.sentAt),
  };
}

async function latencyTrickle(stack: Stack, seconds: number, writer: postgres.Sql, poller: postgres.Sql): Promise<LatencyResult> {
  const prefix = `/hits/trickle-${runId}-`;
  const count = Math.round((seconds * 1000) / 100);
  progress(`latency (trickle): one request every 100 ms for ${seconds} s (${count} requests)`);
  const pending: Promise<{ path: string; sentAt: number; visibleAt: number }>[] = [];
  const t0 = Date.now();
  for (let k = 0; k < count; k++) {
    // Scheduled against the start time, so a slow commit doesn't stretch the interval.
    const wait = t0 + k * 100 - Date.now();
    if (wait > 0) await sleep(wait);
    const path = `${prefix}${k}`;
    pending.push(oneRequest(stack, writer, poller, path).then((r) => ({ path, sentAt: r.sentAt, visibleAt: r.visibleAt })));
    if ((k + 1) % 50 === 0) progress(`  ${k + 1}/${count}`);
  }
  const sent = await Promise.all(pending);
  const arrivals = await arrivalsFor(stack, prefix);
  return {
    arrival: sent.map((s) => (arrivals.get(s.path) ?? Number.NaN) - s.sentAt),
    visible: sent.map((s) => s.visibleAt - s.sentAt),
  };
}

/**
 * Pairs: a request, then after 0-49 ms a second one, so the second one's nudge lands on a drain
 * that is still running (settings, claim, fetch, flush — each phase in turn). It must be picked
 * up as fast as one that meets an idle system.
 */
async function latencyPairs(stack: Stack, pairs: number, writer: postgres.Sql, poller: postgres.Sql): Promise<LatencyResult> {
  const prefix = `/hits/pair-${runId}-`;
  progress(`latency (nudge during a running drain): ${pairs} pairs, the second 0-49 ms after the first`);
  const sent: { path: string; sentAt: number; visibleAt: number }[] = [];
  for (let k = 0; k < pairs; k++) {
    await writer`select net.http_get(${`${stack.target.url}${prefix}first-${k}`})`;
    await sleep(k % 50);
    const path = `${prefix}${k}`;
    const r = await oneRequest(stack, writer, poller, path);
    sent.push({ path, sentAt: r.sentAt, visibleAt: r.visibleAt });
    if ((k + 1) % 25 === 0) progress(`  ${k + 1}/${pairs}`);
    await sleep(100);
  }
  const arrivals = await arrivalsFor(stack, prefix);
  return {
    arrival: sent.map((s) => (arrivals.get(s.path) ?? Number.NaN) - s.sentAt),
    visible: sent.map((s) => s.visibleAt - s.sentAt),
  };
}

async function headOfLine(stack: Stack, slow: number, fast: number): Promise<{ lastFastMs: number; lastSlowMs: number; fastErrors: number; slowErrors: number }> {
  progress(`head of line: ${slow} requests answering after 5 s mixed evenly with ${fast} fast ones`);
  const prefix = `/hits/hol-${runId}-`;
  const urls: string[] = [];
  const timeouts: number[] = [];
  const isSlow: boolean[] = [];
  const every = Math.floor((slow + fast) / slow);
  let s = 0;
  let f = 0;
  for (let i = 0; i < slow + fast; i++) {
    if (i % every === 0 && s < slow) {
      // Timeout above the delay: these succeed after 5 s rather than time out.
      urls.push(`${stack.target.url}/delay/5000?hol=${runId}-${s++}`);
      timeouts.push(10_000);
      isSlow.push(true);
    } else {
      urls.push(`${stack.target.url}${prefix}${f++}`);
      timeouts.push(2000);
      isSlow.push(false);
    }
  }
  const { ids, committedAt } = await enqueue(stack.sql, urls, timeouts);
  const fastIds = ids.filter((_, i) => !isSlow[i]);
  const slowIds = ids.filter((_, i) => isSlow[i]);
  const fastList = `{${fastIds.join(',')}}`;
  const slowList = `{${slowIds.join(',')}}`;
  let lastPrint = Date.now();
  let fastDoneAt = Number.NaN;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const [r] = await stack.sql<{ fast: number; slow: number }[]>`
      select count(*) filter (where id = any(${fastList}::bigint[]))::int as fast,
             count(*) filter (where id = any(${slowList}::bigint[]))::int as slow
      from net._http_response where id between ${ids[0]!}::bigint and ${ids[ids.length - 1]!}::bigint`;
    if (Number.isNaN(fastDoneAt) && (r?.fast ?? 0) >= fast) fastDoneAt = Date.now();
    if ((r?.fast ?? 0) >= fast && (r?.slow ?? 0) >= slow) break;
    if (Date.now() - lastPrint >= 2000) {
      lastPrint = Date.now();
      progress(`  fast ${r?.fast}/${fast}, slow ${r?.slow}/${slow} recorded`);
    }
    if (Date.now() > deadline) {
      progress('  gave up waiting after 60 s');
      break;
    }
    await sleep(10);
  }
  const [stats] = await stack.sql<{ last_fast: number | null; last_slow: number | null; fast_errors: number; slow_errors: number }[]>`
    select (extract(epoch from max(created) filter (where id = any(${fastList}::bigint[]))) * 1000)::float8 as last_fast,
           (extract(epoch from max(created) filter (where id = any(${slowList}::bigint[]))) * 1000)::float8 as last_slow,
           count(*) filter (where id = any(${fastList}::bigint[]) and (error_msg is not null or status_code <> 200))::int as fast_errors,
           count(*) filter (where id = any(${slowList}::bigint[]) and (error_msg is not null or status_code <> 200))::int as slow_errors
    from net._http_response where id between ${ids[0]!}::bigint and ${ids[ids.length - 1]!}::bigint`;
  await settle(stack);
  return {
    // The later of "row created" and "seen by polling" would double count; created is the record's start.
    lastFastMs: Number.isNaN(fastDoneAt) ? Number.NaN : Math.max(0, (stats?.last_fast ?? Number.NaN) - committedAt),
    lastSlowMs: (stats?.last_slow ?? Number.NaN) - committedAt,
    fastErrors: stats?.fast_errors ?? 0,
    slowErrors: stats?.slow_errors ?? 0,
  };
}

async function bigBodies(stack: Stack, count: number): Promise<{ memory: MemorySample; baselineKb: number; errors: number; elapsedMs: number }> {
  progress(`memory with 1 MB bodies: ${count} requests to /bytes/1048576 in one transaction`);
  const urls = Array.from({ length: count }, (_, i) => `${stack.target.url}/bytes/1048576?big=${runId}-${i}`);
  const baselineKb = stack.workerdPid === null ? 0 : rssKb(stack.workerdPid);
  const sampler = new Sampler(stack.workerdPid);
  sampler.start();
  const { ids, committedAt } = await enqueue(stack.sql, urls, urls.map(() => 10_000));
  const { done } = await waitRecorded(stack, ids[0]!, ids[ids.length - 1]!, count, '1 MB bodies', 180_000);
  const memory = sampler.stop();
  if (done.firstError) notes.push(`1 MB bodies: first error: ${done.firstError}`);
  // Free the database of 1 MB rows before anything else runs.
  await stack.sql`delete from net._http_response where id between ${ids[0]!}::bigint and ${ids[ids.length - 1]!}::bigint`;
  await settle(stack);
  return { memory, baselineKb, errors: done.errors + (count - done.recorded), elapsedMs: Math.round(done.lastCreated - committedAt) };
}

/** The bare fetch loop (the ceiling Worker) reading `count` 1 MB bodies: workerd's own memory for it. */
async function bareBigBodies(stack: Stack, count: number): Promise<{ memory: MemorySample; baselineKb: number; errors: number }> {
  progress(`memory baseline: the bare fetch loop reads ${count} × 1 MB bodies`);
  const baselineKb = stack.workerdPid === null ? 0 : rssKb(stack.workerdPid);
  const sampler = new Sampler(stack.workerdPid);
  sampler.start();
  const result = await stack.ceiling(count, `/bytes/1048576?bare=${runId}-${count}-`);
  await sleep(300);
  const memory = sampler.stop();
  return { memory, baselineKb, errors: result.errors };
}

// ---------------------------------------------------------------------------------------------

function versionOf(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

function table(): string {
  const lines = ['| figure | value | target | |', '|---|---|---|---|'];
  for (const r of rows) {
    const mark = r.met === null ? '' : r.met ? 'met' : '**missed**';
    lines.push(`| ${r.figure} | ${r.value} | ${r.target} | ${mark} |`);
  }
  return lines.join('\n');
}

interface AtOnce {
  n: number;
  rate: number;
  ceiling: number;
  lanes: number;
  errors: string;
  cpuPerK: number;
  ceilingCpuPerK: number;
}

/** The bare loop's width for the machine's own ceiling against the slow receivers (issue 16's reference). */
const WIDE_LANES = 400;

/** Deployments the model is shown for (invocations draining at once). */
const MODEL_KS = [16, 64, 256];

function quotedFor(latencyMs: number): number {
  return latencyMs === 50 ? PG_NET_QUOTED['50 ms'] : PG_NET_QUOTED['200 ms'];
}

function receiverRows(run: ReceiverRun, ceiling: CeilingRun): void {
  const what = `slow receiver ${run.latencyMs} ms, N=${run.n}`;
  const quoted = quotedFor(run.latencyMs);
  const times = run.rate / quoted;
  const share = run.rate / ceiling.rate;
  row(`${what}: throughput (commit → last response row)`, `${fmt(run.rate)} req/s (${run.elapsedMs} ms)`);
  row(`${what}: × pg_net (${quoted} req/s, quoted, not measured here)`, `${fmt(times, 1)}×`, '≥ 4×', times >= 4);
  row(
    `${what}: peak requests in flight (counted at the receiver)`,
    `${run.peakInFlight}`,
    run.latencyMs === 200 ? '≥ 300' : '',
    run.latencyMs === 200 ? run.peakInFlight >= 300 : null,
  );
  row(
    `${what}: invocations used`,
    `${run.invocations.logged} (the Worker's drain log lines); ${run.invocations.heartbeat ?? 'n/a'} (net._worker_status.last_drain: ${run.invocations.source})`,
  );
  row(
    `${what}: the Worker's own counts (last_drain): most waiting for headers in one invocation / rows out at once`,
    `${run.invocations.peakHeaderWaits ?? 'n/a'} / ${run.invocations.workerPeakInFlight ?? 'n/a'}`,
    run.invocations.peakHeaderWaits === null ? '' : '≤ 6',
    run.invocations.peakHeaderWaits === null ? null : run.invocations.peakHeaderWaits <= 6,
  );
  const byName = Object.entries(run.dbPeakByName).map(([name, count]) => `${name}: ${count}`).join(', ');
  row(
    `${what}: database connections used (pg_stat_activity, sampled every 100 ms)`,
    `peak ${run.dbPeak} at once (${byName || 'none seen'}), ${run.dbSessions} sessions in all; ${run.triggers} trigger drain(s), ${run.triggersAtOnce} at once`,
    '≤ 4 per trigger',
    run.dbPeak <= 4 * Math.max(1, run.triggersAtOnce),
  );
  row(
    `${what}: the machine's ceiling, a bare fetch loop in one workerd with ${ceiling.lanes} at once (${ceiling.n} requests; the receiver saw ${ceiling.peakInFlight} at once)`,
    `${fmt(ceiling.rate)} req/s; drain ÷ this: ${fmt(share * 100, 1)}%`,
    '≥ 70%',
    share >= 0.7,
  );
  row(
    `${what}: errors / duplicates / never arrived`,
    `${run.errors} / ${run.duplicates} / ${run.missing}`,
    '0 / 0 / 0',
    run.errors === 0 && run.duplicates === 0 && run.missing === 0,
  );
  row(`${what}: workerd CPU ms per 1000 requests / machine busy`, `${fmt((run.cpu.workerdCpuMs / run.n) * 1000)} / ${fmt(run.cpu.machineBusy * 100)}%`);
  const m = model(run, MODEL_KS);
  row(
    `${what}: MODEL, not measured — K invocations at once, each with the in-flight requests one had here`,
    m === null
      ? 'n/a (no invocation count or no rate)'
      : `${fmt(m.perInvocation, 1)} in flight per invocation (${m.perInvocationSource}), a slot's cycle ${fmt(m.cycleMs)} ms (peak ÷ req/s): ` +
          m.atCycle.map((x) => `K=${x.k}: ${fmt(x.rate)}`).join(', ') +
          ` req/s; with the cycle at the receiver's ${run.latencyMs} ms alone (upper bound): ` +
          m.atLatency.map((x) => `K=${x.k}: ${fmt(x.rate)}`).join(', ') +
          ' req/s',
  );
}

/** One table: at once and the slow receivers, pg_net's quoted figures beside them. */
function receiverTable(
  atOnce: AtOnce[],
  receivers: { run: ReceiverRun; ceiling: CeilingRun; wide: CeilingRun }[],
): string {
  const lines = [
    `pg_net's figures: ${PG_NET_SOURCE}. At once: the best of the alternating runs above.`,
    '',
    `| receiver answers | N | pg_net (quoted) | pg-net-edge | × pg_net | peak in flight | invocations (log lines / heartbeat) | database connections: peak (sessions in all) | bare loop, same in flight | drain ÷ loop | bare loop, ${WIDE_LANES} at once | drain ÷ it | errors / dup. / never arrived | workerd CPU ms per 1,000 |`,
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const a of atOnce) {
    lines.push(
      `| at once | ${a.n} | ${PG_NET_QUOTED['at once']} | ${fmt(a.rate)} | ${fmt(a.rate / PG_NET_QUOTED['at once'], 1)}× | — | — | — | ${fmt(a.ceiling)} (${a.lanes} at once) | ${fmt((a.rate / a.ceiling) * 100)}% | — | — | ${a.errors} | ${fmt(a.cpuPerK)} (bare loop ${fmt(a.ceilingCpuPerK)}) |`,
    );
  }
  for (const { run, ceiling, wide } of receivers) {
    const quoted = quotedFor(run.latencyMs);
    lines.push(
      `| after ${run.latencyMs} ms | ${run.n} | ${quoted} | ${fmt(run.rate)} | ${fmt(run.rate / quoted, 1)}× | ${run.peakInFlight} | ${run.invocations.logged} / ${run.invocations.heartbeat ?? 'n/a'}${run.triggers > 1 ? ` (${run.triggers} triggers, ${run.triggersAtOnce} at once: a cron tick came during the run)` : ''} | ${run.dbPeak} (${run.dbSessions}) | ${fmt(ceiling.rate)} (${ceiling.lanes} at once) | ${fmt((run.rate / ceiling.rate) * 100)}% | ${fmt(wide.rate)} | ${fmt((run.rate / wide.rate) * 100)}% | ${run.errors} / ${run.duplicates} / ${run.missing} | ${fmt((run.cpu.workerdCpuMs / run.n) * 1000)} |`,
    );
  }
  const models = receivers.map(({ run }) => ({ run, m: model(run, MODEL_KS) })).filter((x) => x.m !== null);
  if (models.length > 0) {
    lines.push('', '**MODEL, not measured**: K invocations draining at once, each holding as many requests in flight as one did here (the Worker\'s last_drain.peak_header_waits when it reports one, else peak in flight ÷ the invocations of the triggers running at once), each request taking a slot as long as here (peak in flight ÷ req/s), or only the receiver\'s latency (an upper bound). It leaves out the database\'s record rate, per-origin caps and the receiver\'s own limit.', '');
    lines.push(`| receiver answers | N | in flight per invocation | slot cycle | ${MODEL_KS.map((k) => `K=${k}`).join(' | ')} | ${MODEL_KS.map((k) => `K=${k}, cycle = latency`).join(' | ')} |`);
    lines.push(`|---|---|---|---|${MODEL_KS.map(() => '---|').join('')}${MODEL_KS.map(() => '---|').join('')}`);
    for (const { run, m } of models) {
      lines.push(
        `| after ${run.latencyMs} ms | ${run.n} | ${fmt(m!.perInvocation, 1)} | ${fmt(m!.cycleMs)} ms | ${m!.atCycle.map((x) => fmt(x.rate)).join(' | ')} | ${m!.atLatency.map((x) => fmt(x.rate)).join(' | ')} |`,
      );
    }
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  const { plan: p, out } = plan();
  progress(`pg-net-edge benchmark${p.quick ? ' (quick)' : ''}: N = ${p.ns.join(', ')}`);
  const stack = await startStack({ progress });
  let cron: NodeJS.Timeout | undefined;
  let solo: Stack | undefined;
  let writer: postgres.Sql | undefined;
  let poller: postgres.Sql | undefined;
  try {
    progress(`stack up: ${stack.databaseLabel}; Worker at ${stack.workerUrl}; workerd pid ${stack.workerdPid ?? 'not found'}; target ${stack.target.url}`);
    // The every-minute cron, as production (and npm start) fires it: the guarantee behind the nudges.
    cron = setInterval(() => {
      progress('cron tick: firing the Worker\'s "* * * * *" handler');
      stack.fireCron().catch((error: unknown) => progress(`cron tick failed: ${String(error)}`));
    }, 60_000);
    writer = postgres(stack.dbUrl, { max: 1, fetch_types: false, onnotice: () => {} });
    poller = postgres(stack.dbUrl, { max: 1, fetch_types: false, onnotice: () => {} });

    await warmUp(stack);

    // 1 + 2 + 5: ceiling, throughput and memory for each N. Ceiling and drain alternate, ROUNDS
    // times each, and the best run of each is compared: back-to-back runs of the same thing differ
    // by up to 20% on a shared VM (in phases of seconds to minutes), and the best of several
    // approaches what each costs undisturbed. Errors and duplicates count from every drain run
    // (the worst counts); memory from the first.
    const memoryRows: { n: number; deltaMiB: number; peakMiB: number; hwmMiB: number; fds: number }[] = [];
    const atOnce: AtOnce[] = [];
    // The same Worker with EXECUTORS=0 (the coordinator alone, as before the fan-out), in its own
    // workerd and database, alternated with the default one: "no regression at once, CPU per
    // request not higher" is judged against it in this run.
    if (p.sections.has('at-once')) {
      progress('starting a second stack with EXECUTORS=0 (the at-once baseline)');
      solo = await startStack({ progress: (line) => progress(`[EXECUTORS=0] ${line}`), vars: { EXECUTORS: '0' } });
      await warmUp(solo);
    }
    for (const n of p.sections.has('at-once') ? p.ns : []) {
      const ceilings: Awaited<ReturnType<typeof ceilingRate>>[] = [];
      const tps: ThroughputResult[] = [];
      // One invocation's ceiling too: on Cloudflare an invocation has only 6 connections waiting
      // for headers, and a drain uses FETCH_SLOTS of them (workerd doesn't cap it locally).
      const slotCeilings: Awaited<ReturnType<typeof ceilingRate>>[] = [];
      // And the Worker's Drain itself over a queue in memory: the drain's own cost, the database's apart.
      const inMemoryRuns: Awaited<ReturnType<typeof ceilingRate>>[] = [];
      const soloTps: ThroughputResult[] = [];
      for (let round = 1; round <= p.rounds; round++) {
        ceilings.push(await ceilingRate(stack, n, round));
        slotCeilings.push(await ceilingRate(stack, n, round, stack.fetchSlots));
        inMemoryRuns.push(await ceilingRate(stack, n, round, stack.concurrency, true));
        tps.push(await throughput(stack, n, round));
        soloTps.push(await throughput(solo!, n, round, 'EXECUTORS=0'));
      }
      const slotCeiling = Math.max(...slotCeilings.map((c) => c.rate));
      const inMemoryRate = Math.max(...inMemoryRuns.map((c) => c.rate));
      const best = ceilings.reduce((a, b) => (b.rate > a.rate ? b : a));
      const ceiling = best.rate;
      const tpBest = tps.reduce((a, b) => (b.rate > a.rate ? b : a));
      const tp1 = tps[0]!;
      // Memory from the first run: later ones start from whatever the garbage collector left of
      // the runs before, and their rise over that baseline swings (N=20,000: +37-41 MiB first,
      // +103-159 MiB second). All are printed.
      const tp = {
        ...tpBest,
        errors: Math.max(...tps.map((t) => t.errors)),
        duplicates: Math.max(...tps.map((t) => t.duplicates)),
        missing: Math.max(...tps.map((t) => t.missing)),
        memory: { ...tpBest.memory, peakRssKb: tp1.memory.peakRssKb, hwmKb: tp1.memory.hwmKb, peakFds: Math.max(...tps.map((t) => t.memory.peakFds)) },
        baselineKb: tp1.baselineKb,
      };
      progress(
        `N=${n}: workerd RSS rise over idle / peak per run: ` +
          tps.map((t) => `+${fmt(mib(t.memory.peakRssKb - t.baselineKb), 1)} / ${fmt(mib(t.memory.peakRssKb), 1)} MiB`).join(', ') +
          ' (the first run counts)',
      );
      const ratio = tp.rate / ceiling;
      row(`ceiling, N=${n} (bare workerd fetch loop, concurrency ${stack.concurrency})`, `${fmt(ceiling)} req/s (runs: ${ceilings.map((c) => fmt(c.rate)).join(', ')})`);
      row(`throughput, N=${n} (commit → last response row)`, `${fmt(tp.rate)} req/s (${tp.elapsedMs} ms; runs: ${tps.map((t) => fmt(t.rate)).join(', ')})`);
      row(`drain/ceiling, N=${n}`, `${fmt(ratio * 100, 1)}%`, '≥ 80%', ratio >= 0.8);
      row(
        `one invocation's ceiling, N=${n} (the same loop, FETCH_SLOTS=${stack.fetchSlots} at once, as a drain may on Cloudflare)`,
        `${fmt(slotCeiling)} req/s (runs: ${slotCeilings.map((c) => fmt(c.rate)).join(', ')}); drain/this: ${fmt((tp.rate / slotCeiling) * 100, 1)}%`,
      );
      row(
        `the same Drain over a queue in memory, N=${n} (no database: the drain's own cost)`,
        `${fmt(inMemoryRate)} req/s (runs: ${inMemoryRuns.map((c) => fmt(c.rate)).join(', ')}); this/one invocation's ceiling: ${fmt((inMemoryRate / slotCeiling) * 100, 1)}%, drain/this: ${fmt((tp.rate / inMemoryRate) * 100, 1)}%`,
      );
      row(
        `errors / duplicates / never arrived, N=${n}`,
        `${tp.errors} / ${tp.duplicates} / ${tp.missing}`,
        '0 / 0 / 0',
        tp.errors === 0 && tp.duplicates === 0 && tp.missing === 0,
      );
      row(`workerd peak open fds, N=${n}`, `${tp.memory.peakFds}`, 'no fd exhaustion', tp.errors === 0);
      row(
        `CPU, N=${n}: workerd ms per 1000 requests / machine busy (drain vs ceiling)`,
        `${fmt((tp.memory.workerdCpuMs / n) * 1000)} / ${fmt(tp.memory.machineBusy * 100)}% vs ${fmt((best.cpu.workerdCpuMs / n) * 1000)} / ${fmt(best.cpu.machineBusy * 100)}%` +
          // workerd runs each isolate on one thread: if that thread is the limit, the ratio can't beat this.
          ` (ratio if workerd's thread is the limit: ${fmt((best.cpu.workerdCpuMs / Math.max(1, tp.memory.workerdCpuMs)) * 100)}%)`,
      );
      // Best of each; CPU per request from the same best runs. ±10% is this machine's noise
      // between alternated runs of the same build (bench/README), so that is the band.
      const soloBest = soloTps.reduce((a, b) => (b.rate > a.rate ? b : a));
      const cpuPerReq = (t: ThroughputResult) => t.memory.workerdCpuMs / t.n;
      const rateRatio = tp.rate / soloBest.rate;
      const cpuRatio = cpuPerReq(tpBest) / cpuPerReq(soloBest);
      row(
        `at once, N=${n}: the default Worker vs EXECUTORS=0 (the coordinator alone) in this run: req/s, workerd CPU ms per 1000`,
        `${fmt(tp.rate)} vs ${fmt(soloBest.rate)} req/s (${fmt(rateRatio * 100)}%; EXECUTORS=0 runs: ${soloTps.map((t) => fmt(t.rate)).join(', ')}); ${fmt(cpuPerReq(tpBest) * 1000)} vs ${fmt(cpuPerReq(soloBest) * 1000)} (${fmt(cpuRatio * 100)}%)`,
        'req/s ≥ 90%, CPU ≤ 110% of EXECUTORS=0',
        rateRatio >= 0.9 && cpuRatio <= 1.1,
      );
      atOnce.push({ n, rate: tp.rate, ceiling, lanes: stack.concurrency, errors: `${tp.errors} / ${tp.duplicates} / ${tp.missing}`, cpuPerK: (tp.memory.workerdCpuMs / n) * 1000, ceilingCpuPerK: (best.cpu.workerdCpuMs / n) * 1000 });
      row(
        `at once, N=${n}: × pg_net (${PG_NET_QUOTED['at once']} req/s, quoted: ${PG_NET_SOURCE})`,
        `${fmt(tp.rate / PG_NET_QUOTED['at once'], 1)}×`,
      );
      memoryRows.push({
        n,
        deltaMiB: mib(tp.memory.peakRssKb - tp.baselineKb),
        peakMiB: mib(tp.memory.peakRssKb),
        hwmMiB: mib(tp.memory.hwmKb),
        fds: tp.memory.peakFds,
      });
    }

    // The baseline's workerd and database are not needed past the at-once rows.
    await solo?.stop();
    solo = undefined;

    // Slow receivers: 50 and 200 ms, each N; the drain, then the bare loop with as many in flight.
    const receivers: { run: ReceiverRun; ceiling: CeilingRun; wide: CeilingRun }[] = [];
    if (p.sections.has('latency')) {
      const deps: ReceiverDeps = {
        progress,
        enqueue: (urls, timeouts) => enqueue(stack.sql, urls, timeouts),
        waitRecorded: (lo, hi, n, label, limitMs) => waitRecorded(stack, lo, hi, n, label, limitMs),
        hits: (prefix) => hitsFor(stack, prefix),
        settle: () => settle(stack),
      };
      for (const latencyMs of [50, 200] as const) {
        // The machine's ceiling whatever the drain reached: issue 16's reference, 400 at once
        // (past ~300 in flight one workerd thread is the limit).
        const wide = await receiverCeiling(stack, deps, latencyMs, p.quick ? 1000 : 5000, WIDE_LANES, runId);
        row(`slow receiver ${latencyMs} ms: the machine's ceiling, a bare fetch loop in one workerd with ${WIDE_LANES} at once (${wide.n} requests; the receiver saw ${wide.peakInFlight} at once)`, `${fmt(wide.rate)} req/s`);
        for (const n of p.rxNs) {
          const run = await receiverRun(stack, deps, latencyMs, n, runId);
          // The ceiling's rate is a steady state: 5,000 requests measure it as well as 20,000 and take a quarter of the time.
          const ceiling = await receiverCeiling(stack, deps, latencyMs, Math.min(n, 5000), Math.max(1, run.peakInFlight), runId);
          receivers.push({ run, ceiling, wide });
          receiverRows(run, ceiling);
          row(`slow receiver ${latencyMs} ms, N=${n}: drain ÷ the bare loop with ${WIDE_LANES} at once`, `${fmt((run.rate / wide.rate) * 100, 1)}%`);
          if (run.firstError) notes.push(`slow receiver ${latencyMs} ms, N=${n}: first error: ${run.firstError}`);
          if (ceiling.errors > 0) notes.push(`slow receiver ceiling ${latencyMs} ms, N=${n}: ${ceiling.errors} fetch errors`);
          notes.push(`slow receiver ${latencyMs} ms, N=${n}: ${describeDrains(drainsSince(stack, run.startedAt))}`);
        }
      }
    }

    if (p.sections.has('other')) {
      // 3. Latency, idle then under a trickle; dedicated connections so polling never queues the writes.
      const idle = await latencyIdle(stack, p.latencyCount, writer, poller);
      await settle(stack);
      const lingerMs = stack.lingerMs;
      const coldGapMs = lingerMs + 500;
      const cold = await latencyIdle(stack, p.coldCount, writer, poller, coldGapMs);
      await settle(stack);
      const trickle = await latencyTrickle(stack, p.trickleSeconds, writer, poller);
      await settle(stack);
      const pairs = await latencyPairs(stack, p.pairs, writer, poller);
      await settle(stack);
      for (const [label, result] of [
        [`idle, 200 ms apart (the last drain still lingering, LINGER_MS=${lingerMs})`, idle],
        [`idle, ${coldGapMs} ms apart (a new drain each time)`, cold],
        ['trickle 1/100 ms', trickle],
        ['nudge during a running drain', pairs],
      ] as const) {
        const missing = result.arrival.filter((x) => Number.isNaN(x)).length;
        const arrival = result.arrival.filter((x) => !Number.isNaN(x));
        const p50 = percentile(arrival, 50);
        const p99 = percentile(arrival, 99);
        row(
          `commit → arrival p50 / p99, ${label} (n=${result.arrival.length})`,
          `${fmt(p50)} / ${fmt(p99)} ms${missing ? ` (${missing} never arrived)` : ''}`,
          '< 20 / < 100 ms',
          missing === 0 && p50 < 20 && p99 < 100,
        );
        // A row not visible within the limit counts as infinitely late.
        const visible = result.visible.map((x) => (Number.isNaN(x) ? Number.POSITIVE_INFINITY : x));
        const late = (x: number) => (x === Number.POSITIVE_INFINITY ? `> ${VISIBLE_LIMIT_MS}` : fmt(x));
        const notVisible = visible.filter((x) => x === Number.POSITIVE_INFINITY).length;
        row(
          `commit → response row visible p50 / p99, ${label}`,
          `${late(percentile(visible, 50))} / ${late(percentile(visible, 99))} ms${notVisible ? ` (${notVisible} not visible within ${VISIBLE_LIMIT_MS / 1000} s)` : ''}`,
        );
      }

      if (stuck.length > 0) {
        const r = stack.relay.stats;
        notes.push(
          `${stuck.length} latency probe(s) not visible within ${VISIBLE_LIMIT_MS / 1000} s (first ${Math.min(3, stuck.length)} below); relay: ${r.notifications} notifications, ${r.nudgesSent} nudges sent, ${r.nudgesFailed} failed${r.lastError ? ` (last: ${r.lastError})` : ''}`,
        );
      }
      for (const s of stuck.slice(0, 3)) {
        const arrived = (await arrivalsFor(stack, s.path)).get(s.path);
        const [row0] = await stack.sql<{ queued: boolean; lease_owner: string | null; attempts: number | null; recorded: boolean }[]>`
          select exists(select 1 from net.http_request_queue where id = ${s.id}::bigint) as queued,
                 (select lease_owner from net.http_request_queue where id = ${s.id}::bigint) as lease_owner,
                 (select attempts from net.http_request_queue where id = ${s.id}::bigint) as attempts,
                 exists(select 1 from net._http_response where id = ${s.id}::bigint) as recorded`;
        const around = stack.drainLogs.filter((d) => Math.abs(d.at - s.sentAt) < 3000).map((d) => `${d.trigger}:${d.claimed}/${d.stopped}@${d.at - s.sentAt}ms`);
        notes.push(
          `request ${s.id} (${s.path}) not visible within ${VISIBLE_LIMIT_MS / 1000} s: ${arrived === undefined ? 'never arrived at the target' : `arrived ${arrived - s.sentAt} ms after commit`}; now queued=${row0?.queued} lease=${row0?.lease_owner ?? 'none'} attempts=${row0?.attempts ?? '-'} recorded=${row0?.recorded}; drains ending ±3 s: ${around.join(', ') || 'none'}`,
        );
      }

      // 4. Head of line.
      const hol = await headOfLine(stack, p.holSlow, p.holFast);
      row(
        `head of line: last of ${p.holFast} fast responses recorded (with ${p.holSlow} × 5 s)`,
        `${fmt(hol.lastFastMs)} ms after commit (slow ones: ${fmt(hol.lastSlowMs)} ms); errors fast ${hol.fastErrors}, slow ${hol.slowErrors}`,
        'well under 5 s (< 2500 ms)',
        hol.lastFastMs < 2500 && hol.fastErrors === 0,
      );
    }

    // 5. Memory.
    const bound = (stack.concurrency * stack.maxResponseBytes) / 1024 / 1024;
    for (const m of memoryRows) {
      row(`workerd peak RSS during throughput N=${m.n} (first run)`, `${fmt(m.peakMiB, 1)} MiB (+${fmt(m.deltaMiB, 1)} MiB over idle; VmHWM ${fmt(m.hwmMiB, 1)} MiB)`);
    }
    if (memoryRows.length >= 2) {
      const small = memoryRows[0]!;
      const large = memoryRows[memoryRows.length - 1]!;
      // Bounded by concurrency, not queue length: ×N more queue must not mean ×N more memory.
      const flat = large.deltaMiB <= small.deltaMiB * 1.5 + 16;
      row(
        `memory vs queue length (N=${small.n} → N=${large.n})`,
        `+${fmt(small.deltaMiB, 1)} → +${fmt(large.deltaMiB, 1)} MiB`,
        'independent of N (≤ 1.5× + 16 MiB)',
        flat,
      );
    }
    if (p.sections.has('other')) {
      // Two sizes: the rise must stay put when the queue of big responses triples. The baseline is
      // the bare fetch loop reading the same bodies (what workerd itself takes to fetch 1 MB bodies
      // at this concurrency), measured first for every size: RSS only grows back slowly, so
      // whichever runs later looks cheaper, and the drain is the one measured later.
      const bares = [];
      for (const count of p.bigCounts) bares.push(await bareBigBodies(stack, count));
      const bigs = [];
      for (const [i, count] of p.bigCounts.entries()) bigs.push({ count, bare: bares[i]!, ...(await bigBodies(stack, count)) });
      for (const big of bigs) {
        const rise = mib(big.memory.peakRssKb - big.baselineKb);
        const bareRise = mib(big.bare.memory.peakRssKb - big.bare.baselineKb);
        row(
          `bare fetch loop, 1 MB bodies (${big.count} requests, concurrency ${stack.concurrency}): workerd RSS rise`,
          `+${fmt(bareRise, 1)} MiB; ${big.bare.errors} errors`,
        );
        row(
          `workerd peak RSS with 1 MB bodies (${big.count} requests)`,
          `${fmt(mib(big.memory.peakRssKb), 1)} MiB (+${fmt(rise, 1)} MiB over idle, ${fmt(rise / Math.max(1, bareRise), 1)}× the bare loop's rise; VmHWM ${fmt(mib(big.memory.hwmKb), 1)} MiB); ${big.errors} errors, ${fmt(big.elapsedMs)} ms`,
          `rise ≤ concurrency × max response = ${stack.concurrency} × ${fmt(stack.maxResponseBytes / 1048576, 0)} MiB = ${fmt(bound)} MiB`,
          rise <= bound && big.errors === 0,
        );
      }
      if (bigs.length >= 2) {
        const a = bigs[0]!;
        const b = bigs[bigs.length - 1]!;
        const ra = mib(a.memory.peakRssKb - a.baselineKb);
        const rb = mib(b.memory.peakRssKb - b.baselineKb);
        row(
          `1 MB bodies: memory vs queue length (${a.count} → ${b.count} requests)`,
          `+${fmt(ra, 1)} → +${fmt(rb, 1)} MiB`,
          'independent of N (≤ 1.5× + 16 MiB)',
          rb <= ra * 1.5 + 16,
        );
      }
    }

    // Report.
    const cpu = cpus();
    const machine = `${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ${fmt(totalmem() / 1024 ** 3, 1)} GiB RAM, Linux ${release()}`;
    const settings = `CONCURRENCY=${stack.concurrency}, pg_net.batch_size=200 (default), max response ${stack.maxResponseBytes} bytes`;
    const text = [
      '# pg-net-edge benchmark results',
      '',
      `- date: ${new Date().toISOString()}`,
      `- machine: ${machine}`,
      `- software: Node ${process.version}, workerd ${versionOf('workerd')} (miniflare ${versionOf('miniflare')}), postgres.js ${versionOf('postgres')}, ${stack.databaseLabel}`,
      `- Worker settings: ${settings}`,
      `- run: \`npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\` (${fmt((Date.now() - started) / 1000)} s); see bench/README.md for what each figure means`,
      '',
      table(),
      '',
      ...(receivers.length || atOnce.length ? [receiverTable(atOnce, receivers), ''] : []),
      ...(notes.length ? ['Notes:', '', ...notes.map((n) => `- ${n}`), ''] : []),
    ].join('\n');
    process.stdout.write(`\n${table()}\n\n`);
    if (receivers.length || atOnce.length) process.stdout.write(`${receiverTable(atOnce, receivers)}\n\n`);
    for (const note of notes) process.stdout.write(`note: ${note}\n`);
    if (out !== null) {
      writeFileSync(out, text);
      progress(`written to ${out}`);
    } else {
      progress('--only: not written (pass --out to write the table)');
    }
    return 0;
  } finally {
    if (cron) clearInterval(cron);
    await writer?.end({ timeout: 5 });
    await poller?.end({ timeout: 5 });
    progress('stopping the stack');
    await solo?.stop();
    await stack.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    process.stderr.write(`bench failed: ${text.length > 2000 ? `${text.slice(0, 2000)}…` : text}\n`);
    process.exit(1);
  },
);
