// Two projects: `worker` runs inside workerd (the Worker and the runtime-neutral core, as in
// production); `node` runs the Node side (install CLI, SQL API, relay, npm start, kill tests).
// Both share one global setup: a real PostgreSQL and a real loopback HTTP target.
import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        plugins: [cloudflareTest({ wrangler: { configPath: './wrangler.toml' } })],
        test: { name: 'worker', include: ['test/worker/**/*.test.ts'] },
      },
      {
        extends: true,
        test: { name: 'node', include: ['test/node/**/*.test.ts'], environment: 'node', pool: 'forks' },
      },
    ],
  },
});
