// The PostgreSQL probe against real loopback sockets: the test PostgreSQL, an HTTP server, a
// server that accepts and says nothing, one that accepts and hangs up, and a closed port.
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../src/node/embedded.ts';
import { addressOf, probePostgres, ProbeError } from '../../src/node/probe.ts';

const servers: { close(): void }[] = [];
afterAll(() => {
  for (const server of servers) server.close();
});

async function listening<T extends Server | ReturnType<typeof createHttpServer>>(server: T): Promise<number> {
  servers.push(server);
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', () => done()));
  return (server.address() as AddressInfo).port;
}

describe('addressOf', () => {
  it('reads host and port, with PostgreSQL defaults', () => {
    expect(addressOf('postgres://u:p@db.example:6543/x')).toEqual({ host: 'db.example', port: 6543 });
    expect(addressOf('postgresql://u@[::1]/x')).toEqual({ host: '::1', port: 5432 });
    expect(addressOf('postgres:///x')).toEqual({ host: 'localhost', port: 5432 });
  });

  it('leaves Unix sockets and DSNs to the driver', () => {
    expect(addressOf('postgres://u@/x?host=/var/run/postgresql')).toBeNull();
    expect(addressOf('host=localhost dbname=x')).toBeNull();
    expect(addressOf('http://127.0.0.1/')).toBeNull();
  });
});

describe('probePostgres', () => {
  it('accepts the real PostgreSQL', async () => {
    await expect(probePostgres(inject('adminUrl'))).resolves.toBeUndefined();
  });

  it('says "not PostgreSQL" at once for an HTTP server, which gets one connection only', async () => {
    let connections = 0;
    const http = createHttpServer((_req, res) => res.end('hello'));
    http.on('connection', () => connections++);
    const port = await listening(http);
    const error = await probePostgres(`postgres://u:pw@127.0.0.1:${port}/db`).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ProbeError);
    expect((error as Error).message).toMatch(new RegExp(`127\\.0\\.0\\.1:${port} is not PostgreSQL \\(it answered "HTTP/1\\.1 400`));
    expect(connections).toBe(1);
  });

  it('says the port is closed, naming what to check', async () => {
    const port = await freePort();
    await expect(probePostgres(`postgres://u@127.0.0.1:${port}/db`)).rejects.toThrow(
      `nothing listens on 127.0.0.1:${port} (connection refused): is PostgreSQL running, and is the port right?`,
    );
  });

  it('gives up on a server that accepts and never answers, within the timeout it is given', async () => {
    const port = await listening(createServer(() => {}));
    await expect(probePostgres(`postgres://u@127.0.0.1:${port}/db`, 300)).rejects.toThrow(
      `127.0.0.1:${port} accepted a connection but did not answer as PostgreSQL within 0.3 s`,
    );
  });

  it('says so when the server hangs up without answering', async () => {
    const port = await listening(createServer((socket) => socket.end()));
    await expect(probePostgres(`postgres://u@127.0.0.1:${port}/db`)).rejects.toThrow(
      /closed the connection without answering as PostgreSQL|reset the connection without answering/,
    );
  });
});
