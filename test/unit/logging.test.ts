import { spawn } from "node:child_process";
import { expect } from "chai";

/**
 * Runs a child that logs `count` lines through createLogger (every third with multi-byte text), then ends as `how`
 * says, and returns what reached its stdout. The child's stdout is a pipe, as under a log shipper or the bench.
 */
async function logThroughChild(count: number, how: "return" | "process.exit" | "throw"): Promise<{ lines: string[]; code: number | null }> {
  const script = `
    import { createLogger } from ${JSON.stringify(new URL("../../src/platform/logging.ts", import.meta.url).href)};
    const log = createLogger("info");
    for (let i = 0; i < ${count}; i++) log.info({ i, text: i % 3 === 0 ? "grüße 🚀 ünïcödé" : "plain" }, "line");
    ${how === "process.exit" ? "process.exit(0);" : how === "throw" ? "setImmediate(() => { throw new Error('boom'); });" : ""}
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "ignore"] });
  const chunks: Buffer[] = [];
  child.stdout.on("data", (c: Buffer) => chunks.push(c));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { lines: Buffer.concat(chunks).toString("utf8").split("\n").filter(Boolean), code };
}

describe("createLogger (batched asynchronous stdout)", () => {
  for (const how of ["return", "process.exit", "throw"] as const) {
    it(`delivers every line whole, in order and in UTF-8 when the process ends by ${how}`, async function () {
      this.timeout(30_000);
      const count = 20_000; // some 2.5 MB: many batches, several still waiting when the process ends
      const { lines, code } = await logThroughChild(count, how);
      expect(code).to.equal(how === "throw" ? 1 : 0);
      expect(lines).to.have.length(count);
      lines.forEach((line, i) => {
        const entry = JSON.parse(line) as { i: number; text: string; level: string; msg: string };
        expect(entry.i, `line ${i}`).to.equal(i);
        expect(entry.text).to.equal(i % 3 === 0 ? "grüße 🚀 ünïcödé" : "plain");
        expect(entry).to.include({ level: "info", msg: "line" });
      });
    });
  }
});
