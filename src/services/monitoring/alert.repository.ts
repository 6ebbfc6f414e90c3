import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { AlertEvent } from "../../../gen/agora/monitoring/v1/monitoring_pb.js";
import { notFound } from "../../platform/errors.js";
import type { EventLog } from "../../platform/event-log.js";
import { SCHEMA, withDates, type Labels } from "./metrics.repository.js";
import { assertEtag } from "../../platform/etag.js";
import { assertSameRequest } from "../../platform/idempotency.js";
import { lockForTransaction, transaction } from "../../platform/db.js";

export interface RuleFields {
  name: string;
  metric: string;
  labelSelector: Labels;
  comparison: number;
  threshold: number;
  forMs: number;
  severity: number;
  clearThreshold: number | null;
  description: string;
}

export interface RuleRow {
  id: string;
  name: string;
  metric: string;
  label_selector: Labels;
  comparison: number;
  threshold: number;
  for_ms: string;
  severity: number;
  clear_threshold: number | null;
  description: string;
  version: number;
  created_at: Date;
  updated_at: Date;
}

export interface SilenceRow {
  id: string;
  rule_id: string;
  host: string;
  labels: Labels;
  comment: string;
  expire_at: Date;
  created_by: string;
  created_at: Date;
}

export interface AlertRow {
  id: string;
  kind: number;
  /** The rule id, or HOST_DOWN_SOURCE. */
  source: string;
  /** The series id, or the host name for host-down alerts. */
  subject: string;
  rule_id: string;
  name: string;
  host: string;
  metric: string;
  labels: Labels;
  state: number;
  severity: number;
  value: number;
  threshold: number;
  started_at: Date;
  fired_at: Date | null;
  resolved_at: Date | null;
  silenced: boolean;
  summary: string;
}

export const HOST_DOWN_SOURCE = "host-down";


/** One lock for everything that opens or closes alerts: the evaluator and rule/host deletion take turns. */
export const EVALUATOR_LOCK = "agora.monitoring.evaluator";

export interface AlertQuery {
  states: number[];
  ruleId: string;
  host: string;
  minSeverity: number;
  after: [string, string] | undefined;
  limit: number;
}

/**
 * Alert rules, silences and alerts. Every alert state change is written with
 * its event in the same transaction, so ListAlerts and WatchAlerts agree.
 */
export class AlertRepository {
  constructor(
    private readonly em: EntityManager,
    private readonly events: EventLog<AlertEvent>,
    private readonly toEvent: (alert: AlertRow, previousState: number, now: Date) => AlertEvent,
  ) {}

  private get db(): EntityManager {
    return this.em.fork();
  }

  /** Runs `work` in a transaction holding the evaluator lock (waiting for it). */
  async exclusively<T>(work: (tx: EntityManager) => Promise<T>): Promise<T> {
    return transaction(this.em, async (tx) => {
      await lockForTransaction(tx, EVALUATOR_LOCK);
      return work(tx);
    });
  }

  /** Runs `work` in a transaction if the evaluator lock is free now; undefined if another instance holds it. */
  async ifFree<T>(work: (tx: EntityManager) => Promise<T>): Promise<T | undefined> {
    return transaction(this.em, async (tx) => {
      const [row] = await tx.execute<{ locked: boolean }[]>("SELECT pg_try_advisory_xact_lock(hashtext(?)) AS locked", [EVALUATOR_LOCK]);
      return row?.locked ? work(tx) : undefined;
    });
  }

  // Rules

  /** Creates a rule, or returns the one an earlier call with this request id (and the same request) created. */
  async createRule(fields: RuleFields, requestId: string, fingerprint: string, now: Date): Promise<RuleRow> {
    const [row] = await this.db.execute<RuleRow[]>(
      `INSERT INTO "${SCHEMA}".alert_rules
         (id, name, metric, label_selector, comparison, threshold, for_ms, severity, clear_threshold, description, request_id, request_fingerprint, created_at, updated_at)
       VALUES (?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (request_id) DO NOTHING RETURNING *`,
      [randomUUID(), ...ruleValues(fields), requestId || null, requestId ? fingerprint : null, now, now],
    );
    if (row) return row;
    const [first] = await this.db.execute<(RuleRow & { request_fingerprint: string | null })[]>(
      `SELECT * FROM "${SCHEMA}".alert_rules WHERE request_id = ?`,
      [requestId],
    );
    if (!first) throw new Error(`alert rule with request_id ${requestId} vanished`);
    assertSameRequest(first.request_fingerprint, fingerprint);
    return first;
  }

