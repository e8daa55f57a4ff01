// The real stack for the benchmark: PostgreSQL (DATABASE_URL's server or an embedded one) with a
// fresh database, the loopback target, the Worker and the ceiling Worker under one workerd
// (Miniflare, the same workerd binary wrangler dev and the tests use), and the nudge relay.
import { build } from 'esbuild';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Log, LogLevel, Miniflare } from 'miniflare';
import postgres from 'postgres';
import { startEmbedded, type EmbeddedDatabase } from '../src/node/embedded.ts';
import { install, redact } from '../src/node/install.ts';
import { startRelay, type Relay } from '../src/node/relay.ts';
import { startTarget, type Target } from '../test/support/target.ts';
import { DEFAULTS } from '../src/core/settings.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const DRAIN_CRON = '* * * * *';

export interface DrainLog {
  at: number;
  /** "drain", or an executor's own event if the Worker logs one (the fan-out may run executors that log apart). */
  event?: string;
  trigger?: string;
  claimed?: number;
  recorded?: number;
  errors?: number;
  stopped?: string;
  duration_ms?: number;
  error?: string;
  last_error?: string;
  /** A helper drain (another invocation started by a trigger's drain, see FETCH_SLOTS). */
  helper?: boolean;
  header_wait_ms?: number;
}

export interface Stack {
  databaseLabel: string;
  /** The benchmark's own database (dropped at stop). */
  dbUrl: string;
  sql: postgres.Sql;
  target: Target;
  workerUrl: string;
  workerdPid: number | null;
  concurrency: number;
  /** The Worker's FETCH_SLOTS: requests one drain (one invocation) has waiting for headers at once. */
  fetchSlots: number;
  /** The Worker's LINGER_MS (how long a drain stays after the queue empties). */
  lingerMs: number;
  maxResponseBytes: number;
  relay: Relay;
  drainLogs: DrainLog[];
  /** Other workerd output (last lines), for error reports. */
  otherLines: string[];
  fireCron(): Promise<void>;
  /** The bare fetch loop (`lanes` at once, default `concurrency`); `inMemory`: the real Drain against an in-memory queue instead (no database). */
  ceiling(n: number, prefix: string, inMemory?: boolean, lanes?: number): Promise<{ elapsed_ms: number; errors: number; first_error: string | null }>;
  stop(): Promise<void>;
}

interface WranglerConfig {
  compatibilityDate: string;
  compatibilityFlags: string[];
  vars: Record<string, string>;
}

// Only the few keys the bench needs, so the Worker runs with wrangler.toml's settings.
function readWranglerConfig(): WranglerConfig {
  const text = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(text)?.[1] ?? '2026-04-01';
  const flagsText = /^compatibility_flags\s*=\s*\[([^\]]*)\]/m.exec(text)?.[1] ?? '';
  const flags = [...flagsText.matchAll(/"([^"]+)"/g)].map((m) => m[1]!);
  const vars: Record<string, string> = {};
  const section = /^\[vars\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(text)?.[1] ?? '';
  for (const m of section.matchAll(/^([A-Z_][A-Z0-9_]*)\s*=\s*"([^"]*)"/gm)) vars[m[1]!] = m[2]!;
  return { compatibilityDate: date, compatibilityFlags: flags, vars };
}

async function bundle(entry: string): Promise<string> {
  // As wrangler bundles for workerd: the workerd export condition (postgres.js's socket build).
  // Only the default export: workerd treats every named export as an entrypoint and refuses
  // the Worker module's non-handler exports (SWEEP_CRON, redact, …).
  const result = await build({
    stdin: { contents: `export { default } from './${entry}';`, resolveDir: ROOT, loader: 'ts' },
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'],
    mainFields: ['module', 'main'],
    external: ['cloudflare:*', 'node:*'],
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}

/** workerd processes that are children of this Node process. */
function workerdChildren(): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) state ppid …": comm may contain spaces, so split after the last ')'.
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      if (ppid === process.pid && comm.includes('workerd')) pids.push(Number(name));
    } catch {
      // process ended while listing
    }
  }
  return pids;
}

export interface StackOptions {
  progress: (line: string) => void;
  vars?: Record<string, string>;
  /** Open workerd's inspector on this port (bench/profile.ts takes a V8 CPU profile through it). */
  inspectorPort?: number;
}

