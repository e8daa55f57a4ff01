// A guard against postgres.js bug porsager/postgres#1181 (open; 3.4.9, the latest release, has
// it): when a statement fails after sending some rows (e.g. a claim whose 5th row can't be
// read), the connection's row counter is not reset, so the NEXT statement on that connection
// resolves with leading empty slots (`select 42` → [ , , , , {x: 42}]). Its rows are all there,
// contiguous after the holes (DataRow writes result[rows++]), and the counter heals when that
// statement completes. So the guard moves them back to index 0 before anyone sees the result:
// no retry (a claim or record must not run twice) and no connection to find and discard.
import type postgres from 'postgres';

type AnyQuery = Promise<unknown> & { resolve?: (value: unknown) => void };

/** Shifts a result with leading empty slots back to a dense array, in place (keeps count, columns…). */
export function compactResult(result: unknown): void {
  if (!Array.isArray(result) || result.length === 0) return;
  // A multi-statement (simple) query resolves with one result per statement.
  if (result.every((r) => Array.isArray(r))) {
    for (const r of result) compactResult(r);
  }
  let first = 0;
  while (first < result.length && !(first in result)) first++;
  if (first === 0) return;
  const n = result.length - first;
  for (let i = 0; i < n; i++) result[i] = result[i + first];
  result.length = n;
}

function guardQuery<T>(query: T): T {
  const q = query as unknown as AnyQuery;
  // A postgres.js Query resolves through its own `resolve`, called by the connection. Wrapping
  // it (rather than then) keeps the Query intact: fragments, .simple(), .values() still work.
  if (q instanceof Promise && typeof q.resolve === 'function') {
    const resolve = q.resolve;
    q.resolve = (value: unknown) => {
      compactResult(value);
      resolve(value);
    };
  }
  return query;
}

/**
 * The client with every query's result guarded (see above). Statements run through sql`…`,
 * sql.unsafe and sql.file; a transaction's client (sql.begin) is not wrapped: after an error
 * inside a transaction nothing but a rollback runs on it, and the rollback has no rows.
 */
export function guardResults(sql: postgres.Sql): postgres.Sql {
  return new Proxy(sql, {
    apply(target, thisArg, args: unknown[]) {
      return guardQuery(Reflect.apply(target, thisArg, args) as unknown);
    },
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if ((property === 'unsafe' || property === 'file') && typeof value === 'function') {
        return (...args: unknown[]) => guardQuery((value as (...a: unknown[]) => unknown).apply(target, args));
      }
      return value;
    },
  }) as postgres.Sql;
}
