// The nudge relay against a real PostgreSQL and a real HTTP server standing in for the Worker's
// /nudge: coalescing, commit/rollback, retries, database restarts, a wrong secret.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEmbedded, type EmbeddedDatabase } from '../../src/node/embedded.ts';
import { install } from '../../src/node/install.ts';
import { startRelay, type Relay } from '../../src/node/relay.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { until } from '../support/until.ts';

const SECRET = 'relay-test-secret-5f2c9a';

/** A stand-in for POST /nudge: records each request, answers `status` after `delayMs`. */
class NudgeServer {
  requests: { method: string; path: string; auth: string | undefined }[] = [];
  status = 202;
  delayMs = 0;
  private server: Server | null = null;
  constructor(public port: number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}/nudge`;
  }

  async up(): Promise<void> {
    const server = createServer((req, res) => {
      this.requests.push({ method: req.method ?? '', path: req.url ?? '', auth: req.headers.authorization });
      req.resume();
      setTimeout(() => res.writeHead(this.status).end(), this.delayMs);
    });
    await new Promise<void>((done, fail) => {
      server.once('error', fail);
      server.listen(this.port, '127.0.0.1', () => done());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((done) => server.close(() => done()));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('relay on a shared test database', () => {
  let db: TestDatabase;
  let nudge: NudgeServer;
  let relay: Relay;
  const logs: string[] = [];

  beforeAll(async () => {
    db = await freshDatabase();
    nudge = new NudgeServer(0);
    await nudge.up();
    relay = startRelay({ databaseUrl: db.url, nudgeUrl: nudge.url, secret: SECRET, log: (l) => logs.push(l) });
    await relay.ready;
    // On (re)listen the relay nudges once, for notifications it may have missed.
    await until('the initial nudge', () => nudge.requests.length === 1);
  });

  afterAll(async () => {
    await relay?.stop();
    await nudge?.down();
    await db?.sql.end();
  });

  it('nudges once with the bearer secret when a transaction with 100 requests commits', async () => {
    expect(nudge.requests[0]).toEqual({ method: 'POST', path: '/nudge', auth: `Bearer ${SECRET}` });
    nudge.requests = [];
    await db.sql.begin(async (tx) => {
      for (let i = 0; i < 100; i++) await tx`select net.http_get(${`http://127.0.0.1:9/relay/${i}`})`;
    });
    await until('a nudge', () => nudge.requests.length >= 1);
    // One notification per transaction: nothing else should follow. A marker transaction's nudge
    // proves any stray one would have arrived by now (notifications are delivered in order).
    await db.sql`select net.http_get('http://127.0.0.1:9/relay/marker')`;
    await until('the marker nudge', () => nudge.requests.length >= 2);
    await sleep(100);
    expect(nudge.requests.length).toBe(2);
    expect(nudge.requests.every((r) => r.auth === `Bearer ${SECRET}`)).toBe(true);
    expect(relay.stats.notifications).toBeGreaterThanOrEqual(2);
  });

  it('sends nothing for a rolled-back transaction', async () => {
    nudge.requests = [];
    await db.sql
      .begin(async (tx) => {
        await tx`select net.http_get('http://127.0.0.1:9/relay/rolled-back')`;
        throw new Error('roll back');
      })
      .catch(() => {});
    // Had the rollback notified, its nudge would come before (or be coalesced with) the marker's.
    await db.sql`select net.http_get('http://127.0.0.1:9/relay/marker-2')`;
    await until('the marker nudge', () => nudge.requests.length >= 1);
    await sleep(100);
    expect(nudge.requests.length).toBe(1);
  });

  it('coalesces a burst of commits: one POST in flight, at most one pending', async () => {
    nudge.requests = [];
    nudge.delayMs = 300; // a slow /nudge, so the burst lands while the first POST is in flight
    const before = relay.stats.notifications;
    await Promise.all(
      Array.from({ length: 30 }, (_, i) => db.sql`select net.http_get(${`http://127.0.0.1:9/relay/burst/${i}`})`),
    );
    await until('all 30 notifications', () => relay.stats.notifications - before >= 30);
    await until('the nudges to settle', async () => {
      const seen = nudge.requests.length;
      await sleep(700);
      return seen === nudge.requests.length && seen >= 1;
    });
    nudge.delayMs = 0;
    expect(nudge.requests.length).toBeGreaterThanOrEqual(1);
    expect(nudge.requests.length).toBeLessThanOrEqual(3);
  });

  it('retries with backoff while the nudge endpoint is down, and delivers once it is back', async () => {
    await nudge.down();
    nudge.requests = [];
    const failedBefore = relay.stats.nudgesFailed;
    await db.sql`select net.http_get('http://127.0.0.1:9/relay/while-down')`;
    await until('failed attempts', () => relay.stats.nudgesFailed >= failedBefore + 2);
    await nudge.up(); // same port
    await until('the retried nudge', () => nudge.requests.length >= 1);
    expect(nudge.requests[0]?.auth).toBe(`Bearer ${SECRET}`);
    expect(logs.some((l) => /nudge failed .*retrying in \d+ ms/.test(l))).toBe(true);
  });

  it('retries on 5xx until the endpoint recovers', async () => {
    nudge.requests = [];
    nudge.status = 503;
    await db.sql`select net.http_get('http://127.0.0.1:9/relay/5xx')`;
    await until('two 503s', () => nudge.requests.length >= 2);
    nudge.status = 202;
    const sentBefore = relay.stats.nudgesSent;
    await until('a successful retry', () => relay.stats.nudgesSent > sentBefore);
  });

  it('logs a clear error on 401 (wrong secret), does not retry, and keeps running', async () => {
    nudge.requests = [];
    nudge.status = 401;
    await db.sql`select net.http_get('http://127.0.0.1:9/relay/401')`;
    await until('the 401', () => nudge.requests.length >= 1);
    await until('the log line', () => logs.some((l) => l.includes('secret mismatch')));
    await sleep(600); // longer than the first backoff: a retry would have arrived
    expect(nudge.requests.length).toBe(1);
    expect(relay.stats.listening).toBe(true);
    // Still alive: the next commit is nudged again once the secret matches.
    nudge.status = 202;
    await db.sql`select net.http_get('http://127.0.0.1:9/relay/after-401')`;
    await until('a nudge after the 401', () => nudge.requests.length >= 2);
  });

  it('never logs the secret', () => {
    expect(logs.length).toBeGreaterThan(0);
    expect(logs.join('\n')).not.toContain(SECRET);
  });
});

describe('relay when the database restarts', () => {
  let pg: EmbeddedDatabase;
  let nudge: NudgeServer;
  let relay: Relay | undefined;
  let sql: postgres.Sql;
  const logs: string[] = [];

  beforeAll(async () => {
    pg = await startEmbedded();
    await install(pg.url, { log: () => {} });
    sql = postgres(pg.url, { max: 1, fetch_types: false, onnotice: () => {} });
    nudge = new NudgeServer(0);
    await nudge.up();
  });

  afterAll(async () => {
    await relay?.stop();
    await sql?.end({ timeout: 1 });
    await nudge?.down();
    await pg?.stop();
  });

  it('reconnects with backoff, nudges on re-listen, and relays later commits', async () => {
    relay = startRelay({ databaseUrl: pg.url, nudgeUrl: nudge.url, secret: SECRET, log: (l) => logs.push(l) });
    await relay.ready;
    await until('the initial nudge', () => nudge.requests.length === 1);

    await pg.restart();
    await until('the relay to listen again', () => relay!.stats.listens >= 2, 30_000);
    await until('the re-listen nudge', () => nudge.requests.length >= 2);
    expect(logs.some((l) => l.includes('database connection lost'))).toBe(true);
    expect(logs.some((l) => l.includes('listening on pg_net_edge_wake again'))).toBe(true);

    const before = nudge.requests.length;
    await sql`select net.http_get('http://127.0.0.1:9/relay/after-restart')`;
    await until('a nudge for a commit after the restart', () => nudge.requests.length > before);
    // The embedded server's password is "postgres": no line should carry a connection string.
    expect(logs.join('\n')).not.toMatch(/postgres:\/\/[^ ]*:[^ *]+@/);
  });

  it('keeps retrying while the database is down, and stop() still returns promptly', async () => {
    const port = await freePort(); // nothing listens here
    const lines: string[] = [];
    const deaf = startRelay({
      databaseUrl: `postgres://postgres:pw@127.0.0.1:${port}/postgres`,
      nudgeUrl: nudge.url,
      secret: SECRET,
      log: (l) => lines.push(l),
    });
    await until('two failed LISTEN attempts', () => lines.filter((l) => l.includes('cannot LISTEN')).length >= 2);
    expect(lines.some((l) => /retrying in 500 ms/.test(l))).toBe(true); // the backoff doubles
    await deaf.stop();
    expect(deaf.stats.listening).toBe(false);
  });
});
