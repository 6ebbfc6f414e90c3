/** Markdown tables of a bench result (the README's performance section). */
import type { Column, Row, ScenarioResult } from "./context.js";

function cell(value: number | undefined, digits: number): string {
  if (value === undefined || !Number.isFinite(value)) return "—";
  const fixed = value.toFixed(digits);
  // Thousands separators for large whole numbers only.
  return Math.abs(value) >= 10_000 && digits === 0 ? Number(fixed).toLocaleString("en-US") : fixed;
}

export function markdownTable(rowLabel: string, columns: Column[], rows: Row[]): string {
  const head = [rowLabel, ...columns.map((c) => c.label), "notes"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map((_, i) => (i === 0 || i === head.length - 1 ? "---" : "---:")).join("|")}|`];
  for (const r of rows) {
    const cells = [r.name, ...columns.map((c) => cell(r.metrics[c.key], c.digits ?? 1)), (r.notes ?? []).join("; ")];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

export function scenarioSection(title: string, rowLabel: string, columns: Column[], result: ScenarioResult): string {
  const heading = `#### ${title}`;
  if (result.status !== "ok") return `${heading}\n\n${result.status}: ${result.reason ?? ""}`;
  const extra = typeof result.details.summaryLine === "string" ? `\n\n${result.details.summaryLine}` : "";
  return `${heading}\n\n${markdownTable(rowLabel, columns, result.rows)}${extra}`;
}
