import { randomBytes } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { expect } from "chai";
import { AppendChunkRequestSchema, DownloadResponseSchema, FileVersionSchema } from "../../gen/agora/files/v1/files_pb.js";
import { bulkEncoder } from "../../src/platform/grpc-js-adapter.js";

describe("bulkEncoder (large bytes fields into one reused buffer)", () => {
  it("encodes a large bytes field with the message's other fields, as protobuf-es decodes it", () => {
    const encode = bulkEncoder(AppendChunkRequestSchema)!;
    const message = create(AppendChunkRequestSchema, { uploadId: "4b1c4a52-6f3e-4a55-9d0e-0c7f5a9d6a11", offset: 123_456_789n, data: randomBytes(300_000) });
    const bytes = encode(message)!;
    expect(fromBinary(AppendChunkRequestSchema, bytes)).to.deep.equal(message);
    expect(bytes.length).to.equal(toBinary(AppendChunkRequestSchema, message).length);
  });

  it("encodes a chunk in a oneof, reuses its buffer for the next message, and leaves small and other messages to toBinary", () => {
    const encode = bulkEncoder(DownloadResponseSchema)!;
    const first = randomBytes(1024 * 1024);
    const a = encode(create(DownloadResponseSchema, { part: { case: "chunk", value: first } }))!;
    const decoded = fromBinary(DownloadResponseSchema, a);
    expect(decoded.part.case).to.equal("chunk");
    expect(Buffer.compare(decoded.part.value as Uint8Array, first)).to.equal(0);

    const second = randomBytes(100_000);
    const b = encode(create(DownloadResponseSchema, { part: { case: "chunk", value: second } }))!;
    expect(b.buffer).to.equal(a.buffer); // the same memory: valid only until the next message
    expect(Buffer.compare((fromBinary(DownloadResponseSchema, b).part.value as Uint8Array), second)).to.equal(0);

    expect(encode(create(DownloadResponseSchema, { part: { case: "chunk", value: randomBytes(1000) } }))).to.equal(undefined);
    expect(encode(create(DownloadResponseSchema, { part: { case: "version", value: create(FileVersionSchema, { version: 1n }) } }))).to.equal(undefined);
    expect(bulkEncoder(FileVersionSchema)).to.equal(undefined);
  });
});
