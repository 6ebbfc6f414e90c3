import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { startEmbeddedPostgres, type EmbeddedDatabase } from "../../src/platform/db.js";

// One embedded PostgreSQL for the whole run; each test file takes fresh databases from it.
let db: EmbeddedDatabase | undefined;
let dir: string | undefined;

export async function mochaGlobalSetup(): Promise<void> {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "agora-test-"));
  fs.chmodSync(dir, 0o755);
  // Servers under test keep their signing keys here.
  process.env.AGORA_TEST_DATA_DIR = path.join(dir, "data");
  if (process.env.AGORA_TEST_DATABASE_URL) return; // an external PostgreSQL was provided
  db = await startEmbeddedPostgres(dir, 0, pino({ level: "warn" }));
  // Tests create databases as the superuser; servers connect as the application role, as in production.
  process.env.AGORA_TEST_DATABASE_URL = db.adminUrl;
  process.env.AGORA_TEST_APP_DATABASE_URL = db.url;
}

export async function mochaGlobalTeardown(): Promise<void> {
  await db?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}
