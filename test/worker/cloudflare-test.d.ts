// The parts of @cloudflare/vitest-pool-workers' `cloudflare:test` module the worker tests use.
// Declared here because its own .d.ts needs @cloudflare/workers-types globals, which clash with
// the Node types the root tsconfig uses.
declare module 'cloudflare:test' {
  interface TestExecutionContext {
    waitUntil(promise: Promise<unknown>): void;
    passThroughOnException(): void;
    props: unknown;
  }
  interface TestScheduledController {
    readonly cron: string;
    readonly scheduledTime: number;
    noRetry(): void;
  }
  /** Bindings and [vars] from wrangler.toml. */
  export const env: { readonly [name: string]: string | undefined };
  export function createExecutionContext(): TestExecutionContext;
  export function waitOnExecutionContext(ctx: TestExecutionContext): Promise<void>;
  export function createScheduledController(options?: {
    scheduledTime?: number | Date;
    cron?: string;
  }): TestScheduledController;
  /** Runs the callback inside the Durable Object `stub` points to, with its instance and state. */
  export function runInDurableObject<O, R>(
    stub: unknown,
    callback: (instance: O, state: import('cloudflare:workers').DurableObjectState) => R | Promise<R>,
  ): Promise<R>;
}
