// The part of workerd's `cloudflare:workers` the Listener Durable Object uses (see
// src/worker/listener.ts). Declared here for the same reason as cloudflare-sockets.d.ts: the root
// tsconfig uses Node's types, and @cloudflare/workers-types' globals clash with them.
declare module 'cloudflare:workers' {
  export interface DurableObjectStorage {
    getAlarm(): Promise<number | null>;
    setAlarm(scheduledTime: number | Date): Promise<void>;
    deleteAlarm(): Promise<void>;
  }
  export interface DurableObjectState {
    readonly storage: DurableObjectStorage;
    waitUntil(promise: Promise<unknown>): void;
    /** Loopback bindings to this Worker's exports (compatibility date 2025-11-17 or later). */
    readonly exports?: {
      default?: (options: { props: unknown }) => { fetch(input: string, init?: RequestInit): Promise<Response> };
    };
  }
  export abstract class DurableObject<E = unknown> {
    protected readonly ctx: DurableObjectState;
    protected readonly env: E;
    constructor(ctx: DurableObjectState, env: E);
  }
}
