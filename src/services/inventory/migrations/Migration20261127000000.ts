import { Migration } from "@mikro-orm/migrations";

/**
 * SearchProducts as a function that looks products up through their indexes. Left to choose, PostgreSQL read every
 * product and computed the trigram similarity of each name (its cost model counts that function as one operator):
 * 5 ms per search at 2,000 products and 90-160 ms at 50,000, against 2 and 8-36 ms through products_search and
 * products_name_trgm (docs/performance.md, Catalog). The function's setting holds for its own statement only.
 * pg_trgm's `%` finds the names more similar than pg_trgm.similarity_threshold (0.3 unless the database says
 * otherwise) through the index; the similarity test after it keeps the answer the same whatever that setting.
 */
export class Migration20261127000000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE FUNCTION "inventory".search_products(query text, words tsquery, in_category smallint, max_rows integer, skip integer)
      RETURNS TABLE (id uuid, name text, description text, category smallint, quantity integer, price_units bigint, price_nanos integer,
                     currency_code text, low_stock_threshold integer, version integer, request_id text, created_at timestamptz,
                     updated_at timestamptz, score real)
      LANGUAGE sql STABLE
      SET enable_seqscan = off
    AS $$
      SELECT p.id, p.name, p.description, p.category, p.quantity, p.price_units, p.price_nanos, p.currency_code,
             p.low_stock_threshold, p.version, p.request_id, p.created_at, p.updated_at,
             ts_rank_cd(p.search, words) + public.similarity(p.name, query)
        FROM "inventory".products p
       WHERE (p.search @@ words OR (p.name OPERATOR(public.%) query AND public.similarity(p.name, query) > 0.3))
         AND (in_category = 0 OR p.category = in_category)
       ORDER BY 14 DESC, p.name, p.id
       LIMIT max_rows OFFSET skip
    $$`);
  }
}
