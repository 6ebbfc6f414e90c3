import fs from "node:fs";
import path from "node:path";

/**
 * The contents of a secret file, created on first use with `create()` and
 * owner-only permissions. Created atomically (`wx`): instances sharing a data
 * directory that start together all end up with the first one's secret.
 */
export function readOrCreateSecret(file: string, create: () => string | Buffer): Buffer {
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    try {
      fs.writeFileSync(file, create(), { mode: 0o600, flag: "wx" });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err; // another instance was first
    }
  }
  return fs.readFileSync(file);
}
