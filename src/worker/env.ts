// The few Worker types this project needs, declared here because the root tsconfig uses Node's
// types rather than @cloudflare/workers-types (whose globals clash with Node's).
import type { SettingVars } from '../core/settings.ts';
import type { ListenerStatus } from './listener.ts';

export interface Env extends SettingVars {
  /** Hyperdrive binding: preferred when present. */
  HYPERDRIVE?: { connectionString: string };
  /** Secret: postgres://… used when there is no Hyperdrive binding. */
  DATABASE_URL?: string;
  /** Secret: the bearer token POST /nudge requires. */
  NUDGE_SECRET?: string;
  /** Secret: a direct postgres://… for the Listener's LISTEN session (else DATABASE_URL). */
  LISTEN_DATABASE_URL?: string;
  /** The Listener Durable Object's namespace (wrangler.toml [[durable_objects.bindings]]). */
  LISTENER?: {
    idFromName(name: string): unknown;
    get(id: unknown): { ping(): Promise<ListenerStatus> };
  };
}

export interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): void;
  /** Present in workerd (Hono's type requires it); set by the caller of a loopback binding. */
  props: unknown;
  /**
   * Loopback bindings to this Worker's own exports (on by default since compatibility date
   * 2025-11-17). Calling `default({ props })` gives a binding whose requests carry those props,
   * which a request from outside can't forge.
   */
  exports?: {
    default?: (options: { props: unknown }) => { fetch(input: string, init?: RequestInit): Promise<Response> };
  };
}

export interface ScheduledController {
  readonly cron: string;
  readonly scheduledTime: number;
  noRetry(): void;
}
