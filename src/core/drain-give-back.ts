// Giving rows back: claimed rows this drain won't send (they waited too long, slots are stuck, or
// an executor could not send them) return to the queue through net._release, one statement at a
// time, so another drain sends them now rather than after their lease expires.
import { release } from './claim.ts';
import { aheadLimit } from './drain-claim.ts';
import type { Drain } from './drain.ts';
import { messageOf } from './errors.ts';

/**
 * A drain without a runner gives back the rows claimed ahead that its stuck slots would hold up,
 * for other drains: all of them when every slot is stuck, those beyond what the last slot starts
 * in the claim-ahead window when all but one are. (With a runner they wait for its places, which
 * free as its rows finish; given back, the drain would claim them again only after its
 * empty-queue pause: head of line.)
 */
export function releaseStuck(d: Drain, now: number): void {
  if (d.ready.length === 0) return;
  if (d.slots.stuck(now)) releaseReady(d, 0);
  else if (d.slots.mostlyStuck(now)) releaseReady(d, aheadLimit(d, now));
}

/** Gives back the rows claimed ahead beyond the first `keep`: stuck slots would hold them up. */
function releaseReady(d: Drain, keep: number): void {
  for (const { request } of d.ready.splice(keep)) d.unsent.push(request.id);
  giveBack(d);
}

/** Gives the unsent rows back to the queue (net._release), one statement at a time. */
export function giveBack(d: Drain): void {
  if (d.releaseInFlight || d.unsent.length === 0 || d.databaseDown) return;
  const ids = d.unsent.splice(0);
  // Not sent by this drain: they don't count against its request cap or in its stats.
  d.claiming.claimed -= ids.length;
  d.givenBack += ids.length;
  d.releaseInFlight = true;
  release(d.sql, d.owner, ids)
    .then(
      () => {},
      (error: unknown) => {
        // They stay leased to this drain, unsent: claimed again once the lease expires.
        d.lastError = `release: ${messageOf(error)}`;
      },
    )
    .finally(() => {
      d.releaseInFlight = false;
      // Rows given up on meanwhile go in the next statement.
      giveBack(d);
      d.signal();
    });
}
