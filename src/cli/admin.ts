/**
 * Administration from the command line, against the same database the server uses.
 *
 *   npm run admin -- create-admin <username>
 *
 * The password comes from AGORA_ADMIN_PASSWORD, or is asked for on the terminal.
 * The database is DATABASE_URL, else the embedded PostgreSQL of DATA_DIR (the
 * running server's, or started here for the command).
 */
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline/promises";
import { hash } from "@node-rs/argon2";
import { ConfigError, loadConfig } from "../config.js";
import { assertReachable, openServiceDatabase, startEmbeddedPostgres, StartupError, type EmbeddedDatabase } from "../platform/db.js";
import { createLogger } from "../platform/logging.js";
import { Migration20261121100000 } from "../services/identity/migrations/Migration20261121100000.js";
import { RefreshTokenSchema, UserSchema } from "../services/identity/user.entity.js";
import { UserRepository } from "../services/identity/user.repository.js";

const USAGE = "usage: npm run admin -- create-admin <username>";

async function password(): Promise<string> {
  if (process.env.AGORA_ADMIN_PASSWORD) return process.env.AGORA_ADMIN_PASSWORD;
  if (!process.stdin.isTTY) throw new ConfigError("set AGORA_ADMIN_PASSWORD (no terminal to ask on)");
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  try {
    return await rl.question("password (12 to 128 characters): ");
  } finally {
    rl.close();
  }
}

async function main(): Promise<void> {
  const [command, username] = process.argv.slice(2);
  if (command !== "create-admin" || !username) throw new ConfigError(USAGE);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$/.test(username)) throw new ConfigError("username: 3 to 32 letters, digits, '_', '.', '-'");
  const secret = await password();
  if (secret.length < 12 || secret.length > 128) throw new ConfigError("password must be 12 to 128 characters");

  const config = loadConfig({ ...process.env, SERVICES: "identity" });
  const log = createLogger("warn");
  let embedded: EmbeddedDatabase | undefined;
  let url = config.databaseUrl;
  const runningUrlFile = path.join(config.dataDir, "postgres.url");
  if (!url && fs.existsSync(runningUrlFile)) {
    const candidate = fs.readFileSync(runningUrlFile, "utf8").trim();
    url = await assertReachable(candidate, 2000).then(() => candidate, () => undefined);
  }
  if (!url) {
    embedded = await startEmbeddedPostgres(config.dataDir, 0, log);
    url = embedded.url;
  }
  try {
    const orm = await openServiceDatabase({
      url,
      schema: "identity",
      entities: [UserSchema, RefreshTokenSchema],
      migrations: [Migration20261121100000],
      poolSize: 2,
      log,
    });
    try {
      const users = new UserRepository(orm.em);
      const existing = await users.findForLogin(username);
      if (existing) {
        await users.promote(existing.id);
        console.log(`${existing.username} is now an admin (password unchanged)`);
      } else {
        const passwordHash = await hash(secret);
        await users.create({ username, displayName: username, email: `${username.toLowerCase()}@localhost`, passwordHash, role: "admin" }, new Date());
        console.log(`admin ${username} created`);
      }
    } finally {
      await orm.close();
    }
  } finally {
    await embedded?.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    const known = err instanceof ConfigError || err instanceof StartupError;
    console.error(`agora admin: ${known ? err.message : err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
