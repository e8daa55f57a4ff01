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
