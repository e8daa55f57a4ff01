// The Cloudflare Worker: crons drain the queue and sweep old responses; POST /nudge drains at
// once (the relay calls it on NOTIFY); GET /health reports database and queue state (cached;
// details only with the secret: health.ts).
import { Hono } from 'hono';
import { Drain, writeHeartbeat } from '../core/drain.ts';
import { loadSettings, overridesOf, type Settings } from '../core/settings.ts';
import { sweep } from '../core/sweep.ts';
import type { DrainOptions, DrainStats } from '../core/types.ts';
import { connectDatabase as connect } from './db.ts';
import { healthBody, healthCache, type Probe, type Snapshot } from './health.ts';
import { probeWithBudget } from './probe.ts';
import type { Env, ExecutionContext, ScheduledController } from './env.ts';
import { LISTENER_NAME, listenerWake } from './listener.ts';
import { Fanout } from './fanout.ts';
import { runExecutor } from './executor.ts';
import { HEADER_WAIT_LIMIT, InvocationLimits } from './limits.ts';
import { messageOf } from '../core/errors.ts';
import { redactUrlsIn } from '../core/redact.ts';

export type { Env, ExecutionContext, ScheduledController } from './env.ts';
export { Listener } from './listener.ts';

/**
 * The crons that sweep old responses; any other cron drains. Every minute, so a short
 * pg_net.ttl is honoured within a minute as pg_net's worker does, but its own expression (the
 * drain's is "* * * * *"): controller.cron is how a scheduled invocation tells them apart. The
 * old every-five-minutes one is still a sweep for deployments that keep it.
 */
const SWEEP_CRONS: ReadonlySet<string> = new Set(['*/1 * * * *', '*/5 * * * *']);
// A cron invocation may run for up to 15 minutes of wall time: claim for ~50 s (the next cron
// comes after a minute), and only claim requests that can finish well before the end.
const CRON_BUDGET_MS = 50_000;
const CRON_HARD_LIMIT_MS = 14 * 60_000;
// ctx.waitUntil after a response lives ~30 s.
const NUDGE_BUDGET_MS = 20_000;
const NUDGE_HARD_LIMIT_MS = 28_000;
const SWEEP_BUDGET_MS = 25_000;
const SWEEP_BATCH = 10_000;
const HEALTH_TIMEOUT_MS = 12_000;

const NOT_CONFIGURED = 'no database configured: bind HYPERDRIVE or set the DATABASE_URL secret (wrangler secret put DATABASE_URL)';

function databaseUrl(env: Env): string | null {
  return env.HYPERDRIVE?.connectionString || env.DATABASE_URL || null;
}

function passwordsOf(url: string | undefined): string[] {
  if (!url) return [];
  try {
    const password = new URL(url).password;
    if (!password) return [];
    let decoded = password;
    try {
      decoded = decodeURIComponent(password);
    } catch {
      // keep the raw form only
    }
    return [password, decoded];
  } catch {
    return [];
  }
}

/** Removes credentials from text that leaves the Worker (responses, logs). */
function redact(text: string, env: Env): string {
  let out = redactUrlsIn(text);
  const secrets = [
    env.NUDGE_SECRET,
    ...passwordsOf(env.DATABASE_URL),
    ...passwordsOf(env.LISTEN_DATABASE_URL),
    ...passwordsOf(env.HYPERDRIVE?.connectionString),
  ];
  for (const secret of secrets) {
    // Very short values would mangle ordinary words and are not worth hiding from a message.
    if (secret && secret.length >= 4) out = out.split(secret).join('***');
  }
  return out;
}

