// The fan-out's NDJSON reader (src/worker/ndjson.ts): lines split across chunks anywhere, a
// multi-byte character cut between chunks, and a megabyte line in small chunks decoded once.
import { describe, expect, it } from 'vitest';
import { lines, LineSplitter } from '../../src/worker/ndjson.ts';

const encode = (text: string) => new TextEncoder().encode(text);

function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

/** Cuts bytes into chunks of `size`. */
function cut(bytes: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.slice(at, at + size));
  return out;
}

async function all(chunks: Uint8Array[]): Promise<string[]> {
  const out: string[] = [];
  for await (const batch of lines(streamOf(chunks))) out.push(...batch);
  return out;
}

describe('NDJSON lines', () => {
  it('gives the same lines however the bytes are cut, multi-byte characters included', async () => {
    const text = '{"a":"é€𝄞"}\n{"b":2}\n\n{"c":"x"}\n{"d":"no newline at the end"}';
    const expected = ['{"a":"é€𝄞"}', '{"b":2}', '', '{"c":"x"}', '{"d":"no newline at the end"}'];
    for (const size of [1, 2, 3, 5, 7, 64]) expect(await all(cut(encode(text), size))).toEqual(expected);
  });

  it('ends without an extra line when the stream ends with a newline (or is empty)', async () => {
    expect(await all(cut(encode('{"a":1}\n'), 3))).toEqual(['{"a":1}']);
    expect(await all([])).toEqual([]);
  });

  it('holds only the incomplete line, as bytes, until its newline arrives', () => {
    const splitter = new LineSplitter();
    const big = `{"content":"${'x'.repeat(1 << 20)}"}`;
    const chunks = cut(encode(`${big}\n{"next":1}\n`), 16 * 1024);
    const seen: string[] = [];
    for (const chunk of chunks) {
      seen.push(...splitter.push(chunk));
      // Nothing is decoded before the line is complete; what is held is that line's bytes.
      if (seen.length === 0) expect(splitter.pending).toBeLessThanOrEqual(big.length);
    }
    expect(seen).toEqual([big, '{"next":1}']);
    expect(splitter.pending).toBe(0);
    expect(splitter.end()).toBeNull();
  });

  it('tells hold the bytes of the line still arriving, and gives them all back at the end', async () => {
    const held: number[] = [];
    let total = 0;
    const hold = (delta: number) => {
      total += delta;
      held.push(total);
    };
    const text = `{"a":"${'x'.repeat(100)}"}\n{"b":"${'y'.repeat(50)}"}`;
    const out: string[] = [];
    for await (const batch of lines(streamOf(cut(encode(text), 30)), hold)) out.push(...batch);
    expect(out).toHaveLength(2);
    // Grows while the first line arrives (never more than it), then restarts with the second.
    expect(Math.max(...held)).toBeLessThanOrEqual(text.indexOf('\n'));
    expect(held[0]).toBe(30);
    expect(total).toBe(0);
  });
});
