// What a drain does once its queue looks empty, before it stops: ask once when the next delayed
// request or HTTP retry comes due (net._next_due_ms) and wait for it if that fits the budget, or
// linger `lingerMs` after the last work so a poke finds it running. Drain.mode() picks among them.
import type { Drain } from './drain.ts';
import { requestsLeft } from './drain-claim.ts';
import { messageOf } from './errors.ts';

/** Claim this long after a request's not_before, so the database's clock has surely passed it. */
export const DUE_SLACK_MS = 25;

/** When the next delayed request or HTTP retry comes due, as far as the drain asked. */
export class DueState {
  /** When the next not-yet-due request comes due; 0: none within the budget (or not asked). */
  at = 0;
  /** net._next_due_ms is being asked. */
  checking = false;
  /** net._next_due_ms was asked since the drain last claimed rows. */
  checked = false;
}

/** Within the budget (time and requests), ignoring whether the queue looked empty. */
export function withinBudget(d: Drain, now: number): boolean {
  if (d.databaseDown || requestsLeft(d) <= 0) return false;
  const elapsed = now - d.started;
  return elapsed < d.opts.budgetMs && d.opts.hardLimitMs - elapsed - d.slackMs > 0;
}

/** About to stop: should the drain first ask when the next delayed request or retry comes due? */
export function dueCheckWanted(d: Drain, now: number): boolean {
  if (!d.waitForDue || d.due.checked || d.due.checking || d.due.at > 0) return false;
  return withinBudget(d, now);
}

export function startDueCheck(d: Drain, now: number): void {
  d.due.checking = true;
  const maxTimeoutMs = Math.max(0, Math.floor(d.opts.hardLimitMs - (now - d.started) - d.slackMs));
  d.sql<{ ms: string | null }[]>`select net._next_due_ms(${maxTimeoutMs}::int)::text as ms`
    .then(
      (rows) => {
        const ms = rows[0]?.ms;
        if (ms === null || ms === undefined) return;
        const at = d.clock.now() + Math.max(0, Number(ms)) + DUE_SLACK_MS;
        // Only worth waiting for if it can still be claimed within the budget.
        if (Number.isFinite(at) && at - d.started < d.opts.budgetMs) d.due.at = at;
      },
      (error: unknown) => {
        // Best effort (e.g. an older schema without net._next_due_ms): the next cron sends it.
        d.lastError = `next due: ${messageOf(error)}`;
      },
    )
    .finally(() => {
      d.due.checked = true;
      d.due.checking = false;
      d.signal();
    });
}

/** A delayed request or HTTP retry is due: claim again, as after a poke. */
export function dueArrived(d: Drain): void {
  d.due.at = 0;
  d.due.checked = false;
  if (d.claiming.empty === 'confirmed') d.claiming.empty = 'no';
}

/** Idle after the queue emptied, but within lingerMs of the last work and within the budget. */
export function lingering(d: Drain, now: number): boolean {
  return d.lingerMs > 0 && now - d.lastActiveAt < d.lingerMs && withinBudget(d, now);
}
