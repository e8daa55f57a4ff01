// Slow receivers (issue 16, item 4): N GETs queued in one statement against loopback receivers
// that answer after 50 ms and after 200 ms, as real webhook receivers do. For each run: req/s,
// the most requests in flight at once (counted by the receiver), invocations and database
// connections used (counted from outside the Worker), the machine's ceiling for that many in
// flight in the same run, pg_net's quoted figure beside it, and a labelled model of a deployment.
import postgres from 'postgres';
import { Sampler, sleep, type MemorySample } from './measure.ts';
import type { DrainLog, Stack } from './stack.ts';

/**
 * pg_net's figures from issue 16's table: 2,000 GETs queued in one statement against the same
 * kind of target, pg_net 0.20.4 built from source, default settings, same kind of 2-core machine.
 * Quoted, not measured by this bench: the fixed anchor.
 */
export const PG_NET_QUOTED: Readonly<Record<'at once' | '50 ms' | '200 ms', number>> = {
  'at once': 212,
  '50 ms': 203,
  '200 ms': 176,
};
export const PG_NET_SOURCE = 'pg_net 0.20.4, default settings, N=2,000, same kind of machine; quoted from issue 16, not measured here';

/** The application_names of sessions that are not the Worker's drains (the bench, the relay, /health). */
const NOT_DRAINS = ['pg-net-edge relay', 'pg-net-edge health', 'pg-net-edge listener'];
/** How often pg_stat_activity and net._worker_status are sampled during a run. */
const WATCH_MS = 100;

export interface Invocations {
  /** Drain (or executor) log lines the Worker printed for this run: one per invocation. */
  logged: number;
  /** From net._worker_status.last_drain, when it says (invocations, executors or helpers), summed over the run's triggers; null: it doesn't. */
  heartbeat: number | null;
  /** The most one trigger's heartbeat reported (a cron tick may start a second trigger mid-run). */
  heartbeatMaxPerTrigger: number | null;
  /** Which last_drain field the heartbeat figure came from. */
  source: string;
  /** last_drain.peak_header_waits, if the Worker reports it: most waiting for headers in any one invocation. */
  peakHeaderWaits: number | null;
  /** last_drain.peak_in_flight, if the Worker reports it: its own count of rows out at once. */
  workerPeakInFlight: number | null;
}

export interface ReceiverRun {
  latencyMs: number;
  /** When the phase started (ms since epoch): drain log lines from then on are this run's. */
  startedAt: number;
  n: number;
  elapsedMs: number;
  rate: number;
  errors: number;
  firstError: string | null;
  duplicates: number;
  missing: number;
  /** Most requests held at once by the receiver. */
  peakInFlight: number;
  invocations: Invocations;
  /** Trigger drains (cron or nudge, not helpers) that logged: the connection bound is per trigger. */
  triggers: number;
  /** The most of those running at the same time (from their log lines' end and duration). */
  triggersAtOnce: number;
  /** Most Worker sessions open at once on the benchmark's database (sampled every WATCH_MS). */
  dbPeak: number;
  /** The same per application_name, each its own peak. */
  dbPeakByName: Record<string, number>;
  /** Distinct Worker sessions seen during the run (pid + backend start). */
  dbSessions: number;
  cpu: MemorySample;
}

export interface CeilingRun {
  lanes: number;
  n: number;
  rate: number;
  errors: number;
  peakInFlight: number;
}

export interface ReceiverDeps {
  progress(line: string): void;
  enqueue(urls: string[], timeouts: number[]): Promise<{ ids: string[]; committedAt: number }>;
  waitRecorded(lo: string, hi: string, n: number, label: string, limitMs: number): Promise<{ done: { recorded: number; lastCreated: number; errors: number; firstError: string | null } }>;
  hits(prefix: string): Promise<Record<string, number>>;
  settle(): Promise<void>;
}

interface Snapshot {
  sessions: { app: string; pid: number; start: string }[];
  lastDrain: Record<string, unknown> | null;
}

