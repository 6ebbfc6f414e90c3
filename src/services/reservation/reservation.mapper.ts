import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  NotificationSchema as NotificationMessageSchema,
  ReservationSchema as ReservationMessageSchema,
  ReservationStatus,
  ResourceSchema as ResourceMessageSchema,
  type Notification,
  type Reservation,
  type Resource,
} from "../../../gen/agora/reservation/v1/reservation_pb.js";
import type { NotificationEntity, ReservationEntity, ResourceEntity, ResourceFields, StatusName } from "./reservation.entity.js";
import { etagOf } from "../../platform/etag.js";

export const DEFAULT_SLOT_MINUTES = 30;

const STATUS: Record<StatusName, ReservationStatus> = {
  pending: ReservationStatus.PENDING,
  confirmed: ReservationStatus.CONFIRMED,
  cancelled: ReservationStatus.CANCELLED,
  rejected: ReservationStatus.REJECTED,
  expired: ReservationStatus.EXPIRED,
};

export const statusToProto = (s: StatusName) => STATUS[s];
export const statusFromProto = (s: ReservationStatus): StatusName =>
  (Object.entries(STATUS).find(([, v]) => v === s)?.[0] ?? "pending") as StatusName;

const ts = (d: Date | null | undefined) => (d ? timestampFromDate(new Date(d)) : undefined);

export function toResource(r: ResourceEntity): Resource {
  return create(ResourceMessageSchema, {
    id: r.id,
    name: r.name,
    type: r.type,
    capacity: r.capacity,
    location: r.location,
    description: r.description,
    active: r.active,
    slotMinutes: r.slotMinutes,
    requiresApproval: r.requiresApproval,
    etag: etagOf(r),
    createTime: ts(r.createdAt),
    updateTime: ts(r.updatedAt),
  });
}

export function toReservation(r: ReservationEntity): Reservation {
  return create(ReservationMessageSchema, {
    id: r.id,
    resourceId: r.resourceId,
    userId: r.userId,
    startTime: ts(r.startTime),
    endTime: ts(r.endTime),
    partySize: r.partySize,
    notes: r.notes,
    status: statusToProto(r.status),
    requestId: r.requestId,
    holdExpireTime: r.status === "pending" ? ts(r.holdExpiresAt) : undefined,
    createTime: ts(r.createdAt),
    updateTime: ts(r.updatedAt),
    etag: etagOf(r),
  });
}

export function toNotification(n: NotificationEntity): Notification {
  return create(NotificationMessageSchema, {
    id: n.id,
    cursor: String(n.eventId),
    type: n.type,
    reservationId: n.reservationId ?? "",
    resourceId: n.resourceId ?? "",
    startTime: ts(n.startTime),
    endTime: ts(n.endTime),
    message: n.message,
    read: n.read,
    createTime: ts(n.createdAt),
    userId: n.userId,
  });
}

/** The columns a Resource message sets (a slot length of 0 means the default, 30 minutes). */
export function resourceFields(r: Resource): ResourceFields {
  return {
    name: r.name,
    type: r.type,
    capacity: r.capacity,
    location: r.location,
    description: r.description,
    active: r.active,
    slotMinutes: r.slotMinutes || DEFAULT_SLOT_MINUTES,
    requiresApproval: r.requiresApproval,
  };
}
