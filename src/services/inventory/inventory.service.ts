import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AdjustStockRequestSchema,
  CreateProductRequestSchema,
  InventoryService,
  ProductEventType,
  ProductSchema as ProductMessageSchema,
  WatchProductsResponseSchema,
  type ProductEvent,
  type WatchProductsRequest,
} from "../../../gen/agora/inventory/v1/inventory_pb.js";
import { invalidArgument } from "../../platform/errors.js";
import type { EventLog } from "../../platform/event-log.js";
import { requestFingerprint } from "../../platform/idempotency.js";
import { fingerprint, isKeyset, isNumericKeyset, pageSize, type PageTokens } from "../../platform/paging.js";
import { assertUpdateMask, assertValid } from "../../platform/validation.js";
import { productFields, toProduct, toStockMovement } from "./inventory.mapper.js";
import type { ProductRepository } from "./product.repository.js";

/** Fields UpdateProduct may change; the quantity moves only through AdjustStock. */
const UPDATABLE = new Set(["name", "description", "category", "unit_price", "low_stock_threshold"]);

const isOffset = (p: unknown): p is number => Number.isInteger(p) && (p as number) >= 0;

export function inventoryHandlers(
  products: ProductRepository,
  events: EventLog<ProductEvent>,
  pages: PageTokens,
): ServiceImpl<typeof InventoryService> {
  return {
    async createProduct(req) {
      const p = req.product!;
      const product = await products.create(productFields(p), p.quantity, req.requestId, requestFingerprint(CreateProductRequestSchema, req));
      return { product: toProduct(product) };
    },

    async getProduct(req) {
      return { product: toProduct(await products.get(req.id)) };
    },

    async listProducts(req) {
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("list", req.category, req.lowStockOnly, req.orderBy, req.descending);
      const rows = await products.list({
        category: req.category,
        lowStockOnly: req.lowStockOnly,
        order: req.orderBy,
        descending: req.descending,
        after: pages.decode(req.pageToken, filters, isNumericKeyset),
        limit: limit + 1,
      });
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => products.positionOf(last, req.orderBy));
      return { products: page.map(toProduct), nextPageToken };
    },

    async updateProduct(req) {
      const paths = req.updateMask!.paths;
      assertUpdateMask(paths, UPDATABLE);
      const given = req.product ?? create(ProductMessageSchema);
      const updated = await products.update(req.id, req.etag, (entity) => {
        // Merge the masked fields into the stored product, then hold the result to Product's rules.
        const merged = toProduct(entity);
        for (const path of paths) {
          if (path === "unit_price") merged.unitPrice = given.unitPrice;
          else if (path === "low_stock_threshold") merged.lowStockThreshold = given.lowStockThreshold;
          else if (path === "name") merged.name = given.name;
          else if (path === "description") merged.description = given.description;
          else if (path === "category") merged.category = given.category;
        }
        assertValid(ProductMessageSchema, merged, "product.");
        Object.assign(entity, productFields(merged));
      });
      return { product: toProduct(updated) };
    },

    async deleteProduct(req) {
      await products.delete(req.id, req.etag);
      return {};
    },

    async searchProducts(req) {
      const words = req.query.match(/[\p{L}\p{N}]+/gu) ?? [];
      if (words.length === 0) {
        throw invalidArgument([{ field: "query", description: "query must contain at least one letter or digit" }]);
      }
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("search", req.query, req.category);
      const offset = pages.decode(req.pageToken, filters, isOffset) ?? 0;
      const rows = await products.search(words.slice(0, 20), req.query, req.category, offset, limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, () => offset + limit);
      return { products: page.map(toProduct), nextPageToken };
    },

    async adjustStock(req) {
      const result = await products.adjustStock(req.productId, req.delta, req.reason, req.requestId, requestFingerprint(AdjustStockRequestSchema, req));
      return { product: toProduct(result.product), movement: toStockMovement(result.movement), replayed: result.replayed };
    },

    async listStockMovements(req) {
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("movements", req.productId);
      const after = pages.decode(req.pageToken, filters, isKeyset);
      const rows = await products.listMovements(req.productId, after, limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [last.createdAt.toISOString(), last.id]);
      return { movements: page.map(toStockMovement), nextPageToken };
    },

    async *watchProducts(req, ctx) {
      const wanted = watchFilter(req);
      yield* events.watch(req.afterCursor, ctx.signal, {
        heartbeat: (value) => create(WatchProductsResponseSchema, { kind: { case: "heartbeat", value } }),
        event: (e, cursor) => (wanted(e) ? create(WatchProductsResponseSchema, { kind: { case: "event", value: { ...e, cursor } } }) : undefined),
      });
    },
  };
}

function watchFilter(req: WatchProductsRequest): (e: ProductEvent) => boolean {
  const categories = new Set(req.categories);
  const ids = new Set(req.productIds);
  return (e) =>
    (categories.size === 0 || categories.has(e.product?.category ?? 0)) &&
    (ids.size === 0 || ids.has(e.product?.id ?? "")) &&
    (!req.lowStockOnly || e.type === ProductEventType.LOW_STOCK || e.type === ProductEventType.RESTOCKED);
}
