import { Migration } from "@mikro-orm/migrations";

/**
 * A user's files in path order, for ListFiles: (owner_id, path, id) replaces files_by_owner (owner_id), whose
 * lookups it also serves, so a page of the caller's own files is read in order instead of sorting all of them.
 */
export class Migration20261127130000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE INDEX files_by_owner_path ON "files".files (owner_id, path, id)`);
    this.addSql(`DROP INDEX "files".files_by_owner`);
  }
}
