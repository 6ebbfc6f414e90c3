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
import { updateEntity, type SqlTransaction } from "../../platform/db.js";
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

/** A batch of notifications, one array per column from $`p`, each naming its event (the append's `appended`). */
const storeSql = (p: number) => `INSERT INTO "${SCHEMA}".notifications
    (id, user_id, event_id, type, reservation_id, resource_id, start_time, end_time, message, read, created_at)
  SELECT x.id, x.user_id, appended.id, x.type, x.reservation_id, x.resource_id, x.start_time, x.end_time, x.message, false, $${p + 8}::timestamptz
    FROM unnest($${p}::uuid[], $${p + 1}::uuid[], $${p + 2}::smallint[], $${p + 3}::uuid[], $${p + 4}::uuid[], $${p + 5}::timestamptz[], $${p + 6}::timestamptz[], $${p + 7}::text[])
           WITH ORDINALITY AS x(id, user_id, type, reservation_id, resource_id, start_time, end_time, message, n)
    JOIN appended USING (n)`;

const STORE_SQL = storeSql(4);

/**
 * Stores notifications and puts each on the event log in the same
 * transaction: what a user can list is exactly what their streams deliver.
 */
export class NotificationRepository {
  constructor(
    private readonly em: EntityManager,
    private readonly events: EventLog<Notification>,
  ) {}

  /**
   * Stores the notifications as the last statement of a sqlTransaction: the rows go in with the events, in one
   * statement sent with the COMMIT (EventLog.appendAndCommit). With none, the transaction commits as usual.
   */
  async storeAndCommit(tx: SqlTransaction, items: NewNotification[], now: Date): Promise<void> {
    if (items.length === 0) return;
    const { messages, values } = this.rows(items, now);
    await this.events.appendAndCommit(tx, messages, { name: "reservation.store-notifications", sql: STORE_SQL, values });
  }

  /**
   * `store` as CTEs of a caller's statement (see EventLog.appendCtes), parameters from $`p` (storeValues): the
   * notifications are stored, events and rows, once CTE `gate` yields its row, and not at all when it yields none.
   */
  storeCtes(gate: string, p: number): string {
    return this.events.appendCtes(p, gate, storeSql(p + 3));
  }

  /** The parameters of storeCtes. */
  storeValues(items: NewNotification[], now: Date): unknown[] {
    const { messages, values } = this.rows(items, now);
    return [...this.events.appendValues(messages), ...values];
  }

  /** The events to append and the parameters of storeSql. */
  private rows(items: NewNotification[], now: Date): { messages: Notification[]; values: unknown[] } {
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
    const column = <V>(value: (m: Notification, i: number) => V) => messages.map(value);
    return {
      messages,
      values: [
        column((m) => m.id),
        column((m) => m.userId),
        column((m) => m.type),
        column((m) => m.reservationId || null),
        column((m) => m.resourceId || null),
        column((_, i) => items[i]!.startTime ?? null),
        column((_, i) => items[i]!.endTime ?? null),
        column((m) => m.message),
        now,
      ],
    };
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
