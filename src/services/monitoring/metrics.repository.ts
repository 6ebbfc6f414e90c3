import type { EntityManager } from "@mikro-orm/postgresql";
import { isUniqueViolation, lockForTransaction, preparedQuery, retryTransaction, transaction } from "../../platform/db.js";
import { quotaExceeded } from "../../platform/errors.js";

/** The service's PostgreSQL schema: its migrations create it; openServiceDatabase, the event log and every SQL statement name it from here. */
export const SCHEMA = "monitoring";

export type Labels = Record<string, string>;

/** A sample ready to store: its series named in full. */
export interface IncomingSample {
  host: string;
  metric: string;
  labels: Labels;
  timeMs: number;
  value: number;
  /** seriesKey(host, metric, labels), computed once per sample. */
  series: string;
}

export interface SeriesRow {
  id: string;
  host: string;
  metric: string;
  labels: Labels;
  last_time: Date | null;
  last_value: number | null;
}

export interface HostRow {
  name: string;
  first_report_at: Date;
  last_report_at: Date;
  series_count: string;
}

/** Raw samples or a rollup table, with the width of its buckets (0 for raw). */
export interface Resolution {
  table: "samples" | "rollups_minute" | "rollups_hour";
  bucketMs: number;
}

export const RAW: Resolution = { table: "samples", bucketMs: 0 };
export const MINUTE: Resolution = { table: "rollups_minute", bucketMs: 60_000 };
export const HOUR: Resolution = { table: "rollups_hour", bucketMs: 3_600_000 };

/** One step of one series as aggregated by PostgreSQL. */
export interface StepRow {
  series_id: string;
  step: string;
  count: string;
  min: number;
  max: number;
  sum: number;
}

/** JSON with sorted keys: one spelling per label set, for cache keys. Labels arrive sorted most of the time: then as they are. */
export function canonicalLabels(labels: Labels): string {
  const keys = Object.keys(labels);
  for (let i = 1; i < keys.length; i++) {
    // A replacer array writes the properties in its order (label values are strings: nothing nested).
    if (keys[i - 1]! > keys[i]!) return JSON.stringify(labels, keys.sort());
  }
  return JSON.stringify(labels);
}

export function seriesKey(host: string, metric: string, labels: Labels): string {
  return `${host}\u0000${metric}\u0000${canonicalLabels(labels)}`;
}

const SERIES_CACHE_LIMIT = 200_000;

/** Raw queries hand timestamps over as text (MikroORM's type parsers): make them Dates. */
export function withDates<R>(rows: R[], ...keys: (keyof R)[]): R[] {
  for (const row of rows) {
    for (const key of keys) if (row[key] !== null && row[key] !== undefined) row[key] = new Date(row[key] as string) as R[keyof R];
  }
  return rows;
}

/**
 * Hosts, series and samples. Every write of samples also folds them into the
 * per-minute and per-hour rollups in the same statement, so rollups always
 * agree with the raw samples they summarise, late arrivals included.
 */
export class MetricsRepository {
  /** Series ids by seriesKey: series are never renamed, so entries stay true. */
  private readonly seriesIds = new Map<string, string>();
  /** Until then, batches go straight to STORE_KNOWN_SQL: one of them met a sample stored before. */
  private duplicatesUntil = 0;

  constructor(private readonly em: EntityManager) {}

  private get db(): EntityManager {
    return this.em.fork();
  }

