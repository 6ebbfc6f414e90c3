// Health + reflection against a real HTTP/2 cleartext server, through a real gRPC client.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { expect } from "chai";
import { InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { Health, HealthCheckResponse_ServingStatus as S } from "../../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { HealthRegistry, registerHealth, watchDatabase } from "../../src/platform/health.js";
import { registerReflection } from "../../src/platform/reflection.js";

const INVENTORY = "agora.inventory.v1.InventoryService";
const INVENTORY_FILE = "agora/inventory/v1/inventory.proto";

interface TestServer {
  port: number;
  health: Client<typeof Health>;
  transport: ReturnType<typeof createGrpcTransport>;
  stop(): Promise<void>;
}

async function startServer(registry: HealthRegistry): Promise<TestServer> {
  const routes = (router: ConnectRouter) => {
    router.service(InventoryService, {}); // unimplemented methods are fine for discovery
    registerHealth(router, registry);
    registerReflection(router, [InventoryService, Health]);
  };
  const server = http2.createServer(connectNodeAdapter({ routes }));
  // The client transport keeps its HTTP/2 session open; server.close() would wait for it forever.
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }) // gRPC transport is always HTTP/2;
  return {
    port,
    transport,
    health: createClient(Health, transport),
    stop: async () => {
      registry.close(); // otherwise open Watch streams keep server.close() waiting
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sessions) s.close();
      await closed;
    },
  };
}

