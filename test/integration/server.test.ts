import http2 from "node:http2";
import { Writable } from "node:stream";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import { pino } from "pino";
import {
  Category,
  InventoryService,
  WatchProductsRequestSchema,
} from "../../gen/agora/inventory/v1/inventory_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { ChatService } from "../../gen/agora/chat/v1/chat_pb.js";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { bearer, client, eventually, freshDatabase, PROTOCOLS, signUp, startTestServer, type TestServer } from "../support/harness.js";

const newProduct = (name: string, quantity = 10) => ({
  product: { name, category: Category.FOOD, quantity, unitPrice: { currencyCode: "EUR", units: 1n }, lowStockThreshold: 1 },
});

/** A raw gRPC call over HTTP/2 with the given headers; resolves with the response trailers. */
function rawGrpc(url: string, path: string, body: Uint8Array, headers: Record<string, string>): Promise<http2.IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    Buffer.from(body).copy(frame, 5);
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    let trailers: http2.IncomingHttpHeaders = {};
    req.on("response", (h) => {
      if (h["grpc-status"] !== undefined) trailers = h; // trailers-only response
    });
    req.on("trailers", (t) => (trailers = t));
    req.on("data", () => undefined);
    req.on("end", () => {
      session.close();
      resolve(trailers);
    });
    req.on("error", reject);
    req.end(frame);
  });
}

