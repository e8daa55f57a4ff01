// An executor: a request to this Worker itself (ctx.exports loopback) carrying claimed rows in
// its body. It answers with headers at once — so the coordinator's header-wait slot frees within
// milliseconds — and streams each outcome back as NDJSON as it finishes. It never touches the
// database (the coordinator claims and records), so executors add no connections. Its requests
// go through its own invocation's accountant (limits.ts): at most 6 waiting for headers.
import { Buffer } from 'node:buffer';
import { execute } from '../core/execute.ts';
import { errorOutcome } from '../core/drain.ts';
import { Deadlines } from '../core/deadlines.ts';
import { bodyBytes } from '../core/byte-budget.ts';
import { heldBytes, holdBytes } from '../core/memory.ts';
import { destinationPolicy } from '../core/destination.ts';
import type { ClaimedRequest } from '../core/claim.ts';
import type { ExecuteOptions, Outcome } from '../core/types.ts';
import { InvocationLimits } from './limits.ts';
import { probeWithBudget } from './probe.ts';
import { lines } from './ndjson.ts';
import { messageOf } from '../core/errors.ts';

/** A claimed row on the wire: its body as base64. */
export type WireRow = Omit<ClaimedRequest, 'body'> & { body: string | null };

export interface ExecutorJob {
  rows: WireRow[];
  maxResponseBytes: number;
  userAgent: string;
  /** pg_net.denied_destinations / allowed_destinations as the coordinator read them. */
  denied: string | null;
  allowed: string | null;
  subrequestLimit: number;
  /** A row not started within this long of its arrival is handed back unsent (its lease). */
  maxWaitMs: number;
  /** Response bytes held in this isolate (memory.ts) at which no row starts: CONCURRENCY × MAX_RESPONSE_BYTES. */
  memoryLimitBytes: number;
}

/** One NDJSON line of an executor's answer. */
export type ExecutorLine =
  | { outcome: Outcome }
  | { unsent: string }
  | { done: { peak_header_waits: number; subrequests: number } };

/** How often a row waiting for the isolate's memory looks again. */
const MEMORY_POLL_MS = 5;
/** Lines are written in batches this often: one write per outcome costs CPU on both sides. */
const WRITE_EVERY_MS = 4;

export function toWire(row: ClaimedRequest): WireRow {
  return { ...row, body: row.body === null ? null : Buffer.from(row.body).toString('base64') };
}

function fromWire(row: WireRow): ClaimedRequest {
  return { ...row, body: row.body === null ? null : new Uint8Array(Buffer.from(row.body, 'base64')) };
}


/** Parses and checks a job's first line (it comes from this Worker's own coordinator through the loopback). */
export function parseJob(value: unknown): Omit<ExecutorJob, 'rows'> | null {
  if (typeof value !== 'object' || value === null) return null;
  const job = value as Partial<ExecutorJob>;
  if (typeof job.maxResponseBytes !== 'number' || typeof job.userAgent !== 'string') return null;
  if (typeof job.subrequestLimit !== 'number' || typeof job.maxWaitMs !== 'number' || typeof job.memoryLimitBytes !== 'number') return null;
  return job as ExecutorJob;
}

/**
 * Runs an executor: `body` streams the job (first line) and then rows, as the coordinator hands
 * them over. Answers at once with a stream of ExecutorLines; ends once the coordinator has closed
 * its stream and every row has an answer.
 */