  async getRule(id: string, tx: EntityManager = this.db, lock = false): Promise<RuleRow> {
    const [row] = await tx.execute<RuleRow[]>(`SELECT * FROM "${SCHEMA}".alert_rules WHERE id = ? ${lock ? "FOR UPDATE" : ""}`, [id]);
    if (!row) throw notFound("alert rule", id);
    return row;
  }

  async listRules(metric: string, after: [string, string] | undefined, limit: number): Promise<RuleRow[]> {
    return this.db.execute<RuleRow[]>(
      `SELECT * FROM "${SCHEMA}".alert_rules
       WHERE (? = '' OR metric = ?) AND (?::text IS NULL OR (name, id) > (?::text, ?::uuid))
       ORDER BY name, id LIMIT ?`,
      [metric, metric, after?.[0] ?? null, after?.[0] ?? "", after?.[1] ?? "00000000-0000-0000-0000-000000000000", limit],
    );
  }

  async allRules(tx: EntityManager): Promise<RuleRow[]> {
    return tx.execute<RuleRow[]>(`SELECT * FROM "${SCHEMA}".alert_rules ORDER BY id`);
  }

  /** Applies `change` to the rule under a row lock; ABORTED when `etag` is given and stale. */
  async updateRule(id: string, etag: string, change: (current: RuleRow) => RuleFields, now: Date): Promise<RuleRow> {
    return transaction(this.em, async (tx) => {
      const current = await this.getRule(id, tx, true);
      assertEtag("alert rule", current, etag);
      const fields = change(current);
      const [row] = await tx.execute<RuleRow[]>(
        `UPDATE "${SCHEMA}".alert_rules SET name = ?, metric = ?, label_selector = ?::jsonb, comparison = ?, threshold = ?,
           for_ms = ?, severity = ?, clear_threshold = ?, description = ?, version = version + 1, updated_at = ?
         WHERE id = ? RETURNING *`,
        [...ruleValues(fields), now, id],
      );
      return row!;
    });
  }

  /** Deletes the rule and resolves its open alerts. */
  async deleteRule(id: string, etag: string, now: Date): Promise<void> {
    await this.exclusively(async (tx) => {
      const current = await this.getRule(id, tx, true);
      assertEtag("alert rule", current, etag);
      await tx.execute(`DELETE FROM "${SCHEMA}".alert_rules WHERE id = ?`, [id]);
      await this.resolveOpen(tx, `source = ?`, [id], now);
    });
  }

  /** Forgets a host and resolves its host-down alert; NOT_FOUND when unknown. */
  async deleteHost(name: string, now: Date): Promise<void> {
    await this.exclusively(async (tx) => {
      const [row] = await tx.execute<{ name: string }[]>(`DELETE FROM "${SCHEMA}".hosts WHERE name = ? RETURNING name`, [name]);
      if (!row) throw notFound("host", name);
      await this.resolveOpen(tx, `source = ? AND subject = ?`, [HOST_DOWN_SOURCE, name], now);
    });
  }

  private async resolveOpen(tx: EntityManager, where: string, params: unknown[], now: Date): Promise<void> {
    const open = alertDates(await tx.execute<AlertRow[]>(`SELECT * FROM "${SCHEMA}".alerts WHERE state IN (1, 2) AND ${where}`, params));
    await this.apply(tx, open.map((a) => ({ alert: { ...a, state: RESOLVED, resolved_at: now }, previousState: a.state })), now);
  }

  // Silences

  async createSilence(s: Omit<SilenceRow, "id" | "created_at">, now: Date): Promise<SilenceRow> {
    const [row] = await this.db.execute<SilenceRow[]>(
      `INSERT INTO "${SCHEMA}".silences (id, rule_id, host, labels, comment, expire_at, created_by, created_at)
       VALUES (?, ?, ?, ?::jsonb, ?, ?, ?, ?) RETURNING *`,
      [randomUUID(), s.rule_id, s.host, JSON.stringify(s.labels), s.comment, s.expire_at, s.created_by, now],
    );
    return row!;
  }

