import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import {
  ChatRequestSchema,
  ChatService,
  MessageKind,
  Presence,
  RoomVisibility,
  type ChatRequest,
  type ChatResponse,
  type Message,
} from "../../gen/agora/chat/v1/chat_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import {
  client,
  eventually,
  freshDatabase,
  genericPlanDatabase,
  PROTOCOLS,
  rpcError,
  signUp,
  startTestServer,
  tableReads,
  type ProtocolName,
  type TestServer,
} from "../support/harness.js";
import { Outbox } from "../../src/cli/chat.js";
import { anyUnpack } from "@bufbuild/protobuf/wkt";

type Chat = Client<typeof ChatService>;
type Command = MessageInitShape<typeof ChatRequestSchema>["command"];

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ENV = { HEARTBEAT_INTERVAL_MS: "300", CHAT_MESSAGES_PER_SECOND: "1000", CHAT_STREAM_BUFFER: "5000" };

let unique = 0;
/** A username no other test uses (3 to 32 characters). */
const name = (prefix: string) => `${prefix}${process.pid % 1000}x${++unique}`;

/** The user id in an access token (its `sub` claim). */
function userIdOf(token: string): string {
  return (JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as { sub: string }).sub;
}

interface User {
  name: string;
  token: string;
  id: string;
}

async function newUser(url: string, prefix: string): Promise<User> {
  const username = name(prefix);
  const token = await signUp(url, username);
  return { name: username, token, id: userIdOf(token) };
}

const toRoom = (roomId: string) => ({ target: { case: "roomId" as const, value: roomId } });
const toUser = (userId: string) => ({ target: { case: "userId" as const, value: userId } });

/** Reads a stream of ChatResponse in the background and keeps everything. */
class Events {
  readonly all: ChatResponse[] = [];
  error: ConnectError | undefined;
  ended = false;
  readonly abort = new AbortController();
  private stopAfterTexts = Infinity;

  constructor(open: (signal: AbortSignal) => AsyncIterable<ChatResponse>, options: { stopAfterTexts?: number } = {}) {
    this.stopAfterTexts = options.stopAfterTexts ?? Infinity;
    void this.run(open(this.abort.signal));
  }

  private async run(stream: AsyncIterable<ChatResponse>): Promise<void> {
    try {
      for await (const event of stream) {
        this.all.push(event);
        if (this.texts().length >= this.stopAfterTexts) {
          this.abort.abort();
          break;
        }
      }
    } catch (err) {
      if (!this.abort.signal.aborted) this.error = ConnectError.from(err);
    } finally {
      this.ended = true;
    }
  }

  /** Stored messages delivered as `message` events (optionally of one conversation), in arrival order. */
  messages(conversationId?: string): Message[] {
    return this.all
      .filter((e) => e.event.case === "message")
      .map((e) => e.event.value as Message)
      .filter((m) => conversationId === undefined || m.conversationId === conversationId);
  }

  texts(conversationId?: string): Message[] {
    return this.messages(conversationId).filter((m) => m.kind === MessageKind.TEXT);
  }

  presences(userId: string): Presence[] {
    return this.all.flatMap((e) => (e.event.case === "presence" && e.event.value.userId === userId ? [e.event.value.presence] : []));
  }

  get heartbeats(): number {
    return this.all.filter((e) => e.event.case === "heartbeat").length;
  }

  /** The server has registered the stream once it sent anything (a heartbeat at the latest). */
  async ready(): Promise<void> {
    await eventually(() => this.all.length > 0 || this.ended, "the stream's first event");
    if (this.error) throw this.error;
    expect(this.ended, "stream ended before its first event").to.equal(false);
  }

  async until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    await eventually(() => check() || this.ended, what, timeoutMs);
    if (!check()) throw this.error ?? new Error(`stream ended before ${what}`);
  }

  close(): void {
    this.abort.abort();
  }
}

function subscribe(c: Chat, cursors: { conversationId: string; afterSequence: bigint }[] = [], options: { stopAfterTexts?: number } = {}): Events {
  return new Events(
    (signal) =>
      (async function* () {
        for await (const r of c.subscribe({ cursors }, { signal })) yield r.event!;
      })(),
    options,
  );
}

/** A bidi Chat stream: commands pushed by the test, events read in the background. */
class ChatStream {
  readonly requests = new Outbox<ChatRequest>();
  readonly events: Events;
  private refs = 0;

  constructor(c: Chat) {
    this.events = new Events((signal) => c.chat(this.requests, { signal }));
  }

  push(command: Command, ref = `r${++this.refs}`): string {
    this.requests.push(create(ChatRequestSchema, { ref, command }));
    return ref;
  }

  /** Sends a command and waits for the event answering it (same ref). */
  async call(command: Command, timeoutMs = 10_000): Promise<ChatResponse> {
    const ref = this.push(command);
    let answer: ChatResponse | undefined;
    await this.events.until(() => (answer = this.events.all.find((e) => e.ref === ref)) !== undefined, `an answer to ${command?.case} (${ref})`, timeoutMs);
    return answer!;
  }

  async join(roomId: string, afterSequence = 0n): Promise<void> {
    const answer = await this.call({ case: "join", value: { conversationId: roomId, afterSequence } });
    expect(answer.event.case, show(answer.event.value)).to.equal("joined");
  }

  async send(to: ReturnType<typeof toRoom> | ReturnType<typeof toUser>, clientId: string, text: string, timeoutMs?: number): Promise<Message> {
    const answer = await this.call({ case: "send", value: { to, clientId, text } }, timeoutMs);
    if (answer.event.case !== "sent") throw new Error(`send failed: ${show(answer.event.value)}`);
    return answer.event.value;
  }

  /** Half-closes the request side: the server ends the stream normally. */
  end(): void {
    this.requests.close();
  }

  close(): void {
    this.requests.close();
    this.events.close();
  }
}

