// Call-time limits and input edge cases (SPEC section 7, issue 14 items 3 and 9): each refused in
// the caller's transaction with a message that says what to do, nothing queued, whether the row
// comes through the API or a direct INSERT. The limits come from the catalog settings of the
// owner of net / the database, never from the caller's session.
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from '../support/db.ts';

const tag = `${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const plain = `pne_lim_${tag}`;

let db: TestDatabase;
let sql: postgres.Sql;
let user: postgres.Sql;

const ROLE_PASSWORD = `pw_${Math.random().toString(36).slice(2)}`;

beforeAll(async () => {
  db = await freshDatabase();
  sql = db.sql;
  // A password too: the embedded PostgreSQL authenticates with scram-sha-256 (the machine's trusts).
  await sql.unsafe(`create role ${plain} login password '${ROLE_PASSWORD}'`);
  const u = new URL(db.url);
  u.username = plain;
  u.password = ROLE_PASSWORD;
  user = postgres(u.toString(), { max: 1, fetch_types: false, onnotice: () => {} });
});

afterAll(async () => {
  await user?.end();
  await sql.unsafe(`drop owned by ${plain}`).catch(() => {});
  await sql.end();
  // (the role may own rows' owner references only, which are not dependencies)
  const admin = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
  await admin.unsafe(`drop role if exists ${plain}`);
  await admin.end();
});

interface PgError {
  message: string;
  code: string;
  hint?: string;
}

async function queued(): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from net.http_request_queue`;
  return row!.n;
}

/** Runs text as s, expects it to fail, checks nothing was queued, returns the error. */
async function refused(s: postgres.Sql, text: string): Promise<PgError> {
  const before = await queued();
  let caught: PgError | undefined;
  try {
    await s.unsafe(text);
  } catch (error) {
    caught = error as PgError;
  }
  expect(caught, `${text.slice(0, 200)} should fail`).toBeDefined();
  expect(await queued()).toBe(before);
  return caught!;
}

async function setDatabase(name: string, value: string | null): Promise<void> {
  await sql.unsafe(
    value === null ? `alter database ${db.name} reset ${name}` : `alter database ${db.name} set ${name} = '${value}'`,
  );
}

