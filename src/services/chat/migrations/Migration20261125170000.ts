import { Migration } from "@mikro-orm/migrations";

/** A sender's client ids are looked up across conversations (a client id reused for another message is refused). */
export class Migration20261125170000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE INDEX messages_by_sender_client_id ON "chat".messages (sender_id, client_id) WHERE client_id <> ''`);
  }
}
