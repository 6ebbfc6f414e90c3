/** The machine and tool versions a result was measured with. */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ENVOY_BIN, REPO_ROOT } from "../../scripts/cluster.js";

export interface Machine {
  cpuModel: string;
  cpus: number;
  memoryGB: number;
  kernel: string;
  node: string;
  go: string;
  envoy: string;
  ghz: string;
  commit: string;
  /** 1-minute load average when the run started: a busy machine gives noisy numbers. */
  loadAverageAtStart: number;
  virtualized: string;
}

const run = (cmd: string, args: string[]) => {
  try {
    return execFileSync(cmd, args, { cwd: REPO_ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch {
    return "";
  }
};

export function describeMachine(): Machine {
  const cpuinfo = fs.existsSync("/proc/cpuinfo") ? fs.readFileSync("/proc/cpuinfo", "utf8") : "";
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? "unknown";
  const hypervisor = /^Hypervisor vendor:\s*(.+)$/m.exec(run("lscpu", []))?.[1]?.trim();
  const stamp = (name: string) => {
    try {
      return fs.readFileSync(path.join(REPO_ROOT, ".tools", "bin", `.${name}.version`), "utf8").trim();
    } catch {
      return "unknown";
    }
  };
  const commit = run("git", ["rev-parse", "--short", "HEAD"]) || "unknown";
  const dirty = run("git", ["status", "--porcelain", "--untracked-files=no"]) !== "";
  return {
    cpuModel: model,
    cpus: os.availableParallelism?.() ?? os.cpus().length,
    memoryGB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    go: run("go", ["env", "GOVERSION"]) || "not installed",
    envoy: /\/(\d+\.\d+\.\d+)\//.exec(run(ENVOY_BIN, ["--version"]))?.[1] ?? "unknown",
    ghz: stamp("ghz"),
    commit: dirty ? `${commit}-dirty` : commit,
    loadAverageAtStart: Math.round(os.loadavg()[0]! * 100) / 100,
    virtualized: hypervisor ? `yes (${hypervisor})` : "no",
  };
}

export function machineLine(m: Machine): string {
  return (
    `${m.cpus} × ${m.cpuModel}${m.virtualized.startsWith("yes") ? ` (${m.virtualized.slice(5, -1)} VM)` : ""}, ` +
    `${m.memoryGB} GB RAM, ${m.kernel}; Node ${m.node}, ${m.go}, Envoy ${m.envoy}, ghz ${m.ghz}; commit ${m.commit}; ` +
    `load average at start ${m.loadAverageAtStart}`
  );
}
