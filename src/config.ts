import path from "node:path";
import type { ConnectionTimeouts } from "./platform/listener.js";
import type { MetricsAccess } from "./platform/metrics-endpoint.js";
import type { RateLimitConfig } from "./platform/rate-limit.js";

/** The services this build can serve; `SERVICES` picks a subset. */
export const KNOWN_SERVICES = ["identity", "inventory", "reservation", "chat", "files", "monitoring", "game"] as const;
export type ServiceName = (typeof KNOWN_SERVICES)[number];

export interface Config {
  host: string;
  port: number;
  services: ServiceName[];
  /** Empty: start an embedded PostgreSQL whose data lives in dataDir. */
  databaseUrl: string | undefined;
  dataDir: string;
  /** The built web console served at `/` (CONSOLE_DIR, default web/dist). */
  consoleDir: string;
  /** Port for the embedded PostgreSQL; 0 picks a free one. */
  embeddedPostgresPort: number;
  logLevel: string;
  maxMessageBytes: number;
  maxConcurrentStreams: number;
  /** Bounds on connections that never send a complete request (docs/security.md, "Connections"). */
  connections: ConnectionTimeouts;
  /** Rate limits on methods that write (docs/security.md, "Rate limits and quotas"). */
  rateLimits: RateLimitConfig;
  /** Who may read GET /metrics, and where (docs/security.md, "Metrics endpoint"). */
  metrics: MetricsAccess;
  /** Who serves native gRPC (protobuf): grpc-js through src/platform/grpc-js-adapter.ts, or Connect-node like the other protocols. */
  grpcServer: "grpc-js" | "connect";
  /** How long in-flight calls may take to finish after SIGTERM before connections are cut. */
  shutdownGraceMs: number;
  /** Time between reporting NOT_SERVING and closing the listener, so load balancers notice. */
  shutdownDelayMs: number;
  heartbeatIntervalMs: number;
  /** How long the event logs behind Watch streams keep events (how far back a client can resume). */
  eventRetentionHours: number;
  dbPoolSize: number;
  auth: AuthConfig;
  reservation: ReservationConfig;
  chat: ChatConfig;
  files: FilesConfig;
  monitoring: MonitoringConfig;
  game: GameConfig;
}

export interface GameConfig {
  /** Seconds a player has for a move unless the game says otherwise. */
  turnSeconds: number;
  /** How often each instance looks for turn clocks that ran out. */
  sweepIntervalMs: number;
  /** How often each instance runs a matchmaking round (one instance at a time does). */
  matchIntervalMs: number;
  /** How often a FindMatch stream reports its ticket (and keeps it in the pool). */
  ticketTickMs: number;
  /** The rating window of matchmaking: base, widening per second waited, maximum. */
  window: { base: number; perSecond: number; max: number };
}

export interface MonitoringConfig {
  /** How long raw samples are kept; the per-minute and per-hour rollups are kept longer. */
  rawRetentionHours: number;
  minuteRetentionDays: number;
  hourRetentionDays: number;
  /** A host silent for longer is DOWN (and raises a host-down alert); older samples are not evaluated. */
  hostDownSeconds: number;
  /** How often alert rules are evaluated (by one instance at a time). */
  evaluateIntervalMs: number;
  /** How far ahead of the server's clock a sample's time may be. */
  maxFutureSeconds: number;
  /** Metric series (metric and label set) one host may have. */
  maxSeriesPerHost: number;
}

export interface FilesConfig {
  maxBytes: number;
  retentionHours: number;
  gcGraceSeconds: number;
  sweepIntervalMs: number;
  uploadTtlMinutes: number;
  maxOpenUploadsPerUser: number;
  maxBytesPerUser: number;
}

export interface ChatConfig {
  /** Where the chat service reaches the file service for attachments (unset: this process, when it serves files). */
  filesUrl: string | undefined;
  /** Where the chat service asks whether a user exists (unset: this process, when it serves identity). */
  identityUrl: string | undefined;
  messagesPerSecond: number;
  /** Events a stream may have waiting before it is ended as too slow (it resumes from its cursors). */
  streamBuffer: number;
  awayAfterSeconds: number;
  maxRoomsPerUser: number;
}

