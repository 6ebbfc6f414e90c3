import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FileService } from "../../../gen/agora/files/v1/files_pb.js";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  ChatRequestSchema,
  ChatResponseSchema,
  ChatService,
  MessageKind,
  Presence,
  RoomVisibility,
  type ChatRequest,
  type Cursor,
  type Destination,
  type Outgoing,
} from "../../../gen/agora/chat/v1/chat_pb.js";
import type { Logger } from "pino";
import { callerOf, type Caller } from "../../platform/auth.js";
import { requestIdOf, toConnectError } from "../../platform/error-mapping.js";
import type { Clock } from "../../platform/clock.js";
import { codeName, detailsAsAny, invalidArgument, notFound, permissionDenied, quotaExceeded, resourceExhausted, unavailable } from "../../platform/errors.js";
import { fingerprint, isKeyset, pageSize, type PageTokens } from "../../platform/paging.js";
import { TokenBuckets } from "../../platform/rate-limit.js";
import { assertValid } from "../../platform/validation.js";
import { ChatSession, type ChatHub } from "./chat.hub.js";
import { presenceToProto, toMessage, toRoom } from "./chat.mapper.js";
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
  repo: ChatRepository;
  presence: PresenceRepository;
  hub: ChatHub;
  clock: Clock;
  settings: ChatSettings;
}


/** Messages per second per user, on this instance (a token bucket with a burst of twice the rate). */
class SendLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly perSecond: number) {}

  take(userId: string): void {
    const now = Date.now();
    const b = this.buckets.get(userId) ?? { tokens: this.perSecond * 2, at: now };
    b.tokens = Math.min(this.perSecond * 2, b.tokens + ((now - b.at) / 1000) * this.perSecond);
    b.at = now;
    if (b.tokens < 1) {
      this.buckets.set(userId, b);
      throw resourceExhausted("RATE_LIMITED", `at most ${this.perSecond} messages per second`, ((1 - b.tokens) / this.perSecond) * 1000);
    }
    b.tokens -= 1;
    this.buckets.set(userId, b);
    if (this.buckets.size > 100_000) this.buckets.clear(); // bounded memory; a reset only forgives a little
  }
}

