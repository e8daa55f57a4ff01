// The nudge relay (SPEC §4): LISTEN on pg_net_edge_wake and POST the Worker's /nudge, so a
// committed request is sent in milliseconds instead of at the next cron tick.
//
// Why not postgres.js's sql.listen(): on a lost connection it re-issues LISTEN once, at once, and
// if that attempt fails (database still restarting) the listener is silently dropped
// (`.catch(() => {})` in postgres/src/index.js) — the relay would go deaf forever. So the relay
// owns its session: one single-connection client per attempt, `onnotify`/`onclose` hooks, and its
// own backoff loop (250 ms doubling to 10 s) that keeps trying until stop().
import postgres from 'postgres';
import { listen, listenOptions, pingWithin, waiterCheck } from '../core/listen.ts';
import { redactUrl } from '../core/redact.ts';
import { CHANNEL, WAITING_APPLICATION_NAME } from '../core/signals.ts';
import { messageOf } from '../core/errors.ts';

export { CHANNEL, WAITING_APPLICATION_NAME };

export interface RelayOptions {
  databaseUrl: string;
  nudgeUrl: string;
  secret: string;
  log?: (line: string) => void;
  /** First retry delay; doubles up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** How often the idle session is pinged, to notice a half-open connection. */
  pingMs?: number;
  /**
   * How often pg_stat_activity is checked for a session in net.wait_until_running() (default
   * 1000 ms; 0 = never): one is found, the Worker is nudged. The check doubles as the ping.
   */
  pollMs?: number;
}

export interface RelayStats {
  listening: boolean;
  /** Successful LISTENs, the first one included. */
  listens: number;
  notifications: number;
  nudgesSent: number;
  nudgesFailed: number;
  /** Checks that found a session waiting in net.wait_until_running(). */
  waitersSeen: number;
  lastError: string | null;
}

export interface Relay {
  stop(): Promise<void>;
  stats: RelayStats;
  /** Resolves once the first LISTEN is in place (it never rejects: failures are retried). */
  ready: Promise<void>;
}

