import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  AlertEventSchema,
  AlertRuleSchema,
  AlertSchema,
  HostSchema,
  HostStatus,
  SilenceSchema,
  type Alert,
  type AlertEvent,
  type AlertRule,
  type Host,
  type Silence,
} from "../../../gen/agora/monitoring/v1/monitoring_pb.js";
import { type AlertRow, type RuleFields, type RuleRow, type SilenceRow } from "./alert.repository.js";
import type { HostRow } from "./metrics.repository.js";
import { etagOf } from "../../platform/etag.js";

const ts = (d: Date | null | undefined) => (d ? timestampFromDate(new Date(d)) : undefined);

export function toHost(h: HostRow, downBefore: Date): Host {
  return create(HostSchema, {
    name: h.name,
    status: h.last_report_at < downBefore ? HostStatus.DOWN : HostStatus.UP,
    lastReportTime: ts(h.last_report_at),
    firstReportTime: ts(h.first_report_at),
    seriesCount: BigInt(h.series_count),
  });
}

export function toRule(r: RuleRow): AlertRule {
  return create(AlertRuleSchema, {
    id: r.id,
    name: r.name,
    metric: r.metric,
    labelSelector: r.label_selector,
    comparison: r.comparison,
    threshold: r.threshold,
    forDuration: durationFromMs(Number(r.for_ms)),
    severity: r.severity,
    clearThreshold: r.clear_threshold ?? undefined,
    description: r.description,
    etag: etagOf(r),
    createTime: ts(r.created_at),
    updateTime: ts(r.updated_at),
  });
}

/** The stored fields of a rule message (already validated). */
export function ruleFields(r: AlertRule): RuleFields {
  return {
    name: r.name,
    metric: r.metric,
    labelSelector: { ...r.labelSelector },
    comparison: r.comparison,
    threshold: r.threshold,
    forMs: r.forDuration ? durationMs(r.forDuration) : 0,
    severity: r.severity,
    clearThreshold: r.clearThreshold ?? null,
    description: r.description,
  };
}

export function toSilence(s: SilenceRow): Silence {
  return create(SilenceSchema, {
    id: s.id,
    ruleId: s.rule_id,
    host: s.host,
    labels: s.labels,
    comment: s.comment,
    expireTime: ts(s.expire_at),
    createTime: ts(s.created_at),
    createdBy: s.created_by,
  });
}

export function toAlert(a: AlertRow): Alert {
  return create(AlertSchema, {
    id: a.id,
    kind: a.kind,
    ruleId: a.rule_id,
    name: a.name,
    host: a.host,
    metric: a.metric,
    labels: a.labels,
    state: a.state,
    severity: a.severity,
    value: a.value,
    threshold: a.threshold,
    startTime: ts(a.started_at),
    fireTime: ts(a.fired_at),
    resolveTime: ts(a.resolved_at),
    silenced: a.silenced,
    summary: a.summary,
  });
}

export function toAlertEvent(a: AlertRow, previousState: number, now: Date): AlertEvent {
  return create(AlertEventSchema, { alert: toAlert(a), previousState, time: ts(now) });
}
