import { generateKeyPairSync } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import pg from "pg";
import { decodeProtectedHeader, SignJWT, type JSONWebKeySet } from "jose";
import { IdentityService, Role } from "../../gen/agora/identity/v1/identity_pb.js";
import { Category, InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { ManualClock } from "../../src/platform/clock.js";
import { ADMIN, client, login, PROTOCOLS, signUp, startTestServer, type TestServer, rpcError } from "../support/harness.js";

const newProduct = { product: { name: "Guarded", category: Category.OTHER, quantity: 1, unitPrice: { currencyCode: "EUR" } } };

describe("identity and access control", () => {
  const clock = new ManualClock(new Date("2026-11-21T12:00:00Z"));
  let server: TestServer;
  const identity = (token?: string) => client(IdentityService, server.url, "grpc", token);

  before(async () => {
    server = await startTestServer({ LOGIN_MAX_FAILURES_PER_USER: "3", LOGIN_MAX_FAILURES_PER_ADDRESS: "1000" }, undefined, undefined, clock);
  });
  after(() => server?.shutdown());

  describe("registration", () => {
    it("registers a user with the USER role and refuses a taken username in any case", async () => {
      const { user } = await identity().register({ username: "Alice", password: "correct horse battery", displayName: "Alice", email: "alice@example.com" });
      expect(user!.role).to.equal(Role.USER);
      expect(user).to.not.have.property("passwordHash");
      const dup = await rpcError(identity().register({ username: "alice", password: "another long password", displayName: "A", email: "a@example.com" }));
      expect(dup.code).to.equal(Code.AlreadyExists);
    });

    it("states the password policy through INVALID_ARGUMENT on the field", async () => {
      const short = await rpcError(identity().register({ username: "bob", password: "short", displayName: "Bob", email: "bob@example.com" }));
      expect(short.code).to.equal(Code.InvalidArgument);
      expect(short.rawMessage).to.contain("password");
      const same = await rpcError(identity().register({ username: "bobbobbobbob", password: "BOBBOBBOBBOB", displayName: "Bob", email: "bob@example.com" }));
      expect(same.rawMessage).to.contain("password must not be the username");
      const email = await rpcError(identity().register({ username: "bob", password: "long enough password", displayName: "Bob", email: "not-an-email" }));
      expect(email.rawMessage).to.contain("email");
    });
  });

  describe("token lifecycle", () => {
    it("logs in, calls, rotates the refresh token, revokes the chain on reuse, logs out and expires", async () => {
      await identity().register({ username: "carol", password: "carol's long password", displayName: "Carol", email: "carol@example.com" });
      const first = await login(server.url, "carol", "carol's long password");
      expect(first.tokenType).to.equal("Bearer");
      const me = await identity(first.accessToken).getMe({});
      expect(me.user!.username).to.equal("carol");

      const { tokens: second } = await identity().refresh({ refreshToken: first.refreshToken });
      expect(second!.refreshToken).to.not.equal(first.refreshToken);
      expect((await identity(second!.accessToken).getMe({})).user!.id).to.equal(me.user!.id);

      // The first refresh token is replayed: it and every token rotated from it stop working.
      expect((await rpcError(identity().refresh({ refreshToken: first.refreshToken }))).code).to.equal(Code.Unauthenticated);
      expect((await rpcError(identity().refresh({ refreshToken: second!.refreshToken }))).code).to.equal(Code.Unauthenticated);

      const third = await login(server.url, "carol", "carol's long password");
      await identity(third.accessToken).logout({ refreshToken: third.refreshToken });
      expect((await rpcError(identity().refresh({ refreshToken: third.refreshToken }))).code).to.equal(Code.Unauthenticated);

      // Access tokens live 15 minutes (default): move the clock past that.
      const fourth = await login(server.url, "carol", "carol's long password");
      clock.advance(16 * 60 * 1000);
      const expired = await rpcError(identity(fourth.accessToken).getMe({}));
      expect(expired.code).to.equal(Code.Unauthenticated);
      expect(expired.rawMessage).to.contain("expired");
      // ...while the refresh token still works and yields a fresh access token.
      const { tokens: renewed } = await identity().refresh({ refreshToken: fourth.refreshToken });
      expect((await identity(renewed!.accessToken).getMe({})).user!.username).to.equal("carol");
    });

    it("leaves a refresh token valid when its replacement cannot be stored, so a retry is not taken for a leak", async () => {
      await identity().register({ username: "rita", password: "rita's long password", displayName: "Rita", email: "rita@example.com" });
      const first = await login(server.url, "rita", "rita's long password");
      // PostgreSQL refuses the next refresh token stored, as a failing disk or a lost connection would.
      const db = new pg.Client({ connectionString: server.databaseUrl });
      await db.connect();
      try {
        await db.query(`CREATE FUNCTION identity.refuse_token() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`);
        await db.query(`CREATE TRIGGER refuse_token BEFORE INSERT ON identity.refresh_tokens FOR EACH ROW EXECUTE FUNCTION identity.refuse_token()`);
        const failed = await rpcError(identity().refresh({ refreshToken: first.refreshToken }));
        expect(failed.code).to.equal(Code.Internal);
      } finally {
        await db.query(`DROP TRIGGER IF EXISTS refuse_token ON identity.refresh_tokens`);
        await db.query(`DROP FUNCTION IF EXISTS identity.refuse_token()`);
        await db.end();
      }
      const { tokens: second } = await identity().refresh({ refreshToken: first.refreshToken });
      expect((await identity(second!.accessToken).getMe({})).user!.username).to.equal("rita");
      // The retry spent it: a third use is a replay, as always.
      expect((await rpcError(identity().refresh({ refreshToken: first.refreshToken }))).code).to.equal(Code.Unauthenticated);
    });

    it("answers an unknown user, a wrong password and a disabled user alike, and throttles guessing", async () => {
      await identity().register({ username: "dave", password: "dave's long password", displayName: "Dave", email: "dave@example.com" });
      const unknown = await rpcError(identity().login({ username: "nobody-here", password: "whatever password" }));
      const wrong = await rpcError(identity().login({ username: "dave", password: "not dave's password" }));
      expect([unknown.code, unknown.rawMessage]).to.deep.equal([wrong.code, wrong.rawMessage]);
      expect(wrong.code).to.equal(Code.Unauthenticated);
      await rpcError(identity().login({ username: "DAVE", password: "still wrong" }));
      await rpcError(identity().login({ username: "dave", password: "wrong again" }));
      // Three failures reached the per-user limit: even the right password waits now.
      const throttled = await rpcError(identity().login({ username: "dave", password: "dave's long password" }));
      expect(throttled.code).to.equal(Code.ResourceExhausted);
      expect(Number(throttled.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds)).to.be.greaterThan(0);
      clock.advance(16 * 60 * 1000);
      expect((await login(server.url, "dave", "dave's long password")).accessToken).to.be.a("string");
    });
  });

  describe("throttling per client address", () => {
    it("stops a client that fails with many different usernames", async () => {
      const strict = await startTestServer({ LOGIN_MAX_FAILURES_PER_ADDRESS: "3" }, undefined, undefined, clock);
      try {
        const anon = client(IdentityService, strict.url);
        for (const name of ["u1", "u2", "u3"]) {
          expect((await rpcError(anon.login({ username: name, password: "guess guess guess" }))).code).to.equal(Code.Unauthenticated);
        }
        const blocked = await rpcError(anon.login({ username: ADMIN.username, password: ADMIN.password }));
        expect(blocked.code).to.equal(Code.ResourceExhausted);
        expect(blocked.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("LOGIN_THROTTLED");
      } finally {
        await strict.shutdown();
      }
    });
  });

  describe("bad tokens", () => {
    let good: string;
    let jwks: JSONWebKeySet;
    before(async () => {
      good = (await login(server.url, ADMIN.username, ADMIN.password)).accessToken;
      jwks = (await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
    });

    it("serves the public key set with the kid the tokens name", () => {
      expect(jwks.keys).to.have.length(1);
      expect(jwks.keys[0]).to.include({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig" });
      expect(jwks.keys[0]).to.not.have.property("d");
      expect(decodeProtectedHeader(good).kid).to.equal(jwks.keys[0]!.kid);
    });

    async function forged(claims: Record<string, unknown>, header: Record<string, unknown>, key?: Parameters<SignJWT["sign"]>[0]) {
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      const now = Math.floor(clock.now().getTime() / 1000);
      return new SignJWT({ role: "admin", name: "mallory", ...claims })
        .setProtectedHeader({ alg: "ES256", kid: jwks.keys[0]!.kid, ...header } as never)
        .setIssuer((claims.iss as string) ?? "agora-identity")
        .setAudience((claims.aud as string) ?? "agora")
        .setSubject("00000000-0000-4000-8000-000000000099")
        .setIssuedAt(now)
        .setExpirationTime(now + 600)
        .sign(key ?? privateKey);
    }

    const unsigned = () => {
      const [h, p] = [{ alg: "none", typ: "JWT" }, { sub: "x", role: "admin", name: "m", iss: "agora-identity", aud: "agora", exp: 9999999999, iat: 1 }].map((o) =>
        Buffer.from(JSON.stringify(o)).toString("base64url"),
      );
      return `${h}.${p}.`;
    };

    const cases: [string, () => Promise<string | undefined>][] = [
      ["no token", async () => undefined],
      ["a malformed token", async () => "not.a.jwt!"],
      ["a token signed by another key", () => forged({}, {})],
      ["alg none", async () => unsigned()],
      ["HS256 keyed with the public key", () => forged({}, { alg: "HS256" }, new TextEncoder().encode(JSON.stringify(jwks.keys[0])))],
      ["a wrong issuer", async () => forged({ iss: "someone-else" }, {})],
      ["a wrong audience", async () => forged({ aud: "other-app" }, {})],
      ["an unknown kid", async () => forged({}, { kid: "unknown-kid" })],
      ["a token with its signature stripped", async () => good.split(".").slice(0, 2).join(".") + "."],
    ];
    for (const [name, make] of cases) {
      it(`refuses ${name} with UNAUTHENTICATED over gRPC, gRPC-Web and Connect`, async () => {
        const token = await make();
        for (const protocol of PROTOCOLS) {
          const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
          const err = await rpcError(client(InventoryService, server.url, protocol).listProducts({}, { headers }));
          expect(err.code, protocol).to.equal(Code.Unauthenticated);
          expect(err.rawMessage, protocol).to.equal("missing or invalid access token");
        }
      });
    }

    it("needs no token for health and reflection", async () => {
      expect((await client(Health, server.url).check({ service: "" })).status).to.be.a("number");
    });
  });

  describe("authorization", () => {
    let adminToken: string;
    beforeEach(async () => {
      // Earlier tests moved the clock past the start-up token's expiry.
      adminToken = (await login(server.url, ADMIN.username, ADMIN.password)).accessToken;
    });

    it("lets a signed-in user read inventory but only an admin change it", async () => {
      const userToken = await signUp(server.url, "erin");
      const asUser = client(InventoryService, server.url, "connect", userToken);
      expect((await asUser.listProducts({})).products).to.be.an("array");
      const id = "00000000-0000-4000-8000-000000000001";
      for (const call of [
        () => asUser.createProduct(newProduct),
        () => asUser.adjustStock({ productId: id, delta: 1, reason: "x", requestId: "x" }),
        () => asUser.updateProduct({ id, product: { name: "x" }, updateMask: { paths: ["name"] } }),
        () => asUser.deleteProduct({ id }),
      ]) {
        expect((await rpcError(call())).code).to.equal(Code.PermissionDenied);
      }
      const asAdmin = client(InventoryService, server.url, "connect", adminToken);
      expect((await asAdmin.createProduct(newProduct)).product!.name).to.equal("Guarded");
    });

    it("keeps admin methods for admins, promotes and disables users, and never drops the last admin", async () => {
      const userToken = await signUp(server.url, "frank");
      expect((await rpcError(identity(userToken).listUsers({}))).code).to.equal(Code.PermissionDenied);
      const admin = identity(adminToken);
      const all = [];
      let pageToken = "";
      do {
        const page = await admin.listUsers({ pageSize: 2, pageToken });
        all.push(...page.users);
        pageToken = page.nextPageToken;
      } while (pageToken);
      const names = all.map((u) => u.username.toLowerCase());
      expect(names).to.include.members(["admin", "frank"]);
      expect(names).to.deep.equal([...names].sort());

      const frank = all.find((u) => u.username === "frank")!;
      const { user: promoted } = await admin.setUserRole({ userId: frank.id, role: Role.ADMIN });
      expect(promoted!.role).to.equal(Role.ADMIN);
      await admin.setUserRole({ userId: frank.id, role: Role.USER });

      const adminUser = all.find((u) => u.username === "admin")!;
      const last = await rpcError(admin.setUserRole({ userId: adminUser.id, role: Role.USER }));
      expect(last.code).to.equal(Code.FailedPrecondition);
      expect(last.findDetails(ErrorInfoSchema)[0]?.reason).to.equal("LAST_ADMIN");

      const session = await login(server.url, "frank", "password-of-frank");
      const { user: disabled } = await admin.disableUser({ userId: frank.id });
      expect(disabled!.disabled).to.equal(true);
      expect((await rpcError(login(server.url, "frank", "password-of-frank"))).code).to.equal(Code.Unauthenticated);
      expect((await rpcError(identity().refresh({ refreshToken: session.refreshToken }))).code).to.equal(Code.Unauthenticated);
    });
  });
});
