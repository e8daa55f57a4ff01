// Login roles for tests of who sees what (SPEC section 7): two plain roles, an admin (member of
// net_edge_admin) and a member of the first, each with its own session, in a fresh database.
// Roles are cluster-wide and other test files run at the same time: unique names, dropped after.
import postgres from 'postgres';
import { afterAll, beforeAll } from 'vitest';
import { freshDatabase, type TestDatabase } from './db.ts';

export interface Roles {
  db: TestDatabase;
  /** Unique to this file's run (role names and paths use it). */
  tag: string;
  names: { a: string; b: string; admin: string; member: string };
  a: postgres.Sql;
  b: postgres.Sql;
  admin: postgres.Sql;
  member: postgres.Sql;
  /** Another session as one of the roles (closed after the file). */
  connectAs(role: string): postgres.Sql;
  /** A password every role was given (the embedded PostgreSQL authenticates with scram-sha-256). */
  password: string;
}

/** Registers the hooks that create the roles and sessions before the file's tests and drop them after. */
export function useRoles(prefix: string): Roles {
  const tag = `${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const password = `pw_${Math.random().toString(36).slice(2)}`;
  const names = { a: `${prefix}_a_${tag}`, b: `${prefix}_b_${tag}`, admin: `${prefix}_admin_${tag}`, member: `${prefix}_member_${tag}` };
  const sessions: postgres.Sql[] = [];
  const roles = { tag, names, password } as Roles;
  roles.connectAs = (role: string) => {
    const u = new URL(roles.db.url);
    u.username = role;
    u.password = password;
    const s = postgres(u.toString(), { max: 1, fetch_types: false, onnotice: () => {} });
    sessions.push(s);
    return s;
  };
  beforeAll(async () => {
    roles.db = await freshDatabase();
    for (const role of Object.values(names)) await roles.db.sql.unsafe(`create role ${role} login password '${password}'`);
    await roles.db.sql.unsafe(`grant net_edge_admin to ${names.admin}`);
    await roles.db.sql.unsafe(`grant ${names.a} to ${names.member}`);
    roles.a = roles.connectAs(names.a);
    roles.b = roles.connectAs(names.b);
    roles.admin = roles.connectAs(names.admin);
    roles.member = roles.connectAs(names.member);
  });
  afterAll(async () => {
    for (const s of sessions) await s.end();
    for (const role of [names.member, names.admin, names.b, names.a]) {
      await roles.db.sql.unsafe(`drop role if exists ${role}`).catch(() => {});
    }
    await roles.db.sql.end();
  });
  return roles;
}

/** One value of a SQL expression, as text, in the given session. */
export async function one(s: postgres.Sql, text: string): Promise<string> {
  const rows = await s.unsafe<{ v: string }[]>(`select (${text})::text as v`);
  return rows[0]!.v;
}
