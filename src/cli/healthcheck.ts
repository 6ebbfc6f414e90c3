/**
 * Container health check: asks this host's server for grpc.health.v1 status of
 * the whole server (or of HEALTH_SERVICE) and exits 0 only when it is SERVING.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";

const port = process.env.PORT || "8080";
const service = process.env.HEALTH_SERVICE ?? "";
const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));

health.check({ service }, { timeoutMs: 2000 }).then(
  ({ status }) => {
    console.log(Status[status]);
    process.exit(status === Status.SERVING ? 0 : 1);
  },
  (err: unknown) => {
    console.log(`unhealthy: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
