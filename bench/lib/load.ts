/** A load of calls (ghz, or the Go load generator) with the server side's usage: warm-up, measured runs, medians. */
import os from "node:os";
import path from "node:path";
import type { BenchContext } from "./context.js";
import { ghz, type GhzOptions, type GhzSummary } from "./ghz.js";
import { measure, perThousand, type Usage, type Watched } from "./measure.js";
import { cpuList } from "./proc.js";
import { median } from "./stats.js";

export type LoadSpec = Omit<GhzOptions, "durationSeconds" | "cpus" | "tmpDir" | "concurrency" | "connections"> &
  Partial<Pick<GhzOptions, "concurrency" | "connections">>;

export interface RunResult {
  ghz: GhzSummary;
  usage: Usage;
}

export interface LoadResult {
  /** Medians over the measured runs. */
  metrics: Record<string, number>;
  runs: RunResult[];
  errorSample: Record<string, number>;
}

export async function ghzLoad(ctx: BenchContext, label: string, watched: Watched[], spec: LoadSpec): Promise<LoadResult> {
  const s = ctx.settings;
  return callLoad(ctx, label, watched, (seconds) =>
    ghz({
      concurrency: s.ghzConcurrency,
      connections: s.ghzConnections,
      ...spec,
      durationSeconds: seconds,
      cpus: cpuList(ctx.pinning.loadgen).length || os.availableParallelism(),
      tmpDir: path.join(ctx.runDir, "ghz"),
    }),
  );
}

/** A load driven by `run(seconds)`, which reports as ghz does: a warm-up, then the measured runs. */
export async function callLoad(ctx: BenchContext, label: string, watched: Watched[], run: (seconds: number) => Promise<GhzSummary>): Promise<LoadResult> {
  const s = ctx.settings;
  ctx.log(`  ${label}: warm-up ${s.warmupSeconds}s`);
  await run(s.warmupSeconds);
  const runs: RunResult[] = [];
  for (let i = 0; i < s.runs; i++) {
    const { result, usage } = await measure(watched, ctx.pinning, () => run(s.runSeconds));
    runs.push({ ghz: result, usage });
    ctx.log(`  ${label}: run ${i + 1}/${s.runs}: ${Math.round(result.rps)} ok/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, ${result.errors} errors`);
  }
  return { metrics: reduce(runs, watched), runs, errorSample: Object.assign({}, ...runs.map((r) => r.ghz.errorSample)) };
}

/** Median of each metric over the runs: throughput, latency, CPU per 1k calls and peak RSS of each watched process. */
export function reduce(runs: RunResult[], watched: Watched[]): Record<string, number> {
  const m: Record<string, number> = {
    rps: median(runs.map((r) => r.ghz.rps)),
    p50Ms: median(runs.map((r) => r.ghz.p50Ms)),
    p99Ms: median(runs.map((r) => r.ghz.p99Ms)),
    errors: median(runs.map((r) => r.ghz.errors)),
  };
  for (const w of watched) {
    m[`cpuMsPer1k_${w.name}`] = median(runs.map((r) => perThousand(r.usage.cpuMs[w.name] ?? 0, r.ghz.ok)));
    if (w.rss) m[`peakRssMB_${w.name}`] = median(runs.map((r) => r.usage.peakRssMB[w.name] ?? Number.NaN));
  }
  // Cores' worth of CPU: the load generator (ghz + this process) and the watched server processes.
  m.loadgenCores = median(runs.map((r) => (r.ghz.loadgenCpuMs + r.usage.selfCpuMs) / 1000 / r.usage.seconds));
  m.serverCores = median(runs.map((r) => Object.values(r.usage.cpuMs).reduce((a, b) => a + b, 0) / 1000 / r.usage.seconds));
  const serverBusy = runs.map((r) => r.usage.serverCpuBusy).filter((x): x is number => x !== undefined);
  if (serverBusy.length) m.serverCpuBusy = median(serverBusy);
  return m;
}

/** Remarks a reader needs next to the numbers. */
export function loadNotes(ctx: BenchContext, m: Record<string, number>): string[] {
  const notes: string[] = [];
  const loadgenCpus = cpuList(ctx.pinning.loadgen).length || os.availableParallelism();
  if ((m.loadgenCores ?? 0) > 0.9 * loadgenCpus) notes.push("load generator saturated: the server may be faster than shown");
  if ((m.errors ?? 0) > 0) notes.push(`${m.errors} failed calls`);
  return notes;
}
