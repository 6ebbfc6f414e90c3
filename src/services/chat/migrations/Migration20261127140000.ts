import { Migration } from "@mikro-orm/migrations";

/** CreateRoom counts the rooms the owner has (its quota): without an index on owner_id, that read every room. */
export class Migration20261127140000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE INDEX rooms_by_owner ON "chat".rooms (owner_id)`);
  }
}
