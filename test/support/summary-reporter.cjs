// Mocha's spec reporter plus one closing line, "N passed, N failed[, N skipped]", that CI reads.
const Mocha = require("mocha");

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const { passes = 0, failures = 0, pending = 0 } = this.stats;
      const skipped = pending ? `, ${pending} skipped` : "";
      // After the spec reporter's epilogue, so it stays the last line.
      process.stdout.write(`\n${passes} passed, ${failures} failed${skipped}\n`);
    });
  }
}

module.exports = SummaryReporter;
