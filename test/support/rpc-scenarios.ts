// One scenario per service that calls every RPC of it at least once, with the
// error cases users meet, written once and run by any command-line tool
// (grpcurl, buf curl with each protocol) through the gateway.
//
// SCENARIOS is the coverage table: the suites check that the services the
// gateway serves are exactly the ones listed here and that every method of
// each was called. A new service is covered by adding a row; a new RPC by
// adding calls to its service's scenario.
import { createHash, randomInt } from "node:crypto";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { expect } from "chai";
import { ChatService } from "../../gen/agora/chat/v1/chat_pb.js";
import { FileService } from "../../gen/agora/files/v1/files_pb.js";
import { GameService } from "../../gen/agora/game/v1/game_pb.js";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { MonitoringService } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { ReservationService } from "../../gen/agora/reservation/v1/reservation_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { client } from "./harness.js";
import { methodPath, type Json, type Rpc, type RpcResult } from "./rpc-tools.js";

export const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";

export interface TestUser {
  id: string;
  username: string;
  token: string;
}

export interface ScenarioContext {
  rpc: Rpc;
  adminToken: string;
  /** Lower-case letters unique to this run: names, paths and types never collide between runs. */
  tag: string;
  /** Registers and signs in a new user (a Connect client through the gateway: set-up, not under test). */
  user(name: string): Promise<TestUser>;
}

export interface Scenario {
  service: DescService;
  run(ctx: ScenarioContext): Promise<void>;
}

/** Every method a tool called, and which tools called it. */
export class MethodCoverage {
  private readonly calls = new Map<string, Set<string>>();

  record(method: DescMethod, tool: string): void {
    const key = methodPath(method);
    const tools = this.calls.get(key) ?? new Set<string>();
    tools.add(tool);
    this.calls.set(key, tools);
  }

  /** Methods of `services` that `tool` (any tool when omitted) never called. */
  missing(services: DescService[], tool?: string): string[] {
    return services
      .flatMap((s) => s.methods.map(methodPath))
      .filter((m) => {
        const tools = this.calls.get(m);
        return !tools || (tool !== undefined && !tools.has(tool));
      });
  }

  /** "Service/Method: tool, tool" lines, for the report. */
  report(services: DescService[]): string {
    return services
      .flatMap((s) => s.methods.map(methodPath))
      .map((m) => `${m}: ${[...(this.calls.get(m) ?? [])].sort().join(", ") || "-"}`)
      .join("\n");
  }
}

export function randomTag(length = 8): string {
  return Array.from({ length }, () => String.fromCharCode(97 + randomInt(26))).join("");
}

/** A ScenarioContext's user(): registers through the gateway with a Connect client. */
export function userFactory(gatewayUrl: string, tag: string): (name: string) => Promise<TestUser> {
  const identity = client(IdentityService, gatewayUrl, "grpc");
  return async (name) => {
    const username = `${tag}-${name}`;
    const password = `password of ${username}`;
    const { user } = await identity.register({ username, password, displayName: name, email: `${username}@example.com` });
    const { tokens } = await identity.login({ username, password });
    return { id: user!.id, username, token: tokens!.accessToken };
  };
}

const b64 = (data: Buffer | string) => Buffer.from(data).toString("base64");
const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");
const HALF_HOUR = 30 * 60_000;
/** RFC 3339 as the tools print a whole-second Timestamp. */
const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");

/** The events of a stream's messages (WatchProducts, WatchFiles: { event } / { heartbeat }). */
const eventsOf = (messages: Json[]) => messages.filter((m) => m.event).map((m) => m.event);

// ---- identity -------------------------------------------------------------------

const identity: Scenario = {
  service: IdentityService,
  async run({ rpc, adminToken, tag }) {
    const I = IdentityService.method;
    const username = `${tag}-ida`;
    const password = "correct horse battery staple";
    const registered = await rpc.ok(I.register, { username, password, display_name: "Ida", email: `${username}@example.com` });
    expect(registered.user).to.include({ username, displayName: "Ida", role: "ROLE_USER" });
    expect(registered.user.id).to.match(/^[0-9a-f-]{36}$/);
    expect(registered.user).to.not.have.property("password");
    await rpc.fails(I.register, { username: username.toUpperCase(), password, display_name: "Ida", email: "x@example.com" }, undefined, "AlreadyExists", "is taken");
    await rpc.fails(I.register, { username: `${tag}-shorty`, password: "too short", display_name: "S", email: "s@example.com" }, undefined, "InvalidArgument", "password");

    const login = await rpc.ok(I.login, { username, password });
    expect(login.user.id).to.equal(registered.user.id);
    expect(login.tokens.tokenType).to.equal("Bearer");
    const token: string = login.tokens.accessToken;
    await rpc.fails(I.login, { username, password: "not the password at all" }, undefined, "Unauthenticated", "invalid username or password");

    expect((await rpc.ok(I.getMe, {}, token)).user).to.include({ id: registered.user.id, username });
    expect((await rpc.ok(I.getUserProfile, { user_id: registered.user.id }, adminToken)).profile).to.deep.equal({ id: registered.user.id, username, displayName: "Ida" });
    await rpc.fails(I.getUserProfile, { user_id: UNKNOWN_ID }, token, "NotFound", `user ${UNKNOWN_ID} not found`);
    // Stopped by the gateway's jwt_authn before any instance sees it.
    await rpc.fails(I.getMe, {}, undefined, "Unauthenticated", undefined, { from: "gateway" });

    // Refresh tokens rotate; one presented twice revokes its whole chain.
    const refreshed = await rpc.ok(I.refresh, { refresh_token: login.tokens.refreshToken });
    expect(refreshed.tokens.refreshToken).to.be.a("string").and.not.equal(login.tokens.refreshToken);
    expect((await rpc.ok(I.getMe, {}, refreshed.tokens.accessToken)).user.username).to.equal(username);
    await rpc.fails(I.refresh, { refresh_token: login.tokens.refreshToken }, undefined, "Unauthenticated", "sign in again");
    await rpc.fails(I.refresh, { refresh_token: refreshed.tokens.refreshToken }, undefined, "Unauthenticated", "sign in again");

    const session = await rpc.ok(I.login, { username, password });
    expect(await rpc.ok(I.logout, { refresh_token: session.tokens.refreshToken }, token)).to.deep.equal({});
    await rpc.fails(I.refresh, { refresh_token: session.tokens.refreshToken }, undefined, "Unauthenticated");
    await rpc.fails(I.logout, {}, token, "InvalidArgument", "refresh_token");

    await rpc.fails(I.listUsers, {}, token, "PermissionDenied", "admin role");
    const listed = await rpc.ok(I.listUsers, { page_size: 1000 }, adminToken);
    expect(listed.users.map((u: Json) => u.username)).to.include.members(["admin", username]);

    expect((await rpc.ok(I.setUserRole, { user_id: registered.user.id, role: "ROLE_ADMIN" }, adminToken)).user.role).to.equal("ROLE_ADMIN");
    expect((await rpc.ok(I.setUserRole, { user_id: registered.user.id, role: "ROLE_USER" }, adminToken)).user.role).to.equal("ROLE_USER");
    await rpc.fails(I.setUserRole, { user_id: UNKNOWN_ID, role: "ROLE_ADMIN" }, adminToken, "NotFound");
    await rpc.fails(I.setUserRole, { user_id: registered.user.id, role: "ROLE_UNSPECIFIED" }, adminToken, "InvalidArgument", "role");

    await rpc.fails(I.disableUser, { user_id: registered.user.id }, token, "PermissionDenied");
    expect((await rpc.ok(I.disableUser, { user_id: registered.user.id }, adminToken)).user).to.include({ username, disabled: true });
    await rpc.fails(I.login, { username, password }, undefined, "Unauthenticated", "invalid username or password");
  },
};

