import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { ChatResponseSchema, MessageKind, Presence, type Cursor, type Destination, type Outgoing } from "../../../gen/agora/chat/v1/chat_pb.js";
import { FileService } from "../../../gen/agora/files/v1/files_pb.js";
import { IdentityService } from "../../../gen/agora/identity/v1/identity_pb.js";
import type { Caller } from "../../platform/auth.js";
import type { Clock } from "../../platform/clock.js";
import { invalidArgument, notFound, outOfRange, permissionDenied, resourceExhausted, unavailable } from "../../platform/errors.js";
import type { PageTokens } from "../../platform/paging.js";
import { TokenBuckets } from "../../platform/rate-limit.js";
import { ChatSession, type ChatHub } from "./chat.hub.js";
import { presenceToProto } from "./chat.mapper.js";
import type { ChatRepository, MessageRow, RoomRow } from "./chat.repository.js";
import type { PresenceRepository } from "./presence.repository.js";

export interface ChatSettings {
  messagesPerSecond: number;
  /** Rooms one user may own. */
  maxRoomsPerUser: number;
  streamBuffer: number;
  heartbeatMs: number;
}

export interface ChatDeps {
  pageTokens: PageTokens;
  log: Logger;
  /** The file service, for attachments. */
  filesUrl: () => string | undefined;
  /** The identity service, which says whether a user exists. */
  identityUrl: () => string | undefined;
  repo: ChatRepository;
  presence: PresenceRepository;
  hub: ChatHub;
  clock: Clock;
  settings: ChatSettings;
}

/** A room, or a direct conversation with its two users (sorted) and the other one. */
export type Target = { conversationId: string; room?: RoomRow; participants?: [string, string]; recipientId?: string };

const attachmentRows = (out: Outgoing) => out.attachments.map((a) => ({ fileId: a.fileId, version: a.version.toString(), name: a.name }));

/**
 * The stored message, if it is the one `out` asks for (same conversation, text
 * and attachments): a client_id names one message, as an idempotency key names
 * one request; reused for another, it is refused rather than answered with the first.
 */
function sameMessage(stored: MessageRow, target: Target, out: Outgoing, field: string): MessageRow {
  const same =
    stored.conversation_id === target.conversationId &&
    stored.text === out.text &&
    JSON.stringify(stored.attachments.map((a) => [a.fileId, a.version, a.name])) === JSON.stringify(attachmentRows(out).map((a) => [a.fileId, a.version, a.name]));
  if (same) return stored;
  throw invalidArgument(
    [{ field: `${field}.client_id`, description: "this client_id was already used for a different message: choose a new one for each message", reason: "REQUEST_ID_REUSED" }],
    undefined,
    "REQUEST_ID_REUSED",
  );
}

const me = (caller: Caller) => ({ id: caller.userId, name: caller.username });

/**
 * What the unary handlers and the Chat stream's commands both do: resolve a
 * destination, send, join, leave, presence, open and close a stream.
 */
export class ChatOperations {
  /** Messages per second per user, on this instance (a token bucket with a burst of twice the rate). */
  private readonly sends: TokenBuckets;
  /** At most one typing notice a second per user and conversation. */
  private readonly typingNotices = new TokenBuckets(1 / 1000, 1);
  /** One client (and HTTP/2 connection) for each service asked, made on first use. */
  private files: { url: string; client: Client<typeof FileService> } | undefined;
  private identity: { url: string; client: Client<typeof IdentityService> } | undefined;

  constructor(private readonly d: ChatDeps) {
    this.sends = new TokenBuckets(d.settings.messagesPerSecond / 1000, d.settings.messagesPerSecond * 2);
  }

  /** Who may read a conversation: room members (anyone for public rooms), the two users of a direct one. */
  async assertReadable(caller: Caller, conversationId: string): Promise<void> {
    const users = await this.d.repo.participants(conversationId);
    if (users) {
      if (!users.includes(caller.userId)) throw notFound("conversation", conversationId);
      return;
    }
    await this.d.repo.readableRoom(conversationId, caller.userId);
  }

