// Waiting for something a process, server or session does in its own time (Node tests).
// The timeout only bounds a failing test; what a test asserts never depends on it.

/** Resolves once `check` holds; rejects "timed out waiting for <what>" after timeoutMs. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
