import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { ConnectError } from "@connectrpc/connect";
import {
  ProductEventSchema,
  ProductEventType,
  ProductOrder,
  type ProductEvent,
} from "../../../gen/agora/inventory/v1/inventory_pb.js";
import type { Clock } from "../../platform/clock.js";
import { commitWith, isUniqueViolation, preparedQuery, retryTransaction, rowMapper, sqlTransaction, type SqlTransaction } from "../../platform/db.js";
import { alreadyExists, failedPrecondition, notFound, outOfRange } from "../../platform/errors.js";
import { assertEtag } from "../../platform/etag.js";
import type { EventLog } from "../../platform/event-log.js";
import { assertSameRequest } from "../../platform/idempotency.js";
import { isLowStock, toProduct, toStockMovement } from "./inventory.mapper.js";
import { ProductEntity, ProductSchema, SCHEMA, StockMovementEntity, StockMovementSchema, type ProductFields } from "./product.entity.js";

const INT32_MAX = 2_147_483_647;

/** What a product is answered with: every column but its search vector and its request's fingerprint. */
const PRODUCT_COLUMNS =
  "id, name, description, category, quantity, price_units, price_nanos, currency_code, low_stock_threshold, version, request_id, created_at, updated_at";

const GET_PRODUCT_SQL = `SELECT ${PRODUCT_COLUMNS} FROM "${SCHEMA}".products WHERE id = $1`;

/**
 * Products matching words $2 (stemmed prefixes, a tsquery's text) in name or description, or with a name similar to
 * query $1 (a typo: more than 0.3 of their trigrams shared), in category $3 unless 0; ranked, $4 from position $5.
 * A function of the schema (its migration says why), which answers the product columns and the score.
 */
const SEARCH_SQL = `SELECT * FROM "${SCHEMA}".search_products($1, to_tsquery('english', $2), $3, $4, $5)`;

/** Product $1's movements, newest first, $2 of them; with `after`, those before position ($3, $4). */
const movementsSql = (after: boolean) =>
  `SELECT * FROM "${SCHEMA}".stock_movements WHERE product_id = $1 ${after ? "AND (created_at, id) < ($3, $4) " : ""}ORDER BY created_at DESC, id DESC LIMIT $2`;

const fromRow = rowMapper(ProductSchema);
const movementFromRow = rowMapper(StockMovementSchema);

/**
 * Product $1 locked, with the version and the movement of request $2 (as JSON, `earlier`) as the statement's
 * snapshot saw them: taken before any wait for the lock, unlike the row, which is read after it (READ COMMITTED).
 */
const LOCK_FOR_MOVEMENT = `SELECT p.*, (SELECT version FROM "${SCHEMA}".products WHERE id = $1) AS seen_version,
    (SELECT to_json(m) FROM "${SCHEMA}".stock_movements m WHERE m.product_id = $1 AND m.request_id = $2) AS earlier
  FROM "${SCHEMA}".products p WHERE p.id = $1 FOR UPDATE OF p`;

const MOVEMENT_BY_REQUEST = `SELECT * FROM "${SCHEMA}".stock_movements WHERE product_id = $1 AND request_id = $2`;

const LOCK_PRODUCT = `SELECT * FROM "${SCHEMA}".products WHERE id = $1 FOR UPDATE`;
const PRODUCT_BY_REQUEST = `SELECT * FROM "${SCHEMA}".products WHERE request_id = $1`;

