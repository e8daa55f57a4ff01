// NDJSON lines of a byte stream, for both ends of the fan-out (rows in, outcomes out). A line may
// be megabytes (an outcome carries its whole response body) and arrive in hundreds of chunks, so
// the reader keeps a line's chunks as bytes, looks for the newline only in each new chunk, and
// decodes a line once, when it is complete: appending each decoded chunk to a string and
// searching it again from the start copied the growing line on every chunk (quadratic in its
// length: ~4 s of CPU and hundreds of MiB of garbage for 64 × 1 MB bodies).
// In UTF-8 the byte 0x0A never occurs inside a multi-byte character, so splitting bytes is safe.

const NEWLINE = 0x0a;

/** Joins a line's pieces into one array (the only copy of its bytes before decoding). */
function join(pieces: Uint8Array[], length: number): Uint8Array {
  if (pieces.length === 1) return pieces[0]!;
  const out = new Uint8Array(length);
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/**
 * Splits chunks into lines. `push` returns the lines a chunk completes (decoded, without their
 * newline); `end` the last one if the stream did not end with a newline. `pending` is the bytes
 * of the line not yet complete.
 */
export class LineSplitter {
  private pieces: Uint8Array[] = [];
  pending = 0;
  private readonly decoder = new TextDecoder();

  push(chunk: Uint8Array): string[] {
    const out: string[] = [];
    let from = 0;
    let end = chunk.indexOf(NEWLINE);
    while (end >= 0) {
      const piece = chunk.subarray(from, end);
      this.pieces.push(piece);
      out.push(this.decoder.decode(join(this.pieces, this.pending + piece.length)));
      this.pieces = [];
      this.pending = 0;
      from = end + 1;
      end = chunk.indexOf(NEWLINE, from);
    }
    if (from < chunk.length) {
      const rest = chunk.subarray(from);
      this.pieces.push(rest);
      this.pending += rest.length;
    }
    return out;
  }

  end(): string | null {
    if (this.pending === 0) return null;
    const line = this.decoder.decode(join(this.pieces, this.pending));
    this.pieces = [];
    this.pending = 0;
    return line.trim() === '' ? null : line;
  }
}

/**
 * The lines of a stream, as they arrive (each chunk's complete lines at once). `hold` is told the
 * bytes of the line still arriving (memory.ts's holdBytes), so a large outcome counts against
 * the isolate's bytes from its first chunk, not only once it is complete.
 */
export async function* lines(body: ReadableStream<Uint8Array>, hold?: (delta: number) => void): AsyncGenerator<string[]> {
  const reader = body.getReader();
  const splitter = new LineSplitter();
  let held = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const complete = splitter.push(value);
      if (hold && splitter.pending !== held) {
        hold(splitter.pending - held);
        held = splitter.pending;
      }
      if (complete.length > 0) yield complete;
    }
    const last = splitter.end();
    if (last !== null) yield [last];
  } finally {
    if (hold && held !== 0) hold(-held);
  }
}
