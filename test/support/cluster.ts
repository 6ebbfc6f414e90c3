// A gateway cluster for suites that call through Envoy: two instances of every
// service on a fresh database of the test PostgreSQL, Envoy in front.
import fs from "node:fs";
import { startCluster, type Cluster } from "../../scripts/cluster.js";
import type { GatewayOptions } from "../../scripts/envoy-config.js";
import { ADMIN, freshDatabase, login, NO_RATE_LIMITS } from "./harness.js";
import { tempDataDir } from "./processes.js";

export interface TestCluster {
  cluster: Cluster;
  /** The gateway as host:port (grpcurl's target). */
  target: string;
  /** An access token of the first administrator, signed in through the gateway. */
  adminToken: string;
  /** The cluster's database (for tests that check what was stored). */
  databaseUrl: string;
  stop(): Promise<void>;
}

export async function startTestCluster(prefix: string, env: Record<string, string> = {}, gateway: Partial<GatewayOptions> = {}): Promise<TestCluster> {
  const dataDir = tempDataDir(prefix);
  const databaseUrl = await freshDatabase();
  const cluster = await startCluster({
    dataDir,
    databaseUrl,
    gatewayPort: 0,
    adminPort: 0,
    instances: 2,
    env: {
      ADMIN_USERNAME: ADMIN.username,
      ADMIN_PASSWORD: ADMIN.password,
      // Streams show they are up within a second; Envoy's idle timeout stays far above it.
      HEARTBEAT_INTERVAL_MS: "1000",
      // Alert rules judged several times a second, so an alert fires soon after its sample.
      MONITORING_EVALUATE_INTERVAL_MS: "250",
      LOG_LEVEL: "warn",
      ...NO_RATE_LIMITS,
      ...env,
    },
    gateway: { healthCheckIntervalMs: 500, ...gateway },
  });
  try {
    const adminToken = (await login(cluster.gatewayUrl, ADMIN.username, ADMIN.password)).accessToken;
    return {
      cluster,
      target: cluster.gatewayUrl.replace("http://", ""),
      adminToken,
      databaseUrl,
      async stop() {
        await cluster.stop();
        fs.rmSync(dataDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}
