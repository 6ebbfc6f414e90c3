import { Migration } from "@mikro-orm/migrations";

/**
 * A sender's client id is unique across all conversations, in one index: a message is stored in one
 * statement, and a client id reused (even by two racing sends, in different conversations) fails
 * that statement instead of needing a lock around a look-up.
 */
export class Migration20261125210000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`DROP INDEX "chat".messages_client_id`);
    this.addSql(`DROP INDEX "chat".messages_by_sender_client_id`);
    this.addSql(`CREATE UNIQUE INDEX messages_sender_client_id ON "chat".messages (sender_id, client_id) WHERE client_id <> ''`);
  }
}
