// The Python game example (examples/python/game_example.py), with stubs
// generated from the protos, plays a whole game against a real server: a
// challenge, moves over the bidi Play stream and unary MakeMove, a stale move
// refused with its google.rpc details, a spectator on WatchGame, the ratings.
import fs from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { REPO_ROOT } from "../../scripts/cluster.js";
import { runCommand } from "../support/rpc-tools.js";
import { startTestServer, type TestServer } from "../support/harness.js";

const PY_DIR = path.join(REPO_ROOT, "examples", "python");

describe("e2e: the Python game example plays a whole game", function () {
  this.timeout(300_000);
  let server: TestServer;

  before(async () => {
    // The stubs are git-ignored: generate them when this checkout has none yet.
    if (!fs.existsSync(path.join(PY_DIR, "gen", "agora", "game", "v1", "game_pb2_grpc.py"))) {
      const gen = await runCommand("bash", [path.join(REPO_ROOT, "scripts", "generate-clients.sh")], 280_000);
      expect(gen.code, gen.stderr).to.equal(0);
    }
    server = await startTestServer({ SERVICES: "identity,game" });
  });
  after(async () => {
    await server?.shutdown();
  });

  it("challenge, Play and MakeMove, a stale move refused, a spectator, ratings", async () => {
    const r = await runCommand("env", [`PYTHONPATH=${path.join(REPO_ROOT, ".tools", "python")}`, "python3", path.join(PY_DIR, "game_example.py"), "--server", server.url], 120_000);
    expect(r.code, `${r.stdout}\n${r.stderr}`).to.equal(0);
    const out = r.stdout;
    expect(out).to.match(/^ok {2}game: a stale move was refused \(aborted, STALE_MOVE, expected_move_number=2\)$/m);
    expect(out).to.match(/^ok {2}game: ana-\w+ won with a line after 5 moves; rating change X \+\d+\.\d, O -\d+\.\d$/m);
    expect(out).to.match(/^ok {2}game: fan-\w+ watched every move once, in order: \[0, 3, 1, 4, 2\]$/m);
    expect(out.trimEnd().split("\n").at(-1)).to.equal("python game example: all checks passed");
  });
});
