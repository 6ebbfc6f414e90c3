import type { ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { ChatService, RoomVisibility, SubscribeResponseSchema, type ChatResponse, type SubscribeResponse } from "../../../gen/agora/chat/v1/chat_pb.js";
import { callerOf } from "../../platform/auth.js";
import { requestIdOf, toConnectError } from "../../platform/error-mapping.js";
import { quotaExceeded } from "../../platform/errors.js";
import { fingerprint, isKeyset, pageSize } from "../../platform/paging.js";
import { runCommands } from "./chat.commands.js";
import { toMember, toMessage, toOnlineUser, toRoom } from "./chat.mapper.js";
import { ChatOperations, type ChatDeps } from "./chat.operations.js";

export function chatHandlers(d: ChatDeps): ServiceImpl<typeof ChatService> {
  const ops = new ChatOperations(d);
  const authorization = (headers: Headers) => headers.get("authorization") ?? "";

  return {
    async createRoom(req, ctx) {
      const caller = callerOf(ctx);
      const visibility = req.visibility === RoomVisibility.PRIVATE ? "private" : "public";
      const room = await ops.createRoom(caller, req.name, req.description, visibility);
      if (!room) throw quotaExceeded(`user:${caller.userId}`, `you own ${d.settings.maxRoomsPerUser} rooms, the most one user may`, d.settings.maxRoomsPerUser);
      return { room: toRoom(room) };
    },

    async listRooms(req, ctx) {
      const caller = callerOf(ctx);
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("rooms", caller.userId);
      const rows = await d.repo.listRooms(caller.userId, d.pageTokens.decode(req.pageToken, filters, isKeyset), limit + 1);
      const { page, nextPageToken } = d.pageTokens.pageOf(rows, limit, filters, (last) => [last.name, last.id]);
      return { rooms: page.map(toRoom), nextPageToken };
    },

    async joinRoom(req, ctx) {
      return { room: toRoom(await ops.joinRoom(callerOf(ctx), req.roomId)) };
    },

    async leaveRoom(req, ctx) {
      await ops.leaveRoom(callerOf(ctx), req.roomId);
      return {};
    },

    async inviteToRoom(req, ctx) {
      await ops.invite(callerOf(ctx), req.roomId, req.userId, authorization(ctx.requestHeader));
      return {};
    },

    async listMembers(req, ctx) {
      await d.repo.readableRoom(req.roomId, callerOf(ctx).userId);
      const members = await d.repo.members(req.roomId);
      const presence = await d.presence.of(members.map((m) => m.user_id), d.clock.now());
      return { members: members.map((m) => toMember(m, presence.get(m.user_id) ?? "offline")) };
    },

    async *chat(requests, ctx) {
      const caller = callerOf(ctx);
      const session = await ops.openSession(caller, false);
      // Commands are read alongside the events being written; each one is answered on the stream.
      // The same error mapping as for whole calls: a database failure never leaks its SQL into an error event.
      const toError = (err: unknown) => toConnectError(err, requestIdOf(ctx.requestHeader), d.log);
      runCommands(ops, session, caller, requests, authorization(ctx.requestHeader), toError).catch((err) => session.fail(toError(err)));
      try {
        yield* session.events(ctx.signal, d.settings.heartbeatMs);
      } finally {
        await ops.closeSession(caller, session);
      }
    },

    async sendMessage(req, ctx) {
      return { message: toMessage(await ops.send(callerOf(ctx), req.message!, authorization(ctx.requestHeader), "message")) };
    },

    async sendTyping(req, ctx) {
      await ops.typing(callerOf(ctx), req.to);
      return {};
    },

    async *subscribe(req, ctx) {
      const caller = callerOf(ctx);
      const session = await ops.openSession(caller, true);
      try {
        await ops.resume(session, caller, req.cursors);
        for await (const event of session.events(ctx.signal, d.settings.heartbeatMs)) yield subscribeResponse(event);
      } finally {
        await ops.closeSession(caller, session);
      }
    },

    async getHistory(req, ctx) {
      const caller = callerOf(ctx);
      // Reading a direct conversation that was never written creates none (any user id reads as empty).
      const target = await ops.resolve(caller, req.conversation, "read");
      if (!target) return { conversationId: "", messages: [], more: false };
      const { conversationId } = target;
      const limit = req.pageSize > 0 ? req.pageSize : 50;
      const rows = req.afterSequence > 0n || req.fromStart
        ? await d.repo.after(conversationId, req.afterSequence, limit + 1)
        : await d.repo.before(conversationId, req.beforeSequence, limit + 1);
      return { conversationId, messages: rows.slice(0, limit).map(toMessage), more: rows.length > limit };
    },

    async setPresence(req, ctx) {
      await ops.setPresence(callerOf(ctx), req.presence);
      return { presence: req.presence };
    },

    async listOnlineUsers(req) {
      const rows = await d.presence.online(d.clock.now(), req.pageSize > 0 ? req.pageSize : 100);
      return { users: rows.map(toOnlineUser) };
    },
  };
}

/** One response per event, shared by every Subscribe stream that sends it (encoded once on the gRPC path). */
const subscribeResponses = new WeakMap<ChatResponse, SubscribeResponse>();
function subscribeResponse(event: ChatResponse): SubscribeResponse {
  let res = subscribeResponses.get(event);
  if (!res) subscribeResponses.set(event, (res = create(SubscribeResponseSchema, { event })));
  return res;
}
