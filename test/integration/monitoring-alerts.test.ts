// Alert rules and the alert lifecycle on a manual clock: for-duration,
// hysteresis, silences, host-down, one alert however many instances evaluate,
// and WatchAlerts resuming from a cursor without missing a transition.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import { expect } from "chai";
import {
  AlertKind,
  AlertRuleSchema,
  AlertState,
  Comparison,
  HostStatus,
  MonitoringService,
  SampleSchema,
  Severity,
  type Alert,
  type AlertEvent,
  type AlertRule,
} from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { client, connectionsClosed, eventually, freshDatabase, quietLog, rowsRead, rpcError, signUp, sql, startTestServer, tableReads, type TestServer } from "../support/harness.js";
import { StreamRecorder } from "../support/stream-recorder.js";

type Monitoring = Client<typeof MonitoringService>;

const SECOND = 1000;
const ENV = {
  SERVICES: "identity,monitoring",
  MONITORING_EVALUATE_INTERVAL_MS: "20",
  MONITORING_HOST_DOWN_SECONDS: "30",
  HEARTBEAT_INTERVAL_MS: "200",
  ACCESS_TOKEN_TTL_SECONDS: "86400",
};

/** A WatchAlerts stream collecting events until closed. */
const watch = (mon: Monitoring, afterCursor = "", includeSilenced = false) =>
  new StreamRecorder((signal) => mon.watchAlerts({ afterCursor, includeSilenced }, { signal }));

/** The events of one rule (or of one host's host-down alert). */
const of = (events: AlertEvent[], ruleOrHost: string) => events.filter((e) => e.alert!.ruleId === ruleOrHost || (e.alert!.ruleId === "" && e.alert!.host === ruleOrHost));

const transitions = (events: AlertEvent[]) => events.map((e) => `${AlertState[e.previousState]}->${AlertState[e.alert!.state]}`);

