import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { EntityManager } from "@mikro-orm/postgresql";
import {
  NotificationSchema as NotificationMessageSchema,
  type Notification,
  type NotificationType,
} from "../../../gen/agora/reservation/v1/reservation_pb.js";
import { notFound } from "../../platform/errors.js";
import { preparedQuery, updateEntity, type Queryable } from "../../platform/db.js";
import type { EventLog } from "../../platform/event-log.js";
import { NotificationSchema, SCHEMA, type NotificationEntity } from "./reservation.entity.js";

export interface NewNotification {
  userId: string;
  type: NotificationType;
  reservationId?: string;
  resourceId?: string;
  startTime?: Date;
  endTime?: Date;
  message: string;
}

/** A batch of notifications, one array per column. */
const STORE_SQL = `INSERT INTO "${SCHEMA}".notifications
    (id, user_id, event_id, type, reservation_id, resource_id, start_time, end_time, message, read, created_at)
  SELECT n.*, false, $10::timestamptz FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::smallint[], $5::uuid[], $6::uuid[],
                                     $7::timestamptz[], $8::timestamptz[], $9::text[]) AS n`;

/**
 * Stores notifications and puts each on the event log in the same
 * transaction: what a user can list is exactly what their streams deliver.
 */
export class NotificationRepository {
  constructor(
    private readonly em: EntityManager,
    private readonly events: EventLog<Notification>,
  ) {}

  async store(tx: Queryable, items: NewNotification[], now: Date): Promise<void> {
    if (items.length === 0) return;
    const messages = items.map((n) =>
      create(NotificationMessageSchema, {
        id: randomUUID(),
        userId: n.userId,
        type: n.type,
        reservationId: n.reservationId ?? "",
        resourceId: n.resourceId ?? "",
        startTime: n.startTime ? timestampFromDate(n.startTime) : undefined,
        endTime: n.endTime ? timestampFromDate(n.endTime) : undefined,
        message: n.message,
        createTime: timestampFromDate(now),
      }),
    );
    const ids = await this.events.append(tx, messages);
    const column = <V>(value: (m: Notification, i: number) => V) => messages.map(value);
    await preparedQuery(tx, "reservation.store-notifications", STORE_SQL, [
      column((m) => m.id),
      column((m) => m.userId),
      column((_, i) => ids[i]!.toString()),
      column((m) => m.type),
      column((m) => m.reservationId || null),
      column((m) => m.resourceId || null),
      column((_, i) => items[i]!.startTime ?? null),
      column((_, i) => items[i]!.endTime ?? null),
      column((m) => m.message),
      now,
    ]);
  }

  /** The user's notifications, newest first, after `beforeEventId` (paging). */
  async list(userId: string, unreadOnly: boolean, beforeEventId: string | undefined, limit: number): Promise<NotificationEntity[]> {
    const em = this.em.fork();
    const where: Record<string, unknown> = { userId };
    if (unreadOnly) where.read = false;
    if (beforeEventId) where.eventId = { $lt: beforeEventId };
    return em.find(NotificationSchema, where, { orderBy: { eventId: "desc" }, limit });
  }

  async markRead(userId: string, id: string): Promise<NotificationEntity> {
    const em = this.em.fork();
    const n = await em.findOne(NotificationSchema, { id, userId });
    if (!n) throw notFound("notification", id);
    if (!n.read) await updateEntity(em, n, (m) => (m.read = true));
    return n;
  }
}