export interface ReservationConfig {
  maxHours: number;
  pendingHoldMinutes: number;
  reminderLeadMinutes: number;
  /** How often each instance looks for due reminders and expired holds. */
  schedulerIntervalMs: number;
}

export interface AuthConfig {
  issuer: string;
  audience: string;
  accessTokenTtlSeconds: number;
  refreshTokenTtlSeconds: number;
  /** PEM (PKCS#8) ES256 private key; unset: a key created on first start in DATA_DIR/keys. */
  privateKeyFile: string | undefined;
  /** Where processes that do not run the identity service fetch its public keys. */
  jwksUrl: string | undefined;
  /** First administrator, created at start when missing. */
  adminUsername: string | undefined;
  adminPassword: string | undefined;
  /** Failed logins on one account before each further attempt waits (1 s, doubling, up to loginMaxDelaySeconds). */
  loginMaxFailuresPerUser: number;
  /** Login attempts per client address per window (successful ones are given back). */
  loginMaxFailuresPerAddress: number;
  loginMaxDelaySeconds: number;
  loginWindowSeconds: number;
  /** Take the client address from the last X-Forwarded-For entry (set when behind Envoy). */
  trustForwardedFor: boolean;
}

/** A configuration problem, reported as one line at start. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

type Env = Record<string, string | undefined>;

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  return value;
}

/** One of `allowed`; the first when unset. */
function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[]): T {
  const raw = env[name]?.trim();
  if (!raw) return allowed[0]!;
  if (!(allowed as readonly string[]).includes(raw)) throw new ConfigError(`${name} must be one of ${allowed.join(", ")}, got "${raw}"`);
  return raw as T;
}

function services(raw: string | undefined): ServiceName[] {
  if (raw === undefined || raw.trim() === "" || raw.trim() === "all") return [...KNOWN_SERVICES];
  const names = raw.split(",").map((s) => s.trim()).filter(Boolean);
  const unknown = names.filter((n) => !(KNOWN_SERVICES as readonly string[]).includes(n));
  if (unknown.length > 0) {
    throw new ConfigError(`SERVICES names unknown service(s) ${unknown.join(", ")}; known: ${KNOWN_SERVICES.join(", ")}`);
  }
  return [...new Set(names)] as ServiceName[];
}

function databaseUrl(raw: string | undefined): string | undefined {
  if (raw === undefined || raw.trim() === "") return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError("DATABASE_URL is not a valid URL (expected postgres://user:password@host:port/database)");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new ConfigError(`DATABASE_URL must start with postgres:// or postgresql://, got ${url.protocol}//`);
  }
  return raw;
}

