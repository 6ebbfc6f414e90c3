// The console's static files on the server's one port: content types, caching,
// compression, the single-page fallback, and nothing outside the folder reachable.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { brotliCompressSync, brotliDecompressSync, gunzipSync, constants as zlib } from "node:zlib";
import { expect } from "chai";
import { startTestServer, type TestServer } from "../support/harness.js";

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A raw HTTP/1.1 request: the path is sent exactly as given (no client-side normalising). */
function get(url: string, rawPath: string, headers: Record<string, string> = {}, method = "GET"): Promise<Answer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, path: rawPath, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("console static files", () => {
  let root: string;
  let server: TestServer;
  const INDEX = "<!doctype html><title>console</title>";
  const APP = `console.log(${JSON.stringify("x".repeat(4000))});`;
  // The build's copy (recognisable by its quality setting), served as it is.
  const PRECOMPRESSED = brotliCompressSync(APP, { params: { [zlib.BROTLI_PARAM_QUALITY]: 1 } });

  before(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), "agora-static-"));
    mkdirSync(path.join(root, "dist/assets"), { recursive: true });
    writeFileSync(path.join(root, "dist/index.html"), INDEX);
    writeFileSync(path.join(root, "dist/assets/app-1a2b3c.js"), APP);
    writeFileSync(path.join(root, "dist/assets/style-4d5e.css"), "body{}");
    writeFileSync(path.join(root, "dist/assets/app-1a2b3c.js.br"), PRECOMPRESSED);
    writeFileSync(path.join(root, "dist/.build-hash"), "hidden");
    writeFileSync(path.join(root, "secret.txt"), "SECRET");
    server = await startTestServer({ SERVICES: "identity", CONSOLE_DIR: path.join(root, "dist") });
  });

  after(async () => {
    await server?.shutdown();
    rmSync(root, { recursive: true, force: true });
  });

  it("serves index.html at / for revalidation, with the security headers", async () => {
    const res = await get(server.url, "/");
    expect(res.status).to.equal(200);
    expect(res.headers["content-type"]).to.equal("text/html; charset=utf-8");
    expect(res.headers["cache-control"]).to.equal("no-cache");
    expect(res.headers["x-content-type-options"]).to.equal("nosniff");
    expect(res.headers["content-security-policy"]).to.include("default-src 'self'");
    expect(res.body.toString()).to.equal(INDEX);
    const again = await get(server.url, "/", { "if-none-match": String(res.headers.etag) });
    expect(again.status).to.equal(304);
    expect(again.body.length).to.equal(0);
  });

  it("serves hashed assets as immutable, compressed when the client accepts it", async () => {
    const res = await get(server.url, "/assets/app-1a2b3c.js", { "accept-encoding": "gzip, br" });
    expect(res.status).to.equal(200);
    expect(res.headers["content-type"]).to.equal("text/javascript; charset=utf-8");
    expect(res.headers["cache-control"]).to.equal("public, max-age=31536000, immutable");
    expect(res.headers["content-encoding"]).to.equal("br");
    expect(res.body.length).to.be.below(APP.length / 10);
    expect(res.body.equals(PRECOMPRESSED)).to.equal(true);
    expect(brotliDecompressSync(res.body).toString()).to.equal(APP);
    const gzip = await get(server.url, "/assets/app-1a2b3c.js", { "accept-encoding": "gzip" });
    expect(gzip.headers["content-encoding"]).to.equal("gzip");
    expect(gunzipSync(gzip.body).toString()).to.equal(APP);
    expect((await get(server.url, "/assets/app-1a2b3c.js.br")).status).to.equal(404);
    const plain = await get(server.url, "/assets/app-1a2b3c.js");
    expect(plain.headers["content-encoding"]).to.equal(undefined);
    expect(plain.body.toString()).to.equal(APP);
    const css = await get(server.url, "/assets/style-4d5e.css", {}, "HEAD");
    expect(css.headers["content-type"]).to.equal("text/css; charset=utf-8");
    expect(css.headers["content-length"]).to.equal("6");
    expect(css.body.length).to.equal(0);
  });

  it("answers a client-side route with index.html and a missing file with 404", async () => {
    expect((await get(server.url, "/inventory")).body.toString()).to.equal(INDEX);
    expect((await get(server.url, "/chat/room-1")).body.toString()).to.equal(INDEX);
    expect((await get(server.url, "/assets/missing.js")).status).to.equal(404);
    expect((await get(server.url, "/.build-hash")).body.toString()).to.equal(INDEX);
    // Not a GET: the RPC router's 404, not the console.
    expect((await get(server.url, "/inventory", {}, "POST")).status).to.equal(404);
  });

  it("reaches nothing outside its folder, however the path is spelled", async () => {
    const attempts = [
      "/../secret.txt",
      "/assets/../../secret.txt",
      "/%2e%2e/secret.txt",
      "/%2E%2E%2Fsecret.txt",
      "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
      "/..%5csecret.txt",
      "/%252e%252e/secret.txt",
      "/..%00/secret.txt",
      `/${path.join(root, "secret.txt")}`,
      `//${path.join(root, "secret.txt")}`,
      "/%",
    ];
    for (const attempt of attempts) {
      const res = await get(server.url, attempt);
      expect(res.body.toString(), attempt).not.to.include("SECRET");
      expect([200, 400, 404], attempt).to.include(res.status);
      if (res.status === 200) expect(res.body.toString(), attempt).to.equal(INDEX);
    }
  });

  it("serves over HTTP/2 (prior knowledge) on the same port, next to the RPCs", async () => {
    const session = http2.connect(server.url);
    try {
      const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ":path": "/", ":method": "GET" });
        let status = 0;
        let body = "";
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", (c: Buffer) => (body += c.toString()));
        stream.on("end", () => resolve({ status, body }));
        stream.on("error", reject);
      });
      expect(status).to.equal(200);
      expect(body).to.equal(INDEX);
    } finally {
      session.close();
    }
  });

  it("says how to build the console when the folder is missing, and serves it once built", async () => {
    const later = path.join(root, "built-later");
    const bare = await startTestServer({ SERVICES: "identity", CONSOLE_DIR: later }, server.databaseUrl);
    try {
      const res = await get(bare.url, "/");
      expect(res.status).to.equal(503);
      expect(res.body.toString()).to.include("npm run console:build");
      mkdirSync(later);
      writeFileSync(path.join(later, "index.html"), INDEX);
      expect((await get(bare.url, "/inventory")).body.toString()).to.equal(INDEX);
    } finally {
      await bare.shutdown();
    }
  });
});
