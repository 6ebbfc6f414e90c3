import { BigIntType, EntitySchema } from "@mikro-orm/core";

/** The service's PostgreSQL schema: its migrations create it; openServiceDatabase, the event log and every SQL statement name it from here. */
export const SCHEMA = "inventory";

export class ProductEntity {
  id!: string;
  name!: string;
  description!: string;
  /** agora.inventory.v1.Category number. */
  category!: number;
  quantity!: number;
  priceUnits!: number;
  priceNanos!: number;
  currencyCode!: string;
  lowStockThreshold!: number;
  /** Optimistic-lock version; the etag clients see. */
  version!: number;
  /** The CreateProduct request_id that created it, for idempotent retries. */
  requestId?: string | null;
  /** What a repeat of requestId must match (platform/idempotency.ts); null for rows older than fingerprints. */
  requestFingerprint?: string | null;
  createdAt!: Date;
  updatedAt!: Date;
}

export const ProductSchema = new EntitySchema<ProductEntity>({
  class: ProductEntity,
  tableName: "products",
  properties: {
    id: { type: "uuid", primary: true },
    name: { type: "text" },
    description: { type: "text" },
    category: { type: "smallint" },
    quantity: { type: "integer" },
    priceUnits: { type: new BigIntType("number"), fieldName: "price_units" },
    priceNanos: { type: "integer", fieldName: "price_nanos" },
    currencyCode: { type: "text", fieldName: "currency_code" },
    lowStockThreshold: { type: "integer", fieldName: "low_stock_threshold" },
    version: { type: "integer", version: true },
    requestId: { type: "text", fieldName: "request_id", nullable: true },
    requestFingerprint: { type: "text", fieldName: "request_fingerprint", nullable: true },
    createdAt: { type: "Date", fieldName: "created_at" },
    updatedAt: { type: "Date", fieldName: "updated_at" },
  },
});

export class StockMovementEntity {
  id!: string;
  productId!: string;
  delta!: number;
  quantityAfter!: number;
  reason!: string;
  requestId!: string;
  requestFingerprint?: string | null;
  createdAt!: Date;
}

export const StockMovementSchema = new EntitySchema<StockMovementEntity>({
  class: StockMovementEntity,
  tableName: "stock_movements",
  properties: {
    id: { type: "uuid", primary: true },
    productId: { type: "uuid", fieldName: "product_id" },
    delta: { type: "integer" },
    quantityAfter: { type: "integer", fieldName: "quantity_after" },
    reason: { type: "text" },
    requestId: { type: "text", fieldName: "request_id" },
    requestFingerprint: { type: "text", fieldName: "request_fingerprint", nullable: true },
    createdAt: { type: "Date", fieldName: "created_at" },
  },
});

/** The columns a client sets on a product (the quantity moves only through stock adjustments). */
export type ProductFields = Pick<
  ProductEntity,
  "name" | "description" | "category" | "lowStockThreshold" | "priceUnits" | "priceNanos" | "currencyCode"
>;
