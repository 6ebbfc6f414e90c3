// Builds the web console (web/ -> web/dist) unless its sources are unchanged since the
// last build: `npm start` runs this first (a fresh clone builds once, ~5-15 s; later
// starts skip it). The hash of every input is kept in web/dist/.build-hash.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, gzipSync, constants as zlib } from "node:zlib";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const INPUTS = ["scripts/build-console.ts", "web/index.html", "web/vite.config.ts", "web/public", "web/src", "gen/agora", "gen/buf", "gen/google", "package-lock.json"];
const STAMP = path.join(repo, "web/dist/.build-hash");

function files(rel: string): string[] {
  const full = path.join(repo, rel);
  if (!existsSync(full)) return [];
  if (!readdirSync(path.dirname(full), { withFileTypes: true }).find((e) => e.name === path.basename(full))?.isDirectory()) return [rel];
  return readdirSync(full, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(repo, path.join(e.parentPath, e.name)))
    .sort();
}

export function sourceHash(): string {
  const hash = createHash("sha256");
  for (const file of INPUTS.flatMap(files)) hash.update(file).update("\0").update(readFileSync(path.join(repo, file))).update("\0");
  return hash.digest("hex");
}

/** Builds web/dist when stale; returns whether it built. */
export async function buildConsole(): Promise<boolean> {
  const hash = sourceHash();
  if (existsSync(STAMP) && readFileSync(STAMP, "utf8") === hash) return false;
  const { build } = await import("vite");
  await build({ root: path.join(repo, "web"), configFile: path.join(repo, "web/vite.config.ts"), logLevel: "warn" });
  // Compressed once here at the highest levels (brotli 11 takes seconds), served as they are.
  const assets = path.join(repo, "web/dist/assets");
  for (const name of readdirSync(assets).filter((n) => /[.](js|css)$/.test(n))) {
    const body = readFileSync(path.join(assets, name));
    writeFileSync(path.join(assets, `${name}.br`), brotliCompressSync(body, { params: { [zlib.BROTLI_PARAM_QUALITY]: 11 } }));
    writeFileSync(path.join(assets, `${name}.gz`), gzipSync(body, { level: 9 }));
  }
  writeFileSync(STAMP, hash);
  return true;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const started = Date.now();
  const built = await buildConsole();
  console.log(built ? `console: built web/dist in ${Date.now() - started} ms` : "console: web/dist is up to date");
}
