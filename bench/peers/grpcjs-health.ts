/**
 * The bare @grpc/grpc-js peer of `npm run bench`: grpc.health.v1.Health/Check
 * from the vendored health.proto (loaded with @grpc/proto-loader), nothing else.
 * Usage: node --import tsx bench/peers/grpcjs-health.ts [port] (prints "listening <port>").
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const definition = protoLoader.loadSync("grpc/health/v1/health.proto", { includeDirs: [path.join(root, "third_party/proto")] });
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  grpc: { health: { v1: { Health: { service: grpc.ServiceDefinition } } } };
};
const server = new grpc.Server();
server.addService(loaded.grpc.health.v1.Health.service, {
  check: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => callback(null, { status: "SERVING" }),
});
server.bindAsync(`127.0.0.1:${process.argv[2] ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(err.message);
    process.exit(1);
  }
  console.log(`listening ${port}`);
});
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
