// The server as clients outside this codebase see it: grpcurl, buf curl, plain curl,
// @grpc/grpc-js with proto-loader, raw HTTP/2 and HTTP/1.1 bytes, and Prometheus.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import http2 from "node:http2";
import path from "node:path";
import { enumToJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { expect } from "chai";
import {
  Category,
  CategorySchema,
  InventoryService,
  type Product,
} from "../../gen/agora/inventory/v1/inventory_pb.js";
import { client, eventually, PROTOCOLS, startTestServer, type TestServer } from "../support/harness.js";
import { REPO_ROOT } from "../support/processes.js";

const GRPCURL = path.join(REPO_ROOT, ".tools/bin/grpcurl");
const BUF = path.join(REPO_ROOT, "node_modules/.bin/buf");
const INVENTORY = "agora.inventory.v1.InventoryService";
const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";
const STACK_FRAME = /^\s+at /m;

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (killed, and a rejection, after `timeoutMs`). */
function runWithEnv(args: string[], env: NodeJS.ProcessEnv): Promise<RunResult> {
  return run(process.execPath, args, 30_000, env);
}

function run(cmd: string, args: string[], timeoutMs = 30_000, env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"], env });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${path.basename(cmd)} ${args.join(" ")} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Splits concatenated pretty-printed JSON objects (grpcurl's stream output) into values. */
function parseJsonStream(text: string): unknown[] {
  const out: unknown[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === "\\") escaped = true;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === "{") {
      if (depth++ === 0) start = i;
    } else if (ch === "}") {
      if (--depth === 0) out.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  return out;
}

function uniqueName(prefix: string): string {
  return `${prefix} ${randomUUID().slice(0, 8)}`;
}

/** A product in the proto3 JSON mapping, as grpcurl and buf curl take it. */
function productJson(name: string) {
  return {
    product: {
      name,
      description: "made by an external client",
      category: "CATEGORY_FOOD",
      quantity: 7,
      unitPrice: { currencyCode: "USD", units: "4", nanos: 990000000 },
      lowStockThreshold: 3,
    },
  };
}

function connectProductInit(name: string) {
  return {
    product: {
      name,
      description: "made by the Connect client",
      category: Category.ELECTRONICS,
      quantity: 12,
      unitPrice: { currencyCode: "EUR", units: 99n, nanos: 500_000_000 },
      lowStockThreshold: 4,
    },
  };
}

// ---- @grpc/grpc-js ------------------------------------------------------------

interface LoadedTimestamp {
  seconds: string;
  nanos: number;
}

/** A Product as proto-loader decodes it with { longs: String, enums: String, defaults: true }. */
interface LoadedProduct {
  id: string;
  name: string;
  description: string;
  category: string;
  quantity: number;
  unitPrice: { currencyCode: string; units: string; nanos: number } | null;
  lowStockThreshold: number;
  lowStock: boolean;
  etag: string;
  createTime: LoadedTimestamp | null;
  updateTime: LoadedTimestamp | null;
}

interface LoadedWatchResponse {
  kind: "event" | "heartbeat";
  event?: { cursor: string; type: string; product: LoadedProduct | null };
  heartbeat?: { time: LoadedTimestamp | null };
}

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;

interface GrpcJsInventory extends grpc.Client {
  GetProduct(req: { id: string }, md: grpc.Metadata, cb: Callback<{ product: LoadedProduct | null }>): grpc.ClientUnaryCall;
  ListProducts(
    req: { pageSize?: number; pageToken?: string },
    md: grpc.Metadata,
    cb: Callback<{ products: LoadedProduct[]; nextPageToken: string }>,
  ): grpc.ClientUnaryCall;
  WatchProducts(req: { afterCursor?: string }, md: grpc.Metadata): grpc.ClientReadableStream<LoadedWatchResponse>;
}

/** Call metadata carrying the access token. */
function bearerMetadata(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

function grpcJsInventory(port: number): GrpcJsInventory {
  const definition = protoLoader.loadSync("agora/inventory/v1/inventory.proto", {
    includeDirs: [path.join(REPO_ROOT, "proto"), path.join(REPO_ROOT, "third_party/proto")],
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    agora: { inventory: { v1: { InventoryService: new (address: string, creds: grpc.ChannelCredentials) => GrpcJsInventory } } };
  };
  return new loaded.agora.inventory.v1.InventoryService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function unary<Req, Res>(
  call: (req: Req, md: grpc.Metadata, cb: Callback<Res>) => unknown,
  req: Req,
  md: grpc.Metadata,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    call(req, md, (err, res) => (err ? reject(err) : resolve(res as Res)));
  });
}

/** Both clients' products in one shape, so they can be compared field by field. */
function fromConnect(p: Product) {
  return {
    id: p.id,
    name: p.name,
    description: p.description,
    category: enumToJson(CategorySchema, p.category),
    quantity: p.quantity,
    unitPrice: p.unitPrice
      ? { currencyCode: p.unitPrice.currencyCode, units: p.unitPrice.units.toString(), nanos: p.unitPrice.nanos }
      : null,
    lowStockThreshold: p.lowStockThreshold,
    lowStock: p.lowStock,
    etag: p.etag,
    createTime: p.createTime ? `${p.createTime.seconds}.${p.createTime.nanos}` : null,
    updateTime: p.updateTime ? `${p.updateTime.seconds}.${p.updateTime.nanos}` : null,
  };
}

function fromGrpcJs(p: LoadedProduct) {
  return {
    id: p.id,
    name: p.name,
    description: p.description,
    category: p.category,
    quantity: p.quantity,
    unitPrice: p.unitPrice ? { currencyCode: p.unitPrice.currencyCode, units: p.unitPrice.units, nanos: p.unitPrice.nanos } : null,
    lowStockThreshold: p.lowStockThreshold,
    lowStock: p.lowStock,
    etag: p.etag,
    createTime: p.createTime ? `${p.createTime.seconds}.${p.createTime.nanos}` : null,
    updateTime: p.updateTime ? `${p.updateTime.seconds}.${p.updateTime.nanos}` : null,
  };
}

// ---- raw bytes ------------------------------------------------------------------

/** One HTTP/2 (prior knowledge) POST; resolves with the response headers, trailers and body. */
function h2Post(
  baseUrl: string,
  pathname: string,
  headers: Record<string, string>,
  body: Uint8Array,
): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(baseUrl);
    session.once("error", reject);
    const req = session.request({ ":method": "POST", ":path": pathname, ...headers });
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.once("response", (h) => (responseHeaders = h));
    req.once("trailers", (t) => (trailers = t));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.once("error", (err) => {
      session.destroy();
      reject(err);
    });
    req.once("end", () => {
      session.close();
      resolve({ headers: responseHeaders, trailers, body: Buffer.concat(chunks) });
    });
    req.end(body);
  });
}