describe("server platform", () => {
  describe("limits and deadlines", () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ MAX_CONCURRENT_STREAMS: "37", HEARTBEAT_INTERVAL_MS: "100" });
    });
    after(() => server?.shutdown());

    it("advertises the maximum number of concurrent streams per connection", async () => {
      const session = http2.connect(server.url);
      try {
        const settings = await new Promise<http2.Settings>((resolve) => session.once("remoteSettings", resolve));
        expect(settings.maxConcurrentStreams).to.equal(37);
      } finally {
        session.close();
      }
    });

    it("ends a call when the deadline the client sent passes, on the server's own clock", async () => {
      // No client-side timer here: only the grpc-timeout header can end this stream.
      const body = toBinary(WatchProductsRequestSchema, create(WatchProductsRequestSchema, {}));
      const trailers = await rawGrpc(server.url, "/agora.inventory.v1.InventoryService/WatchProducts", body, {
        "grpc-timeout": "300m",
        authorization: `Bearer ${server.adminToken}`,
      });
      expect(trailers["grpc-status"]).to.equal(String(Code.DeadlineExceeded));
    });

    it("gives a unary call over its deadline DEADLINE_EXCEEDED while the database still holds it", async () => {
      const inv = client(InventoryService, server.url, "grpc", server.adminToken);
      const { product } = await inv.createProduct(newProduct("Locked row"));
      const blocker = new pg.Client({ connectionString: server.databaseUrl });
      await blocker.connect();
      try {
        await blocker.query("BEGIN");
        await blocker.query('SELECT 1 FROM "inventory".products WHERE id = $1 FOR UPDATE', [product!.id]);
        const body = Buffer.from(
          JSON.stringify({ productId: product!.id, delta: 1, reason: "test", requestId: "deadline-1" }),
        );
        // Connect protocol over HTTP/1.1 with a 200 ms deadline header and no client timer.
        const res = await fetch(`${server.url}/agora.inventory.v1.InventoryService/AdjustStock`, {
          method: "POST",
          headers: { "content-type": "application/json", "connect-timeout-ms": "200", authorization: `Bearer ${server.adminToken}` },
          body,
        });
        const json = (await res.json()) as { code?: string };
        expect(json.code).to.equal("deadline_exceeded");
      } finally {
        await blocker.query("ROLLBACK");
        await blocker.end();
      }
    });
  });

  describe("health", () => {
    it("reports NOT_SERVING while the database is unreachable and SERVING again once it is back", async function () {
      const databaseUrl = await freshDatabase();
      const server = await startTestServer({}, databaseUrl);
      const name = new URL(databaseUrl).pathname.slice(1);
      const admin = new pg.Client({ connectionString: process.env.AGORA_TEST_DATABASE_URL });
      await admin.connect();
      const health = client(Health, server.url);
      const status = async (service: string) => (await health.check({ service })).status;
      try {
        expect(await status("agora.inventory.v1.InventoryService")).to.equal(Status.SERVING);
        await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
        await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
        await eventually(async () => (await status("agora.inventory.v1.InventoryService")) === Status.NOT_SERVING, "NOT_SERVING");
        expect(await status("")).to.equal(Status.NOT_SERVING);
        const inv = client(InventoryService, server.url, "grpc", server.adminToken);
        const err = await inv.getProduct({ id: "00000000-0000-4000-8000-000000000000" }).catch((e) => ConnectError.from(e));
        expect((err as ConnectError).code).to.equal(Code.Unavailable);
        await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
        await eventually(async () => (await status("agora.inventory.v1.InventoryService")) === Status.SERVING, "SERVING", 15_000);
      } finally {
        await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
        await admin.end();
        await server.shutdown();
      }
    });
  });

  describe("observability", () => {
    it("writes one JSON access-log line per call with method, code, duration and request id", async () => {
      const lines: Record<string, unknown>[] = [];
      const sink = new Writable({
        write(chunk, _enc, done) {
          lines.push(JSON.parse(chunk.toString()));
          done();
        },
      });
      const server = await startTestServer({}, undefined, pino({ level: "info" }, sink));
      try {
        const inv = client(InventoryService, server.url, "grpc", server.adminToken);
        await inv.getProduct({ id: "00000000-0000-4000-8000-00000000000a" }, { headers: { "x-request-id": "req-123" } }).catch(() => undefined);
        const isGet = (l: Record<string, unknown>) => l.msg === "rpc" && l.requestId === "req-123";
        await eventually(() => lines.some(isGet), "an access log line");
        const entry = lines.find(isGet)!;
        expect(entry).to.include({ method: "agora.inventory.v1.InventoryService/GetProduct", code: "NotFound", requestId: "req-123" });
        expect(entry.durationMs).to.be.a("number");
        const metrics = await (await fetch(`${server.url}/metrics`)).text();
        expect(metrics).to.match(
          /grpc_server_handled_total\{grpc_type="unary",grpc_service="agora.inventory.v1.InventoryService",grpc_method="GetProduct",grpc_code="NotFound"\} 1/,
        );
      } finally {
        await server.shutdown();
      }
    });

    it("never leaks SQL or stack traces: unexpected failures are INTERNAL with only a request id", async () => {
      const server = await startTestServer();
      try {
        // Break the table under the running service: every query on it now fails in SQL.
        const db = new pg.Client({ connectionString: server.databaseUrl });
        await db.connect();
        await db.query('ALTER TABLE "inventory".products RENAME TO products_gone');
        await db.end();
        const inv = client(InventoryService, server.url, "grpc", server.adminToken);
        const err = ConnectError.from(await inv.getProduct({ id: "00000000-0000-4000-8000-00000000000b" }).catch((e) => e));
        expect(err.code).to.equal(Code.Internal);
        expect(err.rawMessage).to.match(/^internal error \(request id [\w-]+\)$/);
        expect(err.rawMessage).to.not.match(/select|relation|products/i);
      } finally {
        await server.shutdown();
      }
    });
  });

  describe("graceful shutdown", () => {
    it("reports NOT_SERVING, ends streams with UNAVAILABLE and lets in-flight unary calls finish", async () => {
      const server = await startTestServer({ SHUTDOWN_GRACE_MS: "10000" });
      const inv = client(InventoryService, server.url, "grpc", server.adminToken);
      const { product } = await inv.createProduct(newProduct("Drain", 5));
      const blocker = new pg.Client({ connectionString: server.databaseUrl });
      await blocker.connect();
      await blocker.query("BEGIN");
      await blocker.query('SELECT 1 FROM "inventory".products WHERE id = $1 FOR UPDATE', [product!.id]);
      const inFlight = inv.adjustStock({ productId: product!.id, delta: 2, reason: "late", requestId: "drain-1" });
      const stream = inv.watchProducts({});
      const streamEnd = (async () => {
        try {
          for await (const _ of stream) {
            /* heartbeats until the server ends the stream */
          }
          return undefined;
        } catch (err) {
          return ConnectError.from(err);
        }
      })();
      // Wait until the unary call is really waiting on the row lock.
      await eventually(async () => {
        const r = await blocker.query("SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted");
        return r.rows[0].n > 0;
      }, "the call to wait on the lock");
      const stopped = server.shutdown();
      const streamErr = await streamEnd;
      expect(streamErr?.code).to.equal(Code.Unavailable);
      expect(server.health.get("")).to.equal(Status.NOT_SERVING);
      await blocker.query("COMMIT");
      await blocker.end();
      const result = await inFlight;
      expect(result.product!.quantity).to.equal(7);
      await stopped;
    });

    it("lets streams whose clients left finish their cleanup before it closes the database", async () => {
      // More streams than the chat pool has connections: their cleanups queue for one while the first wait on a lock.
      const server = await startTestServer({ SHUTDOWN_GRACE_MS: "10000", DB_POOL_SIZE: "2" });
      const token = await signUp(server.url, "drain-chat");
      const leave = new AbortController();
      const streams = PROTOCOLS.flatMap((protocol) =>
        Array.from({ length: 2 }, async () => {
          try {
            for await (const _ of client(ChatService, server.url, protocol, token).subscribe({}, { signal: leave.signal })) {
              /* until the client leaves */
            }
          } catch {
            /* CANCELED: the client left */
          }
        }),
      );
      const db = new pg.Client({ connectionString: server.databaseUrl });
      await db.connect();
      try {
        const open = async () => (await db.query('SELECT count(*)::int AS n FROM "chat".sessions')).rows[0].n as number;
        await eventually(async () => (await open()) === streams.length, "every stream's presence session");
        // Closing a session deletes its row: the deletes wait on this lock while the server stops.
        const blocker = new pg.Client({ connectionString: server.databaseUrl });
        await blocker.connect();
        await blocker.query("BEGIN");
        await blocker.query('LOCK TABLE "chat".sessions IN SHARE MODE');
        leave.abort();
        await Promise.all(streams);
        await eventually(async () => (await db.query("SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted")).rows[0].n > 0, "a cleanup to wait on the lock");
        // The clients are gone, so the connections drain at once: the shutdown reaches the database while the cleanups wait.
        const stopped = server.shutdown();
        await new Promise((r) => setTimeout(r, 500));
        await blocker.query("COMMIT");
        await blocker.end();
        await stopped;
        expect(await open(), "presence sessions left open by the shutdown").to.equal(0);
      } finally {
        await db.end();
      }
    });
  });
});

