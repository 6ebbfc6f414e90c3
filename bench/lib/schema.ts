/**
 * The JSON a bench run writes (bench/results/<timestamp>.json and latest.json),
 * and its check: run.ts refuses to write an invalid result, and the CI smoke
 * test (test/e2e/bench-quick.test.ts) checks what a quick run wrote.
 */
import type { ScenarioResult } from "./context.js";
import type { Machine } from "./machine.js";
import type { Settings } from "./context.js";

export const SCHEMA = "agora-bench/1";

/** Every scenario, in the order they run. */
export const SCENARIO_NAMES = ["baselines", "gateway", "chat", "reservations", "stock", "catalog", "files", "monitoring", "game"] as const;

export interface BenchResult {
  schema: typeof SCHEMA;
  mode: "full" | "quick";
  /** Scenarios chosen with --only (all when null). */
  only: string[] | null;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  machine: Machine;
  pinning: { server: string | null; loadgen: string | null; note: string };
  settings: Settings;
  scenarios: Record<string, ScenarioResult>;
  /** The summary tables, as printed. */
  markdown: string;
}

/** Problems with a result; empty when it is valid. `expected` lists scenarios that must be present. */
export function validate(result: unknown, expected: readonly string[] = SCENARIO_NAMES): string[] {
  const problems: string[] = [];
  const r = result as Partial<BenchResult>;
  if (!r || typeof r !== "object") return ["not an object"];
  if (r.schema !== SCHEMA) problems.push(`schema is ${String(r.schema)}, expected ${SCHEMA}`);
  if (r.mode !== "full" && r.mode !== "quick") problems.push(`mode is ${String(r.mode)}`);
  for (const key of ["startedAt", "finishedAt", "markdown"] as const) if (typeof r[key] !== "string") problems.push(`${key} missing`);
  if (!Number.isFinite(r.durationSeconds)) problems.push("durationSeconds is not a finite number");
  if (!r.machine || typeof r.machine.cpus !== "number") problems.push("machine description missing");
  for (const name of expected) {
    const s = r.scenarios?.[name];
    if (!s) {
      problems.push(`scenario ${name} missing`);
      continue;
    }
    if (!["ok", "skipped", "failed"].includes(s.status)) problems.push(`${name}: status ${String(s.status)}`);
    if (s.status !== "ok" && !s.reason) problems.push(`${name}: ${s.status} without a reason`);
    if (!Number.isFinite(s.seconds)) problems.push(`${name}: seconds is not finite`);
    if (!Array.isArray(s.rows)) {
      problems.push(`${name}: rows missing`);
      continue;
    }
    if (s.status === "ok" && s.rows.length === 0) problems.push(`${name}: ok without rows`);
    for (const row of s.rows) {
      if (typeof row.name !== "string" || !row.metrics) problems.push(`${name}: malformed row`);
      for (const [k, v] of Object.entries(row.metrics ?? {})) {
        if (typeof v !== "number" || !Number.isFinite(v)) problems.push(`${name} / ${row.name}: ${k} = ${String(v)} is not a finite number`);
      }
    }
  }
  return problems;
}