/** The writes, each with its events in the same statement (EventLog.afterWrite). */
const writeStatements = (events: EventLog<ProductEvent>) => ({
  /**
   * A movement of product $1 to quantity $2 at time $3: the product's new quantity and version, movement $4 (delta
   * $5, reason $6, request $7 with fingerprint $8), then the events from $9.
   */
  saveMovement: events.afterWrite(
    `moved AS (UPDATE "${SCHEMA}".products SET quantity = $2, version = version + 1, updated_at = $3 WHERE id = $1 RETURNING id),
    movement AS (INSERT INTO "${SCHEMA}".stock_movements (id, product_id, delta, quantity_after, reason, request_id, request_fingerprint, created_at)
                 VALUES ($4, $1, $5, $2, $6, $7, $8, $3))`,
    "moved",
    9,
  ),
  /** Product $1's editable columns ($2-$8) and update time ($9), version bumped; then the events from $10. */
  saveProduct: events.afterWrite(
    `saved AS (UPDATE "${SCHEMA}".products
                 SET name = $2, description = $3, category = $4, price_units = $5, price_nanos = $6, currency_code = $7,
                     low_stock_threshold = $8, version = version + 1, updated_at = $9
               WHERE id = $1 RETURNING id)`,
    "saved",
    10,
  ),
  /** A new product ($1-$12, created and updated at $13); then its event from $14. */
  insertProduct: events.afterWrite(
    `inserted AS (INSERT INTO "${SCHEMA}".products (id, name, description, category, quantity, price_units, price_nanos, currency_code,
                   low_stock_threshold, version, request_id, request_fingerprint, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) RETURNING id)`,
    "inserted",
    14,
  ),
  /** Product $1 deleted (its movements with it); then its event from $2. */
  deleteProduct: events.afterWrite(`gone AS (DELETE FROM "${SCHEMA}".products WHERE id = $1 RETURNING id)`, "gone", 2),
});

/** Position of the last row of a page, for keyset paging: [sort value, id]. */
export type KeysetPosition = [string | number, string];

export interface ListProductsQuery {
  category: number;
  lowStockOnly: boolean;
  order: ProductOrder;
  descending: boolean;
  after: KeysetPosition | undefined;
  limit: number;
}

const ORDER_COLUMNS: Record<ProductOrder, { column: string; value: (p: ProductEntity) => string | number }> = {
  [ProductOrder.UNSPECIFIED]: { column: "name", value: (p) => p.name },
  [ProductOrder.NAME]: { column: "name", value: (p) => p.name },
  [ProductOrder.QUANTITY]: { column: "quantity", value: (p) => p.quantity },
  [ProductOrder.UPDATE_TIME]: { column: "updated_at", value: (p) => p.updatedAt.toISOString() },
};

/** Owns every query on products and stock movements, and the events they emit. */
export class ProductRepository {
  private readonly sql: ReturnType<typeof writeStatements>;

  constructor(
    private readonly em: EntityManager,
    private readonly events: EventLog<ProductEvent>,
    private readonly clock: Clock,
  ) {
    this.sql = writeStatements(events);
  }

  /** The hot read (GetProduct): one prepared statement, no ORM hydration (bench: issue 16). */
  async get(id: string): Promise<ProductEntity> {
    const [row] = await preparedQuery(this.em, "inventory.get-product", GET_PRODUCT_SQL, [id]);
    if (!row) throw notFound("product", id);
    return fromRow(row);
  }

  /**
   * Creates a product, or returns the one an earlier call with the same request id
   * created (INVALID_ARGUMENT when that call's fingerprint differs).
   */
  async create(fields: ProductFields, quantity: number, requestId: string, fingerprint: string): Promise<ProductEntity> {
    const now = this.clock.now();
    const earlier = async () => {
      if (!requestId) return null;
      const [row] = await preparedQuery(this.em, "inventory.product-by-request", PRODUCT_BY_REQUEST, [requestId]);
      const product = row ? fromRow(row) : null;
      if (product) assertSameRequest(product.requestFingerprint, fingerprint);
      return product;
    };
    const first = await earlier();
    if (first) return first;
    const product: ProductEntity = {
      ...fields,
      id: randomUUID(),
      quantity,
      version: 1,
      requestId: requestId || null,
      requestFingerprint: requestId ? fingerprint : null,
      createdAt: now,
      updatedAt: now,
    };
    try {
      // One statement, so no transaction: the row and its event go in together or not at all.
      await preparedQuery(this.em, "inventory.insert-product", this.sql.insertProduct, [
        product.id,
        product.name,
        product.description,
        product.category,
        product.quantity,
        product.priceUnits,
        product.priceNanos,
        product.currencyCode,
        product.lowStockThreshold,
        product.version,
        product.requestId,
        product.requestFingerprint,
        now,
        ...this.events.appendValues([event(ProductEventType.CREATED, now, product)]),
      ]);
      return product;
    } catch (err) {
      if (isUniqueViolation(err)) {
        // A concurrent retry with the same request id won the race (whichever unique index
        // PostgreSQL checked first, name or request_id): answer with its result.
        const winner = await earlier();
        if (winner) return winner;
        throw nameTaken(fields.name);
      }
      throw err;
    }
  }