/** Polls `cond` until true; fails after `ms` (a deadline, not a timing assertion). */
async function waitFor(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("platform/health (gRPC over h2c)", function () {
  let registry: HealthRegistry;
  let srv: TestServer;

  beforeEach(async () => {
    registry = new HealthRegistry([INVENTORY]);
    srv = await startServer(registry);
  });
  afterEach(() => srv.stop());

  it("Check reports the status as set, NOT_FOUND for unknown names", async () => {
    expect((await srv.health.check({ service: "" })).status).to.equal(S.SERVING);
    expect((await srv.health.check({ service: INVENTORY })).status).to.equal(S.SERVING);
    registry.setStatus(INVENTORY, S.NOT_SERVING);
    expect((await srv.health.check({ service: INVENTORY })).status).to.equal(S.NOT_SERVING);
    expect((await srv.health.check({})).status).to.equal(S.SERVING);

    const err = await srv.health.check({ service: "no.such.Service" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(ConnectError.from(err).code).to.equal(Code.NotFound);
  });

  it("Watch sends the current status, then changes; cancel removes the listener", async () => {
    const ac = new AbortController();
    const stream = srv.health.watch({ service: INVENTORY }, { signal: ac.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.status).to.equal(S.SERVING);
    registry.setStatus(INVENTORY, S.SERVING); // no change -> nothing sent
    registry.setStatus(INVENTORY, S.NOT_SERVING);
    expect((await stream.next()).value?.status).to.equal(S.NOT_SERVING);
    expect(registry.watcherCount).to.equal(1);

    ac.abort();
    await stream.next().catch(() => undefined); // the client surfaces the cancellation
    await waitFor(() => registry.watcherCount === 0, "server-side Watch cleanup after cancel");
  });

  it("Watch on an unknown name sends SERVICE_UNKNOWN and keeps the stream open", async () => {
    const ac = new AbortController();
    const stream = srv.health.watch({ service: "later.Service" }, { signal: ac.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.status).to.equal(S.SERVICE_UNKNOWN);
    registry.setStatus("later.Service", S.SERVING);
    expect((await stream.next()).value?.status).to.equal(S.SERVING);
    ac.abort();
    await stream.next().catch(() => undefined);
  });

  it("close() ends open Watch streams after they saw NOT_SERVING; draining pins NOT_SERVING", async () => {
    const seen: S[][] = [[], []];
    const watches = ["", INVENTORY].map(async (service, i) => {
      for await (const res of srv.health.watch({ service })) seen[i]!.push(res.status);
    });
    await waitFor(() => seen.every((s) => s.length === 1), "initial status on both watches");

    registry.markDraining();
    registry.setStatus(INVENTORY, S.SERVING); // pinned: stays NOT_SERVING
    registry.close();
    await Promise.all(watches); // both streams end with OK
    expect(seen).to.deep.equal([
      [S.SERVING, S.NOT_SERVING],
      [S.SERVING, S.NOT_SERVING],
    ]);
    expect(registry.watcherCount).to.equal(0);
    expect((await srv.health.check({ service: INVENTORY })).status).to.equal(S.NOT_SERVING);
  });
});

describe("platform/health watchDatabase", function () {
  it("flips to NOT_SERVING when ping rejects, back when it resolves, and stays down once draining", async () => {
    const registry = new HealthRegistry([INVENTORY]);
    let healthy = true;
    let pings = 0;
    const watcher = watchDatabase(
      registry,
      [INVENTORY],
      async () => {
        pings++;
        if (!healthy) throw new Error("db down");
      },
      20,
    );
    try {
      await waitFor(() => pings >= 1, "first ping");
      healthy = false;
      await waitFor(() => registry.get("") === S.NOT_SERVING, "NOT_SERVING on failure");
      expect(registry.get(INVENTORY)).to.equal(S.NOT_SERVING);

      healthy = true;
      await waitFor(() => registry.get("") === S.SERVING, "SERVING on recovery");
      expect(registry.get(INVENTORY)).to.equal(S.SERVING);

      registry.markDraining();
      const after = pings;
      await waitFor(() => pings >= after + 3, "more successful pings while draining");
      expect(registry.get("")).to.equal(S.NOT_SERVING);
      expect(registry.get(INVENTORY)).to.equal(S.NOT_SERVING);
    } finally {
      watcher.stop();
    }
  });

  it("treats a hung ping as a failure (timeout)", async () => {
    const registry = new HealthRegistry();
    const watcher = watchDatabase(registry, [], () => new Promise<void>(() => {}), 10, 30);
    try {
      await waitFor(() => registry.get("") === S.NOT_SERVING, "NOT_SERVING after ping timeout");
    } finally {
      watcher.stop();
    }
  });
});

// v1alpha is wire-identical to v1, so one client type serves both in the test (only fields are read).
const reflectionVersions = [
  ["v1", v1.ServerReflection],
  ["v1alpha", v1alpha.ServerReflection as unknown as typeof v1.ServerReflection],
] as const;

type ReflectionRequest = Parameters<Client<typeof v1.ServerReflection>["serverReflectionInfo"]>[0] extends AsyncIterable<
  infer R
>
  ? R
  : never;

/** One bidi reflection stream driven request-by-request. */
function openReflection(client: Client<typeof v1.ServerReflection>) {
  const queue: ReflectionRequest[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  async function* requests(): AsyncGenerator<ReflectionRequest> {
    for (;;) {
      while (queue.length) yield queue.shift()!;
      if (ended) return;
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  }
  const responses = client.serverReflectionInfo(requests())[Symbol.asyncIterator]();
  return {
    async ask(req: ReflectionRequest): Promise<v1.ServerReflectionResponse> {
      queue.push(req);
      wake?.();
      const res = await responses.next();
      if (res.done) throw new Error("reflection stream ended early");
      return res.value;
    },
    async end(): Promise<void> {
      ended = true;
      wake?.();
      expect((await responses.next()).done).to.equal(true);
    },
  };
}

function files(res: v1.ServerReflectionResponse): FileDescriptorProto[] {
  if (res.messageResponse.case !== "fileDescriptorResponse") {
    throw new Error(`expected file_descriptor_response, got ${res.messageResponse.case}`);
  }
  return res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
}

for (const [version, service] of reflectionVersions) {
  describe(`platform/reflection ${version} (gRPC over h2c)`, function () {
    let srv: TestServer;
    let client: Client<typeof v1.ServerReflection>;
    before(async () => {
      srv = await startServer(new HealthRegistry([INVENTORY]));
      client = createClient(service, srv.transport);
    });
    after(() => srv.stop());

    it("list_services echoes host and request and lists the registered services", async () => {
      const s = openReflection(client);
      const res = await s.ask({ host: "example:1", messageRequest: { case: "listServices", value: "*" } });
      expect(res.validHost).to.equal("example:1");
      expect(res.originalRequest?.messageRequest).to.deep.include({ case: "listServices", value: "*" });
      expect(res.messageResponse.case).to.equal("listServicesResponse");
      const names = res.messageResponse.case === "listServicesResponse" ? res.messageResponse.value.service : [];
      expect(names.map((n) => n.name)).to.have.members([
        INVENTORY,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]);
      await s.end();
    });

    it("file_containing_symbol returns the file plus its transitive deps, without resending on the same stream", async () => {
      const s = openReflection(client);
      const first = files(await s.ask({ messageRequest: { case: "fileContainingSymbol", value: INVENTORY } }));
      const names = first.map((f) => f.name);
      expect(names[0]).to.equal(INVENTORY_FILE);
      expect(names).to.include.members([
        "google/type/money.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/field_mask.proto",
        "buf/validate/validate.proto",
        "google/protobuf/descriptor.proto", // validate.proto's own dependency
      ]);
      expect(new Set(names).size).to.equal(names.length);
      for (const f of first) expect(names).to.include.members(f.dependency); // closed under dependencies
      expect(first[0]!.service.map((x) => x.name)).to.include("InventoryService");

      // Same stream: only the requested file comes back, its deps were already sent.
      const again = files(await s.ask({ messageRequest: { case: "fileContainingSymbol", value: "agora.inventory.v1.Product" } }));
      expect(again.map((f) => f.name)).to.deep.equal([INVENTORY_FILE]);

      // Unknown symbol: error_response NOT_FOUND in-stream; the stream stays usable.
      const missing = await s.ask({ messageRequest: { case: "fileContainingSymbol", value: "agora.nope.Missing" } });
      expect(missing.messageResponse.case).to.equal("errorResponse");
      expect(missing.messageResponse.value).to.deep.include({ errorCode: 5 });

      const ts = files(await s.ask({ messageRequest: { case: "fileByFilename", value: "google/protobuf/timestamp.proto" } }));
      expect(ts.map((f) => f.name)).to.deep.equal(["google/protobuf/timestamp.proto"]);
      await s.end();
    });

    it("resolves messages, methods, enums and nested types on a fresh stream", async () => {
      const s = openReflection(client);
      const product = files(await s.ask({ messageRequest: { case: "fileContainingSymbol", value: "agora.inventory.v1.Product" } }));
      expect(product[0]!.name).to.equal(INVENTORY_FILE);
      expect(product[0]!.messageType.map((m) => m.name)).to.include("Product");
      expect(product.map((f) => f.name)).to.include.members(["google/type/money.proto", "buf/validate/validate.proto"]);

      for (const symbol of [
        `${INVENTORY}.GetProduct`,
        "agora.inventory.v1.Category",
        "google.protobuf.FieldDescriptorProto.Type", // nested enum in a WKT dependency
        "google.protobuf.DescriptorProto.ExtensionRange", // nested message
        "buf.validate.field", // extension
      ]) {
        const res = await s.ask({ messageRequest: { case: "fileContainingSymbol", value: symbol } });
        expect(res.messageResponse.case, symbol).to.equal("fileDescriptorResponse");
      }
      const missingFile = await s.ask({ messageRequest: { case: "fileByFilename", value: "nope.proto" } });
      expect(missingFile.messageResponse.value).to.deep.include({ errorCode: 5 });
      await s.end();
    });

    it("answers extension queries", async () => {
      const s = openReflection(client);
      const ext = files(
        await s.ask({
          messageRequest: {
            case: "fileContainingExtension",
            value: { containingType: "google.protobuf.FieldOptions", extensionNumber: 1159 },
          },
        }),
      );
      expect(ext[0]!.name).to.equal("buf/validate/validate.proto");

      const nums = await s.ask({ messageRequest: { case: "allExtensionNumbersOfType", value: "google.protobuf.FieldOptions" } });
      expect(nums.messageResponse.case).to.equal("allExtensionNumbersResponse");
      expect(nums.messageResponse.value).to.deep.include({ baseTypeName: "google.protobuf.FieldOptions" });
      if (nums.messageResponse.case === "allExtensionNumbersResponse") {
        expect(nums.messageResponse.value.extensionNumber).to.include(1159);
      }
      const unknownExt = await s.ask({
        messageRequest: {
          case: "fileContainingExtension",
          value: { containingType: "google.protobuf.FieldOptions", extensionNumber: 42 },
        },
      });
      expect(unknownExt.messageResponse.value).to.deep.include({ errorCode: 5 });
      await s.end();
    });
  });
}

describe("platform/reflection with grpcurl", function () {
  this.timeout(20_000);
  const candidates = [process.env.GRPCURL, fileURLToPath(new URL("../../.tools/bin/grpcurl", import.meta.url))];

  it("grpcurl list / describe work against the server", async function () {
    let bin = candidates.find((c): c is string => !!c && existsSync(c));
    if (!bin) bin = await promisify(execFile)("which", ["grpcurl"]).then((r) => r.stdout.trim(), () => undefined);
    if (!bin) this.skip();

    const srv = await startServer(new HealthRegistry([INVENTORY]));
    try {
      // Async execFile: the server runs in this process, a sync call would deadlock it.
      const run = async (...args: string[]) =>
        (await promisify(execFile)(bin, ["-plaintext", ...args], { timeout: 15_000 })).stdout;
      const list = await run(`127.0.0.1:${srv.port}`, "list");
      expect(list).to.include(INVENTORY).and.include("grpc.health.v1.Health");
      const desc = await run(`127.0.0.1:${srv.port}`, "describe", "agora.inventory.v1.Product");
      expect(desc).to.include("agora.inventory.v1.Product is a message");
      expect(desc).to.include(".google.protobuf.Timestamp");
      const health = await run(`127.0.0.1:${srv.port}`, "grpc.health.v1.Health/Check");
      expect(health).to.include("SERVING");
    } finally {
      await srv.stop();
    }
  });
});
