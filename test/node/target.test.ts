// The loopback target itself: each endpoint behaves as the other tests and the benchmark assume.
// Checked with Node's fetch and, where fetch would hide the detail, raw TCP sockets.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTarget, type Target } from '../support/target.ts';

let target: Target;
beforeAll(async () => {
  target = await startTarget();
});
afterAll(async () => {
  await target.close();
});

/** Sends a raw HTTP/1.1 request and collects everything the server sends until it closes. */
function raw(path: string): Promise<{ data: string; error: string | null }> {
  const { port } = new URL(target.url);
  return new Promise((done) => {
    const socket = connect(Number(port), '127.0.0.1', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    });
    const chunks: Buffer[] = [];
    let error: string | null = null;
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    socket.on('close', () => done({ data: Buffer.concat(chunks).toString('latin1'), error }));
  });
}

const hitsOf = async (prefix: string) =>
  (await (await fetch(`${target.url}/__hits?prefix=${encodeURIComponent(prefix)}`)).json()) as Record<string, number>;

describe('loopback target', () => {
  it('url is a loopback http URL without a trailing slash', () => {
    expect(target.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('/echo reflects method, path, query, headers and body (text and base64)', async () => {
    const body = Buffer.from([0x68, 0x69, 0xff]);
    const res = await fetch(`${target.url}/echo/some/path?a=1&b=x%20y`, {
      method: 'PUT',
      headers: { 'X-One': '1', 'Content-Type': 'application/octet-stream' },
      body,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const echo = (await res.json()) as Record<string, unknown>;
    expect(echo).toMatchObject({ method: 'PUT', path: '/echo/some/path', query: 'a=1&b=x%20y' });
    expect((echo.headers as Record<string, string>)['x-one']).toBe('1');
    expect(echo.body_base64).toBe(body.toString('base64'));
    expect(echo.body_text).toBe(body.toString('utf8'));
  });

  it('/echo records a hit', async () => {
    await fetch(`${target.url}/echo/hit-check`);
    expect(await hitsOf('/echo/hit-check')).toEqual({ '/echo/hit-check': 1 });
  });

  it('/status/<code> answers that status with a short body; 204 is empty', async () => {
    for (const code of [200, 201, 404, 418, 500, 503]) {
      const res = await fetch(`${target.url}/status/${code}`);
      expect(res.status).toBe(code);
      expect(await res.text()).toBe(`status ${code}`);
    }
    const empty = await fetch(`${target.url}/status/204`);
    expect(empty.status).toBe(204);
    expect(await empty.text()).toBe('');
  });

  it('/status with an unusable code is a 400, unknown paths are 404', async () => {
    expect((await fetch(`${target.url}/status/099`)).status).toBe(400);
    expect((await fetch(`${target.url}/nope`)).status).toBe(404);
  });

  it('/delay/<ms> answers after the delay', async () => {
    const started = Date.now();
    const res = await fetch(`${target.url}/delay/150`);
    expect(await res.text()).toBe('delayed 150');
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('/held/<ms>/<label>/… answers after the delay and counts the label\'s requests held at once', async () => {
    const label = `t${Date.now()}`;
    const started = Date.now();
    const replies = await Promise.all([1, 2, 3].map((i) => fetch(`${target.url}/held/150/${label}/${i}`).then((r) => r.text())));
    expect(replies).toEqual(['held 150', 'held 150', 'held 150']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(await (await fetch(`${target.url}/__held?label=${label}`)).json()).toEqual({ now: 0, max: 3 });
    // A client that gives up is no longer held.
    const aborted = new AbortController();
    const gone = fetch(`${target.url}/held/5000/${label}-a/1`, { signal: aborted.signal }).catch(() => 'aborted');
    await new Promise((r) => setTimeout(r, 100));
    aborted.abort();
    expect(await gone).toBe('aborted');
    await new Promise((r) => setTimeout(r, 100));
    expect(await (await fetch(`${target.url}/__held?label=${label}-a`)).json()).toEqual({ now: 0, max: 1 });
  });

  it('/slow-body/<ms> sends headers and a first chunk at once, the rest after the delay', async () => {
    const res = await fetch(`${target.url}/slow-body/100`);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe('start ');
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += new TextDecoder().decode(r.value);
    expect(rest).toBe('end');
  });

  it('/drop closes the connection without a byte of reply', async () => {
    const { data } = await raw('/drop');
    expect(data).toBe('');
    await expect(fetch(`${target.url}/drop`)).rejects.toThrow();
  });

  it('/reset sends a TCP RST', async () => {
    const { data, error } = await raw('/reset');
    expect(data).toBe('');
    expect(error).toBe('ECONNRESET');
  });

  it('/malformed sends a reply that is not valid HTTP', async () => {
    const { data } = await raw('/malformed');
    expect(data).toBe('HTTP/1.1 200 OK\r\nThis is not a header\r\n\r\nbody');
    const failure = await fetch(`${target.url}/malformed`).catch((e: Error) => e);
    expect(failure).toBeInstanceOf(Error);
    expect(String((failure as Error).cause)).toMatch(/HTTPParserError|Invalid header/);
  });

  it('/redirect/<n> is a chain of n 302s ending in 200', async () => {
    const first = await fetch(`${target.url}/redirect/3`, { redirect: 'manual' });
    expect(first.status).toBe(302);
    expect(first.headers.get('location')).toBe('/redirect/2');
    const followed = await fetch(`${target.url}/redirect/3`);
    expect(followed.status).toBe(200);
    expect(followed.url).toBe(`${target.url}/redirect/0`);
    expect(await followed.text()).toBe('redirected');
  });

  it('/redirect-to?url= redirects anywhere; without url it is a 400', async () => {
    const to = 'http://example.invalid/x?y=1';
    const res = await fetch(`${target.url}/redirect-to?url=${encodeURIComponent(to)}`, { redirect: 'manual' });
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe(to);
    expect((await fetch(`${target.url}/redirect-to`, { redirect: 'manual' })).status).toBe(400);
  });

  it('/binary is octet-stream bytes that are not valid UTF-8', async () => {
    const res = await fetch(`${target.url}/binary`);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const bytes = new Uint8Array(await res.arrayBuffer());
    expect([...bytes]).toEqual([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x61, 0xe2, 0x82]);
    expect(() => new TextDecoder('utf-8', { fatal: true }).decode(bytes)).toThrow();
  });

  it('/nul is text with a NUL byte', async () => {
    const res = await fetch(`${target.url}/nul`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await res.text()).toBe('before\u0000after');
  });

  it('/bytes/<n> streams exactly n bytes', async () => {
    for (const n of [0, 1, 65_536, 65_537, 3_000_000]) {
      const res = await fetch(`${target.url}/bytes/${n}`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      expect(bytes.length).toBe(n);
      expect(bytes.every((b) => b === 0x78)).toBe(true);
    }
  });

  it('/headers has two Set-Cookie headers and a multi-valued X-Multi', async () => {
    const res = await fetch(`${target.url}/headers`);
    expect(res.headers.getSetCookie()).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    expect(res.headers.get('x-multi')).toBe('one, two');
    const { data } = await raw('/headers');
    expect(data.match(/^Set-Cookie:/gim)).toHaveLength(2);
    expect(data.match(/^X-Multi:/gim)).toHaveLength(2);
  });

  it('/hits counts arrivals per path for any method; __hits filters by prefix; __reset forgets', async () => {
    await fetch(`${target.url}/hits/target-test/1`);
    await fetch(`${target.url}/hits/target-test/1`, { method: 'POST', body: 'x' });
    await fetch(`${target.url}/hits/target-test/2`, { method: 'DELETE' });
    await fetch(`${target.url}/hits/other-test/1`);
    expect(await hitsOf('/hits/target-test/')).toEqual({ '/hits/target-test/1': 2, '/hits/target-test/2': 1 });

    const reset = await fetch(`${target.url}/__reset?prefix=/hits/target-test/`, { method: 'POST' });
    expect(reset.status).toBe(200);
    expect(await hitsOf('/hits/target-test/')).toEqual({});
    expect(await hitsOf('/hits/other-test/')).toEqual({ '/hits/other-test/1': 1 });
  });

  it('/__arrivals lists each arrival with its time, in order', async () => {
    const before = Date.now();
    await fetch(`${target.url}/hits/arrivals-test/a`);
    await fetch(`${target.url}/hits/arrivals-test/b`);
    const list = (await (await fetch(`${target.url}/__arrivals?prefix=/hits/arrivals-test/`)).json()) as {
      path: string;
      at: number;
    }[];
    expect(list.map((a) => a.path)).toEqual(['/hits/arrivals-test/a', '/hits/arrivals-test/b']);
    expect(list[0]!.at).toBeGreaterThanOrEqual(before);
    expect(list[1]!.at).toBeGreaterThanOrEqual(list[0]!.at);
    await fetch(`${target.url}/__reset?prefix=/hits/arrivals-test/`, { method: 'POST' });
    expect(await (await fetch(`${target.url}/__arrivals?prefix=/hits/arrivals-test/`)).json()).toEqual([]);
  });

  it('many concurrent hits are all counted', async () => {
    await Promise.all(Array.from({ length: 200 }, (_, i) => fetch(`${target.url}/hits/concurrent-test/${i % 10}`)));
    const hits = await hitsOf('/hits/concurrent-test/');
    expect(Object.keys(hits)).toHaveLength(10);
    expect(Object.values(hits).every((n) => n === 20)).toBe(true);
  });

  it('close() does not hang on a pending delay or an idle keep-alive socket', async () => {
    const other = await startTarget();
    await fetch(`${other.url}/status/200`); // leaves a keep-alive connection open
    const pending = fetch(`${other.url}/delay/60000`).then(
      () => 'answered',
      () => 'failed',
    );
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    await other.close();
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await pending).toBe('failed');
    await expect(fetch(`${other.url}/status/200`)).rejects.toThrow();
  });
});
