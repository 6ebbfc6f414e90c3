/**
 * Agora under test: one instance of the compiled build (`node dist/src/main.js`,
 * as the container image runs it; the bench builds it first) on a fresh database of the bench's PostgreSQL, optionally behind a
 * real Envoy configured by scripts/envoy-config.ts (scripts/cluster.ts), all
 * pinned to the server CPUs. Default settings, except where a scenario says
 * otherwise and the gateway's whole-gateway rate limit, raised so that it is not
 * what gets measured.
 */
import fs from "node:fs";
import path from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import pg from "pg";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { DIST_ENTRY, Instance, REPO_ROOT, startCluster, type Cluster } from "../../scripts/cluster.js";
import { sendIdempotencyKey } from "../../src/platform/idempotency.js";
import { freePort } from "../../src/platform/ports.js";
import { bearerInterceptor } from "./clients.js";
import type { BenchContext } from "./context.js";
import { trackPid } from "./children.js";
import { childrenNamed, pin, pinTree } from "./proc.js";
import type { Watched } from "./measure.js";

export const ADMIN = { username: "bench-admin", password: "bench-admin-password" };

/** Every bench client comes from one address at full speed: no write rate limits on any instance. */
export const NO_RATE_LIMITS = {
  RATE_LIMIT_USER_WRITES_PER_SECOND: "0",
  RATE_LIMIT_ADDRESS_WRITES_PER_SECOND: "0",
  RATE_LIMIT_REGISTRATIONS_PER_HOUR: "0",
};

export interface AgoraOptions {
  /** Put Envoy in front (scripts/cluster.ts). */
  envoy?: boolean;
  /** Extra settings for the instance. */
  env?: Record<string, string>;
}

export class Agora {
  constructor(
    /** http://127.0.0.1:port of the instance. */
    readonly url: string,
    readonly pid: number,
    private readonly ctx: BenchContext,
    private readonly stopAll: () => Promise<void>,
    readonly adminToken: string,
    /** http://127.0.0.1:port of Envoy, when there is one. */
    readonly gatewayUrl?: string,
    readonly envoyPid?: number,
  ) {}

  get target(): string {
    return this.url.replace("http://", "");
  }

  get gatewayTarget(): string {
    if (!this.gatewayUrl) throw new Error("no gateway");
    return this.gatewayUrl.replace("http://", "");
  }

  /**
   * Processes to account for: the instance, PostgreSQL (all backends), and Envoy when it is in front.
   * Scenarios ask just before they load the server, so with --profile this is when the profiler starts.
   */
  watched(withEnvoy = this.envoyPid !== undefined): Watched[] {
    if (this.ctx.profileDir && !this.profiling) {
      this.profiling = true;
      process.kill(this.pid, "SIGUSR2");
    }
    const w: Watched[] = [
      { name: "agora", pid: this.pid, rss: true },
      { name: "postgres", pid: this.ctx.postgresPid, tree: true },
    ];
    if (withEnvoy && this.envoyPid) w.push({ name: "envoy", pid: this.envoyPid, rss: true });
    return w;
  }

  client<S extends DescService>(service: S, token: string | undefined, via: "direct" | "envoy" = "direct"): Client<S> {
    const baseUrl = via === "envoy" ? this.gatewayUrl! : this.url;
    const interceptors = [sendIdempotencyKey(), ...(token ? [bearerInterceptor(token)] : [])];
    return createClient(service, createGrpcTransport({ baseUrl, interceptors }));
  }

  /**
   * Registers `count` users named `<prefix>-<i>` (through the instance, a few
   * at a time: each costs two argon2 hashes) and returns their ids and tokens.
   */
  async users(prefix: string, count: number): Promise<{ id: string; username: string; token: string }[]> {
    const identity = this.client(IdentityService, undefined);
    const out: { id: string; username: string; token: string }[] = new Array(count);
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(4, count) }, async () => {
        while (next < count) {
          const i = next++;
          const username = `${prefix}-${i}`;
          const password = `password-of-${username}`;
          const { user } = await identity.register({ username, password, displayName: username, email: `${username}@bench.invalid` });
          const { tokens } = await identity.login({ username, password });
          out[i] = { id: user!.id, username, token: tokens!.accessToken };
        }
      }),
    );
    return out;
  }

  /** A SQL query on this instance's database (for checks such as double bookings). */
  query<R extends pg.QueryResultRow>(sql: string): Promise<R[]> {
    return withClient(this.databaseUrl, async (c) => (await c.query<R>(sql)).rows);
  }

  databaseUrl = "";
  private profiling = false;

  async stop(): Promise<void> {
    await this.stopAll();
  }
}

