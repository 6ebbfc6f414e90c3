import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import {
  NotificationType,
  ReservationService,
  ReservationStatus,
  ResourceSchema,
  type Notification,
  type Reservation,
  type Resource,
} from "../../gen/agora/reservation/v1/reservation_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { lockKey } from "../../src/services/reservation/reservation.repository.js";
import { client, eventually, freshDatabase, genericPlanDatabase, PROTOCOLS, rpcError, signUp, sql, startTestServer, tableReads, type TestServer } from "../support/harness.js";
import { StreamRecorder } from "../support/stream-recorder.js";

type Reservations = Client<typeof ReservationService>;

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
/** Every clock in this file starts here; bookings go on later days. */
const T0 = "2030-01-01T08:00:00Z";

/** Settings shared by every server here: fast sweeps and heartbeats, tokens that survive clock jumps. */
const ENV = {
  SCHEDULER_INTERVAL_MS: "50",
  HEARTBEAT_INTERVAL_MS: "200",
  ACCESS_TOKEN_TTL_SECONDS: "86400",
};

/** 2030-01-<day>T<hh>:<mm>Z */
function at(day: number, hour: number, minute = 0): Date {
  return new Date(Date.UTC(2030, 0, day, hour, minute));
}

const ts = (d: Date): Timestamp => timestampFromDate(d);
const iso = (t: Timestamp | undefined): string => timestampDate(t!).toISOString();

function resource(name: string, overrides: Omit<MessageInitShape<typeof ResourceSchema>, "$typeName"> = {}): Resource {
  return create(ResourceSchema, {
    name,
    type: "room",
    capacity: 8,
    location: "Floor 1",
    description: `${name} description`,
    active: true,
    ...overrides,
  });
}

function violations(err: ConnectError) {
  return err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
}

function badFields(err: ConnectError): string[] {
  return violations(err).map((v) => v.field);
}

/** Asserts INVALID_ARGUMENT naming `field`; returns that violation's description. */
function expectInvalid(err: ConnectError, field: string): string {
  expect(err.code, `${err.message}`).to.equal(Code.InvalidArgument);
  expect(badFields(err), err.message).to.include(field);
  return violations(err).find((v) => v.field === field)!.description;
}

function errorMetadata(err: ConnectError): Record<string, string> {
  return err.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};
}

/** Pairs of active reservations of one resource whose slots overlap: must always be 0. */
const OVERLAPS_SQL = `
  SELECT count(*)::int AS n
  FROM "reservation".reservations a
  JOIN "reservation".reservations b
    ON a.resource_id = b.resource_id AND a.id < b.id
   AND a.start_time < b.end_time AND b.start_time < a.end_time
  WHERE a.status IN ('pending', 'confirmed') AND b.status IN ('pending', 'confirmed')`;

/** Finds the table holding notifications in the reservation schema (its name is the service's choice). */
async function notificationTable(url: string): Promise<string> {
  const rows = await sql<{ table_name: string }>(
    url,
    `SELECT table_name FROM information_schema.tables WHERE table_schema = 'reservation' AND table_name LIKE '%notification%' ORDER BY length(table_name)`,
  );
  if (rows.length === 0) throw new Error("no notification table in schema reservation");
  return rows[0]!.table_name;
}

async function userId(url: string, token: string): Promise<string> {
  return (await client(IdentityService, url, "grpc", token).getMe({})).user!.id;
}

interface User {
  name: string;
  id: string;
  token: string;
}

async function newUser(server: TestServer, name: string): Promise<User> {
  const token = await signUp(server.url, name);
  return { name, token, id: await userId(server.url, token) };
}

