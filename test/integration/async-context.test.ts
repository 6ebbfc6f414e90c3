// Node 20's promise hooks stay off in a server that has served every kind of
// write: MikroORM's transactional() and flush() would switch them on for good
// (an AsyncLocalStorage) and every promise of every call would pay for them
// (transaction() in src/platform/db.ts). The check runs in a process of its own,
// since anything else in this one (a test, a library) could have switched them on.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";

const PROBE = path.join(import.meta.dirname, "..", "support", "async-context-probe.ts");

describe("async context", () => {
  it("keeps Node's promise hooks off while every service writes (no AsyncLocalStorage is ever run)", async function () {
    this.timeout(120_000);
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", PROBE], { env: process.env, maxBuffer: 1 << 20 });
    const result = JSON.parse(stdout.trim().split("\n").pop()!) as { before: boolean; after: boolean };
    expect(result).to.deep.equal({ before: false, after: false });
  });
});
