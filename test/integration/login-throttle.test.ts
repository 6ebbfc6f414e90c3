import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "chai";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { ADMIN, client, PROTOCOLS, rpcError, startTestServer, transport, type TestServer } from "../support/harness.js";

/** A client whose calls appear to come from `address` (the server trusts X-Forwarded-For here, as behind Envoy). */
const from = (baseUrl: string, address: string) =>
  createClient(IdentityService, createGrpcTransport({ baseUrl, interceptors: [(next) => (req) => (req.header.set("x-forwarded-for", address), next(req))] }));

const retrySeconds = (err: Awaited<ReturnType<typeof rpcError>>) => Number(err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds);

async function tally(calls: Promise<unknown>[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const r of await Promise.allSettled(calls)) {
    const name = r.status === "fulfilled" ? "OK" : Code[(r.reason as { code: Code }).code]!;
    counts[name] = (counts[name] ?? 0) + 1;
    if (r.status === "rejected" && (r.reason as { code: Code }).code === Code.ResourceExhausted) {
      const err = r.reason as Awaited<ReturnType<typeof rpcError>>;
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("LOGIN_THROTTLED");
      expect(retrySeconds(err)).to.be.greaterThan(0);
    }
  }
  return counts;
}

describe("login throttle", () => {
  const clock = new ManualClock(new Date("2026-11-25T12:00:00Z"));
  let server: TestServer;

  before(async () => {
    server = await startTestServer(
      { LOGIN_MAX_FAILURES_PER_USER: "5", LOGIN_MAX_FAILURES_PER_ADDRESS: "30", LOGIN_MAX_DELAY_SECONDS: "60", TRUST_FORWARDED_FOR: "true" },
      undefined,
      undefined,
      clock,
    );
  });
  after(() => server?.shutdown());

  afterEach(async () => {
    expect((await client(Health, server.url).check({})).status).to.equal(HealthCheckResponse_ServingStatus.SERVING);
  });

  for (const protocol of PROTOCOLS) {
    it(`checks at most the free failures of 20 parallel guesses on one account over ${protocol}`, async () => {
      const username = `victim-${protocol}`;
      const password = `the password of ${username}`;
      await client(IdentityService, server.url).register({ username, password, displayName: username, email: `${username}@example.com` });
      const identity = createClient(IdentityService, transport(server.url, protocol));
      // One connection, one address (each protocol its own, so the address budget is not what stops them).
      const guesses = Array.from({ length: 20 }, (_, i) => identity.login({ username, password: i === 19 ? password : `guess number ${i}` }, { headers: { "x-forwarded-for": `198.51.100.${PROTOCOLS.indexOf(protocol) + 1}` } }));
      const counts = await tally(guesses);
      console.log(`      20 parallel guesses over ${protocol}: ${JSON.stringify(counts)} (before: 19 UNAUTHENTICATED, 1 OK)`);
      expect((counts.Unauthenticated ?? 0) + (counts.OK ?? 0)).to.be.at.most(5);
      expect(counts.ResourceExhausted).to.be.at.least(15);
      clock.advance(61_000);
      expect((await identity.login({ username, password })).tokens?.accessToken).to.be.a("string");
    });
  }

  it("checks at most the address limit of 60 parallel attempts from one address", async () => {
    const identity = createClient(IdentityService, transport(server.url, "grpc"));
    const attempts = Array.from({ length: 60 }, (_, i) =>
      identity.login({ username: `nobody-${i}`, password: "a guess of a password" }, { headers: { "x-forwarded-for": "203.0.113.60" } }),
    );
    const counts = await tally(attempts);
    console.log(`      60 parallel attempts from one address, limit 30: ${JSON.stringify(counts)} (before: 60 UNAUTHENTICATED)`);
    expect(counts).to.deep.equal({ Unauthenticated: 30, ResourceExhausted: 30 });
    clock.advance(15 * 60_000 + 1000);
  });

  it("slows a stranger's guesses on the admin account with growing delays but never locks the admin out", async () => {
    const stranger = from(server.url, "203.0.113.66");
    const delays: number[] = [];
    for (let i = 0; i < 12; i++) {
      const err = await rpcError(stranger.login({ username: ADMIN.username, password: `stranger's guess ${i}` }));
      if (err.code === Code.ResourceExhausted) {
        delays.push(retrySeconds(err));
        clock.advance(retrySeconds(err) * 1000);
        i--; // the attempt was not checked: make it again once allowed
        if (delays.length > 20) break;
        continue;
      }
      expect(err.code).to.equal(Code.Unauthenticated);
    }
    console.log(`      waits between a stranger's guesses after 5 failures (s): ${delays.join(", ")}`);
    expect(delays.slice(0, 7)).to.deep.equal([1, 2, 4, 8, 16, 32, 60]);
    // The account is in its longest delay now: a new address waits at most that long...
    const elsewhere = await rpcError(from(server.url, "192.0.2.7").login(ADMIN));
    expect(elsewhere.code).to.equal(Code.ResourceExhausted);
    expect(retrySeconds(elsewhere)).to.be.within(1, 60);
    // ...while the admin's own client (the address it signed in from before) signs in at once.
    const own = createClient(IdentityService, transport(server.url, "grpc"));
    expect((await own.login(ADMIN)).user?.username).to.equal(ADMIN.username);
  });

});
