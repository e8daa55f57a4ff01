// The watchdog of `npm start`: a small detached process that outlives its parent by design. The
// parent tells it, one line at a time on stdin, what to clean up:
//   group <pgid>     a process group to end (wrangler and its workerd)
//   pidfile <path>   a PostgreSQL postmaster.pid: its server gets a fast shutdown (SIGINT)
//   done             the parent cleaned up itself; exit without doing anything
// When stdin ends without "done", the parent died (even by SIGKILL, which no handler sees: the
// kernel closes its end of the pipe), and the watchdog stops everything it was told about.
// Plain JavaScript on purpose: it must start in milliseconds, without tsx.
import { readFileSync } from 'node:fs';

const groups = new Set();
const pidfiles = new Set();
let done = false;
let buffer = '';

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

function signal(pid, name) {
  try {
    process.kill(pid, name);
  } catch {
    /* already gone */
  }
}

function postmasterPid(path) {
  try {
    const pid = Number(readFileSync(path, 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null; // no file: the server is not running
  }
}

function cleanUp() {
  if (done) process.exit(0);
  done = true;
  for (const pgid of groups) signal(-pgid, 'SIGTERM');
  const servers = [...pidfiles].map(postmasterPid).filter((pid) => pid !== null);
  for (const pid of servers) signal(pid, 'SIGINT'); // PostgreSQL's "fast" shutdown
  const started = Date.now();
  const timer = setInterval(() => {
    const left = [...groups].filter((pgid) => alive(-pgid));
    const serversLeft = servers.filter(alive);
    if ((left.length === 0 && serversLeft.length === 0) || Date.now() - started > 10_000) {
      for (const pgid of left) signal(-pgid, 'SIGKILL');
      for (const pid of serversLeft) signal(pid, 'SIGQUIT'); // immediate shutdown
      clearInterval(timer);
      process.exit(0);
    }
    if (Date.now() - started > 5_000) for (const pgid of left) signal(-pgid, 'SIGKILL');
  }, 100);
}

// Detached, it has no terminal; ignore the signals a closing session could still send.
for (const name of ['SIGINT', 'SIGHUP']) process.on(name, () => {});

process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffer += chunk;
  for (let end = buffer.indexOf('\n'); end >= 0; end = buffer.indexOf('\n')) {
    const line = buffer.slice(0, end).trim();
    buffer = buffer.slice(end + 1);
    const space = line.indexOf(' ');
    const [word, rest] = space < 0 ? [line, ''] : [line.slice(0, space), line.slice(space + 1)];
    if (word === 'group' && Number(rest) > 1) groups.add(Number(rest));
    else if (word === 'pidfile' && rest) pidfiles.add(rest);
    else if (word === 'done') {
      done = true;
      process.exit(0);
    }
  }
});
process.stdin.on('end', cleanUp);
process.stdin.on('error', cleanUp);
