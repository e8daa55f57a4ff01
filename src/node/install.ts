// `pg-net-edge install`: applies sql/install.sql (the same file psql and SQL editors run) and
// reports what it found and kept, so a re-install visibly keeps queued requests and responses.
import { readFile } from 'node:fs/promises';
import postgres from 'postgres';
import { probePostgres, ProbeError } from './probe.ts';

export interface InstallReport {
  /** Schema version before the install; null when pg-net-edge was not installed. */
  before: number | null;
  after: number;
  /** Requests waiting in net.http_request_queue after the install. */
  queued: number;
  /** Rows in net._http_response after the install. */
  responses: number;
}

export interface InstallOptions {
  /** Receives the human summary line (default: stdout). */
  log?: (line: string) => void;
  /** Receives server notices (default: dropped; the file's notices are expected noise). */
  notice?: (message: string) => void;
}

const INSTALL_SQL = new URL('../../sql/install.sql', import.meta.url);

/** The connection string with its password replaced by ***, safe to print. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    // Not a URL (e.g. a key=value DSN): hide any password=… value.
    return url.replace(/(password\s*=\s*)('[^']*'|\S+)/gi, '$1***');
  }
}

interface PgError extends Error {
  code?: string;
  hint?: string;
}

// Errors that mean "could not reach or log into the server", as opposed to SQL failures.
const CONNECTION_CODES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH',
  'CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED',
  '28P01', '28000', '3D000', 'SASL_SIGNATURE_MISMATCH',
]);

function connectionError(url: string, error: PgError): Error {
  const where = redact(url);
  const code = error.code ?? 'unknown';
  // postgres.js messages can echo the host but never the password; strip it anyway.
  const reason = redactText(error.message, url);
  let advice = 'is the server running and reachable, and is the URL right?';
  if (code === '28P01' || code === '28000' || code === 'SASL_SIGNATURE_MISMATCH') advice = 'are the user name and password right?';
  if (code === '3D000') advice = 'does the database exist? (create it first, or fix the URL)';
  return new Error(`cannot connect to PostgreSQL at ${where} (${code}: ${reason}): ${advice}`);
}

/** Fails within ~10 s with what to check when the URL's address is not a reachable PostgreSQL. */
export async function probe(url: string): Promise<void> {
  try {
    await probePostgres(url);
  } catch (error) {
    if (error instanceof ProbeError) throw new Error(`cannot connect to PostgreSQL at ${redact(url)}: ${error.message}`);
    throw error;
  }
}

function redactText(text: string, url: string): string {
  try {
    const password = decodeURIComponent(new URL(url).password);
    return password ? text.split(password).join('***') : text;
  } catch {
    return text;
  }
}

function databaseName(url: string): string {
  try {
    return decodeURIComponent(new URL(url).pathname.replace(/^\//, '')) || '(default database)';
  } catch {
    return '(database)';
  }
}

async function schemaVersion(sql: postgres.Sql): Promise<number | null> {
  const [exists] = await sql<{ present: boolean }[]>`select to_regclass('net._migrations') is not null as present`;
  if (!exists?.present) return null;
  const [row] = await sql<{ version: number | null }[]>`select max(version)::int as version from net._migrations`;
  return row?.version ?? null;
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

export async function install(url: string, opts: InstallOptions = {}): Promise<InstallReport> {
  const log = opts.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const text = await readFile(INSTALL_SQL, 'utf8');
  await probe(url);
  const sql = postgres(url, {
    max: 1,
    fetch_types: false,
    connect_timeout: 10,
    onnotice: (notice) => opts.notice?.(String(notice.message ?? '')),
  });
  const db = databaseName(url);
  try {
    let before: number | null;
    try {
      before = await schemaVersion(sql);
    } catch (error) {
      const e = error as PgError;
      if (e.code && CONNECTION_CODES.has(e.code)) throw connectionError(url, e);
      throw error;
    }
    // Simple protocol: the file is many statements (and DO blocks) in one transaction.
    try {
      await sql.unsafe(text).simple();
    } catch (error) {
      const e = error as PgError;
      if (e.code && CONNECTION_CODES.has(e.code)) throw connectionError(url, e);
      // e.g. "pg_net extension is installed …": keep PostgreSQL's message and its hint.
      throw new Error(`pg-net-edge install into ${db} failed: ${e.message}${e.hint ? ` (${e.hint})` : ''}`, { cause: error });
    }
    const [counts] = await sql<{ after: number; queued: number; responses: number }[]>`
      select (select max(version) from net._migrations)::int as after,
             (select count(*) from net.http_request_queue)::int as queued,
             (select count(*) from net._http_response)::int as responses`;
    const report: InstallReport = {
      before,
      after: counts?.after ?? 0,
      queued: counts?.queued ?? 0,
      responses: counts?.responses ?? 0,
    };
    const kept = `kept ${plural(report.queued, 'queued request', 'queued requests')} and ${plural(report.responses, 'response', 'responses')}`;
    if (before === null) {
      log(`installed pg-net-edge schema v${report.after} into ${db} (fresh)`);
    } else if (before === report.after) {
      log(`pg-net-edge in ${db} already at v${report.after}; functions refreshed; ${kept}`);
    } else {
      log(`upgraded pg-net-edge in ${db} from v${before} to v${report.after}; ${kept}`);
    }
    return report;
  } finally {
    await sql.end({ timeout: 5 });
  }
}