  /**
   * The conversation a destination names, for reading, typing or sending (with
   * the sender's authorization). A direct conversation is created by the first
   * message to a user identity knows; reading or typing never creates one
   * (undefined then: nothing was ever written there).
   */
  async resolve(caller: Caller, to: Destination | undefined, use: "read" | "type" | { authorization: string }): Promise<Target | undefined> {
    if (to?.target.case === "roomId") {
      const { room, member } = await this.d.repo.readableRoom(to.target.value, caller.userId);
      if (use !== "read" && !member) throw permissionDenied("NOT_A_MEMBER", `join ${room.name} before posting in it`, { room_id: room.id });
      return { conversationId: room.id, room };
    }
    if (to?.target.case === "userId") {
      const peer = to.target.value;
      if (peer === caller.userId && use !== "read") {
        throw invalidArgument([{ field: "to.user_id", description: "a direct conversation needs two different users", reason: "SELF_CONVERSATION" }]);
      }
      let conversationId = await this.d.repo.findDirectConversation(caller.userId, peer);
      if (!conversationId) {
        if (typeof use === "string") return undefined;
        await this.assertUserExists(peer, use.authorization);
        conversationId = await this.d.repo.directConversation(caller.userId, peer);
      }
      const participants = (caller.userId < peer ? [caller.userId, peer] : [peer, caller.userId]) as [string, string];
      return { conversationId, participants, recipientId: peer };
    }
    throw invalidArgument([{ field: "to", description: "name a room or a user" }]);
  }

  /** Asks the identity service (which owns users), as the caller, whether a user exists: NOT_FOUND if not. */
  private async assertUserExists(userId: string, authorization: string): Promise<void> {
    const url = this.d.identityUrl();
    if (!url) throw unavailable("IDENTITY_UNAVAILABLE", "direct messages and invitations need the identity service: run it here or set IDENTITY_URL");
    if (this.identity?.url !== url) this.identity = { url, client: createClient(IdentityService, createGrpcTransport({ baseUrl: url })) };
    try {
      await this.identity.client.getUserProfile({ userId }, { headers: { authorization } });
    } catch (err) {
      if (ConnectError.from(err).code === Code.NotFound) throw notFound("user", userId);
      this.d.log.warn({ err }, "identity lookup failed");
      throw unavailable("IDENTITY_UNAVAILABLE", "cannot check the user with the identity service: retry later");
    }
  }

  private fileService(url: string): Client<typeof FileService> {
    if (this.files?.url !== url) this.files = { url, client: createClient(FileService, createGrpcTransport({ baseUrl: url })) };
    return this.files.client;
  }

  /**
   * Asks the file service, as the sender, to let the message's recipients read
   * each attachment; it refuses (NOT_FOUND / PERMISSION_DENIED) what the sender cannot read.
   */
  private async shareAttachments(caller: Caller, authorization: string, target: Target, out: Outgoing): Promise<void> {
    if (out.attachments.length === 0) return;
    const url = this.d.filesUrl();
    if (!url) throw unavailable("FILES_UNAVAILABLE", "attachments need the file service: run it here or set FILES_URL");
    const recipients = target.room ? (await this.d.repo.members(target.room.id)).map((m) => m.user_id).filter((u) => u !== caller.userId) : [target.recipientId!];
    const files = this.fileService(url);
    for (const a of out.attachments) {
      await files.grantAttachmentAccess({ fileId: a.fileId, version: a.version, userIds: recipients }, { headers: { authorization } });
    }
  }

