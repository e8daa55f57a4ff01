// The embedded PostgreSQL when running as root: the server runs as the `postgres` user, which must
// pass through every folder above its data (a checkout in /root or a `mktemp -d` folder is 0700).
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { expect, it } from 'vitest';
import { startEmbedded } from '../../src/node/embedded.ts';

const root = process.getuid?.() === 0;

it.runIf(root)('starts with its data under a folder only root could enter (mode 0700), which it makes passable', async () => {
  const locked = mkdtempSync(join(tmpdir(), 'pne-locked-')); // mkdtemp: mode 0700
  expect(statSync(locked).mode & 0o777).toBe(0o700);
  const db = await startEmbedded({ dir: join(locked, 'data') });
  try {
    expect(statSync(locked).mode & 0o001).toBe(0o001);
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    const [row] = await sql<{ one: number }[]>`select 1 as one`;
    expect(row?.one).toBe(1);
    await sql.end();
  } finally {
    await db.stop();
    rmSync(locked, { recursive: true, force: true });
  }
}, 120_000);