/** Connect protocol: the HTTP status that goes with each error code. */
const CONNECT_HTTP_STATUS: Record<string, number> = {
  canceled: 499,
  unknown: 500,
  invalid_argument: 400,
  deadline_exceeded: 504,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  resource_exhausted: 429,
  failed_precondition: 400,
  aborted: 409,
  out_of_range: 400,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  data_loss: 500,
  unauthenticated: 401,
};

// ---- Prometheus text ---------------------------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

function sampleValue(samples: Sample[], name: string, labels: Record<string, string>): number {
  const found = samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return found?.value ?? 0;
}

async function scrape(server: TestServer): Promise<{ status: number; contentType: string | null; text: string }> {
  const res = await fetch(`${server.url}/metrics`);
  return { status: res.status, contentType: res.headers.get("content-type"), text: await res.text() };
}

// ---- the tests -------------------------------------------------------------------

describe("e2e: external clients", function () {
  this.timeout(60_000);
  let server: TestServer;
  let connect: Client<typeof InventoryService>;
  let target: string;
  /** The first administrator's access token (startTestServer signs in). */
  let token: string;
  let authHeader: string;

  before(async function () {
    if (!fs.existsSync(GRPCURL)) throw new Error(`${GRPCURL} is missing: run \`npm run tools\` (scripts/install-tools.sh)`);
    server = await startTestServer({ HEARTBEAT_INTERVAL_MS: "200" });
    token = server.adminToken;
    expect(token, "an admin token from startTestServer").to.be.a("string").and.not.equal("");
    authHeader = `authorization: Bearer ${token}`;
    connect = client(InventoryService, server.url, "connect", token);
    target = `127.0.0.1:${server.port}`;
  });

  after(async () => {
    await server?.shutdown();
  });

  describe("grpcurl (server reflection over HTTP/2 prior knowledge)", () => {
    /** grpcurl with the admin's token on every call (reflection itself is public). */
    const grpcurl = (...args: string[]) => run(GRPCURL, ["-plaintext", "-H", authHeader, ...args]);

    it("lists the inventory, health and both reflection services (without a token)", async () => {
      const res = await run(GRPCURL, ["-plaintext", target, "list"]);
      expect(res.code, res.stderr).to.equal(0);
      const names = res.stdout.trim().split("\n");
      expect(names).to.include.members([
        INVENTORY,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]);
      expect(new Set(names).size, "no duplicates").to.equal(names.length);
      for (const name of names) expect(name).to.match(/^(agora\.[a-z]+\.v\d+|grpc\.[a-z.]+v\d+(alpha)?)\.[A-Za-z]+$/);
    });

    it("signs up and in with grpcurl and uses the token with -H, as the README shows", async () => {
      const identity = "agora.identity.v1.IdentityService";
      const creds = { username: "readme-user", password: "readme password 1" };
      const reg = await run(GRPCURL, ["-plaintext", "-d", JSON.stringify({ ...creds, display_name: "Readme", email: "readme@example.com" }), target, `${identity}/Register`]);
      expect(reg.code, reg.stderr).to.equal(0);
      const signIn = await run(GRPCURL, ["-plaintext", "-d", JSON.stringify(creds), target, `${identity}/Login`]);
      expect(signIn.code, signIn.stderr).to.equal(0);
      const userToken = JSON.parse(signIn.stdout).tokens.accessToken as string;
      const me = await run(GRPCURL, ["-plaintext", "-H", `authorization: Bearer ${userToken}`, target, `${identity}/GetMe`]);
      expect(me.code, me.stderr).to.equal(0);
      expect(JSON.parse(me.stdout).user).to.include({ username: "readme-user", role: "ROLE_USER" });
      const denied = await run(GRPCURL, [
        "-plaintext", "-H", `authorization: Bearer ${userToken}`, "-d", JSON.stringify({ product_id: UNKNOWN_ID, delta: 1, reason: "x", request_id: "x" }),
        target, `${INVENTORY}/AdjustStock`,
      ]);
      expect(denied.code).to.equal(64 + Code.PermissionDenied);
    });

    it("a call without a token is Unauthenticated", async () => {
      const res = await run(GRPCURL, ["-plaintext", "-d", JSON.stringify({ id: UNKNOWN_ID }), target, `${INVENTORY}/GetProduct`]);
      expect(res.code).to.equal(64 + Code.Unauthenticated);
      expect(res.stderr).to.contain("Code: Unauthenticated");
      expect(res.stderr).to.contain("missing or invalid access token");
    });

    it("describes the service and the Product message", async () => {
      const service = await grpcurl(target, "describe", INVENTORY);
      expect(service.code, service.stderr).to.equal(0);
      expect(service.stdout).to.contain(`${INVENTORY} is a service:`);
      for (const rpc of ["CreateProduct", "GetProduct", "ListProducts", "AdjustStock"]) {
        expect(service.stdout).to.contain(
          `rpc ${rpc} ( .agora.inventory.v1.${rpc}Request ) returns ( .agora.inventory.v1.${rpc}Response )`,
        );
      }
      expect(service.stdout).to.contain(
        "rpc WatchProducts ( .agora.inventory.v1.WatchProductsRequest ) returns ( stream .agora.inventory.v1.WatchProductsResponse )",
      );

      const message = await grpcurl(target, "describe", "agora.inventory.v1.Product");
      expect(message.code, message.stderr).to.equal(0);
      expect(message.stdout).to.contain("agora.inventory.v1.Product is a message:");
      expect(message.stdout).to.contain("message Product {");
      expect(message.stdout).to.match(/\.google\.type\.Money unit_price = 6/);
      expect(message.stdout).to.match(/\.google\.protobuf\.Timestamp create_time = 10/);
    });

    it("creates a product and reads it back", async () => {
      const name = uniqueName("grpcurl tea");
      const created = await grpcurl("-d", JSON.stringify(productJson(name)), target, `${INVENTORY}/CreateProduct`);
      expect(created.code, created.stderr).to.equal(0);
      const product = (JSON.parse(created.stdout) as { product: Record<string, unknown> }).product;
      expect(product.id).to.match(/^[0-9a-f-]{36}$/);

      const got = await grpcurl("-d", JSON.stringify({ id: product.id }), target, `${INVENTORY}/GetProduct`);
      expect(got.code, got.stderr).to.equal(0);
      const back = (JSON.parse(got.stdout) as { product: Record<string, unknown> }).product;
      expect(back).to.include({
        id: product.id,
        name,
        description: "made by an external client",
        category: "CATEGORY_FOOD",
        quantity: 7,
        lowStockThreshold: 3,
        etag: '"1"',
      });
      expect(back.unitPrice).to.deep.equal({ currencyCode: "USD", units: "4", nanos: 990000000 });
      expect(back.createTime).to.be.a("string").and.equal(product.createTime);
    });

    it("an invalid create fails with InvalidArgument naming the field", async () => {
      const bad = productJson("");
      const res = await grpcurl("-d", JSON.stringify(bad), target, `${INVENTORY}/CreateProduct`);
      expect(res.code, "grpcurl exits 64 + the status code").to.equal(64 + Code.InvalidArgument);
      expect(res.stderr).to.contain("Code: InvalidArgument");
      expect(res.stderr).to.contain("product.name");
      expect(res.stderr).to.contain("type.googleapis.com/google.rpc.BadRequest");

      const formatted = await grpcurl("-format-error", "-d", JSON.stringify(bad), target, `${INVENTORY}/CreateProduct`);
      expect(formatted.code).to.equal(64 + Code.InvalidArgument);
      const status = JSON.parse(formatted.stderr) as {
        code: number;
        message: string;
        details: { "@type": string; fieldViolations?: { field: string; reason: string }[] }[];
      };
      expect(status.code).to.equal(Code.InvalidArgument);
      const badRequest = status.details.find((d) => d["@type"] === "type.googleapis.com/google.rpc.BadRequest");
      expect(badRequest?.fieldViolations?.map((v) => [v.field, v.reason])).to.deep.equal([["product.name", "string.min_len"]]);
    });

    it("GetProduct of an unknown id is NotFound", async () => {
      const res = await grpcurl("-d", JSON.stringify({ id: UNKNOWN_ID }), target, `${INVENTORY}/GetProduct`);
      expect(res.code).to.equal(64 + Code.NotFound);
      expect(res.stderr).to.contain("Code: NotFound");
      expect(res.stderr).to.contain(`product ${UNKNOWN_ID} not found`);
    });

    it("WatchProducts streams heartbeats, and replays events from a cursor", async () => {
      const live = await grpcurl("-max-time", "2", "-d", "{}", target, `${INVENTORY}/WatchProducts`);
      expect(live.code, "the stream only ends at -max-time").to.equal(64 + Code.DeadlineExceeded);
      const heartbeats = parseJsonStream(live.stdout) as { heartbeat?: { time?: string } }[];
      expect(heartbeats.length, live.stdout).to.be.greaterThan(0);
      for (const m of heartbeats) expect(m.heartbeat?.time).to.be.a("string");

      // From cursor 0 the whole log is replayed first, so this product's CREATED event must arrive.
      const name = uniqueName("grpcurl watched");
      const created = await grpcurl("-d", JSON.stringify(productJson(name)), target, `${INVENTORY}/CreateProduct`);
      expect(created.code, created.stderr).to.equal(0);
      const id = (JSON.parse(created.stdout) as { product: { id: string } }).product.id;
      const replay = await grpcurl("-max-time", "2", "-d", JSON.stringify({ afterCursor: "0" }), target, `${INVENTORY}/WatchProducts`);
      expect(replay.code, replay.stderr).to.equal(64 + Code.DeadlineExceeded);
      const events = (parseJsonStream(replay.stdout) as { event?: { cursor: string; type: string; product: { id: string } } }[])
        .map((m) => m.event)
        .filter((e) => e !== undefined);
      const mine = events.filter((e) => e.product.id === id);
      expect(mine.map((e) => e.type)).to.deep.equal(["PRODUCT_EVENT_TYPE_CREATED"]);
      const cursors = events.map((e) => BigInt(e.cursor));
      expect(cursors.every((c, i) => i === 0 || c > cursors[i - 1]!), `cursors increase: ${cursors.join(",")}`).to.equal(true);
    });
  });

  describe("buf curl", () => {
    for (const protocol of PROTOCOLS) {
      const args = (...rest: string[]) => [
        "curl",
        "--protocol",
        protocol,
        ...(protocol === "grpc" ? ["--http2-prior-knowledge"] : []),
        "-H",
        authHeader,
        ...rest,
      ];

      it(`--protocol ${protocol}: creates a product and reads it back (schema from reflection)`, async () => {
        const name = uniqueName(`buf ${protocol}`);
        const created = await run(BUF, args("-d", JSON.stringify(productJson(name)), `${server.url}/${INVENTORY}/CreateProduct`));
        expect(created.code, created.stderr).to.equal(0);
        const product = (JSON.parse(created.stdout) as { product: { id: string; name: string } }).product;
        expect(product.name).to.equal(name);

        const got = await run(BUF, args("-d", JSON.stringify({ id: product.id }), `${server.url}/${INVENTORY}/GetProduct`));
        expect(got.code, got.stderr).to.equal(0);
        const back = (JSON.parse(got.stdout) as { product: Record<string, unknown> }).product;
        expect(back).to.include({ id: product.id, name, category: "CATEGORY_FOOD", quantity: 7, lowStockThreshold: 3 });
        expect(back.unitPrice).to.deep.equal({ currencyCode: "USD", units: "4", nanos: 990000000 });
      });

      it(`--protocol ${protocol}: NotFound is reported as not_found`, async () => {
        const res = await run(BUF, args("-d", JSON.stringify({ id: UNKNOWN_ID }), `${server.url}/${INVENTORY}/GetProduct`));
        expect(res.code, "buf curl exits 8 * the code").to.equal(8 * Code.NotFound);
        expect(res.stdout).to.equal("");
        const error = JSON.parse(res.stderr) as { code: string; message: string; details: { type: string }[] };
        expect(error.code).to.equal("not_found");
        expect(error.message).to.equal(`product ${UNKNOWN_ID} not found`);
        expect(error.details.map((d) => d.type)).to.deep.equal(["google.rpc.ResourceInfo", "google.rpc.ErrorInfo"]);
      });
    }
  });

  describe("container health check (src/cli/healthcheck.ts)", () => {
    it("exits 0 and prints SERVING for a healthy server, non-zero for an unknown service", async () => {
      const env = { ...process.env, PORT: String(server.port) };
      const ok = await runWithEnv(["--import", "tsx", "src/cli/healthcheck.ts"], env);
      expect([ok.code, ok.stdout.trim()]).to.deep.equal([0, "SERVING"]);
      const unknown = await runWithEnv(["--import", "tsx", "src/cli/healthcheck.ts"], { ...env, HEALTH_SERVICE: "no.such.Service" });
      expect(unknown.code).to.equal(1);
    });
  });

  describe("plain curl (Connect protocol with JSON over HTTP/1.1)", () => {
    const curlPost = (method: string, body: string) =>
      run("curl", [
        "-sS",
        "--http1.1",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        authHeader,
        "--data-binary",
        body,
        "-w",
        "\n%{http_code}",
        `${server.url}/${INVENTORY}/${method}`,
      ]);
    const split = (out: string) => {
      const cut = out.lastIndexOf("\n");
      return { body: out.slice(0, cut), status: Number(out.slice(cut + 1)) };
    };

    it("GetProduct returns the product as JSON", async () => {
      const created = (await connect.createProduct(connectProductInit(uniqueName("curl lamp")))).product!;
      const res = await curlPost("GetProduct", JSON.stringify({ id: created.id }));
      expect(res.code, res.stderr).to.equal(0);
      const { body, status } = split(res.stdout);
      expect(status, body).to.equal(200);
      const product = (JSON.parse(body) as { product: Record<string, unknown> }).product;
      expect(product).to.include({
        id: created.id,
        name: created.name,
        description: created.description,
        category: "CATEGORY_ELECTRONICS",
        quantity: 12,
        lowStockThreshold: 4,
        etag: created.etag,
      });
      expect(product.unitPrice).to.deep.equal({ currencyCode: "EUR", units: "99", nanos: 500000000 });
    });

    it("an invalid request is HTTP 400 with code invalid_argument", async () => {
      const res = await curlPost("GetProduct", JSON.stringify({ id: "not-a-uuid" }));
      expect(res.code, res.stderr).to.equal(0);
      const { body, status } = split(res.stdout);
      expect(status).to.equal(400);
      expect(body).to.contain('"code":"invalid_argument"');
      const error = JSON.parse(body) as { code: string; message: string };
      expect(error.message).to.equal("id: must be a valid UUID");
    });

    it("without a token: HTTP 401 with code unauthenticated", async () => {
      const res = await run("curl", [
        "-sS",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        JSON.stringify({ id: UNKNOWN_ID }),
        "-w",
        "\n%{http_code}",
        `${server.url}/${INVENTORY}/GetProduct`,
      ]);
      const { body, status } = split(res.stdout);
      expect(status).to.equal(401);
      expect(JSON.parse(body)).to.deep.include({ code: "unauthenticated", message: "missing or invalid access token" });
    });

    it("malformed JSON is HTTP 400 with code invalid_argument", async () => {
      const res = await curlPost("GetProduct", '{"id": nope');
      const { body, status } = split(res.stdout);
      expect(status).to.equal(400);
      expect((JSON.parse(body) as { code: string }).code).to.equal("invalid_argument");
    });
  });

  describe("@grpc/grpc-js with @grpc/proto-loader", () => {
    let legacy: GrpcJsInventory;

    before(async () => {
      legacy = grpcJsInventory(server.port);
      for (let i = 0; i < 3; i++) await connect.createProduct(connectProductInit(uniqueName(`grpc-js item ${i}`)));
    });

    after(() => legacy?.close());

    it("GetProduct answers exactly what the Connect client gets", async () => {
      const created = (await connect.createProduct(connectProductInit(uniqueName("grpc-js get")))).product!;
      const viaConnect = (await connect.getProduct({ id: created.id })).product!;
      const viaGrpcJs = await unary(legacy.GetProduct.bind(legacy), { id: created.id }, bearerMetadata(token));
      expect(viaGrpcJs.product).to.not.equal(null);
      expect(fromGrpcJs(viaGrpcJs.product!)).to.deep.equal(fromConnect(viaConnect));
      expect(fromGrpcJs(viaGrpcJs.product!).category).to.equal("CATEGORY_ELECTRONICS");
    });

    it("GetProduct of an unknown id is NOT_FOUND", async () => {
      const err = await unary(legacy.GetProduct.bind(legacy), { id: UNKNOWN_ID }, bearerMetadata(token)).then(
        () => undefined,
        (e: unknown) => e as grpc.ServiceError,
      );
      expect(err?.code).to.equal(grpc.status.NOT_FOUND);
      expect(err?.details).to.equal(`product ${UNKNOWN_ID} not found`);
    });

    it("ListProducts pages are identical, page tokens included", async () => {
      let connectToken = "";
      let grpcJsToken = "";
      let pages = 0;
      do {
        const a = await connect.listProducts({ pageSize: 2, pageToken: connectToken });
        const b = await unary(legacy.ListProducts.bind(legacy), { pageSize: 2, pageToken: grpcJsToken }, bearerMetadata(token));
        expect(b.products.map(fromGrpcJs)).to.deep.equal(a.products.map(fromConnect));
        expect(b.nextPageToken).to.equal(a.nextPageToken);
        connectToken = a.nextPageToken;
        grpcJsToken = b.nextPageToken;
        pages++;
      } while (connectToken !== "" && pages < 100);
      expect(pages, "at least two pages of two").to.be.greaterThan(1);
      expect(connectToken).to.equal("");
    });

    it("WatchProducts delivers an event for a change made after it started", async () => {
      const call = legacy.WatchProducts({}, bearerMetadata(token));
      const received: LoadedWatchResponse[] = [];
      let streamError: grpc.ServiceError | undefined;
      call.on("data", (m: LoadedWatchResponse) => received.push(m));
      call.on("error", (e: grpc.ServiceError) => (streamError = e));
      try {
        await eventually(() => received.some((m) => m.kind === "heartbeat") || streamError !== undefined, "a heartbeat");
        expect(streamError).to.equal(undefined);
        const created = (await connect.createProduct(connectProductInit(uniqueName("grpc-js watched")))).product!;
        await eventually(
          () => received.some((m) => m.kind === "event" && m.event?.product?.id === created.id) || streamError !== undefined,
          "the CREATED event on the grpc-js stream",
        );
        const event = received.find((m) => m.kind === "event" && m.event?.product?.id === created.id)!.event!;
        expect(event.type).to.equal("PRODUCT_EVENT_TYPE_CREATED");
        expect(event.cursor).to.match(/^\d+$/);
        expect(fromGrpcJs(event.product!)).to.deep.equal(fromConnect(created));
      } finally {
        call.cancel();
      }
      await eventually(() => streamError !== undefined, "the cancelled status");
      expect(streamError?.code).to.equal(grpc.status.CANCELLED);
    });
  });

  describe("bad input on the wire", () => {
    let known: Product;

    before(async () => {
      known = (await connect.createProduct(connectProductInit(uniqueName("wire check")))).product!;
    });

    async function stillServing(): Promise<void> {
      for (const protocol of PROTOCOLS) {
        const res = await client(InventoryService, server.url, protocol, token).getProduct({ id: known.id });
        expect(res.product?.name, `GetProduct over ${protocol}`).to.equal(known.name);
      }
    }

    const grpcBodies: [string, Buffer][] = [
      ["bytes that are not a gRPC frame", Buffer.from("this is not a grpc frame at all, just text\n")],
      ["a frame whose payload is not protobuf", Buffer.from([0, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])],
      ["a truncated frame", Buffer.from([0, 0, 0, 0, 9, 0x0a, 0x02])],
    ];
    for (const [what, body] of grpcBodies) {
      it(`gRPC over HTTP/2: ${what} -> a gRPC error status, and the server keeps serving`, async () => {
        const res = await h2Post(
          server.url,
          `/${INVENTORY}/GetProduct`,
          { "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${token}` },
          body,
        );
        expect(res.headers[":status"]).to.equal(200);
        // Trailers-only responses carry the status in the headers.
        const status = res.trailers["grpc-status"] ?? res.headers["grpc-status"];
        expect(status, JSON.stringify(res)).to.be.a("string");
        const code = Number(status);
        expect(code).to.be.within(1, 16);
        expect(res.body.length, "no response message").to.equal(0);
        const message = decodeURIComponent(String(res.trailers["grpc-message"] ?? res.headers["grpc-message"] ?? ""));
        expect(message).not.to.match(STACK_FRAME);
        await stillServing();
      });
    }

    it("Connect over HTTP/1.1: garbage application/proto -> a Connect error response, and the server keeps serving", async () => {
      const res = await fetch(`${server.url}/${INVENTORY}/GetProduct`, {
        method: "POST",
        headers: { "content-type": "application/proto", authorization: `Bearer ${token}` },
        body: new Uint8Array([0xff, 0xfe, 0xfd, 0x07, 0x00, 0x13, 0x37, 0xff]),
      });
      const text = await res.text();
      expect(res.status, text).to.be.within(400, 599);
      expect(res.headers.get("content-type")).to.equal("application/json");
      const error = JSON.parse(text) as { code: string; message: string };
      // The status must be the one the Connect protocol pairs with the code.
      expect(CONNECT_HTTP_STATUS[error.code], `known code ${error.code}`).to.equal(res.status);
      expect(error.message).not.to.match(STACK_FRAME);
      await stillServing();
    });
  });

  describe("messages above MAX_MESSAGE_BYTES", () => {
    let small: TestServer;

    before(async () => {
      small = await startTestServer({ MAX_MESSAGE_BYTES: "65536" });
    });

    after(async () => {
      await small?.shutdown();
    });

    for (const protocol of PROTOCOLS) {
      it(`a 100 KB request is RESOURCE_EXHAUSTED (${protocol}), and the server keeps serving`, async () => {
        const inventory = client(InventoryService, small.url, protocol, small.adminToken);
        const big = connectProductInit(uniqueName(`big ${protocol}`));
        big.product.description = "x".repeat(100 * 1024);
        const err = await inventory.createProduct(big).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).to.be.instanceOf(ConnectError);
        expect(Code[(err as ConnectError).code], String(err)).to.equal("ResourceExhausted");

        const ok = connectProductInit(uniqueName(`small ${protocol}`));
        const created = (await inventory.createProduct(ok)).product!;
        expect((await inventory.getProduct({ id: created.id })).product?.name).to.equal(ok.product.name);
        const listed = await inventory.listProducts({ pageSize: 100 });
        expect(listed.products.map((p) => p.name)).to.not.include(big.product.name);
      });
    }
  });

  describe("GET /metrics", () => {
    it("counts calls by method and code, with latency buckets and process metrics", async () => {
      const created = (await connect.createProduct(connectProductInit(uniqueName("metrics")))).product!;
      const before = parseMetrics((await scrape(server)).text);
      const labels = { grpc_type: "unary", grpc_service: INVENTORY, grpc_method: "GetProduct" };
      const okBefore = sampleValue(before, "grpc_server_handled_total", { ...labels, grpc_code: "OK" });
      const notFoundBefore = sampleValue(before, "grpc_server_handled_total", { ...labels, grpc_code: "NotFound" });

      await connect.getProduct({ id: created.id });
      await client(InventoryService, server.url, "grpc", token).getProduct({ id: created.id });
      const err = await connect.getProduct({ id: UNKNOWN_ID }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(ConnectError.from(err).code).to.equal(Code.NotFound);

      const res = await scrape(server);
      expect(res.status).to.equal(200);
      expect(res.contentType).to.match(/^text\/plain/);
      expect(res.text).to.contain("grpc_server_handled_total");
      expect(res.text).to.contain(
        'grpc_server_handled_total{grpc_type="unary",grpc_service="agora.inventory.v1.InventoryService",grpc_method="GetProduct",grpc_code="NotFound"}',
      );
      const after = parseMetrics(res.text);
      expect(sampleValue(after, "grpc_server_handled_total", { ...labels, grpc_code: "OK" }) - okBefore).to.equal(2);
      expect(sampleValue(after, "grpc_server_handled_total", { ...labels, grpc_code: "NotFound" }) - notFoundBefore).to.equal(1);
      expect(sampleValue(after, "grpc_server_handled_total", { grpc_method: "CreateProduct", grpc_code: "OK" })).to.be.greaterThan(0);

      const buckets = after.filter((s) => s.name === "grpc_server_handling_seconds_bucket" && s.labels.grpc_method === "GetProduct");
      expect(buckets.length).to.be.greaterThan(0);
      expect(buckets.find((b) => b.labels.le === "+Inf")?.value).to.be.at.least(3);
      expect(sampleValue(after, "grpc_server_handling_seconds_count", labels)).to.be.at.least(3);

      const cpu = after.find((s) => s.name === "process_cpu_user_seconds_total");
      expect(cpu, "a default process metric").to.not.equal(undefined);
      expect(cpu!.value).to.be.greaterThan(0);
    });

    it("other paths are 404", async () => {
      // An extension-less GET such as /nope is a page of the web console (index.html), see docs/console.md.
      for (const [path, method] of [["/nope.txt", "GET"], ["/nope", "POST"]]) {
        const res = await fetch(`${server.url}${path}`, { method });
        expect(res.status, `${method} ${path}`).to.equal(404);
        await res.text();
      }
    });
  });
});
