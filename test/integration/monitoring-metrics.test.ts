// Monitoring ingest and queries: exact min/avg/max per step over known samples,
// rollups that agree with raw data, idempotent re-sends, retention, and bad
// input refused whole.
import { create } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import { expect } from "chai";
import {
  HostStatus,
  MonitoringService,
  ReportMetricsRequestSchema,
  Resolution,
  SampleSchema,
  type Point,
  type ReportMetricsRequest,
} from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { chooseGrid } from "../../src/services/monitoring/monitoring.service.js";
import { client, quietLog, rpcError, signUp, startTestServer, type TestServer } from "../support/harness.js";

type Monitoring = Client<typeof MonitoringService>;

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
/** The servers' clock; the synthetic samples lie two hours before it, on a whole hour. */
const NOW = Date.parse("2030-01-01T12:00:00Z");
const T0 = NOW - 2 * HOUR;

function sample(metric: string, atMs: number, value: number, labels: Record<string, string> = {}) {
  return create(SampleSchema, { metric, value, labels, time: timestampFromMs(atMs) });
}

/** What a chart needs of a point: [count, min, avg, max] (min/avg/max undefined in a gap). */
const shape = (p: Point) => [Number(p.count), p.min, p.avg, p.max];

describe("monitoring: ingest and queries", () => {
  let server: TestServer;
  let mon: Monitoring;
  const clock = new ManualClock(new Date(NOW));

  before(async () => {
    server = await startTestServer({ SERVICES: "identity,monitoring", ACCESS_TOKEN_TTL_SECONDS: "86400" }, undefined, quietLog, clock);
    mon = client(MonitoringService, server.url, "grpc", await signUp(server.url, "reporter"));
  });
  after(async () => server?.shutdown());

  async function query(metric: string, startMs: number, endMs: number, stepMs: number, resolution = Resolution.UNSPECIFIED, host = "h1", labels = {}) {
    return mon.queryMetrics({
      host,
      metric,
      labels,
      startTime: timestampFromMs(startMs),
      endTime: timestampFromMs(endMs),
      step: durationFromMs(stepMs),
      resolution,
    });
  }

  describe("known samples", () => {
    // Steps of a minute from T0: [1, 3, 5] | [7] | [2, 4] | gap | [10]; one sample just
    // before the range, one exactly at its end (neither counts); 59.999 s and 60 s fall in different steps.
    const known = [
      [-1, 100],
      [0, 1],
      [10 * SECOND, 3],
      [59_999, 5],
      [60 * SECOND, 7],
      [125 * SECOND, 2],
      [179_999, 4],
      [240 * SECOND, 10],
      [300 * SECOND, 200],
    ] as const;

    before(async () => {
      const res = await mon.reportMetricsBatch({ host: "h1", samples: known.map(([t, v]) => sample("test.gauge", T0 + t, v, { k: "a" })) });
      expect(Number(res.acceptedSamples)).to.equal(known.length);
      // Another series of the same metric on the same host, told apart by its labels.
      await mon.reportMetricsBatch({ host: "h1", samples: [sample("test.gauge", T0 + SECOND, 50, { k: "b" })] });
    });

    it("gives exact min, avg and max per step, gaps as empty points, and leaves out samples outside the range", async () => {
      const res = await query("test.gauge", T0, T0 + 5 * MINUTE, MINUTE, Resolution.RAW, "h1", { k: "a" });
      expect(res.resolution).to.equal(Resolution.RAW);
      expect(res.series).to.have.length(1);
      const [series] = res.series;
      expect(series!.labels).to.deep.equal({ k: "a" });
      expect(series!.host).to.equal("h1");
      expect(series!.points.map((p) => timestampMs(p.time!))).to.deep.equal([0, 1, 2, 3, 4].map((i) => T0 + i * MINUTE));
      expect(series!.points.map(shape)).to.deep.equal([
        [3, 1, 3, 5],
        [1, 7, 7, 7],
        [2, 2, 3, 4],
        [0, undefined, undefined, undefined],
        [1, 10, 10, 10],
      ]);
    });

    it("places steps from start_time, not from the clock's minutes, and covers the last step whole", async () => {
      const res = await query("test.gauge", T0 + 30 * SECOND, T0 + 130 * SECOND, MINUTE, Resolution.UNSPECIFIED, "h1", { k: "a" });
      expect(res.resolution, "a start off the minute grid needs raw data").to.equal(Resolution.RAW);
      expect(res.series[0]!.points.map(shape)).to.deep.equal([
        [2, 5, 6, 7], // [30 s, 90 s): 5 at 59.999 s, 7 at 60 s
        [1, 2, 2, 2], // [90 s, 150 s): 2 at 125 s, though end_time is 130 s
      ]);
    });

    it("returns every matching series when labels are left out", async () => {
      const res = await query("test.gauge", T0, T0 + MINUTE, MINUTE, Resolution.RAW);
      expect(res.series.map((s) => s.labels.k)).to.deep.equal(["a", "b"]);
      expect(res.series[1]!.points.map(shape)).to.deep.equal([[1, 50, 50, 50]]);
    });

    it("answers from per-minute and per-hour rollups exactly what the raw samples give", async () => {
      const raw = await query("test.gauge", T0, T0 + 5 * MINUTE, MINUTE, Resolution.RAW, "h1", { k: "a" });
      const auto = await query("test.gauge", T0, T0 + 5 * MINUTE, MINUTE, Resolution.UNSPECIFIED, "h1", { k: "a" });
      expect(auto.resolution, "a minute grid is served from minute rollups").to.equal(Resolution.MINUTE);
      expect(auto.series[0]!.points.map(shape)).to.deep.equal(raw.series[0]!.points.map(shape));

      const rawHour = await query("test.gauge", T0 - HOUR, T0 + HOUR, HOUR, Resolution.RAW, "h1", { k: "a" });
      const hour = await query("test.gauge", T0 - HOUR, T0 + HOUR, HOUR, Resolution.UNSPECIFIED, "h1", { k: "a" });
      expect(hour.resolution).to.equal(Resolution.HOUR);
      expect(hour.series[0]!.points.map(shape)).to.deep.equal(rawHour.series[0]!.points.map(shape));
      expect(hour.series[0]!.points.map(shape)).to.deep.equal([
        [1, 100, 100, 100],
        [8, 1, (1 + 3 + 5 + 7 + 2 + 4 + 10 + 200) / 8, 200],
      ]);
    });

    it("stores the new samples of a batch that re-sends stored ones, and of the batches after it", async () => {
      const first = [sample("test.gauge", T0 + 10 * SECOND, 1, { k: "mixed" }), sample("test.gauge", T0 + 20 * SECOND, 2, { k: "mixed" })];
      expect(Number((await mon.reportMetricsBatch({ host: "h1", samples: first })).acceptedSamples)).to.equal(2);
      const mixed = await mon.reportMetricsBatch({ host: "h1", samples: [...first, sample("test.gauge", T0 + 30 * SECOND, 3, { k: "mixed" })] });
      expect([Number(mixed.acceptedSamples), Number(mixed.duplicateSamples)]).to.deep.equal([1, 2]);
      const next = await mon.reportMetricsBatch({ host: "h1", samples: [sample("test.gauge", T0 + 40 * SECOND, 4, { k: "mixed" })] });
      expect([Number(next.acceptedSamples), Number(next.duplicateSamples)]).to.deep.equal([1, 0]);
      const raw = await query("test.gauge", T0, T0 + MINUTE, MINUTE, Resolution.RAW, "h1", { k: "mixed" });
      const minute = await query("test.gauge", T0, T0 + MINUTE, MINUTE, Resolution.MINUTE, "h1", { k: "mixed" });
      expect(raw.series[0]!.points.map(shape)).to.deep.equal([[4, 1, 2.5, 4]]);
      expect(minute.series[0]!.points.map(shape)).to.deep.equal([[4, 1, 2.5, 4]]);
    });

    it("does not count a re-sent sample twice, in raw data or rollups", async () => {
      const again = await mon.reportMetricsBatch({ host: "h1", samples: known.map(([t, v]) => sample("test.gauge", T0 + t, v, { k: "a" })) });
      expect(Number(again.acceptedSamples)).to.equal(0);
      expect(Number(again.duplicateSamples)).to.equal(known.length);
      const minute = await query("test.gauge", T0, T0 + MINUTE, MINUTE, Resolution.MINUTE, "h1", { k: "a" });
      expect(minute.series[0]!.points.map(shape)).to.deep.equal([[3, 1, 3, 5]]);
    });

    it("folds a late sample into the rollups of its step", async () => {
      await mon.reportMetricsBatch({ host: "h1", samples: [sample("test.gauge", T0 + 200 * SECOND, -4, { k: "a" })] });
      const raw = await query("test.gauge", T0, T0 + 5 * MINUTE, MINUTE, Resolution.RAW, "h1", { k: "a" });
      const minute = await query("test.gauge", T0, T0 + 5 * MINUTE, MINUTE, Resolution.MINUTE, "h1", { k: "a" });
      expect(raw.series[0]!.points.map(shape)[3]).to.deep.equal([1, -4, -4, -4]);
      expect(minute.series[0]!.points.map(shape)).to.deep.equal(raw.series[0]!.points.map(shape));
    });

    it("refuses more steps than a chart can use", async () => {
      const err = await rpcError(query("test.gauge", T0, T0 + 12_000 * SECOND, SECOND));
      expect(err.code).to.equal(Code.InvalidArgument);
      expect(err.findDetails(BadRequestSchema)[0]!.fieldViolations[0]!.field).to.equal("step");
    });
  });

  describe("choosing the data", () => {
    const cutoffs = [NOW - 48 * HOUR, NOW - 30 * 24 * HOUR];

    it("uses the coarsest data on the query's grid", () => {
      expect(chooseGrid(Resolution.UNSPECIFIED, T0, HOUR, cutoffs).resolution.name).to.equal(Resolution.HOUR);
      expect(chooseGrid(Resolution.UNSPECIFIED, T0, 5 * MINUTE, cutoffs).resolution.name).to.equal(Resolution.MINUTE);
      expect(chooseGrid(Resolution.UNSPECIFIED, T0 + MINUTE, HOUR, cutoffs).resolution.name).to.equal(Resolution.MINUTE);
      expect(chooseGrid(Resolution.UNSPECIFIED, T0 + SECOND, MINUTE, cutoffs).resolution.name).to.equal(Resolution.RAW);
    });

    it("moves to rollups, on a grid snapped to their buckets, where raw data has aged out", () => {
      const old = NOW - 72 * HOUR + 30 * SECOND;
      const grid = chooseGrid(Resolution.UNSPECIFIED, old, 90 * SECOND, cutoffs);
      expect(grid.resolution.name).to.equal(Resolution.MINUTE);
      expect(grid.startMs).to.equal(old - 30 * SECOND);
      expect(grid.stepMs).to.equal(2 * MINUTE);
      expect(chooseGrid(Resolution.UNSPECIFIED, NOW - 40 * 24 * HOUR, MINUTE, cutoffs).resolution.name).to.equal(Resolution.HOUR);
    });
  });

  describe("hosts", () => {
    it("lists each host with its last report time, UP until it has been silent for the host-down window", async () => {
      await mon.reportMetricsBatch({ host: "lister-1", samples: [sample("x", NOW - MINUTE, 1), sample("y", NOW - MINUTE, 1)] });
      let host = (await mon.listHosts({})).hosts.find((h) => h.name === "lister-1")!;
      expect(host.status).to.equal(HostStatus.UP);
      expect(timestampMs(host.lastReportTime!), "the time of the report, not of its samples").to.equal(NOW);
      expect(Number(host.seriesCount)).to.equal(2);

      clock.advance(61 * SECOND);
      host = (await mon.listHosts({ status: HostStatus.DOWN })).hosts.find((h) => h.name === "lister-1")!;
      expect(host.status).to.equal(HostStatus.DOWN);
      await mon.reportMetricsBatch({ host: "lister-1", samples: [sample("x", NOW, 2)] });
      expect((await mon.listHosts({ status: HostStatus.UP })).hosts.map((h) => h.name)).to.include("lister-1");
      clock.advance(-61 * SECOND);
    });

    it("pages through hosts by name", async () => {
      for (const name of ["page-a", "page-b", "page-c"]) await mon.reportMetricsBatch({ host: name, samples: [sample("x", NOW, 1)] });
      const first = await mon.listHosts({ pageSize: 2 });
      const second = await mon.listHosts({ pageSize: 2, pageToken: first.nextPageToken });
      const names = [...first.hosts, ...second.hosts].map((h) => h.name);
      expect(names).to.deep.equal([...names].sort());
      expect(new Set(names).size).to.equal(names.length);
    });

    it("lets only admins forget a host", async () => {
      await mon.reportMetricsBatch({ host: "gone-1", samples: [sample("x", NOW, 1)] });
      expect((await rpcError(mon.deleteHost({ name: "gone-1" }))).code).to.equal(Code.PermissionDenied);
      const admin = client(MonitoringService, server.url, "grpc", server.adminToken);
      await admin.deleteHost({ name: "gone-1" });
      expect((await mon.listHosts({ pageSize: 1000 })).hosts.map((h) => h.name)).not.to.include("gone-1");
      expect((await rpcError(admin.deleteHost({ name: "gone-1" }))).code).to.equal(Code.NotFound);
    });
  });

  describe("bad input", () => {
    const good = () => sample("bad.test", NOW, 1);

    async function refused(samples: ReturnType<typeof sample>[], host = "bad-host") {
      return rpcError(mon.reportMetricsBatch({ host, samples }));
    }

    async function nothingStoredFor(host: string) {
      expect((await mon.listHosts({ pageSize: 1000 })).hosts.map((h) => h.name)).not.to.include(host);
      const res = await query("bad.test", NOW - HOUR, NOW + HOUR, HOUR, Resolution.RAW, host);
      expect(res.series).to.deep.equal([]);
    }

    it("refuses empty metric names, NaN and infinite values, host labels and an empty host, naming the field", async () => {
      const cases: [ReturnType<typeof sample>[], string, string?][] = [
        [[good(), sample("", NOW, 1)], "samples[1].metric"],
        [[good(), sample("bad.test", NOW, Number.NaN)], "samples[1].value"],
        [[sample("bad.test", NOW, Number.POSITIVE_INFINITY), good()], "samples[0].value"],
        [[sample("bad.test", NOW, Number.NEGATIVE_INFINITY)], "samples[0].value"],
        [[sample("bad.test", NOW, 1, { host: "other" })], "samples[0]"],
        [[good()], "host", ""],
      ];
      for (const [samples, field, host] of cases) {
        const err = await refused(samples, host);
        expect(err.code, field).to.equal(Code.InvalidArgument);
        const fields = err.findDetails(BadRequestSchema)[0]!.fieldViolations.map((v) => v.field);
        expect(fields.some((f) => f.startsWith(field)), `${field} in ${fields.join(", ")}`).to.equal(true);
      }
      await nothingStoredFor("bad-host");
    });

    it("refuses samples timed far in the future", async () => {
      const err = await refused([good(), sample("bad.test", NOW + HOUR, 1)]);
      expect(err.code).to.equal(Code.InvalidArgument);
      expect(err.findDetails(BadRequestSchema)[0]!.fieldViolations[0]).to.include({ field: "samples[1].time", reason: "TIME_IN_FUTURE" });
      await nothingStoredFor("bad-host");
    });

    it("refuses a batch of more than 10000 samples", async () => {
      const samples = Array.from({ length: 10_001 }, (_, i) => sample("bad.test", NOW - i * SECOND, i));
      expect((await refused(samples)).code).to.equal(Code.InvalidArgument);
      await nothingStoredFor("bad-host");
    });

    it("accepts metric names it has never seen", async () => {
      const res = await mon.reportMetricsBatch({ host: "custom-1", samples: [sample("my_app.queue-length:p99", NOW, 3)] });
      expect(Number(res.acceptedSamples)).to.equal(1);
    });

    it("ends a stream at its first bad message: earlier messages stay stored, none of the bad one is", async () => {
      async function* messages(): AsyncGenerator<ReportMetricsRequest> {
        yield create(ReportMetricsRequestSchema, { host: "stream-1", samples: [sample("bad.test", NOW - MINUTE, 1)] });
        yield create(ReportMetricsRequestSchema, { host: "stream-1", samples: [sample("bad.test", NOW, 2), sample("bad.test", NOW, Number.NaN)] });
        yield create(ReportMetricsRequestSchema, { host: "stream-1", samples: [sample("bad.test", NOW - 2 * MINUTE, 3)] });
      }
      const err = await rpcError(mon.reportMetrics(messages()));
      expect(err.code).to.equal(Code.InvalidArgument);
      const res = await query("bad.test", NOW - HOUR, NOW + HOUR, 2 * HOUR, Resolution.RAW, "stream-1");
      expect(res.series[0]!.points.map(shape)).to.deep.equal([[1, 1, 1, 1]]);
    });

    it("counts what a stream stored and what it had already", async () => {
      async function* messages(): AsyncGenerator<ReportMetricsRequest> {
        for (let i = 0; i < 3; i++) yield create(ReportMetricsRequestSchema, { host: "stream-2", samples: [sample("s", NOW - i * SECOND, i)] });
        yield create(ReportMetricsRequestSchema, { host: "stream-2", samples: [sample("s", NOW, 0)] });
      }
      const res = await mon.reportMetrics(messages());
      expect([res.acceptedSamples, res.duplicateSamples, res.messages]).to.deep.equal([3n, 1n, 4n]);
    });

    it("credits a sample to the first report carrying it, within a report and across reports written together", async () => {
      const [x, y, z] = [NOW - 3 * SECOND, NOW - 2 * SECOND, NOW - SECOND];
      // Sent at once, so the second can be written in the first one's transaction (group commit).
      const [a, b] = await Promise.all([
        mon.reportMetricsBatch({ host: "credit", samples: [sample("c", x, 1), sample("c", y, 2), sample("c", y, 9)] }),
        mon.reportMetricsBatch({ host: "credit", samples: [sample("c", y, 5), sample("c", z, 3)] }),
      ]);
      const counts = [a, b].map((r) => [Number(r.acceptedSamples), Number(r.duplicateSamples)]);
      const stored = await query("c", x, NOW, SECOND, Resolution.RAW, "credit");
      const values = stored.series[0]!.points.map((p) => p.avg);
      if (counts[0]![0] === 2) {
        expect(counts).to.deep.equal([[2, 1], [1, 1]]);
        expect(values).to.deep.equal([1, 2, 3]);
      } else {
        expect(counts).to.deep.equal([[1, 2], [2, 0]]);
        expect(values).to.deep.equal([1, 5, 3]);
      }
    });

    it("requires a signed-in caller", async () => {
      const anonymous = client(MonitoringService, server.url);
      expect((await rpcError(anonymous.reportMetricsBatch({ host: "anon", samples: [good()] }))).code).to.equal(Code.Unauthenticated);
    });
  });

  describe("oversized messages", () => {
    let small: TestServer;
    before(async () => {
      small = await startTestServer({ SERVICES: "identity,monitoring", MAX_MESSAGE_BYTES: "65536" }, server.databaseUrl);
    });
    after(async () => small?.shutdown());

    it("refuses a report larger than the message limit with RESOURCE_EXHAUSTED and stores none of it", async () => {
      const m = client(MonitoringService, small.url, "grpc", small.adminToken);
      const samples = Array.from({ length: 5000 }, (_, i) => sample("big.test", Date.now() - i * SECOND, i, { pad: "x".repeat(20) }));
      const err = await rpcError(m.reportMetricsBatch({ host: "big-host", samples }));
      expect(err.code).to.equal(Code.ResourceExhausted);
      expect((await m.listHosts({ pageSize: 1000 })).hosts.map((h) => h.name)).not.to.include("big-host");
    });
  });
});
