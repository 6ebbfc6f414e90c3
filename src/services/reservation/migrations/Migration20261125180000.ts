import { Migration } from "@mikro-orm/migrations";

/** A request_id's request fingerprint: a repeat with another request is refused (platform/idempotency.ts). */
export class Migration20261125180000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`ALTER TABLE "reservation".resources ADD COLUMN request_fingerprint text`);
    this.addSql(`ALTER TABLE "reservation".reservations ADD COLUMN request_fingerprint text`);
  }
}
