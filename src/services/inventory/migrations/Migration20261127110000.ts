import { Migration } from "@mikro-orm/migrations";

/**
 * The products low on stock in each order ListProducts offers, as partial indexes: holding only those products, they
 * cost a stock change little, and a low-stock listing reads its page from one of them. Without them PostgreSQL can only
 * walk a whole order index (or the table) and test each product: `quantity <= low_stock_threshold` compares two
 * columns, which it estimates as a third of the products, so it expects a page soon. With 10 such products among
 * 20,000 it read all 20,000 for every page (docs/scaling.md).
 */
export class Migration20261127110000 extends Migration {
  override async up(): Promise<void> {
    for (const [name, column] of [["name", "name"], ["quantity", "quantity"], ["updated", "updated_at"]]) {
      this.addSql(`CREATE INDEX products_low_stock_by_${name} ON "inventory".products (${column}, id) WHERE quantity <= low_stock_threshold`);
    }
  }
}
