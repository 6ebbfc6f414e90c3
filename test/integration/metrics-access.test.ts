// Issue 15: GET /metrics can be restricted to this machine, to a bearer token, or to a port of its own.
import os from "node:os";
import { expect } from "chai";
import { startTestServer, type TestServer } from "../support/harness.js";

const TOKEN = "scrape-token-0123456789";

describe("metrics endpoint access (issue 15)", () => {
  const servers: TestServer[] = [];
  const start = async (env: Record<string, string>) => {
    const s = await startTestServer({ SERVICES: "identity", ...env });
    servers.push(s);
    return s;
  };
  after(() => Promise.all(servers.map((s) => s.shutdown())));

  it("is open by default", async () => {
    const s = await start({});
    const res = await fetch(`${s.url}/metrics`);
    expect(res.status).to.equal(200);
    expect(await res.text()).to.contain("process_cpu_user_seconds_total");
  });

  it("asks for the bearer token when METRICS_TOKEN is set", async () => {
    const s = await start({ METRICS_TOKEN: TOKEN });
    expect((await fetch(`${s.url}/metrics`)).status).to.equal(401);
    expect((await fetch(`${s.url}/metrics`, { headers: { authorization: "Bearer wrong-token-0123456789" } })).status).to.equal(401);
    const ok = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.status).to.equal(200);
    expect(await ok.text()).to.contain("process_cpu_user_seconds_total");
  });

  it("moves to a port of its own with METRICS_PORT, and the service port no longer serves it", async () => {
    const s = await start({ METRICS_PORT: "0" });
    expect((await fetch(`${s.url}/metrics`)).status).to.equal(404);
    expect(s.metricsPort).to.be.a("number");
    const res = await fetch(`http://127.0.0.1:${s.metricsPort}/metrics`);
    expect(res.status).to.equal(200);
  });

  it("answers only clients on this machine with METRICS_ALLOW=loopback", async function () {
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((i) => i && i.family === "IPv4" && !i.internal)?.address;
    if (!external) this.skip(); // no other interface to call from
    const s = await start({ HOST: "0.0.0.0", METRICS_ALLOW: "loopback" });
    expect((await fetch(`http://${external}:${s.port}/metrics`)).status).to.equal(403);
    expect((await fetch(`http://127.0.0.1:${s.port}/metrics`)).status).to.equal(200);
  });
});
