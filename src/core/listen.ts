// The LISTEN session both wakers hold: the Node relay (src/node/relay.ts) and the Listener
// Durable Object (src/worker/listener.ts). One definition of how it is opened, what it LISTENs
// on and how it looks for net.wait_until_running(), so the two cannot drift apart. What differs
// by runtime (the socket, the reconnect loop, how a drain is woken) stays with each of them.
import type postgres from 'postgres';
import { CHANNEL, WAITING_APPLICATION_NAME } from './signals.ts';

/** How long a check of an idle session may take before the session is taken for dead. */
export const PING_TIMEOUT_MS = 10_000;

export interface ListenHooks {
  /** Shown in pg_stat_activity, so an operator can tell the relay from the Listener. */
  applicationName: string;
  /** A notification on CHANNEL arrived (others are ignored). */
  onNotify(): void;
  /** The connection closed, for whatever reason. */
  onClose(): void;
}

/** postgres.js options for a LISTEN session: one connection, kept open for as long as it lives. */
export function listenOptions(hooks: ListenHooks) {
  return {
    max: 1,
    max_lifetime: null, // idle_timeout defaults to none: the session must stay open
    connect_timeout: 10,
    fetch_types: false,
    onnotice: () => {},
    // Not in postgres.js's typings, but read by its connection (NotificationResponse).
    onnotify: (channel: string) => {
      if (channel === CHANNEL) hooks.onNotify();
    },
    onclose: () => hooks.onClose(),
    connection: { application_name: hooks.applicationName },
  };
}

/** Starts LISTENing on CHANNEL; rejects when the session cannot be opened. */
export async function listen(sql: postgres.Sql): Promise<void> {
  await sql.unsafe(`listen "${CHANNEL}"`);
}

/** Whether a session waits in net.wait_until_running() (application_name is visible to every role). */
export function waiterCheck(sql: postgres.Sql) {
  return sql<{ waiting: boolean }[]>`
    select exists (select from pg_catalog.pg_stat_activity
                   where datname = current_database()
                     and application_name = ${WAITING_APPLICATION_NAME}) as waiting`;
}

/**
 * `query`, or a "ping timed out" rejection after PING_TIMEOUT_MS: TCP keepalive alone can take
 * minutes to notice a half-open connection, a bounded query notices it at once.
 */
export async function pingWithin<T>(query: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      query,
      new Promise<never>((_, fail) => (timer = setTimeout(() => fail(new Error('ping timed out')), PING_TIMEOUT_MS))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