export function loadConfig(env: Env = process.env): Config {
  const config: Config = {
    host: env.HOST?.trim() || "0.0.0.0",
    port: integer(env, "PORT", 8080, 0, 65535),
    services: services(env.SERVICES),
    databaseUrl: databaseUrl(env.DATABASE_URL),
    dataDir: path.resolve(env.DATA_DIR?.trim() || ".data"),
    consoleDir: path.resolve(env.CONSOLE_DIR?.trim() || "web/dist"),
    embeddedPostgresPort: integer(env, "EMBEDDED_PG_PORT", 0, 0, 65535),
    logLevel: env.LOG_LEVEL?.trim() || "info",
    maxMessageBytes: integer(env, "MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024),
    maxConcurrentStreams: integer(env, "MAX_CONCURRENT_STREAMS", 200, 1, 10_000),
    connections: {
      firstBytesMs: integer(env, "CONNECTION_FIRST_BYTES_TIMEOUT_MS", 10_000, 100, 600_000),
      headersMs: integer(env, "CONNECTION_HEADERS_TIMEOUT_MS", 20_000, 100, 600_000),
      requestBodyMs: integer(env, "REQUEST_BODY_TIMEOUT_MS", 60_000, 100, 3_600_000),
      idleMs: integer(env, "CONNECTION_IDLE_TIMEOUT_MS", 120_000, 100, 3_600_000),
    },
    rateLimits: {
      userWritesPerSecond: integer(env, "RATE_LIMIT_USER_WRITES_PER_SECOND", 10, 0, 1_000_000),
      userWritesBurst: integer(env, "RATE_LIMIT_USER_WRITES_BURST", 50, 1, 1_000_000),
      addressWritesPerSecond: integer(env, "RATE_LIMIT_ADDRESS_WRITES_PER_SECOND", 50, 0, 1_000_000),
      addressWritesBurst: integer(env, "RATE_LIMIT_ADDRESS_WRITES_BURST", 200, 1, 1_000_000),
      registrationsPerHour: integer(env, "RATE_LIMIT_REGISTRATIONS_PER_HOUR", 20, 0, 1_000_000),
    },
    metrics: metricsAccess(env),
    grpcServer: oneOf(env, "GRPC_SERVER", ["grpc-js", "connect"] as const),
    shutdownGraceMs: integer(env, "SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    shutdownDelayMs: integer(env, "SHUTDOWN_DELAY_MS", 0, 0, 60_000),
    heartbeatIntervalMs: integer(env, "HEARTBEAT_INTERVAL_MS", 15_000, 100, 600_000),
    eventRetentionHours: integer(env, "EVENT_RETENTION_HOURS", 168, 1, 24 * 365),
    dbPoolSize: integer(env, "DB_POOL_SIZE", 10, 1, 200),
    auth: authConfig(env),
    reservation: {
      maxHours: integer(env, "RESERVATION_MAX_HOURS", 24, 1, 24 * 366),
      pendingHoldMinutes: integer(env, "PENDING_HOLD_MINUTES", 15, 1, 7 * 24 * 60),
      reminderLeadMinutes: integer(env, "REMINDER_LEAD_MINUTES", 1440, 1, 30 * 24 * 60),
      schedulerIntervalMs: integer(env, "SCHEDULER_INTERVAL_MS", 5000, 10, 3_600_000),
    },
    chat: {
      filesUrl: env.FILES_URL?.trim() || undefined,
      identityUrl: env.IDENTITY_URL?.trim() || undefined,
      messagesPerSecond: integer(env, "CHAT_MESSAGES_PER_SECOND", 10, 1, 10_000),
      streamBuffer: integer(env, "CHAT_STREAM_BUFFER", 1000, 10, 1_000_000),
      awayAfterSeconds: integer(env, "CHAT_AWAY_AFTER_SECONDS", 300, 1, 86_400),
      maxRoomsPerUser: integer(env, "CHAT_MAX_ROOMS_PER_USER", 100, 1, 1_000_000),
    },
    files: {
      maxBytes: integer(env, "FILES_MAX_BYTES", 1024 ** 3, 1, 1024 ** 4),
      retentionHours: integer(env, "FILES_RETENTION_HOURS", 720, 0, 24 * 3650),
      gcGraceSeconds: integer(env, "FILES_GC_GRACE_SECONDS", 3600, 0, 30 * 86_400),
      sweepIntervalMs: integer(env, "FILES_SWEEP_INTERVAL_MS", 60_000, 10, 86_400_000),
      uploadTtlMinutes: integer(env, "FILES_UPLOAD_TTL_MINUTES", 60, 1, 7 * 24 * 60),
      maxOpenUploadsPerUser: integer(env, "FILES_MAX_OPEN_UPLOADS_PER_USER", 20, 1, 100_000),
      maxBytesPerUser: integer(env, "FILES_MAX_BYTES_PER_USER", 10 * 1024 ** 3, 0, 1024 ** 5),
    },
    monitoring: {
      rawRetentionHours: integer(env, "MONITORING_RAW_RETENTION_HOURS", 48, 1, 24 * 365),
      minuteRetentionDays: integer(env, "MONITORING_MINUTE_RETENTION_DAYS", 30, 1, 3650),
      hourRetentionDays: integer(env, "MONITORING_HOUR_RETENTION_DAYS", 400, 1, 36_500),
      hostDownSeconds: integer(env, "MONITORING_HOST_DOWN_SECONDS", 60, 1, 86_400),
      evaluateIntervalMs: integer(env, "MONITORING_EVALUATE_INTERVAL_MS", 5000, 10, 3_600_000),
      maxFutureSeconds: integer(env, "MONITORING_MAX_FUTURE_SECONDS", 300, 0, 86_400),
      maxSeriesPerHost: integer(env, "MONITORING_MAX_SERIES_PER_HOST", 10_000, 1, 10_000_000),
    },
    game: {
      turnSeconds: integer(env, "GAME_TURN_SECONDS", 30, 1, 3600),
      sweepIntervalMs: integer(env, "GAME_SWEEP_INTERVAL_MS", 1000, 10, 3_600_000),
      matchIntervalMs: integer(env, "GAME_MATCH_INTERVAL_MS", 1000, 10, 3_600_000),
      ticketTickMs: integer(env, "GAME_TICKET_TICK_MS", 1000, 10, 60_000),
      window: {
        base: integer(env, "GAME_MATCH_WINDOW", 100, 0, 3000),
        perSecond: integer(env, "GAME_MATCH_WINDOW_PER_SECOND", 10, 0, 3000),
        max: integer(env, "GAME_MATCH_WINDOW_MAX", 800, 0, 3000),
      },
    },
  };
  if (!config.services.includes("identity") && !config.auth.jwksUrl) {
    throw new ConfigError("without the identity service in SERVICES, set JWKS_URL to its /.well-known/jwks.json");
  }
  return config;
}

function metricsAccess(env: Env): MetricsAccess {
  const allow = env.METRICS_ALLOW?.trim() || "any";
  if (allow !== "any" && allow !== "loopback") throw new ConfigError(`METRICS_ALLOW must be "any" or "loopback", got "${allow}"`);
  const token = env.METRICS_TOKEN || undefined;
  if (token !== undefined && token.length < 16) throw new ConfigError("METRICS_TOKEN must be at least 16 characters");
  const port = env.METRICS_PORT?.trim() ? integer(env, "METRICS_PORT", 0, 0, 65535) : undefined;
  return { allow, token, port, host: env.METRICS_HOST?.trim() || "127.0.0.1" };
}

function authConfig(env: Env): AuthConfig {
  const jwksUrl = env.JWKS_URL?.trim() || undefined;
  if (jwksUrl && !/^https?:\/\//.test(jwksUrl)) throw new ConfigError(`JWKS_URL must be an http(s) URL, got "${jwksUrl}"`);
  const adminUsername = env.ADMIN_USERNAME?.trim() || undefined;
  const adminPassword = env.ADMIN_PASSWORD || undefined;
  if (Boolean(adminUsername) !== Boolean(adminPassword)) {
    throw new ConfigError("ADMIN_USERNAME and ADMIN_PASSWORD go together: set both or neither");
  }
  if (adminPassword !== undefined && (adminPassword.length < 12 || adminPassword.length > 128)) {
    throw new ConfigError("ADMIN_PASSWORD must be 12 to 128 characters (the password policy)");
  }
  return {
    issuer: env.AUTH_ISSUER?.trim() || "agora-identity",
    audience: env.AUTH_AUDIENCE?.trim() || "agora",
    accessTokenTtlSeconds: integer(env, "ACCESS_TOKEN_TTL_SECONDS", 900, 30, 86_400),
    refreshTokenTtlSeconds: integer(env, "REFRESH_TOKEN_TTL_SECONDS", 30 * 86_400, 60, 365 * 86_400),
    privateKeyFile: env.JWT_PRIVATE_KEY_FILE?.trim() || undefined,
    jwksUrl,
    adminUsername,
    adminPassword,
    loginMaxFailuresPerUser: integer(env, "LOGIN_MAX_FAILURES_PER_USER", 5, 1, 1000),
    loginMaxFailuresPerAddress: integer(env, "LOGIN_MAX_FAILURES_PER_ADDRESS", 30, 1, 100_000),
    loginMaxDelaySeconds: integer(env, "LOGIN_MAX_DELAY_SECONDS", 60, 1, 3600),
    loginWindowSeconds: integer(env, "LOGIN_WINDOW_SECONDS", 900, 1, 86_400),
    trustForwardedFor: env.TRUST_FORWARDED_FOR === "true",
  };
}
