import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs, timestampDate, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AlertRuleSchema,
  CreateAlertRuleRequestSchema,
  HostStatus,
  MonitoringService,
  PointSchema,
  Resolution as ResolutionEnum,
  SeriesSchema,
  WatchAlertsResponseSchema,
  type AlertEvent,
  type AlertRule,
  type Point,
  type Sample,
} from "../../../gen/agora/monitoring/v1/monitoring_pb.js";
import type { MonitoringConfig } from "../../config.js";
import { callerOf } from "../../platform/auth.js";
import type { Clock } from "../../platform/clock.js";
import { invalidArgument, type FieldViolation } from "../../platform/errors.js";
import type { EventLog } from "../../platform/event-log.js";
import { fingerprint, isKeyset, isStringPosition, pageSize, type PageTokens } from "../../platform/paging.js";
import { assertUpdateMask, assertValid } from "../../platform/validation.js";
import { requestFingerprint } from "../../platform/idempotency.js";
import type { AlertRepository, RuleRow } from "./alert.repository.js";
import type { IngestResult, Ingestor } from "./ingest.js";
import { HOUR, MINUTE, RAW, seriesKey, type IncomingSample, type MetricsRepository, type Resolution } from "./metrics.repository.js";
import { ruleFields, toAlert, toHost, toRule, toSilence } from "./monitoring.mapper.js";

const MAX_STEPS = 11_000;
const MAX_SERIES = 1000;
const MAX_POINTS = 500_000;
const MAX_SILENCE_MS = 366 * 86_400_000;
/** update_mask paths and the rule fields they name. */
const UPDATABLE: Record<string, keyof AlertRule> = {
  name: "name",
  metric: "metric",
  label_selector: "labelSelector",
  comparison: "comparison",
  threshold: "threshold",
  for_duration: "forDuration",
  severity: "severity",
  clear_threshold: "clearThreshold",
  description: "description",
};

/** Raw, per-minute and per-hour data, finest first, with the enum that names each. */
const RESOLUTIONS: { data: Resolution; name: ResolutionEnum }[] = [
  { data: RAW, name: ResolutionEnum.RAW },
  { data: MINUTE, name: ResolutionEnum.MINUTE },
  { data: HOUR, name: ResolutionEnum.HOUR },
];

export interface MonitoringDeps {
  pageTokens: PageTokens;
  metrics: MetricsRepository;
  alerts: AlertRepository;
  ingestor: Ingestor;
  events: EventLog<AlertEvent>;
  config: MonitoringConfig;
  clock: Clock;
}

/** Where query steps start and how long they are, and which data answers them. */
export interface Grid {
  resolution: (typeof RESOLUTIONS)[number];
  startMs: number;
  stepMs: number;
}

/**
 * Picks the data for a query. Automatic: the coarsest data whose buckets lie on
 * the query's grid (rollups answer exactly what raw samples would, only faster),
 * moving to coarser data when the range starts before finer data's retention.
 * Rollup grids are snapped to whole buckets.
 */
export function chooseGrid(requested: ResolutionEnum, startMs: number, stepMs: number, cutoffs: number[]): Grid {
  let index: number;
  if (requested !== ResolutionEnum.UNSPECIFIED) {
    index = RESOLUTIONS.findIndex((r) => r.name === requested);
  } else {
    index = 0;
    for (let i = RESOLUTIONS.length - 1; i > 0; i--) {
      const bucket = RESOLUTIONS[i]!.data.bucketMs;
      if (stepMs % bucket === 0 && startMs % bucket === 0) {
        index = i;
        break;
      }
    }
    while (index < RESOLUTIONS.length - 1 && startMs < cutoffs[index]!) index++;
  }
  const resolution = RESOLUTIONS[index]!;
  const bucket = resolution.data.bucketMs;
  if (bucket === 0) return { resolution, startMs, stepMs };
  return { resolution, startMs: Math.floor(startMs / bucket) * bucket, stepMs: Math.ceil(stepMs / bucket) * bucket };
}

