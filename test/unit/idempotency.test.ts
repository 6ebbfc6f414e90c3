import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { expect } from "chai";
import { CreateReservationRequestSchema } from "../../gen/agora/reservation/v1/reservation_pb.js";
import { requestFingerprint } from "../../src/platform/idempotency.js";

describe("requestFingerprint (what a repeated request_id must match)", () => {
  const request = () =>
    create(CreateReservationRequestSchema, {
      resourceId: "0b9e8d52-3c1f-4f7a-9d7e-2f7c3a1b5e60",
      startTime: timestampFromMs(Date.UTC(2027, 0, 4, 9)),
      endTime: timestampFromMs(Date.UTC(2027, 0, 4, 10)),
      partySize: 4,
      notes: "window seat, ünïcödé",
      requestId: "r-1",
    });

  it("is the SHA-256 of the request without its request_id, as stored rows have it, and leaves the request as it was", () => {
    const req = request();
    // Fingerprints are stored: a retry after an upgrade must still match the first request's.
    expect(requestFingerprint(CreateReservationRequestSchema, req)).to.equal("5b87f7d22bc81df5d0760b17266e598858ae46f5bec23f37541bf3f1aab780af");
    expect(req).to.deep.equal(request());
    expect(requestFingerprint(CreateReservationRequestSchema, { ...req, requestId: "r-2" })).to.equal(requestFingerprint(CreateReservationRequestSchema, req));
    expect(requestFingerprint(CreateReservationRequestSchema, { ...req, partySize: 5 })).to.not.equal(requestFingerprint(CreateReservationRequestSchema, req));
    expect(requestFingerprint(CreateReservationRequestSchema, { ...req, requestId: "" })).to.equal("");
  });
});
