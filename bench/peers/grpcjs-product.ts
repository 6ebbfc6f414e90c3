/**
 * The `peer max` row of the GetProduct table: bare @grpc/grpc-js + pg answering
 * agora.inventory.v1.InventoryService/GetProduct with the SQL Agora runs (one
 * prepared SELECT by primary key on inventory.products, a pool as large as
 * Agora's), on the same PostgreSQL and the same data. No token check, no
 * validation, no log, no metrics: the limit a Node server reaches on this call.
 * Usage: node --import tsx bench/peers/grpcjs-product.ts <database url> [port] (prints "listening <port>").
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import pg from "pg";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const definition = protoLoader.loadSync("agora/inventory/v1/inventory.proto", {
  includeDirs: [path.join(root, "proto"), path.join(root, "third_party/proto")],
});
const loaded = grpc.loadPackageDefinition(definition) as unknown as {
  agora: { inventory: { v1: { InventoryService: { service: grpc.ServiceDefinition } } } };
};
const pool = new pg.Pool({ connectionString: process.argv[2], max: 10 });
const GET_PRODUCT = {
  name: "peer-get-product",
  text:
    "select id, name, description, category, quantity, price_units, price_nanos, currency_code, low_stock_threshold, version, created_at, updated_at " +
    "from inventory.products where id = $1 limit 1",
};
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface Row {
  id: string;
  name: string;
  description: string;
  category: number;
  quantity: number;
  price_units: string;
  price_nanos: number;
  currency_code: string;
  low_stock_threshold: number;
  version: number;
  created_at: Date;
  updated_at: Date;
}

const timestamp = (d: Date) => ({ seconds: Math.floor(d.getTime() / 1000), nanos: (d.getTime() % 1000) * 1e6 });

const server = new grpc.Server();
server.addService(loaded.agora.inventory.v1.InventoryService.service, {
  getProduct: (call: grpc.ServerUnaryCall<{ id: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
    const id = call.request.id;
    if (!UUID.test(id)) return callback({ code: grpc.status.INVALID_ARGUMENT, details: "id must be a UUID" });
    pool.query<Row>({ ...GET_PRODUCT, values: [id] }).then(
      ({ rows: [p] }) => {
        if (!p) return callback({ code: grpc.status.NOT_FOUND, details: `product ${id} not found` });
        callback(null, {
          product: {
            id: p.id,
            name: p.name,
            description: p.description,
            category: p.category,
            quantity: p.quantity,
            unitPrice: { currencyCode: p.currency_code, units: p.price_units, nanos: p.price_nanos },
            lowStockThreshold: p.low_stock_threshold,
            lowStock: p.quantity <= p.low_stock_threshold,
            etag: `"${p.version}"`,
            createTime: timestamp(p.created_at),
            updateTime: timestamp(p.updated_at),
          },
        });
      },
      (err: Error) => callback({ code: grpc.status.UNAVAILABLE, details: err.message }),
    );
  },
});
server.bindAsync(`127.0.0.1:${process.argv[3] ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(err.message);
    process.exit(1);
  }
  console.log(`listening ${port}`);
});
process.on("SIGTERM", () => server.tryShutdown(() => void pool.end().finally(() => process.exit(0))));
