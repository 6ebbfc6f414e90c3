// The terminal chat client (src/cli/chat.ts) run as a real process, driven
// through pipes, against a real server: rooms, messages both ways, private
// messages, history, a clean exit, and a cut connection resumed without loss.
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import type { Client } from "@connectrpc/connect";
import { expect } from "chai";
import { ChatService, type ChatResponse } from "../../gen/agora/chat/v1/chat_pb.js";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { client, eventually, signUp, startTestServer, type TestServer } from "../support/harness.js";
import { REPO_ROOT } from "../support/processes.js";

const WAIT_MS = 15_000;

/** One `src/cli/chat.ts` process with piped stdio. */
class ChatCli {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  stderr = "";
  readonly exited: Promise<number | null>;
  private partial = "";

  constructor(server: string, username: string, password = `password-of-${username}`) {
    const env = { ...process.env };
    for (const name of ["AGORA_SERVER", "AGORA_USERNAME", "AGORA_PASSWORD"]) delete env[name];
    this.child = spawn(
      process.execPath,
      ["--import", "tsx", "src/cli/chat.ts", "--server", server, "--username", username, "--password", password],
      { cwd: REPO_ROOT, env, stdio: ["pipe", "pipe", "pipe"] },
    );
    this.child.stdout!.setEncoding("utf8");
    this.child.stderr!.setEncoding("utf8");
    this.child.stdout!.on("data", (chunk: string) => {
      const parts = (this.partial + chunk).split("\n");
      this.partial = parts.pop() ?? "";
      this.lines.push(...parts);
    });
    this.child.stderr!.on("data", (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => this.child.once("close", (code) => resolve(code)));
  }

  type(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Waits (bounded) for an output line matching `match`; returns it. */
  async waitFor(match: string | RegExp, timeoutMs = WAIT_MS): Promise<string> {
    const test = (l: string) => (typeof match === "string" ? l === match : match.test(l));
    try {
      await eventually(() => this.lines.some(test) || this.child.exitCode !== null, `"${String(match)}"`, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.describe()}`);
    }
    const line = this.lines.find(test);
    if (!line) throw new Error(`exited (${this.child.exitCode}) before "${String(match)}"\n${this.describe()}`);
    return line;
  }

  count(match: string): number {
    return this.lines.filter((l) => l === match).length;
  }

  /** Waits (bounded) for the exit code. */
  async exitCode(timeoutMs = WAIT_MS): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`did not exit within ${timeoutMs} ms\n${this.describe()}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }

  describe(): string {
    return `--- stdout ---\n${this.lines.join("\n")}\n${this.partial}\n--- stderr ---\n${this.stderr}`;
  }
}

/** Reads a Subscribe stream in the background. */
class Subscriber {
  readonly events: ChatResponse[] = [];
  private readonly ac = new AbortController();
  readonly done: Promise<void>;

  constructor(chat: Client<typeof ChatService>) {
    this.done = (async () => {
      try {
        for await (const res of chat.subscribe({}, { signal: this.ac.signal })) if (res.event) this.events.push(res.event);
      } catch {
        // aborted
      }
    })();
  }

  /** The subscription is live once the first heartbeat came (HEARTBEAT_INTERVAL_MS is short here). */
  ready(): Promise<void> {
    return eventually(() => this.events.some((e) => e.event.case === "heartbeat"), "a heartbeat on Subscribe", WAIT_MS);
  }

  texts(): string[] {
    return this.events.flatMap((e) => (e.event.case === "message" ? [`${e.event.value.senderName}: ${e.event.value.text}`] : []));
  }

  close(): Promise<void> {
    this.ac.abort();
    return this.done;
  }
}

/** A TCP relay in front of the server whose connections can be cut, and new ones refused for a while. */
class CuttableProxy {
  private readonly sockets = new Set<net.Socket>();
  private refusing = false;
  readonly server: net.Server;

  constructor(private readonly target: URL) {
    this.server = net.createServer((inbound) => {
      if (this.refusing) return inbound.destroy();
      const outbound = net.connect(Number(target.port), target.hostname);
      for (const s of [inbound, outbound]) {
        this.sockets.add(s);
        s.on("error", () => undefined);
        s.on("close", () => {
          this.sockets.delete(s);
          inbound.destroy();
          outbound.destroy();
        });
      }
      inbound.pipe(outbound).pipe(inbound);
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  /** Drops every open connection; refuses new ones until accept(). */
  cut(): void {
    this.refusing = true;
    for (const s of this.sockets) s.destroy();
  }

  accept(): void {
    this.refusing = false;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

describe("chat CLI (e2e, piped child processes)", function () {
  this.timeout(90_000);

  let server: TestServer;
  let bobChat: Client<typeof ChatService>;
  let aliceId: string;
  const clis: ChatCli[] = [];
  const subscribers: Subscriber[] = [];
  const start = (username: string, url = server.url, password?: string) => {
    const cli = new ChatCli(url, username, password);
    clis.push(cli);
    return cli;
  };

  before(async () => {
    server = await startTestServer({ HEARTBEAT_INTERVAL_MS: "200" });
    const aliceToken = await signUp(server.url, "alice");
    aliceId = (await client(IdentityService, server.url, "grpc", aliceToken).getMe({})).user!.id;
    bobChat = client(ChatService, server.url, "grpc", await signUp(server.url, "bob"));
  });

  afterEach(async () => {
    for (const cli of clis.splice(0)) cli.kill();
    await Promise.all(subscribers.splice(0).map((s) => s.close()));
  });

  after(async () => {
    await server?.shutdown();
  });

  /** bob joins the room through the API and follows everything with Subscribe. */
  async function bobInRoom(name: string): Promise<{ roomId: string; bob: Subscriber }> {
    const room = (await bobChat.listRooms({})).rooms.find((r) => r.name === name);
    expect(room, `room ${name}`).to.not.equal(undefined);
    await bobChat.joinRoom({ roomId: room!.id });
    const bob = new Subscriber(bobChat);
    subscribers.push(bob);
    await bob.ready();
    return { roomId: room!.id, bob };
  }

  it("creates and joins a room, exchanges messages and private messages, pages history, and exits 0 on /quit", async () => {
    const alice = start("alice");
    await alice.waitFor("connected as alice");
    alice.type("/create lobby");
    await alice.waitFor("ok: created lobby");
    alice.type("/join lobby");
    await alice.waitFor("ok: joined lobby");

    const { roomId, bob } = await bobInRoom("lobby");
    await alice.waitFor("* bob joined lobby");
    await bobChat.sendMessage({ message: { to: { target: { case: "roomId", value: roomId } }, clientId: "bob-1", text: "hello from bob" } });
    await alice.waitFor("[lobby] bob: hello from bob");

    alice.type("hi bob");
    await eventually(() => bob.texts().includes("alice: hi bob"), "bob to receive alice's message", WAIT_MS);
    await alice.waitFor("[lobby] alice: hi bob");

    alice.type("/msg bob just for you");
    await alice.waitFor("private to bob: just for you");
    await eventually(() => bob.texts().includes("alice: just for you"), "bob to receive the private message", WAIT_MS);
    await bobChat.sendMessage({ message: { to: { target: { case: "userId", value: aliceId } }, clientId: "bob-2", text: "thanks" } });
    await alice.waitFor("private from bob: thanks");

    alice.type("/members");
    await alice.waitFor(/^members of lobby: .*alice \(online\).*$/);
    alice.type("/who");
    await alice.waitFor(/^online: .*bob \(online\)/);
    alice.type("/status away");
    await alice.waitFor("* alice is now away");
    alice.type("/history 2");
    await alice.waitFor("history #4 [lobby] alice: hi bob");
    await alice.waitFor("history #3 [lobby] bob: hello from bob");
    alice.type("/history 2");
    await alice.waitFor("history #1 * alice joined lobby");
    await alice.waitFor("ok: no older messages");
    alice.type("/join nowhere");
    await alice.waitFor("! error: no room nowhere");
    alice.type("x".repeat(4001));
    await alice.waitFor("! error: a message has at most 4000 characters");
    alice.type("/frobnicate");
    await alice.waitFor("! error: unknown command /frobnicate (try /help)");
    alice.type("still here");
    await alice.waitFor("[lobby] alice: still here");

    alice.type("/quit");
    expect(await alice.exitCode()).to.equal(0);
    expect(alice.count("[lobby] bob: hello from bob"), "shown once").to.equal(1);
    expect(alice.count("[lobby] alice: hi bob"), "own message shown once").to.equal(1);
  });

  it("talks CLI to CLI and exits 0 when stdin ends, after its last message was stored", async () => {
    const alice = start("alice");
    const bob = start("bob");
    await alice.waitFor("connected as alice");
    await bob.waitFor("connected as bob");
    alice.type("/create patio");
    await alice.waitFor("ok: created patio");
    alice.type("/join patio");
    await alice.waitFor("ok: joined patio");
    bob.type("/join patio");
    await bob.waitFor("ok: joined patio");
    await alice.waitFor("* bob joined patio");

    bob.type("hello from bob");
    await alice.waitFor("[patio] bob: hello from bob");
    bob.type("/create attic private");
    await bob.waitFor("ok: created attic");
    bob.type("/join attic");
    await bob.waitFor("ok: joined attic");
    bob.type("/leave attic");
    await bob.waitFor("ok: left attic");
    bob.type("/switch patio");
    await bob.waitFor("ok: now in patio");
    alice.type("hi bob");
    alice.child.stdin!.end();
    expect(await alice.exitCode()).to.equal(0);
    await bob.waitFor("[patio] alice: hi bob");
    await bob.waitFor("* alice is now offline");
    bob.type("/quit");
    expect(await bob.exitCode()).to.equal(0);
  });

  it("reconnects after the connection is cut and shows what it missed exactly once", async () => {
    const proxy = new CuttableProxy(new URL(server.url));
    const url = await proxy.listen();
    try {
      const alice = start("alice", url);
      await alice.waitFor("connected as alice");
      alice.type("/create porch");
      await alice.waitFor("ok: created porch");
      alice.type("/join porch");
      await alice.waitFor("ok: joined porch");
      const { roomId } = await bobInRoom("porch");
      const to = { target: { case: "roomId" as const, value: roomId } };
      await bobChat.sendMessage({ message: { to, clientId: "porch-1", text: "before the cut" } });
      await alice.waitFor("[porch] bob: before the cut");

      proxy.cut();
      await alice.waitFor(/^\* connection lost/);
      await bobChat.sendMessage({ message: { to, clientId: "porch-2", text: "while you were away" } });
      alice.type("typed while away");
      proxy.accept();
      await alice.waitFor("reconnected");
      await alice.waitFor("[porch] bob: while you were away");
      await alice.waitFor("[porch] alice: typed while away");
      await bobChat.sendMessage({ message: { to, clientId: "porch-3", text: "after the cut" } });
      await alice.waitFor("[porch] bob: after the cut");

      const history = await bobChat.getHistory({ conversation: to, pageSize: 50 });
      expect(history.messages.filter((m) => m.text === "typed while away")).to.have.length(1);
      for (const text of ["before the cut", "while you were away", "after the cut"]) {
        expect(alice.count(`[porch] bob: ${text}`), text).to.equal(1);
      }
      alice.type("/quit");
      expect(await alice.exitCode()).to.equal(0);
    } finally {
      await proxy.close();
    }
  });

  it("exits 1 with an error line when the login is refused", async () => {
    const mallory = start("alice", server.url, "not-the-password");
    expect(await mallory.exitCode()).to.equal(1);
    expect(mallory.lines.some((l) => l.startsWith("! error: login failed"))).to.equal(true, mallory.describe());
  });

  // Last: it replaces the shared server with a new one on the same port and database.
  it("reconnects across a server restart and resumes without loss or duplicates", async () => {
    const alice = start("alice");
    await alice.waitFor("connected as alice");
    alice.type("/create deck");
    await alice.waitFor("ok: created deck");
    alice.type("/join deck");
    await alice.waitFor("ok: joined deck");
    const { roomId, bob } = await bobInRoom("deck");
    const to = { target: { case: "roomId" as const, value: roomId } };
    await bobChat.sendMessage({ message: { to, clientId: "deck-1", text: "before the restart" } });
    await alice.waitFor("[deck] bob: before the restart");
    await bob.close();

    const port = server.port;
    await server.shutdown();
    await alice.waitFor(/^\* connection lost/);
    server = await startTestServer({ HEARTBEAT_INTERVAL_MS: "200", PORT: String(port) }, server.databaseUrl);
    await bobChat.sendMessage({ message: { to, clientId: "deck-2", text: "during the restart" } });
    await alice.waitFor("reconnected");
    await alice.waitFor("[deck] bob: during the restart");
    alice.type("back again");
    await alice.waitFor("[deck] alice: back again");
    expect(alice.count("[deck] bob: before the restart")).to.equal(1);
    expect(alice.count("[deck] bob: during the restart")).to.equal(1);
    alice.type("/quit");
    expect(await alice.exitCode()).to.equal(0);
  });
});
