/**
 * The one source of the Envoy gateway configuration. Routes, retry policies and
 * the token rules are derived from the service descriptors (gen/), so a new RPC
 * gets the right gateway behaviour without a hand edit:
 *
 * - streaming methods: no route timeout, an idle timeout above the services'
 *   heartbeat, never retried;
 * - unary methods marked NO_SIDE_EFFECTS / IDEMPOTENT in the proto, and calls
 *   that carry an `idempotency-key` header (a method with a `request_id` field
 *   whose call fills it: the service deduplicates it and checks the header equals
 *   it): retried on transport failures, UNAVAILABLE and the per-try timeout of a
 *   hung instance, on another host, with back-off;
 * - every other unary call: retried only when it provably never reached an
 *   instance (connect failure, refused stream, reset before the request was sent),
 *   so a write is never applied twice.
 *
 * The retry rule is decided by what the call carries, not by what its type could
 * carry: a create without a request_id re-sent after a per-try timeout would be
 * stored twice (docs/gateway.md).
 *
 * `npm run envoy:config` writes envoy.yaml (the docker compose topology: DNS
 * names); `npm run cluster` renders the same configuration for local processes.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel as Idempotency } from "@bufbuild/protobuf/wkt";
import { stringify } from "yaml";
import { IdentityService } from "../gen/agora/identity/v1/identity_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { IDEMPOTENCY_KEY_HEADER } from "../src/platform/idempotency.js";
import { ServerReflection as ReflectionV1 } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { SERVICE_MODULES } from "../src/services/catalogue.js";

/** One upstream cluster per Agora service, named after its folder (the service catalogue's names). */
export const GATEWAY_SERVICES: { name: string; service: DescService }[] = Object.entries(SERVICE_MODULES).flatMap(([name, module]) =>
  module.services.map((service) => ({ name, service })),
);

/** Methods that need no token: the ones the services themselves let through. */
const PUBLIC_METHODS = Object.values(SERVICE_MODULES).flatMap((module) => module.publicMethods ?? []).map((m) => `/${m}`);

export interface Endpoint {
  host: string;
  port: number;
}

export interface GatewayOptions {
  listenAddress: string;
  port: number;
  adminPort: number;
  /** Upstream instances per cluster name. */
  endpoints: Record<string, Endpoint[]>;
  /** STRICT_DNS for compose service names, STATIC for loopback addresses. */
  discovery: "STRICT_DNS" | "STATIC";
  corsOrigins: string[];
  /** Requests per second the whole gateway admits. */
  rateLimitRps: number;
  /** Login attempts per second the gateway admits (brute force is stopped at the edge too). */
  loginRateLimitRps: number;
  /** Envoy's active health check interval; a draining instance must keep listening longer than drainDelayMs() of it. */
  healthCheckIntervalMs: number;
  /** Must exceed the services' HEARTBEAT_INTERVAL_MS. */
  streamIdleTimeoutSeconds: number;
  accessLog: boolean;
}

export const COMPOSE_OPTIONS: GatewayOptions = {
  listenAddress: "0.0.0.0",
  port: 8080,
  adminPort: 9901,
  endpoints: Object.fromEntries(GATEWAY_SERVICES.map(({ name }) => [name, [{ host: "agora", port: 8080 }]])),
  discovery: "STRICT_DNS",
  corsOrigins: ["http://localhost:3000", "http://localhost:5173"],
  rateLimitRps: 5000,
  loginRateLimitRps: 50,
  healthCheckIntervalMs: 2000,
  streamIdleTimeoutSeconds: 60,
  accessLog: true,
};

const isStreaming = (m: DescMethod) => m.methodKind !== "unary";

const HEALTH_CHECK_TIMEOUT_MS = 1000;
const UNHEALTHY_THRESHOLD = 2;

/**
 * How long an instance must keep listening after it turned NOT_SERVING (SHUTDOWN_DELAY_MS) so that
 * Envoy has taken it out of rotation first: a NOT_SERVING answer ejects it at the next check, a
 * check that times out only after UNHEALTHY_THRESHOLD of them; one interval more for margin.
 */
export function drainDelayMs(healthCheckIntervalMs: number): number {
  return (UNHEALTHY_THRESHOLD + 1) * healthCheckIntervalMs + HEALTH_CHECK_TIMEOUT_MS;
}

/** Whether any call of the method may be re-sent after it reached an instance: its proto says repeating it changes nothing. */
export function retrySafe(m: DescMethod): boolean {
  if (isStreaming(m)) return false;
  const level = m.idempotency;
  return level === Idempotency.NO_SIDE_EFFECTS || level === Idempotency.IDEMPOTENT;
}

/** Whether a call of the method may carry an idempotency key (its request has a `request_id` the service deduplicates). */
export function takesIdempotencyKey(m: DescMethod): boolean {
  return !isStreaming(m) && !retrySafe(m) && m.input.fields.some((f) => f.name === "request_id");
}

