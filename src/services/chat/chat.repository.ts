import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { MessageKind } from "../../../gen/agora/chat/v1/chat_pb.js";
import { isUniqueViolation, lockForTransaction, preparedQuery, transaction } from "../../platform/db.js";
import { notFound } from "../../platform/errors.js";

export interface RoomRow {
  id: string;
  name: string;
  description: string;
  visibility: "public" | "private";
  owner_id: string;
  created_at: Date;
  member_count?: number;
}

export interface MessageRow {
  conversation_id: string;
  sequence: string;
  id: string;
  client_id: string;
  sender_id: string;
  sender_name: string;
  kind: number;
  text: string;
  attachments: { fileId: string; version: string; name: string }[];
  recipient_id: string | null;
  created_at: Date;
}

export interface MemberRow {
  user_id: string;
  username: string;
  joined_at: Date;
}

export interface NewMessage {
  conversationId: string;
  clientId: string;
  senderId: string;
  senderName: string;
  kind: number;
  text: string;
  attachments: { fileId: string; version: string; name: string }[];
  recipientId?: string;
}

/** The chat service's PostgreSQL schema (its migrations keep the literal name). */
export const SCHEMA = "chat";

/** Channel on which a stored message is announced (JSON: see MessageAnnouncement). */
export const MESSAGES_CHANNEL = "chat_messages";

/** What the NOTIFY of a stored message says: enough for every instance to route it without a query. */
export interface MessageAnnouncement {
  /** Conversation and sequence. */
  c: string;
  s: string;
  /** The two users of a direct conversation. */
  u?: [string, string];
  /** The user who joined (JOINED messages): their streams start following the room. */
  j?: string;
}


const CLIENT_ID_QUERY = `SELECT * FROM "${SCHEMA}".messages WHERE sender_id = ? AND client_id = ?`;

/** The next sequence, the message and its announcement (MessageAnnouncement: c, s and the extra fields given). */
const APPEND = `
  WITH conv AS (
    UPDATE "${SCHEMA}".conversations SET last_sequence = last_sequence + 1 WHERE id = ? RETURNING id, last_sequence
  ), ins AS (
    INSERT INTO "${SCHEMA}".messages
      (conversation_id, sequence, id, client_id, sender_id, sender_name, kind, text, attachments, recipient_id, created_at)
    SELECT conv.id, conv.last_sequence, ?, ?, ?, ?, ?, ?, ?::jsonb, ?, ? FROM conv
    RETURNING *
  ), announced AS (
    SELECT pg_notify(?, (jsonb_build_object('c', ins.conversation_id, 's', ins.sequence::text) || ?::jsonb)::text) FROM ins
  )
  SELECT ins.* FROM ins CROSS JOIN announced`;

/** Owns every query on rooms, members, conversations and messages. */
export class ChatRepository {
  constructor(private readonly em: EntityManager) {}

  private get db() {
    return this.em.fork();
  }

  /** Creates a room owned by `owner`, unless they already own `maxOwned` (undefined then). */
  async createRoom(name: string, description: string, visibility: "public" | "private", owner: { id: string; name: string }, now: Date, maxOwned: number) {
    return transaction(this.em, async (tx) => {
      // One owner's creations take turns, so concurrent calls cannot pass the quota together.
      await lockForTransaction(tx, `chat.rooms.${owner.id}`);
      const [{ n }] = await tx.execute<{ n: number }[]>(`SELECT count(*)::int AS n FROM "${SCHEMA}".rooms WHERE owner_id = ?`, [owner.id]);
      if (n! >= maxOwned) return undefined;
      const id = randomUUID();
      const [room] = await tx.execute<RoomRow[]>(
        `INSERT INTO "${SCHEMA}".rooms (id, name, description, visibility, owner_id, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING *`,
        [id, name, description, visibility, owner.id, now],
      );
      await tx.execute(`INSERT INTO "${SCHEMA}".conversations (id, kind) VALUES (?, 'room')`, [id]);
      await tx.execute(`INSERT INTO "${SCHEMA}".members (room_id, user_id, username, joined_at) VALUES (?, ?, ?, ?)`, [id, owner.id, owner.name, now]);
      return { ...room!, member_count: 1 };
    });
  }

  async room(id: string): Promise<RoomRow | undefined> {
    const [room] = await this.db.execute<RoomRow[]>(
      `SELECT r.*, (SELECT count(*)::int FROM "${SCHEMA}".members m WHERE m.room_id = r.id) AS member_count FROM "${SCHEMA}".rooms r WHERE r.id = ?`,
      [id],
    );
    return room;
  }

