/**
 * `npm run bench`: Agora measured on this machine, side by side with peers run
 * in the same session. Starts its own embedded PostgreSQL, runs each scenario
 * (bench/scenarios/), writes bench/results/<timestamp>.json and latest.json,
 * and prints the summary tables (markdown).
 *
 *   --quick            smaller counts, shorter runs, one run each (about 2 minutes)
 *   --only a,b         only these scenarios (baselines, gateway, chat, reservations, stock, catalog, files, monitoring, game)
 *   --out <dir>        where the JSON goes (default bench/results); scratch data in <dir>/tmp
 *   --profile          servers under test write V8 CPU profiles (node --cpu-prof); top frames are printed
 *   --no-pin           do not pin servers and load generators to separate CPUs
 *   --keep             keep the scratch directory (PostgreSQL data, server logs)
 *
 * Servers under test (and their PostgreSQL and Envoy) run on CPU 0, load
 * generators (ghz and the TypeScript harnesses in this process) on CPU 1,
 * when taskset exists and the machine has two CPUs or more.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { ENVOY_BIN, REPO_ROOT } from "../scripts/cluster.js";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "../src/platform/db.js";
import { withClient } from "./lib/agora.js";
import { killTracked } from "./lib/children.js";
import { FULL, QUICK, type BenchContext, type Scenario, type ScenarioResult } from "./lib/context.js";
import { summarizeProfiles } from "./lib/cpuprofile.js";
import { GHZ_BIN } from "./lib/ghz.js";
import { describeMachine, machineLine } from "./lib/machine.js";
import { choosePinning, pin, pinTree } from "./lib/proc.js";
import { SCENARIO_NAMES, SCHEMA, validate, type BenchResult } from "./lib/schema.js";
import { scenarioSection } from "./lib/table.js";
import { baselines } from "./scenarios/baselines.js";
import { chat } from "./scenarios/chat.js";
import { files } from "./scenarios/files.js";
import { gateway } from "./scenarios/gateway.js";
import { game } from "./scenarios/game.js";
import { monitoring } from "./scenarios/monitoring.js";
import { reservations } from "./scenarios/reservations.js";
import { stock } from "./scenarios/stock.js";
import { catalog } from "./scenarios/catalog.js";

const SCENARIOS: Scenario[] = [baselines, gateway, chat, reservations, stock, catalog, files, monitoring, game];

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    out: { type: "string", default: path.join(REPO_ROOT, "bench", "results") },
    profile: { type: "boolean", default: false },
    "no-pin": { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
  },
});

const started = new Date();
const stamp = started.toISOString().replace(/[:.]/g, "-");
/** The bench's PostgreSQL, stopped however the run ends. */
let database: EmbeddedDatabase | undefined;

const log = (line: string) => process.stderr.write(`[bench ${((Date.now() - started.getTime()) / 1000).toFixed(0).padStart(4)}s] ${line}\n`);

/**
 * Before a scenario: the databases of the ones before it go (unless --keep) and a CHECKPOINT writes what they
 * left dirty, so neither autovacuum nor a checkpoint of their rows runs on CPU 0 while this one is measured
 * (reservations, measured after chat, ran at two thirds of its rate alone).
 */
function settle(adminUrl: string, keep: boolean): Promise<void> {
  return withClient(adminUrl, async (admin) => {
    if (!keep) {
      const { rows } = await admin.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'`);
      for (const { datname } of rows) await admin.query(`DROP DATABASE "${datname}" WITH (FORCE)`);
    }
    await admin.query("CHECKPOINT");
  });
}

