/**
 * Interactive terminal chat client.
 *
 *   npm run chat -- --server http://127.0.0.1:8080 --username alice --password '...'
 *
 * Settings also come from AGORA_SERVER, AGORA_USERNAME and AGORA_PASSWORD; the
 * password is asked for when stdin is a terminal. It signs in with
 * IdentityService.Login, keeps the access token fresh with Refresh, and talks
 * over ONE ChatService.Chat stream, reconnecting (and resuming without gaps or
 * duplicates) when that stream breaks. Commands are read line by line from stdin
 * (a terminal or a pipe); every event is printed as one line on stdout. /help
 * lists the commands.
 */
import { randomUUID } from "node:crypto";
import readline from "node:readline";
import type { Readable, Writable } from "node:stream";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  ChatRequestSchema,
  ChatService,
  MessageKind,
  Presence,
  RoomVisibility,
  type ChatRequest,
  type ChatResponse,
  type DestinationSchema,
  type Message,
  type Room,
} from "../../gen/agora/chat/v1/chat_pb.js";
import { Auth, runIfMain, signInSettings } from "./auth.js";

const HELP = [
  "commands:",
  "  /rooms                     public rooms and yours",
  "  /create <name> [private]   create a room (then /join it)",
  "  /join <room name or id>    join a room; it becomes the current conversation",
  "  /leave [room]              leave a room (default: the current one)",
  "  /switch <room> | @<user>   change the current conversation",
  "  /msg <username> <text>     private message",
  "  /who                       users online",
  "  /members [room]            members of a room (default: the current one)",
  "  /status online|away|busy   set your presence",
  "  /history [n]               earlier messages of the current conversation (repeat for older)",
  "  /help, /quit",
  "  anything else              a message to the current conversation",
];

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;
const SETTLE_MS = 500;
const MAX_TEXT = 4000;

type ChatRequestInit = MessageInitShape<typeof ChatRequestSchema>;
type Conversation = { kind: "room" | "user"; id: string; name: string };

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });

const presenceName = (p: Presence) => (Presence[p] ?? "unspecified").replace(/^PRESENCE_/, "").toLowerCase();
const isUuid = (s: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);