  async isMember(roomId: string, userId: string): Promise<boolean> {
    const rows = await this.db.execute(`SELECT 1 FROM "${SCHEMA}".members WHERE room_id = ? AND user_id = ?`, [roomId, userId]);
    return rows.length > 0;
  }

  /**
   * The room if the user may read it: members always; others only public rooms.
   * A private room the user is not in does not exist for them (NOT_FOUND).
   */
  async readableRoom(roomId: string, userId: string): Promise<{ room: RoomRow; member: boolean }> {
    const room = await this.room(roomId);
    const member = room ? await this.isMember(roomId, userId) : false;
    if (!room || (room.visibility === "private" && !member)) throw notFound("room", roomId);
    return { room, member };
  }

  /**
   * Public rooms and the user's private rooms, by name: a page of each, through rooms_public and members_by_user,
   * merged. As one query (public, or the user a member), PostgreSQL read every room (docs/scaling.md).
   */
  async listRooms(userId: string, after: [string, string] | undefined, limit: number): Promise<RoomRow[]> {
    const [name, id] = after ?? ["", "00000000-0000-0000-0000-000000000000"];
    return this.db.execute<RoomRow[]>(
      `SELECT r.*, (SELECT count(*)::int FROM "${SCHEMA}".members m WHERE m.room_id = r.id) AS member_count
         FROM ((SELECT * FROM "${SCHEMA}".rooms WHERE visibility = 'public' AND (name, id) > (?, ?::uuid) ORDER BY name, id LIMIT ?)
               UNION ALL
               (SELECT r.* FROM "${SCHEMA}".members m JOIN "${SCHEMA}".rooms r ON r.id = m.room_id
                 WHERE m.user_id = ? AND r.visibility = 'private' AND (r.name, r.id) > (?, ?::uuid) ORDER BY r.name, r.id LIMIT ?)) r
        ORDER BY r.name, r.id LIMIT ?`,
      [name, id, limit, userId, name, id, limit, limit],
    );
  }

  async roomIdsOf(userId: string): Promise<string[]> {
    const rows = await preparedQuery<{ room_id: string }>(this.em, "chat.rooms-of", `SELECT room_id FROM "${SCHEMA}".members WHERE user_id = $1`, [userId]);
    return rows.map((r) => r.room_id);
  }

  async directIdsOf(userId: string): Promise<string[]> {
    const rows = await preparedQuery<{ id: string }>(
      this.em,
      "chat.directs-of",
      `SELECT id FROM "${SCHEMA}".conversations WHERE kind = 'direct' AND (user_a = $1 OR user_b = $1)`,
      [userId],
    );
    return rows.map((r) => r.id);
  }

  /** Adds the member (returns false if already one), after checking they may join. */
  async join(room: RoomRow, user: { id: string; name: string }, now: Date): Promise<boolean> {
    return transaction(this.em, async (tx) => {
      if (room.visibility === "private") {
        const invited = await tx.execute(`SELECT 1 FROM "${SCHEMA}".invitations WHERE room_id = ? AND user_id = ?`, [room.id, user.id]);
        const member = await tx.execute(`SELECT 1 FROM "${SCHEMA}".members WHERE room_id = ? AND user_id = ?`, [room.id, user.id]);
        if (invited.length === 0 && member.length === 0) throw notFound("room", room.id);
      }
      const added = await tx.execute(
        `INSERT INTO "${SCHEMA}".members (room_id, user_id, username, joined_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1`,
        [room.id, user.id, user.name, now],
      );
      return added.length > 0;
    });
  }

  async leave(roomId: string, userId: string): Promise<boolean> {
    const removed = await this.db.execute(`DELETE FROM "${SCHEMA}".members WHERE room_id = ? AND user_id = ? RETURNING 1`, [roomId, userId]);
    return removed.length > 0;
  }

