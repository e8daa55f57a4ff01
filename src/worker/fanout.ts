// The coordinator's side of the fan-out. The coordinator keeps the database connection, claims
// and records; rows the drain starts go to executors (requests to this Worker itself, see
// executor.ts), which only send. An executor is a lane: one request whose body streams rows in
// (NDJSON, as they are handed to it) and whose response streams outcomes back, so one call
// carries many rows and its header-wait slot here frees as soon as it answers. Lanes follow the
// backlog: a new one opens only when every open lane holds rowsPerExecutor rows (one per
// header-wait slot of its invocation), up to EXECUTORS; an idle lane is closed. A per-origin cap
// (ORIGIN_CONCURRENCY) on rows out at executors keeps one receiver from being flooded.
import type { ClaimedRequest } from '../core/claim.ts';
import type { Outcome } from '../core/types.ts';
import { toWire, type ExecutorJob, type ExecutorLine } from './executor.ts';
import type { InvocationLimits } from './limits.ts';
import { lines } from './ndjson.ts';
import { holdBytes } from '../core/memory.ts';

export interface FanoutOptions {
  /** Lanes (executor invocations) open at once at most (EXECUTORS). */
  executors: number;
  /** Rows one lane holds at once: its invocation's header-wait slots, so each starts at once. */
  rowsPerExecutor: number;
  /** Rows of one origin out at executors at once at most (ORIGIN_CONCURRENCY). */
  originConcurrency: number;
  /** What every executor is told first. */
  job: Omit<ExecutorJob, 'rows'>;
  /** A lane with no rows for this long is closed. Default 100 ms. */
  idleMs?: number;
  /**
   * Sends a row from the coordinator itself, through a header-wait slot it holds (see dispatch):
   * its own free slots are capacity too, and a row sent here costs no encoding on either side.
   */
  local?: (row: ClaimedRequest, slot: () => void) => Promise<Outcome>;
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

interface Lane {
  writer: WritableStreamDefaultWriter<Uint8Array>;
  rows: Map<string, Waiting>;
  closed: boolean;
  idleSince: number;
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '';
  }
}

/** Calls one executor: a loopback request whose body is the stream of job lines. */
export type CallExecutor = (body: ReadableStream<Uint8Array>) => Promise<Response>;

const encoder = new TextEncoder();

export class Fanout {
  private pending: Waiting[] = [];
  private readonly lanes = new Set<Lane>();
  private calls = 0;
  private inFlight = 0;
  private peakInFlight = 0;
  private peakExecutorWaits = 0;
  private readonly perOrigin = new Map<string, number>();
  private scheduled = false;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  private lastError: string | undefined;
  private readonly idleMs: number;

  constructor(
    private readonly call: CallExecutor,
    private readonly limits: InvocationLimits,
    private readonly opts: FanoutOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.idleMs = opts.idleMs ?? 100;
  }

