// GET /health without handing the database to anyone who can reach the Worker: callers share
// one cached probe per database (fresh for 15 s after a success, 5 s after a failure; one probe
// in flight at a time), so a flood of requests makes at most a connection or two. An
// unauthenticated caller learns only {ok, database, checked_at}: no role names, no error text
// (PostgreSQL's "too many connections for role …" names the role). The bearer secret (the
// nudge secret) unlocks the details: queue depth, oldest age, last drain, the (redacted) error.

export const FRESH_OK_MS = 15_000;
export const FRESH_FAILED_MS = 5_000;
/**
 * A probe in flight longer than this is abandoned and a new one started: in Workers the probe's
 * socket belongs to the request that started it, and if that request is cancelled the probe may
 * never settle (it has its own shorter timeout otherwise).
 */
export const STUCK_PROBE_MS = 20_000;

export type DatabaseState = 'ok' | 'unreachable' | 'not installed' | 'not configured';

/** What one probe found. */
export interface Probe {
  database: DatabaseState;
  /** net._health()'s fields (queue_depth, in_flight, …) when the database answered. */
  details: Record<string, unknown>;
  /** Why it failed (already redacted), for authenticated callers only. */
  error?: string;
}

export interface Snapshot extends Probe {
  checkedAt: number;
}

/**
 * One database's cached status. `now` is injected so the freshness rules are tested without
 * waiting; the probe is whatever asks the database (see index.ts).
 */
export class HealthCache {
  private last: Snapshot | null = null;
  private pending: Promise<Snapshot> | null = null;
  private pendingAt = 0;

  constructor(
    private readonly probe: () => Promise<Probe>,
    private readonly now: () => number = Date.now,
  ) {}

  /** The cached snapshot while fresh, else the probe in flight, else a new probe. */
  get(): Promise<Snapshot> {
    const last = this.last;
    if (last !== null) {
      const age = this.now() - last.checkedAt;
      const fresh = last.database === 'ok' ? FRESH_OK_MS : FRESH_FAILED_MS;
      if (age >= 0 && age < fresh) return Promise.resolve(last);
    }
    if (this.pending === null || this.now() - this.pendingAt >= STUCK_PROBE_MS) {
      this.pendingAt = this.now();
      const pending: Promise<Snapshot> = this.probe()
        .catch((error: unknown): Probe => ({ database: 'unreachable', details: {}, error: String(error) }))
        .then((probe) => {
          const snapshot: Snapshot = { ...probe, checkedAt: this.now() };
          this.last = snapshot;
          return snapshot;
        })
        .finally(() => {
          if (this.pending === pending) this.pending = null;
        });
      this.pending = pending;
    }
    return this.pending;
  }
}

/** Caches per database URL (a Worker has one; tests switch). A handful at most. */
const caches = new Map<string, HealthCache>();
const MAX_CACHES = 8;

export function healthCache(key: string, probe: () => Promise<Probe>): HealthCache {
  let cache = caches.get(key);
  if (!cache) {
    if (caches.size >= MAX_CACHES) caches.delete(caches.keys().next().value!);
    cache = new HealthCache(probe);
    caches.set(key, cache);
  }
  return cache;
}

const DETAIL_FIELDS = ['queue_depth', 'in_flight', 'oldest_queued_age_ms', 'last_seen', 'last_drain', 'schema_version'] as const;

/** The JSON body: the short form for anyone, the details for a caller with the secret. */
export function healthBody(snapshot: Snapshot, authorized: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = {
    ok: snapshot.database === 'ok',
    database: snapshot.database,
    checked_at: new Date(snapshot.checkedAt).toISOString(),
  };
  if (!authorized) return body;
  for (const field of DETAIL_FIELDS) body[field] = snapshot.details[field] ?? null;
  if (snapshot.error !== undefined) body.error = snapshot.error;
  return body;
}
