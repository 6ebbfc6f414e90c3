// grpcurl through the Envoy gateway (two instances behind it): reflection
// (list, describe), then every RPC of every service — unary calls, server
// streams read until they deliver, client streams and the bidi Chat stream fed
// on stdin with `-d @` — each with the exact status codes of its error cases.
import fs from "node:fs";
import { expect } from "chai";
import { ChatService } from "../../gen/agora/chat/v1/chat_pb.js";
import { FileService } from "../../gen/agora/files/v1/files_pb.js";
import { InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { startTestCluster, type TestCluster } from "../support/cluster.js";
import { MethodCoverage, randomTag, SCENARIOS, UNKNOWN_ID, userFactory } from "../support/rpc-scenarios.js";
import { Grpcurl, GRPCURL, methodPath, Rpc, runCommand, type Json } from "../support/rpc-tools.js";

const SERVICES = SCENARIOS.map((s) => s.service);
const REFLECTION = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

describe("e2e: grpcurl through the gateway, every RPC of every service", function () {
  this.timeout(120_000);
  let gw: TestCluster;
  const coverage = new MethodCoverage();
  let grpcurl: Grpcurl;
  /** grpcurl with arbitrary arguments (list, describe, -format-error). */
  const raw = (...args: string[]) => runCommand(GRPCURL, ["-plaintext", ...args]);
  const completed = new Set<string>();

  before(async function () {
    if (!fs.existsSync(GRPCURL)) throw new Error(`${GRPCURL} is missing: run \`npm run tools\``);
    gw = await startTestCluster("agora-grpcurl-");
    grpcurl = new Grpcurl(gw.target, coverage);
  });

  after(async () => {
    await gw?.stop();
  });

  it("lists, through reflection, exactly the services of the coverage table (plus reflection)", async () => {
    const res = await raw(gw.target, "list");
    expect(res.code, res.stderr).to.equal(0);
    const listed = res.stdout.trim().split("\n");
    expect(listed.filter((s) => !REFLECTION.includes(s)).sort()).to.deep.equal(SERVICES.map((s) => s.typeName).sort());
    expect(listed).to.include.members(REFLECTION);
    // list <service> names every method, as the descriptors do.
    for (const service of SERVICES) {
      const methods = await raw(gw.target, "list", service.typeName);
      expect(methods.stdout.trim().split("\n").sort(), service.typeName).to.deep.equal(service.methods.map((m) => `${service.typeName}.${m.name}`).sort());
    }
  });

  it("describes every method with its streaming shape, and the messages", async () => {
    await Promise.all(
      SERVICES.map(async (service) => {
        const res = await raw(gw.target, "describe", service.typeName);
        expect(res.code, res.stderr).to.equal(0);
        expect(res.stdout).to.contain(`${service.typeName} is a service:`);
        for (const m of service.methods) {
          const stream = (yes: boolean) => (yes ? "stream " : "");
          const input = stream(m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming");
          const output = stream(m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming");
          expect(res.stdout).to.contain(`rpc ${m.name} ( ${input}.${m.input.typeName} ) returns ( ${output}.${m.output.typeName} )`);
        }
      }),
    );
    const upload = await raw(gw.target, "describe", "agora.files.v1.UploadRequest");
    expect(upload.stdout).to.contain("agora.files.v1.UploadRequest is a message:");
    expect(upload.stdout).to.contain("oneof part {").and.contain(".agora.files.v1.UploadMetadata metadata = 1;").and.contain("bytes chunk = 2");
    // The validation rules travel with the schema, so every client can read them.
    expect(upload.stdout).to.contain("(.buf.validate.field) = { bytes: { max_len: 1048576 } }");
    const chat = await raw(gw.target, "describe", "agora.chat.v1.ChatService.Chat");
    expect(chat.stdout).to.contain("rpc Chat ( stream .agora.chat.v1.ChatRequest ) returns ( stream .agora.chat.v1.ChatResponse )");
  });

  it("-format-error prints the status and its decoded details as JSON", async () => {
    const auth = ["-H", `authorization: Bearer ${gw.adminToken}`];
    const invalid = await raw(...auth, "-format-error", "-d", JSON.stringify({ product: { name: "", category: "CATEGORY_FOOD", unit_price: { currency_code: "EUR" } } }), gw.target, methodPath(InventoryService.method.createProduct));
    expect(invalid.code).to.equal(64 + 3);
    const status = JSON.parse(invalid.stderr) as { code: number; message: string; details: Json[] };
    expect(status.code).to.equal(3);
    const badRequest = status.details.find((d) => d["@type"] === "type.googleapis.com/google.rpc.BadRequest");
    expect(badRequest.fieldViolations.map((v: Json) => [v.field, v.reason])).to.deep.equal([["product.name", "string.min_len"]]);

    const missing = await raw(...auth, "-format-error", "-d", JSON.stringify({ file_id: UNKNOWN_ID }), gw.target, methodPath(FileService.method.getFile));
    expect(missing.code).to.equal(64 + 5);
    const notFound = JSON.parse(missing.stderr) as { code: number; message: string; details: Json[] };
    expect(notFound).to.include({ code: 5, message: `file ${UNKNOWN_ID} not found` });
    expect(notFound.details).to.deep.include({ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "NOT_FOUND", domain: "agora.dev" });
    expect(notFound.details).to.deep.include({ "@type": "type.googleapis.com/google.rpc.ResourceInfo", resourceType: "file", resourceName: UNKNOWN_ID });
  });

  it("-max-time bounds an open server stream with DeadlineExceeded after what it delivered", async () => {
    const res = await grpcurl.open(ChatService.method.subscribe, { token: gw.adminToken, request: {}, maxSeconds: 2 }).done;
    expect(res.error?.code).to.equal("DeadlineExceeded");
    expect(res.messages.length, "heartbeats before the deadline").to.be.greaterThan(0);
    expect(res.messages.every((m: Json) => m.event?.heartbeat || m.event?.presence)).to.equal(true);
  });

  for (const scenario of SCENARIOS) {
    it(`${scenario.service.typeName}: every RPC with grpcurl`, async () => {
      const tag = randomTag();
      await scenario.run({ rpc: new Rpc(grpcurl), adminToken: gw.adminToken, tag, user: userFactory(gw.cluster.gatewayUrl, tag) });
      completed.add(scenario.service.typeName);
    });
  }

  it("called every method of every service in the coverage table", function () {
    if (completed.size < SCENARIOS.length) this.skip(); // a filtered run (--grep) or a failed scenario says more
    expect(coverage.missing(SERVICES, grpcurl.name)).to.deep.equal([]);
  });
});