describe('body size: pg_net.max_body_bytes', () => {
  afterAll(async () => {
    await setDatabase('pg_net.max_body_bytes', null);
    await sql.unsafe(`alter role postgres in database ${db.name} reset pg_net.max_body_bytes`);
  });

  it('defaults to 2 MiB: one byte more is refused with how to raise it', async () => {
    const ok = `net.http_request('POST', 'https://e.com/', convert_to(repeat('x', 2097152), 'UTF8'))`;
    await user.unsafe(`select ${ok}`);
    const e = await refused(user, `select net.http_request('POST', 'https://e.com/', convert_to(repeat('x', 2097153), 'UTF8'))`);
    expect(e.code).toBe('54000');
    expect(e.message).toBe('request body is 2097153 bytes; the limit is pg_net.max_body_bytes = 2097152 bytes');
    expect(e.hint).toMatch(/^Send a smaller body \(or several requests\)\. The owner of schema net \(postgres\) can raise it, up to 104857600: ALTER DATABASE \w+ SET pg_net\.max_body_bytes = <bytes>;$/);
  });

  it('comes from ALTER DATABASE / ALTER ROLE of the owner of net, never from the session', async () => {
    await setDatabase('pg_net.max_body_bytes', '1000');
    const body = `convert_to(repeat('x', 1001), 'UTF8')`;
    // The caller raising it in its own session changes nothing (for the owner of net neither).
    const owner = postgres(db.url, { max: 1, fetch_types: false, onnotice: () => {} });
    try {
      for (const s of [user, owner]) {
        await s`set pg_net.max_body_bytes = 100000000`;
        const e = await refused(s, `select net.http_request('PUT', 'https://e.com/', ${body})`);
        expect(e.message).toMatch(/limit is pg_net\.max_body_bytes = 1000 bytes/);
        await s`reset pg_net.max_body_bytes`;
      }
    } finally {
      await owner.end();
    }
    // Every way in: http_post's JSON, a direct INSERT.
    await refused(user, `select net.http_post('https://e.com/', jsonb_build_object('k', repeat('x', 1000)))`);
    const direct = await refused(user, `insert into net.http_request_queue (method, url, body, timeout_milliseconds)
                                        values ('POST', 'https://e.com/', ${body}, 1000)`);
    expect(direct.message).toMatch(/^request body is 1001 bytes/);
    // The owner's role+database setting wins over the database's.
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.max_body_bytes = 5000`);
    await user.unsafe(`select net.http_request('PUT', 'https://e.com/', ${body})`);
    // Above the ceiling counts as the ceiling; nonsense counts as the default.
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.max_body_bytes = 999999999999`);
    expect((await sql`select max_body_bytes::int as n from net._limits()`)[0]!.n).toBe(104857600);
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.max_body_bytes = 'lots'`);
    expect((await sql`select max_body_bytes::int as n from net._limits()`)[0]!.n).toBe(2097152);
  });
});

describe('URL size: pg_net.max_url_bytes', () => {
  it('a 10 MB URL is refused by its size, without echoing it', async () => {
    const e = await refused(user, `select net.http_get('https://e.com/?q=' || repeat('a', 10000000))`);
    expect(e.code).toBe('54000');
    expect(e.message).toBe(`URL is ${'https://e.com/?q='.length + 10_000_000} bytes; the limit is pg_net.max_url_bytes = 16384 bytes`);
    expect(e.hint).toMatch(/in the body/);
  });

  it('counts the params appended to it', async () => {
    const e = await refused(user, `select net.http_get('https://e.com/', jsonb_build_object('q', repeat('a', 16400)))`);
    expect(e.message).toMatch(/^URL is \d+ bytes; the limit is pg_net\.max_url_bytes = 16384 bytes$/);
    await user.unsafe(`select net.http_get('https://e.com/', jsonb_build_object('q', repeat('a', 16000)))`);
  });

  it('can be lowered (not raised past what Cloudflare accepts)', async () => {
    await setDatabase('pg_net.max_url_bytes', '100');
    try {
      const e = await refused(user, `select net.http_get('https://e.com/' || repeat('a', 100))`);
      expect(e.message).toMatch(/limit is pg_net\.max_url_bytes = 100 bytes/);
      await setDatabase('pg_net.max_url_bytes', '1000000');
      expect((await sql`select max_url_bytes::int as n from net._limits()`)[0]!.n).toBe(16384);
    } finally {
      await setDatabase('pg_net.max_url_bytes', null);
    }
  });
});

describe('headers: pg_net.max_header_bytes and control characters', () => {
  it('headers over 32 KiB (names + values) are refused with how to raise the limit', async () => {
    const e = await refused(user, `select net.http_get('https://e.com/', headers := jsonb_build_object('X-Big', repeat('v', 40000)))`);
    expect(e.code).toBe('54000');
    expect(e.message).toBe('request headers are 40009 bytes; the limit is pg_net.max_header_bytes = 32768 bytes');
    expect(e.hint).toMatch(/ALTER DATABASE \w+ SET pg_net\.max_header_bytes = <bytes>;/);
    await setDatabase('pg_net.max_header_bytes', '65536');
    try {
      await user.unsafe(`select net.http_get('https://e.com/', headers := jsonb_build_object('X-Big', repeat('v', 40000)))`);
    } finally {
      await setDatabase('pg_net.max_header_bytes', null);
    }
  });

  it.each([
    ['\\u0001', 'U+0001'],
    ['\\u001b[31m', 'U+001B'],
    ['\\u007f', 'U+007F'],
    ['\\u000b', 'U+000B'],
  ])('a header value with %s is refused, naming the character', async (escape, code) => {
    const e = await refused(user, `select net.http_get('https://e.com/', headers := '{"X-Note": "a${escape}b"}')`);
    expect(e.code).toBe('22023');
    expect(e.message).toBe(
      `header "X-Note" value contains the control character ${code}; header values may only hold visible characters, spaces and tabs`,
    );
    expect(e.hint).toMatch(/Remove it, or encode the value/);
  });

  it('a tab is allowed (HTTP permits it in a value), and direct INSERTs are checked too', async () => {
    await user.unsafe(`select net.http_get('https://e.com/', headers := '{"X-Note": "a\\tb"}')`);
    const e = await refused(user, `insert into net.http_request_queue (method, url, headers, timeout_milliseconds)
                                   values ('GET', 'https://e.com/', '{"X-Note": "a\\u0002"}', 1000)`);
    expect(e.message).toMatch(/control character U\+0002/);
  });
});

describe('URLs with credentials', () => {
  it.each(['http://user:pass@example.com/', 'https://user@example.com/x', 'http://:secret@example.com/'])(
    '%s is refused with the Authorization header to use instead',
    async (url) => {
      const e = await refused(user, `select net.http_get('${url}')`);
      expect(e.code).toBe('22023');
      expect(e.message).toBe('URL must not contain credentials (user:password@host): they would be stored and sent in clear');
      expect(e.hint).toMatch(/send an Authorization header instead/);
      expect(e.message + e.hint).not.toContain('pass@');
    },
  );

  it('an @ after the host (path, query) is fine', async () => {
    await user.unsafe(`select net.http_get('https://e.com/users/@me?mail=a@b.c')`);
  });
});

describe('not_before and delay', () => {
  it.each([
    [`not_before := 'infinity'`, /got infinity$/],
    [`not_before := '-infinity'`, /got -infinity$/],
    [`not_before := now() + interval '2 years'`, /got \d{4}-/],
    [`delay := '1000 years'`, /got \d{4,}-/],
  ])('%s is refused (at most a year ahead)', async (arg, detail) => {
    const e = await refused(user, `select net.http_request('GET', 'https://e.com/', ${arg})`);
    expect(e.code).toBe('22023');
    expect(e.message).toMatch(/^not_before must be a finite time within 1 year from now, got /);
    expect(e.message).toMatch(detail);
    expect(e.hint).toMatch(/pg_cron/);
  });

  it('300 days ahead is fine', async () => {
    await user.unsafe(`select net.http_request('GET', 'https://e.com/', delay := '300 days')`);
  });
});

describe('null URL and null body, as pg_net', () => {
  it('a direct INSERT with a null url is a not-null violation (23502)', async () => {
    const e = await refused(user, `insert into net.http_request_queue (method, url, timeout_milliseconds) values ('GET', null, 1000)`);
    expect(e.code).toBe('23502');
    expect(e.message).toMatch(/null value in column "url"/);
  });

  it('net.http_post(url, body := null) raises', async () => {
    const e = await refused(user, `select net.http_post('https://e.com/', body := null)`);
    expect(e.message).toBe('body must not be null');
  });
});

describe('net.retry bounds', () => {
  it('max_attempts above 10 and a delay over a day are refused; the request stays failed', async () => {
    const [row] = await user<{ id: string }[]>`select net.http_get('https://e.com/r')::text as id`;
    const id = row!.id;
    await sql`select * from net._claim('d', 100)`;
    await sql`select net._record('d', ${sql.json([{ id, status_code: 500 }])})`;
    expect((await refused(user, `select net.retry(${id}, max_attempts := 50)`)).message).toBe(
      'max_attempts must be between 1 and 10 for a retry, got 50',
    );
    expect((await refused(user, `select net.retry(${id}, delay := '1000 years')`)).message).toMatch(
      /^delay must be between 0 and 1 day, got /,
    );
    const [s] = await user<{ s: string }[]>`select net.request_status(${id}::bigint) as s`;
    expect(s!.s).toBe('failed');
  });
});

describe('pg_net.max_attempts default', () => {
  it("is the owner of net's setting for every role's requests, as before the API ran as the caller", async () => {
    await sql.unsafe(`alter role postgres in database ${db.name} set pg_net.max_attempts = 3`);
    try {
      const [row] = await user<{ id: string }[]>`select net.http_get('https://e.com/attempts')::text as id`;
      const [stored] = await sql<{ max_attempts: number }[]>`
        select max_attempts from net.http_request_queue where id = ${row!.id}::bigint`;
      expect(stored!.max_attempts).toBe(3);
    } finally {
      await sql.unsafe(`alter role postgres in database ${db.name} reset pg_net.max_attempts`);
    }
  });
});

describe('direct INSERTs get the API checks', () => {
  it.each([
    [`('NOT A METHOD', 'https://e.com/', '{}', 1000)`, /^unknown HTTP method "NOT A METHOD"/],
    [`('GET', 'not a url', '{}', 1000)`, /^invalid URL "not a url"/],
    [`('GET', 'https://e.com/', '[1, 2]', 1000)`, /^headers must be a JSON object/],
    [`('GET', 'https://e.com/', '{}', 0)`, /^timeout_milliseconds must be between 1 and 300000/],
  ])('%s is refused', async (values, message) => {
    const e = await refused(user, `insert into net.http_request_queue (method, url, headers, timeout_milliseconds) values ${values}`);
    expect(e.message).toMatch(message);
  });
});
