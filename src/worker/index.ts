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

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
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
  let out = text.replace(/(:\/\/)[^\s/@]*@/g, '$1***@');
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

/** What a helper drain's request carries: set only through this Worker's loopback binding. */
interface HelperSpec {
  trigger: Trigger;
  /** The owner of the drain that started this one, for the logs. */
  parent: string;
  budgetMs: number;
  hardLimitMs: number;
  /** Helpers this helper may start itself (a share of the trigger's DRAINS − 1, see Helpers). */
  tokens: number;
  /** The starting drain's base header wait against slow targets, inherited (DrainExtras.baseWaitMs; 0: none). */
  baseWaitMs: number;
  /**
   * The starting invocation's string variables and secrets: a helper runs with exactly its
   * configuration, even if a deploy changed them meanwhile (bindings such as HYPERDRIVE are the
   * helper's own). Props stay inside the runtime.
   */
  vars: Record<string, string>;
}

function stringVars(env: Env): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (typeof value === 'string') vars[name] = value;
  return vars;
}

function helperSpec(props: unknown): HelperSpec | null {
  if (typeof props !== 'object' || props === null) return null;
  const spec = (props as { drainHelper?: unknown }).drainHelper;
  if (typeof spec !== 'object' || spec === null) return null;
  const { trigger, parent, budgetMs, hardLimitMs, tokens, baseWaitMs, vars } = spec as Record<string, unknown>;
  if ((trigger !== 'cron' && trigger !== 'nudge') || typeof parent !== 'string') return null;
  if (typeof budgetMs !== 'number' || typeof hardLimitMs !== 'number' || !(budgetMs > 0 && hardLimitMs > budgetMs)) return null;
  if (typeof tokens !== 'number' || !Number.isInteger(tokens) || tokens < 0) return null;
  // Optional: props from a version before it mean none.
  const base = baseWaitMs === undefined ? 0 : baseWaitMs;
  if (typeof base !== 'number' || !(base >= 0)) return null;
  if (typeof vars !== 'object' || vars === null) return null;
  return { trigger, parent, budgetMs, hardLimitMs, tokens, baseWaitMs: base, vars: vars as Record<string, string> };
}

/** Each helper connects and reads settings (10-40 ms) before it claims: start them this far apart. */
const HELPER_GAP_MS = 10;
/**
 * After a helper found nothing to claim, no new one for this long, doubling while they keep
 * finding nothing (a drain stuck on slow requests stays "saturated" with the queue empty: with a
 * fixed pause, two stuck drains started 47 empty helpers in 4 s of one head-of-line run).
 */
const HELPER_QUIET_MS = 100;
const HELPER_QUIET_MAX_MS = 3200;
/** A helper needs at least this much budget left to be worth its connection. */
const HELPER_MIN_BUDGET_MS = 1000;

/**
 * Helper drains for one drain. An invocation may have only 6 connections waiting for response
 * headers (FETCH_SLOTS each drain); when its drain has more work than that, another drain runs
 * in another invocation (a request to this Worker through ctx.exports), with slots of its own.
 * A trigger's drains are counted with tokens, not in shared memory (helpers may run in other
 * isolates): the starting drain has DRAINS − 1, and each helper it starts takes one plus about
 * half of those left, to start helpers of its own when it gets stuck in turn (a starting drain
 * that finished, or isn't stuck itself, would otherwise start none); they come back when it ends.
 */
class Helpers {
  /** Tokens held by helpers running now (each: itself plus those it was given). */
  private used = 0;
  private lastAt = 0;
  private readonly started: Promise<DrainStats | null>[] = [];
  private unavailable = false;
  /** A helper found nothing to claim: the work was this drain's own claimed rows; wait before trying again. */
  private quietUntil = 0;
  /** The next pause after an empty helper (HELPER_QUIET_MS, doubling; reset by a helper that claimed). */
  private quietMs = HELPER_QUIET_MS;

  constructor(
    private readonly ctx: ExecutionContext,
    private readonly env: Env,
    private readonly tokens: number,
    private readonly spec: (now: number, tokens: number, baseWaitMs: number) => HelperSpec,
  ) {}

  /** Starts a helper drain unless the limits above say not now; true if one started. */
  spawn(baseWaitMs: number): boolean {
    const now = Date.now();
    const available = this.tokens - this.used;
    if (this.unavailable || available <= 0 || now - this.lastAt < HELPER_GAP_MS || now < this.quietUntil) return false;
    const spec = this.spec(now, Math.floor((available - 1) / 2), baseWaitMs);
    if (spec.budgetMs < HELPER_MIN_BUDGET_MS) return false;
    const loopback = this.ctx.exports?.default;
    if (!loopback) {
      this.unavailable = true;
      log({ event: 'helper', parent: spec.parent, error: 'ctx.exports is unavailable (compatibility date before 2025-11-17?): one drain per trigger' });
      return false;
    }
    this.lastAt = now;
    const held = 1 + spec.tokens;
    this.used += held;
    const done = loopback({ props: { drainHelper: spec } })
      .fetch('https://pg-net-edge.internal/drain-helper', { method: 'POST' })
      .then(
        async (response): Promise<DrainStats | null> => {
          // The helper logs its own stats; a failure is news here too.
          const text = await response.text();
          if (response.ok) {
            const stats = JSON.parse(text) as DrainStats;
            if (stats.claimed > 0) {
              this.quietMs = HELPER_QUIET_MS;
            } else {
              this.quietUntil = Date.now() + this.quietMs;
              this.quietMs = Math.min(HELPER_QUIET_MAX_MS, 2 * this.quietMs);
            }
            return stats;
          }
          log({ event: 'helper', parent: spec.parent, status: response.status, error: redact(text, this.env) });
          return null;
        },
        (error: unknown) => {
          log({ event: 'helper', parent: spec.parent, error: redact(messageOf(error), this.env) });
          return null;
        },
      )
      .finally(() => {
        this.used -= held;
      });
    this.started.push(done);
    return true;
  }