// ---- inventory ------------------------------------------------------------------

const inventory: Scenario = {
  service: InventoryService,
  async run({ rpc, adminToken, tag, user }) {
    const V = InventoryService.method;
    const clerk = await user("clerk");
    const name = `Stapler ${tag}`;
    const product = {
      name,
      description: `A ${tag} stapler for the office`,
      category: "CATEGORY_OFFICE",
      quantity: 10,
      unit_price: { currency_code: "EUR", units: "12", nanos: 500000000 },
      low_stock_threshold: 3,
    };
    const created = (await rpc.ok(V.createProduct, { product, request_id: `${tag}-create` }, adminToken)).product;
    expect(created).to.include({ name, category: "CATEGORY_OFFICE", quantity: 10, lowStockThreshold: 3 });
    expect(created.unitPrice).to.deep.equal({ currencyCode: "EUR", units: "12", nanos: 500000000 });
    const id: string = created.id;
    // A retry with the same request_id is the first result; another product with the name is refused.
    expect((await rpc.ok(V.createProduct, { product, request_id: `${tag}-create` }, adminToken)).product.id).to.equal(id);
    await rpc.fails(V.createProduct, { product: { ...product, name: name.toUpperCase() }, request_id: `${tag}-dup` }, adminToken, "AlreadyExists", "already exists");
    await rpc.fails(V.createProduct, { product: { ...product, name: `${name} 2` } }, clerk.token, "PermissionDenied", "admin role");
    await rpc.fails(V.createProduct, { product: { ...product, unit_price: { currency_code: "eur", units: "1" } } }, adminToken, "InvalidArgument", "currency");

    expect((await rpc.ok(V.getProduct, { id }, clerk.token)).product).to.deep.equal(created);
    await rpc.fails(V.getProduct, { id: UNKNOWN_ID }, clerk.token, "NotFound", `product ${UNKNOWN_ID} not found`);
    await rpc.fails(V.getProduct, { id: "not-a-uuid" }, clerk.token, "InvalidArgument", "UUID");

    const office = await rpc.ok(V.listProducts, { category: "CATEGORY_OFFICE", page_size: 1000 }, clerk.token);
    expect(office.products.map((p: Json) => p.id)).to.include(id);
    expect(office.products.every((p: Json) => p.category === "CATEGORY_OFFICE")).to.equal(true);

    const updated = (
      await rpc.ok(
        V.updateProduct,
        { id, product: { description: "Staples 50 sheets", low_stock_threshold: 8 }, update_mask: rpc.tool.fieldMask(["description", "low_stock_threshold"]), etag: created.etag },
        adminToken,
      )
    ).product;
    expect(updated).to.include({ id, description: "Staples 50 sheets", lowStockThreshold: 8, quantity: 10 });
    expect(updated.etag).to.not.equal(created.etag);
    await rpc.fails(V.updateProduct, { id, product: { description: "late" }, update_mask: rpc.tool.fieldMask(["description"]), etag: created.etag }, adminToken, "Aborted", "has changed");
    await rpc.fails(V.updateProduct, { id, product: { quantity: 99 }, update_mask: rpc.tool.fieldMask(["quantity"]) }, adminToken, "InvalidArgument", "cannot update quantity");

    const found = await rpc.ok(V.searchProducts, { query: tag }, clerk.token);
    expect(found.products.map((p: Json) => p.id)).to.deep.equal([id]);
    await rpc.fails(V.searchProducts, { query: "" }, clerk.token, "InvalidArgument", "query");

    const sale = await rpc.ok(V.adjustStock, { product_id: id, delta: -8, reason: "sale", request_id: `${tag}-sale` }, adminToken);
    expect(sale.product).to.include({ quantity: 2, lowStock: true });
    expect(sale.movement).to.include({ productId: id, delta: -8, quantityAfter: 2, reason: "sale" });
    expect(sale).to.not.have.property("replayed"); // false is not printed
    const again = await rpc.ok(V.adjustStock, { product_id: id, delta: -8, reason: "sale", request_id: `${tag}-sale` }, adminToken);
    expect(again).to.include({ replayed: true });
    expect(again.product.quantity).to.equal(2);
    await rpc.fails(V.adjustStock, { product_id: id, delta: -5, reason: "sale", request_id: `${tag}-oversell` }, adminToken, "FailedPrecondition", "only 2 unit(s)");
    await rpc.fails(V.adjustStock, { product_id: id, delta: 5, reason: "theft", request_id: `${tag}-clerk` }, clerk.token, "PermissionDenied");

    const movements = await rpc.ok(V.listStockMovements, { product_id: id }, clerk.token);
    expect(movements.movements.map((m: Json) => [m.delta, m.quantityAfter])).to.deep.equal([[-8, 2]]);

    // From cursor 0 the log is replayed: every event of this product, in commit order.
    const replayed = eventsOf(
      await rpc.stream(V.watchProducts, { after_cursor: "0", product_ids: [id] }, clerk.token, (ms) => eventsOf(ms).some((e) => e.type === "PRODUCT_EVENT_TYPE_LOW_STOCK"), "the LOW_STOCK event"),
    );
    expect(replayed.map((e) => e.type)).to.deep.equal([
      "PRODUCT_EVENT_TYPE_CREATED",
      "PRODUCT_EVENT_TYPE_UPDATED",
      "PRODUCT_EVENT_TYPE_STOCK_ADJUSTED",
      "PRODUCT_EVENT_TYPE_LOW_STOCK",
    ]);
    const cursors = replayed.map((e) => BigInt(e.cursor));
    expect(cursors.every((c, i) => i === 0 || c > cursors[i - 1]!)).to.equal(true);

    // Resumed from the last cursor, the stream stays open and delivers the delete live.
    const watch = rpc.open(V.watchProducts, { after_cursor: replayed.at(-1).cursor, product_ids: [id] }, clerk.token);
    try {
      await watch.waitFor((ms) => ms.length > 0, "a first message"); // a heartbeat: the stream is up
      await rpc.fails(V.deleteProduct, { id, etag: updated.etag }, adminToken, "Aborted", "has changed");
      expect(await rpc.ok(V.deleteProduct, { id, etag: sale.product.etag }, adminToken)).to.deep.equal({});
      await watch.waitFor((ms) => eventsOf(ms).length > 0, "the DELETED event");
    } finally {
      await watch.stop();
    }
    expect(eventsOf(watch.messages).map((e) => [e.type, e.product.id])).to.deep.equal([["PRODUCT_EVENT_TYPE_DELETED", id]]);
    await rpc.fails(V.getProduct, { id }, clerk.token, "NotFound");
  },
};

// ---- reservation ------------------------------------------------------------------

