// Effective drain settings: the database's pg_net.* settings (net._config()) overlaid with the
// Worker's variables. Parsing is a pure function so bad configuration fails loudly and testably.
import type postgres from 'postgres';
import { DestinationError, destinationPolicy, type DestinationPolicy } from './destination.ts';

/** Worker variables (all strings, as wrangler delivers them); unset or empty = not overridden. */
export interface SettingVars {
  BATCH_SIZE?: string | undefined;
  TTL?: string | undefined;
  CONCURRENCY?: string | undefined;
  MAX_RESPONSE_BYTES?: string | undefined;
  LEASE_MARGIN_MS?: string | undefined;
  DRAIN_BUDGET_MS?: string | undefined;
  USER_AGENT?: string | undefined;
  FLUSH_MS?: string | undefined;
  LINGER_MS?: string | undefined;
  SUBREQUEST_LIMIT?: string | undefined;
  FETCH_SLOTS?: string | undefined;
  EXECUTORS?: string | undefined;
  ORIGIN_CONCURRENCY?: string | undefined;
}

/** What net._config() returns (unknown until checked: it comes from the database). */
export interface DatabaseConfig {
  ttl?: unknown;
  batch_size?: unknown;
  /** pg_net.denied_destinations / pg_net.allowed_destinations of the owner of net (text or null). */
  denied_destinations?: unknown;
  allowed_destinations?: unknown;
}

export interface Settings {
  /** PostgreSQL interval text, e.g. '6 hours'. */
  ttl: string;
  batchSize: number;
  concurrency: number;
  maxResponseBytes: number;
  leaseMarginMs: number;
  /** Overrides the caller's default drain budget when set. */
  drainBudgetMs: number | null;
  userAgent: string;
  flushMs: number;
  /** How long a drain stays after the queue empties, for the next nudge to poke (0: stop at once). */
  lingerMs: number;
  /** Requests one Worker drain (one invocation) sends at most: Cloudflare caps subrequests per invocation. */
  subrequestLimit: number;
  /**
   * Requests one Worker drain (one invocation) has waiting for response headers at once:
   * Cloudflare lets an invocation have 6 connections waiting and queues the rest.
   */
  fetchSlots: number;
  /**
   * Executors one Worker drain (the coordinator of a trigger) runs at once, each a request to the
   * Worker itself sending a few claimed rows (0: the coordinator sends them itself).
   */
  executors: number;
  /** Requests to one origin (scheme://host:port) out at executors at once, at most. */
  originConcurrency: number;
  /** Where requests may go: the built-in denied list plus the database's settings. */
  destinations: DestinationPolicy;
  /** The database's destination settings as text, for executors to build the same policy. */
  deniedDestinations: string | null;
  allowedDestinations: string | null;
}

export const DEFAULTS = {
  ttl: '6 hours',
  batchSize: 200,
  concurrency: 32,
  maxResponseBytes: 2_097_152,
  leaseMarginMs: 30_000,
  userAgent: 'pg-net-edge/0.1',
  flushMs: 5,
  lingerMs: 1000,
  // Workers Paid allows 10,000 subrequests per invocation (Free: 50); the rest is headroom for
  // the database connections.
  subrequestLimit: 9000,
  // 6 per invocation, less one for the database connection (whether connect() sockets count
  // against the 6 is not documented; a queued query would stall the drain).
  fetchSlots: 5,
  // 64 executors × 6 header-wait slots: ~380 requests waiting for headers at once per trigger.
  executors: 64,
  // One receiver gets at most this many requests at once from a trigger: what common servers
  // take at once by default (Apache's event MPM: 400 workers; nginx: 512 connections per worker),
  // and enough for one workerd thread's ~300 in flight locally.
  originConcurrency: 400,
} as const;

export class SettingsError extends Error {
  override name = 'SettingsError';
}

