import { Code, ConnectError } from "@connectrpc/connect";
import { expect } from "chai";
import { assertOwner, type Caller } from "../../src/platform/auth.js";

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
