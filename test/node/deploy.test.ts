// The README's deploy steps, checked without an account: `wrangler deploy --dry-run` bundles the
// Worker from wrangler.toml as shipped (Hyperdrive commented) and with the [[hyperdrive]] block
// uncommented (deploy step 2); with it uncommented, `wrangler dev` (what `npm start` runs) still
// reaches the local database through CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE.
// Every run uses a copy of wrangler.toml in a temp folder; the checkout's file is never changed.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/node/embedded.ts';
import { hyperdriveLocalUrl } from '../../src/node/hyperdrive-local.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';
import { ROOT, withHyperdriveUncommented, withoutHyperdrive, writeWranglerCopy } from '../support/wrangler-config.ts';

const run = promisify(execFile);
const WRANGLER = join(ROOT, 'node_modules', '.bin', 'wrangler');
let dir: string;
let db: TestDatabase;

/** wrangler without telemetry or network lookups, and without the caller's database settings. */
function wranglerEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: undefined,
    CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: undefined,
    WRANGLER_SEND_METRICS: 'false',
    CLOUDFLARE_CF_FETCH_ENABLED: 'false',
    NO_COLOR: '1',
    FORCE_COLOR: '0',
    ...extra,
  };
}

async function dryRun(config: string, outdir: string): Promise<{ output: string; bundle: string }> {
  const { stdout, stderr } = await run(WRANGLER, ['deploy', '--dry-run', '--outdir', outdir, '--config', config], {
    cwd: dir,
    env: wranglerEnv(),
  });
  return { output: stdout + stderr, bundle: readFileSync(join(outdir, 'index.js'), 'utf8') };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pg-net-edge-deploy-'));
  db = await freshDatabase();
});

afterAll(async () => {
  await db.sql.end();
  rmSync(dir, { recursive: true, force: true });
});

describe('wrangler deploy --dry-run', () => {
  it('as shipped (Hyperdrive commented): the Worker and the Listener Durable Object', async () => {
    const config = writeWranglerCopy(join(dir, 'shipped', 'wrangler.toml'));
    const { output, bundle } = await dryRun(config, join(dir, 'shipped', 'out'));
    expect(output).toMatch(/env\.LISTENER \(Listener\)\s+Durable Object/);
    expect(output).not.toMatch(/HYPERDRIVE/);
    expect(output).toMatch(/--dry-run: exiting now/);
    expect(bundle).toMatch(/export\s*\{[^}]*\bListener\b/);
  });

  it('with the [[hyperdrive]] block uncommented (deploy step 2), localConnectionString included', async () => {
    const config = writeWranglerCopy(join(dir, 'hyperdrive', 'wrangler.toml'), withHyperdriveUncommented);
    expect(readFileSync(config, 'utf8')).toMatch(/^localConnectionString = /m);
    const { output } = await dryRun(config, join(dir, 'hyperdrive', 'out'));
    expect(output).toMatch(/env\.HYPERDRIVE .*Hyperdrive Config/);
    expect(output).toMatch(/env\.LISTENER \(Listener\)\s+Durable Object/);
  });
});

describe("the worker tests' copy of wrangler.toml (vitest.config.ts)", () => {
  it('leaves out an uncommented [[hyperdrive]] block and keeps everything else', () => {
    const shipped = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
    const uncommented = withHyperdriveUncommented(shipped);
    expect(uncommented).toMatch(/^\[\[hyperdrive\]\]$/m);
    const forTests = withoutHyperdrive(uncommented);
    expect(forTests).not.toMatch(/^\[\[hyperdrive\]\]$/m);
    expect(forTests).not.toMatch(/^localConnectionString/m);
    expect(forTests).toMatch(/^\[\[durable_objects\.bindings\]\]$/m);
    expect(withoutHyperdrive(shipped)).toBe(shipped);
  });
});

describe('wrangler dev with [[hyperdrive]] uncommented (what npm start runs)', () => {
  it('reaches the database given in CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE', async () => {
    const config = writeWranglerCopy(join(dir, 'dev', 'wrangler.toml'), withHyperdriveUncommented);
    const port = await freePort();
    const child = spawn(
      WRANGLER,
      ['dev', '--config', config, '--port', String(port), '--ip', '127.0.0.1', '--inspector-port', String(await freePort()), '--show-interactive-dev-session=false'],
      {
        cwd: join(dir, 'dev'),
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: wranglerEnv({ CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: hyperdriveLocalUrl(db.url) }),
      },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    try {
      let health: { status: number; body: Record<string, unknown> } | null = null;
      const deadline = Date.now() + 60_000;
      while (!health && Date.now() < deadline && child.exitCode === null) {
        try {
          const response = await fetch(`http://127.0.0.1:${port}/health`);
          health = { status: response.status, body: (await response.json()) as Record<string, unknown> };
        } catch {
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      expect(health, `wrangler dev never answered; its output:\n${output}`).not.toBeNull();
      expect(health!.body).toMatchObject({ ok: true, database: 'ok' });
      expect(health!.status).toBe(200);
    } finally {
      if (child.pid && child.exitCode === null) process.kill(-child.pid, 'SIGTERM');
      await exited;
    }
    expect(existsSync(config)).toBe(true);
  }, 90_000);
});
