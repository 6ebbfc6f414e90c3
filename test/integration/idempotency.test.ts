// What makes a gateway retry safe, checked on a real server: the idempotency-key header must match the
// request_id the service deduplicates, a request_id names one request (another body is refused), and a
// writer stuck behind a lock gives up cleanly (ABORTED, RetryInfo).
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Code } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import { Category, InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { gatewayConfig, COMPOSE_OPTIONS } from "../../scripts/envoy-config.js";
import { IDEMPOTENCY_KEY_HEADER, REQUEST_ID_REUSED } from "../../src/platform/idempotency.js";
import { bearer, client, PROTOCOLS, rpcError, signUp, startTestServer, type ProtocolName, type TestServer } from "../support/harness.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { GameService, Mark } from "../../gen/agora/game/v1/game_pb.js";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { Comparison, MonitoringService, Severity } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { ReservationService } from "../../gen/agora/reservation/v1/reservation_pb.js";

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

describe("a request_id reused with another request (issue 18)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ SERVICES: "identity,inventory,reservation,monitoring,game" });
  });
  after(async () => {
    await server?.shutdown();
  });

  /** Every row of the tables, hashed: equal before and after means the refused call changed nothing. */
  async function snapshot(tables: string[]): Promise<string> {
    const db = new pg.Client({ connectionString: server.databaseUrl });
    await db.connect();
    try {
      const hashes = [];
      for (const t of tables) hashes.push((await db.query(`SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') AS h FROM ${t} t`)).rows[0].h);
      return hashes.join(" ");
    } finally {
      await db.end();
    }
  }

  it("answers the same request with its first result and another request INVALID_ARGUMENT, on every method that takes one", async () => {
    const admin = server.adminToken;
    const user = await signUp(server.url, "reuser");
    const opponent = await signUp(server.url, "reuser-opponent");
    const opponentId = (await client(IdentityService, server.url, "grpc", opponent).getMe({})).user!.id;
    const stocked = (await client(InventoryService, server.url, "grpc", admin).createProduct({ product: product("reuse stock") })).product!;
    const room = (
      await client(ReservationService, server.url, "grpc", admin).createResource({
        resource: { name: "reuse room", type: "room", capacity: 4, location: "1", active: true, slotMinutes: 60 },
      })
    ).resource!;
    const start = Math.ceil(Date.now() / 3_600_000 + 24) * 3_600_000;
    const slot = { startTime: timestampFromMs(start), endTime: timestampFromMs(start + 3_600_000) };
    const rule = (threshold: number) => ({ name: "reuse rule", metric: "m", comparison: Comparison.GREATER_THAN, severity: Severity.WARNING, threshold });

    const cases: { method: string; tables: string[]; call: (protocol: ProtocolName, variant: number) => Promise<string> }[] = [
      {
        method: "CreateProduct",
        tables: [`"inventory".products`, `"inventory".events`],
        call: async (p, v) => (await client(InventoryService, server.url, p, admin).createProduct({ product: product(`reuse ${v}`), requestId: "reuse-1" })).product!.id,
      },
      {
        method: "AdjustStock",
        tables: [`"inventory".products`, `"inventory".stock_movements`],
        call: async (p, v) =>
          (await client(InventoryService, server.url, p, admin).adjustStock({ productId: stocked.id, delta: v + 1, reason: "restock", requestId: "reuse-2" })).movement!.id,
      },
      {
        method: "CreateResource",
        tables: [`"reservation".resources`],
        call: async (p, v) =>
          (await client(ReservationService, server.url, p, admin).createResource({ resource: { name: "reuse res", type: "room", capacity: 2 + v, active: true }, requestId: "reuse-3" }))
            .resource!.id,
      },
      {
        method: "CreateReservation",
        tables: [`"reservation".reservations`, `"reservation".notifications`],
        call: async (p, v) =>
          (await client(ReservationService, server.url, p, user).createReservation({ resourceId: room.id, ...slot, partySize: 1 + v, requestId: "reuse-4" })).reservation!.id,
      },
      {
        method: "CreateAlertRule",
        tables: [`"monitoring".alert_rules`],
        call: async (p, v) => (await client(MonitoringService, server.url, p, admin).createAlertRule({ rule: rule(90 + v), requestId: "reuse-5" })).rule!.id,
      },
      {
        method: "CreateGame",
        tables: [`"game".games`],
        call: async (p, v) => (await client(GameService, server.url, p, user).createGame({ opponentUserId: opponentId, mark: Mark.X, casual: v === 1, requestId: "reuse-6" })).game!.id,
      },
    ];
    for (const [i, c] of cases.entries()) {
      const protocol = PROTOCOLS[i % PROTOCOLS.length]!;
      const first = await c.call(protocol, 0);
      expect(await c.call(protocol, 0), `${c.method}: a repeat of the same request`).to.equal(first);
      const before = await snapshot(c.tables);
      const err = await rpcError(c.call(protocol, 1));
      expect(err.code, `${c.method} (${protocol}): ${err.message}`).to.equal(Code.InvalidArgument);
      const [violation] = err.findDetails(BadRequestSchema)[0]!.fieldViolations;
      expect([violation!.field, violation!.reason], c.method).to.deep.equal(["request_id", REQUEST_ID_REUSED]);
      expect(err.findDetails(ErrorInfoSchema)[0], c.method).to.include({ reason: REQUEST_ID_REUSED, domain: "agora.dev" });
      expect(await snapshot(c.tables), `${c.method}: nothing changed`).to.equal(before);
      console.log(`      ${c.method} over ${protocol}: same body -> first result, other body -> ${Code[err.code]} ${REQUEST_ID_REUSED}`);
    }
  });
});
