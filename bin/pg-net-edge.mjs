#!/usr/bin/env node
// The pg-net-edge CLI. In a checkout it runs the TypeScript sources through tsx, so there is no
// build step between a checkout and `npm start`; the packed package (npm pack) has no sources and
// runs the JavaScript compiled into dist/ (tsconfig.build.json), needing only `postgres`.
import { existsSync } from 'node:fs';

const sources = new URL('../src/node/cli.ts', import.meta.url);
const compiled = new URL('../dist/node/cli.js', import.meta.url);

async function load() {
  if (existsSync(sources)) {
    try {
      const { register } = await import('tsx/esm/api');
      register();
      return await import(sources.href);
    } catch (error) {
      // A checkout installed without devDependencies: the build, if there is one, still runs.
      if (error?.code !== 'ERR_MODULE_NOT_FOUND' || !existsSync(compiled)) throw error;
    }
  }
  return await import(compiled.href);
}

const { main } = await load();
const code = await main(process.argv.slice(2));
// Exit explicitly: idle sockets or timers left by libraries must not keep the CLI alive.
process.exit(code);
