import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import type http from "node:http";
import type http2 from "node:http2";
import path from "node:path";
import { brotliCompressSync, gzipSync, constants as zlib } from "node:zlib";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
/** What the handler uses of Node's HTTP/1 and HTTP/2 responses. */
interface Response {
  writeHead(status: number, headers: Record<string, string>): unknown;
  end(): unknown;
  end(body: Buffer | string): unknown;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".woff2": "font/woff2",
};
const COMPRESSIBLE = new Set([".html", ".js", ".css", ".svg", ".json", ".txt"]);

/** What every console response carries: the console talks only to its own origin. */
const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "content-security-policy":
    "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
};

interface Asset {
  body: Buffer;
  br?: Buffer;
  gzip?: Buffer;
  type: string;
  etag: string;
  /** Vite's content-hashed files never change under the same name. */
  immutable: boolean;
}

/**
 * Serves a built single-page application (the console, `web/dist`) from memory.
 *
 * The folder is read once, on the first request (a rebuild is served after a restart,
 * which `npm start` does after building): only the files found there can be
 * served, so no request path (`..`, encoded or not, absolute, NUL bytes) can reach
 * anything outside it. Text assets are served brotli- or gzip-compressed: the
 * build's precompressed copies (`x.js.br`, `x.js.gz`) when present. Hashed
 * files under `assets/` are cached for a year; everything else is revalidated by
 * ETag. A GET for an extension-less path that is not a file gets `index.html`
 * (the client-side router's pages).
 *
 * Returns a handler that answers and returns true, or returns false (not its request).
 */
export function staticFiles(root: string): (req: Request, res: Response) => boolean {
  let assets: Promise<Map<string, Asset>> | undefined;
  return (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const url = req.url ?? "/";
    if (!url.startsWith("/")) return false;
    assets ??= loadFolder(root);
    assets.then(
      (files) => answer(files, req, res),
      () => {
        assets = undefined; // built later: the next request reads the folder again
        res.writeHead(503, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-cache" });
        res.end("the console is not built: run `npm run console:build`\n");
      },
    );
    return true;
  };
}

function answer(files: Map<string, Asset>, req: Request, res: Response): void {
  const key = lookupKey(req.url ?? "/");
  let asset = key === undefined ? undefined : files.get(key);
  if (!asset && key !== undefined && path.posix.extname(key) === "") asset = files.get("index.html");
  if (!asset) {
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8", ...SECURITY_HEADERS });
    res.end("not found\n");
    return;
  }
  const headers: Record<string, string> = {
    "content-type": asset.type,
    etag: asset.etag,
    "cache-control": asset.immutable ? "public, max-age=31536000, immutable" : "no-cache",
    vary: "accept-encoding",
    ...SECURITY_HEADERS,
  };
  if (req.headers["if-none-match"] === asset.etag) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  const accepted = String(req.headers["accept-encoding"] ?? "");
  let body = asset.body;
  if (asset.br && /\bbr\b/.test(accepted)) {
    body = asset.br;
    headers["content-encoding"] = "br";
  } else if (asset.gzip && /\bgzip\b/.test(accepted)) {
    body = asset.gzip;
    headers["content-encoding"] = "gzip";
  }
  headers["content-length"] = String(body.length);
  res.writeHead(200, headers);
  if (req.method === "HEAD") res.end();
  else res.end(body);
}

/** The folder-relative name a URL asks for, or undefined when it cannot name a file of the folder. */
function lookupKey(url: string): string | undefined {
  let pathname: string;
  try {
    pathname = decodeURIComponent(new URL(url, "http://x").pathname);
  } catch {
    return undefined;
  }
  if (pathname.includes("\0") || pathname.includes("\\")) return undefined;
  const normal = path.posix.normalize(pathname);
  if (!normal.startsWith("/") || normal.split("/").includes("..")) return undefined;
  const key = normal.slice(1);
  return key === "" ? "index.html" : key;
}

async function loadFolder(root: string): Promise<Map<string, Asset>> {
  const files = new Map<string, Asset>();
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  const names = new Set(entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name)));
  for (const full of names) {
    const key = path.relative(root, full).split(path.sep).join("/");
    const ext = path.extname(key);
    // Dot files and the build's precompressed copies (x.js.br, x.js.gz) are not served by their own names.
    if (key.split("/").some((part) => part.startsWith(".")) || ((ext === ".br" || ext === ".gz") && names.has(full.slice(0, -ext.length)))) continue;
    const body = await readFile(full);
    const compress = COMPRESSIBLE.has(ext) && body.length > 512;
    // The build compresses at the highest levels once; anything else is compressed here, quickly.
    const stored = async (suffix: string, make: () => Buffer) => (!compress ? undefined : names.has(full + suffix) ? readFile(full + suffix) : make());
    files.set(key, {
      body,
      br: await stored(".br", () => brotliCompressSync(body, { params: { [zlib.BROTLI_PARAM_QUALITY]: 5 } })),
      gzip: await stored(".gz", () => gzipSync(body)),
      type: TYPES[ext] ?? "application/octet-stream",
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
      immutable: key.startsWith("assets/"),
    });
  }
  if (!files.has("index.html")) throw new Error(`${root} has no index.html`);
  return files;
}
