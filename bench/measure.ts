// Small measuring tools: workerd's memory and file descriptors from /proc, percentiles, waiting.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

export interface MemorySample {
  /** Highest VmRSS seen by sampling, KiB. */
  peakRssKb: number;
  /** VmHWM at the end (the kernel's own peak since the reset), KiB. */
  hwmKb: number;
  /** VmRSS when sampling started, KiB. */
  startRssKb: number;
  /** Most open file descriptors seen. */
  peakFds: number;
  samples: number;
  /** workerd CPU time (user + system) during the phase, ms. */
  workerdCpuMs: number;
  /** Share of the whole machine's CPU time that was busy during the phase, 0..1. */
  machineBusy: number;
}

/** Clock ticks per second for /proc times (USER_HZ; 100 on Linux everywhere in practice). */
const HZ = 100;

export function processCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After "pid (comm)": state is field 0, utime field 11, stime field 12.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / HZ;
  } catch {
    return 0;
  }
}

function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

function statusKb(pid: number, field: string): number {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return match ? Number(match[1]) : 0;
}

export function rssKb(pid: number): number {
  return statusKb(pid, 'VmRSS');
}

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** Samples VmRSS every intervalMs (and fds every 5th sample) until stop(). */
export class Sampler {
  private timer: NodeJS.Timeout | null = null;
  private result: MemorySample;
  private ticks = 0;

  constructor(private readonly pid: number | null, private readonly intervalMs = 50) {
    this.result = { peakRssKb: 0, hwmKb: 0, startRssKb: 0, peakFds: 0, samples: 0, workerdCpuMs: 0, machineBusy: 0 };
  }

  private cpuAtStart = 0;
  private ticksAtStart = { busy: 0, total: 0 };

  start(): void {
    const pid = this.pid;
    if (pid === null) return;
    // "5" resets VmHWM to the current RSS (Linux ≥ 4.0), so VmHWM covers this phase only.
    try {
      writeFileSync(`/proc/${pid}/clear_refs`, '5');
    } catch {
      // not permitted: VmHWM is then the process's lifetime peak (reported as such)
    }
    this.result.startRssKb = rssKb(pid);
    this.cpuAtStart = processCpuMs(pid);
    this.ticksAtStart = machineTicks();
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
  }

  private sample(): void {
    if (this.pid === null) return;
    try {
      const rss = rssKb(this.pid);
      this.result.peakRssKb = Math.max(this.result.peakRssKb, rss);
      if (this.ticks++ % 5 === 0) this.result.peakFds = Math.max(this.result.peakFds, fdCount(this.pid));
      this.result.samples++;
    } catch {
      // workerd exited: the phase will report its own failure
    }
  }

  stop(): MemorySample {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.pid !== null) {
      this.sample();
      this.result.workerdCpuMs = processCpuMs(this.pid) - this.cpuAtStart;
      const ticks = machineTicks();
      const total = ticks.total - this.ticksAtStart.total;
      this.result.machineBusy = total > 0 ? (ticks.busy - this.ticksAtStart.busy) / total : 0;
      try {
        this.result.hwmKb = statusKb(this.pid, 'VmHWM');
      } catch {
        // gone
      }
    }
    return { ...this.result };
  }
}

/** Nearest-rank percentile of numbers (p in 0..100); NaN for none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));

/** Polls probe every everyMs until it returns a value, or throws after ms. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false>,
  ms: number,
  everyMs = 20,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export const mib = (kb: number) => kb / 1024;
