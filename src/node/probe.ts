// Before a command connects with postgres.js, one cheap look at the address: postgres.js retries a
// port that accepts and drops connections for ever (an HTTP server took 18,419 connections in
// 30 s, printing nothing), and a silent host costs its full timeout per attempt. The probe sends
// PostgreSQL's SSLRequest, which every PostgreSQL (and pooler) answers with one byte, 'S' or 'N',
// before any authentication; anything else is not PostgreSQL.
import { connect } from 'node:net';

/** Longest the probe waits, connecting and answering together. */
export const PROBE_TIMEOUT_MS = 10_000;

// SSLRequest: length 8, then the magic code 80877103 (1234 << 16 | 5679).
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

export class ProbeError extends Error {}

export interface Address {
  host: string;
  port: number;
}

/**
 * Host and port of a postgres:// URL; null when there is nothing to probe over TCP (a Unix
 * socket, several hosts, a key=value DSN): postgres.js then reports on its own.
 */
export function addressOf(url: string): Address | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (!/^postgres(ql)?:$/.test(u.protocol)) return null;
  if (u.searchParams.has('host')) return null; // host=/var/run/postgresql and the like
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
  const port = u.port ? Number(u.port) : 5432;
  return { host, port };
}

/**
 * Resolves when something that speaks PostgreSQL answers at the URL's address; otherwise rejects
 * within timeoutMs with a ProbeError saying what to check. Never sends credentials.
 */
export function probePostgres(url: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<void> {
  const address = addressOf(url);
  if (!address) return Promise.resolve();
  const { host, port } = address;
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return new Promise((done, fail) => {
    let connected = false;
    const socket = connect({ host, port });
    const finish = (error?: ProbeError) => {
      clearTimeout(timer);
      socket.destroy();
      if (error) fail(error);
      else done();
    };
    const timer = setTimeout(() => {
      finish(
        new ProbeError(
          connected
            ? `${where} accepted a connection but did not answer as PostgreSQL within ${timeoutMs / 1000} s: is this PostgreSQL's port?`
            : `no answer from ${where} within ${timeoutMs / 1000} s: is the host right and reachable (firewall, VPN, network)?`,
        ),
      );
    }, timeoutMs);
    socket.once('connect', () => {
      connected = true;
      socket.write(SSL_REQUEST);
    });
    socket.once('data', (data: Buffer) => {
      const answer = data[0];
      if ((answer === 0x53 || answer === 0x4e) && data.length === 1) return finish(); // 'S' or 'N'
      const shown = data.subarray(0, 16).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
      finish(new ProbeError(`${where} is not PostgreSQL (it answered "${shown}"): is the port right?`));
    });
    socket.once('end', () =>
      finish(new ProbeError(`${where} closed the connection without answering as PostgreSQL: is this PostgreSQL's port?`)),
    );
    socket.once('error', (error: NodeJS.ErrnoException) => {
      const code = error.code ?? 'error';
      let advice: string;
      if (code === 'ECONNREFUSED') advice = `nothing listens on ${where} (connection refused): is PostgreSQL running, and is the port right?`;
      else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') advice = `host "${host}" not found (${code}): is the host name right?`;
      else if (code === 'ECONNRESET' && connected) advice = `${where} reset the connection without answering as PostgreSQL: is this PostgreSQL's port?`;
      else advice = `cannot reach ${where} (${code}): is the host right and reachable?`;
      finish(new ProbeError(advice));
    });
  });
}
