// Hostile input (issue 15): text PostgreSQL cannot store, timestamps outside
// years 1-9999, forged page tokens, deadlines too long for a timer, and admin
// methods called by ordinary users. Each is a clear error (or, for deadlines,
// success), the server stays SERVING, and nothing is stored.
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { expect } from "chai";
import pg from "pg";
import { ChatService, RoomVisibility } from "../../gen/agora/chat/v1/chat_pb.js";
import { FileService } from "../../gen/agora/files/v1/files_pb.js";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { Category, InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { MonitoringService } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { ReservationService } from "../../gen/agora/reservation/v1/reservation_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { toConnectError } from "../../src/platform/error-mapping.js";
import { fingerprint } from "../../src/platform/paging.js";
import { identityModule } from "../../src/services/identity/index.js";
import { inventoryModule } from "../../src/services/inventory/index.js";
import { monitoringModule } from "../../src/services/monitoring/index.js";
import { reservationModule } from "../../src/services/reservation/index.js";
import { GRPCURL, runCommand } from "../support/rpc-tools.js";
import { bearer, PROTOCOLS, quietLog, rpcError, signUp, startTestServer, type ProtocolName, type TestServer } from "../support/harness.js";

const violations = (err: ConnectError) => err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => ({ field: v.field, reason: v.reason })));

/** Connect in its binary format, so out-of-range timestamps reach the server as sent (JSON cannot even write them). */
function binaryTransport(baseUrl: string, protocol: ProtocolName, token?: string) {
  const interceptors = token ? [bearer(token)] : [];
  if (protocol === "grpc") return createGrpcTransport({ baseUrl, interceptors });
  if (protocol === "grpcweb") return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors });
  return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors });
}

