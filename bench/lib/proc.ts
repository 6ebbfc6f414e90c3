/**
 * Linux process accounting for the bench: CPU pinning with taskset, process
 * trees, CPU time from /proc/<pid>/stat (utime + stime), peak RSS from
 * /proc/<pid>/status (VmHWM, reset through clear_refs), and per-CPU busy time
 * from /proc/stat. Everything degrades to "unknown" rather than failing.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface Pinning {
  /** CPU list for the servers under test (taskset syntax), or undefined when not pinned. */
  server: string | undefined;
  loadgen: string | undefined;
  note: string;
}

/** Servers on CPU 0, load generators on CPU 1, when taskset exists and there are at least two CPUs. */
export function choosePinning(enabled: boolean): Pinning {
  if (!enabled) return { server: undefined, loadgen: undefined, note: "disabled (--no-pin)" };
  const cpus = os.availableParallelism?.() ?? os.cpus().length;
  if (cpus < 2) return { server: undefined, loadgen: undefined, note: `not pinned: only ${cpus} CPU` };
  try {
    execFileSync("taskset", ["-p", String(process.pid)], { stdio: "ignore" });
  } catch {
    return { server: undefined, loadgen: undefined, note: "not pinned: taskset is missing" };
  }
  const last = cpus - 1;
  return {
    server: cpus === 2 ? "0" : `0-${Math.floor(last / 2)}`,
    loadgen: cpus === 2 ? "1" : `${Math.floor(last / 2) + 1}-${last}`,
    note: "",
  };
}

/** Sets the CPU affinity of every thread of `pid`; false when it could not. */
export function pin(pid: number, cpus: string | undefined): boolean {
  if (!cpus) return false;
  try {
    execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Pins a process and all its descendants (PostgreSQL's backends, say). */
export function pinTree(pid: number, cpus: string | undefined): void {
  for (const p of [pid, ...descendants(pid)]) pin(p, cpus);
}

interface StatLine {
  pid: number;
  comm: string;
  ppid: number;
  /** utime + stime, in clock ticks. */
  ticks: number;
  /** cutime + cstime: the ticks of its children that ended and were waited for. */
  endedChildrenTicks: number;
}

function readStat(pid: number): StatLine | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // comm is in parentheses and may contain spaces: split after the last ')'.
  const close = text.lastIndexOf(")");
  const comm = text.slice(text.indexOf("(") + 1, close);
  const fields = text.slice(close + 2).split(" ");
  // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17.
  return { pid, comm, ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]), endedChildrenTicks: Number(fields[13]) + Number(fields[14]) };
}

function allStats(): StatLine[] {
  const out: StatLine[] = [];
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

export function descendants(pid: number): number[] {
  const stats = allStats();
  const children = new Map<number, number[]>();
  for (const s of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s.pid]);
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/** Direct children of `pid` whose command name is `comm` (e.g. the envoy a cluster started). */
export function childrenNamed(pid: number, comm: string): number[] {
  return allStats().filter((s) => s.ppid === pid && s.comm === comm).map((s) => s.pid);
}

/** CPU milliseconds (user + system) used so far by the process, or by it and its descendants (those that ended included). */
export function cpuMs(pid: number, tree = false): number {
  const pids = tree ? [pid, ...descendants(pid)] : [pid];
  let ticks = 0;
  for (const p of pids) {
    const stat = readStat(p);
    // A tree's members that ended (PostgreSQL's backends when a pool closes idle connections) count on:
    // their time moves to their parent's cutime/cstime when it waits for them.
    ticks += (stat?.ticks ?? 0) + (tree ? (stat?.endedChildrenTicks ?? 0) : 0);
  }
  return (ticks * 1000) / CLK_TCK;
}

function statusField(pid: number, field: string): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Resident set size now, MB. */
export const rssMB = (pid: number) => statusField(pid, "VmRSS");
/** Peak resident set size since start (or since resetPeakRss), MB. */
export const peakRssMB = (pid: number) => statusField(pid, "VmHWM");

/** Resets VmHWM to the current RSS (Linux >= 4.0, our own or root's processes); false when not allowed. */
export function resetPeakRss(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** Busy and total jiffies per CPU from /proc/stat. */
export function cpuTimes(): Map<string, { busy: number; total: number }> {
  const out = new Map<string, { busy: number; total: number }>();
  try {
    for (const line of fs.readFileSync("/proc/stat", "utf8").split("\n")) {
      const m = /^cpu(\d+)\s+(.*)$/.exec(line);
      if (!m) continue;
      const v = m[2]!.trim().split(/\s+/).map(Number);
      // user nice system idle iowait irq softirq steal (guest time is already inside user)
      const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
      const idle = (v[3] ?? 0) + (v[4] ?? 0);
      out.set(m[1]!, { busy: total - idle, total });
    }
  } catch {
    // not Linux: no per-CPU numbers
  }
  return out;
}

/** Expands a taskset CPU list ("0", "0-3", "0,2") into CPU numbers. */
export function cpuList(list: string | undefined): string[] {
  if (!list) return [];
  const out: string[] = [];
  for (const part of list.split(",")) {
    const [a, b] = part.split("-").map(Number);
    for (let c = a!; c <= (b ?? a!); c++) out.push(String(c));
  }
  return out;
}