/** An async queue of requests: the request side of one Chat stream. */
export class Outbox<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private wake: (() => void) | undefined;
  private closed = false;

  push(item: T): void {
    if (this.closed) return;
    this.items.push(item);
    this.notify();
  }

  close(): void {
    this.closed = true;
    this.notify();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const item = this.items.shift();
      if (item !== undefined) yield item;
      else if (this.closed) return;
      else await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/**
 * Which sequences of each conversation were shown. `upTo` is the resume cursor:
 * everything up to it was seen; sequences seen beyond a gap wait in `ahead`, so
 * a replay fills the gap and shows nothing twice.
 */
export class Cursors {
  private readonly byConversation = new Map<string, { upTo: bigint; ahead: Set<bigint> }>();

  /** Counts everything up to `sequence` as seen, unless the conversation is already tracked. */
  baseline(conversationId: string, sequence: bigint): void {
    if (!this.byConversation.has(conversationId)) this.byConversation.set(conversationId, { upTo: sequence, ahead: new Set() });
  }

  /** True the first time a sequence is offered (a new conversation starts right before it). */
  accept(conversationId: string, sequence: bigint): boolean {
    let c = this.byConversation.get(conversationId);
    if (!c) this.byConversation.set(conversationId, (c = { upTo: sequence - 1n, ahead: new Set() }));
    if (sequence <= c.upTo || c.ahead.has(sequence)) return false;
    c.ahead.add(sequence);
    while (c.ahead.delete(c.upTo + 1n)) c.upTo++;
    return true;
  }

  after(conversationId: string): bigint | undefined {
    return this.byConversation.get(conversationId)?.upTo;
  }

  forget(conversationId: string): void {
    this.byConversation.delete(conversationId);
  }

  all(): { conversationId: string; afterSequence: bigint }[] {
    return [...this.byConversation].map(([conversationId, c]) => ({ conversationId, afterSequence: c.upTo }));
  }
}

export interface ChatClientSessionOptions {
  server: string;
  username: string;
  password: string;
  input: Readable;
  output: Writable;
  /** Defaults to a gRPC (HTTP/2) transport to `server`. */
  transport?: (interceptors: Interceptor[]) => Transport;
}

/** One signed-in user: the Chat stream, the command loop and the printing of events. */
export class ChatClientSession {
  private readonly auth: Auth;
  private readonly chat: Client<typeof ChatService>;
  private readonly cursors = new Cursors();
  /** Commands whose answer has not come yet (sends, joins, leaves), replayed after a reconnect. */
  private readonly pending = new Map<string, ChatRequest>();
  private readonly joined = new Map<string, string>(); // room id -> name
  private readonly roomNames = new Map<string, string>(); // room id -> name
  private readonly userIds = new Map<string, string>(); // lower-case username -> id
  private readonly userNames = new Map<string, string>(); // id -> username
  private readonly historyBefore = new Map<string, bigint>();
  private current: Conversation | undefined;
  private presence = Presence.ONLINE;
  private outbox: Outbox<ChatRequest> | undefined;
  private nextRef = 0;
  private quitting = false;
  private readonly stop = new AbortController();
  private rl: readline.Interface | undefined;

  constructor(private readonly opts: ChatClientSessionOptions) {
    const makeTransport = opts.transport ?? ((interceptors) => createGrpcTransport({ baseUrl: opts.server, interceptors }));
    this.auth = new Auth(makeTransport, opts.username, opts.password);
    this.chat = createClient(ChatService, this.auth.transport);
  }

  /** Runs until stdin ends or /quit (0), or a failure the session cannot recover from (1). */
  async run(): Promise<number> {
    try {
      await this.auth.login();
    } catch (err) {
      this.print(`! error: login failed: ${ConnectError.from(err).rawMessage}`);
      return 1;
    }
    this.userNames.set(this.auth.userId, this.auth.username);
    const stream = this.streamLoop();
    const input = this.readInput();
    const ok = await Promise.race([stream, input.then(() => true)]);
    if (!ok) {
      this.rl?.close();
      await this.auth.logout();
      return 1;
    }
    await this.shutdown();
    await stream;
    return 0;
  }

  /** Ends the session as /quit does. */
  quit(): void {
    this.rl?.close();
  }

  private print(line: string): void {
    this.opts.output.write(`${line}\n`);
  }

  // ---- the stream ---------------------------------------------------------

  /** Keeps one Chat stream open; false when it had to give up. */
  private async streamLoop(): Promise<boolean> {
    let everUp = false;
    let delay = MIN_BACKOFF_MS;
    while (!this.quitting) {
      const outbox = new Outbox<ChatRequest>();
      this.outbox = outbox;
      this.prime(outbox, everUp);
      let up = false;
      const markUp = () => {
        if (up) return;
        up = true;
        delay = MIN_BACKOFF_MS;
        this.print(everUp ? "reconnected" : `connected as ${this.auth.username}`);
        everUp = true;
      };
      // The server sends response headers with its first event; a stream that has not failed within
      // a moment is up even when nothing has arrived yet.
      const settled = setTimeout(markUp, SETTLE_MS);
      let reason = "the server closed the stream";
      try {
        for await (const res of this.chat.chat(outbox, { signal: this.stop.signal, onHeader: markUp })) {
          markUp();
          this.handle(res);
        }
      } catch (err) {
        const e = ConnectError.from(err);
        reason = e.rawMessage || Code[e.code];
        if (this.quitting) break;
        if (e.code === Code.Unimplemented || e.code === Code.PermissionDenied || e.code === Code.InvalidArgument) {
          this.print(`! error: chat stream refused: ${reason}`);
          return false;
        }
        if (e.code === Code.Unauthenticated) {
          try {
            await this.auth.refresh();
          } catch (authErr) {
            const a = ConnectError.from(authErr);
            if (a.code === Code.Unauthenticated) {
              this.print(`! error: signed out: ${a.rawMessage}`);
              return false;
            }
          }
        }
      } finally {
        clearTimeout(settled);
        outbox.close();
        this.outbox = undefined;
      }
      if (this.quitting) break;
      if (up) this.print(`* connection lost (${reason}), reconnecting`);
      await sleep(delay, this.stop.signal);
      delay = Math.min(delay * 2, MAX_BACKOFF_MS);
    }
    return true;
  }

  /** The first commands of a stream: after a reconnect, resume every conversation and join the rooms again. */
  private prime(outbox: Outbox<ChatRequest>, reconnect: boolean): void {
    if (reconnect) {
      const cursors = this.cursors.all();
      if (cursors.length > 0) outbox.push(this.request({ command: { case: "resume", value: { cursors } } }));
      for (const roomId of this.joined.keys()) {
        const afterSequence = this.cursors.after(roomId) ?? 0n;
        outbox.push(this.request({ command: { case: "join", value: { conversationId: roomId, afterSequence } } }));
      }
      if (this.presence !== Presence.ONLINE) outbox.push(this.request({ command: { case: "setPresence", value: this.presence } }));
    }
    for (const req of this.pending.values()) outbox.push(req);
  }

  private request(init: ChatRequestInit): ChatRequest {
    return create(ChatRequestSchema, { ref: `r${++this.nextRef}`, ...init });
  }

  /** Sends a command on the stream (now, or when it is back); answered ones are forgotten. */
  private command(init: ChatRequestInit, replay = true): ChatRequest {
    const req = this.request(init);
    if (replay) this.pending.set(req.ref, req);
    this.outbox?.push(req);
    return req;
  }

  private handle(res: ChatResponse): void {
    const mine = this.pending.get(res.ref);
    if (res.event.case !== "message") this.pending.delete(res.ref);
    switch (res.event.case) {
      case "message":
      case "sent":
        this.showMessage(res.event.value);
        break;
      case "joined": {
        const room = res.event.value;
        this.learnRoom(room);
        const fresh = !this.joined.has(room.id);
        this.joined.set(room.id, room.name);
        if (fresh || mine) this.print(`ok: joined ${room.name}`);
        break;
      }
      case "leftRoomId": {
        const id = res.event.value;
        this.joined.delete(id);
        this.cursors.forget(id);
        if (this.current?.id === id) this.current = undefined;
        this.print(`ok: left ${this.roomName(id)}`);
        break;
      }
      case "presence": {
        const p = res.event.value;
        this.learnUser(p.userId, p.username);
        this.print(`* ${p.username} is now ${presenceName(p.presence)}`);
        break;
      }
      case "typing": {
        const t = res.event.value;
        this.learnUser(t.userId, t.username);
        this.print(`* ${t.username} is typing in ${this.conversationName(t.conversationId)}`);
        break;
      }
      case "error": {
        this.print(`! error: ${res.event.value.message || res.event.value.code}`);
        if (mine?.command.case === "join" && this.current?.id === mine.command.value.conversationId) this.current = undefined;
        break;
      }
      case "heartbeat":
      case undefined:
        break;
    }
  }

  private showMessage(m: Message): void {
    this.learnUser(m.senderId, m.senderName);
    if (this.cursors.accept(m.conversationId, m.sequence)) this.print(this.format(m));
  }

  /** `[room] alice: hi`, `private from bob: hi`, `private to bob: hi`, `* bob joined room`. */
  private format(m: Message): string {
    const sender = m.senderName || this.userName(m.senderId);
    if (m.kind === MessageKind.JOINED) return `* ${sender} joined ${this.roomName(m.conversationId)}`;
    if (m.kind === MessageKind.LEFT) return `* ${sender} left ${this.roomName(m.conversationId)}`;
    const files = m.attachments.length > 0 ? ` [${m.attachments.map((a) => a.name || a.fileId).join(", ")}]` : "";
    if (!m.recipientId) return `[${this.roomName(m.conversationId)}] ${sender}: ${m.text}${files}`;
    return m.senderId === this.auth.userId ? `private to ${this.userName(m.recipientId)}: ${m.text}${files}` : `private from ${sender}: ${m.text}${files}`;
  }

  // ---- names --------------------------------------------------------------

  private learnRoom(room: Room): void {
    this.roomNames.set(room.id, room.name);
  }

  private learnUser(id: string, username: string): void {
    if (!id || !username) return;
    this.userIds.set(username.toLowerCase(), id);
    this.userNames.set(id, username);
  }

  private roomName(id: string): string {
    return this.roomNames.get(id) ?? id.slice(0, 8);
  }

  private userName(id: string): string {
    return this.userNames.get(id) ?? id.slice(0, 8);
  }

  private conversationName(id: string): string {
    return this.roomNames.has(id) ? this.roomName(id) : "a private conversation";
  }

  /** Every room ListRooms shows (public ones and the caller's). */
  private async listRooms(): Promise<Room[]> {
    const rooms: Room[] = [];
    let pageToken = "";
    do {
      const res = await this.chat.listRooms({ pageSize: 1000, pageToken });
      rooms.push(...res.rooms);
      pageToken = res.nextPageToken;
    } while (pageToken);
    for (const r of rooms) this.learnRoom(r);
    return rooms;
  }

  /** A room by id, or by name (exact, then ignoring case) among the rooms ListRooms shows. */
  private async findRoom(nameOrId: string): Promise<{ id: string; name: string }> {
    const rooms = await this.listRooms();
    const room =
      rooms.find((r) => r.id === nameOrId || r.name === nameOrId) ??
      rooms.find((r) => r.name.toLowerCase() === nameOrId.toLowerCase());
    if (room) return room;
    if (isUuid(nameOrId)) return { id: nameOrId, name: this.roomName(nameOrId) };
    throw new Error(`no room ${nameOrId}`);
  }

  /** A joined room by name or id; the current room when `arg` is empty. */
  private joinedRoom(arg: string): { id: string; name: string } {
    if (!arg) {
      if (this.current?.kind !== "room") throw new Error("no current room");
      return this.current;
    }
    for (const [id, name] of this.joined) if (id === arg || name === arg) return { id, name };
    for (const [id, name] of this.joined) if (name.toLowerCase() === arg.toLowerCase()) return { id, name };
    throw new Error(`not in a room ${arg}`);
  }

  /**
   * A user id from a username. The chat service has no user lookup: known are the
   * users seen in messages and presence events, then ListOnlineUsers, then the
   * members of the joined rooms.
   */
  private async findUser(username: string): Promise<{ id: string; name: string }> {
    const key = username.replace(/^@/, "").toLowerCase();
    const known = () => {
      const id = this.userIds.get(key);
      return id ? { id, name: this.userName(id) } : undefined;
    };
    let found = known();
    if (!found) {
      for (const u of (await this.chat.listOnlineUsers({ pageSize: 1000 })).users) this.learnUser(u.userId, u.username);
      found = known();
    }
    for (const roomId of this.joined.keys()) {
      if (found) break;
      for (const m of (await this.chat.listMembers({ roomId })).members) this.learnUser(m.userId, m.username);
      found = known();
    }
    if (!found) throw new Error(`unknown user ${username} (only users online or in your rooms can be found)`);
    return found;
  }

  private destination(c: Conversation): MessageInitShape<typeof DestinationSchema> {
    return { target: c.kind === "room" ? { case: "roomId", value: c.id } : { case: "userId", value: c.id } };
  }

  // ---- commands -----------------------------------------------------------

  private async readInput(): Promise<void> {
    this.rl = readline.createInterface({ input: this.opts.input, terminal: false, crlfDelay: Infinity });
    for await (const raw of this.rl) {
      const line = raw.trim();
      if (!line) continue;
      try {
        if ((await this.execute(line)) === "quit") break;
      } catch (err) {
        this.print(`! error: ${err instanceof ConnectError ? err.rawMessage : err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.rl.close();
  }

  private async execute(line: string): Promise<"quit" | void> {
    if (!line.startsWith("/")) return this.say(line);
    const [name = "", ...words] = line.slice(1).split(/\s+/);
    const rest = line.slice(1 + name.length).trim();
    switch (name) {
      case "quit":
      case "exit":
        return "quit";
      case "help":
        return HELP.forEach((l) => this.print(l));
      case "rooms": {
        const rooms = await this.listRooms();
        for (const r of rooms) {
          const visibility = r.visibility === RoomVisibility.PRIVATE ? "private" : "public";
          this.print(`room ${r.name} (${visibility}, ${r.memberCount} members)${this.joined.has(r.id) ? " joined" : ""}`);
        }
        return this.print(`ok: ${rooms.length} rooms`);
      }
      case "create": {
        const priv = words.length > 1 && words[words.length - 1] === "private";
        const roomName = priv ? rest.slice(0, rest.lastIndexOf("private")).trim() : rest;
        if (!roomName) throw new Error("usage: /create <name> [private]");
        const visibility = priv ? RoomVisibility.PRIVATE : RoomVisibility.PUBLIC;
        const { room } = await this.chat.createRoom({ name: roomName, visibility });
        if (room) this.learnRoom(room);
        return this.print(`ok: created ${room?.name ?? roomName}`);
      }
      case "join": {
        if (!rest) throw new Error("usage: /join <room name or id>");
        const room = await this.findRoom(rest);
        if (this.cursors.after(room.id) === undefined) {
          // Start after the newest stored message: the join then replays whatever lands in between.
          const newest = await this.chat
            .getHistory({ conversation: { target: { case: "roomId", value: room.id } }, pageSize: 1 })
            .then((h) => h.messages[0]?.sequence, () => undefined);
          if (newest !== undefined) this.cursors.baseline(room.id, newest);
        }
        this.current = { kind: "room", ...room };
        this.command({ command: { case: "join", value: { conversationId: room.id, afterSequence: this.cursors.after(room.id) ?? 0n } } });
        return;
      }
      case "leave": {
        const room = this.joinedRoom(rest);
        this.command({ command: { case: "leaveRoomId", value: room.id } });
        return;
      }
      case "switch": {
        if (!rest) throw new Error("usage: /switch <room> | @<user>");
        if (rest.startsWith("@")) {
          this.current = { kind: "user", ...(await this.findUser(rest)) };
          return this.print(`ok: now talking privately to ${this.current.name}`);
        }
        this.current = { kind: "room", ...this.joinedRoom(rest) };
        return this.print(`ok: now in ${this.current.name}`);
      }
      case "msg": {
        const [to, ...text] = words;
        if (!to || text.length === 0) throw new Error("usage: /msg <username> <text>");
        const user = await this.findUser(to);
        return this.send({ kind: "user", ...user }, rest.slice(to.length).trim());
      }
      case "who": {
        const { users } = await this.chat.listOnlineUsers({ pageSize: 1000 });
        for (const u of users) this.learnUser(u.userId, u.username);
        return this.print(`online: ${users.map((u) => `${u.username} (${presenceName(u.presence)})`).join(", ") || "nobody"}`);
      }
      case "members": {
        const room = rest ? (this.tryJoinedRoom(rest) ?? (await this.findRoom(rest))) : this.joinedRoom("");
        const { members } = await this.chat.listMembers({ roomId: room.id });
        for (const m of members) this.learnUser(m.userId, m.username);
        return this.print(`members of ${room.name}: ${members.map((m) => `${m.username} (${presenceName(m.presence)})`).join(", ")}`);
      }
      case "status": {
        const p = { online: Presence.ONLINE, away: Presence.AWAY, busy: Presence.BUSY }[rest];
        if (p === undefined) throw new Error("usage: /status online|away|busy");
        this.presence = p;
        this.command({ command: { case: "setPresence", value: p } }, false);
        return this.print(`ok: status ${rest}`);
      }
      case "history":
        return this.history(rest);
      default:
        throw new Error(`unknown command /${name} (try /help)`);
    }
  }

  private tryJoinedRoom(arg: string): { id: string; name: string } | undefined {
    try {
      return this.joinedRoom(arg);
    } catch {
      return undefined;
    }
  }

  private say(text: string): void {
    if (!this.current) throw new Error("no current conversation: /join a room or /switch @user first");
    this.send(this.current, text);
  }

  private send(to: Conversation, text: string): void {
    // Checked here: the server fails the whole stream (not just the command) on a request that breaks the proto's rules.
    if ([...text].length > MAX_TEXT) throw new Error(`a message has at most ${MAX_TEXT} characters`);
    this.command({ command: { case: "send", value: { to: this.destination(to), clientId: randomUUID(), text } } });
  }

  /** A page of older messages of the current conversation; each repeat goes further back. */
  private async history(arg: string): Promise<void> {
    const pageSize = arg ? Number(arg) : 20;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 500) throw new Error("usage: /history [1-500]");
    const c = this.current;
    if (!c) throw new Error("no current conversation");
    const key = `${c.kind}:${c.id}`;
    const before = this.historyBefore.get(key) ?? 0n;
    if (before === 1n) return this.print("ok: no older messages");
    const res = await this.chat.getHistory({ conversation: this.destination(c), beforeSequence: before, pageSize });
    const page = [...res.messages].reverse();
    for (const m of page) {
      this.learnUser(m.senderId, m.senderName);
      this.print(`history #${m.sequence} ${this.format(m)}`);
    }
    if (page.length > 0) this.historyBefore.set(key, page[0]!.sequence);
    if (!res.more || page.length === 0) {
      this.historyBefore.set(key, 1n);
      return this.print("ok: no older messages");
    }
    this.print(`ok: ${page.length} earlier messages (/history again for more)`);
  }

  /** Waits (bounded) for answers to what was sent, then closes the stream. */
  private async shutdown(): Promise<void> {
    const deadline = Date.now() + 3_000;
    while (this.pending.size > 0 && Date.now() < deadline) await sleep(20);
    this.quitting = true;
    if (this.outbox) this.outbox.close();
    else this.stop.abort(); // between two attempts: no stream to close
    const timer = setTimeout(() => this.stop.abort(), 1_000);
    timer.unref();
    await this.auth.logout();
  }
}

async function main(): Promise<number> {
  const settings = await signInSettings("usage: npm run chat -- --server <url> --username <name> [--password <password>]", HELP);
  if (!settings) return 0;
  const { server, username, password } = settings;
  const session = new ChatClientSession({ server, username, password, input: process.stdin, output: process.stdout });
  process.once("SIGINT", () => session.quit());
  process.once("SIGTERM", () => session.quit());
  return session.run();
}

runIfMain(import.meta.url, main);
