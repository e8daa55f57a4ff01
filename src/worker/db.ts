// The Worker's database client: one per invocation, never ended by us (in workerd, sql.end()
// surfaces an unhandled "Stream was cancelled" rejection; the runtime closes the sockets).
import postgres from 'postgres';
import { guardResults } from '../core/result-guard.ts';
import type { InvocationLimits } from './limits.ts';
import { openSocket } from './socket.ts';

/** `limits`: the invocation's accountant; each connection holds one of its header-wait slots while open. */
export function connectDatabase(url: string, applicationName = 'pg-net-edge worker', limits?: InvocationLimits): postgres.Sql {
  const options = {
    max: 2,
    fetch_types: false,
    connect_timeout: 10,
    onnotice: () => {},
    // Lets a DBA tell the worker's sessions apart (a URL ?application_name= still wins).
    connection: { application_name: applicationName },
    // postgres.js supports a socket factory but does not declare it in its types.
    socket: limits ? (options: Parameters<typeof openSocket>[0]) => openSocket(options, limits) : openSocket,
  };
  // Guarded against postgres.js#1181 (sparse results after a failed statement): result-guard.ts.
  return guardResults(postgres(url, options));
}