/** Envoy's per-try timeout of retried calls: a hung instance is given up on after this. */
export const PER_TRY_TIMEOUT_MS = 2000;

const typed = (type: string, config: object = {}) => ({ "@type": `type.googleapis.com/${type}`, ...config });
const seconds = (ms: number) => `${ms / 1000}s`;

/** For calls a repeat cannot apply twice. */
function retryPolicy() {
  return {
    // Transport failures and UNAVAILABLE (a draining or dead instance); gateway-error covers the
    // per-try timeout of a hung instance. Never INVALID_ARGUMENT, RESOURCE_EXHAUSTED (limits and
    // oversized messages), CANCELLED or INTERNAL: repeating those cannot help.
    retry_on: "connect-failure,refused-stream,reset,unavailable,gateway-error",
    per_try_timeout: seconds(PER_TRY_TIMEOUT_MS),
    ...retryTargets(),
  };
}

/**
 * For every other call: only the conditions that prove no instance received it (the connection
 * never opened, the stream was refused, or it was reset before the request was sent). No per-try
 * timeout: a slow instance may still be applying the change.
 */
function unsentRetryPolicy() {
  return { retry_on: "connect-failure,refused-stream,reset-before-request", ...retryTargets() };
}

function retryTargets() {
  return {
    num_retries: 2,
    retry_back_off: { base_interval: "0.025s", max_interval: "0.25s" },
    retry_host_predicate: [
      { name: "envoy.retry_host_predicates.previous_hosts", typed_config: typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate") },
    ],
    host_selection_retry_max_attempts: 5,
  };
}

function routes(o: GatewayOptions) {
  const list: object[] = [];
  for (const { name, service } of GATEWAY_SERVICES) {
    for (const method of service.methods) {
      const pathName = `/${service.typeName}/${method.name}`;
      const entry = (suffix: string, match: object, route: object) => {
        const e: Record<string, unknown> = { name: `${service.name}.${method.name}${suffix}`, match: { path: pathName, ...match }, route: { cluster: name, ...route } };
        if (method === IdentityService.method.login) {
          e.typed_per_filter_config = { "envoy.filters.http.local_ratelimit": localRateLimit("login_rate_limit", o.loginRateLimitRps) };
        }
        list.push(e);
      };
      if (isStreaming(method)) {
        entry("", {}, { timeout: "0s", idle_timeout: `${o.streamIdleTimeoutSeconds}s` });
        continue;
      }
      // The client's grpc-timeout becomes the route timeout (capped); without one, 30 s.
      const unary = () => ({ timeout: "30s", max_stream_duration: { grpc_timeout_header_max: "60s" } });
      if (takesIdempotencyKey(method)) {
        // First match wins: a call that carries its key may be re-sent, one without it only if it never arrived.
        entry(".keyed", { headers: [{ name: IDEMPOTENCY_KEY_HEADER, present_match: true }] }, { ...unary(), retry_policy: retryPolicy() });
      }
      entry("", {}, { ...unary(), retry_policy: retrySafe(method) ? retryPolicy() : unsentRetryPolicy() });
    }
  }
  // Health and reflection are the same on every instance: any cluster answers them.
  const any = GATEWAY_SERVICES[0]!.name;
  list.push(
    { name: "health", match: { prefix: `/${Health.typeName}/` }, route: { cluster: any, timeout: "0s", idle_timeout: `${o.streamIdleTimeoutSeconds}s` } },
    { name: "reflection.v1", match: { prefix: `/${ReflectionV1.typeName}/` }, route: { cluster: any, timeout: "0s" } },
    { name: "reflection.v1alpha", match: { prefix: `/${ReflectionV1alpha.typeName}/` }, route: { cluster: any, timeout: "0s" } },
    { name: "jwks", match: { path: "/.well-known/jwks.json" }, route: { cluster: "identity", timeout: "5s" } },
    // The web console's static files (every instance serves them), after every RPC route.
    { name: "console", match: CONSOLE_MATCH, route: { cluster: any, timeout: "10s" } },
  );
  return list;
}

/** The console's pages (client-side routes), its hashed assets and icon: no RPC path looks like these. */
const CONSOLE_MATCH = {
  safe_regex: { regex: "^/((inventory|chat|reservations|files|monitoring|game|admin)(/[^.]*)?|assets/[A-Za-z0-9_.-]+|favicon[.]svg)?$" },
  headers: [{ name: ":method", string_match: { exact: "GET" } }],
};

function localRateLimit(statPrefix: string, rps: number) {
  return typed("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
    stat_prefix: statPrefix,
    token_bucket: { max_tokens: rps, tokens_per_fill: rps, fill_interval: "1s" },
    filter_enabled: { default_value: { numerator: 100, denominator: "HUNDRED" } },
    filter_enforced: { default_value: { numerator: 100, denominator: "HUNDRED" } },
    // 429 would map to UNAVAILABLE, which clients retry blindly.
    rate_limited_as_resource_exhausted: true,
    response_headers_to_add: [{ append_action: "OVERWRITE_IF_EXISTS_OR_ADD", header: { key: "x-local-rate-limit", value: "true" } }],
  });
}

