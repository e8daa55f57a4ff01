#!/usr/bin/env node
// The pg-net-edge CLI. The sources are TypeScript; tsx compiles them on the fly, so there is no
// build step between a checkout and `npm start`.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/node/cli.ts');
const code = await main(process.argv.slice(2));
// Exit explicitly: idle sockets or timers left by libraries must not keep the CLI alive.
process.exit(code);