export function chatHandlers(d: ChatDeps): ServiceImpl<typeof ChatService> {
  const pages = d.pageTokens;
  const limiter = new SendLimiter(d.settings.messagesPerSecond);
  const me = (caller: Caller) => ({ id: caller.userId, name: caller.username });

  /** Who may read a conversation: room members (anyone for public rooms), the two users of a direct one. */
  async function assertReadable(caller: Caller, conversationId: string): Promise<void> {
    const users = await d.repo.participants(conversationId);
    if (users) {
      if (!users.includes(caller.userId)) throw notFound("conversation", conversationId);
      return;
    }
    await d.repo.readableRoom(conversationId, caller.userId);
  }

  async function resolve(caller: Caller, to: Destination | undefined, forWriting: boolean) {
    if (to?.target.case === "roomId") {
      const { room, member } = await d.repo.readableRoom(to.target.value, caller.userId);
      if (forWriting && !member) throw permissionDenied("NOT_A_MEMBER", `join ${room.name} before posting in it`, { room_id: room.id });
      return { conversationId: room.id, room };
    }
    if (to?.target.case === "userId") {
      const peer = to.target.value;
      if (peer === caller.userId) {
        throw invalidArgument([{ field: "to.user_id", description: "a direct conversation needs two different users", reason: "SELF_CONVERSATION" }]);
      }
      const conversationId = await d.repo.directConversation(caller.userId, peer);
      const participants = (caller.userId < peer ? [caller.userId, peer] : [peer, caller.userId]) as [string, string];
      return { conversationId, participants, recipientId: peer };
    }
    throw invalidArgument([{ field: "to", description: "name a room or a user" }]);
  }

  /** One client (and HTTP/2 connection) for the file service, made on first use. */
  let filesClient: { url: string; client: Client<typeof FileService> } | undefined;
  function fileService(url: string): Client<typeof FileService> {
    if (filesClient?.url !== url) filesClient = { url, client: createClient(FileService, createGrpcTransport({ baseUrl: url })) };
    return filesClient.client;
  }

  /**
   * Asks the file service, as the sender, to let the message's recipients read
   * each attachment; it refuses (NOT_FOUND / PERMISSION_DENIED) what the sender cannot read.
   */
  async function shareAttachments(caller: Caller, authorization: string, target: { room?: RoomRow; recipientId?: string }, out: Outgoing) {
    if (out.attachments.length === 0) return;
    const url = d.filesUrl();
    if (!url) throw unavailable("FILES_UNAVAILABLE", "attachments need the file service: run it here or set FILES_URL");
    const recipients = target.room ? (await d.repo.members(target.room.id)).map((m) => m.user_id).filter((u) => u !== caller.userId) : [target.recipientId!];
    const files = fileService(url);
    for (const a of out.attachments) {
      await files.grantAttachmentAccess({ fileId: a.fileId, version: a.version, userIds: recipients }, { headers: { authorization } });
    }
  }

  async function send(caller: Caller, out: Outgoing, authorization: string): Promise<MessageRow> {
    const target = await resolve(caller, out.to, true);
    // A resend of a stored message is answered without counting against the rate limit.
    const earlier = await d.repo.byClientId(target.conversationId, caller.userId, out.clientId);
    if (earlier) return earlier;
    limiter.take(caller.userId);
    await shareAttachments(caller, authorization, target, out);
    const { message } = await d.repo.append(
      {
        conversationId: target.conversationId,
        clientId: out.clientId,
        senderId: caller.userId,
        senderName: caller.username,
        kind: MessageKind.TEXT,
        text: out.text,
        attachments: out.attachments.map((a) => ({ fileId: a.fileId, version: a.version.toString(), name: a.name })),
        recipientId: target.recipientId,
      },
      d.clock.now(),
      target.participants,
    );
    void d.presence.active(caller.userId, d.clock.now()).catch(() => undefined);
    return message;
  }

  async function announce(caller: Caller, roomId: string, kind: MessageKind): Promise<void> {
    await d.repo.append({ conversationId: roomId, clientId: "", senderId: caller.userId, senderName: caller.username, kind, text: "", attachments: [] }, d.clock.now());
  }

  async function joinRoom(caller: Caller, roomId: string): Promise<RoomRow> {
    const room = await d.repo.room(roomId);
    if (!room) throw notFound("room", roomId);
    if (await d.repo.join(room, me(caller), d.clock.now())) await announce(caller, roomId, MessageKind.JOINED);
    return (await d.repo.room(roomId))!;
  }

  async function leaveRoom(caller: Caller, roomId: string): Promise<void> {
    await d.repo.readableRoom(roomId, caller.userId);
    // The LEFT notice is stored while still a member, so the leaver's streams see it too.
    if (await d.repo.isMember(roomId, caller.userId)) {
      await announce(caller, roomId, MessageKind.LEFT);
      await d.repo.leave(roomId, caller.userId);
    }
  }

  /** At most one typing notice a second per user and conversation: the rest are dropped, not refused. */
  const typingNotices = new TokenBuckets(1 / 1000, 1);

  /** Typing (Chat's command and SendTyping): only where the caller may post; a direct conversation is never created for it. */
  async function typing(caller: Caller, to: Destination | undefined): Promise<void> {
    const peer = to?.target.case === "userId" && to.target.value !== caller.userId ? to.target.value : undefined;
    const conversationId = peer ? await d.repo.findDirectConversation(caller.userId, peer) : (await resolve(caller, to, true)).conversationId;
    if (!conversationId) return;
    const key = `${caller.userId}:${conversationId}`;
    const now = d.clock.now().getTime();
    if (typingNotices.wait(key, now) > 0) return;
    typingNotices.take(key, now);
    await d.hub.publishTyping({ conversationId, userId: caller.userId, username: caller.username });
  }

  async function publishPresence(caller: Caller, presence: Presence): Promise<void> {
    const rooms = await d.repo.roomIdsOf(caller.userId);
    await d.hub.publishPresence({ userId: caller.userId, username: caller.username, presence, rooms });
  }

  async function setPresence(caller: Caller, presence: Presence): Promise<void> {
    const chosen = presence === Presence.AWAY ? "away" : presence === Presence.BUSY ? "busy" : null;
    await d.presence.choose(caller.userId, caller.username, chosen, d.clock.now());
    await publishPresence(caller, presence);
  }

  async function resume(session: ChatSession, caller: Caller, cursors: Cursor[]): Promise<void> {
    for (const c of cursors) {
      await assertReadable(caller, c.conversationId);
      await session.follow(c.conversationId, c.afterSequence);
    }
  }

  /** Opens a stream session: presence ONLINE, the user's direct conversations followed live. */
  async function openSession(caller: Caller, followRooms: boolean): Promise<ChatSession> {
    const { id, wasOffline } = await d.presence.open(caller.userId, caller.username, d.clock.now());
    const session = new ChatSession(id, caller.userId, caller.username, d.repo, d.settings.streamBuffer);
    for (const room of await d.repo.roomIdsOf(caller.userId)) {
      session.rooms.add(room);
      if (followRooms) await session.follow(room);
    }
    for (const direct of await d.repo.directIdsOf(caller.userId)) await session.follow(direct);
    d.hub.add(session);
    // Back from OFFLINE: announce what the user is now (a chosen BUSY or AWAY survives reconnects).
    if (wasOffline) {
      const now = (await d.presence.of([caller.userId], d.clock.now())).get(caller.userId) ?? "online";
      await publishPresence(caller, presenceToProto(now));
    }
    // A first event at once tells the client the stream is up (a bidi stream otherwise says nothing until asked).
    session.send(create(ChatResponseSchema, { event: { case: "heartbeat", value: { time: timestampFromDate(d.clock.now()) } } }));
    return session;
  }

  async function closeSession(caller: Caller, session: ChatSession): Promise<void> {
    d.hub.remove(session);
    if (await d.presence.close(session.id, caller.userId, d.clock.now())) await publishPresence(caller, Presence.OFFLINE);
  }

  const reply = (ref: string, event: MessageInitShape<typeof ChatResponseSchema>["event"]) => create(ChatResponseSchema, { ref, event });

  async function command(session: ChatSession, caller: Caller, req: ChatRequest, authorization: string): Promise<void> {
    const c = req.command;
    switch (c.case) {
      case "join": {
        const room = await joinRoom(caller, c.value.conversationId);
        session.rooms.add(room.id);
        await session.follow(room.id, c.value.afterSequence > 0n ? c.value.afterSequence : undefined);
        session.send(reply(req.ref, { case: "joined", value: toRoom(room) }));
        return;
      }
      case "leaveRoomId":
        await leaveRoom(caller, c.value);
        session.send(reply(req.ref, { case: "leftRoomId", value: c.value }));
        return;
      case "send": {
        const message = await send(caller, c.value, authorization);
        session.send(reply(req.ref, { case: "sent", value: toMessage(message) }));
        return;
      }
      case "typing": {
        await typing(caller, c.value);
        return;
      }
      case "setPresence":
        await setPresence(caller, c.value);
        return;
      case "resume":
        await resume(session, caller, c.value.cursors);
        return;
      case "ack":
        // Read markers are the client's own business for now; accepted so clients may send them.
        return;
      default:
        throw invalidArgument([{ field: "command", description: "unknown command" }]);
    }
  }

  return {
    async createRoom(req, ctx) {
      const caller = callerOf(ctx);
      const visibility = req.visibility === RoomVisibility.PRIVATE ? "private" : "public";
      const room = await d.repo.createRoom(req.name, req.description, visibility, me(caller), d.clock.now(), d.settings.maxRoomsPerUser);
      if (!room) throw quotaExceeded(`user:${caller.userId}`, `you own ${d.settings.maxRoomsPerUser} rooms, the most one user may`, d.settings.maxRoomsPerUser);
      await announce(caller, room.id, MessageKind.JOINED);
      return { room: toRoom(room) };
    },

    async listRooms(req, ctx) {
      const caller = callerOf(ctx);
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("rooms", caller.userId);
      const rows = await d.repo.listRooms(caller.userId, pages.decode(req.pageToken, filters, isKeyset), limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [last.name, last.id]);
      return { rooms: page.map(toRoom), nextPageToken };
    },

    async joinRoom(req, ctx) {
      return { room: toRoom(await joinRoom(callerOf(ctx), req.roomId)) };
    },

    async leaveRoom(req, ctx) {
      await leaveRoom(callerOf(ctx), req.roomId);
      return {};
    },

    async inviteToRoom(req, ctx) {
      const caller = callerOf(ctx);
      const { member } = await d.repo.readableRoom(req.roomId, caller.userId);
      if (!member) throw permissionDenied("NOT_A_MEMBER", "only members may invite", { room_id: req.roomId });
      await d.repo.invite(req.roomId, req.userId, caller.userId, d.clock.now());
      return {};
    },

    async listMembers(req, ctx) {
      const caller = callerOf(ctx);
      await d.repo.readableRoom(req.roomId, caller.userId);
      const members = await d.repo.members(req.roomId);
      const presence = await d.presence.of(members.map((m) => m.user_id), d.clock.now());
      return {
        members: members.map((m) => ({
          userId: m.user_id,
          username: m.username,
          presence: presenceToProto(presence.get(m.user_id) ?? "offline"),
          joinTime: timestampFromDate(new Date(m.joined_at)),
        })),
      };
    },

    async *chat(requests, ctx) {
      const caller = callerOf(ctx);
      const session = await openSession(caller, false);
      // Commands are read alongside the events being written; each one is answered on the stream.
      void (async () => {
        for await (const req of requests) {
          try {
            assertValid(ChatRequestSchema, req);
            await command(session, caller, req, ctx.requestHeader.get("authorization") ?? "");
          } catch (err) {
            // The same mapping as for whole calls: a database failure never leaks its SQL into an error event.
            const e = toConnectError(err, requestIdOf(ctx.requestHeader), d.log);
            session.send(reply(req.ref, { case: "error", value: { code: codeName(e.code), message: e.rawMessage, details: detailsAsAny(e) } }));
          }
        }
        session.end();
      })().catch((err) => session.fail(toConnectError(err, requestIdOf(ctx.requestHeader), d.log)));
      try {
        yield* session.events(ctx.signal, d.settings.heartbeatMs);
      } finally {
        await closeSession(caller, session);
      }
    },

    async sendMessage(req, ctx) {
      return { message: toMessage(await send(callerOf(ctx), req.message!, ctx.requestHeader.get("authorization") ?? "")) };
    },

    async sendTyping(req, ctx) {
      await typing(callerOf(ctx), req.to);
      return {};
    },

    async *subscribe(req, ctx) {
      const caller = callerOf(ctx);
      const session = await openSession(caller, true);
      try {
        await resume(session, caller, req.cursors);
        for await (const event of session.events(ctx.signal, d.settings.heartbeatMs)) yield { event };
      } finally {
        await closeSession(caller, session);
      }
    },

    async getHistory(req, ctx) {
      const caller = callerOf(ctx);
      const to = req.conversation?.target;
      // Reading a direct conversation that was never written creates none (any user id reads as empty).
      if (to?.case === "userId" && !(await d.repo.findDirectConversation(caller.userId, to.value))) return { conversationId: "", messages: [], more: false };
      const { conversationId } = await resolve(caller, req.conversation, false);
      const limit = req.pageSize > 0 ? req.pageSize : 50;
      const rows = req.afterSequence > 0n || req.fromStart
        ? await d.repo.after(conversationId, req.afterSequence, limit + 1)
        : await d.repo.before(conversationId, req.beforeSequence, limit + 1);
      return { conversationId, messages: rows.slice(0, limit).map(toMessage), more: rows.length > limit };
    },

    async setPresence(req, ctx) {
      await setPresence(callerOf(ctx), req.presence);
      return { presence: req.presence };
    },

    async listOnlineUsers(req) {
      const rows = await d.presence.online(d.clock.now(), req.pageSize > 0 ? req.pageSize : 100);
      return { users: rows.map((r) => ({ userId: r.user_id, username: r.username, presence: presenceToProto(r.presence) })) };
    },
  };
}