const reservation: Scenario = {
  service: ReservationService,
  async run({ rpc, adminToken, tag, user }) {
    const R = ReservationService.method;
    const [una, vic] = await Promise.all([user("una"), user("vic")]);
    const type = tag;
    const room = (
      await rpc.ok(R.createResource, { resource: { name: `Room ${tag}`, type, capacity: 4, location: "2nd floor", active: true }, request_id: `${tag}-room` }, adminToken)
    ).resource;
    expect(room).to.include({ name: `Room ${tag}`, type, capacity: 4, active: true, slotMinutes: 30 });
    const desk = (
      await rpc.ok(R.createResource, { resource: { name: `Desk ${tag}`, type, capacity: 2, active: true, requires_approval: true } }, adminToken)
    ).resource;
    expect(desk).to.include({ requiresApproval: true });
    await rpc.fails(R.createResource, { resource: { name: "Mine", type, capacity: 1, active: true } }, una.token, "PermissionDenied", "admin role");
    await rpc.fails(R.createResource, { resource: { name: "Odd", type, capacity: 1, slot_minutes: 7 } }, adminToken, "InvalidArgument", "slot_minutes");

    expect((await rpc.ok(R.getResource, { id: room.id }, una.token)).resource).to.deep.equal(room);
    await rpc.fails(R.getResource, { id: UNKNOWN_ID }, una.token, "NotFound", `resource ${UNKNOWN_ID} not found`);
    const listed = await rpc.ok(R.listResources, { type }, una.token);
    expect(listed.resources.map((r: Json) => r.name)).to.deep.equal([`Desk ${tag}`, `Room ${tag}`]);
    const closed = (await rpc.ok(R.createResource, { resource: { name: `Closed ${tag}`, type: `${type}-closed`, capacity: 2, active: false } }, adminToken)).resource;

    const moved = (await rpc.ok(R.updateResource, { id: room.id, resource: { location: "3rd floor" }, update_mask: rpc.tool.fieldMask(["location"]), etag: room.etag }, adminToken)).resource;
    expect(moved).to.include({ location: "3rd floor", capacity: 4 });
    await rpc.fails(R.updateResource, { id: room.id, resource: { capacity: 9 }, update_mask: rpc.tool.fieldMask(["capacity"]), etag: room.etag }, adminToken, "Aborted", "has changed");

    // Two days ahead, on the 30-minute grid.
    const start = Math.ceil(Date.now() / HALF_HOUR) * HALF_HOUR + 48 * 3_600_000;
    const slot = (from: number, minutes: number) => ({ start_time: iso(from), end_time: iso(from + minutes * 60_000) });
    const free = await rpc.ok(R.listAvailableResources, { type, ...slot(start, 60), party_size: 3 }, una.token);
    expect(free.resources.map((r: Json) => r.id)).to.deep.equal([room.id]); // the desk is too small
    await rpc.fails(R.listAvailableResources, { type, start_time: iso(start), end_time: iso(start), party_size: 1 }, una.token, "InvalidArgument", "end_time must be after start_time");

    const booking = { resource_id: room.id, ...slot(start, 60), party_size: 3, notes: "planning", request_id: `${tag}-r1` };
    const booked = (await rpc.ok(R.createReservation, booking, una.token)).reservation;
    expect(booked).to.include({ resourceId: room.id, userId: una.id, status: "RESERVATION_STATUS_CONFIRMED", partySize: 3, startTime: iso(start) });
    expect((await rpc.ok(R.createReservation, booking, una.token)).reservation.id).to.equal(booked.id);
    await rpc.fails(R.createReservation, { ...booking, ...slot(start + HALF_HOUR, 60), request_id: `${tag}-r2` }, vic.token, "AlreadyExists", "overlaps");
    await rpc.fails(R.createReservation, { ...booking, ...slot(start + 10 * 60_000, 30), request_id: `${tag}-r3` }, vic.token, "InvalidArgument", "grid");
    await rpc.fails(R.createReservation, { ...booking, party_size: 5, request_id: `${tag}-r4` }, vic.token, "InvalidArgument", "capacity");
    await rpc.fails(R.createReservation, { ...booking, resource_id: closed.id, party_size: 1, request_id: `${tag}-r5` }, vic.token, "FailedPrecondition", "not active");
    // Booked, the room is no longer available then; the desk still is.
    expect((await rpc.ok(R.listAvailableResources, { type, ...slot(start, 60), party_size: 1 }, una.token)).resources.map((r: Json) => r.id)).to.deep.equal([desk.id]);

    expect((await rpc.ok(R.getReservation, { id: booked.id }, una.token)).reservation).to.deep.equal(booked);
    // Someone else's reservation does not exist for them.
    await rpc.fails(R.getReservation, { id: booked.id }, vic.token, "NotFound");
    expect((await rpc.ok(R.listReservations, {}, una.token)).reservations.map((r: Json) => r.id)).to.deep.equal([booked.id]);
    expect((await rpc.ok(R.listReservations, { resource_id: room.id }, vic.token)).reservations ?? []).to.deep.equal([]);

    const rescheduled = (await rpc.ok(R.rescheduleReservation, { id: booked.id, ...slot(start + 4 * HALF_HOUR, 60), etag: booked.etag }, una.token)).reservation;
    expect(rescheduled).to.include({ id: booked.id, startTime: iso(start + 4 * HALF_HOUR) });
    await rpc.fails(R.rescheduleReservation, { id: booked.id, ...slot(start, 60), etag: booked.etag }, una.token, "Aborted", "has changed");

    const cancelled = (await rpc.ok(R.cancelReservation, { id: booked.id, reason: "plans changed" }, una.token)).reservation;
    expect(cancelled.status).to.equal("RESERVATION_STATUS_CANCELLED");
    await rpc.fails(R.cancelReservation, { id: booked.id }, una.token, "FailedPrecondition", "not pending or confirmed");

    // The desk needs an admin's approval.
    const pending = (await rpc.ok(R.createReservation, { resource_id: desk.id, ...slot(start, 30), party_size: 1, request_id: `${tag}-d1` }, una.token)).reservation;
    expect(pending.status).to.equal("RESERVATION_STATUS_PENDING");
    expect(pending.holdExpireTime).to.be.a("string");
    await rpc.fails(R.confirmReservation, { id: pending.id }, una.token, "PermissionDenied");
    expect((await rpc.ok(R.confirmReservation, { id: pending.id }, adminToken)).reservation.status).to.equal("RESERVATION_STATUS_CONFIRMED");
    const refused = (await rpc.ok(R.createReservation, { resource_id: desk.id, ...slot(start + HALF_HOUR, 30), party_size: 2, request_id: `${tag}-d2` }, vic.token)).reservation;
    expect((await rpc.ok(R.rejectReservation, { id: refused.id, reason: "maintenance" }, adminToken)).reservation.status).to.equal("RESERVATION_STATUS_REJECTED");
    await rpc.fails(R.rejectReservation, { id: refused.id }, adminToken, "FailedPrecondition", "not pending");

    const notices = (await rpc.ok(R.listNotifications, {}, una.token)).notifications as Json[];
    expect(notices.every((n) => n.userId === una.id)).to.equal(true);
    expect(notices.map((n) => n.type)).to.include.members(["NOTIFICATION_TYPE_CANCELLED", "NOTIFICATION_TYPE_PENDING", "NOTIFICATION_TYPE_CONFIRMED"]);
    const first = notices.find((n) => n.type === "NOTIFICATION_TYPE_CANCELLED");
    expect((await rpc.ok(R.markNotificationRead, { id: first.id }, una.token)).notification).to.include({ id: first.id, read: true });
    await rpc.fails(R.markNotificationRead, { id: first.id }, vic.token, "NotFound");
    const unread = (await rpc.ok(R.listNotifications, { unread_only: true }, una.token)).notifications as Json[];
    expect(unread.map((n) => n.id)).to.not.include(first.id);
    expect(unread).to.have.length(notices.length - 1);

    // Vic's notifications from the start of the log: his own only, the rejection among them.
    const watched = (
      await rpc.stream(R.watchNotifications, { after_cursor: "0" }, vic.token, (ms) => ms.some((m) => m.notification?.type === "NOTIFICATION_TYPE_REJECTED"), "the REJECTED notification")
    )
      .filter((m) => m.notification)
      .map((m) => m.notification);
    expect(watched.every((n) => n.userId === vic.id)).to.equal(true);
    expect(watched.find((n) => n.type === "NOTIFICATION_TYPE_REJECTED").reservationId).to.equal(refused.id);
    await rpc.fails(R.watchNotifications, { after_cursor: "x" }, vic.token, "InvalidArgument", "after_cursor");
    await rpc.fails(R.watchNotifications, { after_cursor: "999999999999" }, vic.token, "OutOfRange", "ahead of the newest event");
  },
};

