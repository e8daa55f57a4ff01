// The coordinator's side of the fan-out. The coordinator keeps the database connection, claims,
// records and sends what its own fetch slots start soon; the rows it spills (see spill.ts) go to
// executors (requests to this Worker itself, see executor.ts), which only send. The drain asks
// synchronously: tryRun starts a row at once or refuses it (the drain keeps it). An executor
// is a lane: one request whose body streams rows in
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
  resolve: (outcome: Outcome | null) => void;
}

interface Lane {
  writer: WritableStreamDefaultWriter<Uint8Array>;
  rows: Map<string, Waiting>;
  /** Rows handed to this lane in the current turn, written together (one write per lane per turn). */
  outbox: Waiting[];
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

/**
 * Subrequests kept for lanes beyond one per executor: the drain's own requests stop this far
 * short of the invocation's allowance, so lanes can still open.
 */
const LANE_RESERVE = 10;

export class Fanout {
  /** The coordinator's header-wait slot always kept free for opening lanes (see Drain's constructor). */
  readonly reservedSlots = 1;
  private readonly lanes = new Set<Lane>();
  private calls = 0;
  private inFlight = 0;
  private peakInFlight = 0;
  private peakExecutorWaits = 0;
  private readonly perOrigin = new Map<string, number>();
  private readonly toWrite = new Set<Lane>();
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

  /**
   * Rows it could start now: the free places of open lanes and of the lanes it may still open
   * (EXECUTORS, subrequests). The per-origin cap is not counted (see tryRun).
   */
  room(): number {
    let room = 0;
    for (const lane of this.lanes) if (!lane.closed) room += Math.max(0, this.opts.rowsPerExecutor - lane.rows.size);
    const openable = Math.min(this.opts.executors - this.lanes.size, this.limits.subrequestsLeft());
    return room + Math.max(0, openable) * this.opts.rowsPerExecutor;
  }

  /** Requests the coordinator may still send itself: the subrequests lanes don't need. */
  localLeft(): number {
    return this.limits.subrequestsLeft() - this.opts.executors - LANE_RESERVE;
  }

  /**
   * Sends a row through an executor if one can start it now: its outcome (null if it was not
   * sent: give it back). Null at once, sending nothing, when the row's origin holds its cap or no
   * lane has a place and none may open: the caller keeps the row.
   */
  tryRun(row: ClaimedRequest): Promise<Outcome | null> | null {
    const origin = originOf(row.url);
    const out = this.perOrigin.get(origin) ?? 0;
    if (out >= this.opts.originConcurrency) return null;
    const lane = this.laneWithRoom();
    if (!lane) return null;
    return new Promise((resolve) => {
      const w: Waiting = { row, origin, resolve };
      this.perOrigin.set(origin, out + 1);
      lane.rows.set(String(row.id), w);
      lane.outbox.push(w);
      this.inFlight++;
      if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
      this.toWrite.add(lane);
      // Rows the drain starts in one turn go out together: one write per lane.
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this.write());
      }
    });
  }

  /** Ends every lane (the drain is over): executors finish what they hold and stop. */
  close(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.write();
    for (const lane of this.lanes) this.endLane(lane);
  }

  stats(): FanoutStats {
    return { executors: this.calls, peak_in_flight: this.peakInFlight, peak_header_waits: Math.max(this.limits.peak, this.peakExecutorWaits) };
  }

  error(): string | undefined {
    return this.lastError;
  }

  /** An open lane with a free place (fill open lanes first), or a new one if one may open. */
  private laneWithRoom(): Lane | null {
    for (const lane of this.lanes) if (!lane.closed && lane.rows.size < this.opts.rowsPerExecutor) return lane;
    if (this.lanes.size >= this.opts.executors || this.limits.subrequestsLeft() <= 0) return null;
    return this.openLane();
  }

  private write(): void {
    this.scheduled = false;
    for (const lane of this.toWrite) {
      const batch = lane.outbox.splice(0);
      if (lane.closed || batch.length === 0) continue;
      const text = batch.map((w) => `${JSON.stringify(toWire(w.row))}\n`).join('');
      lane.writer.write(encoder.encode(text)).catch(() => {});
    }
    this.toWrite.clear();
  }

  private release(origin: string): void {
    const out = (this.perOrigin.get(origin) ?? 1) - 1;
    if (out <= 0) this.perOrigin.delete(origin);
    else this.perOrigin.set(origin, out);
  }

  private openLane(): Lane {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const lane: Lane = { writer: writable.getWriter(), rows: new Map(), outbox: [], closed: false, idleSince: 0 };
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
    }
  }
}
