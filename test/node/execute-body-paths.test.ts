// execute reads a body whole when its length is declared, identity-encoded and within the limit,
// and streams it against the limit otherwise. These replies come from a server of this file's own
// (the shared target has no such routes): a declared body that stalls must still time out, a
// compressed body whose declared (compressed) length fits but whose content doesn't must still
// fail the limit, and URLs outside the plain fast path must still be checked and normalized.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execute } from '../../src/core/execute.ts';
import type { ExecuteOptions, QueuedRequest } from '../../src/core/types.ts';

const opts: ExecuteOptions = { maxResponseBytes: 10_000, userAgent: 'pg-net-edge-body-paths/1' };
const BIG = 'y'.repeat(50_000);
const gzipped = gzipSync(Buffer.from(BIG));
const smallGzipped = gzipSync(Buffer.from('small body'));

let server: Server;
let base = '';
beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/declared-stall') {
      // 20 bytes declared, 6 sent, then silence: only the timeout can end the read.
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 20 });
      res.write('start ');
      const timer = setTimeout(() => res.end('and the rest!!'), 5000);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    if (req.url === '/gzip-big') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Encoding': 'gzip', 'Content-Length': gzipped.length });
      res.end(gzipped);
      return;
    }
    if (req.url === '/gzip-small') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Encoding': 'gzip', 'Content-Length': smallGzipped.length });
      res.end(smallGzipped);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 2 });
    res.end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

let next = 1;
function request(url: string, timeout = 5000): QueuedRequest {
  return { id: String(next++), method: 'GET', url, headers: {}, body: null, timeout_milliseconds: timeout, attempts: 1 };
}

describe('execute body and URL paths', () => {
  it('a declared-length body that stalls still times out', async () => {
    const started = Date.now();
    const outcome = await execute(request(`${base}/declared-stall`, 300), fetch, opts);
    expect(outcome).toMatchObject({ timed_out: true, error_msg: 'Timeout of 300 ms reached' });
    expect(Date.now() - started).toBeLessThan(4000); // ended by the timeout, not the server
  });

  it('a gzip body whose compressed length fits but content does not fails the limit', async () => {
    expect(gzipped.length).toBeLessThan(opts.maxResponseBytes);
    const outcome = await execute(request(`${base}/gzip-big`), fetch, opts);
    expect(outcome.status_code).toBe(200);
    expect(outcome.content).toBeNull();
    expect(outcome.error_msg).toMatch(/exceeds the 10000-byte limit/);
  });

  it('a small gzip body is decoded and kept', async () => {
    const outcome = await execute(request(`${base}/gzip-small`), fetch, opts);
    expect(outcome).toMatchObject({ status_code: 200, content: 'small body', error_msg: null });
  });

  it('URLs off the fast path are still validated (bad port, bad IPv4, not http)', async () => {
    for (const url of ['http://127.0.0.1:99999/', 'http://999.1.1.1/', 'ftp://127.0.0.1/x', 'http://exa mple.com/']) {
      const outcome = await execute(request(url), fetch, opts);
      expect(outcome.error_msg, url).toMatch(/^invalid request: url /);
    }
  });

  it('URLs off the fast path are normalized before sending (default port, dot segments, upper case)', async () => {
    const port = base.split(':').pop()!;
    for (const url of [`HTTP://127.0.0.1:${port}/a/../ok`, `http://LOCALHOST:${port}/./ok`, `http://127.0.0.1:${port}/x/..`]) {
      const outcome = await execute(request(url), fetch, opts);
      expect(outcome, url).toMatchObject({ status_code: 200, content: 'ok', error_msg: null });
    }
  });
});
