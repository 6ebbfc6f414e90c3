import { Migration } from "@mikro-orm/migrations";

/**
 * A user's direct conversations are found by either side: `user_a = $1 OR user_b = $1`, read whenever a chat stream
 * opens. Only (user_a, user_b) was indexed, so PostgreSQL read every conversation of every user to find those where
 * the user is user_b: 6.8 ms per stream at 50,000 conversations, 0.09 with this index (docs/scaling.md).
 */
export class Migration20261127120000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE INDEX conversations_direct_by_user_b ON "chat".conversations (user_b) WHERE kind = 'direct'`);
  }
}