export function monitoringHandlers(d: MonitoringDeps): ServiceImpl<typeof MonitoringService> {
  const pages = d.pageTokens;
  const hostDownMs = d.config.hostDownSeconds * 1000;

  /** Checks a report, admits its new series (the per-host quota) and stores it with the reports arriving meanwhile. */
  async function ingest(host: string, samples: Sample[]): Promise<IngestResult> {
    const rows = incoming(host, samples);
    await d.metrics.admitSeries(host, rows, d.config.maxSeriesPerHost);
    return d.ingestor.submit(rows);
  }

  /** Samples as stored, or INVALID_ARGUMENT naming every sample timed too far ahead. */
  function incoming(host: string, samples: Sample[]): IncomingSample[] {
    const latest = d.clock.now().getTime() + d.config.maxFutureSeconds * 1000;
    const violations: FieldViolation[] = [];
    const rows = samples.map((s, i) => {
      const timeMs = timestampMs(s.time!);
      if (timeMs > latest) {
        violations.push({
          field: `samples[${i}].time`,
          description: `is more than ${d.config.maxFutureSeconds} s ahead of the server's clock (${new Date(latest).toISOString()})`,
          reason: "TIME_IN_FUTURE",
        });
      }
      const labels = { ...s.labels };
      return { host, metric: s.metric, labels, timeMs: Math.floor(timeMs), value: s.value, series: seriesKey(host, s.metric, labels) };
    });
    if (violations.length > 0) throw invalidArgument(violations.slice(0, 20));
    return rows;
  }

  const totals = (r: IngestResult) => ({ acceptedSamples: BigInt(r.accepted), duplicateSamples: BigInt(r.duplicates) });

  return {
    async reportMetrics(requests) {
      let messages = 0n;
      const sum: IngestResult = { accepted: 0, duplicates: 0 };
      for await (const req of requests) {
        const result = await ingest(req.host, req.samples);
        sum.accepted += result.accepted;
        sum.duplicates += result.duplicates;
        messages++;
      }
      return { ...totals(sum), messages };
    },

    async reportMetricsBatch(req) {
      return totals(await ingest(req.host, req.samples));
    },

    async listHosts(req) {
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("hosts", req.status);
      const downBefore = new Date(d.clock.now().getTime() - hostDownMs);
      const status = req.status === HostStatus.UP ? "up" : req.status === HostStatus.DOWN ? "down" : undefined;
      const rows = await d.metrics.listHosts(pages.decode(req.pageToken, filters, isStringPosition), downBefore, status, limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => last.name);
      return { hosts: page.map((h) => toHost(h, downBefore)), nextPageToken };
    },

    async deleteHost(req) {
      await d.alerts.deleteHost(req.name, d.clock.now());
      return {};
    },

    async queryMetrics(req) {
      const now = d.clock.now().getTime();
      const { rawRetentionHours, minuteRetentionDays } = d.config;
      const grid = chooseGrid(req.resolution, timestampMs(req.startTime!), durationMs(req.step!), [
        now - rawRetentionHours * 3_600_000,
        now - minuteRetentionDays * 86_400_000,
      ]);
      const steps = Math.ceil((timestampMs(req.endTime!) - grid.startMs) / grid.stepMs);
      if (steps > MAX_STEPS) {
        throw invalidArgument([
          { field: "step", description: `gives ${steps} steps over this range; at most ${MAX_STEPS}: use a longer step or a shorter range`, reason: "TOO_MANY_STEPS" },
        ]);
      }
      const selector = { ...req.labels, ...(req.host ? { host: req.host } : {}) };
      const series = await d.metrics.matchSeries(req.metric, selector, MAX_SERIES + 1);
      if (series.length > MAX_SERIES || series.length * steps > MAX_POINTS) {
        throw invalidArgument([
          { field: "labels", description: `${series.length > MAX_SERIES ? "over " + MAX_SERIES : series.length} series match; narrow the query with host or labels`, reason: "TOO_MANY_SERIES" },
        ]);
      }
      const rows = await d.metrics.aggregate(
        grid.resolution.data,
        series.map((s) => s.id),
        grid.startMs,
        grid.startMs + steps * grid.stepMs,
        grid.stepMs,
      );
      const byStep = new Map(rows.map((r) => [`${r.series_id}:${r.step}`, r]));
      return {
        resolution: grid.resolution.name,
        startTime: timestampFromMs(grid.startMs),
        step: durationFromMs(grid.stepMs),
        series: series.map((s) =>
          create(SeriesSchema, {
            host: s.host,
            metric: s.metric,
            labels: s.labels,
            points: Array.from({ length: steps }, (_, i): Point => {
              const time = timestampFromMs(grid.startMs + i * grid.stepMs);
              const row = byStep.get(`${s.id}:${i}`);
              if (!row) return create(PointSchema, { time, count: 0n });
              const count = Number(row.count);
              return create(PointSchema, { time, count: BigInt(count), min: row.min, avg: row.sum / count, max: row.max });
            }),
          }),
        ),
      };
    },

    async createAlertRule(req) {
      return { rule: toRule(await d.alerts.createRule(ruleFields(req.rule!), req.requestId, requestFingerprint(CreateAlertRuleRequestSchema, req), d.clock.now())) };
    },

    async getAlertRule(req) {
      return { rule: toRule(await d.alerts.getRule(req.id)) };
    },

    async listAlertRules(req) {
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("rules", req.metric);
      const rows = await d.alerts.listRules(req.metric, pages.decode(req.pageToken, filters, isKeyset), limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [last.name, last.id]);
      return { rules: page.map(toRule), nextPageToken };
    },

    async updateAlertRule(req) {
      const paths = req.updateMask!.paths;
      assertUpdateMask(paths, Object.keys(UPDATABLE));
      const change = req.rule ?? create(AlertRuleSchema);
      const rule = await d.alerts.updateRule(req.id, req.etag, (current: RuleRow) => {
        const merged: AlertRule = toRule(current);
        for (const path of paths) Object.assign(merged, { [UPDATABLE[path]!]: change[UPDATABLE[path]!] });
        assertValid(AlertRuleSchema, merged, "rule.");
        return ruleFields(merged);
      }, d.clock.now());
      return { rule: toRule(rule) };
    },

    async deleteAlertRule(req) {
      await d.alerts.deleteRule(req.id, req.etag, d.clock.now());
      return {};
    },

    async createSilence(req, ctx) {
      const caller = callerOf(ctx);
      const s = req.silence!;
      const now = d.clock.now();
      const expireAt = timestampDate(s.expireTime!);
      if (expireAt <= now || expireAt.getTime() - now.getTime() > MAX_SILENCE_MS) {
        throw invalidArgument([{ field: "silence.expire_time", description: "must be in the future and at most a year ahead", reason: "OUT_OF_RANGE" }]);
      }
      const row = await d.alerts.createSilence(
        { rule_id: s.ruleId, host: s.host, labels: { ...s.labels }, comment: s.comment, expire_at: expireAt, created_by: caller.username },
        now,
      );
      return { silence: toSilence(row) };
    },

    async listSilences(req) {
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("silences", req.includeExpired);
      const rows = await d.alerts.listSilences(req.includeExpired, d.clock.now(), pages.decode(req.pageToken, filters, isKeyset), limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [new Date(last.created_at).toISOString(), last.id]);
      return { silences: page.map(toSilence), nextPageToken };
    },

    async deleteSilence(req) {
      await d.alerts.expireSilence(req.id, d.clock.now());
      return {};
    },

    async listAlerts(req) {
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("alerts", req.states, req.ruleId, req.host, req.minSeverity);
      const rows = await d.alerts.listAlerts({
        states: [...new Set(req.states)],
        ruleId: req.ruleId,
        host: req.host,
        minSeverity: req.minSeverity,
        after: pages.decode(req.pageToken, filters, isKeyset),
        limit: limit + 1,
      });
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [new Date(last.started_at).toISOString(), last.id]);
      return { alerts: page.map(toAlert), nextPageToken };
    },

    async *watchAlerts(req, ctx) {
      callerOf(ctx);
      yield* d.events.watch(req.afterCursor, ctx.signal, {
        heartbeat: (value) => create(WatchAlertsResponseSchema, { kind: { case: "heartbeat", value } }),
        event: (e, cursor) =>
          req.includeSilenced || !e.alert?.silenced ? create(WatchAlertsResponseSchema, { kind: { case: "event", value: { ...e, cursor } } }) : undefined,
      });
    },
  };
}
