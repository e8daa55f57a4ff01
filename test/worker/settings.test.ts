// Settings: the pure parser (Worker variables) and net._config() as the drain reads it.
import { beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY, destinationPolicy } from '../../src/core/destination.ts';
import { DEFAULTS, loadSettings, parseSettings, SettingsError } from '../../src/core/settings.ts';
import { freshDatabase, type TestDatabase } from '../support/db.ts';

describe('parseSettings', () => {
  it('defaults when nothing is set', () => {
    expect(parseSettings({}, {})).toEqual({
      ttl: '6 hours',
      batchSize: 200,
      concurrency: 32,
      maxResponseBytes: 2_097_152,
      leaseMarginMs: 30_000,
      drainBudgetMs: null,
      userAgent: 'pg-net-edge/0.1',
      flushMs: 5,
      lingerMs: 1000,
      subrequestLimit: 9000,
      fetchSlots: 5,
      executors: 64,
      originConcurrency: 400,
      destinations: DEFAULT_POLICY,
      deniedDestinations: null,
      allowedDestinations: null,
    });
    expect(DEFAULTS.concurrency).toBe(32);
  });

  it('database values are used; variables override them', () => {
    expect(parseSettings({ ttl: '24 hours', batch_size: 50 }, {})).toMatchObject({ ttl: '24 hours', batchSize: 50 });
    const s = parseSettings(
      { ttl: '24 hours', batch_size: 50 },
      {
        TTL: ' 2 days ',
        BATCH_SIZE: '500',
        CONCURRENCY: '64',
        MAX_RESPONSE_BYTES: '1024',
        LEASE_MARGIN_MS: '0',
        DRAIN_BUDGET_MS: '10000',
        USER_AGENT: 'custom/1',
        FLUSH_MS: '0',
        LINGER_MS: '0',
        SUBREQUEST_LIMIT: '45',
        FETCH_SLOTS: '6',
        EXECUTORS: '3',
        ORIGIN_CONCURRENCY: '50',
      },
    );
    expect(s).toEqual({
      ttl: '2 days',
      batchSize: 500,
      concurrency: 64,
      maxResponseBytes: 1024,
      leaseMarginMs: 0,
      drainBudgetMs: 10_000,
      userAgent: 'custom/1',
      flushMs: 0,
      lingerMs: 0,
      subrequestLimit: 45,
      fetchSlots: 6,
      executors: 3,
      originConcurrency: 50,
      destinations: DEFAULT_POLICY,
      deniedDestinations: null,
      allowedDestinations: null,
    });
  });

  it('destination settings become the policy; a bad entry is a SettingsError naming it', () => {
    const s = parseSettings({ denied_destinations: '127.0.0.0/8', allowed_destinations: '*.example.com' }, {});
    expect(s.destinations).toEqual(destinationPolicy('127.0.0.0/8', '*.example.com'));
    expect(() => parseSettings({ denied_destinations: '10.0.0.0/40' }, {})).toThrow(SettingsError);
    expect(() => parseSettings({ denied_destinations: '10.0.0.0/40' }, {})).toThrow(/10\.0\.0\.0\/40/);
  });

  it('empty variables mean "not set"', () => {
    expect(parseSettings({}, { CONCURRENCY: '', BATCH_SIZE: '  ', USER_AGENT: '' })).toMatchObject({
      concurrency: 32,
      batchSize: 200,
      userAgent: 'pg-net-edge/0.1',
    });
  });

  it('invalid database values fall back to the defaults', () => {
    expect(parseSettings({ ttl: 42, batch_size: 'many' }, {})).toMatchObject({ ttl: '6 hours', batchSize: 200 });
    expect(parseSettings({ ttl: '', batch_size: -3 }, {})).toMatchObject({ ttl: '6 hours', batchSize: 200 });
  });

  it.each([
    ['CONCURRENCY', 'abc'],
    ['CONCURRENCY', '0'],
    ['CONCURRENCY', '1.5'],
    ['CONCURRENCY', '-1'],
    ['BATCH_SIZE', '1e3'],
    ['BATCH_SIZE', '0'],
    ['MAX_RESPONSE_BYTES', '0'],
    ['MAX_RESPONSE_BYTES', '99999999999999'],
    ['LEASE_MARGIN_MS', 'soon'],
    ['DRAIN_BUDGET_MS', '0'],
    ['FLUSH_MS', '5ms'],
    ['LINGER_MS', '-5'],
    ['LINGER_MS', '61000'],
    ['SUBREQUEST_LIMIT', '0'],
    ['SUBREQUEST_LIMIT', 'lots'],
    ['FETCH_SLOTS', '0'],
    ['FETCH_SLOTS', '2.5'],
    ['EXECUTORS', '-1'],
    ['EXECUTORS', 'many'],
    ['ORIGIN_CONCURRENCY', '0'],
    ['TTL', "1 hour'; drop table x; --"],
    ['TTL', 'forever'],
  ])('%s=%j is rejected with an error naming the variable', (name, value) => {
    expect(() => parseSettings({}, { [name]: value })).toThrow(SettingsError);
    expect(() => parseSettings({}, { [name]: value })).toThrow(new RegExp(`^${name} `));
  });
});

describe('loadSettings against PostgreSQL', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await freshDatabase();
  });

  it('reads defaults, then ALTER ROLE … SET pg_net.* after net.worker_restart()', async () => {
    expect(await loadSettings(db.sql, {})).toMatchObject({ ttl: '6 hours', batchSize: 200 });
    // Scoped to this test database so parallel test files are not affected.
    await db.sql.unsafe(`alter role current_user in database ${db.name} set pg_net.batch_size = 7`);
    await db.sql.unsafe(`alter role current_user in database ${db.name} set pg_net.ttl = '24 hours'`);
    await db.sql`select net.worker_restart()`;
    // The same pooled connections: the settings come from the catalog, not the session.
    expect(await loadSettings(db.sql, {})).toMatchObject({ ttl: '24 hours', batchSize: 7 });
    expect(await loadSettings(db.sql, { BATCH_SIZE: '3' })).toMatchObject({ ttl: '24 hours', batchSize: 3 });
    await db.sql.unsafe(`alter role current_user in database ${db.name} reset all`);
    expect(await loadSettings(db.sql, {})).toMatchObject({ ttl: '6 hours', batchSize: 200 });
  });

  it('a TTL variable PostgreSQL cannot parse fails with the variable named', async () => {
    await expect(loadSettings(db.sql, { TTL: '5 fortnights' })).rejects.toThrow(/^TTL /);
    expect(await loadSettings(db.sql, { TTL: '90 minutes' })).toMatchObject({ ttl: '90 minutes' });
  });
});
