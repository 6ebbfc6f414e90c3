import { Migration } from "@mikro-orm/migrations";

/**
 * Resources, reservations (with the exclusion constraint that makes double
 * booking impossible), notifications, slot interests and the event log behind
 * WatchNotifications.
 */
export class Migration20261121200000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public`);
    this.addSql(`CREATE TABLE "reservation".resources (
      id uuid PRIMARY KEY,
      name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
      type text NOT NULL,
      capacity integer NOT NULL CHECK (capacity > 0),
      location text NOT NULL DEFAULT '',
      description text NOT NULL DEFAULT '',
      active boolean NOT NULL,
      slot_minutes integer NOT NULL CHECK (slot_minutes BETWEEN 5 AND 1440 AND 1440 % slot_minutes = 0),
      requires_approval boolean NOT NULL,
      version integer NOT NULL DEFAULT 1,
      request_id text UNIQUE,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL
    )`);
    this.addSql(`CREATE INDEX resources_by_type ON "reservation".resources (type, name, id)`);
    this.addSql(`CREATE INDEX resources_by_name ON "reservation".resources (name, id)`);

    this.addSql(`CREATE TABLE "reservation".reservations (
      id uuid PRIMARY KEY,
      resource_id uuid NOT NULL REFERENCES "reservation".resources (id),
      user_id uuid NOT NULL,
      start_time timestamptz NOT NULL,
      end_time timestamptz NOT NULL,
      during tstzrange GENERATED ALWAYS AS (tstzrange(start_time, end_time, '[)')) STORED,
      party_size integer NOT NULL CHECK (party_size > 0),
      notes text NOT NULL DEFAULT '',
      status text NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled', 'rejected', 'expired')),
      request_id text NOT NULL,
      hold_expires_at timestamptz,
      reminder_sent_at timestamptz,
      version integer NOT NULL DEFAULT 1,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL,
      CHECK (end_time > start_time),
      UNIQUE (user_id, request_id),
      -- The rule itself: no two active reservations of one resource overlap.
      CONSTRAINT reservations_no_overlap EXCLUDE USING gist (resource_id WITH =, during WITH &&)
        WHERE (status IN ('pending', 'confirmed'))
    )`);
    this.addSql(`CREATE INDEX reservations_by_user ON "reservation".reservations (user_id, start_time, id)`);
    this.addSql(`CREATE INDEX reservations_by_start ON "reservation".reservations (start_time, id)`);
    this.addSql(`CREATE INDEX reservations_due_reminder ON "reservation".reservations (start_time)
      WHERE status = 'confirmed' AND reminder_sent_at IS NULL`);
    this.addSql(`CREATE INDEX reservations_holds ON "reservation".reservations (hold_expires_at) WHERE status = 'pending'`);

    this.addSql(`CREATE TABLE "reservation".notifications (
      id uuid PRIMARY KEY,
      user_id uuid NOT NULL,
      event_id bigint NOT NULL,
      type smallint NOT NULL,
      reservation_id uuid,
      resource_id uuid,
      start_time timestamptz,
      end_time timestamptz,
      message text NOT NULL,
      read boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL
    )`);
    this.addSql(`CREATE INDEX notifications_by_user ON "reservation".notifications (user_id, event_id DESC)`);
    // Backs up the sweeper: one reminder per reservation and start time (a rescheduled one is reminded again).
    this.addSql(`CREATE UNIQUE INDEX notifications_one_reminder ON "reservation".notifications (reservation_id, start_time) WHERE type = 5`);

    // Who to tell when a slot they could not book frees up.
    this.addSql(`CREATE TABLE "reservation".slot_interests (
      user_id uuid NOT NULL,
      resource_id uuid NOT NULL REFERENCES "reservation".resources (id),
      start_time timestamptz NOT NULL,
      end_time timestamptz NOT NULL,
      created_at timestamptz NOT NULL,
      PRIMARY KEY (user_id, resource_id, start_time, end_time)
    )`);
    this.addSql(`CREATE INDEX slot_interests_by_resource ON "reservation".slot_interests USING gist (resource_id, tstzrange(start_time, end_time, '[)'))`);

    this.addSql(`CREATE TABLE "reservation".events (
      id bigserial PRIMARY KEY,
      payload bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
  }
}
