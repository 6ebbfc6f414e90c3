import { ConnectError, Code } from "@connectrpc/connect";
import { expect } from "chai";
import { decodePageToken, encodePageToken, fingerprint, pageSize } from "../../src/platform/paging.js";

const isPair = (p: unknown): p is [string, string] => Array.isArray(p) && p.length === 2;

describe("page tokens", () => {
  it("round-trip a position for the same filters", () => {
    const f = fingerprint("list", 1, true);
    expect(decodePageToken(encodePageToken(["a", "b"], f), f, isPair)).to.deep.equal(["a", "b"]);
    expect(decodePageToken("", f, isPair)).to.equal(undefined);
  });

  it("refuse tokens from other filters, forged shapes and garbage with INVALID_ARGUMENT on page_token", () => {
    const token = encodePageToken(["a", "b"], fingerprint("list", 1));
    for (const [t, f] of [
      [token, fingerprint("list", 2)],
      [encodePageToken(42, fingerprint("x")), fingerprint("x")],
      ["%%%", fingerprint("x")],
    ] as const) {
      const err = (() => {
        try {
          decodePageToken(t, f, isPair);
        } catch (e) {
          return e;
        }
      })();
      expect(err).to.be.instanceOf(ConnectError);
      expect((err as ConnectError).code).to.equal(Code.InvalidArgument);
    }
  });

  it("defaults an unset page size to 50", () => {
    expect(pageSize(0)).to.equal(50);
    expect(pageSize(7)).to.equal(7);
  });
});
