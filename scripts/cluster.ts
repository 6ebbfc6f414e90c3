/**
 * Cluster mode: one PostgreSQL, N instances of every service (each instance
 * serves all services, each service is its own Envoy cluster), and a real Envoy
 * in front, configured by scripts/envoy-config.ts. `npm run cluster` runs it in
 * the foreground; tests import startCluster().
 *
 *   GATEWAY_PORT (8080)  ENVOY_ADMIN_PORT (9901)  CLUSTER_INSTANCES (2)  GATEWAY_CORS_ORIGINS
 *   DATA_DIR (./.data)   DATABASE_URL (unset: embedded PostgreSQL in DATA_DIR)
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "../src/platform/db.js";
import { COMPOSE_OPTIONS, drainDelayMs, GATEWAY_SERVICES, renderGatewayConfig, type GatewayOptions } from "./envoy-config.js";
import { freePort } from "../src/platform/ports.js";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const ENVOY_BIN = path.join(REPO_ROOT, ".tools", "bin", "envoy");

export interface ClusterOptions {
  dataDir: string;
  databaseUrl?: string;
  gatewayPort: number;
  adminPort: number;
  instances: number;
  /** Extra settings for every instance (ADMIN_USERNAME, HEARTBEAT_INTERVAL_MS, ...). */
  env?: Record<string, string>;
  gateway?: Partial<GatewayOptions>;
  /** Where process output goes; a file per process under dataDir/logs by default. */
  logDir?: string;
  /** Node's arguments for each instance (TSX_ENTRY by default). */
  entry?: string[];
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let done = false;
    try {
      done = await check();
    } catch (err) {
      // A dead process will not come up: say so now instead of at the deadline.
      if (err instanceof Error && / exited at start/.test(err.message)) throw err;
    }
    if (done) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`cluster: timed out waiting for ${what}`);
}

/** A child process whose output goes to a log file, stoppable by signal. */
class Managed {
  child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly name: string,
    private readonly command: string,
    private readonly args: string[],
    private readonly env: NodeJS.ProcessEnv,
    readonly logFile: string,
  ) {}

  start(): void {
    const out = fs.openSync(this.logFile, "a");
    const child = spawn(this.command, this.args, { cwd: REPO_ROOT, env: this.env, stdio: ["ignore", out, out] });
    fs.closeSync(out);
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child!.kill(sig);
  }

  async stop(sig: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.child!.kill("SIGCONT"); // a paused process cannot handle SIGTERM
    this.child!.kill(sig);
    const timer = setTimeout(() => this.signal("SIGKILL"), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  log(): string {
    return fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, "utf8") : "";
  }
}

/** How `npm start` runs Agora: the TypeScript sources through tsx. */
export const TSX_ENTRY = ["--import", "tsx", "src/main.ts"];
/** How the container image runs it: the compiled `dist/` (`npm run build`). */
export const DIST_ENTRY = ["--enable-source-maps", "dist/src/main.js"];

/** One Agora server process of the cluster, on a fixed port so it can come back. */
export class Instance extends Managed {
  constructor(
    readonly index: number,
    readonly port: number,
    env: NodeJS.ProcessEnv,
    logFile: string,
    entry: string[] = TSX_ENTRY,
  ) {
    super(`agora-${index}`, process.execPath, entry, { ...env, PORT: String(port) }, logFile);
  }

  /** Starts (or restarts) it and waits until it answers. */
  async up(timeoutMs = 60_000): Promise<void> {
    this.start();
    await until(
      async () => {
        if (!this.running) throw new Error(`${this.name} exited at start:\n${this.log().slice(-2000)}`);
        return (await fetch(`http://127.0.0.1:${this.port}/metrics`)).ok;
      },
      `${this.name} to listen`,
      timeoutMs,
    );
  }

  /** kill -9: no drain, no goodbye. */
  crash(): void {
    this.signal("SIGKILL");
  }

  /** SIGSTOP: the process hangs with its sockets open. */
  pause(): void {
    this.signal("SIGSTOP");
  }

  resume(): void {
    this.signal("SIGCONT");
  }
}

export class Cluster {
  constructor(
    readonly gatewayUrl: string,
    readonly adminUrl: string,
    readonly instances: Instance[],
    private readonly envoy: Managed,
    private readonly database: EmbeddedDatabase | undefined,
  ) {}

  /** Envoy's counters and gauges (admin /stats), by name. */
  async stats(filter = ""): Promise<Map<string, number>> {
    const text = await (await fetch(`${this.adminUrl}/stats?filter=${encodeURIComponent(filter)}`)).text();
    const stats = new Map<string, number>();
    for (const line of text.split("\n")) {
      const m = /^(\S+): (\d+)$/.exec(line);
      if (m) stats.set(m[1]!, Number(m[2]));
    }
    return stats;
  }

  /** Per-host state of a cluster from admin /clusters: health flags and request counts by "host:port". */
  async hosts(cluster: string): Promise<Map<string, { healthy: boolean; flags: string; success: number; total: number }>> {
    const text = await (await fetch(`${this.adminUrl}/clusters`)).text();
    const hosts = new Map<string, { healthy: boolean; flags: string; success: number; total: number }>();
    for (const line of text.split("\n")) {
      const m = /^([^:]+)::([\d.]+:\d+)::(\w+)::(.*)$/.exec(line);
      if (!m || m[1] !== cluster) continue;
      const host = hosts.get(m[2]!) ?? { healthy: true, flags: "", success: 0, total: 0 };
      if (m[3] === "health_flags") {
        host.flags = m[4]!;
        host.healthy = m[4] === "healthy";
      }
      if (m[3] === "rq_success") host.success = Number(m[4]);
      if (m[3] === "rq_total") host.total = Number(m[4]);
      hosts.set(m[2]!, host);
    }
    return hosts;
  }

