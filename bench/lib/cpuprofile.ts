/**
 * Summarizes V8 CPU profiles (.cpuprofile, from node --cpu-prof): self time
 * per function and per package, heaviest first. `npm run bench -- --profile`
 * prints this for every server process; it also runs on its own:
 *   tsx bench/lib/cpuprofile.ts <dir or file> [top]
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Where a frame's code comes from: an npm package, Agora's own folders, Node itself, or V8. */
function origin(url: string, name: string): string {
  if (!url) return name.startsWith("(") ? name : "(native)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith("node:")) return "node:" + url.slice(5).split("/")[0];
  const own = /\/(src\/[^/]+(?:\/[^/]+)?|gen|scripts)\//.exec(url);
  return own ? own[1]! : url;
}

export function summarizeProfile(file: string, top = 25): string {
  const p = JSON.parse(fs.readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFunction = new Map<string, number>();
  const byOrigin = new Map<string, number>();
  for (const [id, us] of self) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const where = url ? `${url.replace(/^file:\/\/.*?\/(node_modules|src|gen|scripts)\//, "$1/")}:${lineNumber + 1}` : "";
    const key = `${functionName || "(anonymous)"} ${where}`.trim();
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    const o = origin(url, functionName);
    byOrigin.set(o, (byOrigin.get(o) ?? 0) + us);
  }
  const pct = (us: number) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
  const idle = byOrigin.get("(idle)") ?? 0;
  const lines = [
    `${path.basename(file)}: ${(total / 1e6).toFixed(1)} s sampled, ${pct(total - idle).trim()} busy`,
    "  self time by origin:",
    ...[...byOrigin].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, v]) => `    ${pct(v)}  ${k}`),
    "  self time by function:",
    ...[...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `    ${pct(v)}  ${k}`),
  ];
  return lines.join("\n");
}

export function summarizeProfiles(target: string, top = 25): string {
  const files = fs.statSync(target).isDirectory()
    ? fs.readdirSync(target, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".cpuprofile")).map((f) => path.join(target, f))
    : [target];
  return files.map((f) => `${path.relative(target, f) || f}\n${summarizeProfile(f, top)}`).join("\n\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(summarizeProfiles(process.argv[2] ?? ".", Number(process.argv[3] ?? 25)));
}
