import { create } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  CreateReservationRequestSchema,
  CreateResourceRequestSchema,
  NotificationType,
  ReservationService,
  ResourceSchema as ResourceMessageSchema,
  WatchNotificationsResponseSchema,
  type Notification,
} from "../../../gen/agora/reservation/v1/reservation_pb.js";
import type { ReservationConfig } from "../../config.js";
import { assertOwner, callerOf } from "../../platform/auth.js";
import type { Clock } from "../../platform/clock.js";
import { failedPrecondition, invalidArgument, type FieldViolation } from "../../platform/errors.js";
import type { EventLog } from "../../platform/event-log.js";
import { requestFingerprint } from "../../platform/idempotency.js";
import { fingerprint, isKeyset, isStringPosition, pageSize, type PageTokens } from "../../platform/paging.js";
import { assertUpdateMask, assertValid } from "../../platform/validation.js";
import type { NotificationRepository } from "./notification.repository.js";
import type { ReservationEntity, ResourceEntity } from "./reservation.entity.js";
import { DEFAULT_SLOT_MINUTES, resourceFields, statusFromProto, toNotification, toReservation, toResource } from "./reservation.mapper.js";
import type { ReservationRepository } from "./reservation.repository.js";
import type { ResourceRepository } from "./resource.repository.js";

const UPDATABLE = new Set(["name", "type", "capacity", "location", "description", "active", "slot_minutes", "requires_approval"]);


export interface ReservationDeps {
  pageTokens: PageTokens;
  resources: ResourceRepository;
  reservations: ReservationRepository;
  notifications: NotificationRepository;
  events: EventLog<Notification>;
  config: ReservationConfig;
  clock: Clock;
}

function millis(t: Timestamp): number {
  return Number(t.seconds) * 1000 + t.nanos / 1e6;
}

/**
 * Checks a slot against the resource's grid (multiples of slot_minutes from
 * 00:00 UTC), the clock and the maximum length; violations name the field and,
 * for a misaligned time, the nearest valid ones.
 */
function slotViolations(resource: ResourceEntity, start: Timestamp, end: Timestamp, now: Date, maxHours: number): FieldViolation[] {
  const slot = resource.slotMinutes * 60_000;
  const violations: FieldViolation[] = [];
  for (const [field, t] of [["start_time", millis(start)], ["end_time", millis(end)]] as const) {
    if (t % slot !== 0) {
      const before = new Date(Math.floor(t / slot) * slot).toISOString();
      const after = new Date(Math.ceil(t / slot) * slot).toISOString();
      violations.push({
        field,
        description: `must lie on this resource's ${resource.slotMinutes}-minute grid; nearest valid times: ${before} or ${after}`,
        reason: "SLOT_MISALIGNED",
      });
    }
  }
  if (millis(start) < now.getTime()) {
    violations.push({ field: "start_time", description: `must not be in the past (now is ${now.toISOString()})`, reason: "IN_THE_PAST" });
  }
  if (millis(end) - millis(start) > maxHours * 3_600_000) {
    violations.push({ field: "end_time", description: `a reservation lasts at most ${maxHours} hours`, reason: "TOO_LONG" });
  }
  return violations;
}

/** The resource, if it may be booked: FAILED_PRECONDITION when it is not active. */
function assertBookable(resource: ResourceEntity): ResourceEntity {
  if (!resource.active) {
    throw failedPrecondition("RESOURCE_INACTIVE", `resource ${resource.name} is not active and cannot be booked`, {
      type: "RESOURCE_STATE",
      subject: `resources/${resource.id}`,
      description: "the resource is not active",
    });
  }
  return resource;
}

function capacityViolation(resource: ResourceEntity, partySize: number): FieldViolation[] {
  return partySize > resource.capacity
    ? [{ field: "party_size", description: `exceeds the capacity of ${resource.name} (${resource.capacity})`, reason: "OVER_CAPACITY" }]
    : [];
}