  /** Every helper's stats (null: it failed), once all started so far have ended. */
  async settled(): Promise<(DrainStats | null)[]> {
    const results: (DrainStats | null)[] = [];
    while (results.length < this.started.length) results.push(...(await Promise.all(this.started.slice(results.length))));
    return results;
  }
}

/** A starting drain's stats with its helpers' counts added (the heartbeat's last_drain). */
function withHelpers(stats: DrainStats, helped: (DrainStats | null)[]): DrainStats {
  if (helped.length === 0) return stats;
  const total: DrainStats = { ...stats, helpers: helped.length };
  for (const h of helped) {
    if (!h) continue;
    // A helper's stats include the helpers it started.
    total.helpers! += h.helpers ?? 0;
    total.claimed += h.claimed;
    total.recorded += h.recorded;
    total.errors += h.errors;
    total.last_error ??= h.last_error;
  }
  total.duration_ms = Date.now() - Date.parse(stats.started);
  return total;
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

async function runDrain(
  env: Env,
  ctx: ExecutionContext,
  trigger: Trigger,
  run: DrainRun,
  helper: HelperSpec | null = null,
): Promise<DrainStats | null> {
  const label = helper ? { trigger, helper: true, parent: helper.parent } : { trigger };
  try {
    const url = databaseUrl(env);
    if (!url) {
      log({ event: 'drain', ...label, error: NOT_CONFIGURED });
      return null;
    }
    const sql = connect(url);
    const settings = await loadSettings(sql, env);
    const started = Date.now();
    const budgetMs = helper
      ? helper.budgetMs
      : trigger === 'cron'
        ? Math.min(settings.drainBudgetMs ?? CRON_BUDGET_MS, CRON_HARD_LIMIT_MS - 60_000)
        : Math.min(settings.drainBudgetMs ?? NUDGE_BUDGET_MS, NUDGE_BUDGET_MS);
    const hardLimitMs = helper ? helper.hardLimitMs : trigger === 'cron' ? CRON_HARD_LIMIT_MS : NUDGE_HARD_LIMIT_MS;
    const owner = crypto.randomUUID();
    const tokens = helper ? helper.tokens : settings.drains - 1;
    const helpers = new Helpers(ctx, env, tokens, (now, given, baseWaitMs) => ({
      trigger,
      parent: owner,
      budgetMs: budgetMs - (now - started),
      hardLimitMs: hardLimitMs - (now - started),
      tokens: given,
      baseWaitMs,
      // A helper's env already carries its starter's variables (see the fetch handler).
      vars: stringVars(env),
    }));
    // Starting a helper is a subrequest of this invocation too.
    const maxRequests = Math.max(1, settings.subrequestLimit - tokens);
    const drain = new Drain(sql, (input, init) => fetch(input, init), drainOptions(settings, budgetMs, hardLimitMs, maxRequests), {
      owner,
      // Helpers stop when the queue is empty: the starting drain is the one nudges find.
      lingerMs: helper ? 0 : settings.lingerMs,
      // The starting drain writes the heartbeat once its helpers are done, with their totals.
      heartbeat: false,
      ...(helper && helper.baseWaitMs > 0 ? { baseWaitMs: helper.baseWaitMs } : {}),
      ...(tokens > 0 ? { onSaturated: (_reason: 'slow' | 'stuck', baseWaitMs: number) => helpers.spawn(baseWaitMs) } : {}),
    });
    run.drain = drain;
    const stats = await drain.run();
    log({
      event: 'drain',
      ...label,
      ...stats,
      ...(stats.last_error === undefined ? {} : { last_error: redact(stats.last_error, env) }),
    });
    const total = withHelpers(stats, await helpers.settled());
    const overrides = overridesOf(settings, env);
    if (Object.keys(overrides).length > 0) total.overrides = overrides;
    if (helper === null && total.stopped !== 'database') await writeHeartbeat(sql, total);
    return total;
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
    // A helper drain started by this Worker (see Helpers): answered when the drain ends, so the
    // starting invocation waits for it. Only the loopback binding sets props.
    const helper = helperSpec(ctx.props);
    if (helper) {
      const stats = runDrain({ ...env, ...helper.vars }, ctx, helper.trigger, new DrainRun(), helper);
      ctx.waitUntil(stats);
      return stats.then((result) => Response.json(result ?? { error: 'drain failed (see the drain log line)' }, { status: result ? 200 : 500 }));
    }
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

/** Keeps the Listener Durable Object started (its alarm keeps the session up between pings). */
async function pingListener(namespace: NonNullable<Env['LISTENER']>, env: Env): Promise<void> {
  try {
    const status = await namespace.get(namespace.idFromName(LISTENER_NAME)).ping();
    log({ event: 'listener', ...status, lastError: status.lastError === null ? null : redact(status.lastError, env) });
  } catch (error) {
    log({ event: 'listener', error: redact(messageOf(error), env) });
  }
}
