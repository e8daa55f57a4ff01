// A Node runner of the core drain: the same claim → fetch → record code the Worker runs, for a
// self-hosted runner (`pg-net-edge drain --loop`) and for tests that kill a drain mid-flight.
import { lookup } from 'node:dns/promises';
import postgres from 'postgres';
import { drain } from '../core/drain.ts';
import { guardResults } from '../core/result-guard.ts';
import { sweep } from '../core/sweep.ts';
import { loadSettings, SettingsError, type SettingVars } from '../core/settings.ts';
import type { DrainOptions, DrainStats } from '../core/types.ts';
import { redactUrl } from '../core/redact.ts';
import { CHANNEL } from './relay.ts';
import { messageOf } from '../core/errors.ts';

export interface RunDrainOptions {
  databaseUrl: string;
  /** Keep draining until SIGINT/SIGTERM (woken by NOTIFY, polling as a fallback). */
  loop: boolean;
  env: SettingVars & { POLL_MS?: string | undefined };
  log?: (line: string) => void;
}

/** Longest timeout a request may have (SQL rejects more); Node has no invocation wall clock. */
const MAX_TIMEOUT_MS = 300_000;
/** One-shot drains stop claiming after this unless DRAIN_BUDGET_MS says otherwise. */
const DEFAULT_BUDGET_MS = 60_000;

/**
 * The addresses a host name resolves to, for the destination policy: a name that resolves to a
 * denied address (e.g. a DNS name pointing at 169.254.169.254) is refused. fetch resolves the
 * name again when it connects, so a name whose records change in between (DNS rebinding) is
 * not covered; deny such names by name or use pg_net.allowed_destinations.
 */
async function resolveHost(host: string): Promise<string[]> {
  const found = await lookup(host, { all: true, verbatim: true });
  return found.map((a) => a.address);
}

/** One drain with the settings read afresh (so ALTER ROLE … SET + net.worker_restart() apply). */
export async function drainOnce(sql: postgres.Sql, env: SettingVars): Promise<DrainStats> {
  const settings = await loadSettings(sql, env);
  const budgetMs = settings.drainBudgetMs ?? DEFAULT_BUDGET_MS;
  const options: DrainOptions = {
    concurrency: settings.concurrency,
    batchSize: settings.batchSize,
    budgetMs,
    hardLimitMs: budgetMs + MAX_TIMEOUT_MS + settings.leaseMarginMs,
    leaseMarginMs: settings.leaseMarginMs,
    flushMs: settings.flushMs,
    maxResponseBytes: settings.maxResponseBytes,
    userAgent: settings.userAgent,
    destinations: settings.destinations,
    resolveHost,
  };
  // The core drain writes net._heartbeat, so net.check_worker_is_up() sees a self-hosted runner too.
  return drain(sql, fetch, options);
}

/** How often `drain --loop` deletes expired responses: every minute, as the Worker's sweep cron. */
export const SWEEP_EVERY_MS = 60_000;

/**
 * Deletes responses older than pg_net.ttl when the last sweep is SWEEP_EVERY_MS old (or there was
 * none): the self-hosted runner's sweep cron. Bounded like the Worker's (10,000-row batches,
 * 25 s). Returns the rows deleted, or null when it was not due. `state.lastAt` is kept by the caller.
 */
export async function sweepIfDue(
  sql: postgres.Sql,
  env: SettingVars,
  state: { lastAt: number | null },
  now: () => number = Date.now,
): Promise<number | null> {
  if (state.lastAt !== null && now() - state.lastAt < SWEEP_EVERY_MS) return null;
  state.lastAt = now();
  const settings = await loadSettings(sql, env);
  return sweep(sql, settings.ttl, { batch: 10_000, budgetMs: 25_000 });
}

/** Runs the `drain` command; resolves with the exit code. */
export async function runDrain(options: RunDrainOptions): Promise<number> {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  // Guarded against postgres.js#1181 (sparse results after a failed statement): result-guard.ts.
  const sql = guardResults(
    postgres(options.databaseUrl, {
      max: 4,
      fetch_types: false,
      onnotice: () => {},
      connection: { application_name: 'pg-net-edge drain' },
    }),
  );
  try {
    if (!options.loop) {
      const stats = await drainOnce(sql, options.env);
      log(JSON.stringify(stats));
      return stats.stopped === 'database' ? 1 : 0;
    }
    return await loop(sql, options, log);
  } catch (error) {
    const hint = error instanceof SettingsError ? '' : ` (database ${redactUrl(options.databaseUrl)})`;
    process.stderr.write(`pg-net-edge drain: ${messageOf(error)}${hint}\n`);
    return 1;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function loop(sql: postgres.Sql, options: RunDrainOptions, log: (line: string) => void): Promise<number> {
  const pollMs = Number(options.env.POLL_MS ?? 1000) || 1000;
  let stop = false;
  let wake: () => void = () => {};
  const onSignal = () => {
    if (stop) process.exit(130); // second Ctrl-C: leave now; leases expire and nothing is lost
    stop = true;
    log('drain: stopping after the current drain (Ctrl-C again to leave at once)');
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // NOTIFY only cuts latency; the poll below is the guarantee, so a lost listener is harmless.
  await sql.listen(CHANNEL, () => wake()).catch((error: unknown) => log(`drain: LISTEN failed (${messageOf(error)}); polling only`));
  let delay = 250;
  const swept = { lastAt: null as number | null };
  try {
    while (!stop) {
      let stats: DrainStats | null = null;
      try {
        const deleted = await sweepIfDue(sql, options.env, swept);
        if (deleted) log(JSON.stringify({ event: 'sweep', deleted }));
        stats = await drainOnce(sql, options.env);
        if (stats.claimed > 0 || stats.stopped !== 'empty') log(JSON.stringify(stats));
      } catch (error) {
        if (error instanceof SettingsError) throw error;
        log(`drain: ${messageOf(error)}; retrying in ${delay} ms`);
      }
      if (stats && stats.stopped === 'budget') continue; // more work waiting
      const failed = !stats || stats.stopped === 'database';
      const wait = failed ? delay : pollMs;
      delay = failed ? Math.min(delay * 2, 10_000) : 250;
      if (stop) break;
      await new Promise<void>((done) => {
        const timer = setTimeout(done, wait);
        wake = () => {
          clearTimeout(timer);
          done();
        };
      });
      wake = () => {};
    }
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  return 0;
}
