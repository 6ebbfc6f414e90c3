import { expect } from "chai";
import pino from "pino";
import { every } from "../../src/platform/periodic.js";

describe("every: periodic work that can also be asked for now", () => {
  it("runs at once when asked, never two runs together, and once more for any number of requests during a run", async () => {
    let runs = 0;
    let concurrent = 0;
    let most = 0;
    let release: () => void = () => undefined;
    const periodic = every(60_000, pino({ level: "silent" }), "test work", async () => {
      runs++;
      most = Math.max(most, ++concurrent);
      await new Promise<void>((r) => (release = r));
      concurrent--;
    });
    periodic.now();
    expect(runs, "the first request runs at once").to.equal(1);
    for (let i = 0; i < 5; i++) periodic.now();
    expect(runs, "requests during a run wait for it").to.equal(1);
    release();
    await new Promise((r) => setImmediate(r));
    expect(runs, "one more run for the five requests").to.equal(2);
    release();
    await new Promise((r) => setImmediate(r));
    expect(runs, "and no more").to.equal(2);
    expect(most, "never two at once").to.equal(1);
    const stopped = periodic.stop();
    periodic.now();
    await stopped;
    expect(runs, "nothing runs once stopped").to.equal(2);
  });
});
