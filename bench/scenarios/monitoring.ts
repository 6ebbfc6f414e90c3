/**
 * 6. Monitoring ingest: `clients` agents (one HTTP/2 connection each, host
 * `bench-host-<i>`, 20 series each) report batches of `pointsPerBatch`
 * samples in closed loops, first with ReportMetricsBatch (unary: acknowledged
 * per batch), then with the ReportMetrics client stream (one stream per agent,
 * acknowledged when it closes). Samples never repeat, so every one must be
 * stored: the rows added to monitoring.samples are counted afterwards and must
 * equal the samples acknowledged. The server answers a report once the
 * transaction holding it has committed (group commit), so acknowledged means
 * persisted.
 *
 * Skipped with "not available" on a branch without the monitoring service.
 */
import fs from "node:fs";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { REPO_ROOT } from "../../scripts/cluster.js";
import type { BenchContext, Row, Scenario } from "../lib/context.js";
import { startAgora, type Agora } from "../lib/agora.js";
import { measure, perThousand } from "../lib/measure.js";
import { LatencyHistogram, median } from "../lib/stats.js";

export const MONITORING_GEN = path.join(REPO_ROOT, "gen", "agora", "monitoring", "v1");

const SERIES_PER_HOST = 20;

export const monitoring: Scenario = {
  name: "monitoring",
  title: "Monitoring ingest",
  description:
    "Agents reporting batches of samples in closed loops: ReportMetricsBatch (unary) and ReportMetrics (client stream). " +
    "points/s acked = samples the server acknowledged per second; persisted = rows added to monitoring.samples per second " +
    "(counted afterwards); p50/p99 per batch (unary only: a stream is acknowledged once, at its end); CPU ms per 1k points.",
  rowLabel: "method",
  columns: [
    { key: "pointsPerSecond", label: "points/s acked", digits: 0 },
    { key: "persistedPerSecond", label: "points/s persisted", digits: 0 },
    { key: "p50Ms", label: "p50 ms/batch", digits: 1 },
    { key: "p99Ms", label: "p99 ms/batch", digits: 1 },
    { key: "cpuMsPer1k_agora", label: "CPU ms/1k points Agora", digits: 1 },
    { key: "cpuMsPer1k_postgres", label: "PostgreSQL", digits: 1 },
    { key: "peakRssMB_agora", label: "peak RSS MB", digits: 0 },
  ],
  async run(ctx: BenchContext) {
    if (!fs.existsSync(MONITORING_GEN)) {
      return { status: "skipped" as const, reason: "not available: the monitoring service is not on this branch (gen/agora/monitoring/v1 is missing)", rows: [], details: {} };
    }
    // Loaded only when the service exists, so this file compiles and runs on branches without it.
    const { MonitoringService } = await import("../../gen/agora/monitoring/v1/monitoring_pb.js");
    type SampleInit = MessageInitShape<typeof import("../../gen/agora/monitoring/v1/monitoring_pb.js").SampleSchema>;
    const { clients, pointsPerBatch, runSeconds } = ctx.settings.monitoring;
    const agora: Agora = await startAgora(ctx, "monitoring");
    try {
      const [agent] = await agora.users("agent", 1);
      const callers = Array.from({ length: clients }, () => agora.client(MonitoringService, agent!.token));
      // Sample times start an hour ago and advance 1 ms per step: unique per series, inside the raw retention.
      const t0 = Date.now() - 3_600_000;
      const step = new Array<number>(clients).fill(0);
      const batch = (client: number): { host: string; samples: SampleInit[] } => {
        const samples: SampleInit[] = [];
        while (samples.length < pointsPerBatch) {
          const at = timestampFromMs(t0 + step[client]!++);
          for (let s = 0; s < SERIES_PER_HOST && samples.length < pointsPerBatch; s++) {
            samples.push({ metric: `bench.metric_${s}`, labels: { unit: "x" }, value: Math.random() * 100, time: at });
          }
        }
        return { host: `bench-host-${client}`, samples };
      };
      const stored = async () => Number((await agora.query<{ n: string }>(`SELECT count(*) AS n FROM "monitoring".samples`))[0]!.n);

      const unary = async (seconds: number) => {
        const latency = new LatencyHistogram();
        let acked = 0;
        const deadline = performance.now() + seconds * 1000;
        await Promise.all(
          callers.map(async (c, i) => {
            while (performance.now() < deadline) {
              const sentAt = performance.now();
              const res = await c.reportMetricsBatch(batch(i));
              latency.record(performance.now() - sentAt);
              acked += Number(res.acceptedSamples);
            }
          }),
        );
        return { acked, latency };
      };
      const streamed = async (seconds: number) => {
        let acked = 0;
        const deadline = performance.now() + seconds * 1000;
        await Promise.all(
          callers.map(async (c, i) => {
            async function* messages() {
              while (performance.now() < deadline) yield batch(i);
            }
            const res = await c.reportMetrics(messages());
            acked += Number(res.acceptedSamples);
          }),
        );
        return { acked, latency: new LatencyHistogram() };
      };

      const rows: Row[] = [];
      const details: Record<string, unknown> = { clients, pointsPerBatch, seriesPerHost: SERIES_PER_HOST };
      for (const [name, load] of [
        ["ReportMetricsBatch", unary],
        ["ReportMetrics stream", streamed],
      ] as const) {
        ctx.log(`  ${name}: warm-up ${ctx.settings.warmupSeconds}s`);
        await load(ctx.settings.warmupSeconds);
        const runs: Record<string, number>[] = [];
        for (let i = 0; i < ctx.settings.runs; i++) {
          const before = await stored();
          const { result, usage } = await measure(agora.watched(), ctx.pinning, () => load(runSeconds));
          const persisted = (await stored()) - before;
          const m: Record<string, number> = {
            pointsPerSecond: result.acked / usage.seconds,
            persistedPerSecond: persisted / usage.seconds,
            acked: result.acked,
            persisted,
            cpuMsPer1k_agora: perThousand(usage.cpuMs.agora ?? 0, result.acked),
            cpuMsPer1k_postgres: perThousand(usage.cpuMs.postgres ?? 0, result.acked),
            peakRssMB_agora: usage.peakRssMB.agora ?? Number.NaN,
          };
          if (result.latency.count > 0) Object.assign(m, { p50Ms: result.latency.percentile(50), p99Ms: result.latency.percentile(99) });
          runs.push(m);
          ctx.log(`  ${name}: run ${i + 1}/${ctx.settings.runs}: ${Math.round(m.pointsPerSecond!)} points/s acked, ${persisted} of ${result.acked} persisted`);
        }
        const metrics: Record<string, number> = {};
        for (const k of Object.keys(runs[0]!)) metrics[k] = median(runs.map((r) => r[k]!));
        metrics.lostPoints = runs.reduce((a, r) => a + Math.max(0, r.acked! - r.persisted!), 0);
        const notes = metrics.lostPoints > 0 ? [`${metrics.lostPoints} acknowledged points not found in PostgreSQL`] : [];
        rows.push({ name, metrics, notes });
        details[name] = runs;
      }
      return { status: "ok" as const, rows, details };
    } finally {
      await agora.stop();
    }
  },
};
