// A TCP probe for failure classification (ExecuteOptions.canConnect): workerd's fetch reports a
// refused connection, a reset and a server that closed without replying all as "Network
// connection lost.", and a DNS failure like a malformed reply. Opening (and at once closing) a
// plain TCP connection to the target tells "nothing listens there" from "the server took the
// request and failed it". Only used after a request has failed; bounded by PROBE_TIMEOUT_MS.
const PROBE_TIMEOUT_MS = 2000;

export async function canConnect(hostname: string, port: number): Promise<boolean> {
  const { connect } = await import('cloudflare:sockets');
  let timer: ReturnType<typeof setTimeout> | undefined;
  let socket: import('cloudflare:sockets').Socket | null = null;
  try {
    socket = connect({ hostname, port }, { secureTransport: 'off', allowHalfOpen: false });
    const timeout = new Promise<false>((done) => (timer = setTimeout(() => done(false), PROBE_TIMEOUT_MS)));
    return await Promise.race([socket.opened.then(() => true as const), timeout]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    socket?.close().catch(() => {});
    // A refused connection also rejects `closed`; nobody else waits on it.
    socket?.closed.catch(() => {});
  }
}

/** How long one probe's answer stands for the same host and port within a drain. */
const PROBE_CACHE_MS = 5000;

/**
 * canConnect for one drain: at most `budget` probes (a socket counts against the invocation's
 * subrequests, like a fetch, so the drain sends that many fewer requests), and one answer per
 * host and port for PROBE_CACHE_MS (a dead target failing a whole batch costs one probe). Past
 * the budget the vague failure stays as workerd reported it.
 */
export function probeWithBudget(budget: number, now: () => number = Date.now): (hostname: string, port: number) => Promise<boolean> {
  let left = budget;
  const answers = new Map<string, { at: number; answer: Promise<boolean> }>();
  return (hostname, port) => {
    const key = `${hostname}:${port}`;
    const known = answers.get(key);
    if (known && now() - known.at < PROBE_CACHE_MS) return known.answer;
    if (left <= 0) return Promise.reject(new Error('probe budget spent'));
    left--;
    const answer = canConnect(hostname, port);
    answers.set(key, { at: now(), answer });
    return answer;
  };
}
