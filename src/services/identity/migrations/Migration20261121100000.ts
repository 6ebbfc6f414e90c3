import { Migration } from "@mikro-orm/migrations";

/** Users, refresh-token families and the login throttle. */
export class Migration20261121100000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE TABLE "identity".users (
      id uuid PRIMARY KEY,
      username text NOT NULL,
      display_name text NOT NULL,
      email text NOT NULL,
      password_hash text NOT NULL,
      role text NOT NULL CHECK (role IN ('user', 'admin')),
      disabled boolean NOT NULL DEFAULT false,
      version integer NOT NULL DEFAULT 1,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL
    )`);
    this.addSql(`CREATE UNIQUE INDEX users_username_key ON "identity".users (lower(username))`);
    this.addSql(`CREATE TABLE "identity".refresh_tokens (
      id uuid PRIMARY KEY,
      user_id uuid NOT NULL REFERENCES "identity".users (id) ON DELETE CASCADE,
      family_id uuid NOT NULL,
      token_hash text NOT NULL UNIQUE,
      created_at timestamptz NOT NULL,
      expires_at timestamptz NOT NULL,
      used_at timestamptz,
      revoked_at timestamptz
    )`);
    this.addSql(`CREATE INDEX refresh_tokens_family ON "identity".refresh_tokens (family_id)`);
    this.addSql(`CREATE INDEX refresh_tokens_user ON "identity".refresh_tokens (user_id)`);
    this.addSql(`CREATE TABLE "identity".login_throttle (
      key text PRIMARY KEY,
      window_start timestamptz NOT NULL,
      failures integer NOT NULL
    )`);
  }
}
