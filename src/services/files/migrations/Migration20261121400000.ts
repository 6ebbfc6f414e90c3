import { Migration } from "@mikro-orm/migrations";

/** Files, their versions (content by SHA-256), shares, unary uploads in progress and the event log. */
export class Migration20261121400000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE TABLE "files".files (
      id uuid PRIMARY KEY,
      owner_id uuid NOT NULL,
      path text NOT NULL CHECK (char_length(path) BETWEEN 1 AND 1024),
      latest_version bigint NOT NULL,
      size bigint NOT NULL,
      sha256 text NOT NULL,
      deleted_at timestamptz,
      lock_holder_id uuid,
      lock_holder_name text,
      lock_token text,
      lock_expires_at timestamptz,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL
    )`);
    // One live file per path in a user's space; deleted ones keep their path until purged.
    this.addSql(`CREATE UNIQUE INDEX files_path ON "files".files (owner_id, path) WHERE deleted_at IS NULL`);
    this.addSql(`CREATE INDEX files_deleted ON "files".files (deleted_at) WHERE deleted_at IS NOT NULL`);
    this.addSql(`CREATE TABLE "files".versions (
      file_id uuid NOT NULL REFERENCES "files".files (id) ON DELETE CASCADE,
      version bigint NOT NULL,
      size bigint NOT NULL,
      sha256 text NOT NULL,
      author_id uuid NOT NULL,
      author_name text NOT NULL,
      comment text NOT NULL DEFAULT '',
      restored_from bigint NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL,
      PRIMARY KEY (file_id, version)
    )`);
    this.addSql(`CREATE INDEX versions_by_sha ON "files".versions (sha256)`);
    this.addSql(`CREATE TABLE "files".shares (
      file_id uuid NOT NULL REFERENCES "files".files (id) ON DELETE CASCADE,
      user_id uuid NOT NULL,
      role text NOT NULL CHECK (role IN ('reader', 'editor')),
      PRIMARY KEY (file_id, user_id)
    )`);
    this.addSql(`CREATE INDEX shares_by_user ON "files".shares (user_id)`);
    this.addSql(`CREATE TABLE "files".uploads (
      id uuid PRIMARY KEY,
      user_id uuid NOT NULL,
      username text NOT NULL,
      metadata bytea NOT NULL,
      received bigint NOT NULL DEFAULT 0,
      expires_at timestamptz NOT NULL,
      created_at timestamptz NOT NULL
    )`);
    this.addSql(`CREATE TABLE "files".events (
      id bigserial PRIMARY KEY,
      payload bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
  }
}
