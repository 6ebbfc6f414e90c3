// Hole 7 of issue 15: the embedded PostgreSQL is no longer open to every local process as a superuser.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import pg from "pg";
import { IdentityService } from "../../gen/agora/identity/v1/identity_pb.js";
import { APP_ROLE, CREDENTIALS_FILE, startEmbeddedPostgres, type EmbeddedDatabase } from "../../src/platform/db.js";
import { ADMIN, client, quietLog, startTestServer } from "../support/harness.js";
import { KNOWN_SERVICES } from "../../src/config.js";

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    await c.end();
  }
}

/** The SQLSTATE a statement (or the login) fails with. */
async function failsWith(url: string, sql: string): Promise<string> {
  try {
    await query(url, sql);
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
  throw new Error(`expected "${sql}" to fail`);
}

const withPassword = (url: string, user: string, password: string) => {
  const u = new URL(url);
  u.username = user;
  u.password = password;
  return u.toString();
};

describe("embedded PostgreSQL access (issue 15, hole 7)", function () {
  this.timeout(180_000);
  let dataDir: string;
  let db: EmbeddedDatabase | undefined;
  before(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "agora-pg-"));
    fs.chmodSync(dataDir, 0o755); // the postgres system user (when run as root) reaches its cluster below
  });
  after(async () => {
    await db?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("creates random passwords in DATA_DIR (owner only), and the services' role is not a superuser", async () => {
    db = await startEmbeddedPostgres(dataDir, 0, quietLog);
    const file = path.join(dataDir, CREDENTIALS_FILE);
    expect(fs.statSync(file).mode & 0o777).to.equal(0o600);
    expect(new URL(db.url).username).to.equal(APP_ROLE);
    expect(await failsWith(withPassword(db.url, "agora", "agora"), "SELECT 1")).to.equal("28P01"); // wrong password
    const [me] = await query<{ rolsuper: boolean; rolcreaterole: boolean; rolcreatedb: boolean }>(
      db.url,
      "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user",
    );
    expect(me).to.deep.equal({ rolsuper: false, rolcreaterole: false, rolcreatedb: false });
    // What a superuser could do and the services' login cannot.
    expect(await failsWith(db.url, "COPY (SELECT 1) TO PROGRAM 'true'")).to.equal("42501");
    expect(await failsWith(db.url, "SELECT pg_read_file('PG_VERSION')")).to.equal("42501");
  });

  it("runs every service's migrations as that role, which then owns exactly their schemas", async () => {
    const server = await startTestServer({}, db!.url);
    try {
      await client(IdentityService, server.url).login({ username: ADMIN.username, password: ADMIN.password });
    } finally {
      await server.shutdown();
    }
    const owned = await query<{ nspname: string }>(db!.url, "SELECT nspname FROM pg_namespace WHERE nspowner = current_user::regrole ORDER BY 1");
    // Each service's schema is named after it.
    expect(owned.map((r) => r.nspname)).to.deep.equal([...KNOWN_SERVICES].sort());
  });

  it("upgrades a data directory created with the old well-known superuser password, keeping its data", async () => {
    // Recreate the old state: superuser agora/agora, schemas created by it, no application role, no password file.
    await query(db!.adminUrl, "ALTER ROLE agora PASSWORD 'agora'");
    const legacyUrl = withPassword(db!.adminUrl, "agora", "agora");
    await query(legacyUrl, `REASSIGN OWNED BY ${APP_ROLE} TO agora`);
    await query(legacyUrl, `DROP OWNED BY ${APP_ROLE}`);
    await query(legacyUrl, `DROP ROLE ${APP_ROLE}`);
    const old = await startTestServer({}, legacyUrl);
    const user = { username: "survivor", password: "survivor-password-1" };
    try {
      await client(IdentityService, old.url).register({ ...user, displayName: "Survivor", email: "s@example.com" });
    } finally {
      await old.shutdown();
    }
    await db!.stop();
    db = undefined;
    fs.rmSync(path.join(dataDir, CREDENTIALS_FILE));

    db = await startEmbeddedPostgres(dataDir, 0, quietLog);
    expect(fs.statSync(path.join(dataDir, CREDENTIALS_FILE)).mode & 0o777).to.equal(0o600);
    expect(await failsWith(withPassword(db.adminUrl, "agora", "agora"), "SELECT 1")).to.equal("28P01");
    const server = await startTestServer({}, db.url);
    try {
      const { tokens } = await client(IdentityService, server.url).login(user);
      expect(tokens?.accessToken).to.be.a("string").and.not.empty;
    } finally {
      await server.shutdown();
    }
    const foreign = await query<{ n: number }>(
      db.url,
      `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('identity', 'inventory', 'reservation', 'chat', 'files', 'monitoring') AND c.relowner <> current_user::regrole`,
    );
    expect(foreign[0]!.n).to.equal(0);
  });
});
