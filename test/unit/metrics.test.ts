import { expect } from "chai";
import { Counter, Histogram, Registry } from "prom-client";
import { ServerMetrics } from "../../src/platform/metrics.js";

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const CALLS: [method: string, code: string, seconds: number][] = [
  ["GetProduct", "OK", 0.0004],
  ["GetProduct", "OK", 0.0005], // on a bucket's bound: counted in it
  ["GetProduct", "NotFound", 0.0031],
  ["GetProduct", "OK", 0.7],
  ["CreateProduct", "AlreadyExists", 2.5],
  ["CreateProduct", "OK", 301], // past the last bound: only in +Inf, the sum and the count
];

/** The grpc_server_* lines of a registry's exposition. */
async function grpcLines(registry: Registry): Promise<string[]> {
  return (await registry.metrics()).split("\n").filter((line) => line.includes("grpc_server_"));
}

describe("server metrics", () => {
  it("expose the gRPC series exactly as prom-client's own counters and histogram would", async () => {
    const ours = new ServerMetrics();
    const reference = new Registry();
    const labelNames = ["grpc_type", "grpc_service", "grpc_method"] as const;
    const started = new Counter({ name: "grpc_server_started_total", help: "RPCs started on the server.", labelNames, registers: [reference] });
    const handled = new Counter({
      name: "grpc_server_handled_total",
      help: "RPCs completed on the server, whatever their status.",
      labelNames: [...labelNames, "grpc_code"],
      registers: [reference],
    });
    const latency = new Histogram({
      name: "grpc_server_handling_seconds",
      help: "Time from the start of an RPC to its end, in seconds (streams: their whole life).",
      labelNames,
      buckets: BUCKETS,
      registers: [reference],
    });
    for (const [method, code, seconds] of CALLS) {
      const labels = { grpc_type: "unary", grpc_service: "agora.inventory.v1.InventoryService", grpc_method: method };
      const series = ours.method(labels);
      series.started++;
      series.end(code, seconds);
      started.inc(labels);
      handled.inc({ ...labels, grpc_code: code });
      latency.observe(labels, seconds);
    }

    const lines = await grpcLines(ours.registry);
    expect(lines).to.deep.equal(await grpcLines(reference));
    expect(lines).to.include('grpc_server_handled_total{grpc_type="unary",grpc_service="agora.inventory.v1.InventoryService",grpc_method="GetProduct",grpc_code="OK"} 3');
    expect(lines).to.include('grpc_server_handling_seconds_bucket{le="0.0005",grpc_type="unary",grpc_service="agora.inventory.v1.InventoryService",grpc_method="GetProduct"} 2');
  });

  it("keep one series per method however often it is asked for", async () => {
    const metrics = new ServerMetrics();
    const labels = { grpc_type: "unary", grpc_service: "grpc.health.v1.Health", grpc_method: "Check" };
    metrics.method(labels).started++;
    metrics.method({ ...labels }).started++;
    expect((await grpcLines(metrics.registry)).filter((l) => l.startsWith("grpc_server_started_total{"))).to.deep.equal([
      'grpc_server_started_total{grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check"} 2',
    ]);
  });
});
