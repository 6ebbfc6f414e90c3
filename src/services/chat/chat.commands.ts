import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { ConnectError } from "@connectrpc/connect";
import { ChatRequestSchema, ChatResponseSchema, type ChatRequest } from "../../../gen/agora/chat/v1/chat_pb.js";
import type { Caller } from "../../platform/auth.js";
import { codeName, detailsAsAny, invalidArgument } from "../../platform/errors.js";
import { assertValid } from "../../platform/validation.js";
import type { ChatSession } from "./chat.hub.js";
import { toMessage, toRoom } from "./chat.mapper.js";
import type { ChatOperations } from "./chat.operations.js";

const reply = (ref: string, event: MessageInitShape<typeof ChatResponseSchema>["event"]) => create(ChatResponseSchema, { ref, event });

/** Runs one command of a Chat stream; its answer (if any) goes on the stream with the command's ref. */
export async function dispatch(ops: ChatOperations, session: ChatSession, caller: Caller, req: ChatRequest, authorization: string): Promise<void> {
  const c = req.command;
  switch (c.case) {
    case "join": {
      const room = await ops.joinRoom(caller, c.value.conversationId);
      session.rooms.add(room.id);
      // after_sequence 0: no cursor, follow from now on (see Cursor in chat.proto).
      if (c.value.afterSequence > 0n) await ops.followAfter(session, room.id, c.value.afterSequence);
      else await session.follow(room.id);
      session.send(reply(req.ref, { case: "joined", value: toRoom(room) }));
      return;
    }
    case "leaveRoomId":
      await ops.leaveRoom(caller, c.value);
      session.send(reply(req.ref, { case: "leftRoomId", value: c.value }));
      return;
    case "send": {
      const message = await ops.send(caller, c.value, authorization, "send");
      session.send(reply(req.ref, { case: "sent", value: toMessage(message) }));
      return;
    }
    case "typing":
      await ops.typing(caller, c.value);
      return;
    case "setPresence":
      await ops.setPresence(caller, c.value);
      return;
    case "resume":
      await ops.resume(session, caller, c.value.cursors);
      return;
    case "ack":
      // Read markers are the client's own business for now; accepted so clients may send them.
      return;
    default:
      throw invalidArgument([{ field: "command", description: "unknown command" }]);
  }
}

/**
 * Reads a Chat stream's commands until the client half-closes, running each in
 * turn. A failed command is answered with an error event (the details a unary
 * call would carry); the stream goes on.
 */
export async function runCommands(
  ops: ChatOperations,
  session: ChatSession,
  caller: Caller,
  requests: AsyncIterable<ChatRequest>,
  authorization: string,
  toError: (err: unknown) => ConnectError,
): Promise<void> {
  for await (const req of requests) {
    try {
      assertValid(ChatRequestSchema, req);
      await dispatch(ops, session, caller, req, authorization);
    } catch (err) {
      const e = toError(err);
      session.send(reply(req.ref, { case: "error", value: { code: codeName(e.code), message: e.rawMessage, details: detailsAsAny(e) } }));
    }
  }
  session.end();
}
