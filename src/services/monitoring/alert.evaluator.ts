import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { AlertKind, Comparison, Severity } from "../../../gen/agora/monitoring/v1/monitoring_pb.js";
import type { Clock } from "../../platform/clock.js";
import {
  FIRING,
  HOST_DOWN_SOURCE,
  PENDING,
  RESOLVED,
  UNSPECIFIED,
  type AlertRepository,
  type AlertRow,
  type RuleRow,
  type SilenceRow,
} from "./alert.repository.js";
import type { MetricsRepository, SeriesRow } from "./metrics.repository.js";

export interface EvaluatorSettings {
  /** A host silent for longer is down; a series without a sample for longer is not evaluated. */
  hostDownMs: number;
}

type Change = { alert: AlertRow; previousState: number };

const SYMBOL: Record<number, string> = {
  [Comparison.GREATER_THAN]: ">",
  [Comparison.GREATER_OR_EQUAL]: ">=",
  [Comparison.LESS_THAN]: "<",
  [Comparison.LESS_OR_EQUAL]: "<=",
};

export function compare(value: number, comparison: number, threshold: number): boolean {
  switch (comparison) {
    case Comparison.GREATER_THAN:
      return value > threshold;
    case Comparison.GREATER_OR_EQUAL:
      return value >= threshold;
    case Comparison.LESS_THAN:
      return value < threshold;
    case Comparison.LESS_OR_EQUAL:
      return value <= threshold;
    default:
      return false;
  }
}

export function silenceMatches(s: SilenceRow, a: Pick<AlertRow, "rule_id" | "host" | "labels">): boolean {
  return (
    (s.rule_id === "" || s.rule_id === a.rule_id) &&
    (s.host === "" || s.host === a.host) &&
    Object.entries(s.labels).every(([k, v]) => a.labels[k] === v)
  );
}

function describe(metric: string, labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  return pairs.length > 0 ? `${metric}{${pairs.join(",")}}` : metric;
}

/**
 * Turns the latest samples into alert state changes: pending once a rule's
 * condition holds, firing once it has held for the rule's for-duration,
 * resolved once it clears (past the clear threshold, for hysteresis); and
 * host-down alerts for hosts that stopped reporting.
 *
 * Every instance runs it, but a run happens only under a transaction-scoped
 * advisory lock taken without waiting, so one instance evaluates at a time and
 * the others skip; state lives in the database, so whichever runs next carries on.
 */
export class AlertEvaluator {
  constructor(
    private readonly metrics: MetricsRepository,
    private readonly alerts: AlertRepository,
    private readonly clock: Clock,
    private readonly settings: EvaluatorSettings,
  ) {}

  /** One evaluation; false when another instance was evaluating. */
  async run(): Promise<boolean> {
    const ran = await this.alerts.ifFree(async (tx) => {
      const now = this.clock.now();
      const open = new Map((await this.alerts.openAlerts(tx)).map((a) => [`${a.source}\u0000${a.subject}`, a]));
      const silences = await this.alerts.activeSilences(tx, now);
      const changes: Change[] = [];
      const quiet: AlertRow[] = []; // open alerts whose value or silence changed, not their state
      const seen = new Set<string>();
      const settle = (alert: AlertRow, previous: AlertRow | undefined) => {
        alert.silenced = silences.some((s) => silenceMatches(s, alert));
        if (!previous || previous.state !== alert.state) changes.push({ alert, previousState: previous?.state ?? UNSPECIFIED });
        else if (previous.value !== alert.value || previous.silenced !== alert.silenced) quiet.push(alert);
      };

      for (const rule of await this.alerts.allRules(tx)) {
        for (const series of await this.metrics.matchSeries(rule.metric, rule.label_selector, 10_000, tx)) {
          const key = `${rule.id}\u0000${series.id}`;
          seen.add(key);
          const next = this.step(rule, series, open.get(key), now);
          if (next) settle(next, open.get(key));
        }
      }
      for (const host of await this.metrics.allHosts(tx)) {
        const key = `${HOST_DOWN_SOURCE}\u0000${host.name}`;
        seen.add(key);
        const next = this.hostStep(host.name, host.last_report_at, open.get(key), now);
        if (next) settle(next, open.get(key));
      }
      // Alerts whose rule was deleted or changed, or whose series or host is gone.
      for (const [key, alert] of open) {
        if (!seen.has(key)) changes.push({ alert: { ...alert, state: RESOLVED, resolved_at: now }, previousState: alert.state });
      }

      for (const alert of quiet) await this.alerts.update(tx, alert);
      await this.alerts.apply(tx, changes, now);
      return true;
    });
    return ran ?? false;
  }

  /** The alert of one rule and series after this evaluation; undefined: none (and none needed). */
  private step(rule: RuleRow, series: SeriesRow, current: AlertRow | undefined, now: Date): AlertRow | undefined {
    const fresh = series.last_time !== null && series.last_value !== null && now.getTime() - series.last_time.getTime() <= this.settings.hostDownMs;
    // Without a recent sample there is nothing new to judge: the alert stays as it is (host-down covers silence).
    if (!fresh) return current;
    const value = series.last_value!;
    const holds = compare(value, rule.comparison, rule.threshold);
    const summary = `${rule.name}: ${describe(rule.metric, series.labels)} on ${series.host} is ${value} (${SYMBOL[rule.comparison]} ${rule.threshold})`;
    if (!current) {
      if (!holds) return undefined;
      const fires = Number(rule.for_ms) === 0;
      return {
        id: randomUUID(),
        kind: AlertKind.THRESHOLD,
        source: rule.id,
        subject: series.id,
        rule_id: rule.id,
        name: rule.name,
        host: series.host,
        metric: series.metric,
        labels: series.labels,
        state: fires ? FIRING : PENDING,
        severity: rule.severity,
        value,
        threshold: rule.threshold,
        started_at: now,
        fired_at: fires ? now : null,
        resolved_at: null,
        silenced: false,
        summary,
      };
    }
    if (current.state === PENDING) {
      if (!holds) return { ...current, value, state: RESOLVED, resolved_at: now };
      const due = now.getTime() - current.started_at.getTime() >= Number(rule.for_ms);
      return due ? { ...current, value, summary, state: FIRING, fired_at: now } : { ...current, value, summary };
    }
    // Firing: it keeps firing until the value no longer compares true against the clear threshold.
    const stillHolds = compare(value, rule.comparison, rule.clear_threshold ?? rule.threshold);
    return stillHolds ? { ...current, value, summary } : { ...current, value, summary, state: RESOLVED, resolved_at: now };
  }

  private hostStep(host: string, lastReport: Date, current: AlertRow | undefined, now: Date): AlertRow | undefined {
    const silentMs = now.getTime() - lastReport.getTime();
    const down = silentMs > this.settings.hostDownMs;
    const seconds = Math.round(silentMs / 1000);
    if (!down) return current ? { ...current, value: seconds, state: RESOLVED, resolved_at: now } : undefined;
    const summary = `${host} has not reported for ${seconds} s`;
    if (current) return { ...current, value: seconds, summary };
    return {
      id: randomUUID(),
      kind: AlertKind.HOST_DOWN,
      source: HOST_DOWN_SOURCE,
      subject: host,
      rule_id: "",
      name: "host down",
      host,
      metric: "",
      labels: {},
      state: FIRING,
      severity: Severity.CRITICAL,
      value: seconds,
      threshold: this.settings.hostDownMs / 1000,
      started_at: lastReport,
      fired_at: now,
      resolved_at: null,
      silenced: false,
      summary,
    };
  }
}