async function main(): Promise<number> {
  const only = args.only ? args.only.split(",").map((s) => s.trim()).filter(Boolean) : null;
  const unknown = (only ?? []).filter((n) => !(SCENARIO_NAMES as readonly string[]).includes(n));
  if (unknown.length) throw new Error(`unknown scenario(s) ${unknown.join(", ")}; known: ${SCENARIO_NAMES.join(", ")}`);
  for (const bin of [GHZ_BIN, ENVOY_BIN]) if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run 'npm run tools' first`);

  const outDir = path.resolve(args.out!);
  const runDir = path.join(outDir, "tmp", `run-${stamp}`);
  fs.mkdirSync(runDir, { recursive: true, mode: 0o755 });
  // An embedded PostgreSQL run as root switches to the postgres user, who must reach its directory.
  for (let d = runDir; d !== path.dirname(d) && d.startsWith(outDir); d = path.dirname(d)) fs.chmodSync(d, 0o755);

  const machine = describeMachine();
  const pinning = choosePinning(!args["no-pin"]);
  // This process (ghz's parent and the TypeScript harnesses) belongs on the load generator CPUs.
  pin(process.pid, pinning.loadgen);
  const settings = args.quick ? QUICK : FULL;
  log(`${args.quick ? "quick" : "full"} mode; ${machineLine(machine)}`);
  log(pinning.server ? `servers on CPU ${pinning.server}, load generators on CPU ${pinning.loadgen}` : pinning.note);

  let failed = false;
  const scenarios: Record<string, ScenarioResult> = {};
  const profileDir = args.profile ? path.join(outDir, "tmp", `profiles-${stamp}`) : undefined;
  try {
    // Agora runs as the container image runs it: compiled, without tsx's per-closure naming helpers.
    log("building dist/ (npm run build)");
    execFileSync("npm", ["run", "--silent", "build"], { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "inherit"] });
    log("starting the bench's PostgreSQL");
    database = await startEmbeddedPostgres(runDir, 0, pino({ level: "warn" }));
    const postgresPid = Number(fs.readFileSync(path.join(runDir, "postgres", "postmaster.pid"), "utf8").split("\n")[0]);
    pinTree(postgresPid, pinning.server);
    const ctx: BenchContext = { quick: args.quick!, settings, pinning, runDir, databaseAdminUrl: database.adminUrl, postgresPid, profileDir, log };

    for (const scenario of SCENARIOS) {
      if (only && !only.includes(scenario.name)) continue;
      await settle(database.adminUrl, args.keep!);
      log(`== ${scenario.name}: ${scenario.title}`);
      const t0 = performance.now();
      let result: Omit<ScenarioResult, "seconds" | "description">;
      try {
        result = await scenario.run(ctx);
      } catch (err) {
        failed = true;
        const reason = err instanceof Error ? err.stack ?? err.message : String(err);
        log(`${scenario.name} failed: ${reason}`);
        result = { status: "failed", reason: reason.slice(0, 2000), rows: [], details: {} };
      }
      const seconds = Math.round((performance.now() - t0) / 100) / 10;
      scenarios[scenario.name] = { ...result, seconds, description: scenario.description };
      log(`== ${scenario.name}: ${result.status} in ${seconds}s${result.reason && result.status !== "failed" ? ` (${result.reason})` : ""}`);
    }
  } finally {
    await database?.stop().catch(() => undefined);
    killTracked();
  }

  const finished = new Date();
  const markdown = [
    `Measured ${finished.toISOString().slice(0, 10)} (${args.quick ? "quick mode: 1 short run each" : `full mode: median of ${settings.runs} runs`}) on ${machineLine(machine)}. ` +
      (pinning.server ? `Servers pinned to CPU ${pinning.server}, load generators to CPU ${pinning.loadgen}.` : `${pinning.note}.`),
    ...SCENARIOS.filter((s) => scenarios[s.name]).map((s) => scenarioSection(s.title, s.rowLabel, s.columns, scenarios[s.name]!)),
  ].join("\n\n");
  const result: BenchResult = {
    schema: SCHEMA,
    mode: args.quick ? "quick" : "full",
    only,
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationSeconds: Math.round((finished.getTime() - started.getTime()) / 1000),
    machine,
    pinning: { server: pinning.server ?? null, loadgen: pinning.loadgen ?? null, note: pinning.note },
    settings,
    scenarios,
    markdown,
  };
  const problems = validate(result, only ?? SCENARIO_NAMES);
  if (problems.length) {
    failed = true;
    log(`the result is not valid:\n  ${problems.join("\n  ")}`);
  }
  fs.writeFileSync(path.join(outDir, `${stamp}.json`), `${JSON.stringify(result, null, 2)}\n`);
  if (!only) fs.writeFileSync(path.join(outDir, "latest.json"), `${JSON.stringify(result, null, 2)}\n`);
  log(`wrote ${path.join(outDir, `${stamp}.json`)}${only ? "" : " and latest.json"} (${result.durationSeconds}s)`);

  if (profileDir && fs.existsSync(profileDir)) {
    const summary = summarizeProfiles(profileDir);
    fs.writeFileSync(path.join(profileDir, "summary.txt"), summary);
    log(`CPU profiles in ${profileDir}:\n${summary}`);
  }
  if (failed || args.keep) log(`scratch data kept in ${runDir}`);
  else fs.rmSync(runDir, { recursive: true, force: true });
  process.stdout.write(`${markdown}\n`);
  return failed ? 1 : 0;
}

let stopping = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping the servers`);
    killTracked();
    void Promise.race([database?.stop(), new Promise((r) => setTimeout(r, 5000))]).finally(() => process.exit(130));
  });
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    killTracked();
    await database?.stop().catch(() => undefined);
    console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
