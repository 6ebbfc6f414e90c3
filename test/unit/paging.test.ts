import { randomBytes } from "node:crypto";
import { ConnectError, Code } from "@connectrpc/connect";
import { expect } from "chai";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import { fingerprint, isNumericKeyset, pageSize, PageTokens } from "../../src/platform/paging.js";

const isPair = (p: unknown): p is [string, string] => Array.isArray(p) && p.length === 2;

function refusal(run: () => unknown): ConnectError {
  try {
    run();
  } catch (e) {
    expect(e).to.be.instanceOf(ConnectError);
    return e as ConnectError;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("page tokens", () => {
  const tokens = new PageTokens(randomBytes(32));

  it("round-trip a position for the same filters", () => {
    const f = fingerprint("list", 1, true);
    expect(tokens.decode(tokens.encode(["a", "b"], f), f, isPair)).to.deep.equal(["a", "b"]);
    expect(tokens.decode("", f, isPair)).to.equal(undefined);
  });

  it("refuse tokens from other filters, forged or tampered tokens, other keys and garbage with INVALID_ARGUMENT on page_token", () => {
    const f = fingerprint("search", "q", 0);
    const token = tokens.encode(["a", "b"], f);
    const [body, mac] = token.split(".");
    // What the issue built by hand: the position and the (computable) fingerprint, without a key.
    const handMade = Buffer.from(JSON.stringify({ p: 1e300, f })).toString("base64url");
    const cases: [string, string][] = [
      [token, fingerprint("search", "other", 0)],
      [handMade, f],
      [`${handMade}.${mac}`, f],
      [`${Buffer.from(JSON.stringify({ p: ["a", "c"], f })).toString("base64url")}.${mac}`, f],
      [new PageTokens(randomBytes(32)).encode(["a", "b"], f), f],
      [`${body}.${mac}.x`, f],
      ["%%%", f],
    ];
    for (const [t, filters] of cases) {
      const err = refusal(() => tokens.decode(t, filters, isNumericKeyset));
      expect(err.code).to.equal(Code.InvalidArgument);
      expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]).to.include({ field: "page_token", reason: "INVALID_PAGE_TOKEN" });
    }
    // A valid token of the right listing whose position has the wrong shape is ours but still refused.
    expect(refusal(() => tokens.decode(tokens.encode(42, f), f, isPair)).code).to.equal(Code.InvalidArgument);
  });

  it("defaults an unset page size to 50", () => {
    expect(pageSize(0)).to.equal(50);
    expect(pageSize(7)).to.equal(7);
  });
});