  /**
   * Stores samples and marks their hosts as reporting at `now`, in one
   * statement (so one transaction and one round trip): a plain INSERT, which
   * costs PostgreSQL about a third less per sample than ON CONFLICT DO NOTHING;
   * when it meets a sample stored before (unique violation, nothing written),
   * the batch goes again with ON CONFLICT, and so do the batches of the next
   * DUPLICATES_EXPECTED_MS, so an agent that keeps re-sending costs one failed
   * statement, not one per batch. Returns the positions
   * in `samples` of those not stored by it: stored before, or repeating an
   * earlier sample of `samples` (the first one carrying a sample stores it).
   * Usually none, so nothing comes back per stored sample. Columns go as arrays
   * rather than JSON: PostgreSQL reads them faster and they are half the bytes.
   */
  async store(samples: IncomingSample[], now: Date): Promise<Set<number>> {
    const ids = await this.resolveSeries(samples);
    const values = [
      `{${samples.map((s) => ids.get(s.series)!).join(",")}}`,
      `{${samples.map((s) => s.timeMs).join(",")}}`,
      `{${samples.map((s) => s.value).join(",")}}`,
      [...new Set(samples.map((s) => s.host))].sort(),
      now,
    ];
    const run = (known: boolean) =>
      retryTransaction(() => preparedQuery<{ n: string }>(this.em, `monitoring.store-samples${known ? "-known" : ""}`, known ? STORE_KNOWN_SQL : STORE_SQL, values));
    let notStored: { n: string }[];
    try {
      notStored = await run(Date.now() < this.duplicatesUntil);
    } catch (err) {
      // Only the plain INSERT fails on a stored sample.
      if (!isUniqueViolation(err)) throw err;
      this.duplicatesUntil = Date.now() + DUPLICATES_EXPECTED_MS;
      notStored = await run(true);
    }
    return new Set(notStored.map((r) => Number(r.n) - 1));
  }

  /**
   * Creates a report's new series, unless that would give its host more than
   * `max`: then none is created and the report is refused whole (QuotaFailure,
   * subject `host:<name>`), so an answered report is a stored one. Series this
   * instance already knows cost nothing: the database is asked only when the
   * report names a series missing from the cache, under the host's lock, so
   * parallel reports cannot pass the limit together.
   */
  async admitSeries(host: string, samples: IncomingSample[], max: number): Promise<void> {
    const unknown = new Map<string, { host: string; metric: string; labels: Labels }>();
    for (const s of samples) {
      if (!this.seriesIds.has(s.series)) unknown.set(s.series, { host: s.host, metric: s.metric, labels: s.labels });
    }
    if (unknown.size === 0) return;
    await transaction(this.em, async (tx) => {
      await lockForTransaction(tx, `monitoring.series.${host}`);
      // One snapshot: "existing" does not see the rows this statement inserts.
      const [row] = await tx.execute<{ created: number; existing: number }[]>(
        `WITH ins AS (
           INSERT INTO "${SCHEMA}".series (host, metric, labels)
           SELECT host, metric, labels FROM jsonb_to_recordset(?::jsonb) AS t(host text, metric text, labels jsonb)
           ORDER BY host, metric, labels::text
           ON CONFLICT DO NOTHING RETURNING 1
         )
         SELECT (SELECT count(*) FROM ins)::int AS created, (SELECT count(*) FROM "${SCHEMA}".series WHERE host = ?)::int AS existing`,
        [JSON.stringify([...unknown.values()]), host],
      );
      const { created, existing } = row!;
      if (created > 0 && existing + created > max) {
        throw quotaExceeded(
          `host:${host}`,
          `this report would give host ${host} ${existing + created} metric series, more than the ${max} one host may have (it has ${existing}): nothing of it was stored; report fewer distinct metric and label sets`,
          max,
        );
      }
    });
  }

