import { randomBytes } from "node:crypto";
import type { DescService } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import type { Clock } from "../../src/platform/clock.js";
import { sendIdempotencyKey } from "../../src/platform/idempotency.js";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { pino, type Logger } from "pino";
import { loadConfig, type Config } from "../../src/config.js";
import { prepareDatabase } from "../../src/platform/db.js";
import { startServer, type AgoraServer } from "../../src/server.js";

export const quietLog = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

function adminUrl(): string {
  const url = process.env.AGORA_TEST_DATABASE_URL;
  if (!url) throw new Error("AGORA_TEST_DATABASE_URL is not set: run the tests through mocha (.mocharc.json)");
  return url;
}

/** A new, empty database on the test PostgreSQL; returns its URL. */
export async function freshDatabase(): Promise<string> {
  const name = `t_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  const appUrl = process.env.AGORA_TEST_APP_DATABASE_URL;
  if (!appUrl) return url.toString(); // an external PostgreSQL: its login as given
  await prepareDatabase(url.toString());
  const app = new URL(appUrl);
  app.pathname = `/${name}`;
  return app.toString();
}

/** Runs one statement on its own connection; returns its rows. */
export async function sql<R = Record<string, unknown>>(url: string, text: string, params: unknown[] = []): Promise<R[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, params)).rows as R[];
  } finally {
    await c.end();
  }
}

/**
 * A fresh database where every plan is generic (`plan_cache_mode`): made without the parameters' values, as a
 * connection's plan of a prepared statement is from its sixth run whenever it looks no worse than the custom ones.
 * Where a statement's plan depends on estimates, this is the case to test.
 */
export async function genericPlanDatabase(): Promise<string> {
  const url = await freshDatabase();
  await sql(adminUrl(), `ALTER DATABASE ${new URL(url).pathname.slice(1)} SET plan_cache_mode = force_generic_plan`);
  return url;
}

/**
 * PostgreSQL's counters for one table: rows read through each of its indexes (by name), by sequential scans
 * (`seq`), and rows inserted, updated and deleted (`inserted`, `updated`, `deleted`). A server's connection reports
 * them once idle, a second at most after its last statement, or as it closes (connectionsClosed): wait for a count
 * you expect (`eventually`) before reading the others.
 */
export async function tableReads(url: string, schema: string, table: string): Promise<Record<string, number>> {
  const indexes = await sql<{ indexrelname: string; idx_tup_read: string }>(
    url,
    `SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname = $2`,
    [schema, table],
  );
  const [t] = await sql<{ seq_tup_read: string; n_tup_ins: string; n_tup_upd: string; n_tup_del: string }>(
    url,
    `SELECT seq_tup_read, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2`,
    [schema, table],
  );
  return {
    ...Object.fromEntries(indexes.map((r) => [r.indexrelname, Number(r.idx_tup_read)])),
    seq: Number(t!.seq_tup_read),
    inserted: Number(t!.n_tup_ins),
    updated: Number(t!.n_tup_upd),
    deleted: Number(t!.n_tup_del),
  };
}

/** Rows of one table read so far by its indexes and by sequential scans together (tableReads, summed). */
export async function rowsRead(url: string, schema: string, table: string): Promise<number> {
  const { inserted, updated, deleted, ...reads } = await tableReads(url, schema, table);
  return Object.values(reads).reduce((n, v) => n + v, 0);
}

/** Waits until no other connection is open on the database (after a server's shutdown): all have reported their counters. */
export async function connectionsClosed(url: string): Promise<void> {
  const others = `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`;
  await eventually(async () => (await sql<{ n: number }>(url, others))[0]!.n === 0, "the database's other connections to close");
}

export interface TestServer extends AgoraServer {
  databaseUrl: string;
  config: Config;
  /** An access token of the first administrator (ADMIN_USERNAME / ADMIN_PASSWORD below). */
  adminToken: string;
}

export const ADMIN = { username: "admin", password: "admin-password-123" };

/** Tests call from one address, fast: rate limits are off unless a test turns them on (test/integration/limits.test.ts). */
export const NO_RATE_LIMITS = {
  RATE_LIMIT_USER_WRITES_PER_SECOND: "0",
  RATE_LIMIT_ADDRESS_WRITES_PER_SECOND: "0",
  RATE_LIMIT_REGISTRATIONS_PER_HOUR: "0",
};

/** A real server on an ephemeral loopback port; a fresh database unless one is given. */
export async function startTestServer(
  env: Record<string, string> = {},
  databaseUrl?: string,
  log: Logger = quietLog,
  clock?: Clock,
): Promise<TestServer> {
  const config = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    SHUTDOWN_GRACE_MS: "2000",
    DATA_DIR: process.env.AGORA_TEST_DATA_DIR,
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASSWORD: ADMIN.password,
    ...NO_RATE_LIMITS,
    ...env,
  });
  const url = databaseUrl ?? (await freshDatabase());
  const server = await startServer({ config, databaseUrl: url, log, clock });
  const adminToken = config.services.includes("identity") ? (await login(server.url, ADMIN.username, ADMIN.password)).accessToken : "";
  return Object.assign(server, { databaseUrl: url, config, adminToken });
}

export async function login(baseUrl: string, username: string, password: string) {
  const { tokens } = await client(IdentityService, baseUrl).login({ username, password });
  return tokens!;
}

/** Registers a user (password "password-of-<name>") and returns an access token. */
export async function signUp(baseUrl: string, username: string): Promise<string> {
  const password = `password-of-${username}`;
  await client(IdentityService, baseUrl).register({ username, password, displayName: username, email: `${username}@example.com` });
  return (await login(baseUrl, username, password)).accessToken;
}

export type ProtocolName = "connect" | "grpc" | "grpcweb";
export const PROTOCOLS: ProtocolName[] = ["connect", "grpc", "grpcweb"];

/** Sends `authorization: Bearer <token>` with every call. */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

export function transport(baseUrl: string, protocol: ProtocolName, token?: string): Transport {
  const interceptors = [sendIdempotencyKey(), ...(token ? [bearer(token)] : [])];
  switch (protocol) {
    case "grpc":
      return createGrpcTransport({ baseUrl, interceptors });
    case "grpcweb":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors });
    case "connect":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors });
  }
}

export function client<S extends DescService>(service: S, baseUrl: string, protocol: ProtocolName = "grpc", token?: string): Client<S> {
  return createClient(service, transport(baseUrl, protocol, token));
}

/** Polls `check` until it returns true (bounded); for conditions that settle asynchronously. */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The error a call fails with; throws when the call succeeds. */
export async function rpcError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}
