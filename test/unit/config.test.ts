import path from "node:path";
import { expect } from "chai";
import { ConfigError, KNOWN_SERVICES, loadConfig } from "../../src/config.js";

describe("config", () => {
  it("has working defaults: every service on 8080 with an embedded database in ./.data", () => {
    const c = loadConfig({});
    expect(c.port).to.equal(8080);
    expect(c.services).to.deep.equal([...KNOWN_SERVICES]);
    expect(c.databaseUrl).to.equal(undefined);
    expect(c.dataDir).to.equal(path.resolve(".data"));
  });

  for (const [env, message] of [
    [{ PORT: "abc" }, /PORT must be a whole number/],
    [{ PORT: "70000" }, /PORT must be between 0 and 65535/],
    [{ PORT: "-1" }, /PORT must be a whole number/],
    [{ SERVICES: "inventory,nope" }, /unknown service\(s\) nope/],
    [{ DATABASE_URL: "mysql://x" }, /must start with postgres:\/\//],
    [{ DATABASE_URL: "not a url" }, /not a valid URL/],
    [{ MAX_MESSAGE_BYTES: "10" }, /MAX_MESSAGE_BYTES must be between/],
    [{ SERVICES: "inventory" }, /set JWKS_URL/],
    [{ ADMIN_USERNAME: "root" }, /ADMIN_USERNAME and ADMIN_PASSWORD go together/],
    [{ ADMIN_USERNAME: "root", ADMIN_PASSWORD: "short" }, /ADMIN_PASSWORD must be 12 to 128/],
  ] as const) {
    it(`rejects ${JSON.stringify(env)} with a clear message`, () => {
      expect(() => loadConfig(env)).to.throw(ConfigError, message);
    });
  }

  it("accepts a subset of services and removes duplicates", () => {
    const config = loadConfig({ SERVICES: " inventory , inventory", JWKS_URL: "http://127.0.0.1:8080/.well-known/jwks.json" });
    expect(config.services).to.deep.equal(["inventory"]);
  });
});
