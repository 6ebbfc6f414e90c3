import { Migration } from "@mikro-orm/migrations";

/** The storage quota sums the versions of all of one owner's files, deleted ones included. */
export class Migration20261125180000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE INDEX files_by_owner ON "files".files (owner_id)`);
  }
}
