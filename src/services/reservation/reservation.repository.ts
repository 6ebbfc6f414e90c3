import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { NotificationType } from "../../../gen/agora/reservation/v1/reservation_pb.js";
import { isExclusionViolation, isUniqueViolation, preparedQuery, retryTransaction, rowMapper, sqlTransaction, type Queryable } from "../../platform/db.js";
import { alreadyExists, failedPrecondition, notFound } from "../../platform/errors.js";
import type { NewNotification, NotificationRepository } from "./notification.repository.js";
import { ACTIVE, ReservationSchema, ResourceSchema, SCHEMA, type ReservationEntity, type ResourceEntity, type StatusName } from "./reservation.entity.js";
import { assertEtag } from "../../platform/etag.js";
import { assertSameRequest } from "../../platform/idempotency.js";



export interface NewReservation {
  resourceId: string;
  userId: string;
  start: Date;
  end: Date;
  partySize: number;
  notes: string;
  requestId: string;
  requestFingerprint: string;
}

export interface ReservationQuery {
  userId: string | undefined;
  resourceId: string | undefined;
  statuses: StatusName[];
  from: Date | undefined;
  to: Date | undefined;
  after: [string, string] | undefined;
  limit: number;
}

const iso = (d: Date | string) => new Date(d).toISOString();

interface Slot {
  start: Date;
  end: Date;
}

/** How a booking's transaction ended: booked, refused for the slot in the way, or the same request's earlier booking found. */
type Booking = { reservation: ReservationEntity } | { conflict: Slot } | { retried: true };

const TABLE = `"${SCHEMA}".reservations`;
const fromRow = rowMapper(ReservationSchema);
const resourceFromRow = rowMapper(ResourceSchema);

/** What blocks a slot: active reservations of resource `r` overlapping [`start`, `end`) at time `now` (placeholders). */
const blocking = (r: string, start: string, end: string, now: string) =>
  `resource_id = ${r} AND during && tstzrange(${start}, ${end}, '[)')
         AND (status = 'confirmed' OR (status = 'pending' AND hold_expires_at > ${now}))`;

/**
 * CTEs `blockers`, the reservations matching `where` (blocking and more), and `conflict`, the first of them by start
 * time. The rows in the way are found on their own (MATERIALIZED), through the exclusion constraint's index, and
 * sorted afterwards. As one query with ORDER BY start_time LIMIT 1, a generic plan could walk reservations_by_start
 * from the first reservation ever made, expecting to meet a match soon, and read every reservation of every resource
 * whenever the slot is free: 45-374 ms per booking with 40,000 reservations over two resources (docs/scaling.md).
 */
const firstInTheWay = (where: string) => `blockers AS MATERIALIZED (SELECT start_time, end_time FROM ${TABLE} WHERE ${where}),
    conflict AS (SELECT start_time, end_time FROM blockers ORDER BY start_time LIMIT 1)`;

/**
 * Takes resource $2's lock ($5, see lockKey), then expires its pending holds past their time ($1) overlapping
 * [$3, $4). The lock is an uncorrelated subquery in the WHERE clause: PostgreSQL runs it once, as a one-time
 * filter, before it scans anything, so it is taken whether or not a hold matches.
 */
const RELEASE_EXPIRED_HOLDS = `UPDATE ${TABLE} SET status = 'expired', version = version + 1, updated_at = $1
    WHERE (SELECT true FROM pg_advisory_xact_lock(hashtext($5)))
      AND resource_id = $2 AND status = 'pending' AND hold_expires_at <= $1 AND during && tstzrange($3, $4, '[)')
    RETURNING *`;

/**
 * How a booking ends, after its CTE `go` (one row when it may book): parameters $1-$12 as insertUnlessTaken's.
 * `conflict` is the first active reservation in the way; without one, `inserted` is the new row (`onConflict`
 * goes before its RETURNING); with one, `interest` stores the user's interest in the slot. bookingAnswer reads them.
 */