describe("monitoring: alerts", () => {
  const clock = new ManualClock(new Date("2030-01-01T12:00:00Z"));
  let server: TestServer;
  let second: TestServer;
  let admin: Monitoring;
  let reporter: Monitoring;
  let all: ReturnType<typeof watch>;

  before(async () => {
    server = await startTestServer(ENV, undefined, quietLog, clock);
    // A second instance on the same database and clock: both run the evaluator.
    second = await startTestServer(ENV, server.databaseUrl, quietLog, clock);
    admin = client(MonitoringService, server.url, "grpc", server.adminToken);
    reporter = client(MonitoringService, second.url, "grpc", await signUp(server.url, "agent-1"));
    all = await watch(admin, "", true).ready();
  });
  after(async () => {
    await all?.close();
    await Promise.all([server?.shutdown(), second?.shutdown()]);
  });

  async function report(host: string, metric: string, value: number, atMs = clock.now().getTime()) {
    await reporter.reportMetricsBatch({ host, samples: [create(SampleSchema, { metric, value, time: timestampFromMs(atMs) })] });
  }

  async function createRule(rule: MessageInitShape<typeof AlertRuleSchema>): Promise<AlertRule> {
    const res = await admin.createAlertRule({
      rule: create(AlertRuleSchema, { comparison: Comparison.GREATER_THAN, severity: Severity.WARNING, name: "rule", ...rule }),
    });
    return res.rule!;
  }

  async function alertsOf(ruleId: string): Promise<Alert[]> {
    return (await admin.listAlerts({ ruleId })).alerts;
  }

  /** Waits until the rule's newest alert satisfies `check` (the evaluator runs every 20 ms on both instances). */
  async function until(ruleId: string, what: string, check: (a: Alert) => boolean): Promise<Alert> {
    let last: Alert | undefined;
    await eventually(async () => {
      last = (await alertsOf(ruleId))[0];
      return last !== undefined && check(last);
    }, what);
    return last!;
  }

  it("fires only after the for-duration and resolves only past the clear threshold", async () => {
    const rule = await createRule({
      name: "cpu hot",
      metric: "cpu.usage_percent",
      labelSelector: { host: "web-1" },
      threshold: 90,
      clearThreshold: 80,
      forDuration: durationFromMs(30 * SECOND),
    });
    const start = clock.now().getTime();
    await report("web-1", "cpu.usage_percent", 95);
    await report("web-2", "cpu.usage_percent", 99); // another host: not selected
    await until(rule.id, "pending", (a) => a.state === AlertState.PENDING);

    clock.advance(20 * SECOND);
    await report("web-1", "cpu.usage_percent", 96);
    // The evaluator saw the new value, and 20 s is not yet the for-duration.
    const pending = await until(rule.id, "the new value", (a) => a.value === 96);
    expect(pending.state).to.equal(AlertState.PENDING);

    // The sample that crosses the for-duration is stored before the clock moves, so the
    // evaluator (every 20 ms, on both instances) can only fire with it, never with 96.
    await report("web-1", "cpu.usage_percent", 97, start + 35 * SECOND);
    clock.advance(15 * SECOND);
    const firing = await until(rule.id, "firing", (a) => a.state === AlertState.FIRING);
    expect(timestampMs(firing.startTime!)).to.equal(start);
    expect(timestampMs(firing.fireTime!)).to.equal(start + 35 * SECOND);
    expect(firing.summary).to.contain("web-1").and.contain("97");

    clock.advance(5 * SECOND);
    await report("web-1", "cpu.usage_percent", 85); // under the threshold, above the clear threshold
    const held = await until(rule.id, "the value 85", (a) => a.value === 85);
    expect(held.state, "hysteresis keeps it firing").to.equal(AlertState.FIRING);

    clock.advance(5 * SECOND);
    // An evaluation reads the clock before the samples: one that began before the advance could read 75 below
    // and resolve at the old time. An evaluation that shows a value reported after the advance ended after it,
    // and evaluations take turns, so every later one reads the new time.
    await report("web-1", "cpu.usage_percent", 84, start + 45 * SECOND - 1); // a sample a millisecond before 75's
    await until(rule.id, "the value 84", (a) => a.value === 84);
    await report("web-1", "cpu.usage_percent", 75);
    const resolved = await until(rule.id, "resolved", (a) => a.state === AlertState.RESOLVED);
    expect(timestampMs(resolved.resolveTime!)).to.equal(start + 45 * SECOND);

    const alerts = await alertsOf(rule.id);
    expect(alerts, "one alert, only for the selected host").to.have.length(1);
    expect(alerts[0]!.host).to.equal("web-1");
    await eventually(() => of(all.items, rule.id).length >= 3, "three events");
    expect(transitions(of(all.items, rule.id))).to.deep.equal(["UNSPECIFIED->PENDING", "PENDING->FIRING", "FIRING->RESOLVED"]);
  });

  it("resolves a pending alert that clears before its for-duration without ever firing", async () => {
    const rule = await createRule({ metric: "queue.depth", labelSelector: { host: "q-1" }, threshold: 10, forDuration: durationFromMs(60 * SECOND) });
    await report("q-1", "queue.depth", 50);
    await until(rule.id, "pending", (a) => a.state === AlertState.PENDING);
    clock.advance(SECOND);
    await report("q-1", "queue.depth", 5);
    const resolved = await until(rule.id, "resolved", (a) => a.state === AlertState.RESOLVED);
    expect(resolved.fireTime).to.equal(undefined);
  });

  it("marks silenced alerts and leaves them out of WatchAlerts unless asked", async () => {
    const quiet = await watch(admin).ready();
    const silence = (
      await admin.createSilence({
        silence: { host: "db-1", comment: "maintenance", expireTime: timestampFromMs(clock.now().getTime() + 3_600_000) },
      })
    ).silence!;
    expect(silence.createdBy).to.equal("admin");
    const rule = await createRule({ metric: "mem.usage", labelSelector: { host: "db-1" }, threshold: 50, severity: Severity.CRITICAL });
    await report("db-1", "mem.usage", 60);
    const firing = await until(rule.id, "firing at once (no for-duration)", (a) => a.state === AlertState.FIRING);
    expect(firing.silenced).to.equal(true);
    expect((await admin.listSilences({})).silences.map((s) => s.id)).to.include(silence.id);

    await admin.deleteSilence({ id: silence.id });
    expect((await admin.listSilences({})).silences.map((s) => s.id)).not.to.include(silence.id);
    expect((await admin.listSilences({ includeExpired: true })).silences.map((s) => s.id)).to.include(silence.id);
    await until(rule.id, "no longer silenced", (a) => !a.silenced);
    clock.advance(SECOND);
    await report("db-1", "mem.usage", 40);
    await until(rule.id, "resolved", (a) => a.state === AlertState.RESOLVED);

    await eventually(() => of(all.items, rule.id).length >= 2, "both changes on the watch that includes silenced alerts");
    expect(of(all.items, rule.id).map((e) => e.alert!.silenced)).to.deep.equal([true, false]);
    await eventually(() => of(quiet.items, rule.id).length >= 1, "the resolution on the default watch");
    expect(transitions(of(quiet.items, rule.id)), "the silenced firing was left out").to.deep.equal(["FIRING->RESOLVED"]);
    await quiet.close();
  });

  it("raises a host-down alert when a host stops reporting and resolves it when it returns", async () => {
    await report("edge-1", "uptime_seconds", 1);
    clock.advance(31 * SECOND);
    let hostDown: Alert | undefined;
    await eventually(async () => {
      hostDown = (await admin.listAlerts({ host: "edge-1" })).alerts.find((a) => a.kind === AlertKind.HOST_DOWN);
      return hostDown?.state === AlertState.FIRING;
    }, "host-down alert");
    expect(hostDown!.severity).to.equal(Severity.CRITICAL);
    expect(hostDown!.summary).to.contain("edge-1");
    const host = (await admin.listHosts({ status: HostStatus.DOWN })).hosts.find((h) => h.name === "edge-1");
    expect(host?.status).to.equal(HostStatus.DOWN);

    await report("edge-1", "uptime_seconds", 32);
    await eventually(async () => {
      const alerts = (await admin.listAlerts({ host: "edge-1" })).alerts.filter((a) => a.kind === AlertKind.HOST_DOWN);
      return alerts.length === 1 && alerts[0]!.state === AlertState.RESOLVED;
    }, "host-down resolved");
    // The watch delivers after the commit that listAlerts already sees: wait for both events.
    await eventually(() => of(all.items, "edge-1").length >= 2, "both host-down changes on the watch");
    expect(transitions(of(all.items, "edge-1"))).to.deep.equal(["UNSPECIFIED->FIRING", "FIRING->RESOLVED"]);
  });

  it("gives one alert and one event per transition though two instances evaluate", async () => {
    const rule = await createRule({ metric: "disk.usage_percent", labelSelector: { host: "nas-1" }, threshold: 80, forDuration: durationFromMs(10 * SECOND) });
    await report("nas-1", "disk.usage_percent", 91);
    await until(rule.id, "pending", (a) => a.state === AlertState.PENDING);
    clock.advance(11 * SECOND);
    await report("nas-1", "disk.usage_percent", 92);
    await until(rule.id, "firing", (a) => a.state === AlertState.FIRING);
    // Many more evaluations by both instances: still the same single alert.
    clock.advance(SECOND);
    await report("nas-1", "disk.usage_percent", 93);
    await until(rule.id, "the latest value", (a) => a.value === 93);
    expect(await alertsOf(rule.id)).to.have.length(1);
    await eventually(() => of(all.items, rule.id).length >= 2, "both changes on the watch");
    expect(transitions(of(all.items, rule.id))).to.deep.equal(["UNSPECIFIED->PENDING", "PENDING->FIRING"]);
  });

  it("lets a WatchAlerts client that reconnects with its cursor miss no transition", async () => {
    const rule = await createRule({ metric: "flappy", labelSelector: { host: "f-1" }, threshold: 0 });
    const first = await watch(admin).ready();
    await report("f-1", "flappy", 1);
    await eventually(() => of(first.items, rule.id).length === 1, "the first event");
    await first.close();
    const cursor = of(first.items, rule.id)[0]!.cursor;

    // While disconnected: resolve, fire again, resolve again.
    for (const value of [-1, 1, -1]) {
      clock.advance(SECOND);
      await report("f-1", "flappy", value);
      const expected = value > 0 ? AlertState.FIRING : AlertState.RESOLVED;
      await until(rule.id, AlertState[expected], (a) => a.state === expected);
    }
    const resumed = await watch(admin, cursor).ready();
    await eventually(() => of(resumed.items, rule.id).length >= 3, "the missed events");
    expect(transitions(of(resumed.items, rule.id))).to.deep.equal(["FIRING->RESOLVED", "UNSPECIFIED->FIRING", "FIRING->RESOLVED"]);
    // Exactly what an uninterrupted watcher saw after that cursor (once it has seen as many).
    const after = () => all.items.filter((e) => BigInt(e.cursor) > BigInt(cursor));
    await eventually(() => after().length >= resumed.items.length, "the uninterrupted watch catching up");
    const uninterrupted = after();
    expect(resumed.items.map((e) => e.cursor)).to.deep.equal(uninterrupted.map((e) => e.cursor).slice(0, resumed.items.length));
    await resumed.close();

    const future = watch(admin, "999999999");
    await eventually(() => future.error !== undefined, "a refused cursor");
    expect(future.error!.code).to.equal(Code.OutOfRange);
  });

  describe("rules", () => {
    it("validates rules: threshold side of the clear threshold, comparison, severity", async () => {
      const err = await rpcError(createRule({ metric: "m", threshold: 90, clearThreshold: 95 }));
      expect(err.code).to.equal(Code.InvalidArgument);
      expect(err.findDetails(BadRequestSchema)[0]!.fieldViolations[0]!.reason).to.equal("clear_threshold.side");
      expect((await rpcError(createRule({ metric: "m", threshold: 1, comparison: Comparison.UNSPECIFIED }))).code).to.equal(Code.InvalidArgument);
      expect((await rpcError(createRule({ metric: "", threshold: 1 }))).code).to.equal(Code.InvalidArgument);
      expect((await rpcError(createRule({ metric: "m", threshold: Number.NaN }))).code).to.equal(Code.InvalidArgument);
    });

    it("is admin-only to change, readable by anyone signed in", async () => {
      const err = await rpcError(reporter.createAlertRule({ rule: { name: "x", metric: "m", comparison: 1, severity: 1 } }));
      expect(err.code).to.equal(Code.PermissionDenied);
      const rule = await createRule({ name: "readable", metric: "m", threshold: 1 });
      expect((await reporter.getAlertRule({ id: rule.id })).rule!.name).to.equal("readable");
    });

    it("returns the first rule for a repeated request_id", async () => {
      const a = await admin.createAlertRule({ rule: { name: "once", metric: "m", comparison: 1, severity: 1 }, requestId: "r-1" });
      const b = await admin.createAlertRule({ rule: { name: "once", metric: "m", comparison: 1, severity: 1 }, requestId: "r-1" });
      expect(b.rule!.id).to.equal(a.rule!.id);
    });

    it("updates the fields in the mask, checks the result and refuses a stale etag", async () => {
      const rule = await createRule({ name: "to update", metric: "m", threshold: 10 });
      const updated = (await admin.updateAlertRule({ id: rule.id, rule: { threshold: 20, name: "ignored" }, updateMask: { paths: ["threshold"] }, etag: rule.etag })).rule!;
      expect([updated.threshold, updated.name]).to.deep.equal([20, "to update"]);
      expect(updated.etag).not.to.equal(rule.etag);
      const stale = await rpcError(admin.updateAlertRule({ id: rule.id, rule: { threshold: 30 }, updateMask: { paths: ["threshold"] }, etag: rule.etag }));
      expect(stale.code).to.equal(Code.Aborted);
      const bad = await rpcError(admin.updateAlertRule({ id: rule.id, rule: { clearThreshold: 50 }, updateMask: { paths: ["clear_threshold"] } }));
      expect(bad.code).to.equal(Code.InvalidArgument);
      const unknown = await rpcError(admin.updateAlertRule({ id: rule.id, rule: {}, updateMask: { paths: ["etag"] } }));
      expect(unknown.code).to.equal(Code.InvalidArgument);
    });

    it("lists rules by name, page by page", async () => {
      const seen: string[] = [];
      let pageToken = "";
      do {
        const res = await admin.listAlertRules({ pageSize: 3, pageToken });
        seen.push(...res.rules.map((r) => r.name));
        pageToken = res.nextPageToken;
      } while (pageToken);
      expect(seen).to.deep.equal([...seen].sort());
      expect(seen.length).to.be.at.least(8);
      expect((await admin.listAlertRules({ metric: "flappy" })).rules).to.have.length(1);
    });

    it("resolves a deleted rule's open alerts", async () => {
      const rule = await createRule({ metric: "deleted.metric", labelSelector: { host: "d-1" }, threshold: 0 });
      await report("d-1", "deleted.metric", 1);
      await until(rule.id, "firing", (a) => a.state === AlertState.FIRING);
      await admin.deleteAlertRule({ id: rule.id });
      await until(rule.id, "resolved", (a) => a.state === AlertState.RESOLVED);
      expect((await rpcError(admin.getAlertRule({ id: rule.id }))).code).to.equal(Code.NotFound);
      expect((await rpcError(admin.deleteAlertRule({ id: rule.id }))).code).to.equal(Code.NotFound);
    });

    it("filters alerts by state and severity", async () => {
      const firing = (await admin.listAlerts({ states: [AlertState.FIRING] })).alerts;
      expect(firing.length).to.be.greaterThan(0);
      expect(firing.every((a) => a.state === AlertState.FIRING)).to.equal(true);
      const critical = (await admin.listAlerts({ minSeverity: Severity.CRITICAL })).alerts;
      expect(critical.every((a) => a.severity === Severity.CRITICAL)).to.equal(true);
    });
  });
});