export async function runExecutor(body: ReadableStream<Uint8Array>, fetchFn: typeof fetch, waitUntil: (p: Promise<unknown>) => void): Promise<Response> {
  const input = lines(body);
  const first = await input.next();
  const [head, ...early] = first.done ? [] : first.value;
  const job = head === undefined ? null : parseJob(JSON.parse(head));
  if (!job) return Response.json({ error: 'bad executor job' }, { status: 400 });
  const limits = new InvocationLimits({ subrequestLimit: job.subrequestLimit });
  const deadlines = new Deadlines();
  // TCP probes classify vague failures (see probe.ts); each is a subrequest too.
  const probes = Math.min(20, Math.floor(job.subrequestLimit / 10));
  const options: ExecuteOptions = {
    maxResponseBytes: job.maxResponseBytes,
    userAgent: job.userAgent,
    destinations: destinationPolicy(job.denied, job.allowed),
    deadlines,
    canConnect: probeWithBudget(probes),
  };
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = writable.getWriter();
  const encoder = new TextEncoder();
  let pending: string[] = [];
  // Bytes of lines emitted but not yet taken by the coordinator's stream: an outcome's body,
  // encoded, is still in this isolate until then, so it stays in the isolate's count (memory.ts)
  // and no row starts beyond the limit while the coordinator reads more slowly than targets answer.
  let pendingBytes = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = (): void => {
    timer = undefined;
    if (pending.length === 0) return;
    const text = pending.join('');
    const bytes = pendingBytes;
    pending = [];
    pendingBytes = 0;
    // Held until the stream has taken the line (backpressure: the coordinator's read).
    writer.write(encoder.encode(text)).then(
      () => holdBytes(-bytes),
      () => holdBytes(-bytes),
    );
  };
  const emit = (line: ExecutorLine): void => {
    const text = `${JSON.stringify(line)}\n`;
    // UTF-16 length: the encoded line has at least this many bytes (ASCII: exactly).
    holdBytes(text.length);
    pendingBytes += text.length;
    pending.push(text);
    timer ??= setTimeout(flush, WRITE_EVERY_MS);
  };

  // Rows start in arrival order as header-wait slots free, never past their lease.
  const queue: { wire: WireRow; at: number }[] = [];
  const running = new Set<Promise<void>>();
  let starting = false;
  const startRows = async (): Promise<void> => {
    if (starting) return;
    starting = true;
    while (queue.length > 0) {
      // The isolate holds its limit of response bytes (several executors may share it): wait.
      while (heldBytes.total >= job.memoryLimitBytes) await new Promise((r) => setTimeout(r, MEMORY_POLL_MS));
      const slot = await limits.acquire();
      const { wire, at } = queue.shift()!;
      if (Date.now() - at > job.maxWaitMs || limits.subrequestsLeft() <= probes) {
        slot();
        emit({ unsent: String(wire.id) });
        continue;
      }
      const row = fromWire(wire);
      // From its headers on, a body counts against the isolate's bytes until its outcome is out.
      const reservation = { bytes: 0 };
      const limited = limits.fetchWith(fetchFn, slot);
      const counted: typeof fetch = async (input, init) => {
        const response = await limited(input, init);
        const bytes = init?.method === 'HEAD' ? 0 : bodyBytes(response.headers, job.maxResponseBytes);
        holdBytes(bytes - reservation.bytes);
        reservation.bytes = bytes;
        return response;
      };
      const done: Promise<void> = (row.invalid
        ? Promise.resolve(errorOutcome(row.id, row.invalid, 'invalid_request'))
        : execute(row, counted, options)
      )
        // The slot is freed when headers arrive; also when execute ended without fetching.
        .finally(slot)
        .then(
          (outcome) => emit({ outcome }),
          (error: unknown) => emit({ outcome: errorOutcome(row.id, `internal error: ${messageOf(error)}`) }),
        )
        .finally(() => {
          // Its line now counts instead (emit): the body's bytes were counted until then.
          holdBytes(-reservation.bytes);
          reservation.bytes = 0;
          running.delete(done);
        });
      running.add(done);
    }
    starting = false;
  };

  const work = (async () => {
    const starters: Promise<void>[] = [];
    const take = (batch: string[]): void => {
      for (const line of batch) queue.push({ wire: JSON.parse(line) as WireRow, at: Date.now() });
      if (batch.length > 0) starters.push(startRows());
    };
    take(early);
    for await (const batch of input) take(batch);
    await Promise.all(starters);
    while (running.size > 0) await Promise.all([...running]);
    deadlines.clear();
    emit({ done: { peak_header_waits: limits.peak, subrequests: limits.subrequests } });
    if (timer !== undefined) clearTimeout(timer);
    flush();
    await writer.close();
  })().catch(async (error: unknown) => {
    // Rows without a line are given back by the coordinator (it knows what it handed over).
    await writer.abort(error).catch(() => {});
  });
  waitUntil(work);
  return new Response(readable, { headers: { 'content-type': 'application/x-ndjson' } });
}