/** Samples the Worker's sessions (pg_stat_activity) and the heartbeat (net._worker_status) until stop(). */
class Watcher {
  private timer: NodeJS.Timeout | null = null;
  private busy = false;
  peak = 0;
  /** Worker sessions open at the last sample. */
  current = -1;
  readonly peakByName = new Map<string, number>();
  readonly seen = new Set<string>();
  /** last_drain values seen, by owner (a trigger drain writes one when it and its helpers end). */
  readonly heartbeats = new Map<string, Record<string, unknown>>();

  constructor(private readonly sql: postgres.Sql, private readonly database: string) {}

  start(): void {
    this.timer = setInterval(() => void this.sample(), WATCH_MS);
  }

  async sample(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const [row] = await this.sql<{ sessions: string; last_drain: string | null }[]>`
        select coalesce((select json_agg(json_build_object('app', application_name, 'pid', pid, 'start', backend_start))
                         from pg_stat_activity
                         where datname = ${this.database} and application_name like 'pg-net-edge%'
                           and application_name <> all(${`{${NOT_DRAINS.map((n) => `"${n}"`).join(',')}}`}::text[])), '[]')::text as sessions,
               (select last_drain::text from net._worker_status where id = 1) as last_drain`;
      const snap: Snapshot = {
        sessions: JSON.parse(row?.sessions ?? '[]') as Snapshot['sessions'],
        lastDrain: row?.last_drain ? (JSON.parse(row.last_drain) as Record<string, unknown>) : null,
      };
      this.current = snap.sessions.length;
      this.peak = Math.max(this.peak, snap.sessions.length);
      const byName = new Map<string, number>();
      for (const s of snap.sessions) {
        byName.set(s.app, (byName.get(s.app) ?? 0) + 1);
        this.seen.add(`${s.pid}@${s.start}`);
      }
      for (const [name, count] of byName) this.peakByName.set(name, Math.max(this.peakByName.get(name) ?? 0, count));
      const owner = snap.lastDrain?.owner;
      if (snap.lastDrain && typeof owner === 'string') this.heartbeats.set(owner, snap.lastDrain);
    } catch {
      // A sample lost to load: the next one counts.
    } finally {
      this.busy = false;
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

/** Invocations a heartbeat reports for its trigger, if it says: invocations, executors (+ its coordinator) or helpers (+ the starting drain). */
function heartbeatInvocations(lastDrain: Record<string, unknown>): { count: number; source: string } | null {
  const num = (key: string) => (typeof lastDrain[key] === 'number' ? (lastDrain[key] as number) : null);
  const invocations = num('invocations');
  if (invocations !== null) return { count: invocations, source: 'last_drain.invocations' };
  const executors = num('executors');
  if (executors !== null) return { count: executors + 1, source: 'last_drain.executors + 1' };
  // Today's Worker: helpers (other invocations) beside the starting drain; absent = none.
  if ('claimed' in lastDrain) return { count: (num('helpers') ?? 0) + 1, source: 'last_drain.helpers + 1' };
  return null;
}

function databaseName(url: string): string {
  return decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
}

/** The most intervals ([start, end], ms) that overlap at any moment. */
function mostAtOnce(intervals: [number, number][]): number {
  const edges = intervals.flatMap(([start, end]): [number, number][] => [[start, 1], [end, -1]]);
  // Ends before starts at the same instant: touching intervals don't overlap.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let most = 0;
  for (const [, step] of edges) {
    now += step;
    most = Math.max(most, now);
  }
  return most;
}

/** The slow receiver's path for request i: /held/<ms>/<label>/<i> (the target counts each label's requests held at once). */
function heldPrefix(latencyMs: number, label: string): string {
  return `/held/${latencyMs}/${label}/`;
}

async function heldPeak(stack: Stack, label: string): Promise<number> {
  const response = await fetch(`${stack.target.url}/__held?label=${encodeURIComponent(label)}`);
  return ((await response.json()) as { max: number }).max;
}

const isExecutorLog = (d: DrainLog) => d.event === undefined || d.event === 'drain' || d.event.includes('exec');

/** N requests queued in one statement against a receiver answering after latencyMs. */
export async function receiverRun(stack: Stack, deps: ReceiverDeps, latencyMs: number, n: number, runId: string): Promise<ReceiverRun> {
  const label = `rx-${runId}-${latencyMs}-${n}`;
  const prefix = heldPrefix(latencyMs, label);
  const urls = Array.from({ length: n }, (_, i) => `${stack.target.url}${prefix}${i}`);
  // pg_net's default timeout (5 s): the receiver answers well within it, so any timeout is ours.
  const timeouts = urls.map(() => 5000);
  const watchSql = postgres(stack.dbUrl, { max: 1, fetch_types: false, onnotice: () => {} });
  const watcher = new Watcher(watchSql, databaseName(stack.dbUrl));
  const sampler = new Sampler(stack.workerdPid, 200);
  try {
    sampler.start();
    watcher.start();
    const phaseStart = Date.now();
    deps.progress(`slow receiver, ${latencyMs} ms, N=${n}: enqueueing ${n} GETs in one statement`);
    const { ids, committedAt } = await deps.enqueue(urls, timeouts);
    const { done } = await deps.waitRecorded(ids[0]!, ids[ids.length - 1]!, n, `${latencyMs} ms N=${n}`, Math.max(180_000, n * 40));
    const cpu = sampler.stop();
    // The starting drain logs and writes its heartbeat after LINGER_MS and its helpers: wait for them.
    // Wait (bounded) until every drain invocation has ended (their sessions close with them), so a
    // trigger that a cron tick started mid-run is counted too.
    for (let waited = 0; waited < 10_000; waited += 100) {
      await watcher.sample();
      // Every trigger drain that ran (a cron tick may add one) has logged, and written its heartbeat.
      const triggerLogs = stack.drainLogs.filter((d) => d.at >= phaseStart && !d.helper && isExecutorLog(d));
      const lastDone = triggerLogs.some((d) => d.at >= done.lastCreated);
      const beats = [...watcher.heartbeats.values()].filter((b) => typeof b.started === 'string' && Date.parse(b.started) >= phaseStart - 1000).length;
      if (lastDone && beats >= triggerLogs.length && watcher.current === 0) break;
      await sleep(100);
    }
    watcher.stop();
    const logs = stack.drainLogs.filter((d) => d.at >= phaseStart && isExecutorLog(d));
    const triggerLogs = logs.filter((d) => !d.helper && (d.claimed ?? 0) > 0);
    let heartbeat: number | null = null;
    let heartbeatMaxPerTrigger: number | null = null;
    let peakHeaderWaits: number | null = null;
    let workerPeakInFlight: number | null = null;
    let source = 'n/a (last_drain reports no invocations, executors or helpers)';
    for (const beat of watcher.heartbeats.values()) {
      if (typeof beat.started !== 'string' || Date.parse(beat.started) < phaseStart - 1000) continue;
      if (typeof beat.peak_header_waits === 'number') peakHeaderWaits = Math.max(peakHeaderWaits ?? 0, beat.peak_header_waits);
      if (typeof beat.peak_in_flight === 'number') workerPeakInFlight = Math.max(workerPeakInFlight ?? 0, beat.peak_in_flight);
      const h = heartbeatInvocations(beat);
      if (h === null) continue;
      heartbeat = (heartbeat ?? 0) + h.count;
      heartbeatMaxPerTrigger = Math.max(heartbeatMaxPerTrigger ?? 0, h.count);
      source = h.source;
    }
    const hits = await deps.hits(prefix);
    let duplicates = 0;
    for (const count of Object.values(hits)) duplicates += Math.max(0, count - 1);
    const elapsedMs = Math.round(done.lastCreated - committedAt);
    const result: ReceiverRun = {
      latencyMs,
      startedAt: phaseStart,
      n,
      elapsedMs,
      rate: done.recorded === n ? n / (elapsedMs / 1000) : Number.NaN,
      errors: done.errors + (n - done.recorded),
      firstError: done.firstError,
      duplicates,
      missing: n - Object.keys(hits).length,
      peakInFlight: await heldPeak(stack, label),
      invocations: { logged: logs.length, heartbeat, heartbeatMaxPerTrigger, source, peakHeaderWaits, workerPeakInFlight },
      triggers: triggerLogs.length,
      triggersAtOnce: mostAtOnce(triggerLogs.map((d) => [d.at - (d.duration_ms ?? 0), d.at])),
      dbPeak: watcher.peak,
      dbPeakByName: Object.fromEntries(watcher.peakByName),
      dbSessions: watcher.seen.size,
      cpu,
    };
    deps.progress(
      `  ${done.recorded}/${n} in ${elapsedMs} ms = ${result.rate.toFixed(0)} req/s; peak in flight ${result.peakInFlight}; ` +
        `invocations ${result.invocations.logged} logged / ${result.invocations.heartbeat ?? 'n/a'} by heartbeat; ` +
        `database sessions peak ${result.dbPeak} (${Object.entries(result.dbPeakByName).map(([k, v]) => `${k}: ${v}`).join(', ') || 'none seen'}), ${result.dbSessions} in all; ` +
        `errors ${result.errors}, duplicates ${duplicates}, never arrived ${result.missing}`,
    );
    await deps.settle();
    return result;
  } finally {
    watcher.stop();
    sampler.stop();
    await watchSql.end({ timeout: 5 });
  }
}

/** The bare fetch loop in one workerd with `lanes` at once against the same receiver: the machine's ceiling for that many in flight. */
export async function receiverCeiling(stack: Stack, deps: ReceiverDeps, latencyMs: number, n: number, lanes: number, runId: string): Promise<CeilingRun> {
  const label = `rxc-${runId}-${latencyMs}-${n}-${lanes}`;
  deps.progress(`slow receiver ceiling, ${latencyMs} ms: bare fetch loop in workerd, ${lanes} at once, ${n} requests`);
  const result = await stack.ceiling(n, heldPrefix(latencyMs, label), false, lanes);
  const rate = n / (result.elapsed_ms / 1000);
  const peakInFlight = await heldPeak(stack, label);
  deps.progress(`  ${n} in ${result.elapsed_ms} ms = ${rate.toFixed(0)} req/s, ${result.errors} errors, peak in flight ${peakInFlight}`);
  return { lanes, n, rate, errors: result.errors, peakInFlight };
}

export interface Model {
  /** Requests in flight per invocation, measured: the Worker's peak_header_waits if it reports it, else peak in flight ÷ invocations used. */
  perInvocation: number;
  perInvocationSource: string;
  /** A slot's cycle, measured: peak in flight ÷ req/s (the receiver's latency plus everything else per request). */
  cycleMs: number;
  /** K invocations × perInvocation in flight ÷ cycle, for each K. */
  atCycle: { k: number; rate: number }[];
  /** The same with the cycle at the receiver's latency alone (nothing else per request): an upper bound. */
  atLatency: { k: number; rate: number }[];
}

/**
 * A MODEL, not a measurement: a deployment with K invocations, each holding as many requests in
 * flight as one held here, each request taking as long as here. Ignores what this machine shares
 * (one workerd thread) and what a deployment adds (the database's record rate, per-origin caps).
 */
export function model(run: ReceiverRun, ks: number[]): Model | null {
  // One trigger's invocations run side by side; a second trigger (a cron tick) may run beside it.
  const perTrigger = run.invocations.heartbeatMaxPerTrigger ?? run.invocations.logged / Math.max(1, run.triggers);
  const invocations = perTrigger * Math.max(1, run.triggersAtOnce);
  if (!(invocations > 0) || !(run.peakInFlight > 0) || !Number.isFinite(run.rate)) return null;
  // Executors that come and go make invocations used a count over time, not at once: then the
  // Worker's own most-waiting-in-one-invocation is the better measure of one invocation's capacity.
  const reported = run.invocations.peakHeaderWaits;
  const perInvocation = reported !== null && reported > 0 ? reported : run.peakInFlight / invocations;
  const cycleMs = (run.peakInFlight / run.rate) * 1000;
  return {
    perInvocation,
    perInvocationSource: reported !== null && reported > 0 ? 'last_drain.peak_header_waits' : `peak in flight ÷ (one trigger's invocations × ${Math.max(1, run.triggersAtOnce)} trigger(s) at once)`,
    cycleMs,
    atCycle: ks.map((k) => ({ k, rate: (k * perInvocation * 1000) / cycleMs })),
    atLatency: ks.map((k) => ({ k, rate: (k * perInvocation * 1000) / run.latencyMs })),
  };
}