  /** Ids of the samples' series, creating the new ones. */
  private async resolveSeries(samples: IncomingSample[]): Promise<Map<string, string>> {
    const ids = new Map<string, string>();
    const missing = new Map<string, { host: string; metric: string; labels: Labels }>();
    for (const s of samples) {
      const id = this.seriesIds.get(s.series);
      if (id) ids.set(s.series, id);
      else missing.set(s.series, { host: s.host, metric: s.metric, labels: s.labels });
    }
    // A series another transaction creates at the same moment is invisible to this
    // statement's snapshot and skipped by ON CONFLICT: the next round finds it.
    for (let round = 0; missing.size > 0; round++) {
      if (round === 3) throw new Error(`could not resolve ${missing.size} series`);
      const found = await this.db.execute<{ id: string; host: string; metric: string; labels: Labels }[]>(
        `WITH input AS (SELECT * FROM jsonb_to_recordset(?::jsonb) AS t(host text, metric text, labels jsonb)),
         ins AS (
           INSERT INTO "${SCHEMA}".series (host, metric, labels)
           SELECT host, metric, labels FROM input ORDER BY host, metric, labels::text
           ON CONFLICT DO NOTHING RETURNING id, host, metric, labels
         )
         SELECT id, host, metric, labels FROM ins
         UNION ALL
         SELECT s.id, s.host, s.metric, s.labels FROM "${SCHEMA}".series s
         JOIN input i ON s.host = i.host AND s.metric = i.metric AND s.labels = i.labels`,
        [JSON.stringify([...missing.values()])],
      );
      if (this.seriesIds.size > SERIES_CACHE_LIMIT) this.seriesIds.clear();
      for (const row of found) {
        const key = seriesKey(row.host, row.metric, row.labels);
        ids.set(key, row.id);
        this.seriesIds.set(key, row.id);
        missing.delete(key);
      }
    }
    return ids;
  }

  /** Series of `metric` carrying all of `labels` ("host" picks the host), by host and labels. */
  async matchSeries(metric: string, selector: Labels, limit: number, em: EntityManager = this.db): Promise<SeriesRow[]> {
    const { host, ...labels } = selector;
    const rows = await em.execute<SeriesRow[]>(
      `SELECT id, host, metric, labels, last_time, last_value FROM "${SCHEMA}".series
       WHERE metric = ? AND (?::text IS NULL OR host = ?) AND labels @> ?::jsonb
       ORDER BY host, labels::text LIMIT ?`,
      [metric, host ?? null, host ?? null, JSON.stringify(labels), limit],
    );
    return withDates(rows, "last_time");
  }

  /**
   * min, max, sum and count per step of `stepMs` from `startMs`, for the steps
   * in [startMs, endMs) that hold data. Rollup buckets must lie on the step grid.
   */
  async aggregate(resolution: Resolution, seriesIds: string[], startMs: number, endMs: number, stepMs: number): Promise<StepRow[]> {
    if (seriesIds.length === 0) return [];
    const [time, count, min, max, sum] =
      resolution === RAW ? ["time", "count(*)", "min(value)", "max(value)", "sum(value)"] : ["bucket", "sum(count)", "min(min)", "max(max)", "sum(sum)"];
    return this.db.execute<StepRow[]>(
      `SELECT series_id, floor((extract(epoch FROM ${time}) * 1000 - ?) / ?)::bigint AS step,
              ${count} AS count, ${min} AS min, ${max} AS max, ${sum} AS sum
       FROM "${SCHEMA}".${resolution.table}
       WHERE series_id = ANY(?::bigint[]) AND ${time} >= ? AND ${time} < ?
       GROUP BY 1, 2`,
      [startMs, stepMs, `{${seriesIds.join(",")}}`, new Date(startMs), new Date(endMs)],
    );
  }

  async listHosts(after: string | undefined, downBefore: Date, status: "up" | "down" | undefined, limit: number): Promise<HostRow[]> {
    const statusFilter = status === "up" ? "AND h.last_report_at >= ?" : status === "down" ? "AND h.last_report_at < ?" : "";
    const rows = await this.db.execute<HostRow[]>(
      `SELECT h.name, h.first_report_at, h.last_report_at,
              (SELECT count(*) FROM "${SCHEMA}".series s WHERE s.host = h.name) AS series_count
       FROM "${SCHEMA}".hosts h
       WHERE h.name > ? ${statusFilter}
       ORDER BY h.name LIMIT ?`,
      [after ?? "", ...(status ? [downBefore] : []), limit],
    );
    return withDates(rows, "first_report_at", "last_report_at");
  }

  async allHosts(em: EntityManager = this.db): Promise<{ name: string; last_report_at: Date }[]> {
    const rows = await em.execute<{ name: string; last_report_at: Date }[]>(`SELECT name, last_report_at FROM "${SCHEMA}".hosts ORDER BY name`);
    return withDates(rows, "last_report_at");
  }

