import { EntitySchema } from "@mikro-orm/core";

/** The service's PostgreSQL schema: its migrations create it; openServiceDatabase, the event log and every SQL statement name it from here. */
export const SCHEMA = "reservation";

export class ResourceEntity {
  id!: string;
  name!: string;
  type!: string;
  capacity!: number;
  location!: string;
  description!: string;
  active!: boolean;
  slotMinutes!: number;
  requiresApproval!: boolean;
  version!: number;
  requestId?: string | null;
  /** What a repeat of requestId must match (platform/idempotency.ts); null for rows older than fingerprints. */
  requestFingerprint?: string | null;
  createdAt!: Date;
  updatedAt!: Date;
}

/** What an admin sets on a resource (the rest is identity and bookkeeping). */
export type ResourceFields = Pick<
  ResourceEntity,
  "name" | "type" | "capacity" | "location" | "description" | "active" | "slotMinutes" | "requiresApproval"
>;

export const ResourceSchema = new EntitySchema<ResourceEntity>({
  class: ResourceEntity,
  tableName: "resources",
  properties: {
    id: { type: "uuid", primary: true },
    name: { type: "text" },
    type: { type: "text" },
    capacity: { type: "integer" },
    location: { type: "text" },
    description: { type: "text" },
    active: { type: "boolean" },
    slotMinutes: { type: "integer", fieldName: "slot_minutes" },
    requiresApproval: { type: "boolean", fieldName: "requires_approval" },
    version: { type: "integer", version: true },
    requestId: { type: "text", fieldName: "request_id", nullable: true },
    requestFingerprint: { type: "text", fieldName: "request_fingerprint", nullable: true },
    createdAt: { type: "Date", fieldName: "created_at" },
    updatedAt: { type: "Date", fieldName: "updated_at" },
  },
});

export type StatusName = "pending" | "confirmed" | "cancelled" | "rejected" | "expired";
export const ACTIVE: StatusName[] = ["pending", "confirmed"];

export class ReservationEntity {
  id!: string;
  resourceId!: string;
  userId!: string;
  startTime!: Date;
  endTime!: Date;
  partySize!: number;
  notes!: string;
  status!: StatusName;
  requestId!: string;
  requestFingerprint?: string | null;
  holdExpiresAt?: Date | null;
  reminderSentAt?: Date | null;
  version!: number;
  createdAt!: Date;
  updatedAt!: Date;
}

export const ReservationSchema = new EntitySchema<ReservationEntity>({
  class: ReservationEntity,
  tableName: "reservations",
  properties: {
    id: { type: "uuid", primary: true },
    resourceId: { type: "uuid", fieldName: "resource_id" },
    userId: { type: "uuid", fieldName: "user_id" },
    startTime: { type: "Date", fieldName: "start_time" },
    endTime: { type: "Date", fieldName: "end_time" },
    partySize: { type: "integer", fieldName: "party_size" },
    notes: { type: "text" },
    status: { type: "text" },
    requestId: { type: "text", fieldName: "request_id" },
    requestFingerprint: { type: "text", fieldName: "request_fingerprint", nullable: true },
    holdExpiresAt: { type: "Date", fieldName: "hold_expires_at", nullable: true },
    reminderSentAt: { type: "Date", fieldName: "reminder_sent_at", nullable: true },
    version: { type: "integer" },
    createdAt: { type: "Date", fieldName: "created_at" },
    updatedAt: { type: "Date", fieldName: "updated_at" },
  },
});

export class NotificationEntity {
  id!: string;
  userId!: string;
  eventId!: string;
  /** agora.reservation.v1.NotificationType number. */
  type!: number;
  reservationId?: string | null;
  resourceId?: string | null;
  startTime?: Date | null;
  endTime?: Date | null;
  message!: string;
  read!: boolean;
  createdAt!: Date;
}

export const NotificationSchema = new EntitySchema<NotificationEntity>({
  class: NotificationEntity,
  tableName: "notifications",
  properties: {
    id: { type: "uuid", primary: true },
    userId: { type: "uuid", fieldName: "user_id" },
    eventId: { type: "bigint", fieldName: "event_id" },
    type: { type: "smallint" },
    reservationId: { type: "uuid", fieldName: "reservation_id", nullable: true },
    resourceId: { type: "uuid", fieldName: "resource_id", nullable: true },
    startTime: { type: "Date", fieldName: "start_time", nullable: true },
    endTime: { type: "Date", fieldName: "end_time", nullable: true },
    message: { type: "text" },
    read: { type: "boolean" },
    createdAt: { type: "Date", fieldName: "created_at" },
  },
});
