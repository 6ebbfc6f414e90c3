import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { errors as joseErrors, exportJWK, generateKeyPair, SignJWT } from "jose";
import { assertOwner, createTokenVerifier, type Caller } from "../../src/platform/auth.js";
import { ManualClock } from "../../src/platform/clock.js";

const alice: Caller = { userId: "u-alice", username: "alice", role: "user" };
const admin: Caller = { userId: "u-admin", username: "root", role: "admin" };
const doc = { type: "file", id: "f-1" };

function codeOf(fn: () => void): Code | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("the private-object rule (assertOwner)", () => {
  it("lets the owner through", () => {
    expect(codeOf(() => assertOwner(alice, "u-alice", doc))).to.equal(undefined);
  });

  it("answers NOT_FOUND to anyone else, so the id is not confirmed", () => {
    expect(codeOf(() => assertOwner(alice, "u-bob", doc))).to.equal(Code.NotFound);
  });

  it("lets an admin through only where the service allows it", () => {
    expect(codeOf(() => assertOwner(admin, "u-bob", doc))).to.equal(undefined);
    expect(codeOf(() => assertOwner(admin, "u-bob", doc, { adminMay: false }))).to.equal(Code.NotFound);
  });
});

describe("access token verification", () => {
  const settings = { issuer: "agora-identity", audience: "agora" };
  let sign: (claims: { sub: string; name: string; role: string }, ttl: string) => Promise<string>;
  let keys: { keys: object[] };

  before(async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    keys = { keys: [{ ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256" }] };
    sign = ({ sub, name, role }, ttl) =>
      new SignJWT({ name, role }).setProtectedHeader({ alg: "ES256", kid: "k1" }).setSubject(sub).setIssuer(settings.issuer)
        .setAudience(settings.audience).setIssuedAt().setExpirationTime(ttl).sign(privateKey);
  });

  async function failure(call: Promise<unknown>): Promise<unknown> {
    try {
      await call;
    } catch (err) {
      return err;
    }
    throw new Error("expected the verification to fail");
  }

  it("answers a repeated token with the same caller, and still refuses it once it expires", async () => {
    const clock = new ManualClock();
    const verify = createTokenVerifier(keys as never, settings, clock);
    const token = await sign({ sub: "u-alice", name: "alice", role: "user" }, "30s");
    expect(await verify(token)).to.deep.equal({ userId: "u-alice", username: "alice", role: "user" });
    expect(await verify(token)).to.deep.equal({ userId: "u-alice", username: "alice", role: "user" });
    clock.advance(36_000); // past exp and the 5 s tolerance, well within the cache entry's own minute
    expect(await failure(verify(token))).to.be.instanceOf(joseErrors.JWTExpired);
  });

  it("refuses a token whose signature or claims were changed after the genuine one was accepted", async () => {
    const verify = createTokenVerifier(keys as never, settings, new ManualClock());
    const token = await sign({ sub: "u-alice", name: "alice", role: "user" }, "15m");
    await verify(token);
    const [header, payload, signature] = token.split(".");
    const otherSignature = `${signature!.slice(0, -2)}${signature!.endsWith("AA") ? "BB" : "AA"}`;
    expect(await failure(verify(`${header}.${payload}.${otherSignature}`))).to.be.instanceOf(joseErrors.JOSEError);
    const admin = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, "base64url").toString()), role: "admin" })).toString("base64url");
    expect(await failure(verify(`${header}.${admin}.${signature}`))).to.be.instanceOf(joseErrors.JOSEError);
  });
});
