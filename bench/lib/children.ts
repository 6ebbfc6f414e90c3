/**
 * Every process the bench starts itself is tracked here, so an interrupted or
 * failed run never leaves a server behind: `killTracked` ends exactly these
 * (by pid), nothing else.
 */
import type { ChildProcess } from "node:child_process";

const tracked = new Set<ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  tracked.add(child);
  child.once("exit", () => tracked.delete(child));
  return child;
}

export function trackPid(pid: number): void {
  extraPids.add(pid);
}

const extraPids = new Set<number>();

/** SIGKILL to every tracked process still running. */
export function killTracked(): void {
  for (const child of tracked) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  for (const pid of extraPids) {
    try {
      process.kill(pid, 0);
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  extraPids.clear();
}
