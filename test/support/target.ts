// The loopback HTTP target every test (and the benchmark) sends requests to: a plain Node
// `http` server on 127.0.0.1 with endpoints for each behaviour a worker must cope with —
// echo, any status, slow replies, dropped/reset connections, malformed replies, redirects,
// binary and oversized bodies — plus hit counters so tests can prove a request arrived once.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface Target {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:40123 */
  url: string;
  close(): Promise<void>;
}

interface Arrival {
  path: string;
  at: number;
}

const BINARY = Uint8Array.from([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x61, 0xe2, 0x82]);
const CHUNK = 64 * 1024;

export async function startTarget(): Promise<Target> {
  // Hit counts per path and arrival times; cheap to update because the benchmark hammers /hits.
  const hits = new Map<string, number>();
  /** /held/<ms>/<label>/…: requests of each label being held now, and the most at once. */
  const held = new Map<string, { now: number; max: number }>();
  /** /serial/<ms>/<label>/…: when each label's single worker is next free (a target with no parallel capacity). */
  const serialFreeAt = new Map<string, number>();
  let arrivals: Arrival[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<Socket>();

  /** Runs `then` after ms unless the client went away first (e.g. its timeout fired); close() clears it. */
  const later = (res: ServerResponse, ms: number, then: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (!res.destroyed) then();
    }, ms);
    timers.add(timer);
    res.on('close', () => {
      clearTimeout(timer);
      timers.delete(timer);
    });
  };

  const record = (path: string) => {
    hits.set(path, (hits.get(path) ?? 0) + 1);
    arrivals.push({ path, at: Date.now() });
  };

  const text = (res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8') => {
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };

  /** Answers `body` after ms, counting the request under `label` (see held) until it is answered or the client gives up. */
  const holdFor = (res: ServerResponse, label: string, ms: number, body: string) => {
    const count = held.get(label) ?? { now: 0, max: 0 };
    held.set(label, count);
    count.now++;
    count.max = Math.max(count.max, count.now);
    let holding = true;
    const release = () => {
      if (holding) count.now--;
      holding = false;
    };
    res.on('close', release);
    later(res, ms, () => {
      release();
      text(res, 200, body);
    });
  };

  const json = (res: ServerResponse, value: unknown) => text(res, 200, JSON.stringify(value), 'application/json');

  const readBody = (req: IncomingMessage): Promise<Buffer> =>
    new Promise((done, fail) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => done(Buffer.concat(chunks)));
      req.on('error', fail);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://target.invalid');
    const path = url.pathname;
    const method = req.method ?? 'GET';

    if (path === '/echo' || path.startsWith('/echo/')) {
      record(path);
      const body = await readBody(req);
      json(res, {
        method,
        path,
        query: url.search.slice(1),
        headers: req.headers,
        // Exactly as received: repeated header lines stay separate (req.headers merges or drops them).
        raw_headers: req.rawHeaders,
        body_base64: body.toString('base64'),
        body_text: body.toString('utf8'),
      });
      return;
    }

    // Everything else ignores the request body; drain it so keep-alive connections stay usable.
    req.resume();

    // /flaky/<key>?fail=N&status=503&retry_after=1: the first N hits on a key fail with that status
    // (and Retry-After when given), later ones succeed; for retry and backoff tests.
    if (path.startsWith('/flaky/')) {
      record(path);
      const failures = Number(url.searchParams.get('fail') ?? '1');
      if ((hits.get(path) ?? 0) <= failures) {
        const code = Number(url.searchParams.get('status') ?? '503');
        const retryAfter = url.searchParams.get('retry_after');
        const body = `failure ${hits.get(path)} of ${failures}`;
        res.writeHead(code, {
          'Content-Type': 'text/plain; charset=utf-8',
          'Content-Length': Buffer.byteLength(body),
          ...(retryAfter === null ? {} : { 'Retry-After': retryAfter }),
        });
        res.end(body);
        return;
      }
      return text(res, 200, `ok after ${failures} failures`);
    }

    if (path.startsWith('/hits/')) {
      record(path);
      text(res, 200, 'hit');
      return;
    }

    const status = /^\/status\/(\d{3})$/.exec(path);
    if (status) {
      const code = Number(status[1]);
      if (code < 200 || code > 599) return text(res, 400, `unsupported status ${code}`);
      if (code === 204 || code === 304) {
        res.writeHead(code);
        res.end();
        return;
      }
      return text(res, code, `status ${code}`);
    }

    // Held for <ms>, counting how many of the label are held at once (a drain's fetch slots).
    const hold = /^\/held\/(\d+)\/([^/]+)\//.exec(path);
    if (hold) {
      const ms = Number(hold[1]);
      record(path);
      holdFor(res, hold[2]!, ms, `held ${ms}`);
      return;
    }

    // One at a time per label, <ms> each, in arrival order: a server with one worker, whose
    // answers slow down with every request sent to it at once. Counted like /held/ (waiting
    // or being served, under the same label namespace).
    const serial = /^\/serial\/(\d+)\/([^/]+)\//.exec(path);
    if (serial) {
      const ms = Number(serial[1]);
      const label = serial[2]!;
      record(path);
      const start = Math.max(Date.now(), serialFreeAt.get(label) ?? 0);
      serialFreeAt.set(label, start + ms);
      holdFor(res, label, start + ms - Date.now(), `serial ${ms}`);
      return;
    }

    const delay = /^\/delay\/(\d+)$/.exec(path);
    if (delay) {
      const ms = Number(delay[1]);
      later(res, ms, () => text(res, 200, `delayed ${ms}`));
      return;
    }

    const slowBody = /^\/slow-body\/(\d+)$/.exec(path);
    if (slowBody) {
      // Headers and the first bytes at once, the rest after ms: for timeouts during the body read.
      const ms = Number(slowBody[1]);
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.write('start ');
      later(res, ms, () => res.end('end'));
      return;
    }

    const slowDeclared = /^\/slow-declared\/(\d+)$/.exec(path);
    if (slowDeclared) {
      // The same with a Content-Length: the body is read whole (one read), not streamed.
      const ms = Number(slowDeclared[1]);
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': 9 });
      res.write('start ');
      later(res, ms, () => res.end('end'));
      return;
    }
    if (path === '/drop') {
      req.socket.destroy();
      return;
    }

    if (path === '/reset') {
      req.socket.resetAndDestroy();
      return;
    }

    if (path === '/malformed') {
      // Bypass the HTTP writer entirely: a status line followed by a line that is not a header.
      req.socket.end('HTTP/1.1 200 OK\r\nThis is not a header\r\n\r\nbody');
      return;
    }

    if (path === '/header-spaces') {
      // A header name with spaces (not an HTTP token): curl, so pg_net, takes the reply as it is.
      req.socket.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX Bad Header: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      return;
    }

    const redirect = /^\/redirect\/(\d+)$/.exec(path);
    if (redirect) {
      const n = Number(redirect[1]);
      if (n === 0) return text(res, 200, 'redirected');
      res.writeHead(302, { Location: `/redirect/${n - 1}`, 'Content-Length': 0 });
      res.end();
      return;
    }

    if (path === '/redirect-to') {
      const to = url.searchParams.get('url');
      if (!to) return text(res, 400, 'missing url');
      res.writeHead(302, { Location: to, 'Content-Length': 0 });
      res.end();
      return;
    }

    if (path === '/binary') {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': BINARY.length });
      res.end(BINARY);
      return;
    }

    if (path === '/nul') {
      return text(res, 200, 'before\u0000after');
    }

    const bytes = /^\/bytes\/(\d+)$/.exec(path);
    if (bytes) {
      record(path);
      const total = Number(bytes[1]);
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': total });
      // ?nul=1: NUL bytes instead of "x", a body that must be stored as bytes (content_bytes).
      const chunk = Buffer.alloc(Math.min(CHUNK, Math.max(total, 1)), url.searchParams.get('nul') ? 0 : 'x');
      let sent = 0;
      // Stream with backpressure so a large body never sits in memory at once.
      const pump = () => {
        while (sent < total) {
          const n = Math.min(chunk.length, total - sent);
          sent += n;
          if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      res.on('close', () => res.removeListener('drain', pump));
      pump();
      return;
    }

    if (path === '/headers') {
      res.setHeader('Content-Type', 'text/plain; charset=utf-8');
      res.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2; Path=/']);
      res.setHeader('X-Multi', ['one', 'two']);
      res.setHeader('X-Custom', 'custom-value');
      res.end('headers');
      return;
    }

    if (path === '/__hits' && method === 'GET') {
      const prefix = url.searchParams.get('prefix') ?? '';
      const out: Record<string, number> = {};
      for (const [p, count] of hits) if (p.startsWith(prefix)) out[p] = count;
      return json(res, out);
    }

    if (path === '/__held' && method === 'GET') {
      const label = url.searchParams.get('label') ?? '';
      return json(res, held.get(label) ?? { now: 0, max: 0 });
    }

    if (path === '/__arrivals' && method === 'GET') {
      const prefix = url.searchParams.get('prefix') ?? '';
      return json(res, arrivals.filter((a) => a.path.startsWith(prefix)));
    }

    if (path === '/__reset' && method === 'POST') {
      const prefix = url.searchParams.get('prefix') ?? '';
      for (const p of [...hits.keys()]) if (p.startsWith(prefix)) hits.delete(p);
      arrivals = arrivals.filter((a) => !a.path.startsWith(prefix));
      return text(res, 200, 'reset');
    }

    text(res, 404, `no such endpoint: ${method} ${path}`);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) text(res, 500, `target error: ${String(error)}`);
      else res.destroy();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // A client that sends garbage should not crash or log noise; just close the socket.
  server.on('clientError', (_error, socket) => socket.destroy());

  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', fail);
      done();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      const closed = new Promise<void>((done) => server.close(() => done()));
      // Destroy keep-alive and in-flight sockets so close() never waits on a client.
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections();
      await closed;
    },
  };
}

/**
 * An HTTP server on ::1 only, answering 200 "ipv6 only": http://localhost:<port> reaches it only
 * by trying localhost's IPv6 address, as curl (so pg_net) does.
 */
export async function startIpv6OnlyServer(): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 9 });
    res.end('ipv6 only');
  });
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(0, '::1', () => done());
  });
  const { port } = server.address() as AddressInfo;
  return {
    port,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
