import { Code, ConnectError } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { expect } from "chai";
import { alreadyExists, invalidArgument, resourceExhausted } from "../../src/platform/errors.js";
import { errorTrailer } from "../../src/platform/grpc-js-adapter.js";

/** What Connect's gRPC protocol would send for the error, as grpc-js metadata would carry it (grpc-status and grpc-message apart). */
function asConnectWrites(responseTrailer: Headers, error: ConnectError): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  setTrailerStatus(new Headers(responseTrailer), error).forEach((value, key) => {
    if (key === "grpc-status" || key === "grpc-message") return;
    out[key] = key.endsWith("-bin") ? value.split(/,\s*/).map((v) => Buffer.from(v, "base64").toString("hex")) : [value];
  });
  return out;
}

function asAdapterWrites(responseTrailer: Headers, error: ConnectError): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [key, values] of Object.entries(errorTrailer(responseTrailer, error).toJSON())) {
    out[key] = key.endsWith("-bin") ? values.map((v) => Buffer.from(v as Uint8Array).toString("hex")) : [values.join(", ")];
  }
  return out;
}

/** An error as a client receives it and a handler passes on: its details are type names and bytes. */
function relayed(): ConnectError {
  const error = new ConnectError("relayed", Code.Internal);
  error.details.push({ type: "google.rpc.DebugInfo", value: new Uint8Array([10, 3, 97, 98, 99]) });
  return error;
}

describe("errorTrailer (an error's trailers on the grpc-js path)", () => {
  const errors: [string, ConnectError][] = [
    ["INVALID_ARGUMENT with BadRequest and ErrorInfo", invalidArgument([{ field: "party_size", description: "must be at most 10 (ünïcödé)", reason: "TOO_LARGE" }])],
    ["ALREADY_EXISTS with metadata in its details", alreadyExists("reservation", "the slot is taken", { start: "2027-01-04T09:00:00Z" })],
    ["RESOURCE_EXHAUSTED with RetryInfo", resourceExhausted("RATE_LIMITED", "slow down", 1500)],
    ["an error with metadata and no details", new ConnectError("plain", Code.Unavailable, { "retry-after": "1", "x-extra": "a" })],
    ["an error with a detail received from elsewhere", relayed()],
  ];
  for (const [name, error] of errors) {
    it(`writes what Connect's gRPC protocol writes for ${name}`, () => {
      const trailer = new Headers({ "x-handler-trailer": "kept" });
      const expected = asConnectWrites(trailer, error);
      expect(asAdapterWrites(trailer, error)).to.deep.equal(expected);
      if (error.details.length > 0) expect(expected).to.have.property("grpc-status-details-bin");
    });
  }
});
