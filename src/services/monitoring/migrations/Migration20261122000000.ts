import { Migration } from "@mikro-orm/migrations";

/**
 * Hosts, series, raw samples and their per-minute and per-hour rollups; alert
 * rules, silences, alerts and the event log behind WatchAlerts.
 */
export class Migration20261122000000 extends Migration {
  override async up(): Promise<void> {
    this.addSql(`CREATE TABLE "monitoring".hosts (
      name text PRIMARY KEY,
      first_report_at timestamptz NOT NULL,
      last_report_at timestamptz NOT NULL
    )`);

    // One row per (host, metric, labels); labels never include "host". last_* feed alert evaluation.
    this.addSql(`CREATE TABLE "monitoring".series (
      id bigserial PRIMARY KEY,
      host text NOT NULL,
      metric text NOT NULL,
      labels jsonb NOT NULL,
      last_time timestamptz,
      last_value double precision,
      UNIQUE (host, metric, labels)
    )`);
    this.addSql(`CREATE INDEX series_by_metric ON "monitoring".series (metric, host)`);

    // One sample per series and time: a re-sent sample is recognised, not stored twice.
    this.addSql(`CREATE TABLE "monitoring".samples (
      series_id bigint NOT NULL,
      time timestamptz NOT NULL,
      value double precision NOT NULL,
      PRIMARY KEY (series_id, time)
    )`);
    this.addSql(`CREATE INDEX samples_by_time ON "monitoring".samples USING brin (time)`);
    for (const table of ["rollups_minute", "rollups_hour"]) {
      this.addSql(`CREATE TABLE "monitoring".${table} (
        series_id bigint NOT NULL,
        bucket timestamptz NOT NULL,
        count bigint NOT NULL,
        sum double precision NOT NULL,
        min double precision NOT NULL,
        max double precision NOT NULL,
        PRIMARY KEY (series_id, bucket)
      )`);
      this.addSql(`CREATE INDEX ${table}_by_bucket ON "monitoring".${table} USING brin (bucket)`);
    }

    this.addSql(`CREATE TABLE "monitoring".alert_rules (
      id uuid PRIMARY KEY,
      name text NOT NULL,
      metric text NOT NULL,
      label_selector jsonb NOT NULL,
      comparison smallint NOT NULL,
      threshold double precision NOT NULL,
      for_ms bigint NOT NULL,
      severity smallint NOT NULL,
      clear_threshold double precision,
      description text NOT NULL DEFAULT '',
      version integer NOT NULL DEFAULT 1,
      request_id text UNIQUE,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL
    )`);
    this.addSql(`CREATE INDEX alert_rules_by_name ON "monitoring".alert_rules (name, id)`);

    this.addSql(`CREATE TABLE "monitoring".silences (
      id uuid PRIMARY KEY,
      rule_id text NOT NULL DEFAULT '',
      host text NOT NULL DEFAULT '',
      labels jsonb NOT NULL,
      comment text NOT NULL DEFAULT '',
      expire_at timestamptz NOT NULL,
      created_by text NOT NULL,
      created_at timestamptz NOT NULL
    )`);
    this.addSql(`CREATE INDEX silences_by_expiry ON "monitoring".silences (expire_at)`);

    // source: the rule id, or 'host-down'; subject: the series id, or the host name.
    this.addSql(`CREATE TABLE "monitoring".alerts (
      id uuid PRIMARY KEY,
      kind smallint NOT NULL,
      source text NOT NULL,
      subject text NOT NULL,
      rule_id text NOT NULL DEFAULT '',
      name text NOT NULL,
      host text NOT NULL,
      metric text NOT NULL DEFAULT '',
      labels jsonb NOT NULL,
      state smallint NOT NULL,
      severity smallint NOT NULL,
      value double precision NOT NULL,
      threshold double precision NOT NULL,
      started_at timestamptz NOT NULL,
      fired_at timestamptz,
      resolved_at timestamptz,
      silenced boolean NOT NULL DEFAULT false,
      summary text NOT NULL
    )`);
    // However many instances evaluate: at most one open alert per rule and series.
    this.addSql(`CREATE UNIQUE INDEX alerts_one_open ON "monitoring".alerts (source, subject) WHERE state IN (1, 2)`);
    this.addSql(`CREATE INDEX alerts_by_start ON "monitoring".alerts (started_at DESC, id DESC)`);

    this.addSql(`CREATE TABLE "monitoring".events (
      id bigserial PRIMARY KEY,
      payload bytea NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`);
  }
}
