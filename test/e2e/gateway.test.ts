// The gateway for real: Envoy in front of two Agora instances, under faults.
import { execFile } from "node:child_process";
import http2 from "node:http2";
import { promisify } from "node:util";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "chai";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { Category, InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { ReservationService } from "../../gen/agora/reservation/v1/reservation_pb.js";
import { FileService } from "../../gen/agora/files/v1/files_pb.js";
import { AlertState, Comparison, MonitoringService, ReportMetricsRequestSchema, Severity } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { createHash, randomBytes } from "node:crypto";
import { ChatRequestSchema, ChatService, RoomVisibility, type ChatRequest } from "../../gen/agora/chat/v1/chat_pb.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { REPO_ROOT, type Cluster } from "../../scripts/cluster.js";
import { startTestCluster, type TestCluster } from "../support/cluster.js";
import { bearer, client, PROTOCOLS, rpcError, signUp, type ProtocolName } from "../support/harness.js";

const run = promisify(execFile);
const GRPCURL = `${REPO_ROOT}/.tools/bin/grpcurl`;
const BUF = `${REPO_ROOT}/node_modules/.bin/buf`;

interface LoadResult {
  ok: number;
  failed: ConnectError[];
}

/** `clients` independent HTTP/2 connections calling `call` in a loop until `ms` pass. */
async function load(cluster: Cluster, token: string, clients: number, ms: number, call: (c: Client<typeof InventoryService>) => Promise<unknown>): Promise<LoadResult> {
  const result: LoadResult = { ok: 0, failed: [] };
  const until = Date.now() + ms;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      const c = createClient(InventoryService, createGrpcTransport({ baseUrl: cluster.gatewayUrl, interceptors: [bearer(token)] }));
      while (Date.now() < until) {
        try {
          await call(c);
          result.ok++;
        } catch (err) {
          result.failed.push(ConnectError.from(err));
        }
      }
    }),
  );
  return result;
}