export async function startStack(options: StackOptions): Promise<Stack> {
  const { progress } = options;
  const cleanups: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  };
  try {
    // 1. PostgreSQL: a fresh database on the machine's server, or an embedded server.
    let adminUrl = process.env.DATABASE_URL || process.env.TEST_DATABASE_URL || '';
    let embedded: EmbeddedDatabase | undefined;
    let databaseLabel: string;
    if (adminUrl) {
      databaseLabel = "machine's PostgreSQL";
      progress(`using ${redact(adminUrl)}`);
    } else {
      progress('no DATABASE_URL: starting an embedded PostgreSQL');
      embedded = await startEmbedded();
      cleanups.push(() => embedded!.stop());
      adminUrl = embedded.url;
      databaseLabel = 'embedded PostgreSQL';
    }
    const admin = postgres(adminUrl, { max: 1, fetch_types: false, onnotice: () => {} });
    const [version] = await admin<{ v: string }[]>`select current_setting('server_version') as v`;
    databaseLabel += ` ${(version?.v ?? '').split(' ')[0]}`;
    const dbName = `pg_net_edge_bench_${Date.now().toString(36)}_${process.pid}`;
    await admin.unsafe(`create database ${dbName}`);
    cleanups.push(async () => {
      await admin.unsafe(`drop database if exists ${dbName} with (force)`);
      await admin.end({ timeout: 5 });
    });
    const u = new URL(adminUrl);
    u.pathname = `/${dbName}`;
    const dbUrl = u.toString();
    await install(dbUrl, { log: (line) => progress(line) });
    const sql = postgres(dbUrl, { max: 4, fetch_types: false, onnotice: () => {} });
    cleanups.push(() => sql.end({ timeout: 5 }));

    // 2. The loopback target.
    const target = await startTarget();
    cleanups.push(() => target.close());

    // 3. workerd: the Worker (bundled from src/worker/index.ts) and the ceiling Worker.
    progress('bundling the Worker and the ceiling Worker; starting workerd (Miniflare)');
    const config = readWranglerConfig();
    const vars = { ...config.vars, ...(options.vars ?? {}) };
    const secret = randomBytes(24).toString('base64url');
    const before = new Set(workerdChildren());
    const drainLogs: DrainLog[] = [];
    const otherLines: string[] = [];
    const mf = new Miniflare({
      host: '127.0.0.1',
      port: 0,
      cf: false, // no network: don't fetch the Request.cf placeholder
      ...(options.inspectorPort !== undefined ? { inspectorPort: options.inspectorPort } : {}),
      log: new Log(LogLevel.WARN),
      handleRuntimeStdio(stdout, stderr) {
        for (const stream of [stdout, stderr]) {
          createInterface({ input: stream }).on('line', (line) => {
            // A drain's (or an executor's) end-of-run line: one per invocation that drained.
            const start = line.search(/\{"event":"(drain|[a-z_-]*exec[a-z_-]*)"/);
            if (start >= 0) {
              try {
                drainLogs.push({ ...(JSON.parse(line.slice(start)) as Omit<DrainLog, "at">), at: Date.now() });
                return;
              } catch {
                // not a whole JSON line: keep it as text
              }
            }
            // Broken pipes are the relay closing a nudge reply early: noise, not news.
            if (line.includes('Broken pipe') || line.startsWith('stack: ')) return;
            otherLines.push(line);
            if (otherLines.length > 50) otherLines.shift();
          });
        }
      },
      workers: [
        {
          name: 'pg-net-edge',
          modules: true,
          script: await bundle('src/worker/index.ts'),
          scriptPath: join(ROOT, 'worker.mjs'),
          compatibilityDate: config.compatibilityDate,
          compatibilityFlags: config.compatibilityFlags,
          bindings: { ...vars, DATABASE_URL: dbUrl, NUDGE_SECRET: secret },
        },
        {
          name: 'ceiling',
          modules: true,
          script: await bundle('bench/ceiling-worker.ts'),
          scriptPath: join(ROOT, 'ceiling.mjs'),
          compatibilityDate: config.compatibilityDate,
          compatibilityFlags: config.compatibilityFlags,
        },
      ],
    });
    cleanups.push(() => mf.dispose());
    let workerUrl: string;
    try {
      workerUrl = (await mf.ready).toString().replace(/\/$/, '');
    } catch (error) {
      throw new Error(`workerd did not start: ${String(error)}\n${otherLines.join('\n')}`);
    }
    const spawned = workerdChildren().filter((pid) => !before.has(pid));
    const workerdPid = spawned[0] ?? null;
    const mainWorker = await mf.getWorker('pg-net-edge');
    const ceilingWorker = await mf.getWorker('ceiling');

    const health = await fetch(`${workerUrl}/health`);
    const healthText = await health.text();
    if (!health.ok) throw new Error(`the Worker's /health answered ${health.status}: ${healthText}`);

    // 4. The relay, as in production: LISTEN → POST /nudge.
    const relay = startRelay({
      databaseUrl: dbUrl,
      nudgeUrl: `${workerUrl}/nudge`,
      secret,
      log: (line) => {
        if (!line.includes('listening on')) progress(line);
      },
    });
    cleanups.push(() => relay.stop());
    await relay.ready;

    const concurrency = Number(vars.CONCURRENCY ?? '32');
    const fetchSlots = vars.FETCH_SLOTS ? Number(vars.FETCH_SLOTS) : DEFAULTS.fetchSlots;
    const lingerMs = vars.LINGER_MS ? Number(vars.LINGER_MS) : DEFAULTS.lingerMs;
    const maxResponseBytes = Number(vars.MAX_RESPONSE_BYTES ?? String(2_097_152));
    return {
      databaseLabel,
      dbUrl,
      sql,
      target,
      workerUrl,
      workerdPid,
      concurrency,
      fetchSlots,
      lingerMs,
      maxResponseBytes,
      relay,
      drainLogs,
      otherLines,
      async fireCron() {
        await mainWorker.scheduled({ cron: DRAIN_CRON, scheduledTime: new Date() });
      },
      async ceiling(n, prefix, inMemory = false, lanes = concurrency) {
        const query = new URLSearchParams({ target: target.url, prefix, n: String(n), concurrency: String(lanes) });
        // The in-memory drain runs as the Worker's does: at most FETCH_SLOTS waiting for headers.
        if (inMemory) query.set('slots', String(fetchSlots));
        const response = await ceilingWorker.fetch(`http://ceiling/${inMemory ? 'in-memory' : 'run'}?${query}`);
        const text = await response.text();
        if (!response.ok) throw new Error(`ceiling worker answered ${response.status}: ${text}`);
        return JSON.parse(text) as { elapsed_ms: number; errors: number; first_error: string | null };
      },
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
