import { setMaxListeners } from "node:events";
import type { DescService } from "@bufbuild/protobuf";
import { createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import type { Config } from "./config.js";
import { file_google_rpc_error_details } from "../gen/google/rpc/error_details_pb.js";
import { file_google_rpc_status } from "../gen/google/rpc/status_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection as ReflectionV1 } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { authInterceptor, createTokenVerifier, peerAddressKey } from "./platform/auth.js";
import { systemClock, type Clock } from "./platform/clock.js";
import { dropOverlongDeadline } from "./platform/deadline.js";
import { deadlineInterceptor, errorMappingInterceptor } from "./platform/error-mapping.js";
import { GrpcJsAdapter, recordRoutes } from "./platform/grpc-js-adapter.js";
import { HealthRegistry, registerHealth, watchDatabase } from "./platform/health.js";
import { checkIdempotencyKey } from "./platform/idempotency.js";
import { DualProtocolListener } from "./platform/listener.js";
import { ServerMetrics } from "./platform/metrics.js";
import { serveMetrics, startMetricsServer } from "./platform/metrics-endpoint.js";
import { CallsInFlight, observeInterceptor } from "./platform/observe.js";
import { PageTokens } from "./platform/paging.js";
import { PgPubSub } from "./platform/pubsub.js";
import { rateLimitInterceptor } from "./platform/rate-limit.js";
import { registerReflection } from "./platform/reflection.js";
import type { RunningService } from "./platform/service-module.js";
import { staticFiles } from "./platform/static-files.js";
import { validationInterceptor } from "./platform/validation.js";
import { SERVICE_MODULES } from "./services/catalogue.js";
import { unavailable } from "./platform/errors.js";

/** Path of the identity service's public keys, for Envoy's jwt_authn and remote verifiers. */
export const JWKS_PATH = "/.well-known/jwks.json";

export interface AgoraServer {
  port: number;
  /** http://host:port for clients on this machine. */
  url: string;
  health: HealthRegistry;
  metrics: ServerMetrics;
  /** The separate /metrics port (METRICS_PORT), when there is one. */
  metricsPort: number | undefined;
  /** Drains and stops; resolves when everything is closed. */
  shutdown(): Promise<void>;
}

export interface ServerOptions {
  config: Config;
  databaseUrl: string;
  log: Logger;
  /** Defaults to the system clock; tests pass a ManualClock. */
  clock?: Clock;
}

/** Starts the selected services on one port (gRPC, gRPC-Web and Connect) and returns a handle. */
export async function startServer({ config, databaseUrl, log, clock = systemClock }: ServerOptions): Promise<AgoraServer> {
  const pubsub = new PgPubSub(databaseUrl, log);
  let ownUrl = "";
  const selfUrl = () => ownUrl;
  const modules = config.services.map((name) => SERVICE_MODULES[name]);
  const running: RunningService[] = [];
  const pageTokens = PageTokens.forDataDir(config.dataDir);
  try {
    for (const module of modules) {
      running.push(await module.start({ config, databaseUrl, log: log.child({ module: module.name }), pubsub, clock, pageTokens, selfUrl }));
    }
  } catch (err) {
    await Promise.allSettled(running.map((r) => r.stop()));
    await pubsub.close();
    throw err;
  }

  const served: DescService[] = modules.flatMap((m) => m.services);
  const jwks = running.find((r) => r.jwks)?.jwks;
  const verifyToken = createTokenVerifier(jwks ?? new URL(config.auth.jwksUrl!), config.auth, clock);
  const publicMethods = new Set([
    ...modules.flatMap((m) => m.publicMethods ?? []),
    Health.typeName,
    ReflectionV1.typeName,
    ReflectionV1alpha.typeName,
  ]);
  const health = new HealthRegistry(served.map((s) => s.typeName));
  const metrics = new ServerMetrics();
  const shutdownController = new AbortController();
  // Every call's signal listens to this one: thousands of listeners are expected.
  setMaxListeners(0, shutdownController.signal);
  const shutdownReason = unavailable("SHUTTING_DOWN", "the server is shutting down: reconnect");
  const serveConsole = staticFiles(config.consoleDir);

  // Recorded once: Connect-node and grpc-js serve the same handler objects.
  const routes = recordRoutes((router: ConnectRouter) => {
    registerHealth(router, health);
    registerReflection(router, [...served, Health, ReflectionV1], [file_google_rpc_error_details, file_google_rpc_status]);
    for (const r of running) r.register(router);
  });
  const calls = new CallsInFlight();
  // Outermost first: observe sees the final code, errors are mapped before it.
  const interceptors = [
    observeInterceptor(log, metrics, calls),
    errorMappingInterceptor(log),
    deadlineInterceptor(shutdownController.signal),
    authInterceptor(verifyToken, publicMethods, new Set(modules.flatMap((m) => m.adminMethods ?? []))),
    rateLimitInterceptor(config.rateLimits),
    checkIdempotencyKey(),
    validationInterceptor(new Set(modules.flatMap((m) => m.validatesOwnStream ?? []))),
  ];
  const { trustForwardedFor } = config.auth;
  // Native gRPC (protobuf) through grpc-js, the fast path; GRPC_SERVER=connect leaves it to Connect-node too.
  const grpcJs =
    config.grpcServer === "grpc-js"
      ? new GrpcJsAdapter({
          services: routes.services,
          interceptors,
          shutdownSignal: shutdownController.signal,
          maxMessageBytes: config.maxMessageBytes,
          contextValues: ({ metadata, peer }) =>
            createContextValues().set(peerAddressKey, clientAddress(metadata.get("x-forwarded-for").map(String), peer.replace(/:\d+$/, ""), trustForwardedFor)),
        })
      : undefined;
  const handler = connectNodeAdapter({
    routes: routes.replay,
    // Requests are bounded; responses are ours and bounded by page sizes (reflection answers can be large).
    readMaxBytes: config.maxMessageBytes,
    shutdownSignal: shutdownController.signal,
    interceptors,
    contextValues: (req) =>
      createContextValues().set(peerAddressKey, clientAddress(req.headers["x-forwarded-for"], req.socket.remoteAddress, trustForwardedFor)),
    fallback: (req, res) => {
      if (req.method === "GET" && req.url === JWKS_PATH && jwks) {
        res.writeHead(200, { "content-type": "application/json", "cache-control": "public, max-age=300" });
        res.end(JSON.stringify(jwks));
        return;
      }
      // /metrics is the server's, never a console page: with METRICS_PORT it lives on that port only.
      if (req.method === "GET" && req.url === "/metrics" && config.metrics.port === undefined) {
        serveMetrics(metrics, config.metrics, req, res);
        return;
      }
      if (req.url !== "/metrics" && serveConsole(req, res)) return;
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found\n");
    },
  });
  const streamingRequestPaths = new Set(
    served.flatMap((s) => s.methods.filter((m) => m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming").map((m) => `/${s.typeName}/${m.name}`)),
  );
  const listener = new DualProtocolListener(
    (req, res) => {
      dropOverlongDeadline(req.headers);
      handler(req, res);
    },
    {
      maxConcurrentStreams: config.maxConcurrentStreams,
      timeouts: config.connections,
      streamingRequestPaths,
      takeStream:
        grpcJs &&
        ((stream, headers) => {
          dropOverlongDeadline(headers);
          return grpcJs.handleStream(stream, headers);
        }),
    },
  );
  const dbWatch = watchDatabase(
    health,
    served.map((s) => s.typeName),
    async () => {
      await Promise.all(running.map((r) => r.ping()));
    },
    2000,
  );

  let port: number;
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  try {
    if (config.metrics.port !== undefined) metricsServer = await startMetricsServer(metrics, { ...config.metrics, port: config.metrics.port });
    port = await listener.listen(config.port, config.host);
  } catch (err) {
    await metricsServer?.close();
    dbWatch.stop();
    await Promise.allSettled(running.map((r) => r.stop()));
    await pubsub.close();
    throw err;
  }
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  ownUrl = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  log.info({ port, services: served.map((s) => s.typeName) }, "listening");

  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    (stopping ??= (async () => {
      log.info("shutting down: draining");
      health.markDraining();
      if (config.shutdownDelayMs > 0) await new Promise((r) => setTimeout(r, config.shutdownDelayMs));
      // Ends open streams with UNAVAILABLE; unary calls in flight carry on.
      shutdownController.abort(shutdownReason);
      health.close();
      const drained = await listener.close(config.shutdownGraceMs);
      if (!drained) log.warn("grace period over: closed the remaining connections");
      else log.info("connections drained");
      // Ended streams may still be cleaning up (a chat stream closes its presence): the database stays until they are done.
      if (!(await calls.settled(config.shutdownGraceMs))) log.warn({ calls: calls.size }, "grace period over: stopping with calls still finishing");
      dbWatch.stop();
      await metricsServer?.close();
      await Promise.allSettled(running.map((r) => r.stop()));
      await pubsub.close();
      log.info("stopped");
    })());

  return { port, url: ownUrl, health, metrics, metricsPort: metricsServer?.port, shutdown };
}

/** The client's address: the socket's peer, or the last X-Forwarded-For hop when a trusted proxy (Envoy) is in front. */
function clientAddress(forwarded: string | string[] | undefined, socketAddress: string | undefined, trustForwardedFor: boolean): string {
  if (trustForwardedFor) {
    const last = (Array.isArray(forwarded) ? forwarded.join(",") : (forwarded ?? "")).split(",").at(-1)?.trim();
    if (last) return last;
  }
  return socketAddress ?? "";
}