describe("native gRPC through grpc-js beside Connect-node (issue 16)", () => {
  for (const engine of ["grpc-js", "connect"] as const) {
    describe(`GRPC_SERVER=${engine}`, () => {
      let server: TestServer;
      before(async () => {
        server = await startTestServer({ GRPC_SERVER: engine, SERVICES: "identity,inventory" });
      });
      after(() => server?.shutdown());

      it("answers gRPC, gRPC-Web and Connect over ONE HTTP/2 connection alike: same result, same error with the same details, request id echoed", async () => {
        const sessionManager = new Http2SessionManager(server.url);
        const opts = { baseUrl: server.url, httpVersion: "2" as const, sessionManager, interceptors: [bearer(server.adminToken)] };
        const transports = { grpc: createGrpcTransport(opts), grpcweb: createGrpcWebTransport(opts), connect: createConnectTransport(opts) };
        const { product } = await createClient(InventoryService, transports.grpc).createProduct(newProduct(`one connection ${engine}`));
        for (const [protocol, t] of Object.entries(transports)) {
          const inventory = createClient(InventoryService, t);
          let requestId: string | null = null;
          const got = await inventory.getProduct(
            { id: product!.id },
            { headers: { "x-request-id": `rid-${protocol}` }, onHeader: (h) => (requestId = h.get("x-request-id")) },
          );
          expect(got.product, protocol).to.deep.equal(product);
          expect(requestId, protocol).to.equal(`rid-${protocol}`);
          const err = await inventory.getProduct({ id: "not-a-uuid" }).then(() => undefined, (e: unknown) => ConnectError.from(e));
          expect(err?.code, protocol).to.equal(Code.InvalidArgument);
          const badRequest = err!.findDetails(BadRequestSchema)[0];
          expect(badRequest?.fieldViolations.map((v) => v.field), protocol).to.deep.equal(["id"]);
        }
        // The manager holds one HTTP/2 session: every call above shared the connection.
        sessionManager.abort();
      });

      it("logs a server stream the client cancels as Canceled", async () => {
        const lines: Record<string, unknown>[] = [];
        const sink = new Writable({
          write(chunk, _enc, done) {
            lines.push(JSON.parse(chunk.toString()));
            done();
          },
        });
        const logged = await startTestServer({ GRPC_SERVER: engine, SERVICES: "identity,inventory", HEARTBEAT_INTERVAL_MS: "100" }, server.databaseUrl, pino({ level: "info" }, sink));
        try {
          const abort = new AbortController();
          const watch = client(InventoryService, logged.url, "grpc", logged.adminToken).watchProducts(create(WatchProductsRequestSchema, {}), {
            signal: abort.signal,
            headers: { "x-request-id": `watch-${engine}` },
          });
          const it = watch[Symbol.asyncIterator]();
          await it.next();
          abort.abort();
          await it.next().catch(() => undefined);
          const isWatch = (l: Record<string, unknown>) => l.msg === "rpc" && l.requestId === `watch-${engine}`;
          await eventually(() => lines.some(isWatch), "the stream's access log line");
          expect(lines.find(isWatch)).to.include({ method: "agora.inventory.v1.InventoryService/WatchProducts", code: "Canceled" });
        } finally {
          await logged.shutdown();
        }
      });
    });
  }
});