  /**
   * A page of products in one order, filtered: one prepared statement per combination of order, direction and
   * filters (48 at most, each named after its combination), answered without the ORM.
   */
  async list(q: ListProductsQuery): Promise<ProductEntity[]> {
    const { column } = ORDER_COLUMNS[q.order];
    const direction = q.descending ? "DESC" : "ASC";
    const values: unknown[] = [];
    const where: string[] = [];
    if (q.category) where.push(`category = $${values.push(q.category)}`);
    if (q.lowStockOnly) where.push("quantity <= low_stock_threshold");
    if (q.after) where.push(`(${column}, id) ${q.descending ? "<" : ">"} ($${values.push(q.after[0])}, $${values.push(q.after[1])})`);
    const text =
      `SELECT ${PRODUCT_COLUMNS} FROM "${SCHEMA}".products ${where.length ? `WHERE ${where.join(" AND ")} ` : ""}` +
      `ORDER BY ${column} ${direction}, id ${direction} LIMIT $${values.push(q.limit)}`;
    const name = `inventory.list.${column}.${direction}.${q.category ? "c" : ""}${q.lowStockOnly ? "l" : ""}${q.after ? "a" : ""}`;
    return (await preparedQuery(this.em, name, text, values)).map(fromRow);
  }

  positionOf(p: ProductEntity, order: ProductOrder): KeysetPosition {
    return [ORDER_COLUMNS[order].value(p), p.id];
  }

  /**
   * Words are matched as stemmed prefixes in name (weighted higher) and
   * description; a name that is merely similar (a typo) still matches, ranked lower.
   */
  async search(words: string[], raw: string, category: number, offset: number, limit: number): Promise<ProductEntity[]> {
    const tsquery = words.map((w) => `${w}:*`).join(" & ");
    return (await preparedQuery(this.em, "inventory.search", SEARCH_SQL, [raw, tsquery, category, limit, offset])).map(fromRow);
  }

