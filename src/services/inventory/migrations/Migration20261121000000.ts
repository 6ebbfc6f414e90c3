import { Migration } from "@mikro-orm/migrations";

/** Products, their stock movements and the event log behind WatchProducts. */
export class Migration20261121000000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE TABLE "inventory".products (
      id uuid PRIMARY KEY,
      name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
      description text NOT NULL DEFAULT '',
      category smallint NOT NULL CHECK (category > 0),
      quantity integer NOT NULL CHECK (quantity >= 0),
      price_units bigint NOT NULL CHECK (price_units >= 0),
      price_nanos integer NOT NULL CHECK (price_nanos BETWEEN 0 AND 999999999),
      currency_code text NOT NULL CHECK (currency_code ~ '^[A-Z]{3}$'),
      low_stock_threshold integer NOT NULL CHECK (low_stock_threshold >= 0),
      version integer NOT NULL DEFAULT 1,
      request_id text UNIQUE,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL,
      search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', name), 'A') || setweight(to_tsvector('english', description), 'B')
      ) STORED
    )`);
    this.addSql(`CREATE UNIQUE INDEX products_name_key ON "inventory".products (lower(name))`);
    this.addSql(`CREATE INDEX products_name_order ON "inventory".products (name, id)`);
    this.addSql(`CREATE INDEX products_quantity_order ON "inventory".products (quantity, id)`);
    this.addSql(`CREATE INDEX products_updated_order ON "inventory".products (updated_at, id)`);
    this.addSql(`CREATE INDEX products_category ON "inventory".products (category, name, id)`);
    this.addSql(`CREATE INDEX products_search ON "inventory".products USING gin (search)`);
    this.addSql(`CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public`);
    this.addSql(`CREATE INDEX products_name_trgm ON "inventory".products USING gin (name public.gin_trgm_ops)`);

    this.addSql(`CREATE TABLE "inventory".stock_movements (
      id uuid PRIMARY KEY,
      product_id uuid NOT NULL REFERENCES "inventory".products (id) ON DELETE CASCADE,
      delta integer NOT NULL CHECK (delta <> 0),
      quantity_after integer NOT NULL CHECK (quantity_after >= 0),
      reason text NOT NULL,
      request_id text NOT NULL,
      created_at timestamptz NOT NULL,
      UNIQUE (product_id, request_id)
    )`);
    this.addSql(`CREATE INDEX stock_movements_by_product ON "inventory".stock_movements (product_id, created_at DESC, id DESC)`);

    this.addSql(`CREATE TABLE "inventory".events (
      id bigserial PRIMARY KEY,
      payload bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
  }
}