describe("e2e: Envoy gateway in front of two instances", function () {
  this.timeout(180_000);
  let testCluster: TestCluster;
  let cluster: Cluster;
  let token: string;
  let inv: Client<typeof InventoryService>;
  let productId: string;

  before(async () => {
    testCluster = await startTestCluster(
      "agora-gateway-",
      {
        HEARTBEAT_INTERVAL_MS: "2000",
        MAX_MESSAGE_BYTES: "65536",
        LOG_LEVEL: "info",
        LOGIN_MAX_FAILURES_PER_ADDRESS: "100000",
        MONITORING_EVALUATE_INTERVAL_MS: "100",
      },
      { loginRateLimitRps: 20, accessLog: true },
    );
    ({ cluster, adminToken: token } = testCluster);
    inv = client(InventoryService, cluster.gatewayUrl, "grpc", token);
    productId = (
      await inv.createProduct({
        product: { name: "Gateway widget", category: Category.OTHER, quantity: 5, unitPrice: { currencyCode: "EUR", units: 1n } },
        requestId: "gw-create-1",
      })
    ).product!.id;
  });
  after(async () => {
    await testCluster?.stop();
  });

  describe("protocols", () => {
    it("serves gRPC, gRPC-Web and Connect through the gateway", async () => {
      for (const protocol of PROTOCOLS) {
        const { product } = await client(InventoryService, cluster.gatewayUrl, protocol, token).getProduct({ id: productId });
        expect(product!.name, protocol).to.equal("Gateway widget");
      }
    });

    it("lets grpcurl list and call through reflection, and buf curl speak gRPC-Web", async () => {
      const target = cluster.gatewayUrl.replace("http://", "");
      const list = await run(GRPCURL, ["-plaintext", target, "list"]);
      expect(list.stdout).to.contain("agora.inventory.v1.InventoryService").and.contain("agora.identity.v1.IdentityService");
      const get = await run(GRPCURL, ["-plaintext", "-H", `authorization: Bearer ${token}`, "-d", JSON.stringify({ id: productId }), target, "agora.inventory.v1.InventoryService/GetProduct"]);
      expect(JSON.parse(get.stdout).product.name).to.equal("Gateway widget");
      const web = await run(BUF, ["curl", "--protocol", "grpcweb", "-H", `authorization: Bearer ${token}`, "-d", JSON.stringify({ id: productId }), `${cluster.gatewayUrl}/agora.inventory.v1.InventoryService/GetProduct`]);
      expect(JSON.parse(web.stdout).product.id).to.equal(productId);
    });
  });

  describe("edge policies", () => {
    it("rejects a missing or bad token at the gateway, before any instance sees it", async () => {
      const before = (await cluster.stats("cluster.inventory.upstream_rq_total")).get("cluster.inventory.upstream_rq_total")!;
      const missing = await rpcError(client(InventoryService, cluster.gatewayUrl).getProduct({ id: productId }));
      expect(missing.code).to.equal(Code.Unauthenticated);
      expect(missing.rawMessage).to.match(/Jwt is missing/);
      const forged = await rpcError(client(InventoryService, cluster.gatewayUrl, "connect", `${token.slice(0, -4)}AAAA`).getProduct({ id: productId }));
      expect(forged.code).to.equal(Code.Unauthenticated);
      const after = (await cluster.stats("cluster.inventory.upstream_rq_total")).get("cluster.inventory.upstream_rq_total")!;
      expect(after).to.equal(before);
    });

    it("answers CORS preflights for configured browser origins only", async () => {
      const preflight = (origin: string) =>
        fetch(`${cluster.gatewayUrl}/agora.inventory.v1.InventoryService/GetProduct`, {
          method: "OPTIONS",
          headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type,x-grpc-web" },
        });
      const allowed = await preflight("http://localhost:5173");
      expect(allowed.headers.get("access-control-allow-origin")).to.equal("http://localhost:5173");
      expect(allowed.headers.get("access-control-allow-headers")).to.contain("authorization");
      const other = await preflight("https://evil.example");
      expect(other.headers.get("access-control-allow-origin")).to.equal(null);
    });

    it("answers the rate limit with RESOURCE_EXHAUSTED, never UNAVAILABLE", async () => {
      const identity = client(IdentityService, cluster.gatewayUrl);
      const results = await Promise.allSettled(
        Array.from({ length: 80 }, () => identity.login({ username: "nobody-at-all", password: "wrong password" })),
      );
      const codes = results.map((r) => (r.status === "rejected" ? ConnectError.from(r.reason).code : Code.Unknown));
      expect(codes.filter((c) => c === Code.ResourceExhausted).length).to.be.greaterThan(0);
      expect(codes).to.not.include(Code.Unavailable);
    });

    it("answers malformed and oversized requests once, without retrying them", async () => {
      const retries = async () => (await cluster.stats("upstream_rq_retry")).get("cluster.inventory.upstream_rq_retry") ?? 0;
      const before = await retries();
      const big = await rpcError(inv.getProduct({ id: "x".repeat(100_000) }));
      expect([Code.ResourceExhausted, Code.InvalidArgument]).to.include(big.code);
      const garbage = await new Promise<string | undefined>((resolve, reject) => {
        const session = http2.connect(cluster.gatewayUrl);
        const req = session.request({
          ":method": "POST",
          ":path": "/agora.inventory.v1.InventoryService/GetProduct",
          "content-type": "application/grpc",
          te: "trailers",
          authorization: `Bearer ${token}`,
        });
        let status: string | undefined;
        req.on("response", (h) => (status = (h["grpc-status"] as string | undefined) ?? status));
        req.on("trailers", (t) => (status = t["grpc-status"] as string));
        req.on("data", () => undefined);
        req.on("end", () => {
          session.close();
          resolve(status);
        });
        req.on("error", reject);
        req.end(Buffer.from([0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff]));
      });
      expect(garbage).to.not.equal(undefined);
      expect(garbage).to.not.equal("0");
      expect(await retries()).to.equal(before);
      // The instances are still fine.
      expect((await inv.getProduct({ id: productId })).product!.id).to.equal(productId);
    });
  });

  describe("streams", () => {
    it("keeps a server stream open past Envoy's default 15 s route timeout and keeps delivering", async () => {
      const abort = new AbortController();
      const started = Date.now();
      let heartbeats = 0;
      let event: string | undefined;
      const reading = (async () => {
        for await (const msg of inv.watchProducts({ productIds: [productId] }, { signal: abort.signal })) {
          if (msg.kind.case === "heartbeat") heartbeats++;
          if (msg.kind.case === "event") {
            event = msg.kind.value.product?.id;
            break;
          }
        }
      })();
      while (Date.now() - started < 20_000) await new Promise((r) => setTimeout(r, 500));
      await inv.adjustStock({ productId, delta: 1, reason: "late delivery", requestId: "gw-late-1" });
      await reading;
      abort.abort();
      expect(heartbeats).to.be.greaterThan(5);
      expect(event).to.equal(productId);
    });
  });

  describe("reservations through the gateway", () => {
    it("delivers a booking's notification on a WatchNotifications stream opened through Envoy", async () => {
      const admin = client(ReservationService, cluster.gatewayUrl, "grpc", token);
      const { resource } = await admin.createResource({ resource: { name: "Gateway room", type: "room", capacity: 4, active: true } });
      const user = client(ReservationService, cluster.gatewayUrl, "grpcweb", await signUp(cluster.gatewayUrl, "gateway-user"));
      const abort = new AbortController();
      // From the start of the log: the new user's own notifications only, whenever the stream gets going.
      const stream = user.watchNotifications({ afterCursor: "0" }, { signal: abort.signal });
      const first = stream[Symbol.asyncIterator]();
      const opened = first.next();
      const start = new Date(Math.ceil(Date.now() / 1_800_000) * 1_800_000 + 86_400_000);
      const { reservation } = await user.createReservation({
        resourceId: resource!.id,
        startTime: timestampFromDate(start),
        endTime: timestampFromDate(new Date(start.getTime() + 1_800_000)),
        partySize: 2,
        requestId: "gw-booking-1",
      });
      let seen: string | undefined;
      for (let next = await opened; !next.done; next = await first.next()) {
        if (next.value.kind.case === "notification") {
          seen = next.value.kind.value.reservationId;
          break;
        }
      }
      abort.abort();
      expect(seen).to.equal(reservation!.id);
    });
  });

  describe("chat through the gateway", () => {
    it("carries a bidi Chat stream and a gRPC-Web Subscribe stream through Envoy", async () => {
      const ann = client(ChatService, cluster.gatewayUrl, "grpc", await signUp(cluster.gatewayUrl, "gateway-ann"));
      const ben = client(ChatService, cluster.gatewayUrl, "grpcweb", await signUp(cluster.gatewayUrl, "gateway-ben"));
      const { room } = await ann.createRoom({ name: "gateway-lobby", visibility: RoomVisibility.PUBLIC });
      await ben.joinRoom({ roomId: room!.id });
      const abort = new AbortController();
      // Ben (a browser, say) follows the room from its first message.
      const subscription = ben.subscribe({ cursors: [{ conversationId: room!.id, afterSequence: 0n }] }, { signal: abort.signal });
      const commands: ChatRequest[] = [
        create(ChatRequestSchema, { ref: "join", command: { case: "join", value: { conversationId: room!.id } } }),
        create(ChatRequestSchema, {
          ref: "send",
          command: { case: "send", value: { to: { target: { case: "roomId", value: room!.id } }, clientId: "gw-1", text: "hello through Envoy" } },
        }),
      ];
      const sent: string[] = [];
      async function* keepOpen() {
        yield* commands;
        await new Promise((resolve) => abort.signal.addEventListener("abort", resolve));
      }
      for await (const ev of ann.chat(keepOpen(), { signal: abort.signal })) {
        if (ev.event.case === "sent") {
          sent.push(ev.event.value.text);
          break;
        }
        if (ev.event.case === "error") throw new Error(ev.event.value.message);
      }
      let received: string | undefined;
      for await (const res of subscription) {
        if (res.event?.event.case === "message" && res.event.event.value.text) {
          received = res.event.event.value.text;
          break;
        }
      }
      abort.abort();
      expect(sent).to.deep.equal(["hello through Envoy"]);
      expect(received).to.equal("hello through Envoy");
    });
  });

  describe("files through the gateway", () => {
    it("streams an upload and a resumed download through Envoy, byte for byte", async () => {
      const files = client(FileService, cluster.gatewayUrl, "grpc", await signUp(cluster.gatewayUrl, "gateway-fran"));
      const data = randomBytes(5 * 1024 * 1024 + 123);
      async function* parts() {
        yield { part: { case: "metadata" as const, value: { target: { case: "path" as const, value: "gateway/blob.bin" } } } };
        // Chunks under the cluster's small MAX_MESSAGE_BYTES (set for the oversized-request test).
        for (let i = 0; i < data.length; i += 60_000) yield { part: { case: "chunk" as const, value: data.subarray(i, i + 60_000) } };
      }
      const { file, version } = await files.upload(parts());
      expect(version!.sha256).to.equal(createHash("sha256").update(data).digest("hex"));
      const offset = 1_000_003;
      const hash = createHash("sha256");
      for await (const m of files.download({ fileId: file!.id, offset: BigInt(offset) })) if (m.part.case === "chunk") hash.update(m.part.value);
      expect(hash.digest("hex")).to.equal(createHash("sha256").update(data.subarray(offset)).digest("hex"));
    });
  });

  describe("monitoring through the gateway", () => {
    it("carries a ReportMetrics client stream and WatchAlerts streams (gRPC and gRPC-Web) through Envoy", async () => {
      const admin = client(MonitoringService, cluster.gatewayUrl, "grpc", token);
      const rule = (
        await admin.createAlertRule({ rule: { name: "gateway load", metric: "gw.load", labelSelector: { host: "gw-1" }, comparison: Comparison.GREATER_THAN, threshold: 5, severity: Severity.WARNING } })
      ).rule!;
      const firing = (protocol: ProtocolName) =>
        (async () => {
          const abort = new AbortController();
          const watch = client(MonitoringService, cluster.gatewayUrl, protocol, token).watchAlerts({}, { signal: abort.signal, timeoutMs: 60_000 });
          for await (const m of watch) {
            if (m.kind.case === "event" && m.kind.value.alert!.ruleId === rule.id && m.kind.value.alert!.state === AlertState.FIRING) {
              abort.abort();
              return m.kind.value.cursor;
            }
          }
          return "";
        })().catch((err) => (err instanceof ConnectError && err.code === Code.Canceled ? "" : Promise.reject(err)));
      const watchers = [firing("grpc"), firing("grpcweb")];
      await new Promise((r) => setTimeout(r, 500)); // both streams open before the alert can fire

      const reporter = client(MonitoringService, cluster.gatewayUrl, "grpc", await signUp(cluster.gatewayUrl, "gateway-agent"));
      async function* reports() {
        for (const [i, value] of [1, 2, 9].entries()) {
          yield create(ReportMetricsRequestSchema, { host: "gw-1", samples: [{ metric: "gw.load", value, time: timestampFromDate(new Date(Date.now() - 3000 + i * 1000)) }] });
        }
      }
      const res = await reporter.reportMetrics(reports());
      expect([res.messages, res.acceptedSamples]).to.deep.equal([3n, 3n]);
      const [viaGrpc, viaWeb] = await Promise.all(watchers);
      expect(viaGrpc, "a cursor from the gRPC stream").to.match(/^\d+$/);
      expect(viaWeb, "the same event on the gRPC-Web stream").to.equal(viaGrpc);
    });
  });

  // Kill -9, drain and freezes under writes: test/e2e/gateway-faults.test.ts.
  describe("faults", () => {
    afterEach(async function () {
      if (this.currentTest?.state === "failed") {
        const stats = await cluster.stats("cluster.inventory.");
        console.log([...stats].filter(([k, v]) => v > 0 && /retry|timeout|eject|health_check|cx_connect_fail|overflow/.test(k)));
      }
    });

    const getProduct = (c: Client<typeof InventoryService>) => c.getProduct({ id: productId }, { timeoutMs: 5000 });

    it("routes around a hung (SIGSTOP) instance within the callers' deadline", async () => {
      const hung = cluster.instances[1]!;
      hung.pause();
      try {
        const result = await load(cluster, token, 10, 5000, getProduct);
        expect(result.failed.map((e) => e.message)).to.deep.equal([]);
        expect(result.ok).to.be.greaterThan(0);
      } finally {
        hung.resume();
      }
      await cluster.allHealthy();
    });
  });
});