function jwtAuthn() {
  const exempt = [
    ...PUBLIC_METHODS.map((p) => ({ match: { path: p } })),
    { match: { prefix: `/${Health.typeName}/` } },
    { match: { prefix: `/${ReflectionV1.typeName}/` } },
    { match: { prefix: `/${ReflectionV1alpha.typeName}/` } },
    { match: { path: "/.well-known/jwks.json" } },
    { match: CONSOLE_MATCH },
  ];
  return typed("envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication", {
    providers: {
      agora: {
        issuer: "agora-identity",
        audiences: ["agora"],
        remote_jwks: {
          http_uri: { uri: "http://identity/.well-known/jwks.json", cluster: "identity", timeout: "2s" },
          cache_duration: "300s",
          async_fetch: { fast_listener: false, failed_refetch_duration: "1s" },
          retry_policy: { num_retries: 3, retry_back_off: { base_interval: "0.2s", max_interval: "2s" } },
        },
        from_headers: [{ name: "authorization", value_prefix: "Bearer " }],
        // The services verify the token again and read the caller from it.
        forward: true,
        // Verified tokens by their text (expiry still checked on every hit): a client's calls do not each pay for
        // an ES256 verification.
        jwt_cache_config: { jwt_cache_size: 10000 },
      },
    },
    rules: [...exempt, { match: { prefix: "/" }, requires: { provider_name: "agora" } }],
    bypass_cors_preflight: true,
  });
}

function accessLog() {
  return [
    {
      name: "envoy.access_loggers.stdout",
      typed_config: typed("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", {
        log_format: {
          json_format: {
            time: "%START_TIME%",
            request_id: "%REQ(X-REQUEST-ID)%",
            method: "%REQ(:PATH)%",
            protocol: "%PROTOCOL%",
            content_type: "%REQ(CONTENT-TYPE)%",
            http_status: "%RESPONSE_CODE%",
            grpc_status: "%GRPC_STATUS%",
            flags: "%RESPONSE_FLAGS%",
            duration_ms: "%DURATION%",
            upstream: "%UPSTREAM_HOST%",
            attempts: "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
            client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
            bytes_in: "%BYTES_RECEIVED%",
            bytes_out: "%BYTES_SENT%",
          },
        },
      }),
    },
  ];
}

function cluster(o: GatewayOptions, name: string, service: DescService) {
  return {
    name,
    type: o.discovery,
    dns_lookup_family: "V4_ONLY",
    connect_timeout: "1s",
    // Round robin, not least-request: a dead host fails fast, looks idle, and would attract every retry.
    lb_policy: "ROUND_ROBIN",
    per_connection_buffer_limit_bytes: 1048576,
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {
        explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 100, connection_keepalive: { interval: "30s", timeout: "5s" } } },
        common_http_protocol_options: { idle_timeout: "300s" },
      }),
    },
    load_assignment: {
      cluster_name: name,
      endpoints: [
        { lb_endpoints: o.endpoints[name]!.map((e) => ({ endpoint: { address: { socket_address: { address: e.host, port_value: e.port } } } })) },
      ],
    },
    health_checks: [
      {
        timeout: seconds(HEALTH_CHECK_TIMEOUT_MS),
        interval: seconds(o.healthCheckIntervalMs),
        // Envoy checks a cluster that has not carried traffic yet only every 60 s by default: in a
        // gateway's first minute a draining instance would not be noticed before its listener closed.
        no_traffic_interval: seconds(o.healthCheckIntervalMs),
        unhealthy_threshold: UNHEALTHY_THRESHOLD,
        healthy_threshold: 1,
        grpc_health_check: { service_name: service.typeName },
      },
    ],
    // Ejects a failing host even when it is one of only two.
    outlier_detection: {
      consecutive_5xx: 3,
      consecutive_gateway_failure: 2,
      enforcing_consecutive_5xx: 100,
      enforcing_consecutive_gateway_failure: 100,
      interval: "1s",
      base_ejection_time: "5s",
      max_ejection_time: "60s",
      max_ejection_percent: 50,
    },
    circuit_breakers: {
      thresholds: [
        {
          priority: "DEFAULT",
          max_connections: 1024,
          max_pending_requests: 1024,
          max_requests: 4096,
          // Retries may add half the active requests again, and at least 64 at once (a dead host fails many calls together).
          retry_budget: { budget_percent: { value: 50 }, min_retry_concurrency: 64 },
        },
      ],
    },
  };
}

