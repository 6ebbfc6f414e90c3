// What makes a gateway retry safe, checked on a real server: the idempotency-key header must match the
// request_id the service deduplicates, and a writer stuck behind a lock gives up cleanly (ABORTED, RetryInfo).
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Code } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import { Category, InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { gatewayConfig, COMPOSE_OPTIONS } from "../../scripts/envoy-config.js";
import { IDEMPOTENCY_KEY_HEADER } from "../../src/platform/idempotency.js";
import { bearer, client, rpcError, startTestServer, type TestServer } from "../support/harness.js";

const product = (name: string) => ({ name, category: Category.OTHER, quantity: 1, unitPrice: { currencyCode: "EUR", units: 1n } });

describe("idempotency keys and bounded lock waits", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ SERVICES: "identity,inventory" });
  });
  after(async () => {
    await server?.shutdown();
  });

  /** A client that sends exactly the headers given, without the harness's own idempotency-key interceptor. */
  const withHeaders = (headers: Record<string, string>) =>
    createClient(
      InventoryService,
      createGrpcTransport({
        baseUrl: server.url,
        interceptors: [
          bearer(server.adminToken),
          (next) => (req) => {
            for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
            return next(req);
          },
        ],
      }),
    );

  it("accepts a key equal to request_id, and a repeat returns the first result", async () => {
    const inv = withHeaders({ [IDEMPOTENCY_KEY_HEADER]: "key-1" });
    const first = await inv.createProduct({ product: product("keyed one"), requestId: "key-1" });
    const again = await inv.createProduct({ product: product("keyed one"), requestId: "key-1" });
    expect(again.product!.id).to.equal(first.product!.id);
  });

  it("refuses a key that differs from request_id, or on a method that takes none, and stores nothing", async () => {
    const mismatch = await rpcError(withHeaders({ [IDEMPOTENCY_KEY_HEADER]: "key-2" }).createProduct({ product: product("keyed two"), requestId: "other" }));
    expect(mismatch.code).to.equal(Code.InvalidArgument);
    expect(mismatch.findDetails(BadRequestSchema)[0]!.fieldViolations[0]!.field).to.equal("request_id");
    const missing = await rpcError(withHeaders({ [IDEMPOTENCY_KEY_HEADER]: "key-3" }).createProduct({ product: product("keyed two") }));
    expect(missing.code).to.equal(Code.InvalidArgument);
    const { products } = await client(InventoryService, server.url, "grpc", server.adminToken).listProducts({});
    expect(products.map((p) => p.name)).to.not.include("keyed two");

    const created = (await client(InventoryService, server.url, "grpc", server.adminToken).createProduct({ product: product("keyed three") })).product!;
    const unkeyed = await rpcError(
      withHeaders({ [IDEMPOTENCY_KEY_HEADER]: "key-4" }).updateProduct({ id: created.id, product: { description: "x" }, updateMask: { paths: ["description"] } }),
    );
    expect(unkeyed.code).to.equal(Code.InvalidArgument);
    expect(unkeyed.findDetails(BadRequestSchema)[0]!.fieldViolations[0]!.field).to.equal(IDEMPOTENCY_KEY_HEADER);
  });

  it("answers a write that waited lock_timeout for a row lock ABORTED with RetryInfo, and applies nothing", async () => {
    const inv = client(InventoryService, server.url, "grpc", server.adminToken);
    const created = (await inv.createProduct({ product: product("locked one") })).product!;
    const db = new pg.Client({ connectionString: server.databaseUrl });
    await db.connect();
    try {
      await db.query("BEGIN");
      await db.query(`SELECT 1 FROM "inventory".products WHERE id = $1 FOR UPDATE`, [created.id]);
      const err = await rpcError(inv.updateProduct({ id: created.id, product: { description: "late" }, updateMask: { paths: ["description"] } }));
      expect(err.code, err.message).to.equal(Code.Aborted);
      expect(err.findDetails(RetryInfoSchema)).to.have.length(1);
      expect(err.findDetails(ErrorInfoSchema)[0]!.reason).to.equal("LOCK_TIMEOUT");
    } finally {
      await db.query("ROLLBACK");
      await db.end();
    }
    expect((await inv.getProduct({ id: created.id })).product!.description).to.equal("");
  });

  it("generates gateway routes that re-send a reached call only when it is idempotent or carries its key", () => {
    const json = JSON.stringify(gatewayConfig(COMPOSE_OPTIONS));
    const routes = JSON.parse(json).static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes as {
      name: string;
      match: { path?: string; headers?: { name: string }[] };
      route: { retry_policy?: { retry_on: string; per_try_timeout?: string } };
    }[];
    const create = routes.filter((r) => r.match.path === "/agora.inventory.v1.InventoryService/CreateProduct");
    expect(create.map((r) => r.match.headers?.[0]?.name ?? null)).to.deep.equal([IDEMPOTENCY_KEY_HEADER, null]);
    expect(create[0]!.route.retry_policy!.retry_on).to.contain("gateway-error");
    expect(create[1]!.route.retry_policy).to.deep.include({ retry_on: "connect-failure,refused-stream,reset-before-request" });
    const update = routes.find((r) => r.match.path === "/agora.inventory.v1.InventoryService/UpdateProduct")!;
    expect(update.route.retry_policy!.per_try_timeout).to.equal(undefined);
    expect(update.route.retry_policy!.retry_on).to.equal("connect-failure,refused-stream,reset-before-request");
    const get = routes.find((r) => r.match.path === "/agora.inventory.v1.InventoryService/GetProduct")!;
    expect(get.route.retry_policy!.per_try_timeout).to.equal("2s");
  });
});