  async invite(roomId: string, userId: string, by: string, now: Date): Promise<void> {
    await this.db.execute(
      `INSERT INTO "${SCHEMA}".invitations (room_id, user_id, invited_by, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      [roomId, userId, by, now],
    );
  }

  async members(roomId: string) {
    return this.db.execute<MemberRow[]>(
      `SELECT user_id, username, joined_at FROM "${SCHEMA}".members WHERE room_id = ? ORDER BY username`,
      [roomId],
    );
  }

  /** The direct conversation of two users, created on first use. */
  async directConversation(a: string, b: string): Promise<string> {
    const [userA, userB] = a < b ? [a, b] : [b, a];
    const [row] = await this.db.execute<{ id: string }[]>(
      `INSERT INTO "${SCHEMA}".conversations (id, kind, user_a, user_b) VALUES (?, 'direct', ?, ?)
       ON CONFLICT (user_a, user_b) DO UPDATE SET user_a = excluded.user_a RETURNING id`,
      [randomUUID(), userA, userB],
    );
    return row!.id;
  }

  /** The direct conversation of two users, if they ever wrote to each other (reading creates none). */
  async findDirectConversation(a: string, b: string): Promise<string | undefined> {
    const [userA, userB] = a < b ? [a, b] : [b, a];
    const [row] = await this.db.execute<{ id: string }[]>(`SELECT id FROM "${SCHEMA}".conversations WHERE user_a = ? AND user_b = ?`, [userA, userB]);
    return row?.id;
  }

  /** The two users of a direct conversation, or undefined for a room. */
  async participants(conversationId: string): Promise<[string, string] | undefined> {
    const [row] = await this.db.execute<{ user_a: string | null; user_b: string | null }[]>(
      `SELECT user_a, user_b FROM "${SCHEMA}".conversations WHERE id = ?`,
      [conversationId],
    );
    return row?.user_a && row.user_b ? [row.user_a, row.user_b] : undefined;
  }

  /**
   * Stores a message with the conversation's next sequence, in one statement
   * (one round trip, its own transaction): the conversation row stays locked
   * until it commits, so sequences become visible in order, and the NOTIFY
   * goes out with the commit. A client id the sender already used, in any
   * conversation (a resend racing the first send, or a reuse), violates the
   * unique index: nothing is stored, no sequence is used, and the earlier
   * message is returned (`replayed`; ChatOperations.send compares it).
   */
  async append(m: NewMessage, now: Date, participants?: [string, string]): Promise<{ message: MessageRow; replayed: boolean }> {
    const extra: Omit<MessageAnnouncement, "c" | "s"> = {};
    if (participants) extra.u = participants;
    if (m.kind === MessageKind.JOINED) extra.j = m.senderId;
    try {
      const [row] = await this.db.execute<MessageRow[]>(APPEND, [
        m.conversationId, randomUUID(), m.clientId, m.senderId, m.senderName, m.kind, m.text, JSON.stringify(m.attachments),
        m.recipientId ?? null, now, MESSAGES_CHANNEL, JSON.stringify(extra),
      ]);
      if (!row) throw notFound("conversation", m.conversationId);
      return { message: row, replayed: false };
    } catch (err) {
      const earlier = m.clientId && isUniqueViolation(err) ? await this.byClientId(m.senderId, m.clientId) : undefined;
      if (earlier) return { message: earlier, replayed: true };
      throw err;
    }
  }

  /** The message the sender stored under this client id, in any conversation. */
  async byClientId(senderId: string, clientId: string): Promise<MessageRow | undefined> {
    const [row] = await this.db.execute<MessageRow[]>(CLIENT_ID_QUERY, [senderId, clientId]);
    return row;
  }

  /** Messages after `after`, oldest first. */
  async after(conversationId: string, after: bigint, limit: number): Promise<MessageRow[]> {
    return this.db.execute<MessageRow[]>(
      `SELECT * FROM "${SCHEMA}".messages WHERE conversation_id = ? AND sequence > ? ORDER BY sequence LIMIT ?`,
      [conversationId, after.toString(), limit],
    );
  }

  /** Messages before `before` (0: the newest), newest first. */
  async before(conversationId: string, before: bigint, limit: number): Promise<MessageRow[]> {
    return this.db.execute<MessageRow[]>(
      `SELECT * FROM "${SCHEMA}".messages WHERE conversation_id = ? AND (? = 0 OR sequence < ?) ORDER BY sequence DESC LIMIT ?`,
      [conversationId, before.toString(), before.toString(), limit],
    );
  }

  async lastSequence(conversationId: string): Promise<bigint> {
    const [row] = await preparedQuery<{ last_sequence: string }>(
      this.em,
      "chat.last-sequence",
      `SELECT last_sequence FROM "${SCHEMA}".conversations WHERE id = $1`,
      [conversationId],
    );
    return BigInt(row?.last_sequence ?? 0);
  }
}