const show = (x: unknown) => JSON.stringify(x, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
const seqs = (ms: Message[]) => ms.map((m) => Number(m.sequence));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("chat service", function () {
  let a: TestServer;
  let b: TestServer;
  const cleanups: (() => void)[] = [];

  before(async () => {
    const url = await freshDatabase();
    a = await startTestServer(ENV, url);
    b = await startTestServer(ENV, url);
  });
  afterEach(() => {
    for (const c of cleanups.splice(0)) c();
  });
  after(async () => {
    await a?.shutdown();
    await b?.shutdown();
  });

  const chatOf = (u: User, server: TestServer = a, protocol: ProtocolName = "grpc") => client(ChatService, server.url, protocol, u.token);
  const track = <T extends { close(): void }>(x: T): T => {
    cleanups.push(() => x.close());
    return x;
  };

  async function publicRoom(owner: User, members: User[] = []): Promise<string> {
    const { room } = await chatOf(owner).createRoom({ name: name("room"), visibility: RoomVisibility.PUBLIC });
    for (const m of members) await chatOf(m).joinRoom({ roomId: room!.id });
    return room!.id;
  }

  it("delivers 1,000 messages from 50 clients on two instances to every client exactly once, in one order", async function () {
    this.timeout(90_000);
    const users = await Promise.all(Array.from({ length: 10 }, () => newUser(a.url, "load")));
    const roomId = await publicRoom(users[0]!, users.slice(1));
    const CLIENTS = 50;
    const PER_CLIENT = 20;
    // Client i: instance i % 2; Subscribe + SendMessage or a Chat stream, alternating per instance.
    const clients = Array.from({ length: CLIENTS }, (_, i) => {
      const server = i % 2 === 0 ? a : b;
      const user = users[i % users.length]!;
      const c = chatOf(user, server);
      if (Math.floor(i / 2) % 2 === 0) {
        const events = track(subscribe(c));
        return { events, send: async (clientId: string, text: string) => (await c.sendMessage({ message: { to: toRoom(roomId), clientId, text } })).message!, ready: () => events.ready() };
      }
      const stream = track(new ChatStream(c));
      // This test's own timeout bounds it: how long one send waits here depends on the machine, not on correctness.
      const send = (clientId: string, text: string) => stream.send(toRoom(roomId), clientId, text, 80_000);
      return { events: stream.events, send, ready: () => stream.join(roomId) };
    });
    await Promise.all(clients.map((c) => c.ready()));

    const acks = await Promise.all(
      clients.map(async (c, i) => {
        const mine: Message[] = [];
        for (let j = 0; j < PER_CLIENT; j++) mine.push(await c.send(`c${i}-m${j}`, `client ${i} message ${j}`));
        return mine;
      }),
    );
    const total = CLIENTS * PER_CLIENT;
    const ackedSeqs = acks.flat().map((m) => Number(m.sequence));
    expect(new Set(ackedSeqs).size, "every send got its own sequence").to.equal(total);

    const deadline = 60_000;
    await eventually(() => clients.every((c) => c.events.texts(roomId).length >= total || c.events.ended), "every client to receive 1000 messages", deadline);
    const reference = seqs(clients[0]!.events.texts(roomId));
    expect(reference).to.deep.equal([...ackedSeqs].sort((x, y) => x - y));
    for (const [i, c] of clients.entries()) {
      expect(c.events.error, `client ${i} stream error`).to.equal(undefined);
      const texts = c.events.texts(roomId);
      expect(texts.length, `client ${i} message count`).to.equal(total);
      expect(new Set(texts.map((m) => m.id)).size, `client ${i} duplicates`).to.equal(total);
      expect(seqs(texts), `client ${i} order`).to.deep.equal(reference);
      // Sequences strictly increase without a gap among the room's messages (JOINED/LEFT included).
      const all = seqs(c.events.messages(roomId));
      expect(all, `client ${i} gap-free`).to.deep.equal(range(all[0]!, all[0]! + all.length - 1));
    }
    const clientIds = new Set(clients[0]!.events.texts(roomId).map((m) => m.clientId));
    expect(clientIds.size).to.equal(total);
  });

  it("resumes a cancelled stream after the last sequence seen: no gap, no duplicate; a resend is stored once", async () => {
    const [sender, reader] = [await newUser(a.url, "snd"), await newUser(a.url, "rdr")];
    const roomId = await publicRoom(sender, [reader]);
    const send = (n: number) => chatOf(sender).sendMessage({ message: { to: toRoom(roomId), clientId: `m${n}`, text: `message ${n}` } });

    const first = track(subscribe(chatOf(reader), [], { stopAfterTexts: 5 }));
    await first.ready();
    for (let n = 1; n <= 10; n++) await send(n);
    await eventually(() => first.ended, "the first stream to be cancelled after 5 messages");
    const seen = first.texts(roomId);
    expect(seen.map((m) => m.text)).to.deep.equal(range(1, 5).map((n) => `message ${n}`));
    const cursor = seen.at(-1)!.sequence;

    for (let n = 11; n <= 20; n++) await send(n);
    // Reconnect on the other instance with a cursor; then live messages.
    const second = track(subscribe(chatOf(reader, b), [{ conversationId: roomId, afterSequence: cursor }]));
    await second.until(() => second.texts(roomId).length >= 15, "the 15 missed messages");
    for (let n = 21; n <= 25; n++) await send(n);
    await second.until(() => second.texts(roomId).length >= 20, "5 live messages");
    await new Promise((r) => setTimeout(r, 300));
    const resumed = second.texts(roomId);
    expect(resumed.map((m) => m.text)).to.deep.equal(range(6, 25).map((n) => `message ${n}`));
    expect(seqs(resumed)[0]).to.equal(Number(cursor) + 1);
    expect(seqs(second.messages(roomId))).to.deep.equal(range(Number(cursor) + 1, Number(cursor) + 20));

    // The same through a Chat stream: join with after_sequence.
    const chat = track(new ChatStream(chatOf(reader)));
    await chat.join(roomId, resumed[9]!.sequence); // last seen: message 15
    await chat.events.until(() => chat.events.texts(roomId).length >= 10, "messages 16..25");
    expect(chat.events.texts(roomId).map((m) => m.text)).to.deep.equal(range(16, 25).map((n) => `message ${n}`));

    // A resend with the same client_id returns the stored message and stores nothing.
    const again = await send(25);
    expect(again.message!.id).to.equal(resumed.at(-1)!.id);
    expect(again.message!.sequence).to.equal(resumed.at(-1)!.sequence);
    const viaChat = await chat.send(toRoom(roomId), "chat-once", "sent twice over Chat");
    const viaChatAgain = await chat.send(toRoom(roomId), "chat-once", "sent twice over Chat");
    expect(viaChatAgain.id).to.equal(viaChat.id);
    expect(viaChatAgain.sequence).to.equal(viaChat.sequence);
    await second.until(() => second.texts(roomId).length >= 21, "the Chat message");
    await new Promise((r) => setTimeout(r, 300));
    expect(second.texts(roomId).length, "resends delivered once").to.equal(21);
    const { messages } = await chatOf(reader).getHistory({ conversation: toRoom(roomId), pageSize: 500 });
    expect(messages.filter((m) => m.clientId === "m25")).to.have.length(1);
    expect(messages.filter((m) => m.clientId === "chat-once")).to.have.length(1);
  });

  it("reads a cursor the same way everywhere: 0 is the whole conversation (join: from now on), past the end is OUT_OF_RANGE", async () => {
    const user = await newUser(a.url, "cursor");
    const roomId = await publicRoom(user); // sequence 1: the creator's JOINED
    for (let n = 1; n <= 3; n++) await chatOf(user).sendMessage({ message: { to: toRoom(roomId), clientId: `c${n}`, text: `c${n}` } });

    const whole = track(subscribe(chatOf(user), [{ conversationId: roomId, afterSequence: 0n }]));
    await whole.until(() => whole.messages(roomId).length >= 4, "the whole conversation");
    expect(seqs(whole.messages(roomId))).to.deep.equal([1, 2, 3, 4]);

    const ahead = track(subscribe(chatOf(user, b), [{ conversationId: roomId, afterSequence: 5n }]));
    await eventually(() => ahead.ended, "the Subscribe with a cursor past the end to fail");
    expect(ahead.error?.code).to.equal(Code.OutOfRange);
    expect(ahead.error?.findDetails(ErrorInfoSchema)[0]).to.deep.include({ reason: "CURSOR_AHEAD", metadata: { conversation_id: roomId, last_sequence: "4" } });

    const stream = track(new ChatStream(chatOf(user)));
    const resumed = await stream.call({ case: "resume", value: { cursors: [{ conversationId: roomId, afterSequence: 99n }] } });
    expect(resumed.event.case === "error" && resumed.event.value.code).to.equal("out_of_range");
    await stream.join(roomId); // after_sequence 0: no cursor, nothing old
    await stream.send(toRoom(roomId), "c4", "c4");
    await stream.events.until(() => stream.events.texts(roomId).length >= 1, "the live message");
    expect(stream.events.messages(roomId).map((m) => m.text)).to.deep.equal(["c4"]);
    const rejoined = track(new ChatStream(chatOf(user, b)));
    await rejoined.join(roomId, 3n);
    await rejoined.events.until(() => rejoined.events.texts(roomId).length >= 2, "the messages after the cursor");
    expect(seqs(rejoined.events.messages(roomId))).to.deep.equal([4, 5]);
  });

  it("follows, on a Subscribe stream, a room the user joins after the stream opened", async () => {
    const [owner, joiner] = [await newUser(a.url, "own"), await newUser(a.url, "late")];
    const roomId = await publicRoom(owner);
    const sub = track(subscribe(chatOf(joiner)));
    await sub.ready();
    await chatOf(joiner).joinRoom({ roomId });
    await chatOf(owner).sendMessage({ message: { to: toRoom(roomId), clientId: "after-join", text: "welcome" } });
    await sub.until(() => sub.texts(roomId).length >= 1, "the message of the newly joined room", 5_000);
    expect(sub.texts(roomId)[0]!.text).to.equal("welcome");
  });

  describe("isolation", () => {
    it("keeps a private room from non-members until they are invited and join", async () => {
      const [owner, outsider] = [await newUser(a.url, "priv"), await newUser(a.url, "out")];
      const { room } = await chatOf(owner).createRoom({ name: name("secret"), visibility: RoomVisibility.PRIVATE });
      const roomId = room!.id;
      await chatOf(owner).sendMessage({ message: { to: toRoom(roomId), clientId: "s1", text: "members only" } });
      const x = chatOf(outsider);

      expect((await rpcError(x.getHistory({ conversation: toRoom(roomId) }))).code).to.equal(Code.NotFound);
      expect((await rpcError(x.sendMessage({ message: { to: toRoom(roomId), clientId: "x1", text: "let me in" } }))).code).to.equal(Code.NotFound);
      expect((await rpcError(x.joinRoom({ roomId }))).code).to.equal(Code.NotFound);
      expect((await rpcError(x.listMembers({ roomId }))).code).to.equal(Code.NotFound);
      expect((await x.listRooms({})).rooms.map((r) => r.id)).to.not.include(roomId);
      const peek = track(subscribe(x, [{ conversationId: roomId, afterSequence: 0n }]));
      await eventually(() => peek.ended, "the peeking Subscribe to fail");
      expect(peek.error?.code).to.equal(Code.NotFound);
      expect(peek.texts()).to.have.length(0);
      const chat = track(new ChatStream(x));
      const denied = await chat.call({ case: "join", value: { conversationId: roomId, afterSequence: 0n } });
      expect(denied.event.case).to.equal("error");
      expect(denied.event.case === "error" && denied.event.value.code).to.equal("not_found");
      const resumed = await chat.call({ case: "send", value: { to: toRoom(roomId), clientId: "x2", text: "hi" } });
      expect(resumed.event.case === "error" && resumed.event.value.code).to.equal("not_found");
      // An invitation by a non-member is refused too.
      expect((await rpcError(x.inviteToRoom({ roomId, userId: outsider.id }))).code).to.equal(Code.NotFound);

      await chatOf(owner).inviteToRoom({ roomId, userId: outsider.id });
      await x.joinRoom({ roomId });
      const { messages } = await x.getHistory({ conversation: toRoom(roomId) });
      expect(messages.map((m) => m.text)).to.include("members only");
      const sent = await x.sendMessage({ message: { to: toRoom(roomId), clientId: "x3", text: "thanks" } });
      expect(sent.message!.senderId).to.equal(outsider.id);
      expect((await x.listMembers({ roomId })).members.map((m) => m.userId)).to.have.members([owner.id, outsider.id]);
    });

    it("shows a direct conversation only to its two participants", async () => {
      const [u1, u2, third] = [await newUser(a.url, "dmA"), await newUser(a.url, "dmB"), await newUser(a.url, "dmC")];
      const shared = await publicRoom(u1, [u2, third]);
      const u2Stream = track(subscribe(chatOf(u2, b)));
      const thirdSub = track(subscribe(chatOf(third, b)));
      const thirdChat = track(new ChatStream(chatOf(third)));
      await Promise.all([u2Stream.ready(), thirdSub.ready(), thirdChat.join(shared)]);

      const { message: dm } = await chatOf(u1).sendMessage({ message: { to: toUser(u2.id), clientId: "dm1", text: "just between us" } });
      expect(dm!.recipientId).to.equal(u2.id);
      await u2Stream.until(() => u2Stream.texts(dm!.conversationId).length >= 1, "the direct message at its recipient");
      expect(u2Stream.texts(dm!.conversationId)[0]!.id).to.equal(dm!.id);
      // A later room message as a sync point: the third user saw that, never the direct one.
      await chatOf(u1).sendMessage({ message: { to: toRoom(shared), clientId: "room1", text: "public" } });
      await thirdSub.until(() => thirdSub.texts(shared).length >= 1, "the room message (third, Subscribe)");
      await thirdChat.events.until(() => thirdChat.events.texts(shared).length >= 1, "the room message (third, Chat)");
      expect(thirdSub.texts().map((m) => m.id)).to.not.include(dm!.id);
      expect(thirdChat.events.texts().map((m) => m.id)).to.not.include(dm!.id);

      const mine = await chatOf(u2).getHistory({ conversation: toUser(u1.id) });
      expect(mine.conversationId).to.equal(dm!.conversationId);
      expect(mine.messages.map((m) => m.id)).to.deep.equal([dm!.id]);
      const theirs = await chatOf(third).getHistory({ conversation: toUser(u1.id) });
      expect(theirs.conversationId).to.not.equal(dm!.conversationId);
      expect(theirs.messages).to.have.length(0);

      const peek = track(subscribe(chatOf(third), [{ conversationId: dm!.conversationId, afterSequence: 0n }]));
      await eventually(() => peek.ended, "the peeking Subscribe to fail");
      expect(peek.error?.code).to.equal(Code.NotFound);
      expect(peek.texts().map((m) => m.id)).to.not.include(dm!.id);
      const resume = await thirdChat.call({ case: "resume", value: { cursors: [{ conversationId: dm!.conversationId, afterSequence: 0n }] } }, 5_000).catch(() => undefined);
      expect(resume?.event.case === "error" && resume.event.value.code).to.equal("not_found");
      expect(thirdChat.events.texts().map((m) => m.id)).to.not.include(dm!.id);
    });
  });

  describe("presence", () => {
    it("is ONLINE while a stream is open, pushes BUSY/AWAY to room-mates and goes OFFLINE when the last stream closes", async () => {
      const [watcher, p] = [await newUser(a.url, "watch"), await newUser(a.url, "pres")];
      const roomId = await publicRoom(watcher, [p]);
      const watch = track(subscribe(chatOf(watcher, b)));
      await watch.ready();
      const online = async () => (await chatOf(watcher).listOnlineUsers({ pageSize: 1000 })).users.find((u) => u.userId === p.id)?.presence;
      const member = async () => (await chatOf(watcher).listMembers({ roomId })).members.find((m) => m.userId === p.id)?.presence;
      expect(await online()).to.equal(undefined);
      expect(await member()).to.equal(Presence.OFFLINE);

      const stream = track(new ChatStream(chatOf(p)));
      await stream.events.ready();
      await watch.until(() => watch.presences(p.id).includes(Presence.ONLINE), "ONLINE pushed to the room-mate");
      expect(await online()).to.equal(Presence.ONLINE);
      expect(await member()).to.equal(Presence.ONLINE);

      // A second stream of the same user (other instance) does not change anything when one of them closes.
      const second = track(subscribe(chatOf(p, b)));
      await second.ready();

      await chatOf(p).setPresence({ presence: Presence.BUSY });
      await watch.until(() => watch.presences(p.id).includes(Presence.BUSY), "BUSY pushed to the room-mate");
      expect(await online()).to.equal(Presence.BUSY);
      expect(await member()).to.equal(Presence.BUSY);
      stream.push({ case: "setPresence", value: Presence.AWAY });
      await watch.until(() => watch.presences(p.id).includes(Presence.AWAY), "AWAY (set on the Chat stream) pushed");
      expect(await online()).to.equal(Presence.AWAY);

      second.close();
      await new Promise((r) => setTimeout(r, 500));
      expect(watch.presences(p.id)).to.not.include(Presence.OFFLINE);
      expect(await online()).to.equal(Presence.AWAY);

      stream.end();
      await eventually(() => stream.events.ended, "the Chat stream to end after the half-close");
      expect(stream.events.error).to.equal(undefined);
      await watch.until(() => watch.presences(p.id).includes(Presence.OFFLINE), "OFFLINE pushed to the room-mate");
      expect(await online()).to.equal(undefined);
      expect(await member()).to.equal(Presence.OFFLINE);
    });

    it("tells a room's members at once that an online user who joins it is online (the joiner's stream stays open)", async () => {
      const [watcher, joiner] = [await newUser(a.url, "host"), await newUser(a.url, "newc")];
      const roomId = await publicRoom(watcher, []);
      const watch = track(subscribe(chatOf(watcher, b)));
      await watch.ready();
      const stream = track(subscribe(chatOf(joiner)));
      await stream.ready();
      await new Promise((r) => setTimeout(r, 300));
      expect(watch.presences(joiner.id), "no room shared yet: nothing pushed").to.deep.equal([]);
      await chatOf(joiner).joinRoom({ roomId });
      await watch.until(() => watch.presences(joiner.id).includes(Presence.ONLINE), "the joiner's ONLINE pushed to the room");
      // A second join changes nothing and announces nothing.
      await chatOf(joiner).joinRoom({ roomId });
      await new Promise((r) => setTimeout(r, 300));
      expect(watch.presences(joiner.id)).to.deep.equal([Presence.ONLINE]);
    });

    it("turns a user whose client process was killed OFFLINE", async function () {
      this.timeout(30_000);
      const [watcher, victim] = [await newUser(a.url, "wit"), await newUser(a.url, "kill")];
      const roomId = await publicRoom(watcher, [victim]);
      const watch = track(subscribe(chatOf(watcher)));
      await watch.ready();

      const script = `
        import { createClient } from "@connectrpc/connect";
        import { createGrpcTransport } from "@connectrpc/connect-node";
        import { ChatService } from "./gen/agora/chat/v1/chat_pb.ts";
        const transport = createGrpcTransport({
          baseUrl: ${JSON.stringify(a.url)},
          interceptors: [(next) => (req) => { req.header.set("authorization", "Bearer " + ${JSON.stringify(victim.token)}); return next(req); }],
        });
        const requests = (async function* () { await new Promise(() => setInterval(() => {}, 1000)); })();
        for await (const res of createClient(ChatService, transport).chat(requests)) {
          process.stdout.write("EVENT " + res.event.case + "\\n");
        }
      `;
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      cleanups.push(() => child.kill("SIGKILL"));
      try {
        await eventually(() => out.includes("EVENT") || child.exitCode !== null, "the child's stream to open", 15_000);
        expect(child.exitCode, `child output: ${out}`).to.equal(null);
        await watch.until(() => watch.presences(victim.id).includes(Presence.ONLINE), "the child user ONLINE");
        const online = async () => (await chatOf(watcher).listOnlineUsers({ pageSize: 1000 })).users.some((u) => u.userId === victim.id);
        expect(await online()).to.equal(true);
        expect((await chatOf(watcher).listMembers({ roomId })).members.find((m) => m.userId === victim.id)?.presence).to.equal(Presence.ONLINE);
      } finally {
        child.kill("SIGKILL");
      }
      await watch.until(() => watch.presences(victim.id).includes(Presence.OFFLINE), "OFFLINE after the client was killed", 10_000);
      expect((await chatOf(watcher).listOnlineUsers({ pageSize: 1000 })).users.map((u) => u.userId)).to.not.include(victim.id);
      expect((await chatOf(watcher).listMembers({ roomId })).members.find((m) => m.userId === victim.id)?.presence).to.equal(Presence.OFFLINE);
    });
  });

  describe("a slow reader", () => {
    let small: TestServer;
    before(async () => {
      small = await startTestServer({ ...ENV, CHAT_STREAM_BUFFER: "20" });
    });
    after(() => small?.shutdown());

    it("is cut off with ABORTED while the others get everything, and resumes from its cursor", async function () {
      this.timeout(60_000);
      const [sender, fast, slow] = [await newUser(small.url, "s"), await newUser(small.url, "fast"), await newUser(small.url, "slow")];
      const { room } = await chatOf(sender, small).createRoom({ name: "busy room", visibility: RoomVisibility.PUBLIC });
      const roomId = room!.id;
      await chatOf(fast, small).joinRoom({ roomId });
      await chatOf(slow, small).joinRoom({ roomId });
      const fastSub = track(subscribe(chatOf(fast, small)));
      await fastSub.ready();

      // The slow reader: opened and registered (first event read), then not read any more.
      const abort = new AbortController();
      cleanups.push(() => abort.abort());
      const slowIt = chatOf(slow, small).subscribe({}, { signal: abort.signal })[Symbol.asyncIterator]();
      const firstSlow = await slowIt.next();
      expect(firstSlow.done).to.equal(false);

      const TOTAL = 100;
      // Incompressible and big enough to fill the transport's flow-control windows and socket buffers.
      const big = () => randomBytes(2_900).toString("base64");
      for (let n = 1; n <= TOTAL; n++) {
        await chatOf(sender, small).sendMessage({ message: { to: toRoom(roomId), clientId: `b${n}`, text: `${n} ${big()}` } });
      }
      await fastSub.until(() => fastSub.texts(roomId).length >= TOTAL, "the fast reader to get all 100", 30_000);
      expect(fastSub.texts(roomId).map((m) => m.text.split(" ")[0])).to.deep.equal(range(1, TOTAL).map(String));
      expect(fastSub.error).to.equal(undefined);

      // Now read the slow stream: what it got before being cut off, then ABORTED.
      const slowSeen: Message[] = [];
      let slowError: ConnectError | undefined;
      try {
        // A heartbeat after the messages means the server's queue ran dry: the stream was not cut off.
        for (;;) {
          const next = await slowIt.next();
          if (next.done) break;
          const e = next.value.event!;
          if (e.event.case === "message" && e.event.value.kind === MessageKind.TEXT) slowSeen.push(e.event.value);
          if (e.event.case === "heartbeat" && slowSeen.length > 0) break;
        }
      } catch (err) {
        slowError = ConnectError.from(err);
      }
      expect(slowError?.code, `slow stream got ${slowSeen.length} messages, then ${slowError?.message}`).to.equal(Code.Aborted);
      expect(slowSeen.length).to.be.lessThan(TOTAL);
      expect(seqs(slowSeen)).to.deep.equal(slowSeen.length ? range(seqs(slowSeen)[0]!, seqs(slowSeen)[0]! + slowSeen.length - 1) : []);

      const cursor = slowSeen.at(-1)?.sequence ?? fastSub.texts(roomId)[0]!.sequence - 1n;
      const again = track(subscribe(chatOf(slow, small), [{ conversationId: roomId, afterSequence: cursor }]));
      const missing = TOTAL - slowSeen.length;
      await again.until(() => again.texts(roomId).length >= missing, "the rest after reconnecting", 20_000);
      const all = [...slowSeen, ...again.texts(roomId)];
      expect(all.map((m) => m.text.split(" ")[0])).to.deep.equal(range(1, TOTAL).map(String));
    });

    it("does not cut off a new reader because of messages sent while nobody on its instance followed the room", async function () {
      this.timeout(20_000);
      const [sender, reader] = [await newUser(small.url, "s"), await newUser(small.url, "late")];
      const { room } = await chatOf(sender, small).createRoom({ name: "quiet room", visibility: RoomVisibility.PUBLIC });
      const roomId = room!.id;
      await chatOf(reader, small).joinRoom({ roomId });
      const send = (n: number) => chatOf(sender, small).sendMessage({ message: { to: toRoom(roomId), clientId: `q${n}`, text: `q${n}` } });
      // Someone follows the room for a while, then leaves the instance.
      const earlier = subscribe(chatOf(reader, small));
      await earlier.ready();
      await send(1);
      await earlier.until(() => earlier.texts(roomId).length >= 1, "the first message");
      earlier.close();
      await eventually(() => earlier.ended, "the first stream to end");
      // 30 messages (more than the stream buffer of 20) while nobody on this instance follows the room.
      for (let n = 2; n <= 31; n++) await send(n);
      const live = track(subscribe(chatOf(reader, small)));
      await live.ready();
      await send(32);
      await live.until(() => live.texts(roomId).length >= 1, "the live message", 5_000).catch(() => undefined);
      expect(live.error?.code, `live stream ended with ${live.error?.message}`).to.equal(undefined);
      expect(live.texts(roomId).map((m) => m.text)).to.deep.equal(["q32"]);
    });
  });

  it("carries one room conversation across gRPC (Chat), gRPC-Web and Connect (SendMessage + Subscribe)", async () => {
    const [g, w, c] = [await newUser(a.url, "grpc"), await newUser(a.url, "gweb"), await newUser(a.url, "conn")];
    const roomId = await publicRoom(g, [w, c]);
    const grpcChat = track(new ChatStream(chatOf(g, a, "grpc")));
    const web = chatOf(w, b, "grpcweb");
    const connect = chatOf(c, a, "connect");
    const webSub = track(subscribe(web));
    const connectSub = track(subscribe(connect));
    await Promise.all([grpcChat.join(roomId), webSub.ready(), connectSub.ready()]);

    for (let n = 1; n <= 3; n++) {
      await grpcChat.send(toRoom(roomId), `g${n}`, `grpc ${n}`);
      await web.sendMessage({ message: { to: toRoom(roomId), clientId: `w${n}`, text: `grpcweb ${n}` } });
      await connect.sendMessage({ message: { to: toRoom(roomId), clientId: `c${n}`, text: `connect ${n}` } });
    }
    const expected = range(1, 3).flatMap((n) => [`grpc ${n}`, `grpcweb ${n}`, `connect ${n}`]);
    for (const [label, events] of [["grpc", grpcChat.events], ["grpcweb", webSub], ["connect", connectSub]] as const) {
      await events.until(() => events.texts(roomId).length >= 9, `all 9 messages over ${label}`);
      expect(events.texts(roomId).map((m) => m.text), label).to.deep.equal(expected);
    }
  });

  describe("bad commands", () => {
    it("answers a bad command on the Chat stream with an error event carrying its ref, and the stream goes on", async () => {
      const [owner, user] = [await newUser(a.url, "own"), await newUser(a.url, "bad")];
      const roomId = await publicRoom(owner);
      const stream = track(new ChatStream(chatOf(user)));
      await stream.events.ready();

      const notJoined = await stream.call({ case: "send", value: { to: toRoom(roomId), clientId: "n1", text: "hello?" } });
      expect(notJoined.event.case).to.equal("error");
      expect(notJoined.event.case === "error" && notJoined.event.value.code).to.equal("permission_denied");
      const missing = await stream.call({ case: "join", value: { conversationId: "00000000-0000-4000-8000-000000000000", afterSequence: 0n } });
      expect(missing.event.case === "error" && missing.event.value.code).to.equal("not_found");
      const notMember = await stream.call({ case: "leaveRoomId", value: "00000000-0000-4000-8000-000000000000" });
      expect(notMember.event.case === "error" && notMember.event.value.code).to.equal("not_found");

      await stream.join(roomId);
      const sent = await stream.send(toRoom(roomId), "n2", "now I may");
      expect(sent.text).to.equal("now I may");
      expect(stream.events.error).to.equal(undefined);
      expect(stream.events.ended).to.equal(false);
    });

    it("refuses text over 4000 characters with INVALID_ARGUMENT (unary) and an invalid_argument error event (Chat)", async () => {
      const user = await newUser(a.url, "long");
      const roomId = await publicRoom(user);
      const long = "y".repeat(4001);
      const err = await rpcError(chatOf(user).sendMessage({ message: { to: toRoom(roomId), clientId: "l1", text: long } }));
      expect(err.code).to.equal(Code.InvalidArgument);
      await chatOf(user).sendMessage({ message: { to: toRoom(roomId), clientId: "l0", text: "y".repeat(4000) } });

      const stream = track(new ChatStream(chatOf(user)));
      await stream.join(roomId);
      const answer = await stream.call({ case: "send", value: { to: toRoom(roomId), clientId: "l2", text: long } }, 3_000);
      expect(answer.event.case, `stream error: ${stream.events.error?.message}`).to.equal("error");
      expect(answer.event.case === "error" && answer.event.value.code).to.equal("invalid_argument");
      const sent = await stream.send(toRoom(roomId), "l3", "short enough");
      expect(sent.text).to.equal("short enough");
      const { messages } = await chatOf(user).getHistory({ conversation: toRoom(roomId) });
      expect(messages.map((m) => m.clientId)).to.not.include.members(["l1", "l2"]);
    });

    describe("rate limit", () => {
      // The limiter and the heartbeats read the server's injected clock, which only moves when the test moves it.
      const clock = new ManualClock(new Date("2031-01-01T00:00:00Z"));
      let slow: TestServer;
      before(async () => {
        slow = await startTestServer({ ...ENV, CHAT_MESSAGES_PER_SECOND: "2" }, undefined, undefined, clock);
      });
      after(() => slow?.shutdown());

      it("answers a burst over CHAT_MESSAGES_PER_SECOND with RESOURCE_EXHAUSTED and RetryInfo, on SendMessage and on the Chat stream", async () => {
        const user = await newUser(slow.url, "burst");
        const c = chatOf(user, slow);
        const { room } = await c.createRoom({ name: "burst", visibility: RoomVisibility.PUBLIC });
        const send = (n: number) => c.sendMessage({ message: { to: toRoom(room!.id), clientId: `x${n}`, text: `burst ${n}` } });
        // The bucket holds twice the rate (4); the clock stands still, so nothing refills.
        const results = await Promise.allSettled(range(1, 10).map(send));
        const refused = results.filter((r) => r.status === "rejected").map((r) => ConnectError.from((r as PromiseRejectedResult).reason));
        expect(refused.length, "refused").to.equal(6);
        for (const e of refused) {
          expect(e.code).to.equal(Code.ResourceExhausted);
          expect(e.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds).to.equal(1n);
          expect(e.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("RATE_LIMITED");
        }
        const { messages } = await c.getHistory({ conversation: toRoom(room!.id) });
        expect(messages.filter((m) => m.kind === MessageKind.TEXT)).to.have.length(4);

        // The Chat stream shares the bucket: refused with an error event carrying the same details; the stream stays.
        const stream = track(new ChatStream(chatOf(user, slow)));
        await stream.join(room!.id);
        const refusedOnStream = await stream.call({ case: "send", value: { to: toRoom(room!.id), clientId: "y0", text: "still empty" } });
        expect(refusedOnStream.event.case === "error" && refusedOnStream.event.value.code).to.equal("resource_exhausted");
        const details = refusedOnStream.event.case === "error" ? refusedOnStream.event.value.details : [];
        const retry = details.map((d) => anyUnpack(d, RetryInfoSchema)).find((x) => x !== undefined);
        expect(retry?.retryDelay?.seconds, "RetryInfo on the error event").to.equal(1n);

        // Ten minutes later the bucket is full again, and no fuller than its burst of 4.
        clock.advance(600_000);
        const answers = await Promise.all(range(1, 5).map((n) => stream.call({ case: "send", value: { to: toRoom(room!.id), clientId: `y${n}`, text: `stream burst ${n}` } })));
        const codes = answers.map((r) => (r.event.case === "error" ? r.event.value.code : r.event.case));
        expect(codes.filter((x) => x === "sent"), codes.join()).to.have.length(4);
        expect(codes.filter((x) => x === "resource_exhausted"), codes.join()).to.have.length(1);
        expect(stream.events.ended).to.equal(false);

        // Heartbeats tell the server's (injected) time.
        const beats = () => stream.events.all.flatMap((e) => (e.event.case === "heartbeat" ? [e.event.value.time!] : []));
        await stream.events.until(() => beats().some((t) => t.seconds === BigInt(clock.now().getTime() / 1000)), "a heartbeat at the moved clock's time");
      });
    });

    it("refuses a client_id reused for a different message with INVALID_ARGUMENT naming the field (REQUEST_ID_REUSED), and stores nothing", async () => {
      const [user, peer] = [await newUser(a.url, "reuse"), await newUser(a.url, "peer")];
      const [roomId, otherRoom] = [await publicRoom(user, [peer]), await publicRoom(user)];
      const c = chatOf(user);
      const first = await c.sendMessage({ message: { to: toRoom(roomId), clientId: "k1", text: "hello" } });
      expect((await c.sendMessage({ message: { to: toRoom(roomId), clientId: "k1", text: "hello" } })).message!.id, "a true resend").to.equal(first.message!.id);
      const reused = [
        { to: toRoom(roomId), clientId: "k1", text: "something else" },
        { to: toRoom(otherRoom), clientId: "k1", text: "hello" },
        { to: toUser(peer.id), clientId: "k1", text: "hello" },
        { to: toRoom(roomId), clientId: "k1", text: "hello", attachments: [{ fileId: randomUUID(), name: "x.txt" }] },
      ];
      for (const [i, message] of reused.entries()) {
        for (const protocol of ["grpc", "grpcweb", "connect"] as const) {
          const err = await rpcError(chatOf(user, i % 2 ? b : a, protocol).sendMessage({ message }));
          expect(err.code, `${protocol} ${i}: ${err.message}`).to.equal(Code.InvalidArgument);
          expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => [v.field, v.reason])).to.deep.equal([["message.client_id", "REQUEST_ID_REUSED"]]);
          expect(err.findDetails(ErrorInfoSchema)[0]).to.include({ reason: "REQUEST_ID_REUSED", domain: "agora.dev" });
        }
      }
      const stream = track(new ChatStream(chatOf(user)));
      await stream.join(otherRoom);
      const answer = await stream.call({ case: "send", value: { to: toRoom(otherRoom), clientId: "k1", text: "over the stream" } });
      expect(answer.event.case === "error" && answer.event.value.code).to.equal("invalid_argument");
      const details = answer.event.case === "error" ? answer.event.value.details : [];
      const badRequest = details.map((d) => anyUnpack(d, BadRequestSchema)).find((x) => x !== undefined);
      expect(badRequest?.fieldViolations.map((v) => [v.field, v.reason])).to.deep.equal([["send.client_id", "REQUEST_ID_REUSED"]]);
      expect((await stream.send(toRoom(otherRoom), "k2", "a new id works")).text).to.equal("a new id works");

      const texts = async (to: ReturnType<typeof toRoom> | ReturnType<typeof toUser>) =>
        (await c.getHistory({ conversation: to, pageSize: 100 })).messages.filter((m) => m.kind === MessageKind.TEXT).map((m) => m.text);
      expect(await texts(toRoom(roomId))).to.deep.equal(["hello"]);
      expect(await texts(toRoom(otherRoom))).to.deep.equal(["a new id works"]);
      expect(await texts(toUser(peer.id))).to.deep.equal([]);

      // First sends of one new client_id racing into two conversations, on two instances: one is stored, the other refused.
      for (let round = 0; round < 5; round++) {
        const clientId = `race-${round}`;
        const results = await Promise.allSettled([
          chatOf(user, a).sendMessage({ message: { to: toRoom(roomId), clientId, text: `${clientId} here` } }),
          chatOf(user, b).sendMessage({ message: { to: toRoom(otherRoom), clientId, text: `${clientId} there` } }),
        ]);
        const refused = results.flatMap((r) => (r.status === "rejected" ? [ConnectError.from(r.reason)] : []));
        expect(refused.map((e) => e.findDetails(ErrorInfoSchema)[0]?.reason), clientId).to.deep.equal(["REQUEST_ID_REUSED"]);
      }
      const stored = [...(await texts(toRoom(roomId))), ...(await texts(toRoom(otherRoom)))].filter((t) => t.startsWith("race-"));
      expect(stored.map((t) => t.split(" ")[0]).sort()).to.deep.equal(["race-0", "race-1", "race-2", "race-3", "race-4"]);
    });
  });

  it("pages history backwards and forwards, each message once and in order", async () => {
    const user = await newUser(a.url, "hist");
    const roomId = await publicRoom(user); // sequence 1: the creator's JOINED
    for (let n = 1; n <= 30; n++) await chatOf(user).sendMessage({ message: { to: toRoom(roomId), clientId: `h${n}`, text: `h${n}` } });
    const c = chatOf(user, b);

    const backwards: Message[] = [];
    let before = 0n;
    for (let page = 0; page < 20; page++) {
      const res = await c.getHistory({ conversation: toRoom(roomId), beforeSequence: before, pageSize: 7 });
      expect(res.conversationId).to.equal(roomId);
      backwards.push(...res.messages);
      if (!res.more) break;
      expect(res.messages).to.have.length(7);
      before = res.messages.at(-1)!.sequence;
    }
    expect(seqs(backwards)).to.deep.equal(range(1, 31).reverse());
    expect(backwards.at(-1)!.kind).to.equal(MessageKind.JOINED);
    expect(backwards[0]!.text).to.equal("h30");

    const forwards: Message[] = [];
    let after = 1n;
    for (let page = 0; page < 20; page++) {
      const res = await c.getHistory({ conversation: toRoom(roomId), afterSequence: after, pageSize: 7 });
      forwards.push(...res.messages);
      if (!res.more) break;
      after = res.messages.at(-1)!.sequence;
    }
    expect(seqs(forwards)).to.deep.equal(range(2, 31));
    expect(forwards.map((m) => m.text)).to.deep.equal(range(1, 30).map((n) => `h${n}`));

    const exact = await c.getHistory({ conversation: toRoom(roomId), afterSequence: 24n, pageSize: 7 });
    expect(seqs(exact.messages)).to.deep.equal(range(25, 31));
    expect(exact.more).to.equal(false);
    const newest = await c.getHistory({ conversation: toRoom(roomId), pageSize: 3 });
    expect(seqs(newest.messages)).to.deep.equal([31, 30, 29]);
    expect(newest.more).to.equal(true);
  });
});

