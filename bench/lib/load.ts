/** A load of calls (ghz, or the Go load generator) with the server side's usage: warm-up, measured runs, medians. */
import os from "node:os";
import path from "node:path";
import { Code, type ConnectError } from "@connectrpc/connect";
import type { BenchContext } from "./context.js";
import { ghz, type GhzOptions, type GhzSummary } from "./ghz.js";
import { measure, perThousand, type Usage, type Watched } from "./measure.js";
import { cpuList } from "./proc.js";
import { median, type LatencyHistogram } from "./stats.js";

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

/** One load of a scenario: what it is called, whose usage is measured, and how to run it for `seconds`. */
export interface LoadPlan {
  label: string;
  watched: Watched[];
  run: (seconds: number) => Promise<GhzSummary>;
}

/** A ghz run of `spec` with the bench's workers, connections and CPUs. */
export function ghzRun(ctx: BenchContext, spec: LoadSpec): LoadPlan["run"] {
  const s = ctx.settings;
  return (seconds) =>
    ghz({
      concurrency: s.ghzConcurrency,
      connections: s.ghzConnections,
      ...spec,
      durationSeconds: seconds,
      cpus: cpuList(ctx.pinning.loadgen).length || os.availableParallelism(),
      tmpDir: path.join(ctx.runDir, "ghz"),
    });
}

export async function ghzLoad(ctx: BenchContext, label: string, watched: Watched[], spec: LoadSpec): Promise<LoadResult> {
  return callLoad(ctx, label, watched, ghzRun(ctx, spec));
}

/** A load driven by `run(seconds)`, which reports as ghz does: a warm-up, then the measured runs. */
export async function callLoad(ctx: BenchContext, label: string, watched: Watched[], run: LoadPlan["run"]): Promise<LoadResult> {
  const [result] = await interleavedLoads(ctx, [{ label, watched, run }]);
  return result!;
}

/**
 * Loads whose figures are compared with each other (a server against its peer), measured in turns: run 1 of each in
 * order, then run 2 of each, and so on, so that a drift of this VM's speed (a fifth or more over minutes) falls on
 * every load of a round alike instead of on whichever ran later. Each run follows a warm-up of its own: after the
 * other loads' turns a server is idle for a minute or so, and its first seconds back cost 20-60% more CPU per call
 * than the next (Agora's Health/Check, four alternations), which would make every row slower than it runs.
 */
export async function interleavedLoads(ctx: BenchContext, plans: LoadPlan[]): Promise<LoadResult[]> {
  const s = ctx.settings;
  // One load alone runs back to back: its first warm-up is enough.
  const warmEachRun = plans.length > 1;
  const runs = plans.map((): RunResult[] => []);
  for (let i = 0; i < s.runs; i++) {
    for (const [j, p] of plans.entries()) {
      if (i === 0) ctx.log(`  ${p.label}: warm-up ${s.warmupSeconds}s${warmEachRun ? " before each run" : ""}`);
      if (i === 0 || warmEachRun) await p.run(s.warmupSeconds);
      const { result, usage } = await measure(p.watched, ctx.pinning, () => p.run(s.runSeconds));
      runs[j]!.push({ ghz: result, usage });
      ctx.log(`  ${p.label}: run ${i + 1}/${s.runs}: ${Math.round(result.rps)} ok/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, ${result.errors} errors`);
    }
  }
  return plans.map((p, j) => ({ metrics: reduce(runs[j]!, p.watched), runs: runs[j]!, errorSample: Object.assign({}, ...runs[j]!.map((r) => r.ghz.errorSample)) }));
}

/** Run by run ratios of two interleaved loads' throughput (`of` ÷ `to`): how much the ratio of their medians moves. */
export function pairedRatios(of: LoadResult, to: LoadResult): number[] {
  return of.runs.map((r, i) => Math.round((r.ghz.rps / to.runs[i]!.ghz.rps) * 1000) / 1000);
}

/** Each of `clients` runs `step(client, index, k)` (k counting its own calls) in a closed loop until `seconds` have passed. */
export async function closedLoops<C>(clients: C[], seconds: number, step: (client: C, index: number, k: number) => Promise<void>): Promise<void> {
  const deadline = performance.now() + seconds * 1000;
  await Promise.all(
    clients.map(async (c, i) => {
      for (let k = 0; performance.now() < deadline; k++) await step(c, i, k);
    }),
  );
}

/** Counts an unexpected error of a TypeScript harness's call under its code and message (a run's `errors`). */
export function countError(errors: Record<string, number>, e: ConnectError): void {
  const name = `${Code[e.code] ?? e.code}: ${e.rawMessage.slice(0, 160)}`;
  errors[name] = (errors[name] ?? 0) + 1;
}

/** The unexpected errors of all measured runs together. */
export function totalErrors(runs: { result: { errors: Record<string, number> } }[]): number {
  return runs.reduce((a, r) => a + Object.values(r.result.errors).reduce((x, n) => x + n, 0), 0);
}

/**
 * A TypeScript harness's measured runs (after its warm-up): `load(seconds)` run ctx.settings.runs times, each under
 * measure() of `watched`, and logged as `describe` puts it.
 */
export async function measuredRuns<T>(
  ctx: BenchContext,
  watched: Watched[],
  seconds: number,
  load: (seconds: number) => Promise<T>,
  describe: (result: T, usage: Usage) => string,
): Promise<{ result: T; usage: Usage }[]> {
  const runs: { result: T; usage: Usage }[] = [];
  for (let i = 0; i < ctx.settings.runs; i++) {
    const run = await measure(watched, ctx.pinning, () => load(seconds));
    runs.push(run);
    ctx.log(`  run ${i + 1}/${ctx.settings.runs}: ${describe(run.result, run.usage)}`);
  }
  return runs;
}

/** Medians over measuredRuns: Agora's and PostgreSQL's CPU per 1,000 of a run's `operations`, and Agora's peak RSS. */
export function serverUsage<T>(runs: { result: T; usage: Usage }[], operations: (result: T) => number): Record<string, number> {
  return {
    cpuMsPer1k_agora: median(runs.map((r) => perThousand(r.usage.cpuMs.agora ?? 0, operations(r.result)))),
    cpuMsPer1k_postgres: median(runs.map((r) => perThousand(r.usage.cpuMs.postgres ?? 0, operations(r.result)))),
    peakRssMB_agora: median(runs.map((r) => r.usage.peakRssMB.agora ?? Number.NaN)),
  };
}

/** The median over the runs of `count(result)` per second of the run. */
export function medianPerSecond<T>(runs: { result: T; usage: Usage }[], count: (result: T) => number): number {
  return median(runs.map((r) => count(r.result) / r.usage.seconds));
}

/** The medians over the runs of the p50 and p99 of the latencies `of(result)`. */
export function latencyMedians<T>(runs: { result: T }[], of: (result: T) => LatencyHistogram): { p50Ms: number; p99Ms: number } {
  return { p50Ms: median(runs.map((r) => of(r.result).percentile(50))), p99Ms: median(runs.map((r) => of(r.result).percentile(99))) };
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