  /**
   * Applies `change` to the product, locked, if its etag (when given) still matches: concurrent changes queue up
   * and each applies to the one before it. The write and its events are one statement sent with the COMMIT.
   */
  async update(id: string, etag: string, change: (p: ProductEntity) => void): Promise<ProductEntity> {
    const now = this.clock.now();
    try {
      return await this.changeLocked(id, etag, async (tx, product) => {
        const wasLow = isLowStock(product);
        change(product);
        Object.assign(product, { version: product.version + 1, updatedAt: now });
        const events = [event(ProductEventType.UPDATED, now, product)];
        const crossing = lowStockCrossing(wasLow, product);
        if (crossing) events.push(event(crossing, now, product));
        await commitWith(tx, "inventory.save-product", this.sql.saveProduct, [
          id,
          product.name,
          product.description,
          product.category,
          product.priceUnits,
          product.priceNanos,
          product.currencyCode,
          product.lowStockThreshold,
          now,
          ...this.events.appendValues(events),
        ]);
        return product;
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw nameTaken("");
      throw err;
    }
  }

  async delete(id: string, etag: string): Promise<void> {
    const now = this.clock.now();
    await this.changeLocked(id, etag, async (tx, product) => {
      await commitWith(tx, "inventory.delete-product", this.sql.deleteProduct, [id, ...this.events.appendValues([event(ProductEventType.DELETED, now, product)])]);
    });
  }

  /** `work` on product `id`, locked, in a sqlTransaction; NOT_FOUND when there is none, ABORTED when `etag` is stale. */
  private changeLocked<T>(id: string, etag: string, work: (tx: SqlTransaction, product: ProductEntity) => Promise<T>): Promise<T> {
    return retryTransaction(() =>
      sqlTransaction(this.em, async (tx) => {
        const [row] = await preparedQuery(tx, "inventory.lock-product", LOCK_PRODUCT, [id]);
        if (!row) throw notFound("product", id);
        const product = fromRow(row);
        assertEtag("product", product, etag);
        return work(tx, product);
      }),
    );
  }

  /**
   * Applies a stock movement exactly once per (product, request id). The product row is locked first, so
   * concurrent movements of one product queue up and a repeat of a request id finds the movement its first
   * attempt committed. A transaction of prepared statements: BEGIN, the lock with the earlier movement
   * (LOCK_FOR_MOVEMENT), then the update, the movement and its events in one statement sent with the COMMIT
   * (commitWith): the event log's lock is held for PostgreSQL's time alone.
   */
  async adjustStock(
    productId: string,
    delta: number,
    reason: string,
    requestId: string,
    fingerprint: string,
  ): Promise<{ product: ProductEntity; movement: StockMovementEntity; replayed: boolean }> {
    const now = this.clock.now();
    return retryTransaction(() =>
      sqlTransaction(this.em, async (tx) => {
        const [row] = await preparedQuery<Record<string, unknown>>(tx, "inventory.lock-for-movement", LOCK_FOR_MOVEMENT, [productId, requestId]);
        if (!row) throw notFound("product", productId);
        const product = fromRow(row);
        // The earlier movement comes from the snapshot taken before the lock's wait: when the product changed
        // meanwhile, a movement may have committed with it, and a new statement sees it.
        let earlier = row.earlier as Record<string, unknown> | null;
        if (row.seen_version !== product.version) {
          [earlier = null] = await preparedQuery(tx, "inventory.movement-by-request", MOVEMENT_BY_REQUEST, [productId, requestId]);
        }
        if (earlier) {
          const movement = movementFromRow(earlier);
          assertSameRequest(movement.requestFingerprint, fingerprint);
          return { product, movement, replayed: true };
        }
        const quantityAfter = product.quantity + delta;
        if (quantityAfter < 0) {
          throw failedPrecondition(
            "INSUFFICIENT_STOCK",
            `only ${product.quantity} unit(s) of product ${productId} in stock; cannot remove ${-delta}`,
            { type: "STOCK", subject: `products/${productId}`, description: `available quantity is ${product.quantity}` },
            { available_quantity: String(product.quantity), requested_delta: String(delta) },
          );
        }
        if (quantityAfter > INT32_MAX) {
          throw outOfRange("QUANTITY_TOO_LARGE", `quantity would exceed ${INT32_MAX}`, { max_quantity: String(INT32_MAX) });
        }
        const wasLow = isLowStock(product);
        // The row is locked: these are the values the statement below writes.
        Object.assign(product, { quantity: quantityAfter, version: product.version + 1, updatedAt: now });
        const movement: StockMovementEntity = {
          id: randomUUID(),
          productId,
          delta,
          quantityAfter,
          reason,
          requestId,
          requestFingerprint: fingerprint,
          createdAt: now,
        };
        const events = [event(ProductEventType.STOCK_ADJUSTED, now, product, movement)];
        const crossing = lowStockCrossing(wasLow, product);
        if (crossing) events.push(event(crossing, now, product));
        await commitWith(tx, "inventory.save-movement", this.sql.saveMovement, [
          productId,
          quantityAfter,
          now,
          movement.id,
          delta,
          reason,
          requestId,
          fingerprint,
          ...this.events.appendValues(events),
        ]);
        return { product, movement, replayed: false };
      }),
    );
  }

  async listMovements(productId: string, after: KeysetPosition | undefined, limit: number): Promise<StockMovementEntity[]> {
    const rows = await preparedQuery(this.em, `inventory.movements${after ? ".after" : ""}`, movementsSql(Boolean(after)), [productId, limit, ...(after ?? [])]);
    // No movements: an unknown product is NOT_FOUND (get), not an empty page.
    if (rows.length === 0) await this.get(productId);
    return rows.map(movementFromRow);
  }
}

function event(type: ProductEventType, now: Date, product: ProductEntity, movement?: StockMovementEntity): ProductEvent {
  return create(ProductEventSchema, {
    type,
    product: toProduct(product),
    movement: movement ? toStockMovement(movement) : undefined,
    eventTime: timestampFromDate(now),
  });
}

function lowStockCrossing(wasLow: boolean, product: ProductEntity): ProductEventType | undefined {
  const isLow = isLowStock(product);
  if (isLow === wasLow) return undefined;
  return isLow ? ProductEventType.LOW_STOCK : ProductEventType.RESTOCKED;
}

function nameTaken(name: string): ConnectError {
  return alreadyExists("product", name ? `a product named "${name}" already exists` : "a product with that name already exists", {
    field: "name",
  });
}
