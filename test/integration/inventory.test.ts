import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Category,
  InventoryService,
  ProductEventType,
  ProductOrder,
  ProductSchema,
  type Product,
  type ProductEvent,
} from "../../gen/agora/inventory/v1/inventory_pb.js";
import { BadRequestSchema, ErrorInfoSchema, PreconditionFailureSchema } from "../../gen/google/rpc/error_details_pb.js";
import { client, eventually, PROTOCOLS, rpcError, startTestServer, tableReads, type TestServer } from "../support/harness.js";

type Inventory = Client<typeof InventoryService>;

function product(name: string, overrides: Omit<MessageInitShape<typeof ProductSchema>, "$typeName"> = {}) {
  return create(ProductSchema, {
    name,
    description: `${name} description`,
    category: Category.OFFICE,
    quantity: 10,
    unitPrice: { currencyCode: "EUR", units: 2n, nanos: 500_000_000 },
    lowStockThreshold: 3,
    ...overrides,
  });
}

function badFields(err: ConnectError): string[] {
  return err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
}

describe("inventory service", () => {
  let server: TestServer;
  let inv: Inventory;

  before(async () => {
    server = await startTestServer({ HEARTBEAT_INTERVAL_MS: "200" });
    inv = client(InventoryService, server.url, "grpc", server.adminToken);
  });
  after(() => server?.shutdown());

  describe("products", () => {
    it("creates and reads a product identically over gRPC, gRPC-Web and Connect", async () => {
      const { product: created } = await inv.createProduct({ product: product("Stapler") });
      expect(created!.id).to.match(/^[0-9a-f-]{36}$/);
      expect(created!.etag).to.not.equal("");
      expect(created!.lowStock).to.equal(false);
      for (const protocol of PROTOCOLS) {
        const { product: read } = await client(InventoryService, server.url, protocol, server.adminToken).getProduct({ id: created!.id });
        expect(read, protocol).to.deep.equal(created);
      }
    });

    it("returns the first result when a create is retried with the same request_id", async () => {
      const first = await inv.createProduct({ product: product("Retry me"), requestId: "create-1" });
      const again = await inv.createProduct({ product: product("Retry me"), requestId: "create-1" });
      expect(again.product!.id).to.equal(first.product!.id);
    });

    it("rejects a second product with the same name, case-insensitively, with ALREADY_EXISTS", async () => {
      await inv.createProduct({ product: product("Unique Name") });
      const err = await rpcError(inv.createProduct({ product: product("unique name") }));
      expect(err.code).to.equal(Code.AlreadyExists);
      expect(err.rawMessage).to.contain("already exists");
    });

    it("names every invalid field with INVALID_ARGUMENT and stores nothing", async () => {
      const bad = product("", {
        category: Category.UNSPECIFIED,
        quantity: -1,
        lowStockThreshold: -5,
        description: "x".repeat(4001),
        unitPrice: { currencyCode: "euro", units: -1n, nanos: 0 },
      });
      const err = await rpcError(inv.createProduct({ product: bad }));
      expect(err.code).to.equal(Code.InvalidArgument);
      expect(badFields(err)).to.include.members([
        "product.name",
        "product.description",
        "product.category",
        "product.quantity",
        "product.unit_price",
        "product.low_stock_threshold",
      ]);
      const { products } = await inv.listProducts({ pageSize: 1000 });
      expect(products.map((p) => p.name)).to.not.include("");
    });

    it("rejects malformed ids, page sizes and missing products", async () => {
      expect(badFields(await rpcError(inv.getProduct({ id: "not-a-uuid" })))).to.deep.equal(["id"]);
      expect(badFields(await rpcError(inv.listProducts({ pageSize: 1001 })))).to.deep.equal(["page_size"]);
      const missing = await rpcError(inv.getProduct({ id: "00000000-0000-4000-8000-000000000000" }));
      expect(missing.code).to.equal(Code.NotFound);
      const token = await rpcError(inv.listProducts({ pageToken: "garbage!" }));
      expect(token.code).to.equal(Code.InvalidArgument);
      expect(badFields(token)).to.deep.equal(["page_token"]);
    });

    it("updates the masked fields, checks the etag, and refuses stale ones with ABORTED", async () => {
      const { product: p } = await inv.createProduct({ product: product("Lamp") });
      const { product: updated } = await inv.updateProduct({
        id: p!.id,
        product: { name: "Desk lamp", description: "ignored: not in the mask" },
        updateMask: { paths: ["name"] },
        etag: p!.etag,
      });
      expect(updated!.name).to.equal("Desk lamp");
      expect(updated!.description).to.equal(p!.description);
      expect(updated!.etag).to.not.equal(p!.etag);
      const stale = await rpcError(
        inv.updateProduct({ id: p!.id, product: { name: "Old" }, updateMask: { paths: ["name"] }, etag: p!.etag }),
      );
      expect(stale.code).to.equal(Code.Aborted);
      expect(stale.findDetails(ErrorInfoSchema)[0]?.metadata.current_etag).to.equal(updated!.etag);
    });

    it("applies concurrent updates without an etag one after the other, each to the one before, none refused", async () => {
      const { product: p } = await inv.createProduct({ product: product("Shelf", { lowStockThreshold: 0 }) });
      // Half change the description, half the threshold.
      const updated = (
        await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            i % 2 === 0
              ? inv.updateProduct({ id: p!.id, product: { description: `text ${i}` }, updateMask: { paths: ["description"] } })
              : inv.updateProduct({ id: p!.id, product: { lowStockThreshold: i }, updateMask: { paths: ["low_stock_threshold"] } }),
          ),
        )
      ).map((r) => r.product!);
      const version = (q: { etag: string }) => Number(JSON.parse(q.etag));
      expect(updated.map(version).sort((a, b) => a - b)).to.deep.equal([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      // Each answer is the product as that update left it; the last one is what is stored.
      const { product: after } = await inv.getProduct({ id: p!.id });
      expect(after).to.deep.equal(updated.find((q) => version(q) === 11));
    });

    it("validates the product as updated and refuses masks naming quantity or unknown fields", async () => {
      const { product: p } = await inv.createProduct({ product: product("Chair") });
      const empty = await rpcError(inv.updateProduct({ id: p!.id, product: { name: "" }, updateMask: { paths: ["name"] } }));
      expect(badFields(empty)).to.deep.equal(["product.name"]);
      const qty = await rpcError(inv.updateProduct({ id: p!.id, product: { quantity: 99 }, updateMask: { paths: ["quantity"] } }));
      expect(badFields(qty)).to.deep.equal(["update_mask"]);
      const none = await rpcError(inv.updateProduct({ id: p!.id, product: {}, updateMask: { paths: [] } }));
      expect(badFields(none)).to.deep.equal(["update_mask"]);
      const { product: after } = await inv.getProduct({ id: p!.id });
      expect(after).to.deep.equal(p);
    });

    it("deletes with an etag check, then answers NOT_FOUND", async () => {
      const { product: p } = await inv.createProduct({ product: product("Bin") });
      expect((await rpcError(inv.deleteProduct({ id: p!.id, etag: '"999"' }))).code).to.equal(Code.Aborted);
      await inv.deleteProduct({ id: p!.id, etag: p!.etag });
      expect((await rpcError(inv.getProduct({ id: p!.id }))).code).to.equal(Code.NotFound);
      expect((await rpcError(inv.deleteProduct({ id: p!.id }))).code).to.equal(Code.NotFound);
    });

    it("finds products by words in name and description, best matches first", async () => {
      await inv.createProduct({ product: product("Blue ballpoint pen", { description: "writes smoothly" }) });
      await inv.createProduct({ product: product("Notebook", { description: "pairs well with a blue pen" }) });
      await inv.createProduct({ product: product("Red marker", { description: "permanent ink" }) });
      const { products } = await inv.searchProducts({ query: "BLUE pen" });
      expect(products.map((p) => p.name)).to.deep.equal(["Blue ballpoint pen", "Notebook"]);
      const prefix = await inv.searchProducts({ query: "ballp" });
      expect(prefix.products.map((p) => p.name)).to.deep.equal(["Blue ballpoint pen"]);
      const typo = await inv.searchProducts({ query: "Notebok" });
      expect(typo.products.map((p) => p.name)).to.include("Notebook");
      expect((await rpcError(inv.searchProducts({ query: "!!!" }))).code).to.equal(Code.InvalidArgument);
    });

    it("searches through the indexes, never by reading every product (where the planner would, on a table this small)", async () => {
      for (const name of ["Xylofon classic", "Xylofon mini", "Ocarina"]) await inv.createProduct({ product: product(name, { category: Category.ELECTRONICS }) });
      const db = new pg.Client({ connectionString: server.databaseUrl });
      await db.connect();
      try {
        // SearchProducts' statement, counted by this session's own counters for the products table within one
        // transaction (no statistics delay): a word, a typo, a category, nothing found.
        await db.query("BEGIN");
        for (const [query, category, found] of [["xylofon", 0, 2], ["Ocarna", 0, 1], ["ocarina", Category.ELECTRONICS, 1], ["ocarina", Category.OFFICE, 0], ["zebra", 0, 0]] as const) {
          const words = query.split(" ").map((w) => `${w}:*`).join(" & ");
          const rows = await db.query(`SELECT * FROM "inventory".search_products($1, to_tsquery('english', $2), $3, 20, 0)`, [query, words, category]);
          expect(rows.rowCount, query).to.equal(found);
        }
        const { rows } = await db.query<{ seq_scan: string; idx_scan: string }>(
          `SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE schemaname = 'inventory' AND relname = 'products'`,
        );
        await db.query("COMMIT");
        expect(Number(rows[0]!.seq_scan)).to.equal(0);
        expect(Number(rows[0]!.idx_scan)).to.be.at.least(4);
      } finally {
        await db.end();
      }
    });
  });

  describe("listing", () => {
    let listServer: TestServer;
    let list: Inventory;
    before(async () => {
      listServer = await startTestServer();
      list = client(InventoryService, listServer.url, "grpc", listServer.adminToken);
      const names = Array.from({ length: 2500 }, (_, i) => `Item ${String(i).padStart(4, "0")}`);
      for (let i = 0; i < names.length; i += 50) {
        await Promise.all(
          names.slice(i, i + 50).map((name, j) =>
            list.createProduct({
              product: product(name, {
                quantity: (i + j) % 7,
                category: (i + j) % 2 ? Category.FOOD : Category.OFFICE,
              }),
            }),
          ),
        );
      }
    });
    after(() => listServer?.shutdown());

    it("pages 2,500 products 100 at a time, each exactly once, in order", async () => {
      const seen: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await list.listProducts({ pageSize: 100, pageToken });
        expect(page.products.length).to.be.at.most(100);
        seen.push(...page.products.map((p) => p.name));
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken && pages < 100);
      expect(seen).to.have.length(2500);
      expect(new Set(seen).size).to.equal(2500);
      expect(seen).to.deep.equal([...seen].sort());
      expect(pages).to.equal(25);
    });

    it("pages every order both ways, each product once and in order, ties broken by id", async () => {
      const key = (p: Product, order: ProductOrder): [string | number | bigint, string] =>
        order === ProductOrder.QUANTITY ? [p.quantity, p.id]
        : order === ProductOrder.UPDATE_TIME ? [p.updateTime!.seconds * 1_000_000_000n + BigInt(p.updateTime!.nanos), p.id]
        : [p.name, p.id];
      for (const orderBy of [ProductOrder.NAME, ProductOrder.QUANTITY, ProductOrder.UPDATE_TIME]) {
        for (const descending of [false, true]) {
          const seen: Product[] = [];
          let pageToken = "";
          do {
            const page = await list.listProducts({ pageSize: 400, orderBy, descending, pageToken });
            seen.push(...page.products);
            pageToken = page.nextPageToken;
          } while (pageToken);
          const label = `${ProductOrder[orderBy]}${descending ? " descending" : ""}`;
          expect(new Set(seen.map((p) => p.id)).size, label).to.equal(2500);
          expect(seen, label).to.have.length(2500);
          const keys = seen.map((p) => key(p, orderBy));
          const inOrder = keys.every((k, i) => {
            if (i === 0) return true;
            const [a, b] = descending ? [k, keys[i - 1]!] : [keys[i - 1]!, k];
            return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
          });
          expect(inOrder, label).to.equal(true);
        }
      }
    });

    it("filters by category and low stock, orders by quantity descending, and keeps the filters in the token", async () => {
      const seen: Product[] = [];
      let pageToken = "";
      const query = { pageSize: 200, category: Category.FOOD, lowStockOnly: true, orderBy: ProductOrder.QUANTITY, descending: true };
      do {
        const page = await list.listProducts({ ...query, pageToken });
        seen.push(...page.products);
        pageToken = page.nextPageToken;
      } while (pageToken);
      expect(seen.length).to.be.greaterThan(0);
      expect(seen.every((p) => p.category === Category.FOOD && p.lowStock && p.quantity <= 3)).to.equal(true);
      const quantities = seen.map((p) => p.quantity);
      expect(quantities).to.deep.equal([...quantities].sort((a, b) => b - a));
      expect(new Set(seen.map((p) => p.id)).size).to.equal(seen.length);
      const first = await list.listProducts({ ...query, pageSize: 5 });
      const mismatch = await rpcError(list.listProducts({ pageSize: 5, pageToken: first.nextPageToken }));
      expect(mismatch.code).to.equal(Code.InvalidArgument);
    });
  });

  describe("stock", () => {
    it("lets exactly 50 of 100 concurrent AdjustStock(-1) succeed on a quantity of 50", async () => {
      const { product: p } = await inv.createProduct({ product: product("Hot item", { quantity: 50 }) });
      const results = await Promise.allSettled(
        Array.from({ length: 100 }, (_, i) =>
          inv.adjustStock({ productId: p!.id, delta: -1, reason: "sale", requestId: `sale-${i}` }),
        ),
      );
      const ok = results.filter((r) => r.status === "fulfilled");
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => ConnectError.from(r.reason));
      expect(ok).to.have.length(50);
      expect(failed).to.have.length(50);
      for (const err of failed) {
        expect(err.code).to.equal(Code.FailedPrecondition);
        expect(err.findDetails(ErrorInfoSchema)[0]?.metadata.available_quantity).to.equal("0");
        expect(err.findDetails(PreconditionFailureSchema)[0]?.violations[0]?.type).to.equal("STOCK");
      }
      const { product: after } = await inv.getProduct({ id: p!.id });
      expect(after!.quantity).to.equal(0);
      const movements = [];
      let pageToken = "";
      do {
        const page = await inv.listStockMovements({ productId: p!.id, pageSize: 7, pageToken });
        movements.push(...page.movements);
        pageToken = page.nextPageToken;
      } while (pageToken);
      expect(movements).to.have.length(50);
      expect(movements.map((m) => m.quantityAfter).sort((a, b) => a - b)).to.deep.equal(Array.from({ length: 50 }, (_, i) => i));
    });

    it("applies a request_id once and replays the first result", async () => {
      const { product: p } = await inv.createProduct({ product: product("Idempotent", { quantity: 5 }) });
      const first = await inv.adjustStock({ productId: p!.id, delta: 3, reason: "delivery", requestId: "d-1" });
      const concurrentRepeats = await Promise.all(
        Array.from({ length: 5 }, () => inv.adjustStock({ productId: p!.id, delta: 3, reason: "delivery", requestId: "d-1" })),
      );
      expect(first.replayed).to.equal(false);
      expect(first.product!.quantity).to.equal(8);
      for (const r of concurrentRepeats) {
        expect(r.replayed).to.equal(true);
        expect(r.movement).to.deep.equal(first.movement);
      }
      expect((await inv.getProduct({ id: p!.id })).product!.quantity).to.equal(8);
    });

    it("applies a request_id once when its repeats wait for the product's lock while the first commits", async () => {
      const { product: p } = await inv.createProduct({ product: product("Raced", { quantity: 5 }) });
      // The row is held here until the requests queue for it; whichever gets it first applies the movement,
      // and the others, whose statements started before that commit, must find it and replay it.
      const holder = new pg.Client({ connectionString: server.databaseUrl });
      await holder.connect();
      try {
        await holder.query("BEGIN");
        await holder.query(`SELECT 1 FROM "inventory".products WHERE id = $1 FOR UPDATE`, [p!.id]);
        const calls = Array.from({ length: 6 }, () => inv.adjustStock({ productId: p!.id, delta: 2, reason: "delivery", requestId: "r-1" }));
        await eventually(async () => {
          const { rows } = await holder.query<{ n: number }>(
            `SELECT count(DISTINCT pid)::int AS n FROM pg_locks WHERE NOT granted`,
          );
          return rows[0]!.n >= 3;
        }, "AdjustStock calls waiting for the product's lock");
        await holder.query("COMMIT");
        const results = await Promise.all(calls);
        const applied = results.filter((r) => !r.replayed);
        expect(applied).to.have.length(1);
        for (const r of results) expect(r.movement).to.deep.equal(applied[0]!.movement);
      } finally {
        await holder.end();
      }
      expect((await inv.getProduct({ id: p!.id })).product!.quantity).to.equal(7);
      expect((await inv.listStockMovements({ productId: p!.id })).movements).to.have.length(1);
    });

    it("rejects a zero delta and an unknown product", async () => {
      const { product: p } = await inv.createProduct({ product: product("Zero") });
      expect(badFields(await rpcError(inv.adjustStock({ productId: p!.id, delta: 0, reason: "x", requestId: "z" })))).to.deep.equal(["delta"]);
      const missing = await rpcError(
        inv.adjustStock({ productId: "00000000-0000-4000-8000-000000000001", delta: 1, reason: "x", requestId: "z" }),
      );
      expect(missing.code).to.equal(Code.NotFound);
    });
  });

  describe("a large catalog", () => {
    // 20,000 products, 10 of them low on stock and 20 in category OTHER, fresh statistics, one connection (so that a
    // stock change after the listings reports its counters with theirs).
    let server: TestServer;
    let admin: Inventory;
    const PRODUCTS = 20_000;
    const reads = () => tableReads(server.databaseUrl, "inventory", "products");
    let changes = 0;
    /** A stock change on the same connection: once its row is counted, so are the reads before it. */
    const settled = async () => {
      const { products } = await admin.listProducts({ pageSize: 1 });
      await admin.adjustStock({ productId: products[0]!.id, delta: 1, reason: "count", requestId: `large-catalog-${++changes}` });
      await eventually(async () => (await tableReads(server.databaseUrl, "inventory", "stock_movements")).inserted === changes, "the listings' statistics");
    };
    /** Every page of a listing, by name. */
    const walk = async (query: { pageSize: number; orderBy: ProductOrder; descending: boolean; category: Category; lowStockOnly?: boolean }) => {
      const seen: string[] = [];
      let pageToken = "";
      do {
        const page = await admin.listProducts({ ...query, pageToken });
        seen.push(...page.products.map((p) => p.name));
        pageToken = page.nextPageToken;
      } while (pageToken);
      return seen;
    };
    /** The products low on stock, k = 1..10: product 2000·k, quantity 10 − k, category 1 + k mod 4, updated k·3 mod 10 minutes in. */
    const low = Array.from({ length: 10 }, (_, i) => i + 1).map((k) => ({
      name: `Stock ${String(2000 * k).padStart(5, "0")}`,
      quantity: 10 - k,
      category: 1 + (k % 4),
      updated: (k * 3) % 10,
    }));

    before(async () => {
      server = await startTestServer({ DB_POOL_SIZE: "1" });
      admin = client(InventoryService, server.url, "grpc", server.adminToken);
      const db = new pg.Client({ connectionString: server.databaseUrl });
      await db.connect();
      try {
        await db.query(
          `INSERT INTO "inventory".products (id, name, description, category, quantity, price_units, price_nanos, currency_code, low_stock_threshold, version, created_at, updated_at)
           SELECT gen_random_uuid(), 'Stock ' || lpad(i::text, 5, '0'), '',
                  CASE WHEN i % 2000 = 0 THEN 1 + (i / 2000) % 4 WHEN i % 1000 = 500 THEN 5 ELSE 1 + i % 4 END,
                  CASE WHEN i % 2000 = 0 THEN 10 - i / 2000 WHEN i % 1000 = 500 THEN 200 + i / 1000 ELSE 100 + i % 50 END, 1, 0, 'EUR', 10, 1, t, t
             FROM generate_series(1, $1::int) i,
                  LATERAL (SELECT timestamptz '2030-01-01' + CASE WHEN i % 2000 = 0 THEN (i / 2000 * 3) % 10 ELSE 20 + i END * interval '1 minute' AS t) s`,
          [PRODUCTS],
        );
        await db.query(`ANALYZE "inventory".products`);
      } finally {
        await db.end();
      }
      await eventually(async () => (await reads()).inserted === PRODUCTS, "the catalog's statistics");
    });
    after(() => server?.shutdown());

    it("lists the products low on stock from their own indexes, in every order both ways, with and without a category", async () => {
      const before = await reads();
      const orders: [ProductOrder, (p: (typeof low)[number]) => string | number][] = [
        [ProductOrder.NAME, (p) => p.name],
        [ProductOrder.QUANTITY, (p) => p.quantity],
        [ProductOrder.UPDATE_TIME, (p) => p.updated],
      ];
      for (const [orderBy, key] of orders) {
        for (const descending of [false, true]) {
          for (const category of [Category.UNSPECIFIED, Category.CLOTHING]) {
            const expected = low
              .filter((p) => !category || p.category === category)
              .sort((a, b) => (key(a) < key(b) ? -1 : 1) * (descending ? -1 : 1))
              .map((p) => p.name);
            const seen = await walk({ pageSize: 3, lowStockOnly: true, orderBy, descending, category });
            expect(seen, `${ProductOrder[orderBy]}${descending ? " descending" : ""}, category ${category}`).to.deep.equal(expected);
          }
        }
      }
      await settled();
      const after = await reads();
      const read = (key: string) => after[key]! - before[key]!;
      for (const index of ["products_name_order", "products_quantity_order", "products_updated_order", "products_category", "seq"]) {
        expect(read(index), `rows read through ${index}`).to.be.below(PRODUCTS / 10);
      }
      const fromLowStock = read("products_low_stock_by_name") + read("products_low_stock_by_quantity") + read("products_low_stock_by_updated");
      expect(fromLowStock, "rows read through the low-stock indexes").to.be.within(1, 400);
    });

    it("lists a small category in every order both ways without walking the catalog", async () => {
      const before = await reads();
      const names = Array.from({ length: 20 }, (_, j) => `Stock ${String(1000 * j + 500).padStart(5, "0")}`);
      for (const orderBy of [ProductOrder.NAME, ProductOrder.QUANTITY, ProductOrder.UPDATE_TIME]) {
        for (const descending of [false, true]) {
          // Their names, quantities (above every other product's) and update times all rise with i.
          const seen = await walk({ pageSize: 7, orderBy, descending, category: Category.OTHER });
          expect(seen, `${ProductOrder[orderBy]}${descending ? " descending" : ""}`).to.deep.equal(descending ? [...names].reverse() : names);
        }
      }
      await settled();
      const after = await reads();
      for (const index of ["products_name_order", "products_quantity_order", "products_updated_order", "seq"]) {
        expect(after[index]! - before[index]!, `rows read through ${index}`).to.be.below(100);
      }
    });
  });

  describe("watching", () => {
    type Collected = { events: ProductEvent[]; heartbeats: number };
    async function collect(
      stream: AsyncIterable<{ kind: { case: string | undefined; value?: unknown } }>,
      until: (c: Collected) => boolean,
    ): Promise<Collected> {
      const c: Collected = { events: [], heartbeats: 0 };
      for await (const msg of stream) {
        if (msg.kind.case === "event") c.events.push(msg.kind.value as ProductEvent);
        else if (msg.kind.case === "heartbeat") c.heartbeats++;
        if (until(c)) break;
      }
      return c;
    }

    it("streams changes and low-stock crossings in commit order, and resumes after a cursor", async () => {
      const abort = new AbortController();
      const { product: p } = await inv.createProduct({ product: product("Watched", { quantity: 5, lowStockThreshold: 2 }) });
      const stream = inv.watchProducts({ productIds: [p!.id] }, { signal: abort.signal });
      const watching = collect(stream, (c) => c.events.length >= 4);
      // Stream is open once the first heartbeat arrives; changes made from now on are seen.
      await new Promise((r) => setTimeout(r, 300));
      await inv.adjustStock({ productId: p!.id, delta: -3, reason: "sale", requestId: "w-1" });
      await inv.adjustStock({ productId: p!.id, delta: 4, reason: "delivery", requestId: "w-2" });
      const { events } = await watching;
      abort.abort();
      expect(events.map((e) => e.type)).to.deep.equal([
        ProductEventType.STOCK_ADJUSTED,
        ProductEventType.LOW_STOCK,
        ProductEventType.STOCK_ADJUSTED,
        ProductEventType.RESTOCKED,
      ]);
      expect(events[0]!.movement!.delta).to.equal(-3);
      const cursors = events.map((e) => BigInt(e.cursor));
      expect(cursors).to.deep.equal([...cursors].sort((a, b) => (a < b ? -1 : 1)));

      const resumed = await collect(inv.watchProducts({ afterCursor: events[1]!.cursor, productIds: [p!.id] }), (c) => c.events.length >= 2);
      expect(resumed.events.map((e) => e.cursor)).to.deep.equal([events[2]!.cursor, events[3]!.cursor]);
    });

    it("sends heartbeats while quiet and gives low-stock watchers only the crossings they asked for", async () => {
      const { product: shirt } = await inv.createProduct({
        product: product("Shirt", { category: Category.CLOTHING, quantity: 10, lowStockThreshold: 5 }),
      });
      const { product: pen } = await inv.createProduct({ product: product("Pen", { quantity: 10, lowStockThreshold: 5 }) });
      const watching = collect(inv.watchProducts({ lowStockOnly: true, categories: [Category.CLOTHING] }), (c) => c.events.length >= 1);
      const quiet = await collect(inv.watchProducts({ productIds: [shirt!.id] }), (c) => c.heartbeats >= 2);
      expect(quiet.events).to.deep.equal([]);
      await inv.adjustStock({ productId: pen!.id, delta: -8, reason: "sale", requestId: "pen-1" }); // other category
      await inv.adjustStock({ productId: shirt!.id, delta: -1, reason: "sale", requestId: "shirt-1" }); // no crossing
      await inv.adjustStock({ productId: shirt!.id, delta: -6, reason: "sale", requestId: "shirt-2" }); // crosses
      const { events } = await watching;
      expect(events.map((e) => [e.type, e.product!.id, e.product!.quantity])).to.deep.equal([
        [ProductEventType.LOW_STOCK, shirt!.id, 3],
      ]);
    });

    it("rejects a cursor from the future and a malformed one", async () => {
      const ahead = await rpcError(collect(inv.watchProducts({ afterCursor: "999999999" }), () => true));
      expect(ahead.code).to.equal(Code.OutOfRange);
      const bad = await rpcError(collect(inv.watchProducts({ afterCursor: "abc" }), () => true));
      expect(bad.code).to.equal(Code.InvalidArgument);
    });
  });
});
