// A TCP socket for postgres.js in workerd (its `socket` option). postgres.js 3.4.9's own
// workerd polyfill leaves `writer.ready` without a rejection handler, so every refused or
// failed connection also surfaces as an unhandled rejection ("proxy request failed") — log noise
// in production and a failure under vitest. This is the same adapter with every promise handled;
// failures reach postgres.js as 'error' + 'close' events, which fail the pending queries.
// The shape (raw/writer/reader/read/readyState) matches the polyfill so its tls.connect (used
// for sslmode=require) can upgrade this socket exactly as it upgrades its own.
import { Buffer } from 'node:buffer';
import { EventEmitter } from 'node:events';
import type { InvocationLimits } from './limits.ts';

interface SocketOptions {
  host: string[];
  port: number[];
  ssl?: unknown;
}

export interface PgSocket extends EventEmitter {
  readyState: string;
  host: string;
  port: number;
  ssl: boolean;
  raw: import('cloudflare:sockets').Socket | null;
  writer: WritableStreamDefaultWriter<Uint8Array> | null;
  reader: ReadableStreamDefaultReader<Uint8Array> | null;
  destroyed?: boolean;
  write(data: Uint8Array, cb?: () => void): boolean;
  end(data?: Uint8Array): unknown;
  destroy(): void;
  read(): Promise<void>;
  setKeepAlive?: undefined;
}

/** `limits`: the invocation's accountant (limits.ts); the socket holds one of its slots while open. */
export async function openSocket(options: SocketOptions, limits?: InvocationLimits): Promise<PgSocket> {
  const { connect } = await import('cloudflare:sockets');
  const release = limits ? await limits.socketSlot() : () => {};
  const host = options.host[0] ?? 'localhost';
  const port = options.port[0] ?? 5432;
  const ssl = Boolean(options.ssl);
  const tcp = new EventEmitter() as PgSocket;
  Object.assign(tcp, { readyState: 'opening', host, port, ssl, raw: null, writer: null, reader: null });

  // Report a failure once. Several promises reject for one failure, and postgres.js removes its
  // listeners once it has seen the first; an 'error' emitted with no listener would throw.
  let failed = false;
  const error = (err: unknown) => {
    if (!failed && tcp.readyState !== 'closed') {
      failed = true;
      if (tcp.listenerCount('error') > 0) tcp.emit('error', err instanceof Error ? err : new Error(String(err)));
    }
    close();
  };
  const close = () => {
    if (tcp.readyState === 'closed') return;
    release();
    tcp.readyState = 'closed';
    tcp.emit('close');
  };

  tcp.write = (data, cb) => {
    tcp.writer!.write(data).then(cb, error);
    return true;
  };
  tcp.end = (data) => {
    const raw = tcp.raw;
    if (!raw) return undefined;
    if (data) return tcp.write(data, () => void raw.close().catch(() => {}));
    return raw.close().catch(() => {});
  };
  tcp.destroy = () => {
    tcp.destroyed = true;
    tcp.end();
  };
  tcp.read = async () => {
    try {
      for (;;) {
        const { done, value } = await tcp.reader!.read();
        if (done) break;
        // A view, not a copy: each read hands over a fresh chunk that nothing else reuses.
        tcp.emit('data', Buffer.from(value.buffer, value.byteOffset, value.byteLength));
      }
      // The server closed the connection (e.g. pg_terminate_backend): tell postgres.js now, so
      // its queries fail and it reconnects, rather than waiting on `closed`.
      close();
    } catch (err) {
      error(err);
    }
  };

  const raw = connect({ hostname: host, port }, { secureTransport: ssl ? 'starttls' : 'off', allowHalfOpen: false });
  tcp.raw = raw;
  raw.opened.catch(() => {}); // reported through `closed` below
  raw.closed.then(
    () => {
      if (tcp.readyState !== 'upgrade') close();
      else {
        tcp.readyState = 'open';
        tcp.emit('secureConnect');
      }
    },
    error,
  );
  tcp.writer = raw.writable.getWriter();
  tcp.reader = raw.readable.getReader();
  // workerd reports these as unhandled when the connection fails; the failure is reported above.
  tcp.writer.closed.catch(() => {});
  tcp.reader.closed.catch(() => {});
  tcp.writer.ready.then(
    () => {
      if (tcp.readyState === 'opening') tcp.readyState = 'open';
    },
    () => {}, // the connection failed: `closed` rejects too and reports it once
  );
  if (ssl) {
    // Only the SSLRequest answer is read here; tls.connect takes the reader over after it.
    tcp.reader.read().then(
      ({ value }) => {
        if (value) tcp.emit('data', Buffer.from(value));
      },
      error,
    );
  } else {
    void tcp.read();
  }
  return tcp;
}