describe("monitoring: a long alert history", () => {
  // 20,000 resolved alerts of 20 rules and 200 hosts, and 5 of a quiet host, fresh statistics. Counters are read once
  // the server has shut down (every connection reports its own as it closes).
  const ALERTS = 20_000;

  it("lists one rule's and one quiet host's alerts without walking every alert", async () => {
    const url = await freshDatabase();
    const server = await startTestServer({ ...ENV, MONITORING_EVALUATE_INTERVAL_MS: "3600000" }, url, quietLog);
    try {
      await sql(
        url,
        `INSERT INTO "monitoring".alerts (id, kind, source, subject, rule_id, name, host, labels, state, severity, value, threshold, started_at, resolved_at, summary)
         SELECT gen_random_uuid(), 1, 'rule', 'series-' || i, 'rule-' || (i % 20), 'r', CASE WHEN i % 4000 = 7 THEN 'quiet-host' ELSE 'host-' || (i % 200) END,
                '{}', 3, 1, 1, 0, t, t + interval '1 minute', 's'
           FROM generate_series(1, $1::int) i, LATERAL (SELECT timestamptz '2030-01-01' + i * interval '1 minute' AS t) s`,
        [ALERTS],
      );
      await sql(url, `ANALYZE "monitoring".alerts`);
      await eventually(async () => (await tableReads(url, "monitoring", "alerts")).inserted === ALERTS, "the alerts' statistics");
      const reads = () => rowsRead(url, "monitoring", "alerts");
      const before = await reads();
      const admin = client(MonitoringService, server.url, "grpc", server.adminToken);
      const quiet = (await admin.listAlerts({ host: "quiet-host" })).alerts;
      expect(quiet.map((a) => a.host)).to.deep.equal(["quiet-host", "quiet-host", "quiet-host", "quiet-host", "quiet-host"]);
      const rule = (await admin.listAlerts({ ruleId: "rule-3", pageSize: 10 })).alerts;
      expect(rule.map((a) => a.ruleId)).to.deep.equal(Array(10).fill("rule-3"));
      await server.shutdown();
      await connectionsClosed(url);
      expect(await reads() - before, "alerts read for the two listings").to.be.below(100);
    } finally {
      await server.shutdown();
    }
  });
});
