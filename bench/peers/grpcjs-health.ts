/**
 * The bare @grpc/grpc-js peer of `npm run bench`: grpc.health.v1.Health/Check
 * from the vendored health.proto (loaded with @grpc/proto-loader), nothing else.
 *
 * With --features, every call also does Agora's per-call work, written as
 * directly as grpc-js allows, in the handler: the request id (the caller's
 * x-request-id when sane, else a new one) echoed in the response metadata, the
 * access-log line through Agora's own logger (stdout), the method's Prometheus
 * series, auth's check for a public method, a deadline check, and the answer
 * after a promise turn, as Agora's asynchronous interceptors give it. The row
 * shows what those features cost without Agora's structure around them
 * (docs/request-path.md, "The features alone, on grpc-js").
 *
 * Usage: node --import tsx bench/peers/grpcjs-health.ts [port] [--features] (prints "listening <port>").
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { REQUEST_ID_HEADER } from "../../src/platform/error-mapping.js";
import { createLogger } from "../../src/platform/logging.js";
import { ServerMetrics } from "../../src/platform/metrics.js";
import { requestIdFrom } from "../../src/platform/observe.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const definition = protoLoader.loadSync("grpc/health/v1/health.proto", { includeDirs: [path.join(root, "third_party/proto")] });
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  grpc: { health: { v1: { Health: { service: grpc.ServiceDefinition } } } };
};
const args = process.argv.slice(2);
const port = args.find((a) => /^\d+$/.test(a)) ?? "0";

type Check = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => void;
const bare: Check = (_call, callback) => callback(null, { status: "SERVING" });

function withFeatures(): Check {
  const service = "grpc.health.v1.Health";
  const log = createLogger("info");
  const series = new ServerMetrics().method({ grpc_type: "unary", grpc_service: service, grpc_method: "Check" });
  const publicServices = new Set([service]);
  return (call, callback) => {
    const given = call.metadata.get(REQUEST_ID_HEADER)[0];
    const requestId = requestIdFrom(typeof given === "string" ? given : undefined);
    series.started++;
    const startedAt = process.hrtime.bigint();
    const finish = (code: string) => {
      const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
      series.end(code, seconds);
      log.info({ requestId, method: series.name, code, durationMs: Math.round(seconds * 1e6) / 1e3 }, "rpc");
    };
    if (!publicServices.has(service)) {
      callback({ code: grpc.status.UNAUTHENTICATED });
      return finish("UNAUTHENTICATED");
    }
    const deadline = call.getDeadline();
    if (deadline instanceof Date && deadline.getTime() <= Date.now()) {
      callback({ code: grpc.status.DEADLINE_EXCEEDED });
      return finish("DEADLINE_EXCEEDED");
    }
    void Promise.resolve({ status: "SERVING" }).then((response) => {
      const header = new grpc.Metadata();
      header.set(REQUEST_ID_HEADER, requestId);
      call.sendMetadata(header);
      callback(null, response);
      finish("OK");
    });
  };
}

const server = new grpc.Server();
server.addService(loaded.grpc.health.v1.Health.service, { check: args.includes("--features") ? withFeatures() : bare });
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err) {
    console.error(err.message);
    process.exit(1);
  }
  console.log(`listening ${bound}`);
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
