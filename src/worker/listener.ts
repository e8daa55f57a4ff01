// The Listener Durable Object: the relay's job (LISTEN, then wake a drain) done on Cloudflare, so
// nothing has to run outside it. One object (named "listener") holds one direct PostgreSQL
// session LISTENing on pg_net_edge_wake; each notification wakes a drain through this Worker's
// own loopback binding (a fresh invocation, as POST /nudge starts). An alarm every 30 s checks
// the session and re-establishes it; the every-minute cron pings the object so it (re)starts.
// Why this shape (and not draining inside the object) is in docs/design.md ("The Listener").
import { DurableObject } from 'cloudflare:workers';
import postgres from 'postgres';
import { listen, listenOptions, pingWithin, waiterCheck } from '../core/listen.ts';
import { redactUrlsIn } from '../core/redact.ts';
import type { Env } from './env.ts';
import { openSocket } from './socket.ts';
import { messageOf } from '../core/errors.ts';

/** The one object every cron pings. */
export const LISTENER_NAME = 'listener';
/** Alarm period: a dropped session is back within this, even if no retry timer survived. */
export const ALARM_MS = 30_000;
const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 10_000;
/**
 * How often the session looks for a session waiting in net.wait_until_running(): that function
 * may run inside a transaction whose NOTIFY is only delivered at its commit, so it marks itself
 * with WAITING_APPLICATION_NAME (src/core/signals.ts) instead, as the Node relay looks for it too.
 */
export const WAITER_POLL_MS = 1_000;

const NOT_CONFIGURED =
  'no direct database connection for LISTEN: set LISTEN_DATABASE_URL (or DATABASE_URL); Hyperdrive cannot carry LISTEN';

export interface ListenerStatus {
  configured: boolean;
  listening: boolean;
  /** Successful LISTENs, the first one included (more than one: the session was re-established). */
  listens: number;
  notifications: number;
  /** Drains woken (loopback requests answered 2xx) and failed wakes. */
  wakes: number;
  wakesFailed: number;
  lastError: string | null;
}

/** What the Worker's fetch handler receives from a wake (props only a loopback binding can set). */
export interface ListenerWake {
  /** The object's string variables and secrets: the drain runs with exactly its configuration. */
  vars: Record<string, string>;
}

export function listenerWake(props: unknown): ListenerWake | null {
  if (typeof props !== 'object' || props === null) return null;
  const wake = (props as { listenerWake?: unknown }).listenerWake;
  if (typeof wake !== 'object' || wake === null) return null;
  const vars = (wake as { vars?: unknown }).vars;
  if (typeof vars !== 'object' || vars === null) return null;
  return { vars: vars as Record<string, string> };
}


function stringVars(env: object): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (typeof value === 'string') vars[name] = value;
  return vars;
}

export class Listener extends DurableObject<Env> {
  private readonly stats: ListenerStatus = {
    configured: false,
    listening: false,
    listens: 0,
    notifications: 0,
    wakes: 0,
    wakesFailed: 0,
    lastError: null,
  };
  /** The session LISTENing now; a replaced or lost one is never used again. */
  private session: postgres.Sql | null = null;
  private connecting: Promise<void> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private backoffMs = MIN_BACKOFF_MS;
  // Waking: at most one loopback request in flight and one pending (as the relay's nudges).
  private pending = false;
  private waking: Promise<void> | null = null;
  private waiterTimer: ReturnType<typeof setTimeout> | null = null;

  private databaseUrl(): string | null {
    return this.env.LISTEN_DATABASE_URL || this.env.DATABASE_URL || null;
  }

  /** The cron's call: make sure the session is up and the alarm is set; answers the state. */
  async ping(): Promise<ListenerStatus> {
    await this.check();
    if (this.stats.configured && (await this.ctx.storage.getAlarm()) === null) {
      await this.ctx.storage.setAlarm(Date.now() + ALARM_MS);
    }
    return this.status();
  }

  async alarm(): Promise<void> {
    await this.check();
    // Not configured: let the object go (the next cron ping asks again).
    if (this.stats.configured) await this.ctx.storage.setAlarm(Date.now() + ALARM_MS);
  }

  status(): ListenerStatus {
    return { ...this.stats };
  }