/** Makes a Node process write a CPU profile when it exits (bench/lib/cpu-prof-preload.mjs). */
export function profileEnv(dir: string): Record<string, string> {
  const preload = path.join(REPO_ROOT, "bench", "lib", "cpu-prof-preload.mjs");
  return { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import ${preload}`.trim(), BENCH_CPU_PROF_DIR: dir };
}

/** Runs `work` on a connection of its own to `url`, closed afterwards. */
export async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** A database of its own on the bench's PostgreSQL (named bench_*: bench/run.ts drops them between scenarios). */
async function freshDatabase(ctx: BenchContext, name: string): Promise<string> {
  const db = `bench_${name.replace(/\W/g, "_")}_${Date.now().toString(36)}`;
  await withClient(ctx.databaseAdminUrl, (admin) => admin.query(`CREATE DATABASE ${db}`));
  const url = new URL(ctx.databaseAdminUrl);
  url.pathname = `/${db}`;
  return url.toString();
}

export async function startAgora(ctx: BenchContext, scenario: string, o: AgoraOptions = {}): Promise<Agora> {
  const dataDir = path.join(ctx.runDir, scenario);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o755 });
  const databaseUrl = await freshDatabase(ctx, scenario);
  const env: Record<string, string> = {
    HOST: "127.0.0.1",
    DATABASE_URL: databaseUrl,
    DATA_DIR: dataDir,
    ADMIN_USERNAME: ADMIN.username,
    ADMIN_PASSWORD: ADMIN.password,
    // Tokens outlive the longest scenario; stopping does not wait for a load balancer.
    ACCESS_TOKEN_TTL_SECONDS: "7200",
    SHUTDOWN_DELAY_MS: "0",
    SHUTDOWN_GRACE_MS: "3000",
    ...NO_RATE_LIMITS,
    ...(ctx.profileDir ? profileEnv(path.join(ctx.profileDir, scenario)) : {}),
    ...o.env,
  };
  let url: string;
  let pid: number;
  let stopAll: () => Promise<void>;
  let gatewayUrl: string | undefined;
  let envoyPid: number | undefined;
  if (o.envoy) {
    const cluster: Cluster = await startCluster({
      dataDir,
      databaseUrl,
      gatewayPort: 0,
      adminPort: 0,
      instances: 1,
      env,
      entry: DIST_ENTRY,
      gateway: { rateLimitRps: 1_000_000, loginRateLimitRps: 1_000_000 },
    });
    const instance = cluster.instances[0]!;
    url = `http://127.0.0.1:${instance.port}`;
    pid = instance.child!.pid!;
    gatewayUrl = cluster.gatewayUrl;
    envoyPid = childrenNamed(process.pid, "envoy").at(-1);
    if (envoyPid) trackPid(envoyPid);
    stopAll = () => cluster.stop();
  } else {
    const port = await freePort();
    const base = { ...process.env, ...env };
    const instance = new Instance(1, port, base, path.join(dataDir, "agora.log"), DIST_ENTRY);
    await instance.up();
    url = `http://127.0.0.1:${port}`;
    pid = instance.child!.pid!;
    stopAll = () => instance.stop();
  }
  trackPid(pid);
  // Started from the bench (on the load generator CPUs): move every thread to the server CPUs.
  pin(pid, ctx.pinning.server);
  if (envoyPid) pin(envoyPid, ctx.pinning.server);
  pinTree(ctx.postgresPid, ctx.pinning.server);
  const identity = createClient(IdentityService, createGrpcTransport({ baseUrl: url }));
  const { tokens } = await identity.login(ADMIN);
  const agora = new Agora(url, pid, ctx, stopAll, tokens!.accessToken, gatewayUrl, envoyPid);
  agora.databaseUrl = databaseUrl;
  return agora;
}