  /** Sends a row through an executor: its outcome, or null if it was not sent (give it back). */
  run(row: ClaimedRequest): Promise<Outcome | null> {
    return new Promise((resolve) => {
      this.pending.push({ row, origin: originOf(row.url), at: this.now(), resolve });
      // Rows the drain starts in one turn go out together: one write per lane.
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => {
          this.scheduled = false;
          this.dispatch();
        });
      }
    });
  }

  /** Ends every lane (the drain is over): executors finish what they hold and stop. */
  close(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    for (const lane of this.lanes) this.endLane(lane);
    for (const w of this.pending.splice(0)) w.resolve(null);
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
    if (this.pending.length > 0 && now - this.pending[0]!.at > this.opts.job.maxWaitMs) {
      this.pending = this.pending.filter((w) => {
        if (now - w.at <= this.opts.job.maxWaitMs) return true;
        w.resolve(null);
        return false;
      });
    }
    if (this.pending.length === 0) return;
    this.sendLocally();
    if (this.pending.length === 0) return;
    const batches = new Map<Lane, Waiting[]>();
    const rest: Waiting[] = [];
    // Fill open lanes first; open another only when all are full.
    const open = [...this.lanes].filter((l) => !l.closed && l.rows.size < this.opts.rowsPerExecutor);
    for (const w of this.pending) {
      const out = this.perOrigin.get(w.origin) ?? 0;
      if (out >= this.opts.originConcurrency) {
        rest.push(w);
        continue;
      }
      let lane = open[0];
      if (!lane) {
        if (this.lanes.size >= this.opts.executors || this.limits.subrequestsLeft() <= 0) {
          rest.push(w);
          continue;
        }
        lane = this.openLane();
        open.push(lane);
      }
      this.perOrigin.set(w.origin, out + 1);
      lane.rows.set(String(w.row.id), w);
      this.inFlight++;
      const batch = batches.get(lane) ?? [];
      batch.push(w);
      batches.set(lane, batch);
      if (lane.rows.size >= this.opts.rowsPerExecutor) open.shift();
    }
    this.pending = rest;
    if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
    for (const [lane, batch] of batches) {
      const text = batch.map((w) => `${JSON.stringify(toWire(w.row))}\n`).join('');
      lane.writer.write(encoder.encode(text)).catch(() => {});
    }
  }

  /**
   * Rows the coordinator's own free header-wait slots can take, less one kept for opening lanes
   * (the database sockets hold theirs), and never the last of its subrequests (lanes need them).
   */
  private sendLocally(): void {
    const local = this.opts.local;
    if (!local) return;
    let i = 0;
    while (i < this.pending.length && this.limits.free > 1 && this.limits.subrequestsLeft() > this.opts.executors + 10) {
      const w = this.pending[i]!;
      const out = this.perOrigin.get(w.origin) ?? 0;
      if (out >= this.opts.originConcurrency) {
        i++;
        continue;
      }
      const slot = this.limits.tryAcquire();
      if (!slot) break;
      this.pending.splice(i, 1);
      this.perOrigin.set(w.origin, out + 1);
      this.inFlight++;
      const done = (outcome: Outcome | null): void => {
        this.inFlight--;
        this.release(w.origin);
        w.resolve(outcome);
      };
      local(w.row, slot).then(done, () => done(null));
    }
    if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
  }

  private release(origin: string): void {
    const out = (this.perOrigin.get(origin) ?? 1) - 1;
    if (out <= 0) this.perOrigin.delete(origin);
    else this.perOrigin.set(origin, out);
  }

  private openLane(): Lane {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const lane: Lane = { writer: writable.getWriter(), rows: new Map(), closed: false, idleSince: 0 };
    this.lanes.add(lane);
    this.calls++;
    lane.writer.write(encoder.encode(`${JSON.stringify(this.opts.job)}\n`)).catch(() => {});
    this.limits
      .fetchWith((_input, init) => this.call(init!.body as ReadableStream<Uint8Array>))('https://pg-net-edge.internal/execute', { method: 'POST', body: readable })
      .then(async (response) => {
        if (!response.ok || !response.body) throw new Error(`executor answered ${response.status}: ${await response.text()}`);
        await this.read(response.body, lane);
      })
      .catch((error: unknown) => {
        this.lastError = `executor: ${error instanceof Error ? error.message : String(error)}`;
      })
      .finally(() => {
        // Rows the executor never answered for are given back: at-least-once.
        for (const id of [...lane.rows.keys()]) this.settle(lane, id, null);
        this.endLane(lane);
        this.lanes.delete(lane);
        this.dispatch();
      });
    return lane;
  }

  private endLane(lane: Lane): void {
    if (lane.closed) return;
    lane.closed = true;
    lane.writer.close().catch(() => {});
  }

  private settle(lane: Lane, id: string, outcome: Outcome | null): void {
    const w = lane.rows.get(id);
    if (!w) return;
    lane.rows.delete(id);
    this.inFlight--;
    this.release(w.origin);
    if (lane.rows.size === 0) {
      lane.idleSince = this.now();
      this.armIdle();
    }
    w.resolve(outcome);
  }

  /** Closes lanes idle for idleMs (checked on one timer). */
  private armIdle(): void {
    if (this.idleTimer !== undefined) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      const now = this.now();
      let waiting = false;
      for (const lane of this.lanes) {
        if (lane.closed || lane.rows.size > 0) continue;
        if (now - lane.idleSince >= this.idleMs) this.endLane(lane);
        else waiting = true;
      }
      if (waiting) this.armIdle();
    }, this.idleMs);
  }

  private async read(body: ReadableStream<Uint8Array>, lane: Lane): Promise<void> {
    for await (const batch of lines(body, holdBytes)) {
      for (const text of batch) {
        const line = JSON.parse(text) as ExecutorLine;
        if ('outcome' in line) this.settle(lane, String(line.outcome.id), line.outcome);
        else if ('unsent' in line) this.settle(lane, line.unsent, null);
        else this.peakExecutorWaits = Math.max(this.peakExecutorWaits, line.done.peak_header_waits);
      }
      if (this.pending.length > 0) this.dispatch();
    }
  }
}
