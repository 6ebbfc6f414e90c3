// The real monitoring agent (npm run agent) as a process, reading this machine
// through systeminformation, against a real server that is stopped and started
// again under it.
import { spawn, type ChildProcess } from "node:child_process";
import { durationFromMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { expect } from "chai";
import { HostStatus, MonitoringService, Resolution, type Series } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { freePort } from "../../src/platform/ports.js";
import { client, eventually, quietLog, signUp, startTestServer, type TestServer } from "../support/harness.js";
import { REPO_ROOT } from "../support/processes.js";

const HOST = "agent-under-test";
const INTERVAL_MS = 250;

describe("e2e: the monitoring agent", function () {
  this.timeout(120_000);
  let port: number;
  let databaseUrl: string;
  let server: TestServer | undefined;
  let agent: ChildProcess;
  let agentLog = "";
  let mon: Client<typeof MonitoringService>;
  const env = () => ({ SERVICES: "identity,monitoring", PORT: String(port) });

  before(async () => {
    port = await freePort();
    server = await startTestServer(env());
    databaseUrl = server.databaseUrl;
    await signUp(server.url, "agent-account");
    mon = client(MonitoringService, server.url, "grpc", await signUp(server.url, "agent-viewer"));
    agent = spawn(process.execPath, ["--import", "tsx", "src/cli/agent.ts", "--server", server.url, "--host", HOST, "--interval", String(INTERVAL_MS)], {
      cwd: REPO_ROOT,
      env: { ...process.env, AGORA_USERNAME: "agent-account", AGORA_PASSWORD: "password-of-agent-account", AGENT_ACK_MS: "1000" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    agent.stderr!.setEncoding("utf8").on("data", (chunk: string) => (agentLog += chunk));
  });
  after(async () => {
    agent?.kill("SIGTERM");
    await server?.shutdown();
  });

  async function series(metric: string, sinceMs: number, stepMs = 60_000, resolution = Resolution.RAW): Promise<Series[]> {
    const res = await mon.queryMetrics({
      host: HOST,
      metric,
      startTime: timestampFromMs(sinceMs),
      endTime: timestampFromMs(Date.now() + 1000),
      step: durationFromMs(stepMs),
      resolution,
    });
    return res.series;
  }

  const values = (s: Series[]) => s.flatMap((x) => x.points.filter((p) => p.count > 0n).flatMap((p) => [p.min!, p.max!]));

  it("reports plausible values for this machine that QueryMetrics returns", async () => {
    const since = Date.now() - 60_000;
    // Points, not only series: a report's series are created before its samples commit (QueryMetrics lists a
    // series with no points in the range), and the rates come with the second reading, after every other metric.
    await eventually(async () => values(await series("network.rx_bytes_per_second", since)).length > 0, `the agent's first rates\n${agentLog}`, 30_000);

    const cpu = values(await series("cpu.usage_percent", since));
    expect(cpu.length).to.be.greaterThan(0);
    for (const v of cpu) expect(v).to.be.within(0, 100);

    const [memTotal] = values(await series("memory.total_bytes", since));
    const memUsed = values(await series("memory.used_bytes", since));
    expect(memTotal).to.be.greaterThan(64 * 1024 * 1024);
    for (const v of memUsed) expect(v).to.be.within(0, memTotal!);

    const disks = await series("disk.total_bytes", since);
    expect(disks.length, "at least one mount").to.be.greaterThan(0);
    expect(disks[0]!.labels.mount).to.be.a("string").and.not.equal("");
    for (const v of values(disks)) expect(v).to.be.greaterThan(0);
    for (const v of values(await series("disk.usage_percent", since))) expect(v).to.be.within(0, 100);

    const rx = await series("network.rx_bytes_per_second", since);
    expect(rx.map((s) => s.labels.interface)).to.include("lo");
    for (const v of values(rx)) expect(v).to.be.at.least(0);
    for (const v of values(await series("load.1m", since))) expect(v).to.be.at.least(0);
    for (const v of values(await series("uptime_seconds", since))) expect(v).to.be.greaterThan(0);

    const host = (await mon.listHosts({})).hosts.find((h) => h.name === HOST);
    expect(host?.status).to.equal(HostStatus.UP);
  });

  it("keeps its backlog across a server restart and fills the gap", async () => {
    await server!.shutdown();
    const down = Date.now();
    server = undefined;
    await new Promise((r) => setTimeout(r, 3000)); // about 12 readings while nothing listens
    const up = Date.now();
    server = await startTestServer(env(), databaseUrl, quietLog);
    mon = client(MonitoringService, server.url, "grpc", await signUp(server.url, "agent-viewer-2"));

    // Every second of the outage has CPU samples once the agent has caught up.
    const from = Math.floor(down / 1000) * 1000;
    const to = Math.floor(up / 1000) * 1000;
    await eventually(
      async () => {
        const res = await mon.queryMetrics({
          host: HOST,
          metric: "cpu.usage_percent",
          startTime: timestampFromMs(from),
          endTime: timestampFromMs(to),
          step: durationFromMs(1000),
          resolution: Resolution.RAW,
        });
        const points = res.series[0]?.points ?? [];
        return points.length === (to - from) / 1000 && points.every((p) => p.count > 0n);
      },
      `samples for every second between ${new Date(down).toISOString()} and ${new Date(up).toISOString()}\n${agentLog}`,
      30_000,
    );
    expect(agentLog).to.match(/server unavailable|retrying/);
    const host = (await mon.listHosts({})).hosts.find((h) => h.name === HOST)!;
    expect(timestampMs(host.lastReportTime!)).to.be.at.least(up);
  });
});