export function gatewayConfig(o: GatewayOptions): object {
  const cors = typed("envoy.extensions.filters.http.cors.v3.CorsPolicy", {
    allow_origin_string_match: o.corsOrigins.map((exact) => ({ exact })),
    allow_methods: "GET, POST, OPTIONS",
    allow_headers: `authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms, x-request-id, ${IDEMPOTENCY_KEY_HEADER}`,
    expose_headers: "grpc-status, grpc-message, grpc-status-details-bin, x-request-id, x-local-rate-limit",
    max_age: "86400",
  });
  return {
    admin: {
      // Loopback only: the admin interface can reconfigure and stop Envoy.
      address: { socket_address: { address: "127.0.0.1", port_value: o.adminPort } },
    },
    overload_manager: {
      refresh_interval: "0.25s",
      resource_monitors: [
        {
          name: "envoy.resource_monitors.global_downstream_max_connections",
          typed_config: typed("envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig", {
            max_active_downstream_connections: 10000,
          }),
        },
      ],
    },
    layered_runtime: {
      layers: [
        {
          name: "static",
          static_layer: {
            // HTTP/2 rapid reset (CVE-2023-44487): close connections whose streams are mostly reset early.
            "overload.premature_reset_total_stream_count": 500,
            "overload.premature_reset_min_stream_lifetime_seconds": 1,
          },
        },
      ],
    },
    static_resources: {
      listeners: [
        {
          name: "gateway",
          address: { socket_address: { address: o.listenAddress, port_value: o.port } },
          // Linux lets several processes share a port with SO_REUSEPORT: a second gateway on a busy port
          // must fail to start, not quietly split the traffic.
          enable_reuse_port: false,
          per_connection_buffer_limit_bytes: 1048576,
          filter_chains: [
            {
              filters: [
                {
                  name: "envoy.filters.network.http_connection_manager",
                  typed_config: typed("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", {
                    stat_prefix: "gateway",
                    // HTTP/1.1 (Connect, gRPC-Web) and HTTP/2 with prior knowledge (gRPC) on one port.
                    codec_type: "AUTO",
                    use_remote_address: true,
                    generate_request_id: true,
                    stream_idle_timeout: "300s",
                    request_headers_timeout: "10s",
                    max_request_headers_kb: 64,
                    common_http_protocol_options: { idle_timeout: "3600s", headers_with_underscores_action: "REJECT_REQUEST", max_headers_count: 100 },
                    http2_protocol_options: {
                      max_concurrent_streams: 100,
                      initial_stream_window_size: 4194304,
                      initial_connection_window_size: 16777216,
                      max_outbound_frames: 10000,
                    },
                    access_log: o.accessLog ? accessLog() : [],
                    http_filters: [
                      { name: "envoy.filters.http.local_ratelimit", typed_config: localRateLimit("gateway_rate_limit", o.rateLimitRps) },
                      { name: "envoy.filters.http.grpc_web", typed_config: typed("envoy.extensions.filters.http.grpc_web.v3.GrpcWeb") },
                      { name: "envoy.filters.http.cors", typed_config: typed("envoy.extensions.filters.http.cors.v3.Cors") },
                      { name: "envoy.filters.http.jwt_authn", typed_config: jwtAuthn() },
                      { name: "envoy.filters.http.router", typed_config: typed("envoy.extensions.filters.http.router.v3.Router") },
                    ],
                    route_config: {
                      name: "agora",
                      virtual_hosts: [
                        {
                          name: "agora",
                          domains: ["*"],
                          typed_per_filter_config: { "envoy.filters.http.cors": cors },
                          routes: routes(o),
                        },
                      ],
                    },
                  }),
                },
              ],
            },
          ],
        },
      ],
      clusters: GATEWAY_SERVICES.map(({ name, service }) => cluster(o, name, service)),
    },
  };
}

export function renderGatewayConfig(o: GatewayOptions): string {
  return `# Generated by scripts/envoy-config.ts (npm run envoy:config). Do not edit by hand.\n${stringify(gatewayConfig(o), { lineWidth: 0 })}`;
}

const ENVOY_YAML = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "envoy.yaml");

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const rendered = renderGatewayConfig(COMPOSE_OPTIONS);
  if (process.argv.includes("--check")) {
    if (fs.readFileSync(ENVOY_YAML, "utf8") !== rendered) {
      console.error("envoy.yaml is stale: run 'npm run envoy:config' and commit it");
      process.exit(1);
    }
    console.error("envoy.yaml is fresh");
  } else {
    fs.writeFileSync(ENVOY_YAML, rendered);
    console.error(`wrote ${ENVOY_YAML}`);
  }
}
