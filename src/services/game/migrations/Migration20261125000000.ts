import { Migration } from "@mikro-orm/migrations";

/** Games with their moves, players' ratings, the matchmaking pool and the event log. */
export class Migration20261125000000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE TABLE "game".games (
      id uuid PRIMARY KEY,
      status text NOT NULL CHECK (status IN ('challenge', 'active', 'finished', 'aborted', 'declined')),
      result text CHECK (result IN ('x', 'o', 'draw')),
      end_reason text,
      x_id uuid NOT NULL,
      x_name text NOT NULL,
      o_id uuid NOT NULL,
      o_name text NOT NULL,
      challenger_id uuid,
      x_rating double precision NOT NULL DEFAULT 0,
      o_rating double precision NOT NULL DEFAULT 0,
      x_change double precision NOT NULL DEFAULT 0,
      o_change double precision NOT NULL DEFAULT 0,
      board text NOT NULL DEFAULT '.........',
      move_count int NOT NULL DEFAULT 0,
      turn_seconds int NOT NULL,
      turn_deadline timestamptz,
      rated boolean NOT NULL,
      draw_offered_by uuid,
      rematch_offered_by uuid,
      rematch_game_id uuid,
      request_id text NOT NULL DEFAULT '',
      version bigint NOT NULL DEFAULT 1,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL,
      ended_at timestamptz,
      CHECK (x_id <> o_id)
    )`);
    this.addSql(`CREATE INDEX games_by_x ON "game".games (x_id, created_at DESC, id DESC)`);
    this.addSql(`CREATE INDEX games_by_o ON "game".games (o_id, created_at DESC, id DESC)`);
    this.addSql(`CREATE INDEX games_due ON "game".games (turn_deadline) WHERE status = 'active'`);
    this.addSql(`CREATE UNIQUE INDEX games_request ON "game".games (challenger_id, request_id) WHERE request_id <> ''`);
    // The primary key makes "two moves with one number" impossible whatever the races.
    this.addSql(`CREATE TABLE "game".moves (
      game_id uuid NOT NULL REFERENCES "game".games (id) ON DELETE CASCADE,
      number int NOT NULL CHECK (number BETWEEN 1 AND 9),
      cell int NOT NULL CHECK (cell BETWEEN 0 AND 8),
      mark text NOT NULL CHECK (mark IN ('X', 'O')),
      user_id uuid NOT NULL,
      created_at timestamptz NOT NULL,
      PRIMARY KEY (game_id, number),
      UNIQUE (game_id, cell)
    )`);
    this.addSql(`CREATE TABLE "game".ratings (
      user_id uuid PRIMARY KEY,
      username text NOT NULL,
      rating double precision NOT NULL,
      deviation double precision NOT NULL,
      volatility double precision NOT NULL,
      games int NOT NULL DEFAULT 0,
      wins int NOT NULL DEFAULT 0,
      losses int NOT NULL DEFAULT 0,
      draws int NOT NULL DEFAULT 0,
      streak int NOT NULL DEFAULT 0,
      updated_at timestamptz NOT NULL
    )`);
    this.addSql(`CREATE INDEX ratings_board ON "game".ratings (rating DESC, user_id) WHERE games > 0`);
    // The matchmaking pool: one waiting ticket per player; seen_at (database time) is refreshed by the open stream.
    this.addSql(`CREATE TABLE "game".tickets (
      id uuid PRIMARY KEY,
      user_id uuid NOT NULL,
      username text NOT NULL,
      rating double precision NOT NULL,
      deviation double precision NOT NULL,
      turn_seconds int NOT NULL,
      status text NOT NULL CHECK (status IN ('searching', 'matched', 'cancelled')),
      game_id uuid,
      created_at timestamptz NOT NULL,
      seen_at timestamptz NOT NULL DEFAULT now()
    )`);
    this.addSql(`CREATE UNIQUE INDEX tickets_one_per_player ON "game".tickets (user_id) WHERE status = 'searching'`);
    this.addSql(`CREATE TABLE "game".events (
      id bigserial PRIMARY KEY,
      payload bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
  }
}
