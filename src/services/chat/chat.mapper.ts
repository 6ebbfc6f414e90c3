import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  MemberSchema,
  MessageSchema,
  OnlineUserSchema,
  Presence,
  RoomSchema,
  RoomVisibility,
  type Member,
  type Message,
  type OnlineUser,
  type Room,
} from "../../../gen/agora/chat/v1/chat_pb.js";
import type { MemberRow, MessageRow, RoomRow } from "./chat.repository.js";
import type { PresenceName, PresenceRow } from "./presence.repository.js";

const PRESENCE: Record<PresenceName, Presence> = {
  online: Presence.ONLINE,
  away: Presence.AWAY,
  busy: Presence.BUSY,
  offline: Presence.OFFLINE,
};

export const presenceToProto = (p: PresenceName) => PRESENCE[p];

export function toRoom(r: RoomRow): Room {
  return create(RoomSchema, {
    id: r.id,
    name: r.name,
    description: r.description,
    visibility: r.visibility === "private" ? RoomVisibility.PRIVATE : RoomVisibility.PUBLIC,
    ownerId: r.owner_id,
    memberCount: r.member_count ?? 0,
    createTime: timestampFromDate(new Date(r.created_at)),
  });
}

export function toMessage(m: MessageRow): Message {
  return create(MessageSchema, {
    id: m.id,
    conversationId: m.conversation_id,
    sequence: BigInt(m.sequence),
    clientId: m.client_id,
    senderId: m.sender_id,
    senderName: m.sender_name,
    kind: m.kind,
    text: m.text,
    attachments: m.attachments.map((a) => ({ fileId: a.fileId, version: BigInt(a.version), name: a.name })),
    sendTime: timestampFromDate(new Date(m.created_at)),
    recipientId: m.recipient_id ?? "",
  });
}

export function toMember(m: MemberRow, presence: PresenceName): Member {
  return create(MemberSchema, { userId: m.user_id, username: m.username, presence: presenceToProto(presence), joinTime: timestampFromDate(new Date(m.joined_at)) });
}

export function toOnlineUser(r: PresenceRow): OnlineUser {
  return create(OnlineUserSchema, { userId: r.user_id, username: r.username, presence: presenceToProto(r.presence) });
}
