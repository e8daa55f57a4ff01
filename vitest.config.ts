// Two projects: `worker` runs inside workerd (the Worker and the runtime-neutral core, as in
// production); `node` runs the Node side (install CLI, SQL API, relay, npm start, crash tests).
// The root global setup runs once for both (projects don't `extends: true`, which would run it
// once per project): a real PostgreSQL and a real loopback HTTP target, shared via inject().
import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';
import { ROOT, withoutHyperdrive, writeWranglerCopy } from './test/support/wrangler-config.ts';

const timeouts = { testTimeout: 60_000, hookTimeout: 120_000 };

// The worker tests run against wrangler.toml without a [[hyperdrive]] block, so uncommenting it
// (deploy step 2) never breaks them: each test file passes its own database as DATABASE_URL.
const workerConfig = writeWranglerCopy(join(ROOT, '.wrangler', 'test', 'wrangler.toml'), withoutHyperdrive);

export default defineConfig({
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    ...timeouts,
    projects: [
      {
        plugins: [cloudflareTest({ wrangler: { configPath: workerConfig } })],
        test: { ...timeouts, name: 'worker', include: ['test/worker/**/*.test.ts'] },
      },
      {
        test: { ...timeouts, name: 'node', include: ['test/node/**/*.test.ts'], environment: 'node', pool: 'forks' },
      },
    ],
  },
});
