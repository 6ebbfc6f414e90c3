/**
 * Runs ghz (https://ghz.sh) against a gRPC target and reads its JSON report.
 * ghz runs on the load-generator CPUs (it inherits the bench's own affinity).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "../../scripts/cluster.js";
import { track } from "./children.js";
import { cpuMs } from "./proc.js";

export const GHZ_BIN = path.join(REPO_ROOT, ".tools", "bin", "ghz");

export interface GhzOptions {
  /** host:port */
  target: string;
  /** package.Service/Method */
  call: string;
  /** Proto file (relative to the repository) and import paths. */
  proto: string;
  importPaths: string[];
  data: object;
  metadata?: Record<string, string>;
  concurrency: number;
  connections: number;
  durationSeconds: number;
  /** Fixed request rate (open loop); unset: as fast as the workers go. */
  rps?: number;
  /** GOMAXPROCS of ghz: the number of CPUs it is pinned to. */
  cpus: number;
  /** Where the JSON report goes while it is read. */
  tmpDir: string;
}

export interface GhzSummary {
  /** Calls that ended OK. */
  ok: number;
  /** Calls that failed, apart from the ones ghz cut off when the duration ran out. */
  errors: number;
  /** OK calls per second over the run. */
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  meanMs: number;
  seconds: number;
  /** CPU time ghz itself used (polled from /proc every 100 ms), ms. */
  loadgenCpuMs: number;
  /** The most frequent error messages, when there were errors. */
  errorSample: Record<string, number>;
}

/** Errors ghz itself causes by closing connections when the duration runs out. */
const CUT_OFF = /closing|closed network connection|context canceled|the client connection is closing/i;

export async function ghz(o: GhzOptions): Promise<GhzSummary> {
  fs.mkdirSync(o.tmpDir, { recursive: true });
  const out = path.join(o.tmpDir, `ghz-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  const args = [
    "--insecure",
    "--proto", o.proto,
    "-i", o.importPaths.join(","),
    "--call", o.call,
    "-d", JSON.stringify(o.data),
    ...(o.metadata ? ["-m", JSON.stringify(o.metadata)] : []),
    "-c", String(o.concurrency),
    "--connections", String(o.connections),
    "-z", `${o.durationSeconds}s`,
    ...(o.rps ? ["--rps", String(Math.max(1, Math.round(o.rps)))] : []),
    "--cpus", String(o.cpus),
    "-O", "json",
    "-o", out,
    o.target,
  ];
  let loadgenCpuMs = 0;
  await new Promise<void>((resolve, reject) => {
    const child = track(spawn(GHZ_BIN, args, { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "pipe"] }));
    // Read before it exits (an exited child's /proc entry is gone): at most the last 100 ms are missed.
    const poll = setInterval(() => (loadgenCpuMs = Math.max(loadgenCpuMs, cpuMs(child.pid!))), 100);
    child.once("exit", () => clearInterval(poll));
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", reject);
    child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`ghz exited with ${code}: ${stderr.trim().slice(0, 500)}`))));
  });
  const report = JSON.parse(fs.readFileSync(out, "utf8")) as GhzReport;
  fs.rmSync(out, { force: true });
  return { ...summarize(report), loadgenCpuMs };
}

interface GhzReport {
  endReason: string;
  count: number;
  total: number;
  average: number;
  latencyDistribution: { percentage: number; latency: number }[] | null;
  statusCodeDistribution: Record<string, number> | null;
  errorDistribution: Record<string, number> | null;
}

function summarize(r: GhzReport): Omit<GhzSummary, "loadgenCpuMs"> {
  const seconds = r.total / 1e9;
  const ok = r.statusCodeDistribution?.OK ?? 0;
  let errors = 0;
  const errorSample: Record<string, number> = {};
  for (const [message, n] of Object.entries(r.errorDistribution ?? {})) {
    if (r.endReason === "timeout" && CUT_OFF.test(message)) continue;
    errors += n;
    errorSample[message.slice(0, 200)] = n;
  }
  const at = (p: number) => (r.latencyDistribution?.find((d) => d.percentage === p)?.latency ?? Number.NaN) / 1e6;
  return { ok, errors, rps: ok / seconds, p50Ms: at(50), p90Ms: at(90), p99Ms: at(99), meanMs: r.average / 1e6, seconds, errorSample };
}