describe("chat among many users", function () {
  // 20,000 direct conversations and 20,000 rooms (half public, half private) of other users, fresh statistics, every
  // plan generic, one connection per pool (so that a write after a call reports its counters with the call's).
  const OTHERS = 20_000;
  let server: TestServer;

  before(async () => {
    server = await startTestServer({ ...ENV, DB_POOL_SIZE: "1" }, await genericPlanDatabase());
    const db = new pg.Client({ connectionString: server.databaseUrl });
    await db.connect();
    try {
      await db.query(
        `INSERT INTO "chat".conversations (id, kind, user_a, user_b)
         SELECT gen_random_uuid(), 'direct', least(x, y), greatest(x, y)
           FROM (SELECT gen_random_uuid() AS x, gen_random_uuid() AS y FROM generate_series(1, $1::int)) pairs`,
        [OTHERS],
      );
      await db.query(
        `INSERT INTO "chat".rooms (id, name, visibility, owner_id, created_at)
         SELECT gen_random_uuid(), 'room ' || lpad(i::text, 5, '0'), CASE WHEN i % 2 = 0 THEN 'public' ELSE 'private' END, gen_random_uuid(), now()
           FROM generate_series(1, $1::int) i`,
        [OTHERS],
      );
      await db.query(`ANALYZE "chat".conversations`);
      await db.query(`ANALYZE "chat".rooms`);
    } finally {
      await db.end();
    }
    await eventually(async () => (await tableReads(server.databaseUrl, "chat", "conversations")).inserted === OTHERS, "the conversations' statistics");
    await eventually(async () => (await tableReads(server.databaseUrl, "chat", "rooms")).inserted === OTHERS, "the rooms' statistics");
  });
  after(() => server?.shutdown());

  it("opens a stream without reading everyone's conversations: the user's are found through an index on either side", async () => {
    const token = await signUp(server.url, name("many"));
    const peer = await signUp(server.url, name("peer"));
    // A direct conversation of the user's own, among everyone else's.
    const chat = client(ChatService, server.url, "grpc", token);
    await chat.sendMessage({ message: { to: toUser(userIdOf(peer)), clientId: "hello", text: "hello" } });
    const before = await tableReads(server.databaseUrl, "chat", "conversations");
    const stream = subscribe(chat);
    await stream.ready();
    stream.close();
    // The stream's end deletes its presence row on the same connection.
    await eventually(async () => (await tableReads(server.databaseUrl, "chat", "sessions")).deleted === 1, "the stream's statistics");
    const after = await tableReads(server.databaseUrl, "chat", "conversations");
    expect(after.seq - before.seq, "conversations read by sequential scans").to.equal(0);
    expect(after.conversations_direct_by_user_b! - before.conversations_direct_by_user_b!, "rows read through conversations_direct_by_user_b").to.be.at.most(1);
  });

  it("creates rooms and lists public and own private rooms without reading every room", async () => {
    const chat = client(ChatService, server.url, "grpc", await signUp(server.url, name("lister")));
    await chat.createRoom({ name: "room 00001x", visibility: RoomVisibility.PRIVATE });
    const before = await tableReads(server.databaseUrl, "chat", "rooms");
    const names: string[] = [];
    let pageToken = "";
    for (let page = 0; page < 3; page++) {
      const listed = await chat.listRooms({ pageSize: 4, pageToken });
      names.push(...listed.rooms.map((r) => r.name));
      pageToken = listed.nextPageToken;
    }
    // Public rooms are the even ones; of the private ones, only the user's own.
    expect(names).to.deep.equal(["room 00001x", "room 00002", "room 00004", "room 00006", "room 00008", "room 00010", "room 00012", "room 00014", "room 00016", "room 00018", "room 00020", "room 00022"]);
    await chat.createRoom({ name: "another", visibility: RoomVisibility.PUBLIC });
    await eventually(async () => (await tableReads(server.databaseUrl, "chat", "rooms")).inserted === OTHERS + 2, "the calls' statistics");
    const after = await tableReads(server.databaseUrl, "chat", "rooms");
    expect(after.seq - before.seq, "rooms read by sequential scans").to.equal(0);
  });
});