export function reservationHandlers(d: ReservationDeps): ServiceImpl<typeof ReservationService> {
  const pages = d.pageTokens;
  /** The reservation if the caller may see it; NOT_FOUND otherwise (ids of others are never confirmed). */
  async function visible(ctx: HandlerContext, id: string): Promise<ReservationEntity> {
    const reservation = await d.reservations.get(id);
    assertOwner(callerOf(ctx), reservation.userId, { type: "reservation", id });
    return reservation;
  }

  async function bookable(resourceId: string): Promise<ResourceEntity> {
    return assertBookable(await d.resources.get(resourceId));
  }

  return {
    async createResource(req) {
      return { resource: toResource(await d.resources.create(resourceFields(req.resource!), req.requestId, requestFingerprint(CreateResourceRequestSchema, req), d.clock.now())) };
    },

    async getResource(req) {
      return { resource: toResource(await d.resources.get(req.id)) };
    },

    async listResources(req) {
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("resources", req.type, req.active, req.minCapacity);
      const rows = await d.resources.list({
        type: req.type,
        active: req.active,
        minCapacity: req.minCapacity,
        after: pages.decode(req.pageToken, filters, isKeyset),
        limit: limit + 1,
      });
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [last.name, last.id]);
      return { resources: page.map(toResource), nextPageToken };
    },

    async updateResource(req) {
      const paths = req.updateMask!.paths;
      assertUpdateMask(paths, UPDATABLE);
      const given = req.resource ?? create(ResourceMessageSchema);
      const updated = await d.resources.update(
        req.id,
        req.etag,
        (entity) => {
          const merged = toResource(entity);
          for (const path of paths) {
            if (path === "slot_minutes") merged.slotMinutes = given.slotMinutes;
            else if (path === "requires_approval") merged.requiresApproval = given.requiresApproval;
            else (merged as unknown as Record<string, unknown>)[path] = (given as unknown as Record<string, unknown>)[path];
          }
          if (merged.slotMinutes === 0) merged.slotMinutes = DEFAULT_SLOT_MINUTES;
          assertValid(ResourceMessageSchema, merged, "resource.");
          Object.assign(entity, resourceFields(merged));
        },
        d.clock.now(),
      );
      return { resource: toResource(updated) };
    },

    async listAvailableResources(req) {
      const limit = pageSize(req.pageSize);
      const start = timestampDate(req.startTime!);
      const end = timestampDate(req.endTime!);
      const filters = fingerprint("available", req.type, req.partySize, start.toISOString(), end.toISOString());
      const rows = await d.resources.available(
        req.type, req.partySize, start, end, d.clock.now(), pages.decode(req.pageToken, filters, isKeyset), limit + 1,
      );
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [last.name, last.id]);
      return { resources: page.map(toResource), nextPageToken };
    },

    async createReservation(req, ctx) {
      const caller = callerOf(ctx);
      // A retry gets the first answer even if the rules would refuse the request now (resource closed, time passed).
      const now = d.clock.now();
      const reservation = await d.reservations.create(
        {
          resourceId: req.resourceId,
          userId: caller.userId,
          start: timestampDate(req.startTime!),
          end: timestampDate(req.endTime!),
          partySize: req.partySize,
          notes: req.notes,
          requestId: req.requestId,
          requestFingerprint: requestFingerprint(CreateReservationRequestSchema, req),
        },
        now,
        (resource) => {
          assertBookable(resource);
          const violations = [...slotViolations(resource, req.startTime!, req.endTime!, now, d.config.maxHours), ...capacityViolation(resource, req.partySize)];
          if (violations.length > 0) throw invalidArgument(violations);
        },
      );
      return { reservation: toReservation(reservation) };
    },

    async getReservation(req, ctx) {
      return { reservation: toReservation(await visible(ctx, req.id)) };
    },

    async listReservations(req, ctx) {
      const caller = callerOf(ctx);
      // Only admins choose whose reservations to see; everyone else sees their own.
      const userId = caller.role === "admin" ? req.userId || undefined : caller.userId;
      const limit = pageSize(req.pageSize);
      const from = req.startTime ? timestampDate(req.startTime) : undefined;
      const to = req.endTime ? timestampDate(req.endTime) : undefined;
      const filters = fingerprint("reservations", userId, req.resourceId, req.statuses, from?.toISOString(), to?.toISOString());
      const rows = await d.reservations.list({
        userId,
        resourceId: req.resourceId || undefined,
        statuses: req.statuses.map(statusFromProto),
        from,
        to,
        after: pages.decode(req.pageToken, filters, isKeyset),
        limit: limit + 1,
      });
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => [new Date(last.startTime).toISOString(), last.id]);
      return { reservations: page.map(toReservation), nextPageToken };
    },

    async cancelReservation(req, ctx) {
      const reservation = await visible(ctx, req.id);
      const reason = req.reason ? `: ${req.reason}` : "";
      const cancelled = await d.reservations.transition(reservation, ["pending", "confirmed"], "cancelled", d.clock.now(), {
        type: NotificationType.CANCELLED,
        message: `your reservation was cancelled${reason}`,
      });
      return { reservation: toReservation(cancelled) };
    },

    async rescheduleReservation(req, ctx) {
      const reservation = await visible(ctx, req.id);
      const resource = await bookable(reservation.resourceId);
      const violations = slotViolations(resource, req.startTime!, req.endTime!, d.clock.now(), d.config.maxHours);
      if (violations.length > 0) throw invalidArgument(violations);
      const moved = await d.reservations.reschedule(reservation, timestampDate(req.startTime!), timestampDate(req.endTime!), req.etag, d.clock.now());
      return { reservation: toReservation(moved) };
    },

    async confirmReservation(req) {
      const reservation = await d.reservations.get(req.id);
      const confirmed = await d.reservations.transition(reservation, ["pending"], "confirmed", d.clock.now(), {
        type: NotificationType.CONFIRMED,
        message: "your reservation is confirmed",
      });
      return { reservation: toReservation(confirmed) };
    },

    async rejectReservation(req) {
      const reservation = await d.reservations.get(req.id);
      const reason = req.reason ? `: ${req.reason}` : "";
      const rejected = await d.reservations.transition(reservation, ["pending"], "rejected", d.clock.now(), {
        type: NotificationType.REJECTED,
        message: `your reservation was rejected${reason}`,
      });
      return { reservation: toReservation(rejected) };
    },

    async listNotifications(req, ctx) {
      const caller = callerOf(ctx);
      const limit = pageSize(req.pageSize);
      const filters = fingerprint("notifications", caller.userId, req.unreadOnly);
      const rows = await d.notifications.list(caller.userId, req.unreadOnly, pages.decode(req.pageToken, filters, isStringPosition), limit + 1);
      const { page, nextPageToken } = pages.pageOf(rows, limit, filters, (last) => String(last.eventId));
      return { notifications: page.map(toNotification), nextPageToken };
    },

    async markNotificationRead(req, ctx) {
      return { notification: toNotification(await d.notifications.markRead(callerOf(ctx).userId, req.id)) };
    },

    async *watchNotifications(req, ctx) {
      const caller = callerOf(ctx);
      yield* d.events.watch(req.afterCursor, ctx.signal, {
        heartbeat: (value) => create(WatchNotificationsResponseSchema, { kind: { case: "heartbeat", value } }),
        event: (n, cursor) =>
          n.userId === caller.userId ? create(WatchNotificationsResponseSchema, { kind: { case: "notification", value: { ...n, cursor } } }) : undefined,
      });
    },
  };
}