function integer(name: string, raw: string, min: number, max: number): number {
  const text = raw.trim();
  if (!/^\d+$/.test(text)) {
    throw new SettingsError(`${name} must be a whole number between ${min} and ${max}, got ${JSON.stringify(raw)}`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new SettingsError(`${name} must be a whole number between ${min} and ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function given(raw: string | undefined): raw is string {
  return raw !== undefined && raw.trim() !== '';
}

// A loose check only: PostgreSQL is the judge of interval syntax (loadSettings casts it), but
// obvious garbage and SQL-looking text are rejected here with the variable's name.
const INTERVAL_TEXT = /^[0-9a-zA-Z .:+-]+$/;

/** Pure: database config + Worker variables → settings. Throws SettingsError naming the bad variable. */
export function parseSettings(config: DatabaseConfig, vars: SettingVars): Settings {
  let ttl: string = DEFAULTS.ttl;
  if (typeof config.ttl === 'string' && config.ttl.trim() !== '') ttl = config.ttl;
  let batchSize: number = DEFAULTS.batchSize;
  if (typeof config.batch_size === 'number' && Number.isSafeInteger(config.batch_size) && config.batch_size > 0) {
    batchSize = config.batch_size;
  }

  if (given(vars.TTL)) {
    const text = vars.TTL.trim();
    if (!INTERVAL_TEXT.test(text) || !/\d/.test(text)) {
      throw new SettingsError(`TTL must be a PostgreSQL interval such as "6 hours", got ${JSON.stringify(vars.TTL)}`);
    }
    ttl = text;
  }
  if (given(vars.BATCH_SIZE)) batchSize = integer('BATCH_SIZE', vars.BATCH_SIZE, 1, 100_000);

  // A bad entry stops the drain (requests stay queued) rather than sending without the policy;
  // net._check_destination refuses new requests with the same message meanwhile.
  let destinations: DestinationPolicy;
  const deniedDestinations = typeof config.denied_destinations === 'string' ? config.denied_destinations : null;
  const allowedDestinations = typeof config.allowed_destinations === 'string' ? config.allowed_destinations : null;
  try {
    destinations = destinationPolicy(deniedDestinations, allowedDestinations);
  } catch (error) {
    if (error instanceof DestinationError) throw new SettingsError(`pg_net destination settings: ${error.message}`);
    throw error;
  }

  return {
    ttl,
    batchSize,
    concurrency: given(vars.CONCURRENCY) ? integer('CONCURRENCY', vars.CONCURRENCY, 1, 10_000) : DEFAULTS.concurrency,
    maxResponseBytes: given(vars.MAX_RESPONSE_BYTES)
      ? integer('MAX_RESPONSE_BYTES', vars.MAX_RESPONSE_BYTES, 1, 1_073_741_824)
      : DEFAULTS.maxResponseBytes,
    leaseMarginMs: given(vars.LEASE_MARGIN_MS)
      ? integer('LEASE_MARGIN_MS', vars.LEASE_MARGIN_MS, 0, 3_600_000)
      : DEFAULTS.leaseMarginMs,
    drainBudgetMs: given(vars.DRAIN_BUDGET_MS) ? integer('DRAIN_BUDGET_MS', vars.DRAIN_BUDGET_MS, 1, 900_000) : null,
    userAgent: given(vars.USER_AGENT) ? vars.USER_AGENT.trim() : DEFAULTS.userAgent,
    flushMs: given(vars.FLUSH_MS) ? integer('FLUSH_MS', vars.FLUSH_MS, 0, 60_000) : DEFAULTS.flushMs,
    lingerMs: given(vars.LINGER_MS) ? integer('LINGER_MS', vars.LINGER_MS, 0, 60_000) : DEFAULTS.lingerMs,
    subrequestLimit: given(vars.SUBREQUEST_LIMIT)
      ? integer('SUBREQUEST_LIMIT', vars.SUBREQUEST_LIMIT, 1, 10_000_000)
      : DEFAULTS.subrequestLimit,
    fetchSlots: given(vars.FETCH_SLOTS) ? integer('FETCH_SLOTS', vars.FETCH_SLOTS, 1, 10_000) : DEFAULTS.fetchSlots,
    executors: given(vars.EXECUTORS) ? integer('EXECUTORS', vars.EXECUTORS, 0, 1000) : DEFAULTS.executors,
    originConcurrency: given(vars.ORIGIN_CONCURRENCY)
      ? integer('ORIGIN_CONCURRENCY', vars.ORIGIN_CONCURRENCY, 1, 100_000)
      : DEFAULTS.originConcurrency,
    destinations,
    deniedDestinations,
    allowedDestinations,
  };
}

/** The pg_net.* settings the Worker's variables override, for the heartbeat (see net.settings). */
export function overridesOf(settings: Settings, vars: SettingVars): Record<string, { variable: string; value: string }> {
  const out: Record<string, { variable: string; value: string }> = {};
  if (given(vars.TTL)) out['pg_net.ttl'] = { variable: 'TTL', value: settings.ttl };
  if (given(vars.BATCH_SIZE)) out['pg_net.batch_size'] = { variable: 'BATCH_SIZE', value: String(settings.batchSize) };
  return out;
}

/** Reads net._config() (re-read every drain, so ALTER ROLE … SET + net.worker_restart() apply) and overlays vars. */
export async function loadSettings(sql: postgres.Sql, vars: SettingVars): Promise<Settings> {
  const rows = await sql<{ config: DatabaseConfig | null }[]>`select net._config() as config`;
  const settings = parseSettings(rows[0]?.config ?? {}, vars);
  if (given(vars.TTL)) {
    // Let PostgreSQL judge the interval now, so a bad TTL fails here with its name, not mid-sweep.
    try {
      await sql`select ${settings.ttl}::interval`;
    } catch (error) {
      throw new SettingsError(`TTL is not a valid PostgreSQL interval: ${JSON.stringify(vars.TTL)} (${errorText(error)})`);
    }
  }
  return settings;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
