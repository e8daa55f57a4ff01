// The drain's byte budget: response bytes it holds (bodies being read, outcomes buffered or being
// recorded), reported to the isolate-wide count (memory.ts) so the bound holds however many
// drains share an isolate. No request starts while either limit is reached.
import { heldBytes, holdBytes } from './memory.ts';

/**
 * Start no request while this many response bytes wait to be recorded or are being written. A
 * database slower than the targets (large bodies, a distant database) would otherwise let
 * finished responses pile up with the queue's length, past the isolate's 128 MB.
 */
export const BUFFER_LIMIT_BYTES = 16 * 1024 * 1024;

/** A body's reservation, from its headers until its request finishes. */
export interface Reservation {
  bytes: number;
}

/** What a body may take: its declared length when plain, else (chunked, compressed) the limit. */
export function bodyBytes(headers: Headers, maxResponseBytes: number): number {
  const encoding = headers.get('content-encoding');
  if (encoding !== null && encoding.trim().toLowerCase() !== 'identity') return maxResponseBytes;
  const declared = Number(headers.get('content-length') ?? Number.NaN);
  return Number.isFinite(declared) && declared >= 0 ? Math.min(declared, maxResponseBytes) : maxResponseBytes;
}

export class ByteBudget {
  /** Bytes reserved for bodies being read. */
  private reading = 0;
  /** outcomeSize total of the chunk the record in flight is writing (still in memory). */
  recording = 0;
  /** This drain's share of heldBytes, as last reported. */
  private reported = 0;
  private released = false;

  constructor(
    private readonly bufferLimitBytes: number,
    /** Bytes held by all drains of the isolate at which this one starts no request. */
    private readonly memoryLimitBytes: number,
  ) {}

  /** A body's headers arrived: reserve what it may take (instead of what was reserved). */
  reserve(reservation: Reservation, bytes: number): void {
    this.reading += bytes - reservation.bytes;
    reservation.bytes = bytes;
  }

  /** Its request finished: the reservation becomes the outcome's size (buffered, see sync). */
  finish(reservation: Reservation): void {
    this.reading -= reservation.bytes;
    reservation.bytes = 0;
  }

  /** Reports this drain's held bytes (reading + `buffered` + recording) to the isolate-wide count. */
  sync(buffered: number): void {
    if (this.released) return;
    const mine = this.reading + buffered + this.recording;
    holdBytes(mine - this.reported);
    this.reported = mine;
  }

  /** Gives back whatever this drain still counts, once, when it ends: an ended drain never holds others back. */
  release(): void {
    if (this.released) return;
    this.released = true;
    holdBytes(-this.reported);
    this.reported = 0;
  }

  /** No request may start: too many bytes wait to be recorded, or the isolate holds its limit. */
  full(buffered: number): boolean {
    return buffered + this.recording >= this.bufferLimitBytes || heldBytes.total >= this.memoryLimitBytes;
  }
}