  /**
   * Stores a message, or returns the one the sender stored earlier under its
   * client_id; a client_id already used for a different message is refused
   * (`field` names the Outgoing in the request: "message" or "send").
   */
  async send(caller: Caller, out: Outgoing, authorization: string, field: "message" | "send"): Promise<MessageRow> {
    const target = (await this.resolve(caller, out.to, { authorization }))!;
    // A resend of a stored message is answered without counting against the rate limit.
    const earlier = await this.d.repo.byClientId(caller.userId, out.clientId);
    if (earlier) return sameMessage(earlier, target, out, field);
    this.takeSendToken(caller.userId);
    await this.shareAttachments(caller, authorization, target, out);
    const now = this.d.clock.now();
    const { message, replayed } = await this.d.repo.append(
      {
        conversationId: target.conversationId,
        clientId: out.clientId,
        senderId: caller.userId,
        senderName: caller.username,
        kind: MessageKind.TEXT,
        text: out.text,
        attachments: attachmentRows(out),
        recipientId: target.recipientId,
      },
      now,
      target.participants,
    );
    if (replayed) return sameMessage(message, target, out, field);
    void this.d.presence.active(caller.userId, now).catch(() => undefined);
    return message;
  }

  private takeSendToken(userId: string): void {
    const now = this.d.clock.now().getTime();
    const waitMs = this.sends.wait(userId, now);
    if (waitMs > 0) throw resourceExhausted("RATE_LIMITED", `at most ${this.d.settings.messagesPerSecond} messages per second`, waitMs);
    this.sends.take(userId, now);
  }

  /**
   * Tells the other participants of a conversation that the caller is typing
   * (Chat's command and SendTyping): only where the caller may post, at most one
   * notice a second per user and conversation (the rest are dropped, not refused).
   */
  async typing(caller: Caller, to: Destination | undefined): Promise<void> {
    const target = await this.resolve(caller, to, "type");
    // A direct conversation nobody wrote in has no one following it: nothing to tell, nothing created.
    if (!target) return;
    const key = `${caller.userId}:${target.conversationId}`;
    const now = this.d.clock.now().getTime();
    if (this.typingNotices.wait(key, now) > 0) return;
    this.typingNotices.take(key, now);
    await this.d.hub.publishTyping({ conversationId: target.conversationId, userId: caller.userId, username: caller.username });
  }

  /** A stored JOINED or LEFT notice. */
  async announce(caller: Caller, roomId: string, kind: MessageKind.JOINED | MessageKind.LEFT): Promise<void> {
    await this.d.repo.append({ conversationId: roomId, clientId: "", senderId: caller.userId, senderName: caller.username, kind, text: "", attachments: [] }, this.d.clock.now());
  }

  async createRoom(caller: Caller, name: string, description: string, visibility: "public" | "private"): Promise<RoomRow | undefined> {
    const room = await this.d.repo.createRoom(name, description, visibility, me(caller), this.d.clock.now(), this.d.settings.maxRoomsPerUser);
    if (room) await this.announce(caller, room.id, MessageKind.JOINED);
    return room;
  }

  /** A member lets another user join a private room. */
  async invite(caller: Caller, roomId: string, userId: string, authorization: string): Promise<void> {
    const { member } = await this.d.repo.readableRoom(roomId, caller.userId);
    if (!member) throw permissionDenied("NOT_A_MEMBER", "only members may invite", { room_id: roomId });
    await this.assertUserExists(userId, authorization);
    await this.d.repo.invite(roomId, userId, caller.userId, this.d.clock.now());
  }

  async joinRoom(caller: Caller, roomId: string): Promise<RoomRow> {
    const room = await this.d.repo.room(roomId);
    if (!room) throw notFound("room", roomId);
    if (await this.d.repo.join(room, me(caller), this.d.clock.now())) {
      await this.announce(caller, roomId, MessageKind.JOINED);
      // The room's members now share a room with the joiner: they learn at once whether the joiner is online.
      const now = (await this.d.presence.of([caller.userId], this.d.clock.now())).get(caller.userId) ?? "offline";
      if (now !== "offline") await this.publishPresence(caller, presenceToProto(now), [roomId]);
    }
    return (await this.d.repo.room(roomId))!;
  }

