// What Cloudflare counts per invocation, counted here in every environment (workerd, wrangler dev
// and Miniflare enforce none of it): connections waiting for response headers — every fetch,
// every request to this Worker itself, every connect() socket (the database, TCP probes) — at
// most 6, and subrequests up to the plan's limit. A 7th connection on Cloudflare would wait in a
// queue with its timeout running; here it waits before it starts (FIFO), so a local figure is one
// the deployed Worker can reach. One accountant per invocation; Worker-only policy, not core.

/** Cloudflare's "simultaneous open connections" per invocation (waiting for response headers). */
export const HEADER_WAIT_LIMIT = 6;

export class SubrequestLimitError extends Error {
  override name = 'SubrequestLimitError';
}

export interface LimitsOptions {
  /** Subrequests this invocation may make (SUBREQUEST_LIMIT). */
  subrequestLimit: number;
  /** Connections waiting for headers at once; default HEADER_WAIT_LIMIT (never more). */
  headerSlots?: number;
}

export class InvocationLimits {
  readonly headerSlots: number;
  /** Settable once the invocation has read its settings. */
  subrequestLimit: number;
  /** Connections waiting for headers (or sockets open) now, and the most at once. */
  waiting = 0;
  peak = 0;
  subrequests = 0;
  private readonly queue: (() => void)[] = [];

  constructor(options: LimitsOptions) {
    this.headerSlots = Math.max(1, Math.min(HEADER_WAIT_LIMIT, options.headerSlots ?? HEADER_WAIT_LIMIT));
    this.subrequestLimit = options.subrequestLimit;
  }

  /** Slots free now (none while others queue for one). */
  get free(): number {
    return this.queue.length > 0 ? 0 : this.headerSlots - this.waiting;
  }

  subrequestsLeft(): number {
    return this.subrequestLimit - this.subrequests;
  }

  /** Counts one subrequest; throws once the invocation's allowance is spent (nothing is sent). */
  spend(): void {
    if (this.subrequests >= this.subrequestLimit) {
      throw new SubrequestLimitError(`subrequest limit reached (${this.subrequestLimit} per invocation, SUBREQUEST_LIMIT)`);
    }
    this.subrequests++;
  }

  /** A slot now, or null when all are taken. The release function is idempotent. */
  tryAcquire(): (() => void) | null {
    if (this.free <= 0) return null;
    return this.take();
  }

  /** A slot, waiting in line (FIFO) for one. */
  acquire(): Promise<() => void> {
    const now = this.tryAcquire();
    if (now) return Promise.resolve(now);
    return new Promise((resolve) => this.queue.push(() => resolve(this.take())));
  }

  private take(): () => void {
    this.waiting++;
    if (this.waiting > this.peak) this.peak = this.waiting;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.waiting--;
      // Hand the slot to the next in line synchronously, so nothing can jump the queue.
      const next = this.queue.shift();
      next?.();
    };
  }

  /**
   * fetch through the accountant: one subrequest, one slot from the call until the response
   * headers arrive (or it fails). `slot` is one already held (see Executor) and is released the same way.
   */
  fetchWith(fetchFn: typeof fetch, slot?: () => void): typeof fetch {
    let given = slot;
    return async (input, init) => {
      const release = given ?? (await this.acquire());
      given = undefined;
      try {
        this.spend();
        return await fetchFn(input, init);
      } finally {
        release();
      }
    };
  }

  /** A socket's slot, held until the socket closes (whether sockets free theirs earlier is not documented). */
  async socketSlot(): Promise<() => void> {
    const release = await this.acquire();
    try {
      this.spend();
    } catch (error) {
      release();
      throw error;
    }
    return release;
  }
}