describe("hostile input", () => {
  let server: TestServer;
  let userToken: string;
  let userId: string;
  let roomId: string;
  let resourceId: string;
  const as = <S extends DescService>(service: S, protocol: ProtocolName, token?: string) =>
    createClient(service, binaryTransport(server.url, protocol, token));

  before(async () => {
    server = await startTestServer({ LOGIN_MAX_FAILURES_PER_ADDRESS: "100000" });
    userToken = await signUp(server.url, "mallory");
    userId = (await as(IdentityService, "grpc", userToken).getMe({})).user!.id;
    roomId = (await as(ChatService, "grpc", userToken).createRoom({ name: "lobby", visibility: RoomVisibility.PUBLIC })).room!.id;
    const { resource } = await as(ReservationService, "grpc", server.adminToken).createResource({
      resource: { name: "Room A", type: "room", capacity: 4, active: true },
    });
    resourceId = resource!.id;
    for (const name of ["Lamp one", "Lamp two"]) {
      await as(InventoryService, "grpc", server.adminToken).createProduct({ product: { name, category: Category.OTHER, quantity: 1, unitPrice: { currencyCode: "EUR" } } });
    }
  });
  after(() => server?.shutdown());

  afterEach(async () => {
    expect((await createClient(Health, binaryTransport(server.url, "grpc")).check({})).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
  });

  for (const protocol of PROTOCOLS) {
    it(`refuses a NUL character in any string with INVALID_ARGUMENT on the field, storing nothing, over ${protocol}`, async () => {
      const hour = (h: number) => ({ seconds: BigInt(Math.floor(Date.UTC(2030, 0, 7, h) / 1000)) });
      const cases: [string, () => Promise<unknown>][] = [
        ["username", () => as(IdentityService, protocol).login({ username: "al\u0000ice", password: "x" })],
        ["display_name", () => as(IdentityService, protocol).register({ username: `eve${protocol}`, password: "a long enough password", displayName: "Eve\u0000", email: "eve@example.com" })],
        ["query", () => as(InventoryService, protocol, userToken).searchProducts({ query: "lamp\u0000" })],
        ["name", () => as(ChatService, protocol, userToken).createRoom({ name: `nul\u0000${protocol}`, visibility: RoomVisibility.PUBLIC })],
        ["message.text", () => as(ChatService, protocol, userToken).sendMessage({ message: { to: { target: { case: "roomId", value: roomId } }, clientId: `nul-${protocol}`, text: "hi\u0000" } })],
        [
          "notes",
          () => as(ReservationService, protocol, userToken).createReservation({ resourceId, startTime: hour(9), endTime: hour(10), partySize: 1, notes: "n\u0000", requestId: `nul-${protocol}` }),
        ],
        ["prefix", () => as(FileService, protocol, userToken).listFiles({ prefix: "a\u0000" })],
        [
          'samples[0].labels["mount"]',
          () => as(MonitoringService, protocol, userToken).reportMetricsBatch({ host: "web1", samples: [{ metric: "disk.used_bytes", labels: { mount: "/\u0000" }, value: 1, time: { seconds: BigInt(Math.floor(Date.now() / 1000)) } }] }),
        ],
      ];
      for (const [field, call] of cases) {
        const err = await rpcError(call());
        expect(err.code, field).to.equal(Code.InvalidArgument);
        expect(violations(err), field).to.deep.include({ field, reason: "UNSTORABLE_TEXT" });
        expect(err.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("INVALID_ARGUMENT");
      }
      // Nothing was stored, and the same calls without the NUL go through.
      const chat = as(ChatService, protocol, userToken);
      expect((await chat.listRooms({})).rooms.map((r) => r.name)).to.not.include(`nul\u0000${protocol}`);
      expect((await chat.getHistory({ conversation: { target: { case: "roomId", value: roomId } }, pageSize: 500 })).messages.map((m) => m.clientId)).to.not.include(`nul-${protocol}`);
      expect((await as(ReservationService, protocol, userToken).listReservations({})).reservations).to.have.length(0);
      expect((await chat.sendMessage({ message: { to: { target: { case: "roomId", value: roomId } }, clientId: `ok-${protocol}`, text: "hi" } })).message?.text).to.equal("hi");
    });
  }

  it("refuses unpaired surrogates in JSON before any handler (binary clients cannot send them)", async () => {
    const res = await fetch(`${server.url}/agora.chat.v1.ChatService/CreateRoom`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${userToken}` },
      body: '{"name":"odd\\ud800","visibility":"ROOM_VISIBILITY_PUBLIC"}',
    });
    expect(res.status).to.equal(400);
    expect(((await res.json()) as { code: string }).code).to.equal("invalid_argument");
    expect((await as(ChatService, "grpc", userToken).listRooms({})).rooms.map((r) => r.name)).to.deep.equal(["lobby"]);
  });

  it("maps PostgreSQL's refusals of such text to INVALID_ARGUMENT, never to 'database unavailable'", async () => {
    const db = new pg.Client({ connectionString: server.databaseUrl });
    await db.connect();
    const failure = async (sql: string, params: unknown[] = []) => {
      try {
        await db.query(sql, params);
      } catch (err) {
        return err;
      }
      throw new Error(`${sql} succeeded`);
    };
    try {
      expect(toConnectError(await failure("SELECT $1::text", ["a\u0000b"]), "r1", quietLog).code).to.equal(Code.InvalidArgument); // 22021
      expect(toConnectError(await failure("SELECT $1::jsonb", ['{"a":"\\u0000"}']), "r2", quietLog).code).to.equal(Code.InvalidArgument); // 22P05
      // A NUL inlined into SQL text breaks the protocol message (08P01): our bug, not an outage.
      expect(toConnectError(await failure("SELECT 'a\u0000b'::text"), "r3", quietLog).code).to.equal(Code.Internal);
    } finally {
      await db.end().catch(() => undefined);
    }
  });

  for (const protocol of PROTOCOLS) {
    it(`refuses timestamps outside years 1-9999 and overlong durations with INVALID_ARGUMENT on the field over ${protocol}`, async () => {
      const far = { seconds: 100_000_000_000_000n };
      const past = { seconds: -100_000_000_000_000n };
      const soon = { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600) };
      const r = as(ReservationService, protocol, userToken);
      const m = as(MonitoringService, protocol, userToken);
      const cases: [string, () => Promise<unknown>][] = [
        ["start_time", () => r.listAvailableResources({ type: "room", partySize: 1, startTime: far, endTime: { seconds: far.seconds + 3600n } })],
        ["start_time", () => r.createReservation({ resourceId, startTime: past, endTime: soon, partySize: 1, requestId: `ts-${protocol}` })],
        ["start_time", () => r.listReservations({ startTime: far })],
        ["samples[0].time", () => m.reportMetricsBatch({ host: "web1", samples: [{ metric: "cpu", value: 1, time: past }] })],
        ["silence.expire_time", () => as(MonitoringService, protocol, server.adminToken).createSilence({ silence: { host: "web1", expireTime: far } })],
        ["step", () => m.queryMetrics({ metric: "cpu", startTime: soon, endTime: { seconds: soon.seconds + 60n }, step: { seconds: 1_000_000_000_000_000n } })],
      ];
      for (const [field, call] of cases) {
        const err = await rpcError(call());
        expect(err.code, field).to.equal(Code.InvalidArgument);
        expect(violations(err).map((v) => v.field), field).to.include(field);
      }
      expect((await r.listReservations({})).reservations).to.have.length(0);
    });
  }

  for (const protocol of PROTOCOLS) {
    it(`refuses forged, tampered and foreign page tokens before any query, and follows its own, over ${protocol}`, async () => {
      const inv = as(InventoryService, protocol, userToken);
      const handMade = (p: unknown, f: string) => Buffer.from(JSON.stringify({ p, f })).toString("base64url");
      const first = await inv.listProducts({ pageSize: 1 });
      expect(first.nextPageToken).to.not.equal("");
      const [body, mac] = first.nextPageToken.split(".");
      const forged: [string, () => Promise<unknown>][] = [
        ["SearchProducts p=1e300", () => inv.searchProducts({ query: "lamp", pageToken: handMade(1e300, fingerprint("search", "lamp", 0)) })],
        ["ListRooms p='abc'", () => as(ChatService, protocol, userToken).listRooms({ pageToken: handMade("abc", fingerprint("rooms", userId)) })],
        ["tampered body", () => inv.listProducts({ pageSize: 1, pageToken: `${handMade(["zzz", "id"], JSON.parse(Buffer.from(body!, "base64url").toString()).f)}.${mac}` })],
        ["another listing's token", () => inv.searchProducts({ query: "lamp", pageToken: first.nextPageToken })],
      ];
      for (const [what, call] of forged) {
        const err = await rpcError(call());
        expect(err.code, what).to.equal(Code.InvalidArgument);
        expect(violations(err), what).to.deep.equal([{ field: "page_token", reason: "INVALID_PAGE_TOKEN" }]);
      }
      const second = await inv.listProducts({ pageSize: 1, pageToken: first.nextPageToken });
      expect(second.products[0]?.id).to.not.equal(first.products[0]?.id);
    });
  }

  for (const protocol of PROTOCOLS) {
    it(`treats a deadline too long for a timer as no deadline over ${protocol}`, async () => {
      // 720 hours (grpcurl -max-time 2600000 sends about that): above 2^31-1 ms, which used to fail at once.
      const headers = protocol === "connect" ? { "connect-timeout-ms": "2600000000" } : { "grpc-timeout": "720H" };
      const me = await as(IdentityService, protocol, userToken).getMe({}, { headers });
      expect(me.user?.username).to.equal("mallory");
      const rooms = await as(ChatService, protocol, userToken).listRooms({}, { headers: protocol === "connect" ? { "connect-timeout-ms": "9999999999" } : { "grpc-timeout": "99999999H" } });
      expect(rooms.rooms.map((r) => r.id)).to.include(roomId);
    });
  }

  it("answers the issue's grpcurl reproductions: a NUL in Login is INVALID_ARGUMENT, -max-time 2600000 works", async () => {
    const target = server.url.replace("http://", "");
    const nul = await runCommand(GRPCURL, ["-plaintext", "-format-error", "-d", '{"username":"al\\u0000ice","password":"x"}', target, "agora.identity.v1.IdentityService/Login"]);
    expect(nul.code).to.not.equal(0);
    const status = JSON.parse(nul.stderr);
    expect(status.code).to.equal(Code.InvalidArgument);
    expect(status.details[0].fieldViolations).to.deep.equal([{ field: "username", description: "must not contain the NUL character", reason: "UNSTORABLE_TEXT" }]);
    const long = await runCommand(GRPCURL, ["-plaintext", "-max-time", "2600000", "-H", `authorization: Bearer ${userToken}`, target, "agora.identity.v1.IdentityService/GetMe"]);
    expect(long.code, long.stderr).to.equal(0);
    expect(JSON.parse(long.stdout).user.username).to.equal("mallory");
  });

  const adminMethods = [identityModule, inventoryModule, reservationModule, monitoringModule].flatMap((m) =>
    m.services.flatMap((s) => s.methods.filter((method) => m.adminMethods?.includes(`${s.typeName}/${method.name}`)).map((method) => ({ service: s, method }))),
  );

  for (const protocol of PROTOCOLS) {
    it(`answers PERMISSION_DENIED to an ordinary user on every admin method whatever the body, over ${protocol}`, async () => {
      expect(adminMethods).to.have.length(17);
      for (const { service, method } of adminMethods) {
        const call = (createClient(service, binaryTransport(server.url, protocol, userToken)) as Record<string, (req: object) => Promise<unknown>>)[method.localName]!;
        const err = await rpcError(call({})); // an empty body breaks the method's rules
        expect(err.code, method.name).to.equal(Code.PermissionDenied);
        expect(err.findDetails(ErrorInfoSchema)[0]?.reason, method.name).to.equal("ADMIN_ROLE_REQUIRED");
      }
      // An admin sending the same body still meets validation.
      expect((await rpcError(as(InventoryService, protocol, server.adminToken).createProduct({}))).code).to.equal(Code.InvalidArgument);
    });
  }
});
