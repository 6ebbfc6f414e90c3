import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Prometheus metrics of one server; served at GET /metrics. */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly started = new Counter({
    name: "grpc_server_started_total",
    help: "RPCs started on the server.",
    labelNames: ["grpc_type", "grpc_service", "grpc_method"] as const,
    registers: [this.registry],
  });
  readonly handled = new Counter({
    name: "grpc_server_handled_total",
    help: "RPCs completed on the server, whatever their status.",
    labelNames: ["grpc_type", "grpc_service", "grpc_method", "grpc_code"] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: "grpc_server_handling_seconds",
    help: "Time from the start of an RPC to its end, in seconds (streams: their whole life).",
    labelNames: ["grpc_type", "grpc_service", "grpc_method"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }
}