describe("chat typing notices (SendTyping)", function () {
  // A clock the test moves: the one-notice-a-second throttle is checked without sleeping.
  const clock = new ManualClock();
  let t: TestServer;
  const streams: { close(): void }[] = [];
  before(async () => {
    t = await startTestServer(ENV, undefined, undefined, clock);
  });
  afterEach(() => {
    for (const s of streams.splice(0)) s.close();
  });
  after(() => t?.shutdown());

  const chatOf = (u: User, protocol: ProtocolName = "grpc") => client(ChatService, t.url, protocol, u.token);
  const notices = (events: Events, conversationId: string) =>
    events.all.flatMap((e) => (e.event.case === "typing" && e.event.value.conversationId === conversationId ? [e.event.value] : []));
  async function watch(u: User): Promise<Events> {
    const events = subscribe(chatOf(u));
    streams.push(events);
    await events.ready();
    return events;
  }
  async function roomWith(owner: User, members: User[]): Promise<string> {
    const { room } = await chatOf(owner).createRoom({ name: name("typing"), visibility: RoomVisibility.PUBLIC });
    for (const m of members) await chatOf(m).joinRoom({ roomId: room!.id });
    return room!.id;
  }

  for (const protocol of PROTOCOLS) {
    it(`passes a notice on to a room and a direct conversation; refuses a non-member, a missing and a self destination with details (${protocol})`, async () => {
      const [typer, reader, outsider] = [await newUser(t.url, "typer"), await newUser(t.url, "reader"), await newUser(t.url, "outs")];
      const roomId = await roomWith(typer, [reader]);
      const { message: dm } = await chatOf(typer).sendMessage({ message: { to: toUser(reader.id), clientId: "dm", text: "hi" } });
      const events = await watch(reader);
      const c = chatOf(typer, protocol);

      expect(await c.sendTyping({ to: toRoom(roomId) })).to.include({});
      await events.until(() => notices(events, roomId).length === 1, "the room notice");
      expect(notices(events, roomId)[0]).to.include({ userId: typer.id, username: typer.name });
      await c.sendTyping({ to: toUser(reader.id) });
      await events.until(() => notices(events, dm!.conversationId).length === 1, "the direct notice");

      const denied = await rpcError(chatOf(outsider, protocol).sendTyping({ to: toRoom(roomId) }));
      expect(Code[denied.code], denied.message).to.equal(Code[Code.PermissionDenied]);
      const info = denied.findDetails(ErrorInfoSchema)[0];
      expect(info?.reason).to.equal("NOT_A_MEMBER");
      expect(info?.metadata).to.include({ room_id: roomId });
      const missing = await rpcError(c.sendTyping({}));
      expect(Code[missing.code]).to.equal(Code[Code.InvalidArgument]);
      expect(missing.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field))).to.include("to");
      const self = await rpcError(c.sendTyping({ to: toUser(typer.id) }));
      expect(self.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => `${v.field} ${v.reason}`))).to.deep.equal(["to.user_id SELF_CONVERSATION"]);
    });
  }

  it("passes on at most one notice a second per user and conversation; the rest are accepted and dropped", async () => {
    const [typer, reader] = [await newUser(t.url, "fast"), await newUser(t.url, "slowr")];
    const [first, second] = [await roomWith(typer, [reader]), await roomWith(typer, [reader])];
    const events = await watch(reader);
    const c = chatOf(typer, "connect");
    for (let i = 0; i < 5; i++) await c.sendTyping({ to: toRoom(first) });
    // The other room's notice, published after those five, is the sync point (one NOTIFY connection: in order).
    await c.sendTyping({ to: toRoom(second) });
    await events.until(() => notices(events, second).length === 1, "the second room's notice");
    expect(notices(events, first)).to.have.length(1);
    clock.advance(1000);
    await c.sendTyping({ to: toRoom(first) });
    await events.until(() => notices(events, first).length === 2, "a notice a second later");
  });

  it("creates no direct conversation for a notice to a user the caller never wrote to, and tells nobody (SendTyping and the Chat stream)", async () => {
    const [typer, stranger] = [await newUser(t.url, "shy"), await newUser(t.url, "stran")];
    const roomId = await roomWith(typer, [stranger]);
    const events = await watch(stranger);
    expect(await chatOf(typer).sendTyping({ to: toUser(stranger.id) })).to.include({});
    const stream = new ChatStream(chatOf(typer));
    streams.push(stream);
    stream.push({ case: "typing", value: toUser(stranger.id) });
    // Commands are handled in order: the answered send comes after the typing command.
    await stream.join(roomId);
    await chatOf(typer).sendTyping({ to: toRoom(roomId) });
    await events.until(() => notices(events, roomId).length === 1, "the room notice (sync point)");
    expect(events.all.filter((e) => e.event.case === "typing")).to.have.length(1);
    expect((await chatOf(stranger).getHistory({ conversation: toUser(typer.id) })).conversationId).to.equal("");
    expect((await chatOf(typer).getHistory({ conversation: toUser(stranger.id) })).conversationId).to.equal("");
  });
});
