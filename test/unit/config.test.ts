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
  ] as const) {
    it(`rejects ${JSON.stringify(env)} with a clear message`, () => {
      expect(() => loadConfig(env)).to.throw(ConfigError, message);
    });
  }

  it("accepts a subset of services and removes duplicates", () => {
    expect(loadConfig({ SERVICES: " inventory , inventory" }).services).to.deep.equal(["inventory"]);
  });
});