// ---- chat -----------------------------------------------------------------------

const chat: Scenario = {
  service: ChatService,
  async run({ rpc, tag, user }) {
    const C = ChatService.method;
    const [ann, ben, cid] = await Promise.all([user("ann"), user("ben"), user("cid")]);
    const lobby = (await rpc.ok(C.createRoom, { name: `lobby ${tag}`, description: "everyone", visibility: "ROOM_VISIBILITY_PUBLIC" }, ann.token)).room;
    expect(lobby).to.include({ name: `lobby ${tag}`, ownerId: ann.id, memberCount: 1 });
    const secret = (await rpc.ok(C.createRoom, { name: `secret ${tag}`, visibility: "ROOM_VISIBILITY_PRIVATE" }, ann.token)).room;
    await rpc.fails(C.createRoom, { name: "no visibility" }, ann.token, "InvalidArgument", "visibility");

    const rooms = (await rpc.ok(C.listRooms, { page_size: 1000 }, ben.token)).rooms.map((r: Json) => r.id);
    expect(rooms).to.include(lobby.id).and.not.include(secret.id);
    expect((await rpc.ok(C.joinRoom, { room_id: lobby.id }, ben.token)).room.memberCount).to.equal(2);
    await rpc.fails(C.joinRoom, { room_id: secret.id }, ben.token, "NotFound", `room ${secret.id} not found`);
    await rpc.fails(C.inviteToRoom, { room_id: lobby.id, user_id: cid.id }, cid.token, "PermissionDenied", "only members may invite");
    expect(await rpc.ok(C.inviteToRoom, { room_id: secret.id, user_id: ben.id }, ann.token)).to.deep.equal({});
    expect((await rpc.ok(C.joinRoom, { room_id: secret.id }, ben.token)).room.memberCount).to.equal(2);
    const members = (await rpc.ok(C.listMembers, { room_id: lobby.id }, cid.token)).members as Json[];
    expect(members.map((m) => m.username)).to.deep.equal([ann.username, ben.username]);
    await rpc.fails(C.listMembers, { room_id: secret.id }, cid.token, "NotFound");

    // Ben follows every conversation on Subscribe, the lobby from its first message.
    const subscription = rpc.open(C.subscribe, { cursors: [{ conversation_id: lobby.id, after_sequence: "0" }] }, ben.token);
    try {
      await subscription.waitFor((ms) => ms.some((m) => m.event?.heartbeat), "the first heartbeat");
      expect(await rpc.ok(C.setPresence, { presence: "PRESENCE_BUSY" }, ben.token)).to.deep.equal({ presence: "PRESENCE_BUSY" });
      await rpc.fails(C.setPresence, { presence: "PRESENCE_OFFLINE" }, ben.token, "InvalidArgument", "presence");
      const online = (await rpc.ok(C.listOnlineUsers, { page_size: 1000 }, cid.token)).users as Json[];
      expect(online.find((u) => u.userId === ben.id)).to.deep.equal({ userId: ben.id, username: ben.username, presence: "PRESENCE_BUSY" });
      expect(online.map((u) => u.userId)).to.not.include(cid.id);

      const hello = { message: { to: { room_id: lobby.id }, client_id: `${tag}-m1`, text: "hello ben" } };
      const sent = (await rpc.ok(C.sendMessage, hello, ann.token)).message;
      expect(sent).to.include({ conversationId: lobby.id, senderId: ann.id, kind: "MESSAGE_KIND_TEXT", text: "hello ben" });
      expect((await rpc.ok(C.sendMessage, hello, ann.token)).message).to.deep.equal(sent); // a resend is harmless
      await rpc.fails(C.sendMessage, { message: { ...hello.message, text: "another text" } }, ann.token, "InvalidArgument", "client_id was already used");
      await rpc.fails(C.sendMessage, { message: { to: { room_id: lobby.id }, client_id: `${tag}-c1`, text: "hi" } }, cid.token, "PermissionDenied", "join");
      await rpc.fails(C.sendMessage, { message: { to: { room_id: lobby.id }, client_id: `${tag}-m0` } }, ann.token, "InvalidArgument", "needs text or attachments");
      await rpc.fails(C.sendMessage, { message: { to: { user_id: ann.id }, client_id: `${tag}-me`, text: "me" } }, ann.token, "InvalidArgument", "two different users");
      await rpc.fails(C.sendMessage, { message: { to: { user_id: UNKNOWN_ID }, client_id: `${tag}-d0`, text: "anyone?" } }, ann.token, "NotFound", `user ${UNKNOWN_ID} not found`);
      const direct = (await rpc.ok(C.sendMessage, { message: { to: { user_id: ben.id }, client_id: `${tag}-d1`, text: "psst" } }, ann.token)).message;
      expect(direct).to.include({ recipientId: ben.id, sequence: "1" });

      const texts = (ms: Json[]) => ms.map((m) => m.event?.message?.text).filter((t) => t);
      await subscription.waitFor((ms) => texts(ms).includes("hello ben") && texts(ms).includes("psst"), "both messages");
      // Typing: passed on to the room's other members; refused to a non-member as a send is.
      expect(await rpc.ok(C.sendTyping, { to: { room_id: lobby.id } }, ann.token)).to.deep.equal({});
      await subscription.waitFor((ms) => ms.some((m) => m.event?.typing?.userId === ann.id), "Ann's typing notice");
      await rpc.fails(C.sendTyping, { to: { room_id: lobby.id } }, cid.token, "PermissionDenied", "join");
      const lobbyMessages = subscription.messages.map((m) => m.event?.message).filter((m) => m?.conversationId === lobby.id);
      expect(lobbyMessages.map((m) => Number(m.sequence))).to.deep.equal(lobbyMessages.map((_, i) => i + 1)); // from 1, no gap
      expect(lobbyMessages.map((m) => m.kind)).to.include("MESSAGE_KIND_JOINED");
    } finally {
      await subscription.stop();
    }

    // The bidi stream, driven one command at a time on stdin (buf curl starts the call with the first one).
    const stream = rpc.open(C.chat, { ref: "j", join: { conversation_id: lobby.id } }, ben.token, true);
    const refs = (ms: Json[]) => new Set(ms.map((m) => m.ref).filter((r) => r));
    let result: RpcResult;
    try {
      await stream.waitFor((ms) => refs(ms).has("j"), "the join answer");
      await rpc.ok(C.sendMessage, { message: { to: { room_id: lobby.id }, client_id: `${tag}-m2`, text: "are you there?" } }, ann.token);
      await stream.waitFor((ms) => ms.some((m) => m.message?.text === "are you there?"), "Ann's message");
      stream.send({ ref: "s", send: { to: { room_id: lobby.id }, client_id: `${tag}-b1`, text: "yes" } });
      stream.send({ ref: "t", typing: { room_id: lobby.id } });
      stream.send({ ref: "p", set_presence: "PRESENCE_AWAY" });
      stream.send({ ref: "a", ack: { conversation_id: lobby.id, after_sequence: "1" } });
      stream.send({ ref: "bad", leave_room_id: "not-a-uuid" });
      stream.send({ ref: "nf", join: { conversation_id: UNKNOWN_ID } });
      await stream.waitFor((ms) => ["s", "bad", "nf"].every((r) => refs(ms).has(r)), "answers to every command");
      // The server ends the stream once the client half-closes and every command is answered.
      stream.end();
      result = await stream.done;
    } finally {
      await stream.stop();
    }
    expect(result.error, "the stream ends with OK").to.equal(undefined);
    expect(result.stopped).to.equal(false);
    const answers = stream.messages.filter((m) => m.ref);
    expect(answers.find((m) => m.ref === "j").joined).to.include({ id: lobby.id });
    expect(answers.find((m) => m.ref === "s").sent).to.include({ text: "yes", senderId: ben.id, clientId: `${tag}-b1` });
    expect(Object.fromEntries(answers.filter((m) => m.error).map((m) => [m.ref, m.error.code]))).to.deep.equal({ bad: "invalid_argument", nf: "not_found" });

    const history = await rpc.ok(C.getHistory, { conversation: { room_id: lobby.id }, from_start: true }, ben.token);
    expect(history.conversationId).to.equal(lobby.id);
    expect(history.messages.map((m: Json) => Number(m.sequence))).to.deep.equal(history.messages.map((_: Json, i: number) => i + 1));
    expect(history.messages.filter((m: Json) => m.kind === "MESSAGE_KIND_TEXT").map((m: Json) => m.text)).to.deep.equal(["hello ben", "are you there?", "yes"]);
    const dm = await rpc.ok(C.getHistory, { conversation: { user_id: ann.id } }, ben.token);
    expect(dm.messages.map((m: Json) => m.text)).to.deep.equal(["psst"]);
    await rpc.fails(C.getHistory, { conversation: { room_id: secret.id } }, cid.token, "NotFound");

    expect(await rpc.ok(C.leaveRoom, { room_id: lobby.id }, ben.token)).to.deep.equal({});
    expect(((await rpc.ok(C.listMembers, { room_id: lobby.id }, ann.token)).members as Json[]).map((m) => m.userId)).to.deep.equal([ann.id]);
    await rpc.fails(C.leaveRoom, { room_id: "lobby" }, ben.token, "InvalidArgument", "room_id");
  },
};

