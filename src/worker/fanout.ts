// The coordinator's side of the fan-out: rows the drain starts are handed to executors (requests
// to this Worker itself, see executor.ts) a few at a time. The coordinator keeps the database
// connection, claims and records; executors only send. How many executors run follows the
// backlog: rows waiting / rows per executor (one per header-wait slot of an invocation), capped
// by EXECUTORS. A per-origin cap (ORIGIN_CONCURRENCY) on rows out at executors keeps one
// receiver from being flooded.
import type { ClaimedRequest } from '../core/claim.ts';
import type { Outcome } from '../core/types.ts';
import { toWire, type ExecutorJob, type ExecutorLine } from './executor.ts';
import type { InvocationLimits } from './limits.ts';

export interface FanoutOptions {
  /** Executors running at once at most (EXECUTORS). */
  executors: number;
  /** Rows one executor takes: its header-wait slots, so each starts at once. */
  rowsPerExecutor: number;
  /** Rows of one origin out at executors at once at most (ORIGIN_CONCURRENCY). */
  originConcurrency: number;
  /** What every job carries besides its rows. */
  job: Omit<ExecutorJob, 'rows'>;
}

export interface FanoutStats {
  /** Executor invocations started. */
  executors: number;
  /** Rows out at executors at once, at most. */
  peak_in_flight: number;
  /** The most connections waiting for headers in any one invocation (coordinator or executor). */
  peak_header_waits: number;
}

interface Waiting {
  row: ClaimedRequest;
  origin: string;
  at: number;
  resolve: (outcome: Outcome | null) => void;
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '';
  }
}

/** Calls one executor: a loopback request with the job as its body. */
export type CallExecutor = (body: string) => Promise<Response>;

export class Fanout {
  private pending: Waiting[] = [];
  private open = 0;
  private calls = 0;
  private inFlight = 0;
  private peakInFlight = 0;
  private peakExecutorWaits = 0;
  private readonly perOrigin = new Map<string, number>();
  private scheduled = false;
  private lastError: string | undefined;

  constructor(
    private readonly call: CallExecutor,
    private readonly limits: InvocationLimits,
    private readonly opts: FanoutOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /** Sends a row through an executor: its outcome, or null if it was not sent (give it back). */
  run(row: ClaimedRequest): Promise<Outcome | null> {
    return new Promise((resolve) => {
      this.pending.push({ row, origin: originOf(row.url), at: this.now(), resolve });
      // Rows the drain starts in one turn go out together, in as few executors as fit.
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => {
          this.scheduled = false;
          this.dispatch();
        });
      }
    });
  }

  stats(): FanoutStats {
    return { executors: this.calls, peak_in_flight: this.peakInFlight, peak_header_waits: Math.max(this.limits.peak, this.peakExecutorWaits) };
  }

  error(): string | undefined {
    return this.lastError;
  }

  private dispatch(): void {
    const now = this.now();
    // Rows that waited past their lease's margin go back unsent (a later drain takes them).
    this.pending = this.pending.filter((w) => {
      if (now - w.at <= this.opts.job.maxWaitMs) return true;
      w.resolve(null);
      return false;
    });
    while (this.pending.length > 0 && this.open < this.opts.executors && this.limits.subrequestsLeft() > 0) {
      const batch = this.take();
      if (batch.length === 0) break;
      this.start(batch);
    }
  }

  /** Up to rowsPerExecutor pending rows, in order, skipping origins at their cap. */
  private take(): Waiting[] {
    const batch: Waiting[] = [];
    const rest: Waiting[] = [];
    for (const w of this.pending) {
      const out = this.perOrigin.get(w.origin) ?? 0;
      if (batch.length < this.opts.rowsPerExecutor && out < this.opts.originConcurrency) {
        this.perOrigin.set(w.origin, out + 1);
        batch.push(w);
      } else {
        rest.push(w);
      }
    }
    this.pending = rest;
    return batch;
  }

  private start(batch: Waiting[]): void {
    this.open++;
    this.calls++;
    this.inFlight += batch.length;
    if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
    const byId = new Map(batch.map((w) => [String(w.row.id), w]));
    const settle = (id: string, outcome: Outcome | null): void => {
      const w = byId.get(id);
      if (!w) return;
      byId.delete(id);
      this.inFlight--;
      const out = (this.perOrigin.get(w.origin) ?? 1) - 1;
      if (out <= 0) this.perOrigin.delete(w.origin);
      else this.perOrigin.set(w.origin, out);
      w.resolve(outcome);
    };
    const job: ExecutorJob = { ...this.opts.job, rows: batch.map((w) => toWire(w.row)) };
    this.limits
      .fetchWith((_input, init) => this.call(String(init?.body)))('https://pg-net-edge.internal/execute', { method: 'POST', body: JSON.stringify(job) })
      .then(async (response) => {
        if (!response.ok || !response.body) throw new Error(`executor answered ${response.status}: ${await response.text()}`);
        await this.read(response.body, settle);
      })
      .catch((error: unknown) => {
        this.lastError = `executor: ${error instanceof Error ? error.message : String(error)}`;
      })
      .finally(() => {
        // Rows the executor never answered for are given back: at-least-once.
        for (const id of [...byId.keys()]) settle(id, null);
        this.open--;
        this.dispatch();
      });
  }

  private async read(body: ReadableStream<Uint8Array>, settle: (id: string, outcome: Outcome | null) => void): Promise<void> {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += value;
      let end = rest.indexOf('\n');
      let from = 0;
      while (end >= 0) {
        this.line(JSON.parse(rest.slice(from, end)) as ExecutorLine, settle);
        from = end + 1;
        end = rest.indexOf('\n', from);
      }
      rest = rest.slice(from);
    }
  }

  private line(line: ExecutorLine, settle: (id: string, outcome: Outcome | null) => void): void {
    if ('outcome' in line) settle(String(line.outcome.id), line.outcome);
    else if ('unsent' in line) settle(line.unsent, null);
    else this.peakExecutorWaits = Math.max(this.peakExecutorWaits, line.done.peak_header_waits);
  }
}