  async listSilences(includeExpired: boolean, now: Date, after: [string, string] | undefined, limit: number): Promise<SilenceRow[]> {
    return this.db.execute<SilenceRow[]>(
      `SELECT * FROM "${SCHEMA}".silences
       WHERE (? OR expire_at > ?) AND (?::text IS NULL OR (created_at, id) < (?::timestamptz, ?::uuid))
       ORDER BY created_at DESC, id DESC LIMIT ?`,
      [includeExpired, now, after?.[0] ?? null, after?.[0] ?? now, after?.[1] ?? "00000000-0000-0000-0000-000000000000", limit],
    );
  }

  async activeSilences(tx: EntityManager, now: Date): Promise<SilenceRow[]> {
    return tx.execute<SilenceRow[]>(`SELECT * FROM "${SCHEMA}".silences WHERE expire_at > ?`, [now]);
  }

  /** Ends a silence now (kept for the record); NOT_FOUND when unknown. */
  async expireSilence(id: string, now: Date): Promise<void> {
    const rows = await this.db.execute<{ id: string }[]>(
      `UPDATE "${SCHEMA}".silences SET expire_at = least(expire_at, ?) WHERE id = ? RETURNING id`,
      [now, id],
    );
    if (rows.length === 0) throw notFound("silence", id);
  }

  // Alerts

  async openAlerts(tx: EntityManager): Promise<AlertRow[]> {
    return alertDates(await tx.execute<AlertRow[]>(`SELECT * FROM "${SCHEMA}".alerts WHERE state IN (1, 2)`));
  }

  async listAlerts(q: AlertQuery): Promise<AlertRow[]> {
    const rows = await this.db.execute<AlertRow[]>(
      `SELECT * FROM "${SCHEMA}".alerts
       WHERE (cardinality(?::smallint[]) = 0 OR state = ANY(?::smallint[]))
         AND (? = '' OR rule_id = ?) AND (? = '' OR host = ?) AND severity >= ?
         AND (?::text IS NULL OR (started_at, id) < (?::timestamptz, ?::uuid))
       ORDER BY started_at DESC, id DESC LIMIT ?`,
      [
        `{${q.states.join(",")}}`,
        `{${q.states.join(",")}}`,
        q.ruleId,
        q.ruleId,
        q.host,
        q.host,
        q.minSeverity,
        q.after?.[0] ?? null,
        q.after?.[0] ?? new Date(),
        q.after?.[1] ?? "00000000-0000-0000-0000-000000000000",
        q.limit,
      ],
    );
    return alertDates(rows);
  }

  /** Writes state changes (new alerts are inserted) and their events, inside `tx`. */
  async apply(tx: EntityManager, changes: { alert: AlertRow; previousState: number }[], now: Date): Promise<void> {
    if (changes.length === 0) return;
    for (const { alert: a, previousState } of changes) {
      if (previousState === UNSPECIFIED) {
        await tx.execute(
          `INSERT INTO "${SCHEMA}".alerts (id, kind, source, subject, rule_id, name, host, metric, labels, state, severity, value,
             threshold, started_at, fired_at, resolved_at, silenced, summary)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?::jsonb, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          [a.id, a.kind, a.source, a.subject, a.rule_id, a.name, a.host, a.metric, JSON.stringify(a.labels), a.state, a.severity,
            a.value, a.threshold, a.started_at, a.fired_at, a.resolved_at, a.silenced, a.summary],
        );
      } else {
        await this.update(tx, a);
      }
    }
    // The event log's lock is taken last, so it never closes a lock cycle.
    await this.events.append(
      tx,
      changes.map((c) => this.toEvent(c.alert, c.previousState, now)),
    );
  }

  /** Updates an open alert's state, value and silence flag (no event: for changes that are not transitions too). */
  async update(tx: EntityManager, a: AlertRow): Promise<void> {
    await tx.execute(
      `UPDATE "${SCHEMA}".alerts SET state = ?, value = ?, fired_at = ?, resolved_at = ?, silenced = ?, summary = ? WHERE id = ?`,
      [a.state, a.value, a.fired_at, a.resolved_at, a.silenced, a.summary, a.id],
    );
  }
}

export const UNSPECIFIED = 0;
export const PENDING = 1;
export const FIRING = 2;
export const RESOLVED = 3;

const alertDates = (rows: AlertRow[]) => withDates(rows, "started_at", "fired_at", "resolved_at");


function ruleValues(f: RuleFields): unknown[] {
  return [f.name, f.metric, JSON.stringify(f.labelSelector), f.comparison, f.threshold, f.forMs, f.severity, f.clearThreshold, f.description];
}