// ---- files ------------------------------------------------------------------------

const files: Scenario = {
  service: FileService,
  async run({ rpc, tag, user }) {
    const F = FileService.method;
    const [fran, gus, hal] = await Promise.all([user("fran"), user("gus"), user("hal")]);
    const path = `${tag}/notes.txt`;
    const v1 = Buffer.from("first line\nsecond line\n");
    const v2 = Buffer.from("a rewritten file, sent in two unary chunks\n");

    // Client stream on stdin: metadata first, then chunks.
    const up = await rpc.ok(F.upload, [{ metadata: { path, comment: "first" } }, { chunk: b64(v1.subarray(0, 5)) }, { chunk: b64(v1.subarray(5)) }], fran.token);
    expect(up.file).to.include({ path, ownerId: fran.id, latestVersion: "1", role: "ROLE_OWNER", sha256: sha256(v1) });
    expect(up.version).to.include({ version: "1", size: String(v1.length), sha256: sha256(v1), authorName: fran.username, comment: "first" });
    const fileId: string = up.file.id;
    await rpc.fails(F.upload, [{ metadata: { path } }, { chunk: b64("x") }], fran.token, "Aborted", "already exists");
    await rpc.fails(F.upload, [{ metadata: { path: `${tag}/../escape` } }, { chunk: b64("x") }], fran.token, "InvalidArgument", "'..'");
    await rpc.fails(F.upload, [{ metadata: { path: `${tag}/sum.txt`, expected_sha256: "0".repeat(64) } }, { chunk: b64("x") }], fran.token, "InvalidArgument", `SHA-256 is ${sha256("x")}`);

    // The unary upload: begin, append at offsets, commit.
    const begun = await rpc.ok(F.beginUpload, { metadata: { file_id: fileId, base_version: "1", comment: "second" } }, fran.token);
    const uploadId: string = begun.uploadId;
    expect(begun.expireTime).to.be.a("string");
    expect(await rpc.ok(F.appendChunk, { upload_id: uploadId, offset: "0", data: b64(v2.subarray(0, 10)) }, fran.token)).to.deep.equal({ received: "10" });
    await rpc.fails(F.appendChunk, { upload_id: uploadId, offset: "20", data: b64("zz") }, fran.token, "OutOfRange", "expected offset 10");
    expect(await rpc.ok(F.appendChunk, { upload_id: uploadId, offset: "10", data: b64(v2.subarray(10)) }, fran.token)).to.deep.equal({ received: String(v2.length) });
    expect((await rpc.ok(F.getUpload, { upload_id: uploadId }, fran.token)).received).to.equal(String(v2.length));
    await rpc.fails(F.getUpload, { upload_id: uploadId }, gus.token, "NotFound");
    const committed = await rpc.ok(F.commitUpload, { upload_id: uploadId }, fran.token);
    expect(committed.version).to.include({ version: "2", sha256: sha256(v2), comment: "second" });
    await rpc.fails(F.commitUpload, { upload_id: uploadId }, fran.token, "NotFound");

    expect((await rpc.ok(F.getFile, { file_id: fileId }, fran.token)).file).to.include({ latestVersion: "2", size: String(v2.length) });
    await rpc.fails(F.getFile, { file_id: fileId }, gus.token, "NotFound");
    expect(((await rpc.ok(F.listFiles, { prefix: `${tag}/` }, fran.token)).files as Json[]).map((f) => f.path)).to.deep.equal([path]);
    expect(((await rpc.ok(F.listVersions, { file_id: fileId }, fran.token)).versions as Json[]).map((v) => v.version)).to.deep.equal(["2", "1"]);

    // Download: the version first, then chunks; resumable at an offset.
    const content = (messages: Json[]) => Buffer.concat(messages.filter((m) => m.chunk).map((m) => Buffer.from(m.chunk, "base64")));
    const whole = await rpc.tool.call(F.download, { file_id: fileId, version: "1" }, fran.token);
    expect(whole.error).to.equal(undefined);
    expect(whole.messages[0].version).to.include({ version: "1", sha256: sha256(v1) });
    expect(content(whole.messages).equals(v1)).to.equal(true);
    const rest = await rpc.tool.call(F.download, { file_id: fileId, offset: "5" }, fran.token);
    expect(rest.messages[0].version.version).to.equal("2");
    expect(content(rest.messages).toString()).to.equal(v2.subarray(5).toString());
    await rpc.fails(F.download, { file_id: fileId, offset: "100000" }, fran.token, "OutOfRange", "past the end");

    await rpc.fails(F.restoreVersion, { file_id: fileId, version: "1", base_version: "1" }, fran.token, "Aborted", "latest version is 2");
    const restored = await rpc.ok(F.restoreVersion, { file_id: fileId, version: "1", base_version: "2" }, fran.token);
    expect(restored.version).to.include({ version: "3", restoredFrom: "1", sha256: sha256(v1) });

    // Sharing and locks.
    expect(await rpc.ok(F.shareFile, { file_id: fileId, user_id: gus.id, role: "ROLE_READER" }, fran.token)).to.deep.equal({});
    expect((await rpc.ok(F.getFile, { file_id: fileId }, gus.token)).file.role).to.equal("ROLE_READER");
    await rpc.fails(F.lockFile, { file_id: fileId }, gus.token, "PermissionDenied", "editor");
    await rpc.fails(F.upload, [{ metadata: { file_id: fileId, base_version: "3" } }, { chunk: b64("mine") }], gus.token, "PermissionDenied", "readers cannot upload");
    await rpc.ok(F.shareFile, { file_id: fileId, user_id: gus.id, role: "ROLE_EDITOR" }, fran.token);
    await rpc.fails(F.shareFile, { file_id: fileId, user_id: hal.id, role: "ROLE_READER" }, gus.token, "PermissionDenied", "owner");
    const lock = (await rpc.ok(F.lockFile, { file_id: fileId, ttl_seconds: 60 }, gus.token)).lock;
    expect(lock).to.include({ holderId: gus.id, holderName: gus.username });
    expect(lock.token).to.be.a("string").and.not.equal("");
    await rpc.fails(F.upload, [{ metadata: { file_id: fileId, base_version: "3" } }, { chunk: b64("mine") }], fran.token, "FailedPrecondition", `locked by ${gus.username}`);
    await rpc.fails(F.lockFile, { file_id: fileId }, fran.token, "FailedPrecondition", `locked by ${gus.username}`);
    const refreshed = (await rpc.ok(F.refreshLock, { file_id: fileId, token: lock.token, ttl_seconds: 600 }, gus.token)).lock;
    expect(Date.parse(refreshed.expireTime)).to.be.greaterThan(Date.parse(lock.expireTime));
    await rpc.fails(F.refreshLock, { file_id: fileId, token: "not-the-token" }, gus.token, "FailedPrecondition", "not held");
    await rpc.fails(F.unlockFile, { file_id: fileId }, gus.token, "InvalidArgument", "token");
    expect(await rpc.ok(F.unlockFile, { file_id: fileId, token: lock.token }, gus.token)).to.deep.equal({});

    const granted = await rpc.ok(F.grantAttachmentAccess, { file_id: fileId, user_ids: [hal.id] }, fran.token);
    expect(granted.version).to.include({ fileId, version: "3" });
    expect((await rpc.ok(F.getFile, { file_id: fileId }, hal.token)).file.role).to.equal("ROLE_READER");
    await rpc.fails(F.grantAttachmentAccess, { file_id: UNKNOWN_ID, user_ids: [hal.id] }, fran.token, "NotFound");

    await rpc.fails(F.deleteFile, { file_id: fileId }, gus.token, "PermissionDenied", "owner");
    expect((await rpc.ok(F.deleteFile, { file_id: fileId }, fran.token)).file).to.include({ id: fileId, deleted: true });
    await rpc.fails(F.getFile, { file_id: fileId }, gus.token, "NotFound");
    expect((await rpc.ok(F.undeleteFile, { file_id: fileId }, fran.token)).file).to.not.have.property("deleted");
    await rpc.fails(F.undeleteFile, { file_id: fileId }, fran.token, "FailedPrecondition", "not deleted");

    // Fran's events from the start of the log: this file's history in order.
    const fileEvents = (ms: Json[]) => eventsOf(ms).filter((e) => e.fileId === fileId);
    const watched = fileEvents(
      await rpc.stream(F.watchFiles, { after_cursor: "0" }, fran.token, (ms) => fileEvents(ms).some((e) => e.type === "FILE_EVENT_TYPE_UNDELETED"), "the UNDELETED event"),
    );
    expect(watched.map((e) => e.type.replace("FILE_EVENT_TYPE_", ""))).to.deep.equal([
      "VERSION_CREATED",
      "VERSION_CREATED",
      "VERSION_CREATED",
      "LOCKED",
      "UNLOCKED",
      "DELETED",
      "UNDELETED",
    ]);
    expect(watched.map((e) => e.version?.version).filter((v) => v)).to.deep.equal(["1", "2", "3"]);
    expect(watched.every((e) => e.audience === undefined)).to.equal(true);
  },
};

