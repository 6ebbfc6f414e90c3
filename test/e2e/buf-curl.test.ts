// buf curl through the Envoy gateway (two instances behind it), with each of
// its protocols: gRPC over HTTP/2, and gRPC-Web and Connect over HTTP/1.1 as a
// browser sends them (bidi streams over HTTP/2, which they need). Every RPC of
// every service runs on every protocol, error cases with their exact codes;
// the three protocols run side by side, each with its own users and data.
import { expect } from "chai";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { InventoryService } from "../../gen/agora/inventory/v1/inventory_pb.js";
import { startTestCluster, type TestCluster } from "../support/cluster.js";
import { MethodCoverage, randomTag, SCENARIOS, UNKNOWN_ID, userFactory } from "../support/rpc-scenarios.js";
import { BUF, BufCurl, methodPath, Rpc, runCommand, type BufProtocol, type Json } from "../support/rpc-tools.js";

const SERVICES = SCENARIOS.map((s) => s.service);
const PROTOCOLS: BufProtocol[] = ["grpc", "grpcweb", "connect"];
const REFLECTION = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

describe("e2e: buf curl through the gateway, every RPC on every protocol", function () {
  this.timeout(120_000);
  let gw: TestCluster;
  const coverage = new MethodCoverage();
  let tools: BufCurl[];
  const completed = new Set<string>();

  before(async () => {
    gw = await startTestCluster("agora-bufcurl-");
    tools = PROTOCOLS.map((p) => new BufCurl(gw.cluster.gatewayUrl, p, coverage));
  });

  after(async () => {
    await gw?.stop();
  });

  it("lists the services of the coverage table and their methods, with either reflection protocol", async () => {
    for (const reflect of ["grpc-v1", "grpc-v1alpha"]) {
      const res = await runCommand(BUF, ["curl", "--reflect-protocol", reflect, "--list-services", gw.cluster.gatewayUrl]);
      expect(res.code, res.stderr).to.equal(0);
      const listed = res.stdout.trim().split("\n");
      expect(listed.filter((s) => !REFLECTION.includes(s)).sort(), reflect).to.deep.equal(SERVICES.map((s) => s.typeName).sort());
    }
    const methods = await runCommand(BUF, ["curl", "--list-methods", gw.cluster.gatewayUrl]);
    expect(methods.stdout.trim().split("\n").sort()).to.include.members(SERVICES.flatMap((s) => s.methods.map(methodPath)));
  });

  it("calls with the schema from the repository's protos instead of reflection (--schema)", async () => {
    const res = await runCommand(BUF, [
      "curl",
      "--schema",
      ".",
      "--protocol",
      "connect",
      "-H",
      `authorization: Bearer ${gw.adminToken}`,
      "-d",
      "{}",
      `${gw.cluster.gatewayUrl}/${methodPath(IdentityService.method.getMe)}`,
    ]);
    expect(res.code, res.stderr).to.equal(0);
    expect(JSON.parse(res.stdout).user).to.include({ username: "admin", role: "ROLE_ADMIN" });
  });

  it("reports the same status and details on every protocol (exit status 8 x code)", async () => {
    for (const tool of tools) {
      const res = await tool.call(InventoryService.method.getProduct, { id: UNKNOWN_ID }, gw.adminToken);
      expect(res.exitCode, tool.name).to.equal(8 * 5);
      expect(res.error, tool.name).to.include({ code: "NotFound", message: `product ${UNKNOWN_ID} not found` });
      expect((JSON.parse(res.error!.details) as Json[]).map((d) => d.type), tool.name).to.deep.equal(["google.rpc.ResourceInfo", "google.rpc.ErrorInfo"]);
      // Without a token the gateway answers, in each protocol's own way, with the same code.
      const denied = await tool.call(InventoryService.method.getProduct, { id: UNKNOWN_ID });
      expect(denied.error?.code, tool.name).to.equal("Unauthenticated");
    }
  });

  for (const scenario of SCENARIOS) {
    it(`${scenario.service.typeName}: every RPC over ${PROTOCOLS.join(", ")}`, async () => {
      const results = await Promise.allSettled(
        tools.map((tool) => {
          const tag = randomTag();
          return scenario.run({ rpc: new Rpc(tool), adminToken: gw.adminToken, tag, user: userFactory(gw.cluster.gatewayUrl, tag) });
        }),
      );
      const failures = results.flatMap((r, i) => (r.status === "rejected" ? [`${tools[i]!.name}: ${r.reason instanceof Error ? r.reason.stack ?? r.reason.message : String(r.reason)}`] : []));
      if (failures.length > 0) throw new Error(failures.join("\n\n"));
      completed.add(scenario.service.typeName);
    });
  }

  it("called every method of every service in the coverage table, on every protocol", function () {
    if (completed.size < SCENARIOS.length) this.skip(); // a filtered run (--grep) or a failed scenario says more
    for (const tool of tools) expect(coverage.missing(SERVICES, tool.name), tool.name).to.deep.equal([]);
  });
});
