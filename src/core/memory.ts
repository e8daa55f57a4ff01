// Response bytes held in memory by every drain of this isolate (a Worker) or process (Node).
// One isolate has 128 MB and may run several drains at once (a cron's drain, nudge drains,
// executors started through ctx.exports), so a per-drain limit alone multiplies with them;
// this shared count lets each drain stop starting requests while the isolate already holds
// its limit. Module state is per isolate, which is exactly the scope of the memory limit.

/** Bytes held: bodies being read (their declared length, or the size limit when unknown) and
 * finished responses not yet recorded. `peak` is for tests and benchmarks. */
export const heldBytes = { total: 0, peak: 0 };

/** Adds (or, negative, removes) bytes held by one drain. */
export function holdBytes(delta: number): void {
  heldBytes.total += delta;
  if (heldBytes.total > heldBytes.peak) heldBytes.peak = heldBytes.total;
}