export function startRelay(options: RelayOptions): Relay {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const minBackoff = options.minBackoffMs ?? 250;
  const maxBackoff = options.maxBackoffMs ?? 10_000;
  const pingMs = options.pingMs ?? 30_000;
  const pollMs = options.pollMs ?? 1000;
  const stats: RelayStats = {
    listening: false,
    listens: 0,
    notifications: 0,
    nudgesSent: 0,
    nudgesFailed: 0,
    waitersSeen: 0,
    lastError: null,
  };
  // Errors can quote what they failed on; keep the secret out of every log line. (Database
  // errors never quote the password, and scrubbing it would mangle lines when it is "postgres".)
  const scrub = (text: string) =>
    options.secret.length >= 4 ? text.split(options.secret).join('***') : text;
  const say = (line: string) => log(`relay: ${scrub(line)}`);

  const stopping = new AbortController();
  const sleep = (ms: number) =>
    new Promise<void>((done) => {
      if (stopping.signal.aborted) return done();
      const timer = setTimeout(finish, ms);
      function finish() {
        clearTimeout(timer);
        stopping.signal.removeEventListener('abort', finish);
        done();
      }
      stopping.signal.addEventListener('abort', finish, { once: true });
    });

  // ---- nudging: at most one POST in flight and one pending ----
  let pending = false;
  let sending: Promise<void> | null = null;

  function nudge(): void {
    pending = true;
    if (!sending) sending = sendLoop().finally(() => (sending = null));
  }

  async function sendLoop(): Promise<void> {
    while (pending && !stopping.signal.aborted) await postWithRetry();
  }

  async function postWithRetry(): Promise<void> {
    let delay = minBackoff;
    for (;;) {
      // Any notification that arrived before this attempt starts is covered by it: the drain it
      // triggers sees every transaction committed so far.
      pending = false;
      let retry = false;
      try {
        const response = await fetch(options.nudgeUrl, {
          method: 'POST',
          headers: { authorization: `Bearer ${options.secret}` },
          signal: AbortSignal.any([stopping.signal, AbortSignal.timeout(10_000)]),
        });
        await response.body?.cancel();
        if (response.ok) {
          stats.nudgesSent++;
          return;
        }
        stats.nudgesFailed++;
        if (response.status === 401 || response.status === 403) {
          stats.lastError = `nudge rejected with ${response.status}`;
          say(
            `nudge rejected with ${response.status}: secret mismatch — the relay's secret must equal the Worker's NUDGE_SECRET (the cron still drains every minute)`,
          );
          return; // retrying cannot fix a wrong secret
        }
        stats.lastError = `nudge answered ${response.status}`;
        if (response.status < 500 && response.status !== 429) {
          say(`nudge answered ${response.status} ${response.statusText}; is ${redactUrl(options.nudgeUrl)} the Worker's /nudge?`);
          return;
        }
        retry = true;
      } catch (error) {
        if (stopping.signal.aborted) return;
        stats.nudgesFailed++;
        stats.lastError = messageOf(error);
        retry = true;
      }
      if (!retry || stopping.signal.aborted) return;
      say(`nudge failed (${stats.lastError}); retrying in ${delay} ms`);
      await sleep(delay);
      if (stopping.signal.aborted) return;
      delay = Math.min(delay * 2, maxBackoff);
    }
  }

  // ---- listening: one session at a time, reconnected with backoff ----
  let session: postgres.Sql | null = null;
  let lost: (() => void) | null = null;
  let markReady: () => void = () => {};
  const ready = new Promise<void>((done) => (markReady = done));

  async function listenLoop(): Promise<void> {
    let delay = minBackoff;
    while (!stopping.signal.aborted) {
      // Per attempt: a late onclose from a previous, already-abandoned client must not end this one.
      let markLost: () => void = () => {};
      const closed = new Promise<void>((done) => (markLost = done));
      lost = markLost;
      const clientOptions = listenOptions({
        applicationName: 'pg-net-edge relay',
        onNotify: () => {
          stats.notifications++;
          nudge();
        },
        onClose: () => markLost(),
      });
      const sql = postgres(options.databaseUrl, clientOptions);
      session = sql;
      try {
        await listen(sql);
        stats.listening = true;
        stats.listens++;
        say(stats.listens === 1 ? `listening on ${CHANNEL}` : `reconnected; listening on ${CHANNEL} again`);
        delay = minBackoff;
        markReady();
        // Notifications sent while we were not listening are gone: nudge once to cover them.
        nudge();
        await Promise.race([closed, pingUntilBroken(sql)]);
        if (stopping.signal.aborted) break;
        stats.listening = false;
        stats.lastError = 'database connection lost';
        say(`database connection lost; reconnecting in ${delay} ms`);
      } catch (error) {
        if (stopping.signal.aborted) break;
        stats.listening = false;
        stats.lastError = messageOf(error);
        say(`cannot LISTEN (${messageOf(error)}); retrying in ${delay} ms`);
      }
      lost = null;
      session = null;
      void sql.end({ timeout: 0 }).catch(() => {});
      await sleep(delay);
      delay = Math.min(delay * 2, maxBackoff);
    }
  }

  // A cheap ping notices a dead peer (see pingWithin). With pollMs the ping is the look for
  // sessions waiting in net.wait_until_running() (see WAITING_APPLICATION_NAME), every pollMs.
  async function pingUntilBroken(sql: postgres.Sql): Promise<void> {
    const interval = pollMs > 0 ? Math.min(pollMs, pingMs) : pingMs;
    for (;;) {
      await sleep(interval);
      if (stopping.signal.aborted) return;
      try {
        const check = pollMs > 0 ? waiterCheck(sql) : sql<{ waiting: boolean }[]>`select false as waiting`;
        const rows = await pingWithin(check);
        if (rows[0]?.waiting) {
          stats.waitersSeen++;
          nudge();
        }
      } catch {
        return;
      }
    }
  }

  const looping = listenLoop().catch((error: unknown) => say(`stopped unexpectedly: ${messageOf(error)}`));

  return {
    stats,
    ready,
    async stop() {
      stopping.abort();
      lost?.();
      markReady();
      const current = session;
      await Promise.allSettled([looping, sending ?? Promise.resolve(), current?.end({ timeout: 1 })]);
      stats.listening = false;
    },
  };
}
