// The validation interceptor's own work (src/platform/validation.ts): the
// remembered RE2 answers, the timestamp range rule and the field paths of the
// storable-text walk, checked on a metrics report, the request they were made for.
import { create, getOption } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { ReportMetricsBatchRequestSchema, type Sample } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { in_range } from "../../gen/agora/type/v1/rules_pb.js";
import { predefined } from "../../gen/buf/validate/validate_pb.js";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { assertValid } from "../../src/platform/validation.js";

type SampleInit = Partial<Omit<Sample, "$typeName" | "time">> & { time?: { seconds: bigint; nanos: number } };

/** The field violations of a report; empty when it is valid. */
function fieldViolations(samples: SampleInit[]) {
  const request = create(ReportMetricsBatchRequestSchema, {
    host: "h1",
    samples: samples.map((s) => ({ metric: "cpu", value: 1, time: { seconds: 1_700_000_000n, nanos: 0 }, ...s })),
  });
  try {
    assertValid(ReportMetricsBatchRequestSchema, request);
    return [];
  } catch (err) {
    expect(err).to.be.instanceOf(ConnectError);
    return (err as ConnectError).findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
  }
}

/** The field violations of a report, as [field, reason]. */
const violations = (samples: SampleInit[]): [string, string][] => fieldViolations(samples).map((v) => [v.field, v.reason]);

describe("request validation", () => {
  it("answers every pattern check right while its remembered answers fill up and are dropped", () => {
    // More distinct names than are remembered (4,096), each asked twice; one text is asked of two patterns
    // (`L<i>` is a valid metric and an invalid label key), so answers of one pattern cannot leak to another.
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 5_000; i++) {
        const metricOk = i % 5 !== 0;
        const labelOk = i % 3 !== 0;
        const metric = metricOk ? `L${i}` : `${i}_starts_with_a_digit`;
        const label = labelOk ? `l_${i}` : `L${i}`;
        const want: [string, string][] = [];
        if (!metricOk) want.push(["samples[0].metric", "string.pattern"]);
        if (!labelOk) want.push([`samples[0].labels["${label}"]`, "string.pattern"]);
        expect(violations([{ metric, labels: { [label]: "x" } }]), `${metric} / ${label} in round ${round}`).to.deep.equal(want);
      }
    }
  });

  it("keeps timestamps to years 1-9999, first and last second included", () => {
    expect(violations([{ time: { seconds: -62_135_596_800n, nanos: 0 } }])).to.deep.equal([]);
    expect(violations([{ time: { seconds: 253_402_300_799n, nanos: 999_999_999 } }])).to.deep.equal([]);
    expect(violations([{ time: { seconds: -62_135_596_801n, nanos: 0 } }])).to.deep.equal([["samples[0].time", "timestamp.in_range"]]);
    expect(violations([{ time: { seconds: 253_402_300_800n, nanos: 0 } }])).to.deep.equal([["samples[0].time", "timestamp.in_range"]]);
    expect(violations([{ time: { seconds: 0n, nanos: -1 } }])).to.deep.equal([["samples[0].time", "OUT_OF_RANGE"]]);
  });

  it("checks the contract's in_range rule itself, under the rule's id and message, and leaves the generated rule as it is", () => {
    const rule = getOption(in_range, predefined).cel[0]!;
    const [violation] = fieldViolations([{ time: { seconds: -62_135_596_801n, nanos: 0 } }]);
    expect([violation!.reason, violation!.description]).to.deep.equal([rule.id, rule.message]);
    // Reflection serves the generated descriptors: the validator's copy without the CEL must not leak into them.
    expect(rule.expression).to.contain("int(this)");
  });

  it("names the element, the map key and the field of text PostgreSQL cannot store", () => {
    expect(violations([{}, { metric: "ok", labels: { mount: "/a\u0000b" } }])).to.deep.equal([['samples[1].labels["mount"]', "UNSTORABLE_TEXT"]]);
  });
});