  /** Waits until every host of every cluster passes Envoy's health check. */
  async allHealthy(timeoutMs = 30_000): Promise<void> {
    await until(
      async () => {
        for (const { name } of GATEWAY_SERVICES) {
          const hosts = await this.hosts(name);
          if (hosts.size !== this.instances.length || [...hosts.values()].some((h) => !h.healthy)) return false;
        }
        return true;
      },
      "every instance to be healthy in Envoy",
      timeoutMs,
    );
  }

  envoyLog(): string {
    return this.envoy.log();
  }

  async stop(): Promise<void> {
    await this.envoy.stop();
    await Promise.all(this.instances.map((i) => i.stop()));
    await this.database?.stop();
  }
}

export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  if (!fs.existsSync(ENVOY_BIN)) throw new Error(`${ENVOY_BIN} is missing: run 'npm run tools' first`);
  fs.mkdirSync(o.dataDir, { recursive: true });
  const logDir = o.logDir ?? path.join(o.dataDir, "logs");
  fs.mkdirSync(logDir, { recursive: true });
  const quiet = pino({ level: "warn" });
  let database: EmbeddedDatabase | undefined;
  let databaseUrl = o.databaseUrl;
  if (!databaseUrl) {
    database = await startEmbeddedPostgres(o.dataDir, 0, quiet);
    databaseUrl = database.url;
  }
  const instances: Instance[] = [];
  let envoy: Managed | undefined;
  try {
    const taken = new Set([o.gatewayPort, o.adminPort]);
    const distinctPort = async () => {
      let port = await freePort();
      while (taken.has(port)) port = await freePort();
      taken.add(port);
      return port;
    };
    const ports: number[] = [];
    for (let i = 0; i < o.instances; i++) ports.push(await distinctPort());
    const gatewayPort = o.gatewayPort || (await distinctPort());
    const adminPort = o.adminPort || (await distinctPort());
    const base: NodeJS.ProcessEnv = {
      ...process.env,
      HOST: "127.0.0.1",
      DATABASE_URL: databaseUrl,
      // Shared, so every instance signs and verifies with the same key.
      DATA_DIR: o.dataDir,
      TRUST_FORWARDED_FOR: "true",
      // Long enough for Envoy's health check to see NOT_SERVING before the listener closes.
      SHUTDOWN_DELAY_MS: String(drainDelayMs(o.gateway?.healthCheckIntervalMs ?? COMPOSE_OPTIONS.healthCheckIntervalMs)),
      ...o.env,
    };
    ports.forEach((port, i) => instances.push(new Instance(i + 1, port, base, path.join(logDir, `agora-${i + 1}.log`), o.entry)));
    // One at a time: the first applies the migrations, the others find them done.
    for (const instance of instances) await instance.up();

    const gateway: GatewayOptions = {
      ...COMPOSE_OPTIONS,
      listenAddress: "127.0.0.1",
      port: gatewayPort,
      adminPort,
      discovery: "STATIC",
      endpoints: Object.fromEntries(GATEWAY_SERVICES.map(({ name }) => [name, ports.map((port) => ({ host: "127.0.0.1", port }))])),
      ...o.gateway,
    };
    const configFile = path.join(o.dataDir, "envoy.local.yaml");
    fs.writeFileSync(configFile, renderGatewayConfig(gateway));
    envoy = new Managed(
      "envoy",
      ENVOY_BIN,
      ["-c", configFile, "--log-level", "warn", "--use-dynamic-base-id", "--concurrency", "2", "--drain-time-s", "1"],
      process.env,
      path.join(logDir, "envoy.log"),
    );
    envoy.start();
    const adminUrl = `http://127.0.0.1:${adminPort}`;
    await until(async () => (await fetch(`${adminUrl}/ready`)).ok, "Envoy to be ready", 30_000);
    const cluster = new Cluster(`http://127.0.0.1:${gatewayPort}`, adminUrl, instances, envoy, database);
    await cluster.allHealthy();
    return cluster;
  } catch (err) {
    await envoy?.stop();
    await Promise.all(instances.map((i) => i.stop()));
    await database?.stop();
    throw err;
  }
}

async function main(): Promise<void> {
  const int = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
  const dataDir = path.resolve(process.env.DATA_DIR || ".data");
  const cluster = await startCluster({
    dataDir,
    databaseUrl: process.env.DATABASE_URL || undefined,
    gatewayPort: int("GATEWAY_PORT", 8080),
    adminPort: int("ENVOY_ADMIN_PORT", 9901),
    instances: int("CLUSTER_INSTANCES", 2),
    gateway: process.env.GATEWAY_CORS_ORIGINS ? { corsOrigins: process.env.GATEWAY_CORS_ORIGINS.split(",").map((o) => o.trim()) } : {},
  });
  console.log(`gateway  ${cluster.gatewayUrl}  (gRPC, gRPC-Web, Connect; grpcurl -plaintext ${cluster.gatewayUrl.slice(7)} list)`);
  console.log(`admin    ${cluster.adminUrl}`);
  for (const i of cluster.instances) console.log(`agora-${i.index}  http://127.0.0.1:${i.port}  log ${i.logFile}`);
  console.log("Ctrl-C stops everything.");
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    cluster.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(`cluster: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
