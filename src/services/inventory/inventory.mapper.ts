import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  ProductSchema,
  StockMovementSchema,
  type Product,
  type StockMovement,
} from "../../../gen/agora/inventory/v1/inventory_pb.js";
import { MoneySchema } from "../../../gen/google/type/money_pb.js";
import type { ProductEntity, ProductFields, StockMovementEntity } from "./product.entity.js";
import { etagOf } from "../../platform/etag.js";

export function isLowStock(p: Pick<ProductEntity, "quantity" | "lowStockThreshold">): boolean {
  return p.quantity <= p.lowStockThreshold;
}

export function toProduct(p: ProductEntity): Product {
  return create(ProductSchema, {
    id: p.id,
    name: p.name,
    description: p.description,
    category: p.category,
    quantity: p.quantity,
    unitPrice: create(MoneySchema, {
      currencyCode: p.currencyCode,
      units: BigInt(p.priceUnits),
      nanos: p.priceNanos,
    }),
    lowStockThreshold: p.lowStockThreshold,
    lowStock: isLowStock(p),
    etag: etagOf(p),
    createTime: timestampFromDate(p.createdAt),
    updateTime: timestampFromDate(p.updatedAt),
  });
}

export function toStockMovement(m: StockMovementEntity): StockMovement {
  return create(StockMovementSchema, {
    id: m.id,
    productId: m.productId,
    delta: m.delta,
    quantityAfter: m.quantityAfter,
    reason: m.reason,
    requestId: m.requestId,
    createTime: timestampFromDate(m.createdAt),
  });
}

/** The columns a Product proto sets (everything but identity, stock, version and times). */
export function productFields(p: Product): ProductFields {
  return {
    name: p.name,
    description: p.description,
    category: p.category,
    lowStockThreshold: p.lowStockThreshold,
    priceUnits: Number(p.unitPrice?.units ?? 0n),
    priceNanos: p.unitPrice?.nanos ?? 0,
    currencyCode: p.unitPrice?.currencyCode ?? "",
  };
}
