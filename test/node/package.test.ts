// The relay as a package: `npm pack` (its prepack compiles dist/), installed into an empty folder
// from the tarball alone, runs from dist/ with `postgres` as its only dependency: the relay's
// help, and `install` (which finds sql/install.sql inside the package) against a real database.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { ROOT } from '../support/wrangler-config.ts';

const run = promisify(execFile);
let dir: string;
let db: TestDatabase;

function sizeOf(path: string): number {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.size;
  return readdirSync(path).reduce((total, name) => total + sizeOf(join(path, name)), 0);
}

const kB = (bytes: number) => `${(bytes / 1024).toFixed(0)} kB`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pg-net-edge-pack-'));
  db = await freshDatabase();
});

afterAll(async () => {
  await db.sql.end();
  rmSync(dir, { recursive: true, force: true });
});

describe('the packed package', () => {
  it('installs from its tarball into an empty folder and runs the relay and install from dist/', async () => {
    const env = { ...process.env, DATABASE_URL: undefined, npm_config_audit: 'false', npm_config_fund: 'false' };
    const packed = await run('npm', ['pack', '--pack-destination', dir], { cwd: ROOT, env });
    const tarball = join(dir, packed.stdout.trim().split('\n').pop()!);
    expect(existsSync(tarball)).toBe(true);

    const app = join(dir, 'app');
    mkdirSync(app);
    // --prefer-offline: `postgres` comes from npm's cache when it is there (no network needed).
    await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: app, env });
    const installed = readdirSync(join(app, 'node_modules')).filter((name) => !name.startsWith('.'));
    expect(installed.sort()).toEqual(['pg-net-edge', 'postgres']);
    const pkg = join(app, 'node_modules', 'pg-net-edge');
    expect(existsSync(join(pkg, 'dist', 'node', 'cli.js'))).toBe(true);
    expect(existsSync(join(pkg, 'src'))).toBe(false);

    const help = await run('npx', ['--no-install', 'pg-net-edge', 'relay', '--help'], { cwd: app, env });
    expect(help.stdout).toMatch(/^Usage: pg-net-edge relay/);
    expect(help.stdout).toContain('--nudge-url');

    const install = await run('npx', ['--no-install', 'pg-net-edge', 'install', '--database-url', db.url], { cwd: app, env });
    expect(install.stdout).toMatch(/installed|already at|upgraded/);
    const [row] = await db.sql<{ version: number }[]>`select max(version)::int as version from net._migrations`;
    expect(row?.version).toBeGreaterThanOrEqual(2);

    // start needs a checkout (wrangler, wrangler.toml): it says so before starting anything.
    const started = await run('npx', ['--no-install', 'pg-net-edge', 'start'], { cwd: app, env }).then(
      () => ({ code: 0, stderr: '', stdout: '' }),
      (error: { code: number; stderr: string; stdout: string }) => error,
    );
    expect(started.code).not.toBe(0);
    expect(`${started.stdout}${started.stderr}`).toMatch(/from a checkout of the repository/);
    expect(`${started.stdout}${started.stderr}`).not.toMatch(/starting an embedded PostgreSQL/);

    console.log(`package: tarball ${kB(statSync(tarball).size)}, installed (node_modules, postgres included) ${kB(sizeOf(join(app, 'node_modules')))}`);
  }, 120_000);
});
