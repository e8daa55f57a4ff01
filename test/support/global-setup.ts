// Runs once in Node before every test project: finds a real PostgreSQL (TEST_DATABASE_URL, else
// an embedded one; never DATABASE_URL, which a user exports for `npm start` and whose server the
// tests must not create databases on), builds a template database with sql/install.sql applied,
// and starts the loopback HTTP target. Test files clone the template (see db.ts), so files can
// drain their own queue in parallel without seeing each other's requests.
import postgres from 'postgres';
import type { TestProject } from 'vitest/node';
import { freePort, startEmbedded, type EmbeddedDatabase } from '../../src/node/embedded.ts';
import { install } from '../../src/node/install.ts';
import { quietWorkerd } from './quiet-workerd.ts';
import { startIpv6OnlyServer, startTarget } from './target.ts';
import { withDatabase } from './urls.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Connection string to a maintenance database (used to create per-file databases). */
    adminUrl: string;
    /** Name of the template database that has pg-net-edge installed. */
    templateDb: string;
    /** Base URL of the loopback HTTP target, e.g. http://127.0.0.1:40123 */
    targetUrl: string;
    /** 'embedded' or 'external' */
    databaseKind: string;
    /** A loopback TCP port nothing listens on (connections to it are refused). */
    closedPort: number;
    /** A port where an HTTP server listens on ::1 only (answers "ipv6 only"): http://localhost:<port>. */
    ipv6OnlyPort: number;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const quiet = quietWorkerd();
  const external = process.env.TEST_DATABASE_URL || undefined;
  let embedded: EmbeddedDatabase | undefined;
  if (!external) {
    process.stdout.write('test setup: no TEST_DATABASE_URL; starting an embedded PostgreSQL\n');
    embedded = await startEmbedded();
  }
  const adminUrl = external ?? embedded!.url;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  const templateDb = `pne_template_${process.pid}`;
  await admin.unsafe(`drop database if exists ${templateDb}`);
  await admin.unsafe(`create database ${templateDb}`);
  await install(withDatabase(adminUrl, templateDb), { log: () => {} });
  const [version] = await admin`select current_setting('server_version') as v`;
  process.stdout.write(`test setup: PostgreSQL ${version?.v} (${external ? 'external' : 'embedded'})\n`);

  const target = await startTarget();
  project.provide('adminUrl', adminUrl);
  project.provide('templateDb', templateDb);
  project.provide('targetUrl', target.url);
  project.provide('databaseKind', external ? 'external' : 'embedded');
  project.provide('closedPort', await freePort());
  const ipv6Only = await startIpv6OnlyServer();
  project.provide('ipv6OnlyPort', ipv6Only.port);

  return async () => {
    await target.close();
    await ipv6Only.close();
    // Databases the test files cloned are named pne_t_<pid>_…; drop them and the template.
    const leftovers = await admin<{ datname: string }[]>`
      select datname from pg_database where datname like ${`pne_t_${process.pid}_%`} or datname = ${templateDb}`;
    for (const { datname } of leftovers) {
      await admin.unsafe(`drop database if exists ${datname} with (force)`).catch(() => {});
    }
    await admin.end();
    if (embedded) await embedded.stop();
    quiet.restore();
    if (quiet.hidden() > 0) {
      process.stdout.write(
        `test teardown: hid ${quiet.hidden()} workerd log messages about failures the tests provoke (SHOW_WORKERD_LOGS=1 shows them)\n`,
      );
    }
  };
}
