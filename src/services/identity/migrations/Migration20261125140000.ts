import { Migration } from "@mikro-orm/migrations";

/** The login throttle's per-account delay: when the account's next sign-in attempt may be checked. */
export class Migration20261125140000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`ALTER TABLE "identity".login_throttle ADD COLUMN next_at timestamptz NOT NULL DEFAULT '-infinity'`);
  }
}
