// The test setup itself: an exported DATABASE_URL (as the README suggests for `npm start`) is
// never touched by the tests, and workerd's traces of provoked failures are recognised.
import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { isExpectedWorkerdNoise } from '../support/quiet-workerd.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

describe('test database', () => {
  it('a run with DATABASE_URL exported never connects to it', { timeout: 120_000 }, async () => {
    // DATABASE_URL points at a server that counts connections; with no TEST_DATABASE_URL the run
    // must start its own embedded PostgreSQL rather than use it.
    let connections = 0;
    const watched = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((done) => watched.listen(0, '127.0.0.1', () => done()));
    const port = (watched.address() as AddressInfo).port;
    try {
      const code = await new Promise<number | null>((done) => {
        const child = spawn(
          process.execPath,
          [`${ROOT}node_modules/vitest/vitest.mjs`, 'run', '--project', 'node', 'test/node/probe.test.ts', '-t', 'addressOf'],
          {
            cwd: ROOT,
            env: { ...process.env, DATABASE_URL: `postgres://user:pw@127.0.0.1:${port}/users_db`, TEST_DATABASE_URL: undefined },
            stdio: 'ignore',
          },
        );
        child.once('exit', (exitCode) => done(exitCode));
      });
      expect(code).toBe(0);
      expect(connections).toBe(0);
    } finally {
      watched.close();
    }
  });
});

describe('quiet-workerd', () => {
  it('recognises the traces of provoked I/O failures, and nothing else', () => {
    expect(isExpectedWorkerdNoise('uncaught exception; source = Uncaught (in promise); stack = Error: Network connection lost.')).toBe(true);
    expect(isExpectedWorkerdNoise('exception = kj/async-io-unix.c++:1538: disconnected: connect(): Connection refused')).toBe(true);
    expect(isExpectedWorkerdNoise('Socket proxy disconnected abruptly; e = kj/async-io-unix.c++:1298: failed: DNS lookup failed.; params.host = nonexistent.invalid')).toBe(true);
    expect(isExpectedWorkerdNoise('Socket proxy disconnected abruptly; e = kj/async-io-unix.c++:1298: failed: something new')).toBe(false);
    expect(isExpectedWorkerdNoise('exception = kj/async-io.c++:1453: disconnected: abortRead() has been called')).toBe(true);
    expect(isExpectedWorkerdNoise('uncaught exception; source = Uncaught (in promise); stack = TypeError: x is undefined')).toBe(false);
    expect(isExpectedWorkerdNoise('Network connection lost')).toBe(false); // not a workerd log message
  });
});