// ---- monitoring -------------------------------------------------------------------

const monitoring: Scenario = {
  service: MonitoringService,
  async run({ rpc, adminToken, tag, user }) {
    const M = MonitoringService.method;
    const ops = await user("ops");
    const host = `${tag}-web`;
    const metric = `${tag}.load`;
    const sample = (value: number, timeMs: number) => ({ metric, labels: { core: "0" }, value, time: iso(timeMs) });
    // Two old samples in one whole minute: too old to be judged by alert rules, but there for queries.
    const minute = Math.floor(Date.now() / 60_000) * 60_000 - 3 * 60_000;
    const older = [sample(20, minute + 5_000), sample(40, minute + 15_000)];

    // Client stream on stdin: each message stored as it arrives.
    const streamed = await rpc.ok(M.reportMetrics, [{ host, samples: [older[0]] }, { host, samples: [older[1]] }], ops.token);
    expect(streamed).to.deep.equal({ acceptedSamples: "2", messages: "2" });
    // A resend is recognised, not stored twice.
    expect(await rpc.ok(M.reportMetricsBatch, { host, samples: older }, ops.token)).to.deep.equal({ duplicateSamples: "2" });
    await rpc.fails(M.reportMetricsBatch, { host, samples: [{ ...older[0], labels: { host: "other" } }] }, ops.token, "InvalidArgument", "host");
    await rpc.fails(M.reportMetricsBatch, { host, samples: [sample(1, Date.now() + 3_600_000)] }, ops.token, "InvalidArgument", "ahead of the server's clock");
    // A bad message ends the stream; the messages before it are stored (outside the minute queried below).
    await rpc.fails(M.reportMetrics, [{ host, samples: [sample(1, minute - 30_000)] }, { host, samples: [] }], ops.token, "InvalidArgument", "samples");

    const hosts = (await rpc.ok(M.listHosts, { status: "HOST_STATUS_UP", page_size: 1000 }, ops.token)).hosts as Json[];
    expect(hosts.find((h) => h.name === host)).to.include({ status: "HOST_STATUS_UP", seriesCount: "1" });

    const query = { host, metric, start_time: iso(minute), end_time: iso(minute + 60_000), step: "60s", resolution: "RESOLUTION_RAW" };
    const answer = await rpc.ok(M.queryMetrics, query, ops.token);
    expect(answer).to.deep.include({ resolution: "RESOLUTION_RAW", step: "60s" });
    expect(answer.series).to.have.length(1);
    expect(answer.series[0]).to.deep.include({ host, metric, labels: { core: "0" } });
    expect(answer.series[0].points).to.deep.equal([{ time: iso(minute), count: "2", min: 20, avg: 30, max: 40 }]);
    await rpc.fails(M.queryMetrics, { ...query, step: "0.5s" }, ops.token, "InvalidArgument", "step");

    // Rules: admins write them, everyone reads them.
    const rule = {
      name: `${tag} load high`,
      metric,
      label_selector: { host },
      comparison: "COMPARISON_GREATER_THAN",
      threshold: 90,
      clear_threshold: 50,
      for_duration: "0s",
      severity: "SEVERITY_WARNING",
    };
    const created = (await rpc.ok(M.createAlertRule, { rule, request_id: `${tag}-rule` }, adminToken)).rule;
    expect(created).to.include({ name: rule.name, metric, threshold: 90, clearThreshold: 50, severity: "SEVERITY_WARNING" });
    expect((await rpc.ok(M.createAlertRule, { rule, request_id: `${tag}-rule` }, adminToken)).rule.id).to.equal(created.id);
    await rpc.fails(M.createAlertRule, { rule }, ops.token, "PermissionDenied", "admin role");
    await rpc.fails(M.createAlertRule, { rule: { ...rule, clear_threshold: 95 } }, adminToken, "InvalidArgument", "clear_threshold");
    expect((await rpc.ok(M.getAlertRule, { id: created.id }, ops.token)).rule).to.deep.equal(created);
    await rpc.fails(M.getAlertRule, { id: UNKNOWN_ID }, ops.token, "NotFound");
    expect(((await rpc.ok(M.listAlertRules, { metric }, ops.token)).rules as Json[]).map((r) => r.id)).to.deep.equal([created.id]);
    const critical = (await rpc.ok(M.updateAlertRule, { id: created.id, rule: { severity: "SEVERITY_CRITICAL" }, update_mask: rpc.tool.fieldMask(["severity"]), etag: created.etag }, adminToken)).rule;
    expect(critical.severity).to.equal("SEVERITY_CRITICAL");
    await rpc.fails(M.updateAlertRule, { id: created.id, rule: { threshold: 1 }, update_mask: rpc.tool.fieldMask(["threshold"]), etag: created.etag }, adminToken, "Aborted", "has changed");

    // A fresh sample over the threshold fires (for_duration 0); the watch replays from the start of the log.
    const ours = (ms: Json[], state: string) => ms.some((m) => m.event?.alert?.ruleId === created.id && m.event.alert.state === state);
    await rpc.ok(M.reportMetricsBatch, { host, samples: [sample(95, Date.now() - 1_000)] }, ops.token);
    const watch = rpc.open(M.watchAlerts, { after_cursor: "0", include_silenced: true }, ops.token);
    try {
      await watch.waitFor((ms) => ours(ms, "ALERT_STATE_FIRING"), "the FIRING alert");
      const firing = (await rpc.ok(M.listAlerts, { rule_id: created.id }, ops.token)).alerts as Json[];
      expect(firing).to.have.length(1);
      expect(firing[0]).to.include({ kind: "ALERT_KIND_THRESHOLD", host, state: "ALERT_STATE_FIRING", severity: "SEVERITY_CRITICAL", value: 95 });

      await rpc.fails(M.createSilence, { silence: { rule_id: created.id, expire_time: iso(Date.now() + 3_600_000) } }, ops.token, "PermissionDenied");
      await rpc.fails(M.createSilence, { silence: { comment: "everything", expire_time: iso(Date.now() + 3_600_000) } }, adminToken, "InvalidArgument", "at least one of");
      const silence = (await rpc.ok(M.createSilence, { silence: { rule_id: created.id, comment: "maintenance", expire_time: iso(Date.now() + 3_600_000) } }, adminToken)).silence;
      expect(silence).to.include({ ruleId: created.id, comment: "maintenance", createdBy: "admin" });
      expect(((await rpc.ok(M.listSilences, { page_size: 1000 }, ops.token)).silences as Json[]).map((x) => x.id)).to.include(silence.id);

      // Back under the clear threshold: resolved, and silenced by then.
      await rpc.ok(M.reportMetricsBatch, { host, samples: [sample(10, Date.now())] }, ops.token);
      await watch.waitFor((ms) => ours(ms, "ALERT_STATE_RESOLVED"), "the RESOLVED alert");
      expect(await rpc.ok(M.deleteSilence, { id: silence.id }, adminToken)).to.deep.equal({});
      expect((await rpc.ok(M.listSilences, { page_size: 1000 }, ops.token)).silences?.map((x: Json) => x.id) ?? []).to.not.include(silence.id);
      await rpc.fails(M.deleteSilence, { id: UNKNOWN_ID }, adminToken, "NotFound");
    } finally {
      await watch.stop();
    }
    const events = watch.messages.filter((m) => m.event?.alert?.ruleId === created.id).map((m) => m.event);
    expect(events.map((e) => [e.previousState ?? "ALERT_STATE_UNSPECIFIED", e.alert.state, e.alert.silenced ?? false])).to.deep.equal([
      ["ALERT_STATE_UNSPECIFIED", "ALERT_STATE_FIRING", false],
      ["ALERT_STATE_FIRING", "ALERT_STATE_RESOLVED", true],
    ]);
    const resolved = (await rpc.ok(M.listAlerts, { rule_id: created.id, states: ["ALERT_STATE_RESOLVED"] }, ops.token)).alerts as Json[];
    expect(resolved.map((a) => [a.id, a.silenced])).to.deep.equal([[events[0].alert.id, true]]);

    // Without include_silenced the replay leaves the silenced change out.
    const quiet = await rpc.stream(M.watchAlerts, { after_cursor: "0" }, ops.token, (ms) => ours(ms, "ALERT_STATE_FIRING") && ms.at(-1)?.heartbeat, "the replay, then a heartbeat");
    expect(ours(quiet, "ALERT_STATE_RESOLVED")).to.equal(false);

    await rpc.fails(M.deleteAlertRule, { id: created.id, etag: created.etag }, adminToken, "Aborted", "has changed");
    expect(await rpc.ok(M.deleteAlertRule, { id: created.id, etag: critical.etag }, adminToken)).to.deep.equal({});
    await rpc.fails(M.getAlertRule, { id: created.id }, ops.token, "NotFound");
    await rpc.fails(M.deleteHost, { name: host }, ops.token, "PermissionDenied");
    expect(await rpc.ok(M.deleteHost, { name: host }, adminToken)).to.deep.equal({});
    expect(((await rpc.ok(M.listHosts, { page_size: 1000 }, ops.token)).hosts ?? []).map((h: Json) => h.name)).to.not.include(host);
    await rpc.fails(M.deleteHost, { name: host }, adminToken, "NotFound");
  },
};

