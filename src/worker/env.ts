// The few Worker types this project needs, declared here because the root tsconfig uses Node's
// types rather than @cloudflare/workers-types (whose globals clash with Node's).
import type { SettingVars } from '../core/settings.ts';

export interface Env extends SettingVars {
  /** Hyperdrive binding: preferred when present. */
  HYPERDRIVE?: { connectionString: string };
  /** Secret: postgres://… used when there is no Hyperdrive binding. */
  DATABASE_URL?: string;
  /** Secret: the bearer token POST /nudge requires. */
  NUDGE_SECRET?: string;
}

export interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): void;
  /** Present in workerd (Hono's type requires it). */
  props: unknown;
}

export interface ScheduledController {
  readonly cron: string;
  readonly scheduledTime: number;
  noRetry(): void;
}
