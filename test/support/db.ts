// A fresh database per test file, cloned from the template the global setup installed.
// Runtime-neutral (postgres.js over TCP), so it works in workerd tests and Node tests alike.
import postgres from 'postgres';
import { afterAll, beforeAll, inject } from 'vitest';
import { withDatabase } from './urls.ts';

export interface TestDatabase {
  url: string;
  name: string;
  sql: postgres.Sql;
}

let counter = 0;

export async function freshDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('adminUrl');
  const template = inject('templateDb');
  // pid is not available in workerd: the template name carries the setup's pid.
  const pid = template.replace('pne_template_', '');
  const name = `pne_t_${pid}_${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}${counter++}`;
  const admin = postgres(adminUrl, { max: 1, fetch_types: false, onnotice: () => {} });
  // CREATE DATABASE … TEMPLATE fails while another session is copying the same template; retry.
  for (let attempt = 0; ; attempt++) {
    try {
      await admin.unsafe(`create database ${name} template ${template}`);
      break;
    } catch (error) {
      if (attempt >= 20) throw error;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
  const url = withDatabase(adminUrl, name);
  return { url, name, sql: postgres(url, { max: 4, fetch_types: false, onnotice: () => {} }) };
}

type SessionOptions = postgres.Options<Record<string, postgres.PostgresType>>;

export interface FileSessions {
  /** Another single-connection session on the file's database, ended with the file. */
  session(options?: SessionOptions): postgres.Sql;
  /** Ends `sql` with the file (for pools the test opened itself). */
  endWithFile(sql: postgres.Sql): void;
}

/**
 * The setup SQL test files share: a fresh database in beforeAll, handed to `ready`, and its pool
 * and every session opened through the answer ended in afterAll.
 */
export function useFreshDatabase(ready: (db: TestDatabase) => void): FileSessions {
  let db: TestDatabase | undefined;
  const opened: postgres.Sql[] = [];
  beforeAll(async () => {
    db = await freshDatabase();
    ready(db);
  });
  afterAll(async () => {
    for (const sql of opened) await sql.end();
    await db?.sql.end();
  });
  return {
    session(options = {}) {
      if (!db) throw new Error('session() before the database exists: call it inside a test or hook');
      const sql = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {}, ...options });
      opened.push(sql);
      return sql;
    },
    endWithFile(sql) {
      opened.push(sql);
    },
  };
}

/** No queued requests and no responses: a test's clean start. */
export async function emptyQueue(sql: postgres.Sql): Promise<void> {
  await sql`delete from net.http_request_queue`;
  await sql`delete from net._http_response`;
}