async function allNotifications(c: Reservations, unreadOnly = false): Promise<Notification[]> {
  const out: Notification[] = [];
  let pageToken = "";
  do {
    const page = await c.listNotifications({ pageSize: 1000, pageToken, unreadOnly });
    out.push(...page.notifications);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

async function notificationsOf(c: Reservations, type: NotificationType, reservationId?: string): Promise<Notification[]> {
  return (await allNotifications(c)).filter((n) => n.type === type && (reservationId === undefined || n.reservationId === reservationId));
}

async function allReservations(c: Reservations, query: Parameters<Reservations["listReservations"]>[0] = {}): Promise<Reservation[]> {
  const out: Reservation[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await c.listReservations({ ...query, pageSize: 100, pageToken });
    out.push(...page.reservations);
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken && pages < 1000);
  return out;
}

/** Reads a WatchNotifications stream in the background. */
const watch = (c: Reservations, afterCursor = "") => new StreamRecorder((signal) => c.watchNotifications({ afterCursor }, { signal }));
type Watcher = ReturnType<typeof watch>;

/** Two instances over one database and one clock. */
async function startPair(clock: ManualClock, env: Record<string, string> = {}): Promise<[TestServer, TestServer]> {
  const url = await freshDatabase();
  const a = await startTestServer({ ...ENV, ...env }, url, undefined, clock);
  const b = await startTestServer({ ...ENV, ...env }, url, undefined, clock);
  return [a, b];
}

/** Deterministic pseudo-random numbers (mulberry32). */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("reservation service", function () {
  this.timeout(180_000);

  describe("resources", () => {
    const clock = new ManualClock(new Date(T0));
    let server: TestServer;
    let admin: Reservations;
    let user: Reservations;

    before(async () => {
      server = await startTestServer(ENV, undefined, undefined, clock);
      admin = client(ReservationService, server.url, "grpc", server.adminToken);
      user = client(ReservationService, server.url, "grpc", await signUp(server.url, "res-user"));
    });
    after(() => server?.shutdown());

    it("creates a resource with slot_minutes defaulting to 30 and reads it back identically over every protocol", async () => {
      const { resource: created } = await admin.createResource({ resource: resource("Board room", { slotMinutes: 0 }) });
      expect(created!.id).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(created!.slotMinutes).to.equal(30);
      expect(created!.name).to.equal("Board room");
      expect(created!.capacity).to.equal(8);
      expect(created!.active).to.equal(true);
      expect(created!.etag).to.not.equal("");
      expect(created!.createTime).to.not.equal(undefined);
      for (const protocol of PROTOCOLS) {
        const { resource: read } = await client(ReservationService, server.url, protocol, server.adminToken).getResource({ id: created!.id });
        expect(read, protocol).to.deep.equal(created);
      }
      // Users may read resources too.
      expect((await user.getResource({ id: created!.id })).resource).to.deep.equal(created);
      expect((await rpcError(admin.getResource({ id: "00000000-0000-4000-8000-000000000000" }))).code).to.equal(Code.NotFound);
    });

    it("returns the first resource when CreateResource is retried with the same request_id", async () => {
      const first = await admin.createResource({ resource: resource("Retried room"), requestId: "res-create-1" });
      const again = await admin.createResource({ resource: resource("Retried room"), requestId: "res-create-1" });
      expect(again.resource!.id).to.equal(first.resource!.id);
      const { resources } = await admin.listResources({ pageSize: 1000 });
      expect(resources.filter((r) => r.name === "Retried room")).to.have.length(1);
    });

    it("lists by name with type, active and min_capacity filters, and pages without gaps or repeats", async () => {
      const specs: [string, string, number, boolean][] = [
        ["L-alpha", "listtype", 2, true],
        ["L-bravo", "listtype", 10, true],
        ["L-charlie", "listtype", 20, false],
        ["L-delta", "listtype", 4, true],
        ["L-echo", "listtype", 30, true],
        ["L-foxtrot", "othertype", 50, true],
      ];
      for (const [name, type, capacity, active] of specs) {
        await admin.createResource({ resource: resource(name, { type, capacity, active }) });
      }
      const names = (rs: Resource[]) => rs.map((r) => r.name);
      expect(names((await admin.listResources({ type: "listtype", pageSize: 100 })).resources)).to.deep.equal([
        "L-alpha",
        "L-bravo",
        "L-charlie",
        "L-delta",
        "L-echo",
      ]);
      expect(names((await admin.listResources({ type: "listtype", active: true, pageSize: 100 })).resources)).to.deep.equal([
        "L-alpha",
        "L-bravo",
        "L-delta",
        "L-echo",
      ]);
      expect(names((await admin.listResources({ type: "listtype", active: false, pageSize: 100 })).resources)).to.deep.equal(["L-charlie"]);
      expect(names((await admin.listResources({ type: "listtype", minCapacity: 10, pageSize: 100 })).resources)).to.deep.equal([
        "L-bravo",
        "L-charlie",
        "L-echo",
      ]);
      expect(names((await user.listResources({ type: "listtype", active: true, minCapacity: 5 })).resources)).to.deep.equal(["L-bravo", "L-echo"]);

      const seen: string[] = [];
      let pageToken = "";
      let pages = 0;
      do {
        const page = await admin.listResources({ type: "listtype", pageSize: 2, pageToken });
        expect(page.resources.length).to.be.at.most(2);
        seen.push(...names(page.resources));
        pageToken = page.nextPageToken;
        pages++;
      } while (pageToken && pages < 20);
      expect(seen).to.deep.equal(["L-alpha", "L-bravo", "L-charlie", "L-delta", "L-echo"]);
      expect(pages).to.equal(3);
    });

    it("updates only the masked fields, changes the etag, and refuses a stale etag with ABORTED", async () => {
      const { resource: r } = await admin.createResource({ resource: resource("Update me", { capacity: 4 }) });
      const { resource: updated } = await admin.updateResource({
        id: r!.id,
        resource: { name: "Updated", capacity: 99, description: "not in the mask" },
        updateMask: { paths: ["name", "capacity"] },
        etag: r!.etag,
      });
      expect(updated!.name).to.equal("Updated");
      expect(updated!.capacity).to.equal(99);
      expect(updated!.description).to.equal(r!.description);
      expect(updated!.location).to.equal(r!.location);
      expect(updated!.slotMinutes).to.equal(30);
      expect(updated!.etag).to.not.equal(r!.etag);
      expect((await admin.getResource({ id: r!.id })).resource).to.deep.equal(updated);

      const stale = await rpcError(admin.updateResource({ id: r!.id, resource: { name: "Stale" }, updateMask: { paths: ["name"] }, etag: r!.etag }));
      expect(stale.code).to.equal(Code.Aborted);
      expect((await admin.getResource({ id: r!.id })).resource!.name).to.equal("Updated");

      const deactivated = await admin.updateResource({ id: r!.id, resource: { active: false }, updateMask: { paths: ["active"] }, etag: updated!.etag });
      expect(deactivated.resource!.active).to.equal(false);
      expect(deactivated.resource!.name).to.equal("Updated");
    });

    it("validates the resource as updated", async () => {
      const { resource: r } = await admin.createResource({ resource: resource("Validate update") });
      expectInvalid(await rpcError(admin.updateResource({ id: r!.id, resource: { capacity: 0 }, updateMask: { paths: ["capacity"] } })), "resource.capacity");
      expectInvalid(await rpcError(admin.updateResource({ id: r!.id, resource: { slotMinutes: 7 }, updateMask: { paths: ["slot_minutes"] } })), "resource.slot_minutes");
      expectInvalid(await rpcError(admin.updateResource({ id: r!.id, resource: { name: "" }, updateMask: { paths: ["name"] } })), "resource.name");
      expect((await admin.getResource({ id: r!.id })).resource).to.deep.equal(r);
      const missing = await rpcError(
        admin.updateResource({ id: "00000000-0000-4000-8000-000000000000", resource: { name: "x" }, updateMask: { paths: ["name"] } }),
      );
      expect(missing.code).to.equal(Code.NotFound);
    });

    it("refuses CreateResource and UpdateResource from non-admins with PERMISSION_DENIED", async () => {
      const denied = await rpcError(user.createResource({ resource: resource("Not yours") }));
      expect(denied.code).to.equal(Code.PermissionDenied);
      const { resource: r } = await admin.createResource({ resource: resource("Admin's") });
      const update = await rpcError(user.updateResource({ id: r!.id, resource: { name: "Mine" }, updateMask: { paths: ["name"] } }));
      expect(update.code).to.equal(Code.PermissionDenied);
      expect((await admin.getResource({ id: r!.id })).resource!.name).to.equal("Admin's");
      const { resources } = await admin.listResources({ pageSize: 1000 });
      expect(resources.map((x) => x.name)).to.not.include("Not yours");
    });

    const invalid: [string, Omit<MessageInitShape<typeof ResourceSchema>, "$typeName">][] = [
      ["resource.name", { name: "" }],
      ["resource.name", { name: "n".repeat(201) }],
      ["resource.type", { type: "Room" }],
      ["resource.type", { type: "" }],
      ["resource.capacity", { capacity: 0 }],
      ["resource.capacity", { capacity: 10001 }],
      ["resource.slot_minutes", { slotMinutes: 7 }],
      ["resource.slot_minutes", { slotMinutes: 4 }],
      ["resource.slot_minutes", { slotMinutes: 2880 }],
      ["resource.location", { location: "l".repeat(201) }],
      ["resource.description", { description: "d".repeat(4001) }],
    ];
    for (const [field, overrides] of invalid) {
      it(`rejects an invalid ${field} (${JSON.stringify(overrides).slice(0, 40)}) with INVALID_ARGUMENT`, async () => {
        const name = typeof overrides.name === "string" ? overrides.name : `Invalid ${field}`;
        expectInvalid(await rpcError(admin.createResource({ resource: resource(name, { ...overrides }) })), field);
      });
    }

    it("accepts the slot lengths that divide a day", async () => {
      for (const slotMinutes of [5, 15, 60, 90, 1440]) {
        const { resource: r } = await admin.createResource({ resource: resource(`Slot ${slotMinutes}`, { slotMinutes }) });
        expect(r!.slotMinutes).to.equal(slotMinutes);
      }
    });
  });

  describe("booking rules", () => {
    const clock = new ManualClock(new Date(T0));
    let server: TestServer;
    let admin: Reservations;
    let alice: User;
    let bob: User;
    let asAlice: Reservations;
    let asBob: Reservations;
    let room: Resource;

    before(async () => {
      server = await startTestServer(ENV, undefined, undefined, clock);
      admin = client(ReservationService, server.url, "grpc", server.adminToken);
      alice = await newUser(server, "rules-alice");
      bob = await newUser(server, "rules-bob");
      asAlice = client(ReservationService, server.url, "grpc", alice.token);
      asBob = client(ReservationService, server.url, "grpc", bob.token);
      room = (await admin.createResource({ resource: resource("Rules room", { type: "rulesroom", capacity: 6 }) })).resource!;
    });
    after(() => server?.shutdown());

    const book = (c: Reservations, start: Date, end: Date, requestId: string, extra: { partySize?: number; resourceId?: string; notes?: string } = {}) =>
      c.createReservation({
        resourceId: extra.resourceId ?? room.id,
        startTime: ts(start),
        endTime: ts(end),
        partySize: extra.partySize ?? 2,
        notes: extra.notes ?? "",
        requestId,
      });

    it("books a free slot CONFIRMED at once with everything echoed back, and stores a CONFIRMED notification", async () => {
      const { reservation: r } = await book(asAlice, at(5, 10), at(5, 11), "rules-ok-1", { partySize: 3, notes: "standup" });
      expect(r!.id).to.match(/^[0-9a-f-]{36}$/);
      expect(r!.status).to.equal(ReservationStatus.CONFIRMED);
      expect(r!.resourceId).to.equal(room.id);
      expect(r!.userId).to.equal(alice.id);
      expect(iso(r!.startTime)).to.equal("2030-01-05T10:00:00.000Z");
      expect(iso(r!.endTime)).to.equal("2030-01-05T11:00:00.000Z");
      expect(r!.partySize).to.equal(3);
      expect(r!.notes).to.equal("standup");
      expect(r!.requestId).to.equal("rules-ok-1");
      expect(r!.holdExpireTime).to.equal(undefined);
      expect((await asAlice.getReservation({ id: r!.id })).reservation).to.deep.equal(r);
      const rows = await sql(server.databaseUrl, `SELECT status, user_id::text AS user_id FROM "reservation".reservations WHERE id = $1`, [r!.id]);
      expect(rows).to.deep.equal([{ status: "confirmed", user_id: alice.id }]);
      await eventually(async () => (await notificationsOf(asAlice, NotificationType.CONFIRMED, r!.id)).length === 1, "the CONFIRMED notification");
      const [n] = await notificationsOf(asAlice, NotificationType.CONFIRMED, r!.id);
      expect(n!.resourceId).to.equal(room.id);
      expect(iso(n!.startTime)).to.equal("2030-01-05T10:00:00.000Z");
      expect(iso(n!.endTime)).to.equal("2030-01-05T11:00:00.000Z");
      expect(n!.read).to.equal(false);
      expect(n!.message).to.not.equal("");
    });

    it("accepts a booking of exactly RESERVATION_MAX_HOURS (24 h) and slots that only touch", async () => {
      const { reservation: r } = await book(asAlice, at(6, 0), at(7, 0), "rules-24h");
      expect(r!.status).to.equal(ReservationStatus.CONFIRMED);
      // Back to back: [07:00 on the 7th, ...) starts where the previous one ends.
      const { reservation: next } = await book(asBob, at(7, 0), at(7, 0, 30), "rules-touch");
      expect(next!.status).to.equal(ReservationStatus.CONFIRMED);
    });

    it("rejects a misaligned start with the nearest valid times in the start_time violation", async () => {
      const err = await rpcError(book(asAlice, at(8, 10, 10), at(8, 11), "rules-misaligned-start"));
      const description = expectInvalid(err, "start_time");
      expect(description).to.contain("2030-01-08T10:00:00.000Z");
      expect(description).to.contain("2030-01-08T10:30:00.000Z");
    });

    it("rejects a misaligned end with the nearest valid times in the end_time violation", async () => {
      const err = await rpcError(book(asAlice, at(8, 10), at(8, 11, 45), "rules-misaligned-end"));
      const description = expectInvalid(err, "end_time");
      expect(description).to.contain("2030-01-08T11:30:00.000Z");
      expect(description).to.contain("2030-01-08T12:00:00.000Z");
    });

    it("uses the resource's own slot length for alignment", async () => {
      const { resource: quarter } = await admin.createResource({ resource: resource("Quarter room", { type: "rulesroom", slotMinutes: 15 }) });
      const ok = await book(asAlice, at(8, 10, 15), at(8, 10, 45), "rules-quarter", { resourceId: quarter!.id });
      expect(ok.reservation!.status).to.equal(ReservationStatus.CONFIRMED);
      const { resource: hourly } = await admin.createResource({ resource: resource("Hourly room", { type: "rulesroom", slotMinutes: 60 }) });
      const err = await rpcError(book(asAlice, at(8, 10, 30), at(8, 12), "rules-hourly", { resourceId: hourly!.id }));
      const description = expectInvalid(err, "start_time");
      expect(description).to.contain("2030-01-08T10:00:00.000Z");
      expect(description).to.contain("2030-01-08T11:00:00.000Z");
    });

    it("rejects an end not after the start with the time_range rule", async () => {
      for (const end of [at(8, 10), at(8, 9)]) {
        const err = await rpcError(book(asAlice, at(8, 10), end, `rules-range-${end.getTime()}`));
        expect(err.code).to.equal(Code.InvalidArgument);
        expect(err.rawMessage).to.contain("end_time must be after start_time");
        expect(violations(err).map((v) => v.description)).to.include("end_time must be after start_time");
      }
    });

    it("rejects a start in the past by the service's clock (not the wall clock) on start_time", async () => {
      // 07:30 on 2030-01-01 is in the future for the wall clock but before the ManualClock's now.
      expectInvalid(await rpcError(book(asAlice, at(1, 7, 30), at(1, 8, 30), "rules-past")), "start_time");
      const future = await book(asAlice, at(1, 8, 30), at(1, 9), "rules-soon");
      expect(future.reservation!.status).to.equal(ReservationStatus.CONFIRMED);
    });

    it("rejects a reservation longer than RESERVATION_MAX_HOURS on end_time", async () => {
      expectInvalid(await rpcError(book(asAlice, at(9, 0), at(10, 0, 30), "rules-too-long")), "end_time");
    });

    it("rejects a party larger than the resource's capacity on party_size", async () => {
      expectInvalid(await rpcError(book(asAlice, at(9, 10), at(9, 11), "rules-party-big", { partySize: 7 })), "party_size");
      const exact = await book(asAlice, at(9, 10), at(9, 11), "rules-party-exact", { partySize: 6 });
      expect(exact.reservation!.partySize).to.equal(6);
    });

    it("rejects a party of 0 on party_size", async () => {
      expectInvalid(await rpcError(book(asAlice, at(9, 12), at(9, 13), "rules-party-0", { partySize: 0 })), "party_size");
    });

    it("rejects a malformed resource_id on resource_id", async () => {
      expectInvalid(await rpcError(book(asAlice, at(9, 12), at(9, 13), "rules-bad-id", { resourceId: "not-a-uuid" })), "resource_id");
    });

    it("rejects a missing request_id on request_id", async () => {
      expectInvalid(await rpcError(book(asAlice, at(9, 12), at(9, 13), "")), "request_id");
    });

    it("rejects missing times on start_time and end_time", async () => {
      const err = await rpcError(asAlice.createReservation({ resourceId: room.id, partySize: 1, requestId: "rules-no-times" }));
      expect(err.code).to.equal(Code.InvalidArgument);
      expect(badFields(err)).to.include.members(["start_time", "end_time"]);
    });

    it("answers NOT_FOUND for an unknown resource and FAILED_PRECONDITION for an inactive one", async () => {
      const missing = await rpcError(book(asAlice, at(9, 12), at(9, 13), "rules-unknown", { resourceId: "00000000-0000-4000-8000-000000000000" }));
      expect(missing.code).to.equal(Code.NotFound);
      const { resource: closed } = await admin.createResource({ resource: resource("Closed room", { type: "rulesroom", active: false }) });
      const inactive = await rpcError(book(asAlice, at(9, 12), at(9, 13), "rules-inactive", { resourceId: closed!.id }));
      expect(inactive.code).to.equal(Code.FailedPrecondition);
    });

    it("stores nothing for rejected requests", async () => {
      const rows = await sql<{ n: number }>(
        server.databaseUrl,
        `SELECT count(*)::int AS n FROM "reservation".reservations WHERE start_time >= '2030-01-09T00:00:00Z' AND start_time < '2030-01-10T00:00:00Z'`,
      );
      // Only rules-party-exact (09 10:00-11:00) was accepted on the 9th.
      expect(rows[0]!.n).to.equal(1);
    });

    it("answers an overlapping booking with ALREADY_EXISTS naming the conflicting slot", async () => {
      await book(asAlice, at(11, 10), at(11, 12), "rules-conflict-a");
      for (const [start, end] of [
        [at(11, 10), at(11, 12)],
        [at(11, 11), at(11, 13)],
        [at(11, 9), at(11, 10, 30)],
        [at(11, 10, 30), at(11, 11)],
        [at(11, 8), at(11, 14)],
      ] as const) {
        const err = await rpcError(book(asBob, start, end, `rules-conflict-b-${start.getTime()}-${end.getTime()}`));
        expect(err.code, `${start.toISOString()}..${end.toISOString()}`).to.equal(Code.AlreadyExists);
        const meta = errorMetadata(err);
        expect(meta.conflict_start).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
        expect(new Date(meta.conflict_start!).toISOString()).to.equal("2030-01-11T10:00:00.000Z");
        expect(new Date(meta.conflict_end!).toISOString()).to.equal("2030-01-11T12:00:00.000Z");
      }
      // The same user cannot double-book either.
      expect((await rpcError(book(asAlice, at(11, 11), at(11, 12), "rules-conflict-self"))).code).to.equal(Code.AlreadyExists);
    });

    it("books a resource it has read in one statement, without the resource's lock; on a resource new to it, its transaction takes the lock first", async () => {
      // The transaction's lock is folded into the release of expired holds: it must be taken whether or not that
      // statement finds a hold. The one-statement path needs no lock (ON CONFLICT DO NOTHING does not deadlock).
      const { resource: fresh } = await admin.createResource({ resource: resource("Lock room", { type: "rulesroom" }) });
      const holder = new pg.Client({ connectionString: server.databaseUrl });
      await holder.connect();
      try {
        await holder.query("BEGIN");
        await holder.query("SELECT pg_advisory_xact_lock(hashtext($1)), pg_advisory_xact_lock(hashtext($2))", [lockKey(room.id), lockKey(fresh!.id)]);
        // room was booked by the tests above, so this instance has read it.
        expect((await book(asAlice, at(11, 14), at(11, 15), "rules-nolock")).reservation!.status).to.equal(ReservationStatus.CONFIRMED);
        let settled = false;
        const booking = book(asAlice, at(11, 16), at(11, 17), "rules-lock", { resourceId: fresh!.id }).finally(() => (settled = true));
        await new Promise((res) => setTimeout(res, 300));
        expect(settled, "the booking finished while another transaction held the resource's lock").to.equal(false);
        await holder.query("COMMIT");
        expect((await booking).reservation!.status).to.equal(ReservationStatus.CONFIRMED);
      } finally {
        await holder.end();
      }
    });

    it("applies the rules to a resource as it is now, not as this instance last read it", async () => {
      const { resource: changing } = await admin.createResource({ resource: resource("Changing room", { type: "rulesroom", capacity: 6 }) });
      await book(asAlice, at(11, 10), at(11, 11), "rules-changing-1", { resourceId: changing!.id });
      const { resource: smaller } = await admin.updateResource({ id: changing!.id, resource: { capacity: 2 }, updateMask: { paths: ["capacity"] } });
      const tooMany = await rpcError(book(asAlice, at(11, 12), at(11, 13), "rules-changing-2", { resourceId: changing!.id, partySize: 4 }));
      expect(tooMany.code).to.equal(Code.InvalidArgument);
      expect(violations(tooMany).map((v) => v.field)).to.deep.equal(["party_size"]);
      await admin.updateResource({ id: changing!.id, etag: smaller!.etag, resource: { active: false }, updateMask: { paths: ["active"] } });
      const closed = await rpcError(book(asAlice, at(11, 12), at(11, 13), "rules-changing-3", { resourceId: changing!.id, partySize: 1 }));
      expect(closed.code).to.equal(Code.FailedPrecondition);
      const rows = await sql<{ n: number }>(server.databaseUrl, `SELECT count(*)::int AS n FROM "reservation".reservations WHERE resource_id = $1`, [changing!.id]);
      expect(rows[0]!.n).to.equal(1);
    });

    it("refuses ConfirmReservation and RejectReservation from non-admins with PERMISSION_DENIED", async () => {
      const { resource: approval } = await admin.createResource({ resource: resource("Approval rules", { type: "rulesroom", requiresApproval: true }) });
      const { reservation: r } = await book(asAlice, at(12, 10), at(12, 11), "rules-perm", { resourceId: approval!.id });
      expect(r!.status).to.equal(ReservationStatus.PENDING);
      expect((await rpcError(asAlice.confirmReservation({ id: r!.id }))).code).to.equal(Code.PermissionDenied);
      expect((await rpcError(asBob.confirmReservation({ id: r!.id }))).code).to.equal(Code.PermissionDenied);
      expect((await rpcError(asAlice.rejectReservation({ id: r!.id }))).code).to.equal(Code.PermissionDenied);
      expect((await asAlice.getReservation({ id: r!.id })).reservation!.status).to.equal(ReservationStatus.PENDING);
    });

    describe("privacy", () => {
      let mine: Reservation;
      let theirs: Reservation;
      before(async () => {
        mine = (await book(asAlice, at(13, 10), at(13, 11), "privacy-alice")).reservation!;
        theirs = (await book(asBob, at(13, 12), at(13, 13), "privacy-bob")).reservation!;
      });

      it("hides other users' reservations from Get, Cancel and Reschedule with NOT_FOUND", async () => {
        expect((await rpcError(asBob.getReservation({ id: mine.id }))).code).to.equal(Code.NotFound);
        expect((await rpcError(asBob.cancelReservation({ id: mine.id }))).code).to.equal(Code.NotFound);
        expect((await rpcError(asBob.rescheduleReservation({ id: mine.id, startTime: ts(at(13, 14)), endTime: ts(at(13, 15)) }))).code).to.equal(
          Code.NotFound,
        );
        const { reservation: still } = await asAlice.getReservation({ id: mine.id });
        expect(still).to.deep.equal(mine);
        // A malformed id is INVALID_ARGUMENT, an unknown one NOT_FOUND.
        expectInvalid(await rpcError(asBob.getReservation({ id: "nope" })), "id");
        expect((await rpcError(asBob.getReservation({ id: "00000000-0000-4000-8000-000000000000" }))).code).to.equal(Code.NotFound);
      });

      it("lists only the caller's own reservations, ignoring a user_id filter from a non-admin", async () => {
        const bobs = await allReservations(asBob);
        expect(bobs.length).to.be.greaterThan(0);
        expect(bobs.every((r) => r.userId === bob.id)).to.equal(true);
        expect(bobs.map((r) => r.id)).to.include(theirs.id);
        expect(bobs.map((r) => r.id)).to.not.include(mine.id);
        const sneaky = await allReservations(asBob, { userId: alice.id });
        expect(sneaky.every((r) => r.userId === bob.id)).to.equal(true);
        expect(sneaky.map((r) => r.id)).to.not.include(mine.id);
        const byResource = await allReservations(asBob, { resourceId: room.id });
        expect(byResource.every((r) => r.userId === bob.id)).to.equal(true);
      });

      it("lists by start time and lets admins see everyone's, filtered by user, resource, status and time range", async () => {
        const alices = await allReservations(asAlice);
        const starts = alices.map((r) => timestampDate(r.startTime!).getTime());
        expect(starts).to.deep.equal([...starts].sort((a, b) => a - b));

        const everyone = await allReservations(admin);
        const owners = new Set(everyone.map((r) => r.userId));
        expect(owners.has(alice.id) && owners.has(bob.id)).to.equal(true);
        const dbCount = await sql<{ n: number }>(server.databaseUrl, `SELECT count(*)::int AS n FROM "reservation".reservations`);
        expect(everyone).to.have.length(dbCount[0]!.n);

        const byUser = await allReservations(admin, { userId: alice.id });
        expect(byUser.length).to.equal(alices.length);
        expect(byUser.every((r) => r.userId === alice.id)).to.equal(true);

        const byResource = await allReservations(admin, { resourceId: room.id });
        expect(byResource.length).to.be.greaterThan(0);
        expect(byResource.every((r) => r.resourceId === room.id)).to.equal(true);

        const pending = await allReservations(admin, { statuses: [ReservationStatus.PENDING] });
        expect(pending.length).to.be.greaterThan(0);
        expect(pending.every((r) => r.status === ReservationStatus.PENDING)).to.equal(true);

        // Overlapping [13th 10:30, 13th 12:30): both privacy reservations, nothing else on the 13th.
        const ranged = await allReservations(admin, { startTime: ts(at(13, 10, 30)), endTime: ts(at(13, 12, 30)) });
        expect(ranged.map((r) => r.id).sort()).to.deep.equal([mine.id, theirs.id].sort());
        // Half-open: a range ending where a reservation starts excludes it.
        const before = await allReservations(admin, { startTime: ts(at(13, 9)), endTime: ts(at(13, 10)) });
        expect(before.map((r) => r.id)).to.not.include(mine.id);
        const open = await allReservations(admin, { startTime: ts(at(13, 12, 30)) });
        expect(open.map((r) => r.id)).to.include(theirs.id);
        expect(open.map((r) => r.id)).to.not.include(mine.id);
      });

      it("keeps notifications private: lists only the caller's and MarkNotificationRead of another's is NOT_FOUND", async () => {
        await eventually(async () => (await notificationsOf(asAlice, NotificationType.CONFIRMED, mine.id)).length === 1, "Alice's notification");
        const [aliceNote] = await notificationsOf(asAlice, NotificationType.CONFIRMED, mine.id);
        const bobsNotes = await allNotifications(asBob);
        expect(bobsNotes.map((n) => n.id)).to.not.include(aliceNote!.id);
        expect(bobsNotes.map((n) => n.reservationId)).to.not.include(mine.id);
        expect((await rpcError(asBob.markNotificationRead({ id: aliceNote!.id }))).code).to.equal(Code.NotFound);
        expect((await notificationsOf(asAlice, NotificationType.CONFIRMED, mine.id))[0]!.read).to.equal(false);
      });

      it("marks a notification read (idempotently), lists newest first and filters unread_only", async () => {
        const notes = await allNotifications(asAlice);
        expect(notes.length).to.be.greaterThan(1);
        const cursors = notes.map((n) => BigInt(n.cursor));
        expect(cursors).to.deep.equal([...cursors].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0)));
        const created = notes.map((n) => timestampDate(n.createTime!).getTime());
        expect(created).to.deep.equal([...created].sort((a, b) => b - a));

        const target = notes[notes.length - 1]!;
        const { notification } = await asAlice.markNotificationRead({ id: target.id });
        expect(notification!.read).to.equal(true);
        expect(notification!.id).to.equal(target.id);
        expect((await asAlice.markNotificationRead({ id: target.id })).notification!.read).to.equal(true);
        const unread = await allNotifications(asAlice, true);
        expect(unread.map((n) => n.id)).to.not.include(target.id);
        expect(unread).to.have.length(notes.length - 1);
        expect(unread.every((n) => !n.read)).to.equal(true);
        expect((await rpcError(asAlice.markNotificationRead({ id: "00000000-0000-4000-8000-000000000000" }))).code).to.equal(Code.NotFound);
      });
    });

    describe("available resources", () => {
      let small: Resource;
      let big: Resource;
      let closed: Resource;
      let booked: Resource;
      let held: Resource;
      let booking: Reservation;

      before(async () => {
        const mk = async (name: string, capacity: number, extra: Omit<MessageInitShape<typeof ResourceSchema>, "$typeName"> = {}) =>
          (await admin.createResource({ resource: resource(name, { type: "availdesk", capacity, ...extra }) })).resource!;
        small = await mk("Avail small", 2);
        big = await mk("Avail big", 6);
        closed = await mk("Avail closed", 6, { active: false });
        booked = await mk("Avail booked", 8);
        held = await mk("Avail held", 8, { requiresApproval: true });
        await admin.createResource({ resource: resource("Avail other type", { type: "availother", capacity: 8 }) });
        booking = (await book(asAlice, at(14, 10), at(14, 11), "avail-booked", { resourceId: booked.id })).reservation!;
        const pending = (await book(asBob, at(14, 10), at(14, 11), "avail-held", { resourceId: held.id })).reservation!;
        expect(pending.status).to.equal(ReservationStatus.PENDING);
      });

      const available = async (start: Date, end: Date, partySize: number) =>
        (await asBob.listAvailableResources({ type: "availdesk", startTime: ts(start), endTime: ts(end), partySize, pageSize: 100 })).resources
          .map((r) => r.name)
          .sort();

      it("returns active resources of the type, big enough, with no overlapping active reservation", async () => {
        expect(await available(at(14, 10, 30), at(14, 11, 30), 4)).to.deep.equal(["Avail big"]);
        expect(await available(at(14, 10, 30), at(14, 11, 30), 1)).to.deep.equal(["Avail big", "Avail small"]);
        // Half-open ranges: from 11:00 the booked and held ones are free again.
        expect(await available(at(14, 11), at(14, 12), 4)).to.deep.equal(["Avail big", "Avail booked", "Avail held"]);
        expect(await available(at(14, 11), at(14, 12), 7)).to.deep.equal(["Avail booked", "Avail held"]);
        expect(await available(at(14, 10), at(14, 11), 9)).to.deep.equal([]);
        void small;
        void closed;
        void big;
      });

      it("shows a resource again once its reservation is cancelled", async () => {
        await asAlice.cancelReservation({ id: booking.id });
        expect(await available(at(14, 10, 30), at(14, 11, 30), 4)).to.deep.equal(["Avail big", "Avail booked"]);
      });

      it("validates its request", async () => {
        const err = await rpcError(asBob.listAvailableResources({ type: "availdesk", startTime: ts(at(14, 11)), endTime: ts(at(14, 10)), partySize: 1 }));
        expect(err.code).to.equal(Code.InvalidArgument);
        expect(err.rawMessage).to.contain("end_time must be after start_time");
        expectInvalid(
          await rpcError(asBob.listAvailableResources({ type: "availdesk", startTime: ts(at(14, 10)), endTime: ts(at(14, 11)), partySize: 0 })),
          "party_size",
        );
      });
    });
  });

  describe("two instances under contention", () => {
    const clock = new ManualClock(new Date(T0));
    let a: TestServer;
    let b: TestServer;
    let adminA: Reservations;
    const users: { user: User; onA: Reservations; onB: Reservations }[] = [];

    before(async () => {
      [a, b] = await startPair(clock);
      adminA = client(ReservationService, a.url, "grpc", a.adminToken);
      for (let i = 0; i < 8; i++) {
        const user = await newUser(i % 2 ? b : a, `contender-${i}`);
        users.push({ user, onA: client(ReservationService, a.url, "grpc", user.token), onB: client(ReservationService, b.url, "grpc", user.token) });
      }
    });
    after(async () => {
      await Promise.all([a?.shutdown(), b?.shutdown()]);
    });

    for (const known of [false, true]) {
      it(`lets exactly 1 of 200 concurrent bookings of one slot through two instances succeed; 199 get ALREADY_EXISTS (${known ? "a resource both have read: one statement each" : "a new resource: transactions"})`, async () => {
        const { resource: room } = await adminA.createResource({ resource: resource(`Contended room ${known}`, { capacity: 10 }) });
        const day = known ? 21 : 20;
        const start = at(day, 14);
        const end = at(day, 15, 30);
        if (known) {
          await users[0]!.onA.createReservation({ resourceId: room!.id, startTime: ts(at(day, 9)), endTime: ts(at(day, 10)), partySize: 1, requestId: "race-known-a" });
          await users[1]!.onB.createReservation({ resourceId: room!.id, startTime: ts(at(day, 10)), endTime: ts(at(day, 11)), partySize: 1, requestId: "race-known-b" });
        }
        const results = await Promise.allSettled(
          Array.from({ length: 200 }, (_, i) => {
            const u = users[i % users.length]!;
            const c = i % 2 ? u.onB : u.onA;
            return c.createReservation({ resourceId: room!.id, startTime: ts(start), endTime: ts(end), partySize: 1, requestId: `race-${known}-${i}` });
          }),
        );
        const ok = results.filter((r) => r.status === "fulfilled");
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => ConnectError.from(r.reason));
        const codes: Record<string, number> = {};
        for (const err of failed) codes[Code[err.code]] = (codes[Code[err.code]] ?? 0) + 1;
        expect(codes).to.deep.equal({ AlreadyExists: 199 });
        expect(ok).to.have.length(1);
        for (const err of failed) {
          const meta = errorMetadata(err);
          expect(new Date(meta.conflict_start!).toISOString()).to.equal(start.toISOString());
          expect(new Date(meta.conflict_end!).toISOString()).to.equal(end.toISOString());
        }
        const rows = await sql<{ n: number }>(
          a.databaseUrl,
          `SELECT count(*)::int AS n FROM "reservation".reservations WHERE resource_id = $1 AND status IN ('pending', 'confirmed')`,
          [room!.id],
        );
        expect(rows[0]!.n).to.equal(known ? 3 : 1);
        const told = await sql<{ n: number }>(
          a.databaseUrl,
          `SELECT count(*)::int AS n FROM "reservation".notifications WHERE resource_id = $1 AND start_time = $2 AND type = $3`,
          [room!.id, start, NotificationType.CONFIRMED],
        );
        expect(told[0]!.n, "CONFIRMED notifications of the slot").to.equal(1);
      });
    }

    it("never stores overlapping active reservations under a random workload of 3,000 requests at concurrency 32", async () => {
      const random = prng(20300101);
      const resources: Resource[] = [];
      for (let i = 0; i < 20; i++) {
        const { resource: r } = await adminA.createResource({
          resource: resource(`Workload ${String(i).padStart(2, "0")}`, {
            type: "workload",
            capacity: 4,
            slotMinutes: i % 3 === 0 ? 60 : 30,
            requiresApproval: i % 5 === 0,
          }),
        });
        resources.push(r!);
      }
      const dayStart = at(21, 0).getTime();
      const randomSlot = (r: Resource) => {
        const slot = r.slotMinutes * MINUTE;
        const slots = (2 * 24 * HOUR) / slot; // two days
        const first = Math.floor(random() * slots);
        const length = 1 + Math.floor(random() * Math.min(4, slots - first));
        return { start: new Date(dayStart + first * slot), end: new Date(dayStart + (first + length) * slot) };
      };

      const known: { id: string; owner: number; resourceId: string }[] = [];
      const stats = { created: 0, createConflicts: 0, cancelled: 0, cancelRefused: 0, rescheduled: 0, rescheduleConflicts: 0, rescheduleRefused: 0 };
      const unexpected: string[] = [];
      const TOTAL = 3000;
      let next = 0;

      async function one(i: number): Promise<void> {
        const owner = Math.floor(random() * users.length);
        const roll = random();
        const viaB = random() < 0.5;
        const u = users[owner]!;
        const c = viaB ? u.onB : u.onA;
        const mine = known.filter((k) => k.owner === owner);
        let op = "create";
        try {
          if (roll < 0.55 || mine.length === 0) {
            const r = resources[Math.floor(random() * resources.length)]!;
            const { start, end } = randomSlot(r);
            try {
              const { reservation } = await c.createReservation({ resourceId: r.id, startTime: ts(start), endTime: ts(end), partySize: 1, requestId: `w-${i}` });
              known.push({ id: reservation!.id, owner, resourceId: r.id });
              stats.created++;
            } catch (err) {
              if (ConnectError.from(err).code !== Code.AlreadyExists) throw err;
              stats.createConflicts++;
            }
          } else if (roll < 0.75) {
            op = "cancel";
            const target = mine[Math.floor(random() * mine.length)]!;
            try {
              await c.cancelReservation({ id: target.id, reason: "workload" });
              stats.cancelled++;
            } catch (err) {
              if (ConnectError.from(err).code !== Code.FailedPrecondition) throw err;
              stats.cancelRefused++;
            }
          } else {
            op = "reschedule";
            const target = mine[Math.floor(random() * mine.length)]!;
            const { start, end } = randomSlot(resources.find((r) => r.id === target.resourceId)!);
            try {
              await c.rescheduleReservation({ id: target.id, startTime: ts(start), endTime: ts(end) });
              stats.rescheduled++;
            } catch (err) {
              const code = ConnectError.from(err).code;
              if (code === Code.AlreadyExists) stats.rescheduleConflicts++;
              else if (code === Code.FailedPrecondition) stats.rescheduleRefused++;
              else throw err;
            }
          }
        } catch (err) {
          const e = ConnectError.from(err);
          unexpected.push(`${op}: ${Code[e.code]}: ${e.rawMessage}`);
        }
      }

      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < TOTAL) await one(next++);
        }),
      );

      expect(unexpected.slice(0, 10), `${unexpected.length} unexpected errors`).to.deep.equal([]);
      expect(stats.created, JSON.stringify(stats)).to.be.greaterThan(100);
      expect(stats.createConflicts, JSON.stringify(stats)).to.be.greaterThan(100);
      expect(stats.cancelled, JSON.stringify(stats)).to.be.greaterThan(0);
      expect(stats.rescheduled, JSON.stringify(stats)).to.be.greaterThan(0);
      expect(stats.rescheduleConflicts, JSON.stringify(stats)).to.be.greaterThan(0);

      const overlaps = await sql<{ n: number }>(a.databaseUrl, OVERLAPS_SQL);
      expect(overlaps[0]!.n).to.equal(0);
      // Every successful create added one active reservation, every successful cancel removed one.
      const ids = resources.map((r) => r.id);
      const active = await sql<{ n: number }>(
        a.databaseUrl,
        `SELECT count(*)::int AS n FROM "reservation".reservations WHERE resource_id::text = ANY($1) AND status IN ('pending', 'confirmed')`,
        [ids],
      );
      expect(active[0]!.n, JSON.stringify(stats)).to.equal(stats.created - stats.cancelled);
      const total = await sql<{ n: number }>(a.databaseUrl, `SELECT count(*)::int AS n FROM "reservation".reservations WHERE resource_id::text = ANY($1)`, [ids]);
      expect(total[0]!.n).to.equal(stats.created);
    });
  });

  describe("a long history", () => {
    // 40,000 past reservations of two rooms, a quarter of them one user's and each of the others a different user's,
    // with fresh statistics, and every plan generic: where the planner once chose to walk reservations_by_start from
    // the oldest reservation for the slot's conflicts, and reservations_by_user for the request's earlier booking.
    let server: TestServer;
    let heavy: User;
    const HISTORY = 40_000;
    const BOOKINGS = 12;
    const reads = () => tableReads(server.databaseUrl, "reservation", "reservations");

    before(async () => {
      server = await startTestServer({ ...ENV, SCHEDULER_INTERVAL_MS: "3600000" }, await genericPlanDatabase());
      heavy = await newUser(server, "history-heavy");
      const admin = client(ReservationService, server.url, "grpc", server.adminToken);
      const rooms = [];
      for (const name of ["History room A", "History room B"]) rooms.push((await admin.createResource({ resource: resource(name, { type: "historyroom" }) })).resource!.id);
      const db = new pg.Client({ connectionString: server.databaseUrl });
      await db.connect();
      try {
        await db.query(
          `INSERT INTO "reservation".reservations (id, resource_id, user_id, start_time, end_time, party_size, status, request_id, version, created_at, updated_at)
           SELECT gen_random_uuid(), ($1::uuid[])[1 + i % 2], CASE WHEN i % 4 = 0 THEN $2::uuid ELSE gen_random_uuid() END,
                  t, t + interval '30 minutes', 1, 'confirmed', gen_random_uuid()::text, 1, t, t
             FROM generate_series(0, $3::int - 1) i, LATERAL (SELECT timestamptz '2020-01-01' + (i / 2) * interval '1 hour' AS t) s`,
          [rooms, heavy.id, HISTORY],
        );
        await db.query(`ANALYZE "reservation".reservations`);
      } finally {
        await db.end();
      }
      await eventually(async () => (await reads()).inserted === HISTORY, "the history's statistics");
    });
    after(async () => {
      await server?.shutdown();
    });

    it("books without reading the history: the slot's conflicts through the exclusion constraint's index, the request through its own", async () => {
      const asHeavy = client(ReservationService, server.url, "grpc", heavy.token);
      const { resources } = await asHeavy.listAvailableResources({ type: "historyroom", startTime: ts(at(2, 8)), endTime: ts(at(2, 9)), partySize: 1 });
      expect(resources).to.have.length(2);
      const before = await reads();
      for (let i = 0; i < BOOKINGS; i++) {
        const { reservation } = await asHeavy.createReservation({
          resourceId: resources[0]!.id, startTime: ts(at(2, 8 + i)), endTime: ts(at(2, 9 + i)), partySize: 1, requestId: `history-${i}`,
        });
        expect(reservation!.status).to.equal(ReservationStatus.CONFIRMED);
      }
      await eventually(async () => (await reads()).inserted === HISTORY + BOOKINGS, "the bookings' statistics");
      const after = await reads();
      const read = (key: string) => after[key]! - before[key]!;
      expect(read("reservations_by_start"), "rows read through reservations_by_start").to.equal(0);
      expect(read("reservations_by_user"), "rows read through reservations_by_user").to.equal(0);
      expect(read("seq"), "rows read by sequential scans").to.equal(0);
      expect(read("reservations_no_overlap"), "rows read through the exclusion constraint's index").to.be.below(10 * BOOKINGS);
    });
  });

  describe("reservation lifecycle", () => {
    const clock = new ManualClock(new Date(T0));
    let server: TestServer;
    let admin: Reservations;
    let alice: User;
    let bob: User;
    let carol: User;
    let asAlice: Reservations;
    let asBob: Reservations;
    let asCarol: Reservations;
    let room: Resource;
    let approval: Resource;

    before(async () => {
      server = await startTestServer(ENV, undefined, undefined, clock);
      admin = client(ReservationService, server.url, "grpc", server.adminToken);
      alice = await newUser(server, "life-alice");
      bob = await newUser(server, "life-bob");
      carol = await newUser(server, "life-carol");
      asAlice = client(ReservationService, server.url, "grpc", alice.token);
      asBob = client(ReservationService, server.url, "grpc", bob.token);
      asCarol = client(ReservationService, server.url, "grpc", carol.token);
      room = (await admin.createResource({ resource: resource("Life room") })).resource!;
      approval = (await admin.createResource({ resource: resource("Life approval room", { requiresApproval: true }) })).resource!;
    });
    after(() => server?.shutdown());

    const book = (c: Reservations, start: Date, end: Date, requestId: string, resourceId = room.id) =>
      c.createReservation({ resourceId, startTime: ts(start), endTime: ts(end), partySize: 1, requestId });

    describe("idempotency", () => {
      it("returns the first reservation for a repeated request_id and stores nothing new", async () => {
        const first = await book(asAlice, at(5, 9), at(5, 10), "idem-1");
        const again = await book(asAlice, at(5, 9), at(5, 10), "idem-1");
        expect(again.reservation!.id).to.equal(first.reservation!.id);
        expect(again.reservation!.status).to.equal(ReservationStatus.CONFIRMED);
        // A retry whose slot is now "taken" (by itself) still returns the first result, not ALREADY_EXISTS.
        const rows = await sql<{ n: number }>(
          server.databaseUrl,
          `SELECT count(*)::int AS n FROM "reservation".reservations WHERE resource_id = $1 AND start_time = $2`,
          [room.id, at(5, 9).toISOString()],
        );
        expect(rows[0]!.n).to.equal(1);
        await eventually(async () => (await notificationsOf(asAlice, NotificationType.CONFIRMED, first.reservation!.id)).length >= 1, "the notification");
        expect(await notificationsOf(asAlice, NotificationType.CONFIRMED, first.reservation!.id)).to.have.length(1);
      });

      it("returns the first reservation to 10 concurrent repeats of one request_id", async () => {
        const results = await Promise.all(Array.from({ length: 10 }, () => book(asAlice, at(5, 12), at(5, 13), "idem-concurrent")));
        expect(new Set(results.map((r) => r.reservation!.id)).size).to.equal(1);
        const rows = await sql<{ n: number }>(
          server.databaseUrl,
          `SELECT count(*)::int AS n FROM "reservation".reservations WHERE resource_id = $1 AND start_time = $2`,
          [room.id, at(5, 12).toISOString()],
        );
        expect(rows[0]!.n).to.equal(1);
      });

      it("scopes request_id to the user: another user's same request_id books separately", async () => {
        const alices = await book(asAlice, at(5, 15), at(5, 16), "idem-shared");
        const bobs = await book(asBob, at(5, 16), at(5, 17), "idem-shared");
        expect(bobs.reservation!.id).to.not.equal(alices.reservation!.id);
        expect(bobs.reservation!.userId).to.equal(bob.id);
        expect(iso(bobs.reservation!.startTime)).to.equal("2030-01-05T16:00:00.000Z");
      });

      it("returns the first reservation to a retry made after the resource was deactivated", async () => {
        const { resource: r } = await admin.createResource({ resource: resource("Retry after deactivation") });
        const first = await book(asAlice, at(5, 18), at(5, 19), "idem-deactivated", r!.id);
        await admin.updateResource({ id: r!.id, resource: { active: false }, updateMask: { paths: ["active"] } });
        const again = await book(asAlice, at(5, 18), at(5, 19), "idem-deactivated", r!.id);
        expect(again.reservation!.id).to.equal(first.reservation!.id);
      });

      it("returns the first reservation to a retry made after its start time passed", async () => {
        const slot = 30 * MINUTE;
        const start = new Date(Math.ceil((clock.now().getTime() + 1) / slot) * slot);
        const first = await book(asAlice, start, new Date(start.getTime() + slot), "idem-late");
        clock.advance(start.getTime() - clock.now().getTime() + MINUTE);
        const again = await book(asAlice, start, new Date(start.getTime() + slot), "idem-late");
        expect(again.reservation!.id).to.equal(first.reservation!.id);
      });
    });

    describe("cancellation", () => {
      it("cancels (owner), frees the slot at once, and refuses a second cancel with FAILED_PRECONDITION", async () => {
        const { reservation: r } = await book(asAlice, at(6, 9), at(6, 11), "cancel-1");
        expect((await rpcError(book(asBob, at(6, 10), at(6, 11), "cancel-1-bob"))).code).to.equal(Code.AlreadyExists);
        const { reservation: cancelled } = await asAlice.cancelReservation({ id: r!.id, reason: "plans changed" });
        expect(cancelled!.status).to.equal(ReservationStatus.CANCELLED);
        expect(cancelled!.id).to.equal(r!.id);
        expect((await asAlice.getReservation({ id: r!.id })).reservation!.status).to.equal(ReservationStatus.CANCELLED);
        const { reservation: bobs } = await book(asBob, at(6, 10), at(6, 11), "cancel-1-bob-again");
        expect(bobs!.status).to.equal(ReservationStatus.CONFIRMED);
        const again = await rpcError(asAlice.cancelReservation({ id: r!.id }));
        expect(again.code).to.equal(Code.FailedPrecondition);
        const rows = await sql(server.databaseUrl, `SELECT status FROM "reservation".reservations WHERE id = $1`, [r!.id]);
        expect(rows).to.deep.equal([{ status: "cancelled" }]);
        await eventually(async () => (await notificationsOf(asAlice, NotificationType.CANCELLED, r!.id)).length === 1, "the CANCELLED notification");
      });

      it("lets an admin cancel anyone's reservation", async () => {
        const { reservation: r } = await book(asCarol, at(6, 14), at(6, 15), "cancel-admin");
        const { reservation: cancelled } = await admin.cancelReservation({ id: r!.id });
        expect(cancelled!.status).to.equal(ReservationStatus.CANCELLED);
        expect(cancelled!.userId).to.equal(carol.id);
        expect((await book(asBob, at(6, 14), at(6, 15), "cancel-admin-bob")).reservation!.status).to.equal(ReservationStatus.CONFIRMED);
      });
    });

    describe("rescheduling", () => {
      it("moves to a free slot atomically, freeing the old one, and refuses a taken slot leaving the reservation unchanged", async () => {
        const { reservation: r1 } = await book(asAlice, at(7, 9), at(7, 10), "move-r1");
        const { reservation: r2 } = await book(asBob, at(7, 11), at(7, 12), "move-r2");

        // Onto Bob's slot: refused, nothing changes.
        const taken = await rpcError(asAlice.rescheduleReservation({ id: r1!.id, startTime: ts(at(7, 11, 30)), endTime: ts(at(7, 12, 30)) }));
        expect(taken.code).to.equal(Code.AlreadyExists);
        expect(new Date(errorMetadata(taken).conflict_start!).toISOString()).to.equal("2030-01-07T11:00:00.000Z");
        const { reservation: unchanged } = await asAlice.getReservation({ id: r1!.id });
        expect(iso(unchanged!.startTime)).to.equal("2030-01-07T09:00:00.000Z");
        expect(iso(unchanged!.endTime)).to.equal("2030-01-07T10:00:00.000Z");
        expect(unchanged!.status).to.equal(ReservationStatus.CONFIRMED);
        expect(unchanged!.etag).to.equal(r1!.etag);
        // ...and the old slot is still taken.
        expect((await rpcError(book(asCarol, at(7, 9), at(7, 10), "move-carol-1"))).code).to.equal(Code.AlreadyExists);

        // To a free slot: moved, and the old one is free at once.
        const { reservation: moved } = await asAlice.rescheduleReservation({ id: r1!.id, startTime: ts(at(7, 13)), endTime: ts(at(7, 14)) });
        expect(moved!.id).to.equal(r1!.id);
        expect(iso(moved!.startTime)).to.equal("2030-01-07T13:00:00.000Z");
        expect(iso(moved!.endTime)).to.equal("2030-01-07T14:00:00.000Z");
        expect(moved!.status).to.equal(ReservationStatus.CONFIRMED);
        expect((await book(asCarol, at(7, 9), at(7, 10), "move-carol-2")).reservation!.status).to.equal(ReservationStatus.CONFIRMED);
        expect((await rpcError(book(asCarol, at(7, 13), at(7, 14), "move-carol-3"))).code).to.equal(Code.AlreadyExists);

        // The other direction: Bob moves onto Alice's old-new slot (taken) then into the gap he leaves behind him.
        const back = await rpcError(asBob.rescheduleReservation({ id: r2!.id, startTime: ts(at(7, 13)), endTime: ts(at(7, 14)) }));
        expect(back.code).to.equal(Code.AlreadyExists);
        expect(iso((await asBob.getReservation({ id: r2!.id })).reservation!.startTime)).to.equal("2030-01-07T11:00:00.000Z");
        const { reservation: earlier } = await asBob.rescheduleReservation({ id: r2!.id, startTime: ts(at(7, 10)), endTime: ts(at(7, 11)) });
        expect(iso(earlier!.startTime)).to.equal("2030-01-07T10:00:00.000Z");
        expect((await book(asCarol, at(7, 11), at(7, 12), "move-carol-4")).reservation!.status).to.equal(ReservationStatus.CONFIRMED);

        const overlaps = await sql<{ n: number }>(server.databaseUrl, OVERLAPS_SQL);
        expect(overlaps[0]!.n).to.equal(0);
      });

      it("moves a reservation onto a slot overlapping its own current one", async () => {
        const { reservation: r } = await book(asAlice, at(8, 9), at(8, 11), "move-self");
        const { reservation: moved } = await asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(8, 10)), endTime: ts(at(8, 12)) });
        expect(iso(moved!.startTime)).to.equal("2030-01-08T10:00:00.000Z");
        expect((await book(asBob, at(8, 9), at(8, 10), "move-self-bob")).reservation!.status).to.equal(ReservationStatus.CONFIRMED);
      });

      it("applies the booking rules to the new slot and refuses a stale etag or a cancelled reservation", async () => {
        const { reservation: r } = await book(asAlice, at(8, 14), at(8, 15), "move-rules");
        expectInvalid(await rpcError(asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(8, 16, 10)), endTime: ts(at(8, 17)) })), "start_time");
        expectInvalid(await rpcError(asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(1, 7)), endTime: ts(at(1, 7, 30)) })), "start_time");
        expectInvalid(await rpcError(asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(9, 0)), endTime: ts(at(10, 1)) })), "end_time");
        const range = await rpcError(asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(8, 17)), endTime: ts(at(8, 16)) }));
        expect(range.code).to.equal(Code.InvalidArgument);
        expect(range.rawMessage).to.contain("end_time must be after start_time");
        const moved = await asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(8, 16)), endTime: ts(at(8, 17)), etag: r!.etag });
        expect(moved.reservation!.etag).to.not.equal(r!.etag);
        const stale = await rpcError(asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(8, 18)), endTime: ts(at(8, 19)), etag: r!.etag }));
        expect(stale.code).to.equal(Code.Aborted);
        await asAlice.cancelReservation({ id: r!.id });
        const cancelled = await rpcError(asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(8, 18)), endTime: ts(at(8, 19)) }));
        expect(cancelled.code).to.equal(Code.FailedPrecondition);
        expect((await asAlice.getReservation({ id: r!.id })).reservation!.status).to.equal(ReservationStatus.CANCELLED);
      });
    });

    describe("approval", () => {
      it("holds a booking PENDING until an admin confirms it, with PENDING then CONFIRMED notifications", async () => {
        const now = clock.now().getTime();
        const { reservation: r } = await book(asAlice, at(10, 9), at(10, 10), "approve-1", approval.id);
        expect(r!.status).to.equal(ReservationStatus.PENDING);
        expect(timestampDate(r!.holdExpireTime!).getTime()).to.equal(now + 15 * MINUTE);
        expect((await rpcError(book(asBob, at(10, 9), at(10, 10), "approve-1-bob", approval.id))).code).to.equal(Code.AlreadyExists);
        await eventually(async () => (await notificationsOf(asAlice, NotificationType.PENDING, r!.id)).length === 1, "the PENDING notification");
        expect(await notificationsOf(asAlice, NotificationType.CONFIRMED, r!.id)).to.have.length(0);

        const { reservation: confirmed } = await admin.confirmReservation({ id: r!.id });
        expect(confirmed!.status).to.equal(ReservationStatus.CONFIRMED);
        expect((await asAlice.getReservation({ id: r!.id })).reservation!.status).to.equal(ReservationStatus.CONFIRMED);
        await eventually(async () => (await notificationsOf(asAlice, NotificationType.CONFIRMED, r!.id)).length === 1, "the CONFIRMED notification");

        // Confirmed: no longer a hold, so moving the clock past the old hold does not expire it.
        clock.advance(20 * MINUTE);
        await new Promise((r) => setTimeout(r, 300));
        expect((await asAlice.getReservation({ id: r!.id })).reservation!.status).to.equal(ReservationStatus.CONFIRMED);
        expect((await rpcError(book(asBob, at(10, 9), at(10, 10), "approve-1-bob-2", approval.id))).code).to.equal(Code.AlreadyExists);
      });

      it("rejects a pending booking (admin), freeing the slot, with a REJECTED notification", async () => {
        const { reservation: r } = await book(asAlice, at(10, 11), at(10, 12), "reject-1", approval.id);
        const { reservation: rejected } = await admin.rejectReservation({ id: r!.id, reason: "maintenance" });
        expect(rejected!.status).to.equal(ReservationStatus.REJECTED);
        const rows = await sql(server.databaseUrl, `SELECT status FROM "reservation".reservations WHERE id = $1`, [r!.id]);
        expect(rows).to.deep.equal([{ status: "rejected" }]);
        const { reservation: bobs } = await book(asBob, at(10, 11), at(10, 12), "reject-1-bob", approval.id);
        expect(bobs!.status).to.equal(ReservationStatus.PENDING);
        await eventually(async () => (await notificationsOf(asAlice, NotificationType.REJECTED, r!.id)).length === 1, "the REJECTED notification");
      });

      it("expires an unconfirmed hold after PENDING_HOLD_MINUTES: EXPIRED status and notification", async () => {
        const { reservation: r } = await book(asAlice, at(10, 14), at(10, 15), "expire-1", approval.id);
        const hold = timestampDate(r!.holdExpireTime!).getTime();
        expect(hold).to.equal(clock.now().getTime() + 15 * MINUTE);
        // Not yet: a minute before the hold ends the slot is still taken and nothing expires.
        clock.advance(14 * MINUTE);
        await new Promise((res) => setTimeout(res, 300));
        expect((await asAlice.getReservation({ id: r!.id })).reservation!.status).to.equal(ReservationStatus.PENDING);
        expect((await rpcError(book(asBob, at(10, 14), at(10, 15), "expire-1-bob", approval.id))).code).to.equal(Code.AlreadyExists);

        clock.advance(2 * MINUTE);
        await eventually(
          async () => (await asAlice.getReservation({ id: r!.id })).reservation!.status === ReservationStatus.EXPIRED,
          "the hold to expire",
        );
        const rows = await sql(server.databaseUrl, `SELECT status FROM "reservation".reservations WHERE id = $1`, [r!.id]);
        expect(rows).to.deep.equal([{ status: "expired" }]);
        await eventually(async () => (await notificationsOf(asAlice, NotificationType.EXPIRED, r!.id)).length === 1, "the EXPIRED notification");
        // Bob was refused that slot while it was held: he hears it is free again.
        await eventually(
          async () => (await notificationsOf(asBob, NotificationType.RESOURCE_AVAILABLE)).some((n) => n.resourceId === approval.id && iso(n.startTime) === "2030-01-10T14:00:00.000Z"),
          "Bob's RESOURCE_AVAILABLE after the expiry",
        );
        expect((await book(asBob, at(10, 14), at(10, 15), "expire-1-bob-2", approval.id)).reservation!.status).to.equal(ReservationStatus.PENDING);
        expect((await rpcError(admin.confirmReservation({ id: r!.id }))).code).to.equal(Code.FailedPrecondition);
      });
    });

    describe("expired hold without a sweep", () => {
      // The sweep runs once a minute here: the slot must be free as soon as the clock passes the hold.
      const lazyClock = new ManualClock(new Date(T0));
      let lazy: TestServer;
      before(async () => {
        lazy = await startTestServer({ ...ENV, SCHEDULER_INTERVAL_MS: "60000" }, undefined, undefined, lazyClock);
      });
      after(() => lazy?.shutdown());

      it("lets another user book an expired hold's slot immediately", async () => {
        const adminL = client(ReservationService, lazy.url, "grpc", lazy.adminToken);
        const { resource: held } = await adminL.createResource({ resource: resource("Lazy approval room", { requiresApproval: true }) });
        const first = client(ReservationService, lazy.url, "grpc", await signUp(lazy.url, "lazy-first"));
        const second = client(ReservationService, lazy.url, "grpc", await signUp(lazy.url, "lazy-second"));
        const slot = { resourceId: held!.id, startTime: ts(at(12, 9)), endTime: ts(at(12, 10)), partySize: 1 };
        const { reservation: r } = await first.createReservation({ ...slot, requestId: "lazy-1" });
        expect(r!.status).to.equal(ReservationStatus.PENDING);
        expect((await rpcError(second.createReservation({ ...slot, requestId: "lazy-2" }))).code).to.equal(Code.AlreadyExists);
        lazyClock.advance(15 * MINUTE + 1000);
        const { reservation: taken } = await second.createReservation({ ...slot, requestId: "lazy-3" });
        expect(taken!.status).to.equal(ReservationStatus.PENDING);
        const overlaps = await sql<{ n: number }>(lazy.databaseUrl, OVERLAPS_SQL);
        expect(overlaps[0]!.n).to.equal(0);
        expect((await first.getReservation({ id: r!.id })).reservation!.status).to.equal(ReservationStatus.EXPIRED);
      });

      it("keeps the expired hold it released when the booking is refused for another reservation, and tells the hold's owner", async () => {
        const adminL = client(ReservationService, lazy.url, "grpc", lazy.adminToken);
        const { resource: held } = await adminL.createResource({ resource: resource("Lazy approval room 3", { requiresApproval: true }) });
        const holder = client(ReservationService, lazy.url, "grpc", await signUp(lazy.url, "lazy-holder"));
        const keeper = client(ReservationService, lazy.url, "grpc", await signUp(lazy.url, "lazy-keeper"));
        const latecomer = client(ReservationService, lazy.url, "grpc", await signUp(lazy.url, "lazy-latecomer"));
        const slot = (from: number, to: number, requestId: string) => ({ resourceId: held!.id, startTime: ts(at(14, from)), endTime: ts(at(14, to)), partySize: 1, requestId });
        const { reservation: hold } = await holder.createReservation(slot(9, 10, "lazy-hold"));
        const { reservation: kept } = await keeper.createReservation(slot(10, 11, "lazy-kept"));
        await adminL.confirmReservation({ id: kept!.id });
        lazyClock.advance(15 * MINUTE + 1000);
        // [9, 11) meets the expired hold (released) and the confirmed booking (refused).
        expect((await rpcError(latecomer.createReservation(slot(9, 11, "lazy-late")))).code).to.equal(Code.AlreadyExists);
        expect((await holder.getReservation({ id: hold!.id })).reservation!.status).to.equal(ReservationStatus.EXPIRED);
        expect(await notificationsOf(holder, NotificationType.EXPIRED, hold!.id)).to.have.length(1);
        expect((await latecomer.createReservation(slot(9, 10, "lazy-late-2"))).reservation!.status).to.equal(ReservationStatus.PENDING);
      });

      it("does not revive a hold whose time is up by rescheduling it", async () => {
        const adminL = client(ReservationService, lazy.url, "grpc", lazy.adminToken);
        const { resource: held } = await adminL.createResource({ resource: resource("Lazy approval room 2", { requiresApproval: true }) });
        const owner = client(ReservationService, lazy.url, "grpc", await signUp(lazy.url, "lazy-mover"));
        const { reservation: r } = await owner.createReservation({
          resourceId: held!.id, startTime: ts(at(13, 9)), endTime: ts(at(13, 10)), partySize: 1, requestId: "lazy-move-1",
        });
        lazyClock.advance(15 * MINUTE + 1000);
        const moved = await owner.rescheduleReservation({ id: r!.id, startTime: ts(at(13, 11)), endTime: ts(at(13, 12)) }).then(
          (res) => res.reservation,
          (err) => ConnectError.from(err),
        );
        if (moved instanceof ConnectError) {
          expect(moved.code).to.equal(Code.FailedPrecondition);
        } else {
          // Moving it would be acceptable only as a live booking, not as a hold that already ran out.
          const stillHeld = moved!.status === ReservationStatus.PENDING && timestampDate(moved!.holdExpireTime!).getTime() <= lazyClock.now().getTime();
          expect(stillHeld, `rescheduled into status ${ReservationStatus[moved!.status]} with hold_expire_time ${iso(moved!.holdExpireTime)} (now ${lazyClock.now().toISOString()})`).to.equal(false);
        }
      });
    });

    describe("RESOURCE_AVAILABLE", () => {
      const available = async (c: Reservations, resourceId: string, start: Date) =>
        (await notificationsOf(c, NotificationType.RESOURCE_AVAILABLE)).filter((n) => n.resourceId === resourceId && iso(n.startTime) === start.toISOString());

      it("tells a user refused with ALREADY_EXISTS when the owner cancels", async () => {
        const { reservation: r } = await book(asAlice, at(15, 9), at(15, 10), "avail-cancel-a");
        expect((await rpcError(book(asBob, at(15, 9), at(15, 10), "avail-cancel-b"))).code).to.equal(Code.AlreadyExists);
        expect(await available(asBob, room.id, at(15, 9))).to.have.length(0);
        await asAlice.cancelReservation({ id: r!.id });
        await eventually(async () => (await available(asBob, room.id, at(15, 9))).length >= 1, "Bob's RESOURCE_AVAILABLE");
        const [n] = await available(asBob, room.id, at(15, 9));
        expect(iso(n!.endTime)).to.equal("2030-01-15T10:00:00.000Z");
        expect(n!.read).to.equal(false);
        // Only the refused user hears of it.
        expect(await available(asAlice, room.id, at(15, 9))).to.have.length(0);
        expect(await available(asCarol, room.id, at(15, 9))).to.have.length(0);
      });

      it("tells a refused user when an admin rejects the pending booking", async () => {
        const { reservation: r } = await book(asAlice, at(15, 11), at(15, 12), "avail-reject-a", approval.id);
        expect((await rpcError(book(asCarol, at(15, 11), at(15, 12), "avail-reject-c", approval.id))).code).to.equal(Code.AlreadyExists);
        await admin.rejectReservation({ id: r!.id });
        await eventually(async () => (await available(asCarol, approval.id, at(15, 11))).length >= 1, "Carol's RESOURCE_AVAILABLE after a reject");
      });

      it("tells a refused user when the owner reschedules away", async () => {
        const { reservation: r } = await book(asAlice, at(15, 13), at(15, 14), "avail-move-a");
        expect((await rpcError(book(asCarol, at(15, 13), at(15, 14), "avail-move-c"))).code).to.equal(Code.AlreadyExists);
        await asAlice.rescheduleReservation({ id: r!.id, startTime: ts(at(15, 16)), endTime: ts(at(15, 17)) });
        await eventually(async () => (await available(asCarol, room.id, at(15, 13))).length >= 1, "Carol's RESOURCE_AVAILABLE after a reschedule");
      });
    });
  });

  describe("notifications across instances", () => {
    const clock = new ManualClock(new Date(T0));
    let a: TestServer;
    let b: TestServer;
    const watchers: Watcher[] = [];

    before(async () => {
      [a, b] = await startPair(clock);
    });
    afterEach(() => {
      for (const w of watchers.splice(0)) void w.close();
    });
    after(async () => {
      await Promise.all([a?.shutdown(), b?.shutdown()]);
    });

    it("streams a booking made through instance B to a watcher on instance A, and resumes after a cursor with no gap and no duplicate", async () => {
      const adminB = client(ReservationService, b.url, "grpc", b.adminToken);
      const { resource: room } = await adminB.createResource({ resource: resource("Watched room") });
      const dana = await newUser(a, "watch-dana");
      const eve = await newUser(a, "watch-eve");
      const danaA = client(ReservationService, a.url, "grpc", dana.token);
      const danaB = client(ReservationService, b.url, "grpc", dana.token);
      const eveB = client(ReservationService, b.url, "grpc", eve.token);
      const book = (c: Reservations, hour: number, requestId: string) =>
        c.createReservation({ resourceId: room!.id, startTime: ts(at(20, hour)), endTime: ts(at(20, hour + 1)), partySize: 1, requestId });

      const live = watch(danaA);
      watchers.push(live);
      await live.ready();
      const { reservation: first } = await book(danaB, 8, "watch-1");
      await live.waitFor((n) => n.length >= 1, "the CONFIRMED notification on A");
      const [n] = live.items;
      expect(n!.type).to.equal(NotificationType.CONFIRMED);
      expect(n!.reservationId).to.equal(first!.id);
      expect(n!.resourceId).to.equal(room!.id);
      expect(iso(n!.startTime)).to.equal("2030-01-20T08:00:00.000Z");
      expect(n!.cursor).to.match(/^[0-9]{1,19}$/);
      // The streamed notification is the stored one.
      const stored = (await allNotifications(danaA)).find((x) => x.id === n!.id);
      expect(stored).to.deep.equal(n);
      // Eve's booking is not Dana's business.
      await book(eveB, 9, "watch-eve-1");
      const quietFrom = live.heartbeats;
      await eventually(() => live.heartbeats >= quietFrom + 2 || live.ended, "two heartbeats after Eve's booking");
      expect(live.items.map((x) => x.id)).to.deep.equal([n!.id]);
      void live.close();

      const { reservation: second } = await book(danaB, 10, "watch-2");
      await book(eveB, 11, "watch-eve-2");
      const { reservation: third } = await book(danaA, 12, "watch-3");
      await danaB.cancelReservation({ id: second!.id });
      const missedIds = new Set([second!.id, third!.id]);

      const resumed = watch(danaB, n!.cursor);
      watchers.push(resumed);
      await resumed.waitFor((n) => n.length >= 3, "the three missed notifications");
      // Let the stream run quiet for a couple of heartbeats: nothing else may arrive.
      const beats = resumed.heartbeats;
      await eventually(() => resumed.heartbeats >= beats + 2, "two more heartbeats");
      const got = resumed.items;
      expect(got.map((x) => [x.type, x.reservationId])).to.deep.equal([
        [NotificationType.CONFIRMED, second!.id],
        [NotificationType.CONFIRMED, third!.id],
        [NotificationType.CANCELLED, second!.id],
      ]);
      expect(got.every((x) => missedIds.has(x.reservationId))).to.equal(true);
      const cursors = [n!.cursor, ...got.map((x) => x.cursor)].map(BigInt);
      for (let i = 1; i < cursors.length; i++) expect(cursors[i]! > cursors[i - 1]!, `cursor ${i} increases`).to.equal(true);
      expect(new Set(got.map((x) => x.id)).size).to.equal(got.length);
      // The stored list agrees with the stream: newest first.
      const list = (await allNotifications(danaA)).map((x) => x.id);
      expect(list.slice(0, 4)).to.deep.equal([...got].reverse().map((x) => x.id).concat(n!.id));
      expect(live.error).to.equal(undefined);
    });

    it("accepts on instance A a cursor just handed out by instance B (no false OUT_OF_RANGE)", async () => {
      const adminA = client(ReservationService, a.url, "grpc", a.adminToken);
      const { resource: room } = await adminA.createResource({ resource: resource("Cursor room") });
      const gina = await newUser(b, "watch-gina");
      const ginaA = client(ReservationService, a.url, "grpc", gina.token);
      const ginaB = client(ReservationService, b.url, "grpc", gina.token);
      const failures: string[] = [];
      const ROUNDS = 200;
      for (let i = 0; i < ROUNDS; i++) {
        const start = new Date(at(22, 0).getTime() + i * 30 * MINUTE);
        await ginaB.createReservation({ resourceId: room!.id, startTime: ts(start), endTime: ts(new Date(start.getTime() + 30 * MINUTE)), partySize: 1, requestId: `cursor-${i}` });
        const { notifications } = await ginaB.listNotifications({ pageSize: 1 });
        const w = watch(ginaA, notifications[0]!.cursor);
        watchers.push(w);
        // A refusal comes at once; an accepted stream just stays open.
        const until = Date.now() + 40;
        while (!w.ended && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
        if (w.error) failures.push(`round ${i}: ${Code[w.error.code]} ${w.error.rawMessage}`);
        expect(w.items).to.deep.equal([]);
        void w.close();
      }
      expect(failures, `${failures.length} of ${ROUNDS} resumes refused`).to.deep.equal([]);
    });

    it("streams every one of 40 concurrent bookings made through both instances, in cursor order", async () => {
      const adminA = client(ReservationService, a.url, "grpc", a.adminToken);
      const { resource: room } = await adminA.createResource({ resource: resource("Busy watched room", { slotMinutes: 15 }) });
      const hank = await newUser(a, "watch-hank");
      const hankA = client(ReservationService, a.url, "grpc", hank.token);
      const hankB = client(ReservationService, b.url, "grpc", hank.token);
      const w = watch(hankA);
      watchers.push(w);
      await w.ready();
      const booked = await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          (i % 2 ? hankB : hankA).createReservation({
            resourceId: room!.id,
            startTime: ts(new Date(at(23, 0).getTime() + i * 15 * MINUTE)),
            endTime: ts(new Date(at(23, 0).getTime() + (i + 1) * 15 * MINUTE)),
            partySize: 1,
            requestId: `busy-${i}`,
          }),
        ),
      );
      await w.waitFor((n) => n.length >= 40, "40 notifications");
      const beats = w.heartbeats;
      await eventually(() => w.heartbeats >= beats + 1, "a heartbeat after the burst");
      expect(w.items).to.have.length(40);
      expect(w.items.map((n) => n.reservationId).sort()).to.deep.equal(booked.map((r) => r.reservation!.id).sort());
      const cursors = w.items.map((n) => BigInt(n.cursor));
      for (let i = 1; i < cursors.length; i++) expect(cursors[i]! > cursors[i - 1]!, `cursor ${i} increases`).to.equal(true);
      const listed = (await allNotifications(hankB)).map((n) => n.id);
      expect(listed).to.deep.equal([...w.items].reverse().map((n) => n.id));
    });

    it("sends heartbeats on a quiet stream and refuses a malformed cursor", async () => {
      const quiet = watch(client(ReservationService, a.url, "grpc", await signUp(a.url, "watch-quiet")));
      watchers.push(quiet);
      await eventually(() => quiet.heartbeats >= 2 || quiet.ended, "two heartbeats");
      expect(quiet.error).to.equal(undefined);
      expect(quiet.items).to.deep.equal([]);
      const bad = watch(client(ReservationService, a.url, "grpc", a.adminToken), "abc");
      watchers.push(bad);
      await eventually(() => bad.ended, "the malformed cursor to be refused");
      expect(bad.error?.code).to.equal(Code.InvalidArgument);
      const ahead = watch(client(ReservationService, a.url, "grpc", a.adminToken), "999999999");
      watchers.push(ahead);
      await eventually(() => ahead.ended, "the future cursor to be refused");
      expect(ahead.error?.code).to.equal(Code.OutOfRange);
    });
  });

  describe("reminders after a reschedule", () => {
    const clock = new ManualClock(new Date(T0));
    let server: TestServer;
    after(() => server?.shutdown());

    it("keeps reminding other reservations after an already-reminded reservation is rescheduled", async () => {
      server = await startTestServer(ENV, undefined, undefined, clock);
      const admin = client(ReservationService, server.url, "grpc", server.adminToken);
      const { resource: room } = await admin.createResource({ resource: resource("Reminder reschedule room") });
      const ivy = client(ReservationService, server.url, "grpc", await signUp(server.url, "remind-ivy"));
      const jack = client(ReservationService, server.url, "grpc", await signUp(server.url, "remind-jack"));
      const start0 = clock.now().getTime();
      const slot = (hoursAhead: number) => ({ startTime: ts(new Date(start0 + hoursAhead * HOUR)), endTime: ts(new Date(start0 + (hoursAhead + 1) * HOUR)) });
      const { reservation: r } = await ivy.createReservation({ resourceId: room!.id, ...slot(30), partySize: 1, requestId: "rr-1" });
      clock.advance(7 * HOUR);
      await eventually(async () => (await notificationsOf(ivy, NotificationType.REMINDER, r!.id)).length === 1, "Ivy's first reminder");
      // Still inside the reminder window after the move.
      await ivy.rescheduleReservation({ id: r!.id, ...slot(29) });
      const { reservation: other } = await jack.createReservation({ resourceId: room!.id, ...slot(27), partySize: 1, requestId: "rr-2" });
      await eventually(
        async () => (await notificationsOf(jack, NotificationType.REMINDER, other!.id)).length === 1,
        "Jack's reminder (another reservation's sweep must not be blocked)",
      );
      const ivys = await notificationsOf(ivy, NotificationType.REMINDER, r!.id);
      expect(ivys.length).to.be.within(1, 2);
    });
  });

  describe("reminders", () => {
    const clock = new ManualClock(new Date(T0));
    let a: TestServer;
    let b: TestServer;
    let watcher: Watcher | undefined;

    before(async () => {
      [a, b] = await startPair(clock);
    });
    after(async () => {
      await watcher?.close();
      await Promise.all([a?.shutdown(), b?.shutdown()]);
    });

    it("sends one REMINDER per reservation REMINDER_LEAD_MINUTES before its start, even with two instances sweeping", async () => {
      const adminA = client(ReservationService, a.url, "grpc", a.adminToken);
      const { resource: room } = await adminA.createResource({ resource: resource("Reminder room") });
      const frank = await newUser(b, "remind-frank");
      const onA = client(ReservationService, a.url, "grpc", frank.token);
      const onB = client(ReservationService, b.url, "grpc", frank.token);
      const start0 = clock.now().getTime();
      const book = (c: Reservations, hoursAhead: number, requestId: string) =>
        c.createReservation({
          resourceId: room!.id,
          startTime: ts(new Date(start0 + hoursAhead * HOUR)),
          endTime: ts(new Date(start0 + (hoursAhead + 1) * HOUR)),
          partySize: 1,
          requestId,
        });
      const { reservation: soon } = await book(onA, 30, "remind-30h");
      const { reservation: later } = await book(onB, 40, "remind-40h");
      const { reservation: dropped } = await book(onA, 31, "remind-31h-cancelled");
      await onB.cancelReservation({ id: dropped!.id });

      watcher = watch(onA);
      await watcher.ready();
      // Let a few sweeps run at the current time: 30 h ahead is outside the 24 h lead.
      await new Promise((r) => setTimeout(r, 300));
      expect(await notificationsOf(onA, NotificationType.REMINDER)).to.have.length(0);

      clock.advance(7 * HOUR); // now 23 h before `soon`, 33 h before `later`
      await eventually(async () => (await notificationsOf(onB, NotificationType.REMINDER)).length >= 1, "the REMINDER in ListNotifications");
      await eventually(() => watcher!.items.some((n) => n.type === NotificationType.REMINDER) || watcher!.ended, "the REMINDER on the stream");
      expect(watcher.error).to.equal(undefined);

      const table = await notificationTable(a.databaseUrl);
      const deadline = Date.now() + 1200;
      while (Date.now() < deadline) {
        const reminders = await notificationsOf(onA, NotificationType.REMINDER);
        expect(reminders.map((n) => n.reservationId)).to.deep.equal([soon!.id]);
        const rows = await sql<{ n: number }>(a.databaseUrl, `SELECT count(*)::int AS n FROM "reservation"."${table}" WHERE reservation_id = $1`, [soon!.id]);
        // CONFIRMED + REMINDER for `soon`.
        expect(rows[0]!.n).to.equal(2);
        await new Promise((r) => setTimeout(r, 100));
      }
      const [reminder] = await notificationsOf(onA, NotificationType.REMINDER);
      expect(reminder!.resourceId).to.equal(room!.id);
      expect(iso(reminder!.startTime)).to.equal(new Date(start0 + 30 * HOUR).toISOString());
      expect(watcher.items.filter((n) => n.type === NotificationType.REMINDER).map((n) => n.reservationId)).to.deep.equal([soon!.id]);
      expect(watcher.items.filter((n) => n.type === NotificationType.REMINDER)[0]!.id).to.equal(reminder!.id);

      // Ten more hours: `later` is due now (and `soon` must not be reminded again).
      clock.advance(10 * HOUR);
      await eventually(async () => (await notificationsOf(onA, NotificationType.REMINDER, later!.id)).length === 1, "the second REMINDER");
      await new Promise((r) => setTimeout(r, 500));
      const all = await notificationsOf(onB, NotificationType.REMINDER);
      expect(all.map((n) => n.reservationId).sort()).to.deep.equal([soon!.id, later!.id].sort());
      expect(all.map((n) => n.reservationId)).to.not.include(dropped!.id);
    });
  });
});
