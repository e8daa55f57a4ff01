// workerd logs every failed socket and every rejected promise nobody awaited, with a native stack
// trace, through Miniflare onto the test run's stderr. The worker tests cause such failures on
// purpose (a database port that refuses, connections killed mid-drain, a target that resets, an
// ftp:// URL, a host that does not resolve); most of the lines come from postgres.js's Cloudflare
// socket polyfill, which leaves `writer.ready` rejected and unhandled when a connect fails
// (porsager/postgres#1196 describes its sibling in read(); not fixed in 3.4.9). The tests assert
// what the Worker does about each failure; these lines only bury a green run's summary.
//
// Installed in the vitest main process (where Miniflare writes them, one line per write, to stdout
// or stderr by level; a native stack trace is the next line) by the global setup; a line about
// anything else passes through untouched. SHOW_WORKERD_LOGS=1 shows everything.

/** Start of a workerd log message (Miniflare writes one message per write call). */
const WORKERD_MESSAGE = /^(uncaught exception;|exception = kj\/|e = kj\/|Socket proxy disconnected abruptly; e = kj\/)/;

/** The failures tests provoke on purpose. */
const EXPECTED = [
  'Network connection lost',
  'connect(): Connection refused',
  'stream disconnected prematurely',
  'Connection reset by peer',
  'DNS lookup failed',
  // A request aborted at its timeout while its body was being read.
  'abortRead() has been called',
  'The headers sent by the server are not valid',
  'Fetch API cannot load',
  'jsg.Error: internal error',
  'Error: internal error; reference =',
];

export function isExpectedWorkerdNoise(text: string): boolean {
  return WORKERD_MESSAGE.test(text) && EXPECTED.some((needle) => text.includes(needle));
}

/** The native stack trace workerd prints on the line after an exception. */
const NATIVE_STACK = /^stack: \S*workerd@/;

/** Filters process.stdout and stderr; returns how many messages it hid so far and a way to undo it. */
export function quietWorkerd(): { hidden: () => number; restore: () => void } {
  let hidden = 0;
  if (process.env.SHOW_WORKERD_LOGS) return { hidden: () => 0, restore: () => {} };
  let afterHidden = false;
  const streams = [process.stdout, process.stderr];
  const originals = streams.map((stream) => stream.write);
  streams.forEach((stream, i) => {
    const original = originals[i] as (...args: unknown[]) => boolean;
    const write = (chunk: unknown, ...rest: unknown[]): boolean => {
      const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString() : '';
      const noise = isExpectedWorkerdNoise(text);
      if (noise || (afterHidden && NATIVE_STACK.test(text))) {
        if (noise) hidden++;
        afterHidden = true;
        const callback = rest.find((arg): arg is () => void => typeof arg === 'function');
        callback?.();
        return true;
      }
      afterHidden = false;
      return original.call(stream, chunk, ...rest);
    };
    stream.write = write as typeof stream.write;
  });
  return {
    hidden: () => hidden,
    restore: () => {
      streams.forEach((stream, i) => {
        stream.write = originals[i]!;
      });
    },
  };
}
