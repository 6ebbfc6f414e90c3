import { Migration } from "@mikro-orm/migrations";

/** Rooms, members, invitations, conversations with their message logs, and presence. */
export class Migration20261121300000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE TABLE "chat".rooms (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      description text NOT NULL DEFAULT '',
      visibility text NOT NULL CHECK (visibility IN ('public', 'private')),
      owner_id uuid NOT NULL,
      created_at timestamptz NOT NULL
    )`);
    this.addSql(`CREATE INDEX rooms_public ON "chat".rooms (name, id) WHERE visibility = 'public'`);
    this.addSql(`CREATE TABLE "chat".members (
      room_id uuid NOT NULL REFERENCES "chat".rooms (id) ON DELETE CASCADE,
      user_id uuid NOT NULL,
      username text NOT NULL,
      joined_at timestamptz NOT NULL,
      PRIMARY KEY (room_id, user_id)
    )`);
    this.addSql(`CREATE INDEX members_by_user ON "chat".members (user_id)`);
    this.addSql(`CREATE TABLE "chat".invitations (
      room_id uuid NOT NULL REFERENCES "chat".rooms (id) ON DELETE CASCADE,
      user_id uuid NOT NULL,
      invited_by uuid NOT NULL,
      created_at timestamptz NOT NULL,
      PRIMARY KEY (room_id, user_id)
    )`);
    // A room's conversation has the room's id; a direct one is keyed by its two users (user_a < user_b).
    this.addSql(`CREATE TABLE "chat".conversations (
      id uuid PRIMARY KEY,
      kind text NOT NULL CHECK (kind IN ('room', 'direct')),
      user_a uuid,
      user_b uuid,
      last_sequence bigint NOT NULL DEFAULT 0,
      CHECK (kind = 'room' OR (user_a IS NOT NULL AND user_b IS NOT NULL AND user_a < user_b)),
      UNIQUE (user_a, user_b)
    )`);
    this.addSql(`CREATE TABLE "chat".messages (
      conversation_id uuid NOT NULL REFERENCES "chat".conversations (id) ON DELETE CASCADE,
      sequence bigint NOT NULL,
      id uuid NOT NULL UNIQUE,
      client_id text NOT NULL,
      sender_id uuid NOT NULL,
      sender_name text NOT NULL,
      kind smallint NOT NULL,
      text text NOT NULL,
      attachments jsonb NOT NULL DEFAULT '[]',
      recipient_id uuid,
      created_at timestamptz NOT NULL,
      PRIMARY KEY (conversation_id, sequence)
    )`);
    this.addSql(`CREATE UNIQUE INDEX messages_client_id ON "chat".messages (conversation_id, sender_id, client_id) WHERE client_id <> ''`);
    // One row per open stream; a session not seen for a while belongs to a crashed instance.
    this.addSql(`CREATE TABLE "chat".sessions (
      id uuid PRIMARY KEY,
      user_id uuid NOT NULL,
      username text NOT NULL,
      last_seen timestamptz NOT NULL
    )`);
    this.addSql(`CREATE INDEX sessions_by_user ON "chat".sessions (user_id)`);
    this.addSql(`CREATE TABLE "chat".user_status (
      user_id uuid PRIMARY KEY,
      username text NOT NULL,
      chosen text CHECK (chosen IN ('away', 'busy')),
      last_active timestamptz NOT NULL
    )`);
  }
}
