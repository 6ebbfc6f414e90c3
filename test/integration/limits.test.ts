// Issue 15, limits: rate limits on Register and on every method that writes, through real clients on
// every protocol: RESOURCE_EXHAUSTED with RetryInfo and ErrorInfo, nothing created, the server healthy.
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { ChatService, RoomVisibility } from "../../gen/agora/chat/v1/chat_pb.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { client, login, PROTOCOLS, rpcError, startTestServer, type TestServer } from "../support/harness.js";

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
});
