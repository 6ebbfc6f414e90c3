/**
 * 6. Monitoring ingest: points per second acknowledged and persisted.
 *
 * SLOT: agora.monitoring.v1.MonitoringService (ReportMetrics client stream,
 * ReportMetricsBatch unary) is not on this branch yet. Until
 * gen/agora/monitoring/v1/monitoring_pb.ts exists this scenario reports
 * "skipped: not available". To fill it in: `settings.monitoring` has the
 * knobs (clients, points per batch, duration); measure with `measure()` over
 * `agora.watched()`, count acknowledged points from the responses, count
 * persisted ones with `agora.query()` on the monitoring schema, and return rows
 * with the columns below (points/s acknowledged, persisted, p50/p99 per batch,
 * CPU ms per 1k points, peak RSS).
 */
import fs from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "../../scripts/cluster.js";
import type { BenchContext, Scenario } from "../lib/context.js";

export const MONITORING_GEN = path.join(REPO_ROOT, "gen", "agora", "monitoring", "v1");

export const monitoring: Scenario = {
  name: "monitoring",
  title: "Monitoring ingest",
  description:
    "MonitoringService ReportMetricsBatch (unary) and ReportMetrics (client stream): points per second acknowledged, " +
    "points persisted (counted in PostgreSQL afterwards), latency per batch, CPU ms per 1k points, peak RSS.",
  rowLabel: "method",
  columns: [
    { key: "pointsPerSecond", label: "points/s acked", digits: 0 },
    { key: "persistedPerSecond", label: "points/s persisted", digits: 0 },
    { key: "p50Ms", label: "p50 ms/batch", digits: 2 },
    { key: "p99Ms", label: "p99 ms/batch", digits: 2 },
    { key: "cpuMsPer1k_agora", label: "CPU ms/1k points", digits: 2 },
    { key: "peakRssMB_agora", label: "peak RSS MB", digits: 0 },
  ],
  async run(_ctx: BenchContext) {
    if (!fs.existsSync(MONITORING_GEN)) {
      return { status: "skipped" as const, reason: "not available: the monitoring service is not on this branch (gen/agora/monitoring/v1 is missing)", rows: [], details: {} };
    }
    return {
      status: "skipped" as const,
      reason: "not available: the monitoring service exists but its bench scenario is not written yet (bench/scenarios/monitoring.ts)",
      rows: [],
      details: {},
    };
  },
};
