// The file service and compression: it never compresses what it sends (file content rarely
// compresses, and gzipping every chunk cost six times the throughput), but it reads gzip and
// brotli requests, so a client whose channel compresses everything can still use it, and an
// encoding it does not know is refused with UNIMPLEMENTED naming the ones it takes.
import { createHash, randomBytes } from "node:crypto";
import { Code, createClient } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";
import { compressionGzip, createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { expect } from "chai";
import { FileService } from "../../gen/agora/files/v1/files_pb.js";
import { bearer, PROTOCOLS, rpcError, signUp, startTestServer, type ProtocolName, type TestServer } from "../support/harness.js";

/** Stands for an encoding the server does not implement: the bytes go as they are. */
const snappy: Compression = { name: "snappy", compress: async (b) => b.slice(), decompress: async (b) => b.slice() };

describe("files service: compression", () => {
  let server: TestServer;
  let token: string;

  before(async () => {
    server = await startTestServer({ SERVICES: "identity,files" });
    token = await signUp(server.url, "squeezer");
  });
  after(async () => {
    await server?.shutdown();
  });

  /**
   * A client that compresses every request with `compression` and accepts gzip answers, counting
   * the messages it had to decompress (the gRPC protocols flag compression per message).
   */
  function compressingClient(protocol: ProtocolName, compression: Compression, decompressed = { count: 0 }) {
    const countingGzip: Compression = {
      name: compressionGzip.name,
      compress: (bytes) => compressionGzip.compress(bytes),
      decompress: (bytes, max) => {
        decompressed.count++;
        return compressionGzip.decompress(bytes, max);
      },
    };
    const options = {
      baseUrl: server.url,
      interceptors: [bearer(token)],
      sendCompression: compression,
      compressMinBytes: 0,
      acceptCompression: [countingGzip],
    };
    const transport =
      protocol === "grpc"
        ? createGrpcTransport(options)
        : protocol === "grpcweb"
          ? createGrpcWebTransport({ ...options, httpVersion: "1.1" })
          : createConnectTransport({ ...options, httpVersion: "1.1" });
    return createClient(FileService, transport);
  }

  for (const protocol of PROTOCOLS) {
    it(`reads gzip requests and answers uncompressed (${protocol})`, async () => {
      const decompressed = { count: 0 };
      const files = compressingClient(protocol, compressionGzip, decompressed);
      const data = Buffer.concat([Buffer.alloc(64 * 1024, "a"), randomBytes(1024)]);
      const { uploadId } = await files.beginUpload({ metadata: { target: { case: "path", value: `zip/${protocol}.bin` } } });
      await files.appendChunk({ uploadId, offset: 0n, data });
      const { version } = await files.commitUpload({ uploadId });
      expect(version!.sha256).to.equal(createHash("sha256").update(data).digest("hex"));
      expect(version!.size).to.equal(BigInt(data.length));
      const downloaded: Uint8Array[] = [];
      for await (const res of files.download({ fileId: version!.fileId })) if (res.part.case === "chunk") downloaded.push(res.part.value);
      expect(Buffer.concat(downloaded).equals(data)).to.equal(true);
      expect(decompressed.count, "messages the server compressed").to.equal(0);
    });

    it(`refuses an encoding it does not know with UNIMPLEMENTED naming gzip and br (${protocol})`, async () => {
      const files = compressingClient(protocol, snappy);
      const err = await rpcError(files.beginUpload({ metadata: { target: { case: "path", value: `zip/${protocol}-snappy.bin` } } }));
      expect(err.code).to.equal(Code.Unimplemented);
      expect(err.rawMessage).to.contain("gzip").and.contain("br");
      const { files: listed } = await compressingClient(protocol, compressionGzip).listFiles({ prefix: "zip/" });
      expect(listed.map((f) => f.path), "nothing stored").to.not.include(`zip/${protocol}-snappy.bin`);
    });
  }
});
