// One spelling per label set (src/services/monitoring/metrics.repository.ts): the series cache is keyed by it, with
// labels as a report orders them on one side and as PostgreSQL's jsonb returns them (shorter keys first) on the other.
import { expect } from "chai";
import { canonicalLabels } from "../../src/services/monitoring/metrics.repository.js";

describe("series label keys", () => {
  it("spell a label set the same whatever order its keys come in", () => {
    const orders = [{ b: "1", aa: "2", mode: "u" }, { aa: "2", b: "1", mode: "u" }, { mode: "u", b: "1", aa: "2" }];
    expect(new Set(orders.map(canonicalLabels))).to.deep.equal(new Set(['{"aa":"2","b":"1","mode":"u"}']));
    expect(canonicalLabels({})).to.equal("{}");
    expect(canonicalLabels({ unit: "x" })).to.equal('{"unit":"x"}');
  });
});