  /** Drops data older than each resolution's cutoff, a bounded chunk at a time. */
  async prune(cutoffs: { raw: Date; minute: Date; hour: Date }): Promise<number> {
    let total = 0;
    for (const [table, column, before] of [
      ["samples", "time", cutoffs.raw],
      ["rollups_minute", "bucket", cutoffs.minute],
      ["rollups_hour", "bucket", cutoffs.hour],
    ] as const) {
      for (;;) {
        const [row] = await this.db.execute<{ n: number }[]>(
          `WITH gone AS (
             DELETE FROM "${SCHEMA}".${table} WHERE ctid IN (SELECT ctid FROM "${SCHEMA}".${table} WHERE ${column} < ? LIMIT 50000)
             RETURNING 1
           ) SELECT count(*)::int AS n FROM gone`,
          [before],
        );
        total += row?.n ?? 0;
        if ((row?.n ?? 0) < 50_000) break;
      }
    }
    return total;
  }
}

/**
 * Inserts samples (series ids, epoch milliseconds and values as three arrays:
 * $1-$3), folds them into the rollups, moves each series' latest value and
 * marks the hosts ($4) as reporting at $5. Rows are sorted before they are
 * written so concurrent writers take their locks in one order. Returns the
 * positions (from 1) of the samples it did not store: a repeat of an earlier
 * one in the arrays (the first one is the one written), or, when `known` (ON
 * CONFLICT DO NOTHING), one already stored; without it such a sample fails
 * the statement.
 */
const storeSql = (known: boolean) => `
  WITH given AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) WITH ORDINALITY AS t(series_id, ms, value, n)
  ), input AS (
    SELECT DISTINCT ON (series_id, ms) series_id, 'epoch'::timestamptz + ms * interval '1 millisecond' AS time, value, n
    FROM given ORDER BY series_id, ms, n
  ), ins AS (
    INSERT INTO "${SCHEMA}".samples (series_id, time, value) SELECT series_id, time, value FROM input
    ${known ? "ON CONFLICT DO NOTHING " : ""}RETURNING series_id, time, value
  ), minute AS (
    ${rollupUpsert("rollups_minute", "minute")}
  ), hour AS (
    ${rollupUpsert("rollups_hour", "hour")}
  ), latest AS (
    UPDATE "${SCHEMA}".series s SET last_time = l.time, last_value = l.value
    FROM (SELECT DISTINCT ON (series_id) series_id, time, value FROM ins ORDER BY series_id, time DESC) l
    WHERE s.id = l.series_id AND (s.last_time IS NULL OR s.last_time <= l.time)
  ), hosts AS (
    INSERT INTO "${SCHEMA}".hosts (name, first_report_at, last_report_at)
    SELECT h, $5, $5 FROM unnest($4::text[]) AS h ORDER BY h
    ON CONFLICT (name) DO UPDATE SET last_report_at = greatest("${SCHEMA}".hosts.last_report_at, excluded.last_report_at)
  )
  SELECT n FROM given EXCEPT SELECT input.n FROM input JOIN ins USING (series_id, time)`;

/** Every sample new, or the statement fails with a unique violation and writes nothing. */
const STORE_SQL = storeSql(false);
/** Samples stored before are skipped (and their positions returned). */
const STORE_KNOWN_SQL = storeSql(true);
/** How long batches are written with STORE_KNOWN_SQL after one met a sample stored before. */
const DUPLICATES_EXPECTED_MS = 10_000;

/** Folds the inserted rows (CTE "ins") into a rollup table's buckets. */
function rollupUpsert(table: string, unit: "minute" | "hour"): string {
  return `INSERT INTO "${SCHEMA}".${table} AS r (series_id, bucket, count, sum, min, max)
          SELECT series_id, date_trunc('${unit}', time, 'UTC'), count(*), sum(value), min(value), max(value)
          FROM ins GROUP BY 1, 2 ORDER BY 1, 2
          ON CONFLICT (series_id, bucket) DO UPDATE SET
            count = r.count + excluded.count, sum = r.sum + excluded.sum,
            min = least(r.min, excluded.min), max = greatest(r.max, excluded.max)`;
}