// ---- health -----------------------------------------------------------------------

const health: Scenario = {
  service: Health,
  async run({ rpc }) {
    const H = Health.method;
    expect(await rpc.ok(H.check, {})).to.deep.equal({ status: "SERVING" });
    expect(await rpc.ok(H.check, { service: FileService.typeName })).to.deep.equal({ status: "SERVING" });
    await rpc.fails(H.check, { service: "no.such.Service" }, undefined, "NotFound");
    const watched = await rpc.stream(H.watch, { service: ChatService.typeName }, undefined, (ms) => ms.length > 0, "the current status");
    expect(watched[0]).to.deep.equal({ status: "SERVING" });
    const statuses = (await rpc.ok(H.list, {})).statuses as Record<string, Json>;
    for (const s of SCENARIOS.map((x) => x.service).filter((s) => s !== Health)) {
      expect(statuses[s.typeName], s.typeName).to.deep.equal({ status: "SERVING" });
    }
  },
};

/** The coverage table: every service the gateway serves, and how each is exercised. */
// ---- game -----------------------------------------------------------------------

const game: Scenario = {
  service: GameService,
  async run({ rpc, tag, user }) {
    const G = GameService.method;
    const [xena, olaf, fan] = await Promise.all([user("xena"), user("olaf"), user("fan")]);
    // A turn clock unique to this run: only this run's two players can be paired with each other.
    const turnSeconds = 60 + ([...tag].reduce((n, c) => n * 31 + c.charCodeAt(0), 7) % 3000);

    // Matchmaking: both queue, both streams end MATCHED with the same game.
    const matched = (ms: Json[]) => ms.some((m) => m.ticket?.status === "TICKET_STATUS_MATCHED");
    const [mx, mo] = await Promise.all([
      rpc.stream(G.findMatch, { turn_seconds: turnSeconds }, xena.token, matched, "xena's match"),
      rpc.stream(G.findMatch, { turn_seconds: turnSeconds }, olaf.token, matched, "olaf's match"),
    ]);
    const pairedId = mx.find((m) => m.ticket?.status === "TICKET_STATUS_MATCHED").ticket.gameId;
    expect(mo.find((m) => m.ticket?.status === "TICKET_STATUS_MATCHED").ticket.gameId).to.equal(pairedId);
    expect((await rpc.ok(G.resign, { game_id: pairedId }, xena.token)).game.status).to.equal("GAME_STATUS_ABORTED"); // before any move
    expect(await rpc.ok(G.cancelMatch, {}, xena.token)).to.deep.equal({});
    await rpc.fails(G.cancelMatch, { ticket_id: "nope" }, xena.token, "InvalidArgument", "ticket_id");

    // A challenge, played over MakeMove.
    await rpc.fails(G.createGame, { opponent_user_id: xena.id }, xena.token, "InvalidArgument", "yourself");
    const challenge = (await rpc.ok(G.createGame, { opponent_user_id: olaf.id, mark: "MARK_X", request_id: `${tag}-g1` }, xena.token)).game;
    expect(challenge).to.include({ status: "GAME_STATUS_CHALLENGE", invitedUserId: olaf.id });
    await rpc.fails(G.acceptChallenge, { game_id: challenge.id }, xena.token, "PermissionDenied");
    expect((await rpc.ok(G.acceptChallenge, { game_id: challenge.id }, olaf.token)).game.status).to.equal("GAME_STATUS_ACTIVE");
    const id = challenge.id;
    const first = (await rpc.ok(G.makeMove, { game_id: id, cell: 4, move_number: 1 }, xena.token)).game;
    expect(first).to.include({ board: "....X....", nextMoveNumber: 2, turn: "MARK_O" });
    expect((await rpc.ok(G.makeMove, { game_id: id, cell: 4, move_number: 1 }, xena.token)).game.version).to.equal(first.version); // a resend
    await rpc.fails(G.makeMove, { game_id: id, cell: 9, move_number: 2 }, olaf.token, "InvalidArgument", "cell");
    await rpc.fails(G.makeMove, { game_id: id, cell: 4, move_number: 2 }, olaf.token, "FailedPrecondition", "taken");
    await rpc.fails(G.makeMove, { game_id: id, cell: 0, move_number: 3 }, olaf.token, "Aborted", "expects move 2");
    await rpc.fails(G.makeMove, { game_id: id, cell: 0, move_number: 2 }, fan.token, "PermissionDenied");
    await rpc.fails(G.getGame, { game_id: UNKNOWN_ID }, fan.token, "NotFound");

    // A spectator's stream starts with the state and the moves after the one given.
    const watched = await rpc.stream(G.watchGame, { game_id: id, after_move_number: 0 }, fan.token, (ms) => ms.length > 0, "the snapshot");
    expect(watched[0].update).to.include({ kind: "UPDATE_KIND_SNAPSHOT" });
    expect(watched[0].update.newMoves.map((m: Json) => m.cell)).to.deep.equal([4]);

    // Olaf plays on over the bidi stream, one command at a time.
    const play = rpc.open(G.play, { ref: "j", join: { game_id: id, after_move_number: 1 } }, olaf.token, true);
    let result: RpcResult;
    try {
      await play.waitFor((ms) => ms.some((m) => m.update), "the snapshot");
      play.send({ ref: "m", move: { cell: 0, move_number: 2 } });
      play.send({ ref: "bad", move: { cell: 8, move_number: 2 } });
      await play.waitFor((ms) => ms.some((m) => m.error?.ref === "bad") && ms.some((m) => m.update?.game?.nextMoveNumber === 3), "the move and the refusal");
      play.end();
      result = await play.done;
    } finally {
      await play.stop();
    }
    expect(result.error, "the stream ends with OK").to.equal(undefined);
    expect(play.messages.find((m) => m.error).error).to.include({ ref: "bad", reason: "STALE_MOVE" });

    // A draw by agreement, then a rematch with the marks swapped (aborted at once by a resignation).
    expect((await rpc.ok(G.offerDraw, { game_id: id }, xena.token)).game.drawOfferedBy).to.equal(xena.id);
    await rpc.fails(G.acceptDraw, { game_id: id }, xena.token, "FailedPrecondition");
    expect((await rpc.ok(G.acceptDraw, { game_id: id }, olaf.token)).game).to.include({ result: "GAME_RESULT_DRAW", endReason: "END_REASON_AGREEMENT" });
    await rpc.fails(G.acceptRematch, { game_id: id }, olaf.token, "FailedPrecondition");
    expect((await rpc.ok(G.offerRematch, { game_id: id }, olaf.token)).game.rematchOfferedBy).to.equal(olaf.id);
    const { rematch } = await rpc.ok(G.acceptRematch, { game_id: id }, xena.token);
    expect(rematch.x.userId).to.equal(olaf.id);
    expect((await rpc.ok(G.resign, { game_id: rematch.id }, olaf.token)).game.endReason).to.equal("END_REASON_ABORTED");

    const declined = (await rpc.ok(G.createGame, { opponent_user_id: xena.id }, olaf.token)).game;
    expect((await rpc.ok(G.declineChallenge, { game_id: declined.id }, xena.token)).game.endReason).to.equal("END_REASON_DECLINED");

    const read = (await rpc.ok(G.getGame, { game_id: id }, fan.token)).game;
    expect(read.moves.map((m: Json) => m.cell ?? 0)).to.deep.equal([4, 0]); // JSON leaves out a zero
    const listed = (await rpc.ok(G.listGames, { page_size: 10 }, xena.token)).games.map((g: Json) => g.id);
    expect(listed).to.include.members([id, rematch.id, declined.id]);

    const stats = (await rpc.ok(G.getPlayerStats, {}, xena.token)).stats;
    expect(stats).to.include({ userId: xena.id, draws: 1, games: 1, provisional: true });
    await rpc.fails(G.getPlayerStats, { user_id: UNKNOWN_ID }, fan.token, "NotFound");
    expect((await rpc.ok(G.getLeaderboard, { page_size: 5 }, fan.token)).entries.length).to.be.within(1, 5);
    expect((await rpc.ok(G.getLeaderboard, { around_caller: true }, xena.token)).caller.userId).to.equal(xena.id);
  },
};

export const SCENARIOS: Scenario[] = [identity, inventory, reservation, chat, files, monitoring, game, health];
