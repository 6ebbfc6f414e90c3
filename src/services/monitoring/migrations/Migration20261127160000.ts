import { Migration } from "@mikro-orm/migrations";

/**
 * One rule's and one host's alerts newest first, for ListAlerts filtered by either. Alerts are kept; with only
 * alerts_by_start, such a listing walked every alert of every rule and host to find a quiet host's few
 * (docs/scaling.md).
 */
export class Migration20261127160000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE INDEX alerts_by_rule ON "monitoring".alerts (rule_id, started_at DESC, id DESC)`);
    this.addSql(`CREATE INDEX alerts_by_host ON "monitoring".alerts (host, started_at DESC, id DESC)`);
  }
}
