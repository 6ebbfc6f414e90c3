/**
 * What the server side spends while a load runs: CPU time of each named server
 * process (from /proc/<pid>/stat), its peak RSS over the run (VmHWM after a
 * reset; a 250 ms VmRSS sampler when the reset is not allowed), and how busy
 * the server and load-generator CPUs were (from /proc/stat).
 */
import { cpuList, cpuMs, cpuTimes, peakRssMB, resetPeakRss, rssMB, type Pinning } from "./proc.js";

export interface Watched {
  name: string;
  pid: number;
  /** Count the descendants' CPU too (PostgreSQL: the postmaster and its backends). */
  tree?: boolean;
  /** Report peak RSS (not for process trees: shared memory would be counted many times). */
  rss?: boolean;
  /** A load generator of ours (the Go program): its CPU counts in `loadgenCpuMs`, not in `cpuMs`. */
  loadgen?: boolean;
}

export interface Usage {
  seconds: number;
  /** CPU milliseconds per watched process over the run. */
  cpuMs: Record<string, number>;
  /** Peak RSS over the run, MB, for watched processes with `rss`. */
  peakRssMB: Record<string, number>;
  /** CPU milliseconds of this process (the TypeScript load harnesses run here). */
  selfCpuMs: number;
  /** selfCpuMs plus the CPU of the watched load generators. */
  loadgenCpuMs: number;
  /** Busy fraction (0..1) of the server CPUs, all processes included (others' work shows here too), when pinned. */
  serverCpuBusy?: number;
}

export async function measure<T>(watched: Watched[], pinning: Pinning, fn: () => Promise<T>): Promise<{ result: T; usage: Usage }> {
  const cpuBefore = new Map(watched.map((w) => [w.name, cpuMs(w.pid, w.tree)]));
  const withRss = watched.filter((w) => w.rss);
  const reset = new Map(withRss.map((w) => [w.name, resetPeakRss(w.pid)]));
  const sampled = new Map<string, number>();
  const sample = () => {
    for (const w of withRss) {
      const rss = rssMB(w.pid);
      if (rss !== undefined) sampled.set(w.name, Math.max(sampled.get(w.name) ?? 0, rss));
    }
  };
  sample();
  const timer = setInterval(sample, 250);
  const timesBefore = cpuTimes();
  const selfBefore = process.cpuUsage();
  const started = performance.now();
  let result: T;
  try {
    result = await fn();
  } finally {
    clearInterval(timer);
  }
  const seconds = (performance.now() - started) / 1000;
  const timesAfter = cpuTimes();
  sample();
  const self = process.cpuUsage(selfBefore);
  const selfCpuMs = (self.user + self.system) / 1000;
  const usage: Usage = { seconds, cpuMs: {}, peakRssMB: {}, selfCpuMs, loadgenCpuMs: selfCpuMs };
  for (const w of watched) {
    const ms = cpuMs(w.pid, w.tree) - cpuBefore.get(w.name)!;
    if (w.loadgen) usage.loadgenCpuMs += ms;
    else usage.cpuMs[w.name] = ms;
  }
  for (const w of withRss) {
    const hwm = reset.get(w.name) ? peakRssMB(w.pid) : undefined;
    const peak = Math.max(hwm ?? 0, sampled.get(w.name) ?? 0);
    if (peak > 0) usage.peakRssMB[w.name] = peak;
  }
  const busy = (cpus: string[]) => {
    let b = 0;
    let t = 0;
    for (const c of cpus) {
      const before = timesBefore.get(c);
      const after = timesAfter.get(c);
      if (!before || !after) return undefined;
      b += after.busy - before.busy;
      t += after.total - before.total;
    }
    return t > 0 ? b / t : undefined;
  };
  if (pinning.server) usage.serverCpuBusy = busy(cpuList(pinning.server));
  return { result, usage };
}

/** CPU milliseconds per 1,000 operations. */
export const perThousand = (ms: number, operations: number) => (operations > 0 ? (ms * 1000) / operations : Number.NaN);