/** Constant-time comparison (time depends only on the lengths, never on where bytes differ). */
function safeEqual(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  let diff = a.length ^ b.length;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

function log(line: Record<string, unknown>): void {
  console.log(JSON.stringify(line));
}

/**
 * A drain started (or about to start) in this isolate. Nudges arriving while it runs poke it
 * instead of starting another: module-level, so it spans requests in the same isolate.
 */
class DrainRun {
  drain: Drain | null = null;
  done = false;
  /** True if this run will still claim work queued before now. */
  poke(): boolean {
    if (this.done) return false;
    // Still reading settings: its first claim comes later and will see the new rows.
    if (this.drain === null) return true;
    return this.drain.poke();
  }
}

let current: DrainRun | null = null;

type Trigger = 'cron' | 'nudge';

/** The DB connections a coordinator may open (db.ts max): each holds a header-wait slot while open. */
const DB_CONNECTIONS = 2;

/** Whether this request is an executor job from this Worker's own coordinator (props can't be forged). */
function isExecutor(props: unknown): boolean {
  return typeof props === 'object' && props !== null && (props as { executor?: unknown }).executor === true;
}

/** TCP probes one drain may make to classify vague failures (see probe.ts): a tenth of its requests, at most 20. */
function probeBudget(maxRequests: number): number {
  return Math.min(20, Math.floor(maxRequests / 10));
}

function drainOptions(settings: Settings, budgetMs: number, hardLimitMs: number, maxRequests: number): DrainOptions {
  const probes = probeBudget(maxRequests);
  return {
    concurrency: settings.concurrency,
    fetchSlots: settings.fetchSlots,
    batchSize: settings.batchSize,
    budgetMs,
    hardLimitMs,
    leaseMarginMs: settings.leaseMarginMs,
    flushMs: settings.flushMs,
    maxResponseBytes: settings.maxResponseBytes,
    userAgent: settings.userAgent,
    destinations: settings.destinations,
    // A probe is a subrequest too: the drain sends that many fewer requests.
    maxRequests: Math.max(1, maxRequests - probes),
    // workerd's fetch errors are vague; a TCP probe after a failure tells their kinds apart.
    canConnect: probeWithBudget(probes),
  };
}

async function runDrain(env: Env, ctx: ExecutionContext, trigger: Trigger, run: DrainRun): Promise<DrainStats | null> {
  const label = { trigger };
  try {
    const url = databaseUrl(env);
    if (!url) {
      log({ event: 'drain', ...label, error: NOT_CONFIGURED });
      return null;
    }
    // Everything this invocation opens counts against Cloudflare's per-invocation limits.
    const limits = new InvocationLimits({ subrequestLimit: Number.MAX_SAFE_INTEGER });
    const sql = connect(url, undefined, limits);
    const settings = await loadSettings(sql, env);
    limits.subrequestLimit = settings.subrequestLimit;
    const budgetMs =
      trigger === 'cron'
        ? Math.min(settings.drainBudgetMs ?? CRON_BUDGET_MS, CRON_HARD_LIMIT_MS - 60_000)
        : Math.min(settings.drainBudgetMs ?? NUDGE_BUDGET_MS, NUDGE_BUDGET_MS);
    const hardLimitMs = trigger === 'cron' ? CRON_HARD_LIMIT_MS : NUDGE_HARD_LIMIT_MS;
    const loopback = ctx.exports?.default;
    const fanout =
      settings.executors > 0 && loopback
        ? new Fanout(
            (body) => loopback({ props: { executor: true } }).fetch('https://pg-net-edge.internal/execute', { method: 'POST', body, duplex: 'half' } as RequestInit),
            limits,
            {
              executors: settings.executors,
              rowsPerExecutor: HEADER_WAIT_LIMIT,
              originConcurrency: settings.originConcurrency,
              job: {
                maxResponseBytes: settings.maxResponseBytes,
                userAgent: settings.userAgent,
                denied: settings.deniedDestinations,
                allowed: settings.allowedDestinations,
                subrequestLimit: settings.subrequestLimit,
                // Sent well within the lease, as the drain's own rows are (see fill in drain.ts).
                maxWaitMs: settings.leaseMarginMs / 2,
                memoryLimitBytes: settings.concurrency * settings.maxResponseBytes,
              },
            },
          )
        : null;
    if (settings.executors > 0 && !loopback) {
      log({ event: 'drain', ...label, warning: 'ctx.exports is unavailable (compatibility date before 2025-11-17?): no executors' });
    }
    // The drain's own fetch slots: those the database connections leave. With a fan-out the
    // drain sends what these start within its claim-ahead horizon and spills the rest to
    // executors (spill.ts); it always leaves one slot free for opening lanes
    // (Fanout.reservedSlots).
    const options = {
      ...drainOptions(settings, budgetMs, hardLimitMs, settings.subrequestLimit - DB_CONNECTIONS),
      fetchSlots: Math.min(settings.fetchSlots, HEADER_WAIT_LIMIT - DB_CONNECTIONS),
      // With executors, each of which is one subrequest of this invocation carrying HEADER_WAIT_LIMIT
      // rows at a time, the drain may claim that many more (its own requests stop short: localLeft).
      ...(fanout ? { maxRequests: Math.max(1, (settings.subrequestLimit - DB_CONNECTIONS) * HEADER_WAIT_LIMIT) } : {}),
    };
    const drain = new Drain(sql, limits.fetchWith((input, init) => fetch(input, init)), options, {
      lingerMs: settings.lingerMs,
      // The isolate's bound on response bytes (CONCURRENCY × MAX_RESPONSE_BYTES), executors' bodies included.
      memoryLimitBytes: settings.concurrency * settings.maxResponseBytes,
      // Written below, with the fan-out's figures.
      heartbeat: false,
      ...(fanout ? { runner: fanout } : {}),
    });
    run.drain = drain;
    const stats = await drain.run();
    fanout?.close();
    if (fanout) Object.assign(stats, fanout.stats());
    else stats.peak_header_waits = limits.peak;
    stats.last_error ??= fanout?.error();
    if (stats.last_error === undefined) delete stats.last_error;
    log({
      event: 'drain',
      ...label,
      ...stats,
      ...(stats.last_error === undefined ? {} : { last_error: redact(stats.last_error, env) }),
    });
    const overrides = overridesOf(settings, env);
    if (Object.keys(overrides).length > 0) stats.overrides = overrides;
    if (stats.stopped !== 'database') await writeHeartbeat(sql, stats);
    return stats;
  } catch (error) {
    log({ event: 'drain', ...label, error: redact(messageOf(error), env) });
    return null;
  } finally {
    run.done = true;
    if (current === run) current = null;
  }
}

async function runSweep(env: Env): Promise<number | null> {
  const started = Date.now();
  try {
    const url = databaseUrl(env);
    if (!url) {
      log({ event: 'sweep', error: NOT_CONFIGURED });
      return null;
    }
    const sql = connect(url);
    const settings = await loadSettings(sql, env);
    const deleted = await sweep(sql, settings.ttl, { batch: SWEEP_BATCH, budgetMs: SWEEP_BUDGET_MS });
    log({ event: 'sweep', ttl: settings.ttl, deleted, duration_ms: Date.now() - started });
    return deleted;
  } catch (error) {
    log({ event: 'sweep', error: redact(messageOf(error), env), duration_ms: Date.now() - started });
    return null;
  }
}

/** Starts a drain in the background unless one in this isolate can take the work; true if coalesced. */
function startOrPoke(env: Env, ctx: ExecutionContext): boolean {
  if (current?.poke()) return true;
  const run = new DrainRun();
  current = run;
  ctx.waitUntil(runDrain(env, ctx, 'nudge', run));
  return false;
}

function isSqlState(error: unknown, classPrefix: string): boolean {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && code.startsWith(classPrefix);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const app = new Hono<{ Bindings: Env }>();

/** True if the request carries `Authorization: Bearer <NUDGE_SECRET>` (never without a secret set). */
function hasSecret(header: string | undefined, env: Env): boolean {
  if (!env.NUDGE_SECRET) return false;
  const value = header ?? '';
  const token = value.startsWith('Bearer ') ? value.slice('Bearer '.length) : '';
  // Compare even when the header is malformed, so the timing says nothing about which check failed.
  return safeEqual(token, env.NUDGE_SECRET) && token !== '';
}

/** One look at the database for GET /health (cached and shared: see health.ts). */
async function probeDatabase(url: string, env: Env): Promise<Probe> {
  try {
    // Its own application_name, so a DBA (and the flood test) can tell these sessions apart.
    const sql = connect(url, 'pg-net-edge health');
    const rows = await withTimeout(sql<{ health: Record<string, unknown> | null }[]>`select net._health() as health`, HEALTH_TIMEOUT_MS, 'the database');
    return { database: 'ok', details: rows[0]?.health ?? {} };
  } catch (error) {
    // Reachable but the schema is missing (undefined function/schema, class 42): say so.
    const notInstalled = isSqlState(error, '42');
    const detail = redact(messageOf(error), env);
    return notInstalled
      ? { database: 'not installed', details: {}, error: `pg-net-edge is not installed in this database (${detail})` }
      : { database: 'unreachable', details: {}, error: detail };
  }
}

app.get('/health', async (c) => {
  const env = c.env;
  const authorized = hasSecret(c.req.header('Authorization'), env);
  const url = databaseUrl(env);
  if (!url) {
    // A fixed message with no secrets in it: says what to configure.
    return c.json({ ok: false, database: 'not configured', checked_at: new Date().toISOString(), error: NOT_CONFIGURED }, 503);
  }
  // Raced with a timer of this request's own: the shared probe may belong to another request.
  const snapshot = await withTimeout(healthCache(url, () => probeDatabase(url, env)).get(), HEALTH_TIMEOUT_MS + 1000, 'the health probe').catch(
    (): Snapshot => ({ database: 'unreachable', details: {}, error: 'the health probe did not finish', checkedAt: Date.now() }),
  );
  return c.json(healthBody(snapshot, authorized), snapshot.database === 'ok' ? 200 : 503);
});

app.post('/nudge', (c) => {
  const env = c.env;
  if (!env.NUDGE_SECRET) {
    return c.json(
      { error: 'NUDGE_SECRET is not set: set it (wrangler secret put NUDGE_SECRET) to enable /nudge' },
      503,
    );
  }
  if (!hasSecret(c.req.header('Authorization'), env)) return c.json({ error: 'unauthorized' }, 401);
  if (!databaseUrl(env)) return c.json({ error: NOT_CONFIGURED }, 503);
  const coalesced = startOrPoke(env, c.executionCtx);
  return c.json({ accepted: true, coalesced }, 202);
});

app.notFound((c) => c.json({ error: 'not found', endpoints: ['GET /health', 'POST /nudge'] }, 404));

app.onError((error, c) => c.json({ error: redact(messageOf(error), c.env) }, 500));

export default {
  fetch(request: Request, env: Env, ctx: ExecutionContext): Response | Promise<Response> {
    // An executor job from this Worker's coordinator (see fanout.ts): answered at once with a
    // stream of outcomes. Only the loopback binding sets props.
    if (isExecutor(ctx.props)) return executorResponse(request, ctx);
    // A wake from the Listener Durable Object (a NOTIFY arrived): the same drain /nudge starts.
    const wake = listenerWake(ctx.props);
    if (wake) {
      const wakeEnv: Env = { ...env, ...wake.vars };
      if (!databaseUrl(wakeEnv)) return Response.json({ error: NOT_CONFIGURED }, { status: 503 });
      return Response.json({ accepted: true, coalesced: startOrPoke(wakeEnv, ctx) }, { status: 202 });
    }
    return app.fetch(request, env, ctx);
  },

  scheduled(controller: ScheduledController, env: Env, ctx: ExecutionContext): void {
    if (SWEEP_CRONS.has(controller.cron)) {
      ctx.waitUntil(runSweep(env));
      return;
    }
    // The every-minute cron is the guarantee: always start a drain; later nudges may poke it.
    const run = new DrainRun();
    current = run;
    ctx.waitUntil(runDrain(env, ctx, 'cron', run));
    if (env.LISTENER) ctx.waitUntil(pingListener(env.LISTENER, env));
  },
};

function executorResponse(request: Request, ctx: ExecutionContext): Promise<Response> {
  if (!request.body) return Promise.resolve(Response.json({ error: 'bad executor job' }, { status: 400 }));
  return runExecutor(request.body, (input, init) => fetch(input, init), (p) => ctx.waitUntil(p));
}

/** Keeps the Listener Durable Object started (its alarm keeps the session up between pings). */
async function pingListener(namespace: NonNullable<Env['LISTENER']>, env: Env): Promise<void> {
  try {
    const status = await namespace.get(namespace.idFromName(LISTENER_NAME)).ping();
    log({ event: 'listener', ...status, lastError: status.lastError === null ? null : redact(status.lastError, env) });
  } catch (error) {
    log({ event: 'listener', error: redact(messageOf(error), env) });
  }
}
