// The README's tour, run as written: every ```sql block of its "A tour" section, statement by
// statement, against a real PostgreSQL with a drain running (the Node drain: the same core the
// Worker runs). psql's `\gset` and `:name` variables are applied as psql applies them. The
// tour's addresses (the local Worker, postman-echo.com) are mapped to the loopback target's /echo.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { drainOnce } from '../../src/node/drain.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { ROOT } from '../support/wrangler-config.ts';

let db: TestDatabase;
let drainSql: postgres.Sql;
let draining = true;
let drainer: Promise<void>;
const target = inject('targetUrl');
const prefix = `/echo/tour-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

/** The ```sql blocks between "## A tour" and the next "## " heading. */
export function tourBlocks(readme: string): string[] {
  const start = readme.indexOf('\n## A tour');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/** Statements ending in `;` or psql's `\gset` at a line's end (outside $$ bodies); comment-only lines dropped. */
export function statements(block: string): { text: string; gset: boolean }[] {
  const out: { text: string; gset: boolean }[] = [];
  let current = '';
  let inBody = false;
  for (const line of block.split('\n')) {
    if (!inBody && /^\s*--/.test(line)) continue;
    current += `${line}\n`;
    inBody = (current.match(/\$\$/g)?.length ?? 0) % 2 === 1;
    if (inBody) continue;
    const code = line.replace(/--.*$/, '').trimEnd();
    if (code.endsWith('\\gset')) {
      out.push({ text: current.replace(/\\gset\s*(--.*)?\n$/, ''), gset: true });
      current = '';
    } else if (code.endsWith(';')) {
      out.push({ text: current, gset: false });
      current = '';
    }
  }
  if (current.trim()) throw new Error(`unterminated statement in the README: ${current}`);
  return out;
}

beforeAll(async () => {
  db = await freshDatabase();
  drainSql = postgres(db.url, { max: 4, fetch_types: false, onnotice: () => {} });
  // A drain running all along, as `npm start` has one a nudge away.
  drainer = (async () => {
    while (draining) {
      await drainOnce(drainSql, { LINGER_MS: '0' });
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
});

afterAll(async () => {
  draining = false;
  await drainer;
  await drainSql.end();
  await db.sql.end();
});

describe("the README's tour", () => {
  it('runs as written, and does what it says', async () => {
    const blocks = tourBlocks(readFileSync(join(ROOT, 'README.md'), 'utf8'));
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    const vars = new Map<string, string>();
    const results: { text: string; rows: Record<string, unknown>[] }[] = [];
    // One session, as psql has (\gset variables live in it).
    const session = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
    try {
      for (const block of blocks) {
        for (const { text, gset } of statements(block)) {
          const sql = text
            .replaceAll('http://127.0.0.1:8787', `${target}${prefix}`)
            .replaceAll('https://postman-echo.com', `${target}${prefix}`)
            .replace(/(?<![:\w]):([a-z_]\w*)/g, (whole, name: string) => vars.get(name) ?? whole);
          if (process.env.TOUR_DEBUG) console.error(`tour: ${sql}`);
          const rows = (await session.unsafe(sql)) as unknown as Record<string, unknown>[];
          if (gset) {
            expect(rows, `\\gset needs exactly one row: ${text}`).toHaveLength(1);
            for (const [name, value] of Object.entries(rows[0]!)) vars.set(name, String(value));
          }
          results.push({ text, rows });
        }
      }
    } finally {
      await session.end();
    }

    // The synchronous collect got the POST it was asked for (not the GET before it).
    const collected = results.find((r) => r.text.includes('_http_collect_response'));
    expect(collected?.rows[0]).toMatchObject({ status: 'SUCCESS' });
    const response = collected!.rows[0]!.response as string;
    expect(response).toContain('200');
    expect(response).toContain('/post');

    // The trigger's webhook and the GET arrived too.
    const arrived = async () =>
      ((await (await fetch(`${target}/__arrivals?prefix=${encodeURIComponent(prefix)}`)).json()) as { path: string }[]).map((a) => a.path);
    for (let waited = 0; (await arrived()).length < 3 && waited < 20_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    expect((await arrived()).sort()).toEqual([`${prefix}/health`, `${prefix}/post`, `${prefix}/post`]);
    const [orders] = await db.sql<{ n: number }[]>`select count(*)::int as n from orders`;
    expect(orders?.n).toBe(1);
  });
});
