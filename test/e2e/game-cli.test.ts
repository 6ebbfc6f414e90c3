// The terminal game client (src/cli/game.ts), two players in this process
// driven through streams against a real server: a challenge, moves on the Play
// stream, refusals shown, the result with the rating change, and a rematch.
import { PassThrough } from "node:stream";
import { expect } from "chai";
import { drawBoard, GameClient } from "../../src/cli/game.js";
import { eventually, signUp, startTestServer, type TestServer } from "../support/harness.js";

class Player {
  readonly input = new PassThrough();
  readonly output = new PassThrough();
  readonly lines: string[] = [];
  readonly done: Promise<number>;

  constructor(server: string, readonly name: string) {
    this.output.setEncoding("utf8");
    let partial = "";
    this.output.on("data", (chunk: string) => {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      this.lines.push(...parts);
    });
    const cli = new GameClient({ server, username: name, password: `password-of-${name}`, input: this.input, output: this.output });
    this.done = cli.run();
  }

  type(line: string): void {
    this.input.write(`${line}\n`);
  }

  /** Waits for a line matching `match` after the first `from` lines; returns its index. */
  async waitFor(match: RegExp, from = 0): Promise<number> {
    await eventually(() => this.lines.slice(from).some((l) => match.test(l)), `${this.name}: ${match}`, 15_000);
    return from + this.lines.slice(from).findIndex((l) => match.test(l));
  }
}

describe("game CLI (e2e, two players in process)", function () {
  this.timeout(90_000);
  let server: TestServer;

  before(async () => {
    server = await startTestServer({ SERVICES: "identity,game" });
  });
  after(async () => {
    await server?.shutdown();
  });

  it("draws the board", () => {
    expect(drawBoard("X...O...X")).to.deep.equal([" X | 2 | 3", "---+---+---", " 4 | O | 6", "---+---+---", " 7 | 8 | X"]);
  });

  it("challenge, moves, a refused move, the result with the rating change, and a rematch", async () => {
    await Promise.all([signUp(server.url, "cli_ann"), signUp(server.url, "cli_bob")]);
    const ann = new Player(server.url, "cli_ann");
    const bob = new Player(server.url, "cli_bob");
    await ann.waitFor(/^signed in as cli_ann/);
    const bobLine = bob.lines[await bob.waitFor(/^signed in as cli_bob/)]!;
    const id = /id ([0-9a-f-]{36})/.exec(bobLine)![1]!;

    ann.type(`/challenge ${id}`);
    const gameId = /game ([0-9a-f-]{36})/.exec(ann.lines[await ann.waitFor(/^challenge sent/)]!)![1]!;
    bob.type(`/accept ${gameId}`);
    await ann.waitFor(/ vs .*(your move|'s move)/);
    // Who plays X was drawn at random: let the players take turns by what the client says.
    const x = (await new Promise<Player>((resolve) => {
      const check = () => {
        const last = (p: Player) => p.lines.filter((l) => / vs /.test(l)).at(-1) ?? "";
        if (/your move/.test(last(ann))) resolve(ann);
        else if (/your move/.test(last(bob))) resolve(bob);
        else setTimeout(check, 20);
      };
      check();
    }));
    const o = x === ann ? bob : ann;
    let mark = o.lines.length;
    x.type("1");
    await o.waitFor(/your move/, mark);
    mark = o.lines.length;
    o.type("1"); // taken
    await o.waitFor(/^refused: cell 1|^refused: cell 0/, mark);
    for (const [p, cell] of [[o, "4"], [x, "2"], [o, "5"], [x, "3"]] as const) {
      const other = p === x ? o : x;
      const from = other.lines.length;
      p.type(cell);
      if (cell !== "3") await other.waitFor(/your move/, from);
    }
    await x.waitFor(/won \(line\), your rating \+/);
    await o.waitFor(/won \(line\), your rating -/);
    expect(x.lines).to.include(" X | X | X");

    o.type("/rematch");
    await x.waitFor(/a rematch is offered/);
    x.type("/rematch");
    await x.waitFor(/^rematch accepted: joining it/);
    await o.waitFor(/^rematch accepted: joining it/);
    o.type("/stats");
    await o.waitFor(/^rating \d+ ±\d+ \(provisional\), 0 won, 1 lost/);
    ann.type("/quit");
    bob.type("/quit");
    expect(await ann.done).to.equal(0);
    expect(await bob.done).to.equal(0);
  });
});
