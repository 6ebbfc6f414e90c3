// Issue 15, limits: rate limits on Register and on every method that writes, through real clients on
// every protocol: RESOURCE_EXHAUSTED with RetryInfo and ErrorInfo, nothing created, the server healthy.
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { ChatRequestSchema, ChatService, RoomVisibility, type ChatRequest, type ChatResponse } from "../../gen/agora/chat/v1/chat_pb.js";
import { Outbox } from "../../src/cli/chat.js";
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { FileService, UploadRequestSchema } from "../../gen/agora/files/v1/files_pb.js";
import { BadRequestSchema, ErrorInfoSchema, QuotaFailureSchema, ResourceInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { MonitoringService, ReportMetricsRequestSchema } from "../../gen/agora/monitoring/v1/monitoring_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { ServerReflection, ServerReflectionRequestSchema } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { client, eventually, login, PROTOCOLS, rpcError, signUp, startTestServer, type TestServer } from "../support/harness.js";

/** Asserts a rate-limit refusal: the code, RetryInfo with a positive delay, and the ErrorInfo reason. */
function expectLimited(err: ConnectError, reason: string): void {
  expect(err.code, err.message).to.equal(Code.ResourceExhausted);
  const [retry] = err.findDetails(RetryInfoSchema);
  expect(Number(retry?.retryDelay?.seconds)).to.be.at.least(1);
  expect(err.findDetails(ErrorInfoSchema)[0]?.reason).to.equal(reason);
}

describe("rate limits (issue 15)", () => {
  let server: TestServer;
  const users = ["lim-alice", "lim-bob", "lim-carol"];
  const password = (u: string) => `password-of-${u}`;
  before(async () => {
    server = await startTestServer({
      SERVICES: "identity,chat",
      RATE_LIMIT_REGISTRATIONS_PER_HOUR: "3",
      RATE_LIMIT_USER_WRITES_PER_SECOND: "1",
      RATE_LIMIT_USER_WRITES_BURST: "3",
    });
  });
  after(() => server?.shutdown());

  afterEach(async () => {
    expect((await client(Health, server.url).check({})).status).to.equal(Status.SERVING);
  });

  it("refuses registrations from one address past the limit, on every protocol, and creates no user", async () => {
    for (const u of users) {
      await client(IdentityService, server.url).register({ username: u, password: password(u), displayName: u, email: `${u}@example.com` });
    }
    for (const protocol of PROTOCOLS) {
      const username = `lim-extra-${protocol}`;
      const err = await rpcError(
        client(IdentityService, server.url, protocol).register({ username, password: password(username), displayName: "x", email: `${username}@example.com` }),
      );
      expectLimited(err, "REGISTRATIONS_LIMITED");
      const { users: listed } = await client(IdentityService, server.url, "grpc", server.adminToken).listUsers({ pageSize: 100 });
      expect(listed.map((x) => x.username)).to.not.include(username);
    }
    // Those who registered still sign in.
    expect((await login(server.url, users[0]!, password(users[0]!))).accessToken).to.not.be.empty;
  });

  it("limits each user's writes without touching another user's, on every protocol, and the refused call creates nothing", async () => {
    const alice = (await login(server.url, users[0]!, password(users[0]!))).accessToken;
    const bob = (await login(server.url, users[1]!, password(users[1]!))).accessToken;
    const chat = client(ChatService, server.url, "grpc", alice);
    for (let i = 0; i < 3; i++) await chat.createRoom({ name: `alice room ${i}`, visibility: RoomVisibility.PUBLIC });
    for (const protocol of PROTOCOLS) {
      const err = await rpcError(client(ChatService, server.url, protocol, alice).createRoom({ name: `too many ${protocol}`, visibility: RoomVisibility.PUBLIC }));
      expectLimited(err, "RATE_LIMITED_USER");
    }
    // Reads are not limited; the refused rooms do not exist.
    const { rooms } = await chat.listRooms({ pageSize: 100 });
    expect(rooms.map((r) => r.name).filter((n) => n.startsWith("too many"))).to.deep.equal([]);
    // Bob is not limited by Alice's calls.
    await client(ChatService, server.url, "connect", bob).createRoom({ name: "bob room", visibility: RoomVisibility.PUBLIC });
  });

  it("never limits health checks or reflection, which write nothing: a gateway's checks share its address budget", async () => {
    // One write per second per address: twenty checks in a row would be refused if they counted as writes.
    const tight = await startTestServer({ SERVICES: "identity", RATE_LIMIT_ADDRESS_WRITES_PER_SECOND: "1", RATE_LIMIT_ADDRESS_WRITES_BURST: "1" });
    try {
      for (const protocol of PROTOCOLS) {
        for (let i = 0; i < 5; i++) expect((await client(Health, tight.url, protocol).check({})).status).to.equal(Status.SERVING);
      }
      const reflection = client(ServerReflection, tight.url);
      for (let i = 0; i < 5; i++) {
        const ask = async function* () {
          yield create(ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
        };
        for await (const res of reflection.serverReflectionInfo(ask())) {
          expect(res.messageResponse.case).to.equal("listServicesResponse");
        }
      }
    } finally {
      await tight.shutdown();
    }
  });
});

const MiB = 1024 * 1024;

/** A streaming upload's messages: metadata (with a declared size when given), then chunks of 256 KiB. */
async function* parts(name: string, data: Uint8Array, size?: bigint) {
  yield create(UploadRequestSchema, { part: { case: "metadata", value: { target: { case: "path", value: name }, baseVersion: 0n, size } } });
  for (let o = 0; o < data.length; o += 256 * 1024) yield create(UploadRequestSchema, { part: { case: "chunk", value: data.subarray(o, o + 256 * 1024) } });
}

/** Asserts a quota refusal: RESOURCE_EXHAUSTED with QuotaFailure naming the caller, and no RetryInfo (waiting will not help). */
function expectQuota(err: ConnectError, subject: string): void {
  expect(err.code, err.message).to.equal(Code.ResourceExhausted);
  expect(err.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject).to.equal(subject);
  expect(err.findDetails(RetryInfoSchema)).to.deep.equal([]);
  expect(err.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("QUOTA_EXCEEDED");
}

describe("quotas (issue 15)", () => {
  let server: TestServer;
  let dataDir: string;
  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "agora-quotas-"));
    server = await startTestServer({
      SERVICES: "identity,chat,files,monitoring",
      DATA_DIR: dataDir,
      CHAT_MAX_ROOMS_PER_USER: "2",
      FILES_MAX_OPEN_UPLOADS_PER_USER: "2",
      FILES_MAX_BYTES_PER_USER: String(4 * MiB),
      MONITORING_MAX_SERIES_PER_HOST: "3",
    });
  });
  after(async () => {
    await server?.shutdown();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  afterEach(async () => {
    expect((await client(Health, server.url).check({})).status).to.equal(Status.SERVING);
  });

  const count = async (sql: string) => {
    const c = new pg.Client({ connectionString: server.databaseUrl });
    await c.connect();
    try {
      return (await c.query<{ n: number }>(sql)).rows[0]!.n;
    } finally {
      await c.end();
    }
  };

  it("refuses a room past the rooms one user may own, on every protocol, even when asked in parallel", async () => {
    const token = await signUp(server.url, "quota-rooms");
    const me = (await client(IdentityService, server.url, "grpc", token).getMe({})).user!.id;
    const results = await Promise.allSettled(
      [0, 1, 2, 3].map((i) => client(ChatService, server.url, "grpc", token).createRoom({ name: `room ${i}`, visibility: RoomVisibility.PUBLIC })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).to.have.length(2);
    for (const protocol of PROTOCOLS) {
      const err = await rpcError(client(ChatService, server.url, protocol, token).createRoom({ name: `one more ${protocol}`, visibility: RoomVisibility.PUBLIC }));
      expectQuota(err, `user:${me}`);
    }
    expect(await count(`SELECT count(*)::int AS n FROM "chat".rooms WHERE owner_id = '${me}'`)).to.equal(2);
  });

  it("refuses an unfinished upload past the per-user bound, on every protocol", async () => {
    const token = await signUp(server.url, "quota-uploads");
    const me = (await client(IdentityService, server.url, "grpc", token).getMe({})).user!.id;
    const begin = (protocol: (typeof PROTOCOLS)[number], name: string) =>
      client(FileService, server.url, protocol, token).beginUpload({ metadata: { target: { case: "path", value: name }, baseVersion: 0n } });
    await begin("grpc", "a.bin");
    await begin("grpc", "b.bin");
    for (const protocol of PROTOCOLS) expectQuota(await rpcError(begin(protocol, `c-${protocol}.bin`)), `user:${me}`);
    expect(await count(`SELECT count(*)::int AS n FROM "files".uploads WHERE user_id = '${me}'`)).to.equal(2);
  });

  it("refuses an upload that would take its owner past the storage quota, as early as it can tell, and stores nothing", async () => {
    const token = await signUp(server.url, "quota-bytes");
    const me = (await client(IdentityService, server.url, "grpc", token).getMe({})).user!.id;
    const files = client(FileService, server.url, "grpc", token);
    const versions = () => count(`SELECT count(*)::int AS n FROM "files".versions v JOIN "files".files f ON f.id = v.file_id WHERE f.owner_id = '${me}'`);
    const { file: a } = await files.upload(parts("a.bin", randomBytes(3 * MiB)));

    // Declared too big: refused at BeginUpload on every protocol, and on the stream before any chunk
    // (without the early check this stream would end as INVALID_ARGUMENT, size mismatch).
    for (const protocol of PROTOCOLS) {
      const err = await rpcError(
        client(FileService, server.url, protocol, token).beginUpload({ metadata: { target: { case: "path", value: `big-${protocol}.bin` }, baseVersion: 0n, size: BigInt(2 * MiB) } }),
      );
      expectQuota(err, `user:${me}`);
    }
    expect(await count(`SELECT count(*)::int AS n FROM "files".uploads WHERE user_id = '${me}'`)).to.equal(0);
    expectQuota(await rpcError(files.upload(parts("declared.bin", new Uint8Array(0), BigInt(2 * MiB)))), `user:${me}`);

    // A declared size is a promise: content of another size is refused and stores nothing.
    const short = await rpcError(files.upload(parts("short.bin", randomBytes(5), 10n)));
    expect([short.code, short.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.reason]).to.deep.equal([Code.InvalidArgument, "SIZE_MISMATCH"]);

    // Undeclared: refused when its bytes pass what is left; the temp file goes with it.
    expectQuota(await rpcError(files.upload(parts("b.bin", randomBytes(2 * MiB)))), `user:${me}`);
    const streamTemp = fs.readdirSync(path.join(dataDir, "blobs", "tmp")).filter((f) => !f.startsWith("upload-")); // not unary uploads' staging
    expect(streamTemp, "streaming uploads' temp files").to.deep.equal([]);

    // Content the user already stores takes no more room: restoring a version always fits.
    await files.restoreVersion({ fileId: a!.id, version: 1n, baseVersion: 1n });

    // Two uploads that each fit but not together: the commit's check under the owner's lock lets one through.
    const results = await Promise.allSettled([0, 1].map((i) => files.upload(parts(`par-${i}.bin`, randomBytes(600 * 1024)))));
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(refused, "parallel uploads refused").to.have.length(1);
    expectQuota(ConnectError.from(refused[0]!.reason), `user:${me}`);

    // Unary: the chunk that would pass the quota is refused; the upload stays open at what it had.
    const { uploadId } = await files.beginUpload({ metadata: { target: { case: "path", value: "unary.bin" }, baseVersion: 0n } });
    await files.appendChunk({ uploadId, offset: 0n, data: randomBytes(400 * 1024) });
    expectQuota(await rpcError(files.appendChunk({ uploadId, offset: BigInt(400 * 1024), data: randomBytes(100 * 1024) })), `user:${me}`);
    expect((await files.getUpload({ uploadId })).received).to.equal(BigInt(400 * 1024));

    expect(await versions(), "versions stored").to.equal(3);
    expect(await count(`SELECT count(*)::int AS n FROM "files".files WHERE owner_id = '${me}'`), "files").to.equal(2);
    const { files: listed } = await files.listFiles({});
    expect(listed.map((f) => f.path).sort()).to.deep.equal(["a.bin", results[0]!.status === "fulfilled" ? "par-0.bin" : "par-1.bin"]);
  });

  it("reads the history with a user id nobody wrote to as empty, and creates nothing", async () => {
    const token = await signUp(server.url, "quota-history");
    const before = await count(`SELECT count(*)::int AS n FROM "chat".conversations`);
    for (const protocol of PROTOCOLS) {
      const res = await client(ChatService, server.url, protocol, token).getHistory({ conversation: { target: { case: "userId", value: randomUUID() } } });
      expect(res.messages).to.deep.equal([]);
    }
    expect(await count(`SELECT count(*)::int AS n FROM "chat".conversations`)).to.equal(before);
  });

  it("refuses a direct message or an invitation to a user that does not exist (NOT_FOUND naming the user), and creates nothing; typing to one creates nothing", async () => {
    const token = await signUp(server.url, "quota-dm");
    const peer = (await client(IdentityService, server.url, "grpc", await signUp(server.url, "quota-dm-peer")).getMe({})).user!.id;
    const { room } = await client(ChatService, server.url, "grpc", token).createRoom({ name: "dm quota room", visibility: RoomVisibility.PRIVATE });
    const rows = async () =>
      [
        await count(`SELECT count(*)::int AS n FROM "chat".conversations`),
        await count(`SELECT count(*)::int AS n FROM "chat".messages`),
        await count(`SELECT count(*)::int AS n FROM "chat".invitations`),
      ].join();
    const before = await rows();
    const expectUnknownUser = (err: ConnectError, id: string) => {
      expect(err.code, err.message).to.equal(Code.NotFound);
      expect(err.findDetails(ResourceInfoSchema)[0]).to.include({ resourceType: "user", resourceName: id });
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("NOT_FOUND");
    };
    for (const protocol of PROTOCOLS) {
      const chat = client(ChatService, server.url, protocol, token);
      const nobody = randomUUID();
      expectUnknownUser(await rpcError(chat.sendMessage({ message: { to: { target: { case: "userId", value: nobody } }, clientId: `dm-${protocol}`, text: "hello?" } })), nobody);
      expectUnknownUser(await rpcError(chat.inviteToRoom({ roomId: room!.id, userId: nobody })), nobody);
    }
    // On the Chat stream: typing to a random user is silently nothing; a send is an error event with the same details.
    const requests = new Outbox<ChatRequest>();
    const nobody = randomUUID();
    requests.push(create(ChatRequestSchema, { ref: "t", command: { case: "typing", value: { target: { case: "userId", value: nobody } } } }));
    requests.push(create(ChatRequestSchema, { ref: "s", command: { case: "send", value: { to: { target: { case: "userId", value: nobody } }, clientId: "dm-stream", text: "hello?" } } }));
    const answers: ChatResponse[] = [];
    for await (const res of client(ChatService, server.url, "grpc", token).chat(requests)) {
      if (res.ref) answers.push(res);
      if (res.ref === "s") requests.close();
    }
    expect(answers.map((a) => [a.ref, a.event.case === "error" ? a.event.value.code : a.event.case])).to.deep.equal([["s", "not_found"]]);
    expect(await rows()).to.equal(before);

    // A user who exists: the first message creates the conversation, the invitation is stored.
    const chat = client(ChatService, server.url, "connect", token);
    await chat.sendMessage({ message: { to: { target: { case: "userId", value: peer } }, clientId: "dm-real", text: "hello" } });
    await chat.inviteToRoom({ roomId: room!.id, userId: peer });
    const [conversations, messages, invitations] = before.split(",").map(Number);
    expect(await rows()).to.equal([conversations! + 1, messages! + 1, invitations! + 1].join());
  });

  it("removes a streaming upload's bytes as soon as the client resets the stream", async () => {
    const token = await signUp(server.url, "quota-reset");
    const tmp = path.join(dataDir, "blobs", "tmp");
    const frame = (part: Parameters<typeof create<typeof UploadRequestSchema>>[1]) => {
      const body = toBinary(UploadRequestSchema, create(UploadRequestSchema, part));
      const out = Buffer.alloc(5 + body.length);
      out.writeUInt32BE(body.length, 1);
      Buffer.from(body).copy(out, 5);
      return out;
    };
    const earlier = new Set(fs.readdirSync(tmp));
    const session = http2.connect(server.url);
    session.on("error", () => undefined);
    const stream = session.request({ ":method": "POST", ":path": "/agora.files.v1.FileService/Upload", "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${token}` });
    stream.on("error", () => undefined);
    stream.write(frame({ part: { case: "metadata", value: { target: { case: "path", value: "reset.bin" }, baseVersion: 0n } } }));
    for (let i = 0; i < 8; i++) stream.write(frame({ part: { case: "chunk", value: randomBytes(128 * 1024) } }));
    // This upload's temp file: other tests' unfinished unary uploads keep theirs.
    const staged = () => fs.readdirSync(tmp).filter((f) => !earlier.has(f)).reduce((n, f) => n + fs.statSync(path.join(tmp, f)).size, 0);
    await eventually(() => staged() >= 1024 * 1024, "the upload's bytes to be staged");
    console.log(`      ${staged()} bytes staged before the reset`);
    stream.close(http2.constants.NGHTTP2_CANCEL);
    await eventually(() => staged() === 0, "the staged bytes to be removed", 5000);
    session.close();
    expect((await client(FileService, server.url, "grpc", token).listFiles({})).files).to.deep.equal([]);
  });

  const stored = async (host: string) => ({
    series: await count(`SELECT count(*)::int AS n FROM "monitoring".series WHERE host = '${host}'`),
    samples: await count(`SELECT count(*)::int AS n FROM "monitoring".samples JOIN "monitoring".series s ON s.id = series_id WHERE s.host = '${host}'`),
  });
  let t = Date.now() - 60_000;
  const samples = (...metrics: string[]) => metrics.map((metric) => ({ metric, value: 1, time: timestampFromMs(t++) }));

  it("refuses a report that would create series past the host's limit, whole, on every protocol; known series cost nothing", async () => {
    const token = await signUp(server.url, "series-quota");
    const mon = (protocol: (typeof PROTOCOLS)[number] = "grpc") => client(MonitoringService, server.url, protocol, token);
    expect((await mon().reportMetricsBatch({ host: "q-1", samples: samples("a", "b") })).acceptedSamples).to.equal(2n);
    for (const protocol of PROTOCOLS) {
      const err = await rpcError(mon(protocol).reportMetricsBatch({ host: "q-1", samples: samples("a", "c", "d") }));
      expectQuota(err, "host:q-1");
      expect(await stored("q-1"), `after the refusal on ${protocol}`).to.deep.equal({ series: 2, samples: 2 });
    }
    // Up to the limit, and the known series go on being reported.
    expect((await mon("connect").reportMetricsBatch({ host: "q-1", samples: samples("a", "b", "c") })).acceptedSamples).to.equal(3n);
    expect((await mon("grpcweb").reportMetricsBatch({ host: "q-1", samples: samples("a", "b", "c") })).acceptedSamples).to.equal(3n);
    // Another host has its own limit.
    expect((await mon().reportMetricsBatch({ host: "q-2", samples: samples("a", "b", "c") })).acceptedSamples).to.equal(3n);
    expect(await stored("q-1")).to.deep.equal({ series: 3, samples: 8 });
  });

  it("ends a stream at the message that would pass the limit, storing none of that message", async () => {
    const token = await signUp(server.url, "series-stream");
    async function* messages() {
      yield create(ReportMetricsRequestSchema, { host: "q-3", samples: samples("a", "b") });
      yield create(ReportMetricsRequestSchema, { host: "q-3", samples: samples("a", "c", "d") });
    }
    expectQuota(await rpcError(client(MonitoringService, server.url, "grpc", token).reportMetrics(messages())), "host:q-3");
    // The first message was stored as it arrived; the second not at all.
    expect(await stored("q-3")).to.deep.equal({ series: 2, samples: 2 });
  });

  it("lets parallel reports of new series pass the limit only up to it", async () => {
    const token = await signUp(server.url, "series-parallel");
    const results = await Promise.allSettled(
      ["w", "x", "y", "z", "v"].map((m) => client(MonitoringService, server.url, "grpc", token).reportMetricsBatch({ host: "q-4", samples: samples(m) })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).to.have.length(3);
    for (const r of results) if (r.status === "rejected") expectQuota(ConnectError.from(r.reason), "host:q-4");
    expect(await stored("q-4")).to.deep.equal({ series: 3, samples: 3 });
  });
});