const bookingCtes = (onConflict: string) => `${firstInTheWay(`${blocking("$2", "$4", "$5", "$12")} AND EXISTS (SELECT FROM go)`)},
    inserted AS (
      INSERT INTO ${TABLE}
        (id, resource_id, user_id, start_time, end_time, party_size, notes, status, request_id, request_fingerprint, hold_expires_at, version, created_at, updated_at)
      SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12 FROM go
       WHERE NOT EXISTS (SELECT FROM conflict)
      ${onConflict}RETURNING *),
    interest AS (
      INSERT INTO "${SCHEMA}".slot_interests (user_id, resource_id, start_time, end_time, created_at)
      SELECT $3, $2, $4, $5, $12 FROM conflict ON CONFLICT DO NOTHING)`;

/** The one row a booking answers with: the new reservation's columns, or the times of the one in the way; and `more`. */
const bookingAnswer = (more: string) => `SELECT inserted.*, conflict.start_time AS conflict_start, conflict.end_time AS conflict_end, ${more}
      FROM (SELECT) one LEFT JOIN inserted ON true LEFT JOIN conflict ON true`;

/** Every statement of the repository, prepared once per connection (preparedQuery): no query builder or hydration. */
const SQL = {
  get: `SELECT * FROM ${TABLE} WHERE id = $1`,
  byRequest: `SELECT * FROM ${TABLE} WHERE user_id = $1 AND request_id = $2`,
  releaseExpiredHolds: RELEASE_EXPIRED_HOLDS,
  /**
   * A booking's first statement: the lock and the release of expired holds ($1-$5, as releaseExpiredHolds), and,
   * as JSON, the holds released, user $6's reservation made by request $7 if any, and resource $2.
   */
  startBooking: `WITH released AS (${RELEASE_EXPIRED_HOLDS})
    SELECT (SELECT json_agg(released) FROM released) AS released,
           (SELECT to_json(r) FROM ${TABLE} r WHERE user_id = $6 AND request_id = $7) AS earlier,
           (SELECT to_json(x) FROM "${SCHEMA}".resources x WHERE id = $2) AS resource`,
  /**
   * Books [$4, $5) of resource $2 for user $3 by request $9, unless
   * - that request already booked (a concurrent retry that got the lock first): then `retried` is true;
   * - or an active reservation overlaps the slot at time $12: then it stores the user's interest in the slot
   *   instead and returns the first such reservation's times (conflict_start, conflict_end).
   * One row in every case. Run under the resource's lock, after its expired holds were released, so it and the
   * exclusion constraint see the same rows.
   */
  insertUnlessTaken: `WITH earlier AS (SELECT FROM ${TABLE} WHERE user_id = $3 AND request_id = $9),
    go AS (SELECT WHERE NOT EXISTS (SELECT FROM earlier)),
    ${bookingCtes("")}
    ${bookingAnswer("EXISTS (SELECT FROM earlier) AS retried")}`,
  /**
   * Moves active reservation $4 to [$1, $2) at time $3, at version $5 when given (an etag). A hold whose time
   * is up is not revived by moving it.
   */
  move: `UPDATE ${TABLE}
       SET start_time = $1, end_time = $2, reminder_sent_at = NULL, version = version + 1, updated_at = $3
     WHERE id = $4 AND status IN ('pending', 'confirmed') AND NOT (status = 'pending' AND hold_expires_at <= $3)
       AND ($5::int IS NULL OR version = $5)
    RETURNING *`,
  /** Reservation $3 from one of the statuses $4 to $1 at time $2; a pending hold past its time can no longer be confirmed. */
  transition: `UPDATE ${TABLE} SET status = $1, version = version + 1, updated_at = $2
    WHERE id = $3 AND status = ANY($4::text[])
      AND NOT ($1 = 'confirmed' AND status = 'pending' AND hold_expires_at <= $2)
    RETURNING *`,
  /** Up to $2 pending holds past their time ($1) expire; instances sweeping together skip each other's rows. */
  expireHolds: `UPDATE ${TABLE} r SET status = 'expired', version = version + 1, updated_at = $1
      FROM (SELECT id FROM ${TABLE} WHERE status = 'pending' AND hold_expires_at <= $1
             ORDER BY hold_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
    WHERE r.id = due.id RETURNING r.*`,
  /** Up to $3 confirmed reservations starting in ($1, $2] not yet reminded, marked as reminded. */
  dueReminders: `UPDATE ${TABLE} r SET reminder_sent_at = $1
      FROM (SELECT id FROM ${TABLE} WHERE status = 'confirmed' AND reminder_sent_at IS NULL AND start_time > $1 AND start_time <= $2
             ORDER BY start_time LIMIT $3 FOR UPDATE SKIP LOCKED) due
    WHERE r.id = due.id RETURNING r.*`,
  pruneInterests: `DELETE FROM "${SCHEMA}".slot_interests WHERE end_time <= $1`,
  /** The first active reservation of resource $1 other than $2 overlapping [$3, $4) at time $5. */
  conflicting: `WITH ${firstInTheWay(`id <> $2 AND ${blocking("$1", "$3", "$4", "$5")}`)} SELECT * FROM conflict`,
  /** Interests in resource $1 overlapping [$2, $3), not yet past at $4, whose whole slot is free: deleted and returned. */
  freed: `DELETE FROM "${SCHEMA}".slot_interests i
    WHERE i.resource_id = $1 AND tstzrange(i.start_time, i.end_time, '[)') && tstzrange($2, $3, '[)') AND i.end_time > $4
      AND NOT EXISTS (
        SELECT 1 FROM ${TABLE} x
         WHERE x.resource_id = i.resource_id AND x.status IN ('pending', 'confirmed')
           AND x.during && tstzrange(i.start_time, i.end_time, '[)'))
    RETURNING i.user_id, i.start_time, i.end_time`,
  recordInterest: `INSERT INTO "${SCHEMA}".slot_interests (user_id, resource_id, start_time, end_time, created_at)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
} as const;

/**
 * A booking as one statement, parameters $1-$12 as insertUnlessTaken's and $13 the version of resource $2 the
 * booking rules were checked against; then the notification's (NotificationRepository.storeCtes, from $14). It
 * books only when the resource is still at that version, no earlier request of user $3 has id $9, and no pending
 * hold whose time is up overlaps the slot (releasing one needs `create`'s transaction); an active reservation in
 * the way is answered as insertUnlessTaken does, storing the user's interest. The INSERT's ON CONFLICT DO NOTHING
 * has every constraint as arbiter, the exclusion constraint among them: a booking that commits after this
 * statement's snapshot was taken, unseen by `conflict`, makes it insert nothing instead of failing, and speculative
 * insertion, unlike a plain INSERT, does not deadlock with a concurrent overlapping one, so no lock is needed. One
 * row: the reservation's columns when booked, conflict_start and conflict_end when refused, `earlier` (JSON) for a
 * repeated request, and nothing of these when the statement could not decide.
 */
const bookSql = (storeNotification: string) => `WITH earlier AS (SELECT * FROM ${TABLE} WHERE user_id = $3 AND request_id = $9),
    go AS (
      SELECT FROM "${SCHEMA}".resources x
       WHERE x.id = $2 AND x.version = $13 AND NOT EXISTS (SELECT FROM earlier)
         AND NOT EXISTS (SELECT FROM ${TABLE}
                          WHERE resource_id = $2 AND status = 'pending' AND hold_expires_at <= $12 AND during && tstzrange($4, $5, '[)'))),
    ${bookingCtes("ON CONFLICT DO NOTHING ")},
    ${storeNotification}
  ${bookingAnswer("(SELECT to_json(earlier) FROM earlier) AS earlier, (SELECT count(*) FROM told) AS told")}`;

/** Resources a booking's rules were last checked against, by id; more than this many and the cache starts over. */
const RESOURCES_CACHED = 10_000;

async function query<R extends Record<string, unknown>>(on: Queryable, statement: keyof typeof SQL, values: unknown[]): Promise<R[]> {
  return preparedQuery<R>(on, `reservation.${statement}`, SQL[statement], values);
}

/**
 * Owns every query on reservations. The exclusion constraint
 * `reservations_no_overlap` is what makes double booking impossible; this
 * class turns its verdicts into answers and keeps notifications in the same
 * transactions as the changes they describe. Notifications are stored last in
 * each transaction, sent with its COMMIT (storeAndCommit): storing takes the
 * event log's lock, a transaction that holds it then never waits on another, so
 * it cannot close a deadlock cycle, and it holds it for PostgreSQL's time alone.
 */
export class ReservationRepository {
  /** The resources bookings were checked against (bookAtOnce); a row at another version is never booked from here. */
  private readonly resources = new Map<string, ResourceEntity>();
  private readonly bookSql: string;

  constructor(
    private readonly em: EntityManager,
    private readonly notifications: NotificationRepository,
    private readonly holdMinutes: number,
  ) {
    this.bookSql = bookSql(notifications.storeCtes("inserted", 14));
  }

  async get(id: string): Promise<ReservationEntity> {
    const [row] = await query(this.em, "get", [id]);
    if (!row) throw notFound("reservation", id);
    return fromRow(row);
  }

  /** The reservation an earlier request with this id made, if any; INVALID_ARGUMENT when that request was another one. */
  private async byRequest(userId: string, requestId: string, fingerprint: string): Promise<ReservationEntity | null> {
    const [row] = await query(this.em, "byRequest", [userId, requestId]);
    if (!row) return null;
    const earlier = fromRow(row);
    assertSameRequest(earlier.requestFingerprint, fingerprint);
    return earlier;
  }

  /**
   * Books the slot, or throws ALREADY_EXISTS naming the reservation in the way. A request made before (same
   * user and request id) gets that request's reservation (INVALID_ARGUMENT when it was another request) without
   * any check; otherwise `check` applies the booking rules to the resource (NOT_FOUND when there is none) and
   * throws to refuse. A refused booking still commits what it did on the way: the expired holds it released
   * (with their notifications) and the caller's interest in the slot (RESOURCE_AVAILABLE when it frees up).
   * One round trip when this instance has checked a booking of the resource before (bookAtOnce); otherwise, and
   * whenever that statement cannot decide, a transaction of four round trips: BEGIN, startBooking,
   * insertUnlessTaken, then the event-log append with the notifications sent with the COMMIT (or the COMMIT
   * alone when there is nothing to tell).
   */
  async create(n: NewReservation, now: Date, check: (resource: ResourceEntity) => void): Promise<ReservationEntity> {
    const booked = await this.bookAtOnce(n, now, check);
    if (booked) return booked;
    for (let attempt = 0; ; attempt++) {
      try {
        const booked = await retryTransaction(() => sqlTransaction(this.em, async (tx): Promise<Booking> => {
          const [started] = await query<{ released: Record<string, unknown>[] | null; earlier: Record<string, unknown> | null; resource: Record<string, unknown> | null }>(
            tx, "startBooking", [now, n.resourceId, n.start, n.end, lockKey(n.resourceId), n.userId, n.requestId],
          );
          const { released, earlier: earlierRow, resource: resourceRow } = started!;
          const notices = released ? await this.afterExpiry(tx, released.map(fromRow), now) : [];
          if (earlierRow) {
            const earlier = fromRow(earlierRow);
            assertSameRequest(earlier.requestFingerprint, n.requestFingerprint);
            await this.notifications.storeAndCommit(tx, notices, now);
            return { reservation: earlier };
          }
          if (!resourceRow) throw notFound("resource", n.resourceId);
          const resource = resourceFromRow(resourceRow);
          this.remember(resource);
          check(resource);
          const [row] = await query(tx, "insertUnlessTaken", this.bookingValues(n, randomUUID(), resource, now));
          if (row!.id === null) {
            await this.notifications.storeAndCommit(tx, notices, now);
            if (row!.retried) return { retried: true };
            return { conflict: conflictOf(row!) };
          }
          const reservation = fromRow(row!);
          notices.push(bookedNotice(reservation, resource));
          await this.notifications.storeAndCommit(tx, notices, now);
          return { reservation };
        }));
        if ("reservation" in booked) return booked.reservation;
        if ("conflict" in booked) throw slotTaken(n.start, n.end, booked.conflict);
        // A concurrent retry of the same request booked first.
        const winner = await this.byRequest(n.userId, n.requestId, n.requestFingerprint);
        if (winner) return winner;
        throw new Error(`the reservation of request ${n.requestId} is gone`);
      } catch (err) {
        // The check above and the exclusion constraint agree under the resource's lock; the constraint stays the
        // guarantee, and this path what happens if they ever disagree.
        if (isUniqueViolation(err)) {
          const winner = await this.byRequest(n.userId, n.requestId, n.requestFingerprint);
          if (winner) return winner; // a concurrent retry of the same request
        }
        if (!isExclusionViolation(err)) throw err;
        const conflict = await this.conflicting(n.resourceId, n.start, n.end, now);
        // The conflicting booking may have gone in the meantime: try again, once.
        if (!conflict && attempt === 0) continue;
        await this.recordInterest(n.userId, n.resourceId, n.start, n.end, now);
        throw slotTaken(n.start, n.end, conflict);
      }
    }
  }

  /**
   * The booking in one statement (bookSql) against the resource as this instance last read it: the rules are
   * checked here first, and the statement books only if the row is still at that version. Undefined when it
   * cannot decide, and `create`'s transaction must: the resource unknown here or changed, an expired hold to
   * release, a booking committed after its snapshot, or the rules refusing (a refused request may still be a
   * retry, which gets its first answer).
   */
  private async bookAtOnce(n: NewReservation, now: Date, check: (resource: ResourceEntity) => void): Promise<ReservationEntity | undefined> {
    const resource = this.resources.get(n.resourceId);
    if (!resource) return undefined;
    try {
      check(resource);
    } catch {
      return undefined;
    }
    const id = randomUUID();
    const notification = bookedNotice({ id, userId: n.userId, resourceId: n.resourceId, startTime: n.start, endTime: n.end }, resource);
    const [row] = await retryTransaction(() =>
      preparedQuery<Record<string, unknown>>(this.em, "reservation.book", this.bookSql, [
        ...this.bookingValues(n, id, resource, now),
        resource.version,
        ...this.notifications.storeValues([notification], now),
      ]),
    );
    if (row!.earlier) {
      const earlier = fromRow(row!.earlier as Record<string, unknown>);
      assertSameRequest(earlier.requestFingerprint, n.requestFingerprint);
      return earlier;
    }
    if (row!.id !== null) return fromRow(row!);
    if (row!.conflict_start !== null) throw slotTaken(n.start, n.end, conflictOf(row!));
    return undefined;
  }

  /** Parameters $1-$12 of a booking statement (insertUnlessTaken, bookSql): the new reservation `id` of `n` in `resource`. */
  private bookingValues(n: NewReservation, id: string, resource: ResourceEntity, now: Date): unknown[] {
    const pending = resource.requiresApproval;
    return [
      id, n.resourceId, n.userId, n.start, n.end, n.partySize, n.notes,
      pending ? "pending" : "confirmed", n.requestId, n.requestFingerprint,
      pending ? new Date(now.getTime() + this.holdMinutes * 60_000) : null, now,
    ];
  }

  private remember(resource: ResourceEntity): void {
    if (this.resources.size >= RESOURCES_CACHED) this.resources.clear();
    this.resources.set(resource.id, resource);
  }

  async list(q: ReservationQuery): Promise<ReservationEntity[]> {
    const qb = this.em.fork().createQueryBuilder(ReservationSchema, "r").select("*");
    if (q.userId) qb.andWhere({ userId: q.userId });
    if (q.resourceId) qb.andWhere({ resourceId: q.resourceId });
    if (q.statuses.length > 0) qb.andWhere({ status: { $in: q.statuses } });
    if (q.from) qb.andWhere({ endTime: { $gt: q.from } });
    if (q.to) qb.andWhere({ startTime: { $lt: q.to } });
    if (q.after) qb.andWhere("(r.start_time, r.id) > (?, ?)", q.after);
    return qb.orderBy({ "r.start_time": "asc", "r.id": "asc" }).limit(q.limit).getResult();
  }

  /** Moves an active reservation to [start, end) in one statement: the constraint sees old and new at once. */
  async reschedule(current: ReservationEntity, start: Date, end: Date, etag: string, now: Date): Promise<ReservationEntity> {
    assertEtag("reservation", current, etag);
    try {
      return await retryTransaction(() => sqlTransaction(this.em, async (tx) => {
        const notices = await this.releaseExpiredHolds(tx, current.resourceId, start, end, now);
        const [row] = await query(tx, "move", [start, end, now, current.id, etag ? current.version : null]);
        if (!row) throw notActive(current);
        const moved = fromRow(row);
        notices.push(...(await this.freed(tx, current.resourceId, current.startTime, current.endTime, now)));
        await this.notifications.storeAndCommit(tx, notices, now);
        return moved;
      }));
    } catch (err) {
      if (!isExclusionViolation(err)) throw err;
      const conflict = await this.conflicting(current.resourceId, start, end, now, current.id);
      await this.recordInterest(current.userId, current.resourceId, start, end, now);
      throw slotTaken(start, end, conflict);
    }
  }

  /**
   * Moves a reservation from one of `from` to `to` and tells its owner;
   * leaving an active status frees the slot for whoever wanted it.
   */
  async transition(
    current: ReservationEntity,
    from: StatusName[],
    to: StatusName,
    now: Date,
    notification: { type: NotificationType; message: string },
  ): Promise<ReservationEntity> {
    return retryTransaction(() => sqlTransaction(this.em, async (tx) => {
      const [row] = await query(tx, "transition", [to, now, current.id, from]);
      if (!row) throw notActive(current, from);
      const changed = fromRow(row);
      const notices = [notice(changed, notification.type, notification.message)];
      if (!ACTIVE.includes(to)) notices.push(...(await this.freed(tx, changed.resourceId, changed.startTime, changed.endTime, now)));
      await this.notifications.storeAndCommit(tx, notices, now);
      return changed;
    }));
  }

  /** Expires pending holds whose time is up (any instance may run it; each hold expires once). */
  async expireHolds(now: Date, batch = 500): Promise<number> {
    return retryTransaction(() => sqlTransaction(this.em, async (tx) => {
      const rows = await query(tx, "expireHolds", [now, batch]);
      await this.notifications.storeAndCommit(tx, await this.afterExpiry(tx, rows.map(fromRow), now), now);
      return rows.length;
    }));
  }

  /**
   * Stores the reminder of every confirmed reservation starting within
   * `leadMinutes`. The row lock (SKIP LOCKED) and the reminder_sent_at mark,
   * set in the same transaction as the notification, make it exactly once
   * however many instances run this at the same moment.
   */
  async sendReminders(now: Date, leadMinutes: number, batch = 500): Promise<number> {
    return retryTransaction(() => sqlTransaction(this.em, async (tx) => {
      const rows = await query(tx, "dueReminders", [now, new Date(now.getTime() + leadMinutes * 60_000), batch]);
      const due = rows.map(fromRow);
      await this.notifications.storeAndCommit(
        tx,
        due.map((r) => notice(r, NotificationType.REMINDER, `your reservation starts at ${iso(r.startTime)}`)),
        now,
      );
      return due.length;
    }));
  }

  /** Forgets interests in slots that have passed. */
  async pruneInterests(now: Date): Promise<void> {
    await query(this.em, "pruneInterests", [now]);
  }

  /** Pending holds past their time stop blocking a slot the moment someone wants it; returns what to tell whom. */
  /** Takes the resource's lock first (see lockKey), in the same statement. */
  private async releaseExpiredHolds(tx: Queryable, resourceId: string, start: Date, end: Date, now: Date): Promise<NewNotification[]> {
    const rows = await query(tx, "releaseExpiredHolds", [now, resourceId, start, end, lockKey(resourceId)]);
    return rows.length === 0 ? [] : this.afterExpiry(tx, rows.map(fromRow), now);
  }

  private async afterExpiry(tx: Queryable, expired: ReservationEntity[], now: Date): Promise<NewNotification[]> {
    const notices = expired.map((r) => notice(r, NotificationType.EXPIRED, "nobody confirmed your pending reservation in time: the slot was released"));
    for (const r of expired) notices.push(...(await this.freed(tx, r.resourceId, r.startTime, r.endTime, now)));
    return notices;
  }

  /** Finds the users who wanted a slot overlapping [start, end) whose whole slot is free now. */
  private async freed(tx: Queryable, resourceId: string, start: Date, end: Date, now: Date): Promise<NewNotification[]> {
    const rows = await query<{ user_id: string; start_time: string; end_time: string }>(tx, "freed", [resourceId, start, end, now]);
    return rows.map((i) => ({
      userId: i.user_id,
      type: NotificationType.RESOURCE_AVAILABLE,
      resourceId,
      startTime: new Date(i.start_time),
      endTime: new Date(i.end_time),
      message: `the slot ${iso(i.start_time)} - ${iso(i.end_time)} you wanted is free again`,
    }));
  }

  private async conflicting(resourceId: string, start: Date, end: Date, now: Date, except?: string): Promise<Slot | undefined> {
    const [row] = await query<{ start_time: string; end_time: string }>(this.em, "conflicting", [
      resourceId, except ?? "00000000-0000-0000-0000-000000000000", start, end, now,
    ]);
    return row ? { start: new Date(row.start_time), end: new Date(row.end_time) } : undefined;
  }

  private async recordInterest(userId: string, resourceId: string, start: Date, end: Date, now: Date): Promise<void> {
    await query(this.em, "recordInterest", [userId, resourceId, start, end, now]);
  }
}

/**
 * The advisory lock by which bookings of one resource take turns. Without it,
 * two transactions that insert overlapping rows at the same moment each wait
 * for the other in the exclusion constraint: a deadlock PostgreSQL only breaks
 * after deadlock_timeout (1 s), again and again under contention. Taken first
 * in the transaction, by the release of expired holds (the event log's lock
 * comes last), so it closes no cycle; the constraint still decides who wins.
 * Not as a CTE of that statement: PostgreSQL skips a CTE no row needs, and
 * the deadlocks came back (tried).
 */
export function lockKey(resourceId: string): string {
  return `agora.reservation.resource.${resourceId}`;
}

function notice(r: Pick<ReservationEntity, "id" | "userId" | "resourceId" | "startTime" | "endTime">, type: NotificationType, message: string): NewNotification {
  return { userId: r.userId, type, reservationId: r.id, resourceId: r.resourceId, startTime: r.startTime, endTime: r.endTime, message };
}

/** What the user is told of a booking just made: held for approval, or booked. */
function bookedNotice(r: Parameters<typeof notice>[0], resource: ResourceEntity): NewNotification {
  return resource.requiresApproval
    ? notice(r, NotificationType.PENDING, `${resource.name} is held for you until an admin confirms it`)
    : notice(r, NotificationType.CONFIRMED, `${resource.name} is booked`);
}

/** The reservation in the way, from a booking statement's answer (bookingAnswer). */
function conflictOf(row: Record<string, unknown>): Slot {
  return { start: new Date(row.conflict_start as string), end: new Date(row.conflict_end as string) };
}

function slotTaken(start: Date, end: Date, conflict: Slot | undefined) {
  const metadata: Record<string, string> = conflict ? { conflict_start: iso(conflict.start), conflict_end: iso(conflict.end) } : {};
  return alreadyExists(
    "reservation",
    conflict
      ? `the slot ${iso(start)} - ${iso(end)} overlaps a reservation from ${iso(conflict.start)} to ${iso(conflict.end)}`
      : `the slot ${iso(start)} - ${iso(end)} is taken`,
    metadata,
  );
}

function notActive(r: ReservationEntity, from: StatusName[] = ACTIVE) {
  return failedPrecondition(
    "RESERVATION_NOT_ACTIVE",
    `reservation ${r.id} is not ${from.join(" or ")} any more`,
    { type: "STATUS", subject: `reservations/${r.id}`, description: `must be ${from.join(" or ")}` },
  );
}
