// Shared by the worker tests (not a test file): drain options, target hit counts, polling.
import type postgres from 'postgres';
import { inject } from 'vitest';
export { options } from '../support/drain-options.ts';

export const target = inject('targetUrl');

/** A path prefix no other test uses, so hit counts are this test's alone. */
export function uniquePrefix(label: string): string {
  return `/hits/${label}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

export async function hits(prefix: string): Promise<Record<string, number>> {
  const response = await fetch(`${target}/__hits?prefix=${encodeURIComponent(prefix)}`);
  return (await response.json()) as Record<string, number>;
}

/** The most requests of a /held/ or /serial/ label the target held at once. */
export async function heldMax(label: string): Promise<number> {
  return ((await (await fetch(`${target}/__held?label=${label}`)).json()) as { max: number }).max;
}

export async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function counts(sql: postgres.Sql): Promise<{ queued: number; responses: number }> {
  const [row] = await sql<{ queued: number; responses: number }[]>`
    select (select count(*)::int from net.http_request_queue) as queued,
           (select count(*)::int from net._http_response) as responses`;
  return row!;
}
