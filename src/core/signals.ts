// How the SQL side signals a worker (sql/install.sql): the channel its functions NOTIFY at commit,
// and the application_name net.wait_until_running() shows while it waits (inside a transaction
// its NOTIFY would only arrive at commit). The relay and the Listener both watch for them.
export const CHANNEL = 'pg_net_edge_wake';
export const WAITING_APPLICATION_NAME = 'pg-net-edge: waiting for the worker';