  /** Checks the session with a query (a half-open TCP connection can look alive for minutes) and reconnects if needed. */
  private async check(): Promise<void> {
    const url = this.databaseUrl();
    this.stats.configured = url !== null;
    if (!url) {
      this.stats.lastError = NOT_CONFIGURED;
      return;
    }
    const session = this.session;
    if (session) {
      try {
        await pingWithin(session`select 1`);
        return;
      } catch (error) {
        this.lost(session, `session check failed: ${messageOf(error)}`);
      }
    }
    await this.connect(url);
  }

  private connect(url: string): Promise<void> {
    this.connecting ??= this.open(url).finally(() => (this.connecting = null));
    return this.connecting;
  }

  private async open(url: string): Promise<void> {
    if (this.session) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    let sql: postgres.Sql | null = null;
    const options = {
      ...listenOptions({
        applicationName: 'pg-net-edge listener',
        onNotify: () => {
          if (this.session !== sql) return;
          this.stats.notifications++;
          this.wake();
        },
        onClose: () => {
          if (sql) this.lost(sql, 'database connection lost');
        },
      }),
      socket: openSocket,
    };
    sql = postgres(url, options);
    try {
      await listen(sql);
    } catch (error) {
      // Never sql.end() in workerd (an unhandled "Stream was cancelled"); the runtime closes it.
      this.stats.lastError = redactUrlsIn(messageOf(error));
      this.log({ event: 'listener', listening: false, error: this.stats.lastError, retry_ms: this.backoffMs });
      this.retryLater();
      return;
    }
    this.session = sql;
    this.stats.listening = true;
    this.stats.listens++;
    this.stats.lastError = null;
    this.backoffMs = MIN_BACKOFF_MS;
    this.log({ event: 'listener', listening: true, listens: this.stats.listens });
    // Notifications sent while nobody listened are gone: one wake covers whatever they were for.
    this.wake();
    this.pollWaiters(sql);
  }

  /** While `sql` is the session: every WAITER_POLL_MS, wake a drain if a session waits in wait_until_running(). */
  private pollWaiters(sql: postgres.Sql): void {
    if (this.waiterTimer) clearTimeout(this.waiterTimer);
    this.waiterTimer = setTimeout(async () => {
      this.waiterTimer = null;
      if (this.session !== sql) return;
      try {
        const [row] = await waiterCheck(sql);
        if (row?.waiting) this.wake();
      } catch {
        // A failed look is the session failing: onclose or the alarm's check deals with it.
      }
      if (this.session === sql) this.pollWaiters(sql);
    }, WAITER_POLL_MS);
  }

  private lost(sql: postgres.Sql, reason: string): void {
    if (this.session !== sql) return;
    this.session = null;
    this.stats.listening = false;
    this.stats.lastError = reason;
    this.log({ event: 'listener', listening: false, error: reason, retry_ms: this.backoffMs });
    this.retryLater();
  }

  /** Retries with backoff (250 ms doubling to 10 s); the alarm is the safety net if the object restarts. */
  private retryLater(): void {
    if (this.retryTimer) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      const url = this.databaseUrl();
      if (url) void this.connect(url);
    }, delay);
  }

  private wake(): void {
    this.pending = true;
    this.waking ??= this.wakeLoop().finally(() => (this.waking = null));
  }

  private async wakeLoop(): Promise<void> {
    while (this.pending) {
      // Every notification so far is covered by this wake: its drain sees every commit before it.
      this.pending = false;
      await this.sendWake();
    }
  }

  private async sendWake(): Promise<void> {
    const loopback = this.ctx.exports?.default;
    if (!loopback) {
      this.stats.wakesFailed++;
      this.stats.lastError = 'ctx.exports is unavailable (compatibility date before 2025-11-17?): drains come from the cron only';
      return;
    }
    try {
      const response = await loopback({ props: { listenerWake: { vars: stringVars(this.env) } satisfies ListenerWake } }).fetch(
        'https://pg-net-edge.internal/listener-wake',
        { method: 'POST' },
      );
      const text = await response.text();
      if (response.ok) {
        this.stats.wakes++;
        return;
      }
      this.stats.wakesFailed++;
      this.stats.lastError = `wake answered ${response.status}: ${text.slice(0, 200)}`;
    } catch (error) {
      this.stats.wakesFailed++;
      this.stats.lastError = `wake failed: ${messageOf(error)}`;
    }
    this.log({ event: 'listener', wake: 'failed', error: this.stats.lastError });
  }

  private log(line: Record<string, unknown>): void {
    console.log(JSON.stringify(line));
  }
}