  async leaveRoom(caller: Caller, roomId: string): Promise<void> {
    await this.d.repo.readableRoom(roomId, caller.userId);
    // The LEFT notice is stored while still a member, so the leaver's streams see it too.
    if (await this.d.repo.isMember(roomId, caller.userId)) {
      await this.announce(caller, roomId, MessageKind.LEFT);
      await this.d.repo.leave(roomId, caller.userId);
    }
  }

  /** Tells the members of `rooms` (by default every room of the caller) what the caller's presence is. */
  private async publishPresence(caller: Caller, presence: Presence, rooms?: string[]): Promise<void> {
    rooms ??= await this.d.repo.roomIdsOf(caller.userId);
    await this.d.hub.publishPresence({ userId: caller.userId, username: caller.username, presence, rooms });
  }

  async setPresence(caller: Caller, presence: Presence): Promise<void> {
    const chosen = presence === Presence.AWAY ? "away" : presence === Presence.BUSY ? "busy" : null;
    await this.d.presence.choose(caller.userId, caller.username, chosen, this.d.clock.now());
    await this.publishPresence(caller, presence);
  }

  /** Follows each cursor's conversation from its sequence (see Cursor in chat.proto). */
  async resume(session: ChatSession, caller: Caller, cursors: Cursor[]): Promise<void> {
    for (const c of cursors) {
      await this.assertReadable(caller, c.conversationId);
      await this.followAfter(session, c.conversationId, c.afterSequence);
    }
  }

  /**
   * Delivers a readable conversation's messages after `after`, then live ones. A
   * cursor past the last message is OUT_OF_RANGE: followed, it would silently skip
   * every message up to it.
   */
  async followAfter(session: ChatSession, conversationId: string, after: bigint): Promise<void> {
    const last = await this.d.repo.lastSequence(conversationId);
    if (after > last) {
      throw outOfRange("CURSOR_AHEAD", `after_sequence ${after} is past the last message (${last}) of conversation ${conversationId}`, {
        conversation_id: conversationId,
        last_sequence: String(last),
      });
    }
    await session.follow(conversationId, after);
  }

  /** Opens a stream session: presence ONLINE, the user's direct conversations followed live. */
  async openSession(caller: Caller, followRooms: boolean): Promise<ChatSession> {
    const d = this.d;
    const { id, wasOffline } = await d.presence.open(caller.userId, caller.username, d.clock.now());
    const session = new ChatSession(id, caller.userId, caller.username, d.repo, d.settings.streamBuffer, d.clock);
    // In the hub before the user's conversations are read: a direct conversation created in between is announced
    // to this session (and followed) instead of falling between the read and the add (its typing notices and
    // messages would then never reach this stream).
    d.hub.add(session);
    try {
      for (const room of await d.repo.roomIdsOf(caller.userId)) {
        session.rooms.add(room);
        if (followRooms) await session.follow(room);
      }
      for (const direct of await d.repo.directIdsOf(caller.userId)) await session.follow(direct);
      // Back from OFFLINE: announce what the user is now (a chosen BUSY or AWAY survives reconnects).
      if (wasOffline) {
        const now = (await d.presence.of([caller.userId], d.clock.now())).get(caller.userId) ?? "online";
        await this.publishPresence(caller, presenceToProto(now));
      }
    } catch (err) {
      // The stream never opens: nothing of it stays behind (hub, presence).
      await this.closeSession(caller, session).catch(() => undefined);
      throw err;
    }
    // A first event at once tells the client the stream is up (a bidi stream otherwise says nothing until asked).
    session.send(create(ChatResponseSchema, { event: { case: "heartbeat", value: { time: timestampFromDate(d.clock.now()) } } }));
    return session;
  }

  async closeSession(caller: Caller, session: ChatSession): Promise<void> {
    this.d.hub.remove(session);
    if (await this.d.presence.close(session.id, caller.userId, this.d.clock.now())) await this.publishPresence(caller, Presence.OFFLINE);
  }
}
