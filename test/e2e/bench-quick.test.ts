// `npm run bench -- --quick` as a smoke check: the whole suite runs (its own
// PostgreSQL, peers, Agora, Envoy, ghz) and writes a result that follows the
// schema. No timing thresholds: speed is what the bench reports, not what a test asserts.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { REPO_ROOT } from "../../scripts/cluster.js";
import { SCENARIO_NAMES, validate, type BenchResult } from "../../bench/lib/schema.js";
import { MONITORING_GEN } from "../../bench/scenarios/monitoring.js";

const run = promisify(execFile);

describe("e2e: npm run bench -- --quick", function () {
  this.timeout(600_000);
  let out: string;
  let result: BenchResult;
  let stdout: string;

  before(async () => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), "agora-bench-"));
    try {
      ({ stdout } = await run(path.join(REPO_ROOT, "node_modules", ".bin", "tsx"), ["bench/run.ts", "--quick", "--out", out], {
        cwd: REPO_ROOT,
        maxBuffer: 64 * 1024 * 1024,
      }));
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      throw new Error(`the quick bench failed: ${e.message}\n--- stderr (end) ---\n${(e.stderr ?? "").slice(-6000)}`);
    }
    result = JSON.parse(fs.readFileSync(path.join(out, "latest.json"), "utf8")) as BenchResult;
  });

  after(() => {
    if (out) fs.rmSync(out, { recursive: true, force: true });
  });

  it("writes a result that follows the schema, every number finite", () => {
    expect(validate(result)).to.deep.equal([]);
    expect(result.mode).to.equal("quick");
    // The timestamped copy is the same result.
    const stamped = fs.readdirSync(out).filter((f) => /^\d{4}-.*\.json$/.test(f));
    expect(stamped).to.have.length(1);
    expect(JSON.parse(fs.readFileSync(path.join(out, stamped[0]!), "utf8"))).to.deep.equal(result);
  });

  it("runs every scenario (monitoring only once the service exists)", () => {
    for (const name of SCENARIO_NAMES) {
      const scenario = result.scenarios[name]!;
      if (name === "monitoring" && !fs.existsSync(MONITORING_GEN)) {
        expect(scenario.status, name).to.equal("skipped");
        expect(scenario.reason).to.match(/not available/);
        continue;
      }
      expect(scenario.status, `${name}: ${scenario.reason ?? ""}`).to.equal("ok");
      expect(scenario.rows.length, name).to.be.greaterThan(0);
    }
  });

  it("compares Agora with the three bare servers on every protocol, the direct path with bare grpc-js + pg and Go + pgx peers, and Envoy with the direct path", () => {
    const baselines = result.scenarios.baselines!.rows;
    const otherProtocols = ["connect-node, Connect", "connect-node, gRPC-Web", "agora, Connect", "agora, gRPC-Web"];
    expect(baselines.map((r) => r.name)).to.have.members(["connect-node", "grpc-js", "grpc-js with features", "grpc-go", "agora", "agora, gRPC on connect-node", ...otherProtocols]);
    for (const row of baselines.filter((r) => otherProtocols.includes(r.name))) {
      expect(row.metrics.rps, row.name).to.be.greaterThan(0);
      expect(row.metrics.errors, row.name).to.equal(0);
    }
    // Envoy is moved to the load generator's CPU for the own-CPU rows only when the bench pins its processes.
    const ownCpu = result.pinning.loadgen ? ["envoy max, own CPU", "envoy half, own CPU"] : [];
    expect(result.scenarios.gateway!.rows.map((r) => r.name)).to.have.members(["peer max", "go peer max", "direct max", "envoy max", "direct half", "envoy half", ...ownCpu]);
    for (const row of result.scenarios.gateway!.rows) expect(row.metrics.cpuMsPer1k_agora, row.name).to.be.greaterThan(0);
  });

  it("finds no double booking, no stock movement lost or doubled, no wrong listing, and loses no chat message or file byte", () => {
    const booking = result.scenarios.reservations!.rows[0]!.metrics;
    expect(booking.doubleBookings).to.equal(0);
    expect(booking.storedActive).to.equal(booking.commitsSeen);
    expect(booking.commitsPerSecond).to.be.greaterThan(0);
    const stock = result.scenarios.stock!.rows[0]!.metrics;
    expect(stock.lostOrDoubled).to.equal(0);
    expect(stock.appliedSeen).to.be.greaterThan(0);
    const catalog = result.scenarios.catalog!.rows[0]!.metrics;
    expect(catalog.walkErrors).to.equal(0);
    expect(catalog.errors).to.equal(0);
    expect(catalog.productsPerSecond).to.be.greaterThan(0);
    for (const row of result.scenarios.chat!.rows) {
      expect(row.metrics.streamErrors, row.name).to.equal(0);
      expect(row.metrics.deliveredPerSecond, row.name).to.be.greaterThan(0);
    }
    // Transfers are checked against the server's SHA-256 by the bench itself; a mismatch fails the scenario.
    expect(result.scenarios.files!.rows.map((r) => r.name)).to.have.members(["upload direct", "upload envoy", "download direct", "download envoy"]);
  });

  it("prints the summary tables", () => {
    expect(stdout).to.equal(`${result.markdown}\n`);
    expect(stdout).to.contain("| server |").and.contain("| agora |");
  });
});
