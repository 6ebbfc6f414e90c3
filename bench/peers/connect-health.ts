/**
 * The bare Connect-node peer of `npm run bench`: an HTTP/2 (h2c) server that
 * serves only grpc.health.v1.Health/Check, with no interceptors, no logging and
 * no database, so its row shows what Connect-node itself costs.
 * Usage: node --import tsx bench/peers/connect-health.ts [port] (prints "listening <port>").
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";

const handler = connectNodeAdapter({
  routes: (router) => router.service(Health, { check: () => ({ status: ServingStatus.SERVING }) }),
});
const server = http2.createServer(handler);
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log(`listening ${(server.address() as AddressInfo).port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
